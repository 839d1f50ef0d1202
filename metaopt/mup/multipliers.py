"""μP per-layer learning-rate multipliers (Tensor Programs V, Table 8; microsoft/mup's optim.py).

A model at width ``n`` is compared with the same model at its base width: for each tensor,
``r_in = fan_in / base_fan_in`` and ``r_out = fan_out / base_fan_out`` (1 for a dimension that
does not grow). Relative to the learning rate tuned at the base width, μP uses

    role            Adam-type (entrywise-normalised)   SGD-type
    input weights   1                                   r_out
    hidden weights  1 / r_in                            r_out / r_in
    output weights  1                                   r_in
    biases, gains   1                                   r_out

(so an Adam hidden-weight lr is ∝ 1/fan_in, an SGD input-weight lr ∝ fan_out). At the base width
every multiplier is 1. Under SP pass ``base_info=None``: every multiplier is 1 (one global lr).

Only learning rates are scaled. With decoupled weight decay applied as ``lr * wd * p`` (AdamW)
this is microsoft/mup's ``MuAdam`` with ``decoupled_wd=True``; mup otherwise rescales a coupled L2
``weight_decay`` (Adam, SGD), which these helpers leave to the caller.

The multipliers become torch param groups (:func:`param_groups`, for ``torch.optim`` and
``RuleOptimizer``) or per-tensor hyperparameter lists for :func:`metaopt.rule.apply`
(:func:`per_tensor_hp`).
"""
from __future__ import annotations

from typing import Any, Sequence

from ..params import ParamInfo

KINDS = ("adam", "sgd")


def lr_multipliers(
    param_info: Sequence[ParamInfo],
    kind: str = "adam",
    base_info: Sequence[ParamInfo] | None = None,
) -> list[float]:
    """Per-tensor learning-rate multipliers of μP, aligned with ``param_info``.

    Args:
      param_info: the model's tensors (roles and fans) at its width.
      kind: ``"adam"`` for entrywise-normalised rules (Adam, AdamW, Lion, RMSprop, Adagrad,
        sign descent), ``"sgd"`` for rules whose step is linear in the gradient.
      base_info: the same model's ``param_info`` at the base width (``task.base_param_info``);
        ``None`` means no scaling (standard parametrization).
    """
    if kind not in KINDS:
        raise ValueError(f"lr_multipliers: kind must be one of {KINDS}, got {kind!r}")
    if base_info is None:
        return [1.0] * len(param_info)
    if len(base_info) != len(param_info):
        raise ValueError(
            f"lr_multipliers: base_info has {len(base_info)} tensors, param_info {len(param_info)}")
    return [_multiplier(p, b, kind) for p, b in zip(param_info, base_info)]


def _multiplier(p: ParamInfo, base: ParamInfo, kind: str) -> float:
    if (p.name, p.role) != (base.name, base.role):
        raise ValueError(f"lr_multipliers: tensor {p.name!r} ({p.role}) does not match the base "
                         f"model's {base.name!r} ({base.role})")
    r_in, r_out = p.fan_in / base.fan_in, p.fan_out / base.fan_out
    if kind == "adam":
        return 1.0 / r_in if p.role == "hidden" else 1.0
    return {"input": r_out, "hidden": r_out / r_in, "output": r_in}.get(p.role, r_out)


def per_tensor_hp(multipliers: Sequence[float], lr: Any, **hp: Any) -> list[dict[str, Any]]:
    """Per-tensor hyperparameters for :func:`metaopt.rule.apply`: ``lr * m`` plus shared ``hp``.

    ``lr`` may be a 0-d tensor (differentiated or vmapped); so may the shared values.
    """
    return [{**hp, "lr": lr * m} for m in multipliers]


def param_groups(params: Sequence, multipliers: Sequence[float], lr: float,
                 **hp: Any) -> list[dict]:
    """torch param groups, one per distinct multiplier, each with its own ``lr``.

    ``torch.optim.Adam(param_groups(params, mults, lr=1e-3))`` is μP's Adam (MuAdam); the groups
    keep the order of first appearance.
    """
    params = list(params)
    if len(params) != len(multipliers):
        raise ValueError(f"param_groups: {len(params)} params for {len(multipliers)} multipliers")
    groups: dict[float, dict] = {}
    for p, m in zip(params, multipliers):
        groups.setdefault(m, {**hp, "lr": lr * m, "params": []})["params"].append(p)
    return list(groups.values())
