"""Shampoo (Gupta et al. 2018) against pytorch_optimizer.Shampoo and a transcription of the
paper's Algorithm 2 with grafting in float64: >= 20 steps on a 1-D, a 2-D and a 4-D parameter
in two param groups (the second with its own lr and weight decay), parameters and statistics
to 1e-6 relative."""
import pytest
import torch
import pytorch_optimizer as po
from zoo_support import (assert_bf16_tracks_float32, assert_close_rel,
                         assert_converges_on_quadratic, float64_params, run_against_reference,
                         run_steps, smooth_loss)

from metaopt import tasks, zoo


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_shampoo_matches_pytorch_optimizer_shampoo(momentum):
    """pytorch_optimizer.Shampoo (moskomule's port of Gupta et al. Algorithm 2): coupled weight
    decay, eps I initial statistics, SVD inverse roots (ours: float64 eigh, the same matrix
    function for a symmetric positive definite input), roots every step."""
    hp = dict(lr=0.05, momentum=momentum, weight_decay=0.01, eps=1e-3)
    opt, ref_opt, ours, ref = run_against_reference(
        hp, po.Shampoo, dict(hp, matrix_eps=hp["eps"]), "shampoo",
        ours_group2={"lr": 0.02, "weight_decay": 0.03},
        ref_group2={"lr": 0.02, "weight_decay": 0.03})
    for a, b in zip(ours, ref):
        for i in range(a.dim()):
            assert_close_rel(opt.state[a][f"stat_{i}"], ref_opt.state[b][f"pre_cond_{i}"])
            assert_close_rel(opt.state[a][f"root_{i}"], ref_opt.state[b][f"inv_pre_cond_{i}"])


def _shampoo_transcription(params, targets, steps, lr, eps, freq, graft_eps, max_dim):
    """Gupta et al. Algorithm 2 with AdaGrad grafting, written per tensor with explicit
    unfoldings (matrix_power of eigen-factors recomputed every ``freq`` steps from step 1)."""
    params = [p.clone().requires_grad_() for p in params]
    stats = [{i: eps * torch.eye(n, dtype=p.dtype) for i, n in enumerate(p.shape) if n <= max_dim}
             for p in params]
    roots = [{} for _ in params]
    acc = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        grads = torch.autograd.grad(smooth_loss(params, targets, t), params)
        with torch.no_grad():
            for j, (p, g) in enumerate(zip(params, grads)):
                k = p.dim()
                d = g.clone()
                for i in stats[j]:
                    unf = g.movedim(i, 0).reshape(g.shape[i], -1)
                    stats[j][i] += unf @ unf.T
                    if (t - 1) % freq == 0:
                        lam, v = torch.linalg.eigh(stats[j][i])
                        roots[j][i] = v @ torch.diag(lam ** (-1 / (2 * k))) @ v.T
                    d = torch.movedim(torch.tensordot(roots[j][i], d, dims=([1], [i])), 0, i)
                acc[j] += g * g
                graft = g / (acc[j].sqrt() + graft_eps)
                p.sub_(lr * d * graft.norm() / d.norm())
    return params


def test_shampoo_grafting_frequency_and_max_dim_match_transcription():
    targets = float64_params(seed=1)
    kw = dict(lr=0.05, eps=1e-4, freq=3, graft_eps=1e-10, max_dim=5)
    expected = _shampoo_transcription(float64_params(), targets, 21, **kw)
    ours = [p.clone().requires_grad_() for p in float64_params()]
    opt = zoo.create("shampoo", ours, lr=kw["lr"], eps=kw["eps"], precondition_frequency=3,
                     graft="adagrad", max_precond_dim=5)
    run_steps(opt, ours, targets, 21)
    assert "stat_1" not in opt.state[ours[1]]  # the 6-wide dimension has no factor
    for a, b in zip(ours, expected):
        assert_close_rel(a.detach(), b.detach())


def test_shampoo_converges_on_quadratic():
    assert_converges_on_quadratic("shampoo", dict(lr=0.5, graft="none", eps=1e-4), 60)


def test_shampoo_bf16_parameters_stay_bf16_and_make_float32_progress():
    assert_bf16_tracks_float32("shampoo", dict(lr=0.05, eps=1e-4))


def test_shampoo_survives_rank_deficient_float32_statistics():
    """Deterministic gradients on a quadratic keep the statistics nearly rank one; in float32
    their small eigenvalues round to zero or below. Flooring at eps (the true minimum) keeps
    the roots finite: before, the loss went NaN within 6 steps at any learning rate."""
    from metaopt.bench.run import train_curve

    task = tasks.get("quadratic")
    rec = train_curve(task, zoo.rule("shampoo", lr=1e-2), seed=0, steps=300, eval_every=50)
    assert not rec["diverged"]
    assert rec["train_loss"][-1] < 0.9 * rec["train_loss"][0]
