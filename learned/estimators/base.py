"""The meta-gradient estimator interface: one object owns everything an estimator carries from
one outer step to the next.

An :class:`Estimator` holds an :class:`~learned.pool.InnerPool` (the inner trainings of the
slots this process owns) plus whatever state its method needs (PES: the perturbations
accumulated per slot), and answers one question per outer step:

    est = estimator.estimate(theta, generator)   # advances its slots one truncation

A subclass implements :meth:`Estimator.slot_estimates` (this process's slots: a gradient
estimate and a meta-loss per good slot, ``None`` for a slot that went non-finite and was
reset) and, when it keeps state of its own, the ``slot_*`` checkpoint hooks. The base class
combines the slots of every process (:mod:`learned.distributed`) and averages them in slot
order, so one process and many give the same numbers. As in learned_optimization's
``GradientEstimator`` (Metz et al., "Practical tradeoffs between memory, compute, and
performance in learned optimizers", CoLLAs 2022), where each estimator is one class with one
interface.
"""
from __future__ import annotations

import logging
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from ..base import LOpt, Theta
from ..distributed import LOCAL, Comm
from ..pool import InnerPool
from ..pytree import fill_named, flatten_named
from ..task_family import TaskFamily

log = logging.getLogger("learned.meta_train")


class Estimate(NamedTuple):
    grad: Theta | None  # mean over good slots; None when every slot failed
    meta_loss: float    # mean truncation meta-loss over good slots (nan when none)
    bad: list[int]      # slots that went non-finite (skipped and reset)
    slot_grads: list[Theta]  # the good slots' individual estimates (their spread is the noise)


class SlotEstimate(NamedTuple):
    grad: Theta    # this slot's gradient estimate
    loss: Tensor   # its truncation meta-loss (0-d; mean over its particles)


