"""``RuleOptimizer``: any :class:`~metaopt.rule.UpdateRule` as a ``torch.optim.Optimizer``.

Param groups carry their own hyperparameters, ``state_dict``/``load_state_dict`` round-trip
the rule's state and step count exactly (a resumed run is bit-identical), closures and
``torch.optim.lr_scheduler`` work as with torch's own optimizers.

Implementation paths (``impl=``), all computing the same function:
  * ``"loop"``: the rule's pure ``update`` per tensor, then ``p -= delta``.
  * ``"fused"``: the rule's own in-place multi-tensor kernel (e.g. torch's fused AdamW).
  * ``"compiled"``: the per-tensor loop for a whole group under ``torch.compile``
    (hyperparameters and steps enter as tensors, so LR schedules do not recompile).
  * ``"auto"`` (default): fused when the rule has it, else compiled for elementwise rules on
    CUDA, else loop.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .rule import UpdateRule

IMPLS = ("auto", "loop", "fused", "compiled")


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that runs an update rule.

    Args:
      params: parameters or param groups (dicts with their own hyperparameters).
      rule: the update rule; its ``hp`` are the defaults.
      impl: ``"auto" | "loop" | "fused" | "compiled"``.
      **hp: hyperparameters overriding the rule's defaults (checked by the rule).
    """

    def __init__(self, params: Iterable, rule: UpdateRule, impl: str = "auto", **hp: Any):
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
        if impl == "fused" and rule.fused is None:
            raise ValueError(f"{rule.name} has no fused implementation; use impl='loop'")
        self.rule = rule.with_hp(**hp)
        self.impl = impl
        self._compiled: Callable | None = None
        super().__init__(params, dict(self.rule.hp))

    def add_param_group(self, param_group: dict) -> None:
        unknown = sorted(set(param_group) - set(self.rule.hp) - {"params"} - _TORCH_GROUP_KEYS)
        if unknown:
            raise ValueError(
                f"{self.rule.name}: unknown hyperparameter(s) {unknown}; "
                f"allowed: {sorted(self.rule.hp)}"
            )
        super().add_param_group(param_group)
        self.rule.check(self._hp(self.param_groups[-1]))

    def _hp(self, group: dict) -> dict:
        return {k: group[k] for k in self.rule.hp}

    def _init_state(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state.update(self.rule.init(p.detach()))
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One update of every parameter that has a gradient. Returns the closure's loss."""
        loss = None
        needs = set()
        for group in self.param_groups:
            first = next((p for p in group["params"] if p.grad is not None), None)
            if first is not None:
                step = int(self._init_state(first)["step"].item()) + 1
                needs |= self.rule.needs(self._hp(group), step)
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        elif needs:
            raise RuntimeError(
                f"{self.rule.name} needs {sorted(needs)} this step: call step(closure)"
            )
        for group in self.param_groups:
            self._step_group(group, loss, needs)
        return loss

    def _step_group(self, group: dict, loss: Tensor | None, needs: set) -> None:
        hp = self._hp(group)
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{self.rule.name} does not support sparse gradients")
        states = [self._init_state(p) for p in params]
        for s in states:
            s["step"] += 1
        steps = [int(s["step"].item()) for s in states]
        ext = _extras(params, needs, loss, self.rule.name)
        grads = [p.grad.detach() if not ext else p.grad for p in params]
        impl = self._choose_impl(params)
        rule_states = [{k: v for k, v in s.items() if k != "step"} for s in states]
        if impl == "fused":
            self.rule.fused([p.detach() for p in params], grads, rule_states, hp, steps)
            return
        if impl == "compiled":
            self._compiled_step(params, grads, rule_states, hp, steps)
            return
        for i, (p, g, s, st) in enumerate(zip(params, grads, rule_states, steps)):
            extra = {k: v[i] if isinstance(v, list) else v for k, v in ext.items()}
            delta, new = self.rule.update(g.detach(), p.detach(), s, hp, st, **extra)
            p.sub_(delta)
            states[i].update(new)

    def _choose_impl(self, params: list[Tensor]) -> str:
        if self.impl != "auto":
            return self.impl
        if self.rule.fused is not None:
            return "fused"
        if self.rule.elementwise and params[0].is_cuda and not self.rule.needs(self.rule.hp, 1):
            return "compiled"
        return "loop"

    def _compiled_step(self, params, grads, states, hp, steps) -> None:
        if self._compiled is None:
            self._compiled = torch.compile(_inplace_group_step, dynamic=False)
        dev = params[0].device
        hp_t = {k: torch.as_tensor(v, device=dev) if isinstance(v, float) else v
                for k, v in hp.items()}
        steps_t = [torch.tensor(float(s), device=dev) for s in steps]
        self._compiled(self.rule.update, [p.detach() for p in params], grads, states, hp_t, steps_t)


def _inplace_group_step(update, params, grads, states, hp, steps) -> None:
    for p, g, s, st in zip(params, grads, states, steps):
        delta, new = update(g, p, s, hp, st)
        p.sub_(delta)
        for k, v in new.items():
            s[k].copy_(v)


def _extras(params: list[Tensor], needs: set, loss: Tensor | None, name: str) -> dict:
    """Extra inputs a rule asked for: the loss, or Hessian-vector products ``H u`` with a
    Rademacher probe ``u`` (Hutchinson), computed from gradients built with
    ``backward(create_graph=True)``."""
    ext: dict[str, Any] = {}
    if "loss" in needs:
        ext["loss"] = loss.detach()
    if "hvp" in needs:
        if any(p.grad.grad_fn is None for p in params):
            raise RuntimeError(
                f"{name} needs Hessian-vector products: compute gradients with "
                "loss.backward(create_graph=True)"
            )
        us = [torch.randint_like(p, 0, 2) * 2 - 1 for p in params]
        with torch.enable_grad():
            hvps = torch.autograd.grad([p.grad for p in params], params, us)
        ext["hvp"] = [h.detach() for h in hvps]
        ext["u"] = us
    return ext


_TORCH_GROUP_KEYS = {"initial_lr", "name"}
