"""Multi-tensor in-place fast paths for elementwise members (the capability ``caps.fused``).

A member's fast path is a *kernel*: a short sequence of in-place ``torch._foreach_*`` ops on
lists of same-shaped tensors (parameters, gradients and each state entry), equal to its
``update``. :func:`multi_tensor` turns a kernel into ``fused(params, grads, states, hp,
steps)``, which runs it block by block so that a block's parameters, gradients and state stay
in the cache between the kernel's passes:

  * tensors of more than ``BLOCK`` elements are cut into 1-D blocks of ``BLOCK`` elements
    (views, updated in place), each block a list of one;
  * smaller tensors are batched into lists of about ``BLOCK`` elements in all, so one
    ``_foreach`` call covers many of them (host time per small tensor stays low).

Each pass of an unfused op sequence would otherwise stream every tensor through main memory
again; cut into blocks, the traffic is close to one read of the inputs and one write of the
outputs (the byte floor), as in torch's fused Adam kernel (``torch._fused_adamw_``) and
HeavyBall's compiled chains. Tensors stepped at different step counts run as separate
batches; a step with ``hp["cautious"]`` set (the cautious mask's mean is per tensor, not
elementwise) runs the rule's own ``update`` per tensor.

The kernel signature: ``kernel(ps, gs, st, hp, step)`` with ``ps``, ``gs`` lists of tensors,
``st`` a dict of lists (one per blocked state key, aligned with ``ps``), ``hp`` the group's
hyperparameters and ``step`` the 1-based count (an int).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

#: elements per block: 256 Ki fp32 values are 1 MiB per tensor, so a kernel's 3-6 streams
#: of a block stay in the L2/L3 cache between passes, while each ``_foreach`` call still
#: covers enough elements that its host cost is small next to its memory traffic.
BLOCK = 1 << 18

#: devices on which ``"auto"`` prefers these paths to a compiled single-pass step: none, so
#: they are the fallback where compiling does not pay (small CPU groups, no C++ compiler; see
#: :func:`metaopt.fastpath.choose_impl`).
DEVICES = frozenset()

Kernel = Callable[[list, list, dict, Any, int], None]


def multi_tensor(kernel: Kernel, keys: Sequence[str], update: Callable | None = None,
                 devices: Sequence[str] = DEVICES) -> Callable[..., None]:
    """``fused(params, grads, states, hp, steps)`` running ``kernel`` block by block.

    ``keys``: the state entries shaped like the parameter (cut into blocks with it).
    ``update``: the rule's pure update, run per tensor when ``hp.get("cautious")``.
    ``devices``: where ``"auto"`` prefers this path to the compiled one (measured in
    ``experiments/results/zoo_cpu.md``: SGD's two ops are faster as foreach ops than as a
    compiled pass with its per-tensor call overhead).
    """

    def fused(params, grads, states, hp, steps) -> None:
        if hp.get("cautious"):
            per_tensor_update(update, params, grads, states, hp, steps)
            return
        hp = plain_numbers(hp)
        for step, idx in by_step(steps):
            batch = ([params[i] for i in idx], [grads[i] for i in idx],
                     [states[i] for i in idx])
            for ps, gs, st in blocks(*batch, keys):
                kernel(ps, gs, st, hp, step)

    fused.foreach = True  # a sequence of foreach ops: a generated C kernel beats it on a CPU
    return fast_path(fused, devices)


def fast_path(fused: Callable[..., None], devices: Sequence[str] = DEVICES
              ) -> Callable[..., None]:
    """``fused`` marked with the device types (``fused.devices``) where it is the fastest
    path (``"auto"`` should prefer a compiled step elsewhere)."""
    fused.devices = frozenset(devices)
    return fused


def plain_numbers(hp: Mapping[str, Any]) -> dict[str, Any]:
    """``hp`` with 0-d tensors (also inside tuples) as Python numbers: ``_foreach`` ops take
    their scalars as numbers."""
    def number(v):
        if isinstance(v, Tensor) and v.dim() == 0:
            return v.item()
        if isinstance(v, tuple):
            return tuple(number(x) for x in v)
        return v

    return {k: number(v) for k, v in hp.items()}


def per_tensor_update(update, params, grads, states, hp, steps) -> None:
    """The rule's own ``update`` applied in place, tensor by tensor."""
    for p, g, s, t in zip(params, grads, states, steps):
        delta, new = update(g, p, s, hp, t)
        p.sub_(delta)
        for k, v in new.items():
            if s[k] is not v:
                s[k].copy_(v)


