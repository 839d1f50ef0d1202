"""The learned-optimizer interface shared by μLO (MLPLOpt) and the L2O structures.

A learned optimizer (LOpt) is an update rule with meta-parameters ``theta``:

    lopt.init_theta(generator)                          -> dict[str, Tensor]   (theta)
    lopt.init(param, info)                              -> state              (per tensor)
    lopt.update(theta, grad, param, state, step, info)  -> (delta, state)     (pure)
    lopt.rule(theta, infos)                             -> metaopt UpdateRule (theta bound)

``info`` is the tensor's :class:`metaopt.tasks.ParamInfo` (role and fans, for μP scaling) or
None. ``update`` uses out-of-place torch ops only, so the inner training it drives is
differentiable in ``theta`` (TBPTT), and vmappable over tasks (PES/ES).

As a rule (:meth:`LOpt.rule`, what :class:`learned.LearnedOptimizer` runs) every LO also has
the hyperparameters of :func:`with_lr` (a step multiplier ``lr``, default 1, and decoupled
``weight_decay``) and keeps its state and features in float32 for bf16 / fp16 parameters.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import torch
from torch import Tensor

from metaopt.capabilities import Capabilities
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
        """This LO with ``theta`` bound, as an :class:`UpdateRule` with :func:`with_lr`'s ``lr``
        and ``weight_decay``. Per-tensor ``info`` reaches ``update`` through the per-tensor
        hyperparameter ``"info"`` (see ``metaopt.rule.apply``)."""

        def init(p):
            return self.init(p, None)

        def update(g, p, s, hp, step, **ext):
            return self.update(theta, g, p, s, step, as_param_info(hp.get("info")), **ext)

        caps = Capabilities(elementwise=False, fused=self.fused_rule(theta))
        return with_lr(UpdateRule(self.name, init, update, hp={"info": None}, caps=caps))

    def fused_rule(self, theta: Theta):
        """An optional in-place multi-tensor step equal to ``update`` with ``theta`` bound
        (its :class:`UpdateRule`'s capability ``caps.fused``; run by
        ``LearnedOptimizer(impl="fused")``), or None."""
        return None


def as_param_info(info: tuple | ParamInfo | None) -> ParamInfo | None:
    """A tensor's ``ParamInfo`` from the form a param group stores it in: a plain tuple
    ``(name, role, fan_in, fan_out)`` (so optimizer state dicts load with
    ``weights_only=True``), a ``ParamInfo``, or None."""
    return info if (info is None or isinstance(info, ParamInfo)) else ParamInfo(*info)


LOW_PRECISION = (torch.bfloat16, torch.float16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for bf16 / fp16 parameters (an LO's state, features and step are computed there,
    as torch's fused AdamW keeps fp32 math for low-precision parameters), else ``dtype``."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def _up(x: Tensor) -> Tensor:
    return x.to(compute_dtype(x.dtype))


def scale_step(delta: Tensor, param: Tensor, hp: Mapping[str, Any]) -> Tensor:
    """``lr * (delta + weight_decay * param)``: the LO's step times the multiplier ``lr``, with
    decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR
    2019) scaled like the step, so ``p <- p - lr (delta + wd p)``."""
    lr, wd = hp.get("lr", 1.0), hp.get("weight_decay", 0.0)
    plain = not isinstance(lr, Tensor) and not isinstance(wd, Tensor)
    if plain and lr == 1.0 and wd == 0.0:
        return delta
    if not (plain and wd == 0.0):
        delta = delta + wd * param
    return delta * lr


def _check_lr(hp: Mapping[str, Any]) -> None:
    for key in ("lr", "weight_decay"):
        v = hp[key]
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise ValueError(f"{key} as a tensor must have one element, got shape "
                                 f"{tuple(v.shape)}")
            v = float(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise ValueError(f"{key} must be a finite number >= 0, got {v!r}")


def with_lr(rule: UpdateRule) -> UpdateRule:
    """``rule`` (an LO's, per tensor) with a step multiplier ``lr`` (default 1.0: the step it
    was meta-trained with; torch LR schedulers scale it like any learning rate) and decoupled
    ``weight_decay`` (default 0; see :func:`scale_step`), computing in float32 for bf16 / fp16
    parameters: state created and kept in float32, gradient and parameter cast up, the step
    cast to the parameter's dtype only when it is subtracted. Without this, in bf16 the step
    count's ``0.999 ** t`` rounds to 1 (Adam's bias correction, hence every step, is 0) and
    in fp16 ``v``'s epsilon underflows (NaN at step 1)."""
    if "lr" in rule.hp:
        return rule
    init0, update0, fused0 = rule.init, rule.update, rule.caps.fused

    def init(p):
        return init0(_up(p))

    def update(g, p, s, hp, step, **ext):
        p32 = _up(p)
        delta, new = update0(_up(g), p32, s, hp, step, **ext)
        return scale_step(delta, p32, hp).to(p.dtype), new

    def check(hp):
        rule.check(hp)
        _check_lr(hp)

    fused = None if fused0 is None else _fused_with_lr(fused0)
    return dataclasses.replace(rule, init=init, update=update, check=check,
                               caps=dataclasses.replace(rule.caps, fused=fused),
                               hp={**rule.hp, "lr": 1.0, "weight_decay": 0.0})


def _fused_with_lr(fused0):
    """The in-place multi-tensor step ``fused0`` with :func:`with_lr`'s ``lr``, weight decay
    and float32 compute (one tensor at a time through a float32 copy where needed)."""

    def fused(params, grads, states, hp, steps):
        plain = scale_step(params[0], params[0], hp) is params[0] if params else True
        for p, g, s, st in zip(params, grads, states, steps):
            if plain and p.dtype not in LOW_PRECISION:
                fused0([p], [g], [s], hp, [st])
                continue
            old = _up(p).clone()
            new = old.clone()
            fused0([new], [_up(g)], [s], hp, [st])
            p.copy_(old - scale_step(old - new, old, hp))

    fused.devices = getattr(fused0, "devices", ())
    return fused
