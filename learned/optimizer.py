"""``LearnedOptimizer``: a learned optimizer with fixed meta-parameters as a torch optimizer.

    lopt = learned.MLPLOpt()
    theta = learned.load_theta("mulo.safetensors", lopt)
    opt = learned.LearnedOptimizer(model.parameters(), lopt, theta, infos=task.param_info)
    loss.backward(); opt.step(); opt.zero_grad()

Built on :class:`metaopt.RuleOptimizer`, so ``state_dict`` / ``load_state_dict`` (exact resume),
closures and param groups work as in torch. ``infos`` (one :class:`~metaopt.tasks.ParamInfo`
per parameter, e.g. a task's ``param_info``) gives μLO its per-layer scales; each parameter's
role and fans are stored in its param group as a plain tuple, so the optimizer's
``state_dict`` loads with ``torch.load(weights_only=True)``. ``theta`` is not part of the
``state_dict``: save it with :func:`learned.save_theta`.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from metaopt.optimizer import RuleOptimizer
from metaopt.tasks import ParamInfo

from .base import LOpt, Theta


def _info_tuple(info: ParamInfo | None) -> tuple | None:
    return None if info is None else (info.name, info.role, info.fan_in, info.fan_out)


class LearnedOptimizer(RuleOptimizer):
    """Runs ``lopt`` with meta-parameters ``theta`` on ``params``.

    Args:
      params: parameters (or param groups, each may carry ``"info"``: a ParamInfo tuple).
      lopt: a :class:`learned.base.LOpt`.
      theta: its meta-parameters (checked: wrong names or shapes are a ``ValueError``).
      infos: optional ParamInfo per parameter (aligned with ``params``; plain parameters only).
      impl: :class:`RuleOptimizer`'s implementation path: ``"loop"``, or ``"fused"`` for the
        LO's compiled fused step where it has one (MLPLOpt: :mod:`learned.fused_mlp`).
      **hp: hyperparameters of the LO's rule (``lopt.rule(theta).hp``), e.g. Math-L2O's
        problem constants ``l1`` and ``lipschitz``.
    """

    def __init__(self, params: Iterable, lopt: LOpt, theta: Theta,
                 infos: Sequence[ParamInfo] | None = None, impl: str = "loop", **hp):
        self.lopt = lopt
        params = list(params)
        if infos is not None:
            if any(isinstance(p, dict) for p in params):
                raise ValueError("LearnedOptimizer: pass infos with a flat list of parameters, "
                                 "or put 'info' in each param group")
            if len(infos) != len(params):
                raise ValueError(
                    f"LearnedOptimizer: {len(infos)} infos for {len(params)} parameters")
            params = [{"params": [p], "info": _info_tuple(i)} for p, i in zip(params, infos)]
        device = _first_device(params)
        self.theta = {k: v.detach().to(device) for k, v in lopt.check_theta(theta).items()}

        super().__init__(params, lopt.rule(self.theta), impl=impl, **hp)


def _first_device(params: list) -> torch.device:
    for p in params:
        ps = p["params"] if isinstance(p, dict) else [p]
        for t in ps:
            return t.device
    raise ValueError("LearnedOptimizer got an empty parameter list")
