"""Pieces shared by the zoo's test files: Rosenbrock's gradient (a closed form, independent of
the task code), the check that a population of learning rates run under ``vmap`` equals one
run per learning rate, a member run side by side with a reference optimizer in float64, and
the second-order members' convergence and bf16 checks."""
import math

import pytest
import torch
from torch.func import vmap

from metaopt import tasks, zoo


def rosenbrock_grad(x):
    """The gradient of ``(1 - a)^2 + 100 (b - a^2)^2`` at ``x = (a, b)``."""
    a, b = x[0], x[1]
    return torch.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])


# two param groups for Lion's and the cautious Lion's runs against lion-pytorch
LION_GROUPS = [{"lr": 0.01, "weight_decay": 0.1},
               {"lr": 0.003, "betas": (0.8, 0.95), "weight_decay": 0.5}]


def assert_lr_vmap_equals_loop(run, lrs, p0, s0, steps=3):
    """``run(lr, params, states, step_list)`` vmapped over ``lrs`` (steps as float64 0-d
    tensors) equals ``run`` called once per lr with int steps, to 1e-10."""
    steps_t = [torch.tensor(float(t), dtype=torch.float64) for t in range(1, steps + 1)]
    batched = vmap(run, in_dims=(0, None, None, None))(lrs, p0, s0, steps_t)
    for i in range(len(lrs)):
        single = run(float(lrs[i]), p0, s0, list(range(1, steps + 1)))
        for x, y in zip(batched, single):
            torch.testing.assert_close(x[i], y, rtol=1e-10, atol=1e-12)


# --- members against a reference optimizer, side by side in float64 -----------------------
# >= 20 steps on a 1-D, a 2-D and a 4-D parameter in two param groups, under a smooth loss
# whose Hessian is not diagonal; parameters (and the state the caller picks) to 1e-6 relative.

SHAPES = [(5,), (4, 6), (3, 2, 2, 2)]
RTOL = 1e-6


def float64_params(seed=0):
    """Three float64 tensors of :data:`SHAPES` drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]


def smooth_loss(params, targets, step):
    """A smooth non-quadratic loss whose Hessian is not diagonal; the targets drift with
    ``step``."""
    total = 0.0
    for p, t in zip(params, targets):
        r = p - t * (1 + 0.1 * math.sin(step))
        total = total + 0.5 * (r * r).sum() + 0.05 * (r ** 4).sum() + 0.1 * r.sum() ** 2
    return total


def two_groups(params, first, second):
    """The first two tensors with ``first``'s options, the rest with ``second``'s."""
    return [{"params": params[:2], **first}, {"params": params[2:], **second}]


def run_steps(opt, params, targets, steps, create_graph=False, seed0=100):
    """``steps`` steps of ``opt`` on :func:`smooth_loss`, the torch seed ``seed0 + t`` before
    step ``t`` (so two optimizers draw the same probes)."""
    for t in range(1, steps + 1):
        opt.zero_grad()
        loss = smooth_loss(params, targets, t)
        loss.backward(create_graph=create_graph)
        torch.manual_seed(seed0 + t)
        opt.step()
        for p in params:
            p.grad = None


def assert_close_rel(a, b, rtol=RTOL):
    """``a == b`` to ``rtol`` relative, absolute ``rtol`` times ``b``'s largest entry (>= 1)."""
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * max(1.0, float(b.abs().max())))


def run_against_reference(ours_hp, ref_cls, ref_hp, name, steps=25, create_graph=False,
                          ours_group2=None, ref_group2=None):
    """Zoo member ``name`` (``impl="loop"``) and ``ref_cls`` run side by side by
    :func:`run_steps`; asserts the parameters moved and agree, returns ``(opt, ref_opt, ours,
    ref)`` for the caller's state checks."""
    targets = float64_params(seed=1)
    ours = [p.clone().requires_grad_() for p in float64_params()]
    ref = [p.clone().requires_grad_() for p in float64_params()]
    opt = zoo.create(name, two_groups(ours, {}, ours_group2 or {}), impl="loop", **ours_hp)
    ref_opt = ref_cls(two_groups(ref, {}, ref_group2 or {}), **ref_hp)
    run_steps(opt, ours, targets, steps, create_graph)
    run_steps(ref_opt, ref, targets, steps, create_graph)
    for a, b in zip(ours, ref):
        assert not torch.equal(a.detach(), float64_params()[SHAPES.index(tuple(a.shape))])
        assert_close_rel(a.detach(), b.detach())
    return opt, ref_opt, ours, ref


# --- second-order members: convergence and bf16 -------------------------------------------

def assert_converges_on_quadratic(name, hp, steps, create_graph=False):
    """``steps`` steps of ``name`` cut a float64 quadratic's (dim 16, condition 100) loss
    below 1e-3 of its start."""
    torch.manual_seed(0)  # the probes of PSGD and Sophia
    task = tasks.get("quadratic", dim=16, cond=100.0, dtype=torch.float64)
    x = task.init()[0].clone().requires_grad_()
    start = task.evaluate([x.detach()])["val_loss"]
    opt = zoo.create(name, [x], **hp)
    batch = task.sample_batch()
    for _ in range(steps):
        opt.zero_grad()
        task.loss([x], batch).backward(create_graph=create_graph)
        opt.step()
        x.grad = None  # a create_graph gradient holds its graph
    assert task.evaluate([x.detach()])["val_loss"] < 1e-3 * start


def assert_bf16_tracks_float32(name, hp, create_graph=False):
    """bf16 parameters stay bf16 (matrix state in float32 where the member keeps it so) and
    reduce the loss as much as the float32 run, to bf16 precision, over 15 steps."""
    x0 = torch.linspace(-1, 1, 24).reshape(4, 6)

    def loss_of(x):
        return ((x.float() - 0.5) ** 2).sum() + (x.float() ** 4).sum()

    final = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = x0.to(dtype, copy=True).requires_grad_()
        opt = zoo.create(name, [x], **hp)
        for t in range(15):
            opt.zero_grad()
            loss_of(x).backward(create_graph=create_graph)
            torch.manual_seed(t)
            opt.step()
            x.grad = None
        assert x.dtype == dtype and torch.isfinite(x.float()).all()
        final[dtype] = loss_of(x.detach()).item()
    start = loss_of(x0).item()
    assert final[torch.float32] < 0.9 * start
    assert final[torch.bfloat16] == pytest.approx(final[torch.float32], rel=0.05)