def split_dense(params, grads, states, keys: Sequence[str]) -> tuple[list[int], list[int]]:
    """Indices of the tensors that torch's fused kernels may update (contiguous parameter,
    gradient and state entries ``keys``: they mis-update a non-contiguous view) and of the
    others."""
    dense, rest = [], []
    for i, (p, g, s) in enumerate(zip(params, grads, states)):
        ok = p.is_contiguous() and g.is_contiguous() and all(s[k].is_contiguous() for k in keys)
        (dense if ok else rest).append(i)
    return dense, rest


def pick(idx: Sequence[int], *lists: Sequence) -> tuple[list, ...]:
    """``[x[i] for i in idx]`` for each of ``lists``."""
    return tuple([x[i] for i in idx] for x in lists)


def by_step(steps: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Indices of the tensors at each distinct step count (one batch when all agree)."""
    if len(set(steps)) == 1:
        return [(int(steps[0]), list(range(len(steps))))]
    out: dict[int, list[int]] = {}
    for i, s in enumerate(steps):
        out.setdefault(int(s), []).append(i)
    return sorted(out.items())


def blocks(params: list[Tensor], grads: list[Tensor], states: list[dict], keys: Sequence[str],
           block: int | None = None) -> Iterator[tuple[list[Tensor], list[Tensor], dict]]:
    """``(ps, gs, st)`` lists covering every element once: blocks of large contiguous
    tensors, and batches of the rest totalling about ``block`` elements."""
    block = block or BLOCK
    small: list[int] = []
    size = 0
    for i, p in enumerate(params):
        n = p.numel()
        if n > block:
            tensors = [p, grads[i], *(states[i][k] for k in keys)]
            if all(t.is_contiguous() and t.shape == p.shape for t in tensors):
                flat = [t.view(-1) for t in tensors]
                for start in range(0, n, block):
                    views = [t[start:start + block] for t in flat]
                    yield [views[0]], [views[1]], dict(zip(keys, ([v] for v in views[2:])))
                continue
        small.append(i)
        size += n
        if size >= block:
            yield _batch(small, params, grads, states, keys)
            small, size = [], 0
    if small:
        yield _batch(small, params, grads, states, keys)


def _batch(idx, params, grads, states, keys):
    return ([params[i] for i in idx], [grads[i] for i in idx],
            {k: [states[i][k] for i in idx] for k in keys})


# --- ops shared by several members' kernels ----------------------------------------------------

def weight_decay_(ps: list[Tensor], gs: list[Tensor], lr: float, wd: float,
                  decoupled: bool) -> list[Tensor]:
    """Weight decay on lists of tensors: decoupled (``p *= 1 - lr wd`` in place, AdamW) or
    coupled (returns ``g + wd p``); the gradients to use next."""
    if wd and decoupled:
        torch._foreach_mul_(ps, 1 - lr * wd)
    elif wd:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    return gs


def adam_moments_(m: list[Tensor], v: list[Tensor], gs: list[Tensor], b1: float,
                  b2: float) -> None:
    """``m = b1 m + (1 - b1) g`` and ``v = b2 v + (1 - b2) g^2``, in place."""
    torch._foreach_lerp_(m, gs, 1 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, gs, gs, value=1 - b2)


def adam_denominator(v: list[Tensor], b2: float, step: int, eps: float) -> list[Tensor]:
    """``sqrt(v / (1 - b2^t)) + eps`` as new tensors (written ``sqrt(v) / sqrt(1 - b2^t)``)."""
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, (1 - b2**step) ** 0.5)
    torch._foreach_add_(denom, eps)
    return denom
