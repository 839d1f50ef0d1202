"""learned/orthogonal.py and MLPLOpt(orthogonalize=True): the orthogonalized step keeps the
per-coordinate step's singular vectors exactly (checked against float64 SVD) with Muon's scale,
starts as NS5 of Adam's direction (checked against torch.optim.Adam), leaves non-hidden tensors
alone, and the fused step and a saved file agree with the eager LO."""
from __future__ import annotations

import pytest
import torch

import learned
from learned import MLPLOpt, adam_like_theta
from learned.orthogonal import is_orthogonalized, orthogonal_step
from metaopt.tasks import ParamInfo
from metaopt.zoo.muon import newton_schulz

HIDDEN = ParamInfo("w", "hidden", 12, 20)
CONFIG = dict(hidden=8, step_mult=0.01, base_fan_in=4, adam_feature=True, adam_scale=True,
              orthogonalize=True, ortho_gain=2.0)


@pytest.mark.parametrize("shape", [(20, 12), (12, 20), (6, 2, 3, 3)])
def test_orthogonal_step_keeps_the_singular_vectors_with_muons_scale(shape):
    d = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = orthogonal_step(d.float(), 0.5).double()
    mat, o = d.reshape(shape[0], -1), out.reshape(shape[0], -1)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    core = u.T @ o @ vh.T  # diagonal when o = U f(S) V^T
    scale = 0.5 * max(1.0, mat.shape[0] / mat.shape[1]) ** 0.5
    off = core - torch.diag(torch.diagonal(core))
    assert off.abs().max() < 1e-5 * scale
    f = torch.diagonal(core) / scale
    assert f.min() > 0.6 and f.max() < 1.25  # NS5's band around 1 (Jordan et al. 2024)
    assert out.shape == d.shape


def test_only_hidden_matrices_are_orthogonalized():
    assert is_orthogonalized(HIDDEN, torch.Size([20, 12]))
    assert is_orthogonalized(HIDDEN, torch.Size([6, 2, 3, 3]))
    for info, shape in [(None, (20, 12)), (ParamInfo("b", "bias", 1, 20), (20,)),
                        (ParamInfo("i", "input", 3, 20), (20, 3)),
                        (ParamInfo("o", "output", 20, 4), (4, 20)),
                        (ParamInfo("w", "hidden", 12, 1), (1, 12))]:
        assert not is_orthogonalized(info, torch.Size(shape))


def test_warm_start_is_ns5_of_adams_direction_on_hidden_matrices():
    lopt = MLPLOpt(**CONFIG)
    theta = adam_like_theta(lopt, 0.03, noise=0.0)
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(20, 12, generator=gen)
    ref = p.clone().requires_grad_()
    adam = torch.optim.Adam([ref], lr=1.0)  # its step from p is Adam's direction u
    state = lopt.init(p, HIDDEN)
    for t in range(1, 4):
        g = torch.randn(20, 12, generator=gen)
        before = ref.detach().clone()
        ref.grad = g.clone()
        adam.step()
        u = before - ref.detach()
        delta, state = lopt.update(theta, g, p, state, t, HIDDEN)
        expect = 0.01 * 2.0 * max(1.0, 20 / 12) ** 0.5 * newton_schulz(u, 5, dtype=torch.float32)
        torch.testing.assert_close(delta, expect, rtol=2e-3, atol=1e-6)


def test_other_tensors_take_the_per_coordinate_step():
    ortho, plain = MLPLOpt(**CONFIG), MLPLOpt(**{**CONFIG, "orthogonalize": False})
    theta = ortho.init_theta(torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    for info, shape in [(ParamInfo("i", "input", 3, 20), (20, 3)),
                        (ParamInfo("b", "bias", 1, 20), (20,)), (None, (5, 6))]:
        p, g = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        a, _ = ortho.update(theta, g, p, ortho.init(p), 1, info)
        b, _ = plain.update(theta, g, p, plain.init(p), 1, info)
        assert torch.equal(a, b)
    p, g = torch.randn(20, 12, generator=gen), torch.randn(20, 12, generator=gen)
    a, _ = ortho.update(theta, g, p, ortho.init(p), 1, HIDDEN)
    b, _ = plain.update(theta, g, p, plain.init(p), 1, HIDDEN)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_module_training_fused_equals_loop_and_file_round_trips(impl, tmp_path):
    lopt = MLPLOpt(**CONFIG)
    theta = adam_like_theta(lopt, 0.03, torch.Generator().manual_seed(4))

    def train(make_opt):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(),
                                    torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                    torch.nn.Linear(16, 2))
        opt = make_opt(model)
        x = torch.randn(32, 5, generator=torch.Generator().manual_seed(5))
        for _ in range(4):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        return opt, [q.detach().clone() for q in model.parameters()]

    opt, loop = train(lambda m: learned.LearnedOptimizer.from_module(m, lopt, theta, impl="loop"))
    path = tmp_path / "ortho.safetensors"
    opt.save(path)
    _, other = train(lambda m: learned.load(path, m, impl=impl))
    for a, b in zip(loop, other):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=2e-6)
