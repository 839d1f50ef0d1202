"""μP: width-parametrized models, per-layer learning-rate multipliers and the coordinate check.

    from metaopt import mup, tasks
    task = tasks.get("mlp_digits", width=1024, param="mup", base_width=64)
    mults = mup.lr_multipliers(task.param_info, "adam", task.base_param_info)
    hp = mup.per_tensor_hp(mults, lr=1e-2)              # for metaopt.rule.apply
    groups = mup.param_groups(params, mults, lr=1e-2)    # for torch.optim / RuleOptimizer
    res = mup.coord_check(lambda w: tasks.get("mlp_digits", width=w, param="mup"))
    res.slopes()                                          # ≈ 0 per layer under μP

Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
Transfer" (NeurIPS 2021); microsoft/mup.
"""
from .coord_check import CoordCheck, coord_check, plot_coord_check
from .mlp import mlp_activations, mlp_forward, mlp_init, mlp_param_info
from .multipliers import KINDS, lr_multipliers, param_groups, per_tensor_hp
from .parametrization import PARAMS, readout_multiplier
from .transformer import (attention_scale, transformer_activations, transformer_forward,
                          transformer_init, transformer_param_info)

__all__ = [
    "CoordCheck", "KINDS", "PARAMS", "coord_check", "lr_multipliers", "mlp_activations",
    "mlp_forward", "mlp_init", "mlp_param_info", "param_groups", "per_tensor_hp",
    "plot_coord_check", "readout_multiplier", "attention_scale", "transformer_activations",
    "transformer_forward", "transformer_init", "transformer_param_info",
]