class Estimator:
    """Base class; subclasses set ``name`` and ``particles`` (inner states stored per slot) and
    implement :meth:`slot_estimates`. Register them with :func:`learned.estimators.register`."""

    name: ClassVar[str] = "estimator"
    particles: ClassVar[int] = 1
    slot_meta_keys: ClassVar[tuple[str, ...]] = ("resets",)  # integers saved per slot
    stateful: ClassVar[bool] = False  # keeps state of its own between estimates

    def __init__(self, lopt: LOpt, family: TaskFamily, num_tasks: int, *, seed: int = 0,
                 device: torch.device | str = "cpu", truncation: int = 20,
                 meta_loss: str = "mean_train_loss", std: float = 0.01, comm: Comm = LOCAL,
                 tasks_per_vmap: int | None = None, pool: InnerPool | None = None):
        self.std, self.comm, self.num_tasks = std, comm, num_tasks
        self.owners = comm.owners(num_tasks, tasks_per_vmap)
        chunk = tasks_per_vmap or -(-num_tasks // comm.world)
        self.pool = pool or InnerPool(lopt, family, num_tasks, self.particles, seed,
                                      torch.device(device), truncation, meta_loss,
                                      owned=comm.owned(num_tasks, tasks_per_vmap), chunk=chunk)

    # ----------------------------------------------------------------- estimating
    def estimate(self, theta: Theta, generator: torch.Generator) -> Estimate:
        """One meta-gradient estimate; advances (and resets) this process's slots."""
        mine = self.slot_estimates(theta, generator)
        every = self.comm.gather_slot_estimates(mine, self.owners, theta)
        return average(every, theta)

    def slot_estimates(self, theta: Theta, generator: torch.Generator
                       ) -> dict[int, SlotEstimate | None]:
        raise NotImplementedError

    def skip(self, s: int) -> None:
        """Log slot ``s`` as non-finite and reset it."""
        slot = self.pool.slots[s]
        log.warning("meta-train: slot %d (task %s, inner step %d) went non-finite; skipped and "
                    "reset", s, slot.task.name, int(slot.inner[2].max()))
        self.reset(s)

    def keep(self, s: int, inner: tuple) -> None:
        """Store slot ``s``'s new inner state; reset the slot when it reached the horizon."""
        self.pool.slots[s].inner = inner
        if self.pool.done(s):
            self.reset(s)

    def reset(self, s: int) -> None:
        self.pool.reset(s)

    # ----------------------------------------------------------------- checkpoint hooks
    def slot_meta(self, s: int) -> dict[str, int]:
        return {"resets": self.pool.slots[s].resets}

    def slot_tensors(self, s: int) -> dict[str, Tensor]:
        slot = self.pool.slots[s]
        return {**flatten_named(slot.inner, "inner"), "batch_gen": slot.batch_gen.get_state()}

    def slot_skeleton(self, s: int, meta: dict[str, int], theta: Theta) -> dict[str, Tensor]:
        """Tensors shaped as :meth:`slot_tensors` of slot ``s`` with ``meta`` (for a slot that
        another process holds); ``theta`` gives the shapes of theta-like state."""
        slot = self.pool.fresh_slot(s, meta["resets"])
        return {**flatten_named(slot.inner, "inner"), "batch_gen": slot.batch_gen.get_state()}

    def load_slot(self, s: int, meta: dict[str, int], tensors: dict[str, Tensor],
                  theta: Theta) -> None:
        slot = self.pool.restore_slot(s, meta["resets"])
        slot.inner = fill_named(slot.inner, tensors, "inner")
        slot.batch_gen.set_state(tensors["batch_gen"])

    # ----------------------------------------------------------------- whole state
    def state(self, theta: Theta) -> tuple[list[dict], dict[str, Tensor]] | None:
        """Every slot's meta and tensors (``slot/<s>/...``) on the root process, None elsewhere."""
        return self.comm.gather_slot_states(self, theta)

    def load_state(self, metas: list[dict], tensors: dict[str, Tensor], theta: Theta) -> None:
        """Restore this process's slots from a checkpoint written with any number of processes."""
        if len(metas) != self.num_tasks:
            raise ValueError(f"checkpoint holds {len(metas)} slots, this run has "
                             f"num_tasks={self.num_tasks}")
        for s in self.pool.slots:
            prefix = f"slot/{s}/"
            mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            self.load_slot(s, metas[s], mine, theta)


def average(every: list[SlotEstimate | None], theta: Theta) -> Estimate:
    """Mean gradient and meta-loss over the good slots, summed in slot order."""
    bad = [s for s, e in enumerate(every) if e is None]
    good = [e for e in every if e is not None]
    if not good:
        return Estimate(None, float("nan"), bad, [])
    total = zeros_like_theta(theta)
    for e in good:
        total = add_theta(total, e.grad)
    mean = {k: v / len(good) for k, v in total.items()}
    losses = torch.stack([e.loss for e in good])
    return Estimate(mean, float(losses.mean()), bad, [e.grad for e in good])


def perturbations(theta: Theta, n: int, std: float, generator: torch.Generator) -> list[Theta]:
    """``n`` draws of ``eps ~ N(0, std^2 I)`` shaped like ``theta`` (drawn on the CPU, so the
    same seed gives the same draws on every device and in every process)."""
    return [{k: (torch.randn(v.shape, generator=generator, dtype=torch.float64) * std)
             .to(device=v.device, dtype=v.dtype) for k, v in theta.items()} for _ in range(n)]


def stack_thetas(thetas: list[Theta]) -> Theta:
    return {k: torch.stack([t[k] for t in thetas]) for k in thetas[0]}


def zeros_like_theta(theta: Theta) -> Theta:
    return {k: torch.zeros_like(v) for k, v in theta.items()}


def add_theta(a: Theta, b: Theta, scale: float = 1.0) -> Theta:
    return {k: a[k] + scale * b[k] for k in a}


def finite_theta(theta: Theta) -> bool:
    return all(bool(v.isfinite().all()) for v in theta.values())
