"""The population of inner trainings that meta-training advances one truncation at a time.

The pool holds the *slots* ``owned`` by this process (all ``num_tasks`` of them when training
in one process; a share of them per rank under :mod:`learned.distributed`), run through
``torch.func.vmap`` in consecutive chunks of ``chunk`` slots. Each slot holds one
sampled task, its batch stream, and ``particles`` copies of the inner state (parameters, LO
state, step count) stacked on a leading axis: 2 for PES (the antithetic pair keeps separate
trajectories), 1 for ES and TBPTT. Slots whose family is ``vmappable`` are run together through
one ``torch.func.vmap``; otherwise slot by slot (its particles still vmapped). A slot is *reset*
(new task, fresh init, zero state) when it reaches the family's horizon or its run went
non-finite.

Every random choice comes from a seed derived from ``(seed, slot, number of resets)``, so a
slot is the same whichever process holds it, and can be rebuilt exactly from a checkpoint.
The pool knows nothing of estimators: it runs thetas it is given and returns the results
(:class:`Truncation`); the estimator decides what is kept.
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

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


class Truncation(NamedTuple):
    """One slot's truncation: per-particle meta-losses, the new inner state (not yet kept),
    whether everything stayed finite, and (TBPTT) the gradient of the meta-loss in theta."""
    values: Tensor
    inner: tuple
    ok: Tensor
    grad: Theta | None = None


class InnerPool:
    """The owned slots plus the machinery to run one truncation over all of them."""

    def __init__(self, lopt: LOpt, family: TaskFamily, num_tasks: int, particles: int,
                 seed: int, device: torch.device, truncation: int, meta_loss: str,
                 owned: Sequence[int] | None = None, chunk: int | None = None):
        self.lopt, self.family, self.seed, self.device = lopt, family, seed, device
        self.particles, self.truncation, self.meta_loss = particles, truncation, meta_loss
        self.num_tasks, self.chunk = num_tasks, chunk
        self._fns: dict[tuple, Callable] = {}
        owned = range(num_tasks) if owned is None else owned
        self.slots: dict[int, Slot] = {s: self.fresh_slot(s, 0) for s in owned}

    # ----------------------------------------------------------------- slots
    def fresh_slot(self, s: int, resets: int) -> Slot:
        """Slot ``s`` as it is after ``resets`` resets (new task, fresh init, zero state)."""
        task_seed = derived_seed(self.seed, s, resets)
        task = self.family.sample(torch.Generator().manual_seed(task_seed))
        params = [p.detach().to(self.device) for p in task.init(task.generator(task_seed))]
        states = [self.lopt.init(p, info) for p, info in zip(params, task.param_info)]
        single = (params, states, torch.zeros((), device=self.device))
        inner = tree_stack([single] * self.particles)
        batch_gen = task.generator(derived_seed(self.seed, s, resets, 1))
        return Slot(task, resets, batch_gen, inner)

    def reset(self, s: int) -> None:
        self.slots[s] = self.fresh_slot(s, self.slots[s].resets + 1)

    def restore_slot(self, s: int, resets: int) -> Slot:
        """A slot rebuilt for ``resets`` (its tensors then overwritten from a checkpoint)."""
        self.slots[s] = self.fresh_slot(s, resets)
        return self.slots[s]

    def done(self, s: int) -> bool:
        """Slot ``s`` reached the family's horizon (rounded up to whole truncations)."""
        return bool(self.slots[s].inner[2].max() >= self.family.horizon)

    def groups(self) -> list[list[int]]:
        """Slots run in one ``vmap``: consecutive chunks of ``chunk`` (None: all) when the
        family is vmappable, else one by one."""
        if not self.family.vmappable:
            return [[s] for s in self.slots]
        if self.chunk is None:
            return [list(self.slots)]
        return [list(g) for _, g in itertools.groupby(self.slots, key=lambda s: s // self.chunk)]

    def window_batches(self, s: int) -> Any:
        """``truncation + 1`` batches of slot ``s`` stacked on a leading axis."""
        slot = self.slots[s]
        n = self.truncation + 1
        return tree_stack([slot.task.sample_batch(slot.batch_gen) for _ in range(n)])

    # ----------------------------------------------------------------- running
    def run(self, thetas: Mapping[int, Theta], width: int,
            inners: Mapping[int, tuple] | None = None) -> dict[int, Truncation]:
        """Advance every owned slot one truncation with its ``width`` stacked thetas
        ``thetas[s]``, from ``inners[s]`` (default: the stored state, which must have ``width``
        particles). The stored state is not changed."""
        inners = inners or {s: slot.inner for s, slot in self.slots.items()}
        out: dict[int, Truncation] = {}
        for group in self.groups():
            fn = self._vmapped(self.slots[group[0]].task, grad=False)
            values, new = fn(tree_cat([thetas[s] for s in group]),
                             *tree_cat([inners[s] for s in group]), self._batches(group, width))
            out.update(self._split(group, width, values, new))
        return out

    def run_grad(self, theta: Theta) -> dict[int, Truncation]:
        """As :meth:`run` with one particle per slot, with the gradient of each slot's
        meta-loss with respect to ``theta`` (truncated BPTT)."""
        out: dict[int, Truncation] = {}
        for group in self.groups():
            fn = self._vmapped(self.slots[group[0]].task, grad=True)
            grads, (values, new) = fn(theta, *tree_cat([self.slots[s].inner for s in group]),
                                      self._batches(group, 1))
            grads = tree_split(grads, [1] * len(group))
            for (s, tr), g in zip(self._split(group, 1, values, new).items(), grads):
                out[s] = tr._replace(grad={k: v[0].detach() for k, v in g.items()})
        return out

    def _batches(self, group: list[int], width: int) -> Any:
        return tree_cat([
            tree_map(lambda x: x.unsqueeze(0).expand(width, *x.shape), self.window_batches(s))
            for s in group])

    @staticmethod
    def _split(group, width, values, new) -> dict[int, Truncation]:
        p2, s2, t2, ok = new
        sizes = [width] * len(group)
        parts = zip(tree_split((p2, s2, t2), sizes), tree_split(values, sizes),
                    tree_split(ok, sizes))
        return {s: Truncation(v.detach(), tree_map(lambda x: x.detach(), inner), k)
                for s, (inner, v, k) in zip(group, parts)}

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


def expand_particles(inner: tuple, width: int) -> tuple:
    """A one-particle inner state repeated to ``width`` particles."""
    return tree_map(lambda x: x.expand(width, *x.shape[1:]).clone(), inner)


def take_particle(inner: tuple, i: int) -> tuple:
    """Particle ``i`` of an inner state, keeping a particle axis of 1."""
    return tree_map(lambda x: x[i:i + 1], inner)
