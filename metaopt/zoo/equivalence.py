"""Check a zoo member against a reference ``torch.optim.Optimizer`` (a public implementation).

Both optimizers train identical copies of a set of tensors (1-D, 2-D and 4-D by default,
split into param groups with their own hyperparameters) on the same smooth non-convex loss

    f(P) = sum_k [ 1/2 sum(a_k * p_k^2) + sum(b_k * p_k) + 0.1 * sum(sin(3 p_k)) ]

for ``steps`` steps, so any difference in an update feeds back into later gradients. After
every step the parameters, and the states named in ``state_map``, must agree to ``rtol``.
The CPU torch RNG is reseeded before each optimizer's step so that rules drawing random numbers
(Gravity's initial velocity) see the same draws.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from .registry import create

SHAPES = ((7,), (5, 6), (2, 3, 4, 5))


def make_problem(shapes: Sequence[tuple] = SHAPES, n_groups: int = 2, seed: int = 0,
                 dtype: torch.dtype = torch.float64):
    """Initial tensors (``n_groups`` lists, each holding one tensor per shape) and the loss."""
    gen = torch.Generator().manual_seed(seed)
    inits = [[torch.randn(s, generator=gen, dtype=dtype) for s in shapes] for _ in range(n_groups)]
    coefs = [[(0.5 + 1.5 * torch.rand(s, generator=gen, dtype=dtype),
               torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
             for _ in range(n_groups)]
    flat_coefs = [c for grp in coefs for c in grp]

    def loss(params: Sequence[Tensor]) -> Tensor:
        return sum(0.5 * (a * p * p).sum() + (b * p).sum() + 0.1 * torch.sin(3 * p).sum()
                   for p, (a, b) in zip(params, flat_coefs))

    return inits, loss


def _groups(inits, hps: Sequence[Mapping]) -> tuple[list[dict], list[Tensor]]:
    params = [[t.clone().requires_grad_() for t in grp] for grp in inits]
    return [dict(h, params=ps) for h, ps in zip(hps, params)], [p for ps in params for p in ps]


def _step(opt, params, loss, seed):
    opt.zero_grad()
    loss(params).backward()
    torch.random.default_generator.manual_seed(seed)  # the CPU generator (cheap)
    opt.step()


def compare_with_reference(
    name: str,
    reference: Callable[[list[dict]], torch.optim.Optimizer],
    groups: Sequence[Mapping[str, Any]],
    ref_groups: Sequence[Mapping[str, Any]] | None = None,
    state_map: Mapping[str, str | Callable[[dict], Tensor]] | None = None,
    steps: int = 25,
    rtol: float = 1e-6,
    atol: float = 1e-10,
    shapes: Sequence[tuple] = SHAPES,
    impl: str = "loop",
    problem: Callable | None = None,
    setup: Callable[[torch.optim.Optimizer, torch.optim.Optimizer], None] | None = None,
) -> list[Tensor]:
    """Run zoo member ``name`` and ``reference(param_groups)`` side by side; raise
    ``AssertionError`` at the first step where parameters or mapped states differ.

    ``groups`` are our hyperparameters per group, ``ref_groups`` the reference's (defaults to
    ``groups``); ``state_map`` maps our state key to the reference's key, or to a function of
    the reference's per-parameter state; ``problem(shapes, n_groups)`` replaces
    :func:`make_problem`; ``setup(ours, reference)`` runs before the first step (e.g. to
    give both the same random initial state). Returns our final parameters.
    """
    inits, loss = (problem or make_problem)(shapes, len(groups))
    ours_groups, ours = _groups(inits, groups)
    ref_groups_, theirs = _groups(inits, ref_groups if ref_groups is not None else groups)
    opt, ref = create(name, ours_groups, impl=impl), reference(ref_groups_)
    if setup is not None:
        setup(opt, ref)
    for k in range(1, steps + 1):
        _step(opt, ours, loss, k)
        _step(ref, theirs, loss, k)
        for i, (p, q) in enumerate(zip(ours, theirs)):
            _assert_close(p.detach(), q.detach(), rtol, atol, f"{name} step {k} param {i}")
            for ours_key, ref_key in (state_map or {}).items():
                got = opt.state[p][ours_key]
                want = ref_key(ref.state[q]) if callable(ref_key) else ref.state[q][ref_key]
                _assert_close(got, want.to(got.dtype), rtol, atol,
                              f"{name} step {k} param {i} state {ours_key}")
    return [p.detach() for p in ours]


def _assert_close(got: Tensor, want: Tensor, rtol: float, atol: float, where: str) -> None:
    # the cheap check first; torch.testing's report only when it fails
    if got.shape != want.shape or not torch.allclose(got, want, rtol=rtol, atol=atol):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{where}: {m}")
