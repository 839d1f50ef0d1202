"""``LearnedOptimizer``: a learned optimizer with fixed meta-parameters as a torch optimizer.

    opt = learned.pretrained("mulo_small", model)                 # shipped theta, μLO scales
    opt = learned.LearnedOptimizer.from_module(model, lopt, theta, lr=0.5)
    opt = learned.LearnedOptimizer(model.parameters(), lopt, theta, infos=task.param_info)
    loss.backward(); opt.step(); opt.zero_grad()

Built on :class:`metaopt.RuleOptimizer`, so ``state_dict`` / ``load_state_dict`` (exact resume),
closures, param groups (plain or named parameters) and LR schedulers work as in torch. ``lr`` is
a multiplier of the LO's step (1.0: the step it was meta-trained with) and ``weight_decay`` is
decoupled (see :func:`learned.base.with_lr`); bf16 / fp16 parameters get float32 state.
``infos`` (one :class:`~metaopt.params.ParamInfo` per parameter, e.g. a task's ``param_info``,
or :func:`metaopt.params.infer_param_info` of a module, which :meth:`from_module` calls) give
μLO its per-layer scales; each parameter's role and fans are stored in its param group as a
plain tuple, so the optimizer's ``state_dict`` loads with ``torch.load(weights_only=True)``.
``theta`` is not part of the ``state_dict``: :meth:`save` writes it with the LO's class and
configuration, and :func:`learned.load` rebuilds the optimizer from that file. ``copy.deepcopy``
and ``pickle`` keep ``lopt`` and ``theta``.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from metaopt.optimizer import RuleOptimizer
from metaopt.params import ParamInfo, infer_param_info

from .base import LOpt, Theta, with_lr


def _info_tuple(info: ParamInfo | None) -> tuple | None:
    return None if info is None else (info.name, info.role, info.fan_in, info.fan_out)


class LearnedOptimizer(RuleOptimizer):
    """Runs ``lopt`` with meta-parameters ``theta`` on ``params``.

    Args:
      params: parameters, ``(name, parameter)`` pairs (``model.named_parameters()``) or param
        groups (each may carry ``"info"``: a ParamInfo tuple, and its own ``lr``).
      lopt: a :class:`learned.base.LOpt`.
      theta: its meta-parameters (checked: wrong names or shapes are a ``ValueError``).
      infos: optional ParamInfo per parameter (aligned with ``params``; not with groups).
      impl: :class:`RuleOptimizer`'s implementation path: ``"auto"`` (default: the LO's fused
        step where it declares itself fastest, i.e. MLPLOpt's C kernels on a CPU with a C
        compiler, :mod:`learned.fused_mlp_cpu`; else the loop), ``"loop"``, or ``"fused"`` for
        the LO's fused step where it has one (MLPLOpt: :mod:`learned.fused_mlp`; on a GPU
        Inductor-compiled, minutes on first use).
      lr: multiplier of the LO's step (a learning rate for torch's LR schedulers).
      weight_decay: decoupled weight decay, ``p <- p - lr (delta + weight_decay p)``.
      **hp: other hyperparameters of the LO's rule (``lopt.rule(theta).hp``), e.g. Math-L2O's
        problem constants ``l1`` and ``lipschitz``.
    """

    def __init__(self, params: Iterable, lopt: LOpt, theta: Theta,
                 infos: Sequence[ParamInfo] | None = None, impl: str = "auto",
                 lr: float | Tensor = 1.0, weight_decay: float = 0.0, **hp):
        if isinstance(params, Tensor) or isinstance(params, nn.Module):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__} (use "
                            "model.parameters(), or LearnedOptimizer.from_module(model, ...))")
        if not isinstance(lopt, LOpt):
            raise TypeError(f"lopt must be a learned.base.LOpt, got {type(lopt).__name__}")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if infos is not None:
            params = _groups_with_infos(params, infos)
        self.lopt = lopt
        self.theta = {k: v.detach().to(_first_tensor(params).device)
                      for k, v in lopt.check_theta(theta).items()}
        super().__init__(params, with_lr(lopt.rule(self.theta)), impl=impl, lr=lr,
                         weight_decay=weight_decay, **hp)

    @classmethod
    def from_module(cls, model: nn.Module, lopt: LOpt, theta: Theta,
                    base: nn.Module | None = None, **kwargs) -> "LearnedOptimizer":
        """An optimizer of every parameter of ``model`` (named), with the role and fans of
        each from :func:`metaopt.params.infer_param_info` (``base``: the same architecture at
        a smaller width, to find the width dimensions as microsoft/mup's base shapes do;
        without it a heuristic, see there). ``kwargs`` go to the constructor."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"from_module needs an nn.Module, got {type(model).__name__}")
        return cls(list(model.named_parameters()), lopt, theta,
                   infos=infer_param_info(model, base), **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``theta`` with the LO's class and configuration (safetensors + JSON metadata),
        so ``learned.load(path, params)`` rebuilds this optimizer (state aside: that is
        ``state_dict``)."""
        from .theta_io import save_theta
        save_theta(path, self.theta, self.lopt)

    # copy.deepcopy and pickle: torch's Optimizer keeps only defaults, state and groups, and
    # the rule (closures over theta) cannot be pickled, so it is rebuilt from lopt and theta.
    def __getstate__(self) -> dict:
        return {"lopt": self.lopt, "theta": self.theta, "impl": self.impl,
                "defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}

    def __setstate__(self, saved: dict) -> None:
        if "lopt" not in saved:  # torch's load_state_dict sets state and groups this way
            super().__setstate__(saved)
            return
        groups = [dict(g) for g in saved["param_groups"]]
        for g in groups:
            names = g.pop("param_names", None)
            if names is not None:
                g["params"] = list(zip(names, g["params"]))
        defaults = dict(saved["defaults"])
        LearnedOptimizer.__init__(self, groups, saved["lopt"], saved["theta"],
                                  impl=saved["impl"], **defaults)
        for p, s in saved["state"].items():
            self.state[p] = dict(s)


def _groups_with_infos(params: list, infos: Sequence[ParamInfo]) -> list[dict]:
    """One param group per parameter (plain or named) carrying its ``info``."""
    if any(isinstance(p, dict) for p in params):
        raise ValueError("LearnedOptimizer: pass infos with a flat list of parameters, "
                         "or put 'info' in each param group")
    if len(infos) != len(params):
        raise ValueError(f"LearnedOptimizer: {len(infos)} infos for {len(params)} parameters")
    return [{"params": [p], "info": _info_tuple(i)} for p, i in zip(params, infos)]


def _first_tensor(params: list) -> Tensor:
    for p in params:
        ps = p["params"] if isinstance(p, dict) else [p]
        if isinstance(ps, Tensor):
            ps = [ps]
        for t in ps:
            t = t[1] if isinstance(t, tuple) else t
            if not isinstance(t, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                f"{type(t).__name__}")
            return t
    raise ValueError("optimizer got an empty parameter list")
