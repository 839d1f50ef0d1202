"""A safeguarded L2O model (:class:`~learned.l2o.safeguard.Safeguarded`) as a torch optimizer.

    sg = learned.Safeguarded(learned.MathL2O(), fallback="fista")
    opt = SafeguardedOptimizer([x], sg, theta, l1=lam, lipschitz=L)
    def closure():
        opt.zero_grad()
        loss = f(x)          # the smooth part only; the optimizer adds lam ||x||_1
        loss.backward()
        return loss
    opt.step(closure)

The safeguard compares objective values at several points per iteration and the fallback needs
``grad f`` away from the current iterate, so ``step`` needs a closure (like ``torch.optim.LBFGS``)
and evaluates it after writing each point into the parameters. The parameters are one problem:
they are flattened into one vector ``x`` and every accept/reject decision is for all of them.
``lipschitz`` is the Lipschitz constant of ``grad f`` for that vector.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from ..base import Theta
from .prox import soft_threshold
from .safeguard import Safeguarded


class ClosureProblem:
    """The :class:`~metaopt.tasks.lasso.L1Composite` interface the safeguard uses, for
    ``f = closure()`` on the flattened ``params``; the last evaluations are cached so a point
    costs one closure call."""

    def __init__(self, params: list[Tensor], closure: Callable, l1: float, lipschitz: float,
                 cache: int = 4):
        self.params, self.closure, self.lam = params, closure, float(l1)
        self.lipschitz = torch.as_tensor(lipschitz, dtype=params[0].dtype,
                                         device=params[0].device)
        self._cache: list[tuple[Tensor, Tensor, Tensor]] = []
        self._size = cache

    def _evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for point, f, g in self._cache:
            if torch.equal(point, x):
                return f, g
        write(self.params, x)
        with torch.enable_grad():
            f = self.closure()
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                       for p in self.params])
        f = torch.as_tensor(f).detach().to(x.dtype)
        self._cache = [(x.clone(), f, g.clone())] + self._cache[: self._size - 1]
        return f, g

    def smooth(self, x: Tensor) -> Tensor:
        return self._evaluate(x)[0]

    def smooth_grad(self, x: Tensor) -> Tensor:
        return self._evaluate(x)[1]

    def objective(self, x: Tensor) -> Tensor:
        return self.smooth(x) + self.lam * x.abs().sum()

    def subgrad(self, x: Tensor) -> Tensor:
        return self.smooth_grad(x) + self.lam * torch.sign(x)

    def prox(self, v: Tensor, step) -> Tensor:
        return soft_threshold(v, self.lam * step)


def flat(params: list[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def write(params: list[Tensor], x: Tensor) -> None:
    """Copy the flat vector ``x`` into ``params``."""
    offset = 0
    for p in params:
        p.copy_(x[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


class SafeguardedOptimizer(torch.optim.Optimizer):
    """Runs ``safeguarded`` with meta-parameters ``theta`` on ``params`` (one param group; see
    the module docstring). ``step(closure)`` returns ``F`` at the new iterate."""

    def __init__(self, params: Iterable[Tensor], safeguarded: Safeguarded, theta: Theta, *,
                 l1: float, lipschitz: float):
        if not isinstance(safeguarded, Safeguarded):
            raise ValueError("SafeguardedOptimizer: pass a learned.Safeguarded model, got "
                             f"{type(safeguarded).__name__}")
        if not (l1 >= 0 and float(lipschitz) > 0):
            raise ValueError(f"SafeguardedOptimizer: need l1 >= 0 and lipschitz > 0; got "
                             f"l1={l1}, lipschitz={lipschitz}")
        super().__init__(params, {"l1": float(l1), "lipschitz": float(lipschitz)})
        if len(self.param_groups) != 1:
            raise ValueError("SafeguardedOptimizer: the parameters are one problem; pass one "
                             "param group")
        self.safeguarded = safeguarded
        self.theta = {k: v.detach() for k, v in safeguarded.check_theta(theta).items()}

    def step(self, closure: Callable | None = None) -> Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("SafeguardedOptimizer.step needs a closure that recomputes the "
                             "smooth loss f and calls backward (as for torch.optim.LBFGS)")
        group = self.param_groups[0]
        params = group["params"]
        problem = ClosureProblem(params, closure, group["l1"], group["lipschitz"])
        slot = self.state[params[0]]
        with torch.no_grad():
            if "safeguard" not in slot:
                slot["step"], slot["safeguard"] = 0, self.safeguarded.init(flat(params))
            slot["step"] += 1
            theta = {k: v.to(params[0].dtype) for k, v in self.theta.items()}
            new = self.safeguarded.step(theta, problem, slot["safeguard"], slot["step"])
            slot["safeguard"] = new
            write(params, new["x"])
        return new["fx"]
