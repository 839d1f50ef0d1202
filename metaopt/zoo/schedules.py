"""SGDR: cosine annealing with warm restarts (Loshchilov & Hutter, "SGDR: Stochastic Gradient
Descent with Warm Restarts", ICLR 2017, eq. 5), usable with any zoo member:

    lr(t) = lr_min + 1/2 (lr_max - lr_min) (1 + cos(pi T_cur / T_i))

where the i-th run lasts ``T_i = t_0 t_mult^i`` steps (or epochs) and ``T_cur`` counts the
steps since the last restart (fractional ``t`` allowed, as in the paper).

    sgdr_lr(t, lr_max=0.1, t_0=10)                      # the pure function
    sched = SGDR(opt, t_0=10, t_mult=2, lr_min=1e-5)    # a torch LR scheduler; sched.step()
"""
from __future__ import annotations

import math

import torch


def sgdr_position(t: float, t_0: int, t_mult: int = 1) -> tuple[float, float]:
    """``(T_cur, T_i)``: the position of step ``t`` inside its run and that run's length."""
    if t_mult == 1:
        return t % t_0, float(t_0)
    i = int(math.log(t / t_0 * (t_mult - 1) + 1, t_mult))
    start = t_0 * (t_mult**i - 1) / (t_mult - 1)
    return t - start, float(t_0 * t_mult**i)


def sgdr_lr(t: float, lr_max: float, t_0: int, t_mult: int = 1, lr_min: float = 0.0) -> float:
    """The SGDR learning rate at step ``t >= 0``."""
    _check(t_0, t_mult, lr_min)
    if t < 0:
        raise ValueError(f"sgdr: invalid t={t}: must be >= 0")
    t_cur, t_i = sgdr_position(t, t_0, t_mult)
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * t_cur / t_i))


def _check(t_0, t_mult, lr_min) -> None:
    if not isinstance(t_0, int) or t_0 < 1:
        raise ValueError(f"sgdr: invalid t_0={t_0!r}: must be an integer >= 1")
    if not isinstance(t_mult, int) or t_mult < 1:
        raise ValueError(f"sgdr: invalid t_mult={t_mult!r}: must be an integer >= 1")
    if lr_min < 0:
        raise ValueError(f"sgdr: invalid lr_min={lr_min}: must be >= 0")


class SGDR(torch.optim.lr_scheduler.LRScheduler):
    """SGDR for any ``torch.optim.Optimizer``: each group's initial lr is its ``lr_max``."""

    def __init__(self, optimizer, t_0: int, t_mult: int = 1, lr_min: float = 0.0,
                 last_epoch: int = -1):
        _check(t_0, t_mult, lr_min)
        self.t_0, self.t_mult, self.lr_min = t_0, t_mult, lr_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [sgdr_lr(self.last_epoch, base, self.t_0, self.t_mult, self.lr_min)
                for base in self.base_lrs]
