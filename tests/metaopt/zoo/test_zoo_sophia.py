"""Sophia (Liu et al. 2023) against pytorch_optimizer.SophiaH and a transcription of the
paper's Algorithm 2 in float64: >= 20 steps on a 1-D, a 2-D and a 4-D parameter in two param
groups (the second with its own lr and weight decay), parameters and state to 1e-6 relative,
every departure of the reference from the paper stated."""
import pytest
import torch
import pytorch_optimizer as po
from zoo_support import (assert_bf16_tracks_float32, assert_close_rel,
                         assert_converges_on_quadratic, run_against_reference)

from metaopt import zoo

# gradients built with backward(create_graph=True) are differentiated on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")


def test_sophia_h_matches_pytorch_optimizer_sophiah():
    """pytorch_optimizer.SophiaH steps ``lr_r clip(m / max(h, eps_r), p_r)`` with decay
    ``p (1 - lr_r wd_r)``; ours ``lr clip(m / max(rho h, eps), 1)`` with ``p (1 - lr wd)``.
    They are equal for rho = p_r, eps = p_r eps_r, lr = lr_r p_r, wd = wd_r / p_r. Both draw
    Rademacher probes in the same order from the same seed, so the Hutchinson estimates agree."""
    ref_hp = dict(lr=0.2, betas=(0.9, 0.95), weight_decay=0.05, p=0.5, update_period=3,
                  eps=1e-12, hessian_distribution="rademacher")
    hp = dict(lr=0.2 * 0.5, betas=(0.9, 0.95), weight_decay=0.05 / 0.5, rho=0.5, eps=0.5e-12,
              update_period=3)
    opt, ref_opt, ours, ref = run_against_reference(
        hp, po.SophiaH, ref_hp, "sophia", create_graph=True,
        ours_group2={"lr": 0.3 * 0.5, "weight_decay": 0.02 / 0.5},
        ref_group2={"lr": 0.3, "weight_decay": 0.02})
    for a, b in zip(ours, ref):
        assert_close_rel(opt.state[a]["exp_avg"], ref_opt.state[b]["momentum"])
        assert_close_rel(opt.state[a]["hessian"], ref_opt.state[b]["hessian_moment"])
        assert opt.state[a]["hessian"].abs().min() > 0


def test_sophia_hessian_refresh_schedule_and_exact_diagonal():
    """On a separable loss ``sum h_i x_i^2 / 2`` Hutchinson is exact (``u^2 = 1``): after the
    refreshes on steps 1 and 4 (period 3) the EMA started at 0 is ``(1 - b2^2) h``."""
    h = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    b2 = 0.9
    opt = zoo.create("sophia", [x], lr=1e-3, betas=(0.5, b2), update_period=3, weight_decay=0.0)
    for _ in range(5):
        opt.zero_grad()
        (0.5 * h * x * x).sum().backward(create_graph=True)
        opt.step()
    expected = h * (1 - b2 ** 2)  # two refreshes (steps 1 and 4) of an EMA started at 0
    torch.testing.assert_close(opt.state[x]["hessian"], expected, rtol=1e-12, atol=0)


def test_sophia_g_matches_transcription_of_official_algorithm():
    """Sophia-G on softmax regression against a per-parameter transcription of Liu et al.'s
    Algorithm 2 with the official code's update ``sign(m) min(|m| / (rho B h + eps), 1)``
    (``h`` the EMA of ``g_hat^2``, labels sampled from the model's logits every k steps)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=gen)
    W0 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    b0 = torch.randn(3, generator=gen, dtype=torch.float64)
    lr, (b1, b2), rho, wd, k, eps = 0.05, (0.9, 0.95), 0.04, 0.1, 2, 1e-15

    W, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = zoo.create("sophia", [W, b], lr=lr, betas=(b1, b2), rho=rho, weight_decay=wd,
                     update_period=k, estimator="gnb")
    Wr, br = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    mr = [torch.zeros_like(W0), torch.zeros_like(b0)]
    hr = [torch.zeros_like(W0), torch.zeros_like(b0)]
    for t in range(1, 22):
        opt.zero_grad()
        logits = X @ W + b
        torch.nn.functional.cross_entropy(logits, y).backward(retain_graph=True)
        torch.manual_seed(t)
        opt.step(logits=logits)
        # reference
        logits_r = X @ Wr + br
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits_r, y), [Wr, br],
                                    retain_graph=True)
        if (t - 1) % k == 0:
            torch.manual_seed(t)
            ys = torch.distributions.Categorical(logits=logits_r.detach()).sample()
            ghat = torch.autograd.grad(torch.nn.functional.cross_entropy(logits_r, ys), [Wr, br])
            hr = [b2 * h + (1 - b2) * gh * gh for h, gh in zip(hr, ghat)]
        with torch.no_grad():
            for i, (p, g) in enumerate(zip([Wr, br], grads)):
                p.mul_(1 - lr * wd)
                mr[i] = b1 * mr[i] + (1 - b1) * g
                ratio = (mr[i].abs() / (rho * 32 * hr[i] + eps)).clamp(max=1)
                p.sub_(lr * mr[i].sign() * ratio)
    assert_close_rel(W.detach(), Wr.detach())
    assert_close_rel(b.detach(), br.detach())
    assert_close_rel(opt.state[W]["hessian"], 32 * hr[0])


def test_sophia_needs_closure_or_create_graph():
    x = torch.ones(3, requires_grad=True)
    opt = zoo.create("sophia", [x])
    (x * x).sum().backward()
    with pytest.raises(RuntimeError, match="create_graph"):
        opt.step()
    opt = zoo.create("sophia", [x], estimator="gnb")
    with pytest.raises(RuntimeError, match="logits"):
        opt.step()


def test_sophia_converges_on_quadratic():
    assert_converges_on_quadratic("sophia", dict(lr=0.05, rho=1.0, weight_decay=0.0,
                                                 update_period=5), 300, create_graph=True)


def test_sophia_bf16_parameters_stay_bf16_and_make_float32_progress():
    assert_bf16_tracks_float32("sophia", dict(lr=1e-2), create_graph=True)
