"""The learned-optimizer interface shared by μLO (MLPLOpt) and the L2O structures.

A learned optimizer (LOpt) is an update rule with meta-parameters ``theta``:

    lopt.init_theta(generator)                          -> dict[str, Tensor]   (theta)
    lopt.init(param, info)                              -> state              (per tensor)
    lopt.update(theta, grad, param, state, step, info)  -> (delta, state)     (pure)
    lopt.rule(theta, infos)                             -> metaopt UpdateRule (theta bound)

``info`` is the tensor's :class:`metaopt.tasks.ParamInfo` (role and fans, for μP scaling) or
None. ``update`` uses out-of-place torch ops only, so the inner training it drives is
differentiable in ``theta`` (TBPTT), and vmappable over tasks (PES/ES).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from metaopt.rule import UpdateRule
from metaopt.tasks import ParamInfo

Theta = dict[str, Tensor]


class LOpt:
    """Base class of learned optimizers (see the module docstring for the contract)."""

    name: str = "lopt"

    def init_theta(self, generator: torch.Generator | None = None) -> Theta:
        raise NotImplementedError

    def init(self, param: Tensor, info: ParamInfo | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def update(self, theta: Theta, grad: Tensor, param: Tensor, state: Mapping[str, Tensor],
               step: int | Tensor, info: ParamInfo | None = None, **ext: Any
               ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def check_theta(self, theta: Mapping[str, Tensor]) -> Theta:
        """``theta`` as a dict, after checking its names and shapes against ``init_theta()``;
        a mismatch is a one-line ``ValueError`` naming the first wrong entry."""
        ref = self.init_theta(torch.Generator().manual_seed(0))
        name = self.name
        if not isinstance(theta, Mapping):
            raise ValueError(f"{name}: theta must be a dict of tensors, got {type(theta).__name__}")
        missing, extra = sorted(set(ref) - set(theta)), sorted(set(theta) - set(ref))
        if missing or extra:
            raise ValueError(f"{name}: theta has wrong entries (missing {missing}, "
                             f"unexpected {extra})")
        for k, v in ref.items():
            t = theta[k]
            if not isinstance(t, Tensor) or tuple(t.shape) != tuple(v.shape):
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name}: theta[{k!r}] has shape {got}, expected {tuple(v.shape)}")
        return {k: theta[k] for k in ref}

    def rule(self, theta: Theta, infos: list[ParamInfo] | None = None) -> UpdateRule:
        """This LO with ``theta`` bound, as an :class:`UpdateRule`. Per-tensor ``info`` reaches
        ``update`` through the per-tensor hyperparameter ``"info"`` (see ``metaopt.rule.apply``)."""

        def init(p):
            return self.init(p, None)

        def update(g, p, s, hp, step, **ext):
            return self.update(theta, g, p, s, step, as_param_info(hp.get("info")), **ext)

        return UpdateRule(self.name, init, update, hp={"info": None}, elementwise=False,
                          fused=self.fused_rule(theta))

    def fused_rule(self, theta: Theta):
        """An optional in-place multi-tensor step equal to ``update`` with ``theta`` bound
        (:class:`UpdateRule`'s ``fused``; run by ``LearnedOptimizer(impl="fused")``), or None."""
        return None


def as_param_info(info: tuple | ParamInfo | None) -> ParamInfo | None:
    """A tensor's ``ParamInfo`` from the form a param group stores it in: a plain tuple
    ``(name, role, fan_in, fan_out)`` (so optimizer state dicts load with
    ``weights_only=True``), a ``ParamInfo``, or None."""
    return info if (info is None or isinstance(info, ParamInfo)) else ParamInfo(*info)
