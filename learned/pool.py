"""The population of inner trainings that meta-training advances one truncation at a time.

``num_tasks`` slots; each holds one sampled task, its batch stream, and ``particles`` copies of
the inner state (parameters, LO state, step count) stacked on a leading axis: 2 for PES (the
antithetic pair keeps separate trajectories), 1 for ES and TBPTT. Slots whose family is
``vmappable`` are run together through one ``torch.func.vmap``; otherwise slot by slot (its
particles still vmapped). A slot is *reset* (new task, fresh init, zero state) when it reaches
the family's horizon or its run went non-finite.

Every random choice comes from a seed derived from ``(seed, slot, number of resets)``, so a
slot can be rebuilt exactly from a checkpoint.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .base import LOpt, Theta
from .pytree import tree_cat, tree_map, tree_split, tree_stack
from .task_family import TaskFamily
from .unroll import make_unroll


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every integer in ``parts`` (stable across runs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class Slot:
    task: Any
    resets: int
    batch_gen: torch.Generator
    inner: tuple  # (params list, states list, step tensor), leading particle axis
    acc: Theta | None = None  # PES: perturbations accumulated since the last reset


class InnerPool:
    """The slots plus the machinery to run one truncation over all of them."""

    def __init__(self, lopt: LOpt, family: TaskFamily, num_tasks: int, particles: int,
                 seed: int, device: torch.device, truncation: int, meta_loss: str):
        self.lopt, self.family, self.seed, self.device = lopt, family, seed, device
        self.particles, self.truncation, self.meta_loss = particles, truncation, meta_loss
        self._fns: dict[tuple, Callable] = {}
        self.slots = [self._fresh_slot(s, 0) for s in range(num_tasks)]

    # ----------------------------------------------------------------- slots
    def _fresh_slot(self, s: int, resets: int) -> Slot:
        task_seed = derived_seed(self.seed, s, resets)
        task = self.family.sample(torch.Generator().manual_seed(task_seed))
        params = [p.detach().to(self.device) for p in task.init(task.generator(task_seed))]
        states = [self.lopt.init(p, info) for p, info in zip(params, task.param_info)]
        single = (params, states, torch.zeros((), device=self.device))
        inner = tree_stack([single] * self.particles)
        batch_gen = task.generator(derived_seed(self.seed, s, resets, 1))
        return Slot(task, resets, batch_gen, inner)

    def reset(self, s: int) -> None:
        self.slots[s] = self._fresh_slot(s, self.slots[s].resets + 1)

    def restore_slot(self, s: int, resets: int) -> Slot:
        """A slot rebuilt for ``resets`` (its tensors then overwritten from a checkpoint)."""
        self.slots[s] = self._fresh_slot(s, resets)
        return self.slots[s]

    def groups(self) -> list[list[int]]:
        n = len(self.slots)
        return [list(range(n))] if self.family.vmappable else [[s] for s in range(n)]

    def window_batches(self, s: int) -> Any:
        """``truncation + 1`` batches of slot ``s`` stacked on a leading axis."""
        slot = self.slots[s]
        n = self.truncation + 1
        return tree_stack([slot.task.sample_batch(slot.batch_gen) for _ in range(n)])

    # ----------------------------------------------------------------- running
    def run(self, theta_of: Callable[[int], Any], width: int, grad: bool,
            inner_of: Callable[[int], tuple] | None = None) -> list[tuple]:
        """Advance every slot one truncation.

        ``theta_of(s)``: slot ``s``'s thetas stacked over ``width`` particles (or one unbatched
        theta when ``grad``, i.e. TBPTT). ``inner_of(s)``: its inner state with ``width``
        particles (default: the stored one). Returns per slot ``(grads or None, values, inner,
        ok)`` with a leading particle axis; the stored state is not changed.
        """
        inner_of = inner_of or (lambda s: self.slots[s].inner)
        out: list[tuple] = [None] * len(self.slots)  # type: ignore[list-item]
        for group in self.groups():
            fn = self._vmapped(self.slots[group[0]].task, grad)
            inner = tree_cat([inner_of(s) for s in group])
            batches = tree_cat([
                tree_map(lambda x: x.unsqueeze(0).expand(width, *x.shape), self.window_batches(s))
                for s in group])
            params, states, step = inner
            if grad:
                grads, (values, (p2, s2, t2, ok)) = fn(theta_of(group[0]), params, states, step,
                                                       batches)
            else:
                thetas = tree_cat([theta_of(s) for s in group])
                values, (p2, s2, t2, ok) = fn(thetas, params, states, step, batches)
                grads = None
            sizes = [width] * len(group)
            parts = zip(tree_split((p2, s2, t2), sizes), tree_split(values, sizes),
                        tree_split(ok, sizes),
                        tree_split(grads, sizes) if grads is not None else [None] * len(group))
            for s, (inner_s, v, k, g) in zip(group, parts):
                out[s] = (g, v.detach(), tree_map(lambda x: x.detach(), inner_s), k)
        return out

    def _vmapped(self, task, grad: bool) -> Callable:
        key = (id(task), grad)  # the cached closure keeps ``task`` alive, so ids stay unique
        if key not in self._fns:
            if len(self._fns) >= 64:  # families that build a new task per sample
                self._fns.clear()
            unroll = make_unroll(self.lopt, task.loss, task.param_info, self.truncation,
                                 self.meta_loss)
            if grad:
                fn = torch.func.vmap(torch.func.grad_and_value(unroll, has_aux=True),
                                     in_dims=(None, 0, 0, 0, 0))
            else:
                fn = torch.func.vmap(unroll)
            self._fns[key] = fn
        return self._fns[key]

    def done(self, s: int) -> bool:
        """Slot ``s`` reached the family's horizon (rounded up to whole truncations)."""
        return bool(self.slots[s].inner[2].max() >= self.family.horizon)


def expand_particles(inner: tuple, width: int) -> tuple:
    """A one-particle inner state repeated to ``width`` particles."""
    return tree_map(lambda x: x.expand(width, *x.shape[1:]).clone(), inner)


def take_particle(inner: tuple, i: int) -> tuple:
    """Particle ``i`` of an inner state, keeping a particle axis of 1."""
    return tree_map(lambda x: x[i:i + 1], inner)


def stack_thetas(thetas: list[Theta]) -> Theta:
    return {k: torch.stack([t[k] for t in thetas]) for k in thetas[0]}


def zeros_like_theta(theta: Theta) -> Theta:
    return {k: torch.zeros_like(v) for k, v in theta.items()}


def add_theta(a: Theta, b: Theta, scale: float = 1.0) -> Theta:
    return {k: a[k] + scale * b[k] for k in a}


def finite_theta(theta: Theta) -> bool:
    return all(bool(v.isfinite().all()) for v in theta.values())

