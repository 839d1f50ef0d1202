"""Differentiating through steps where a gradient coordinate is exactly zero stays finite and
equals central finite differences in float64, for every member the registry does not opt out
(constant input pixels and dead units make this the common case on real tasks)."""
import pytest
import torch

from metaopt import unroll, zoo
from metaopt.zoo._sqrt import sqrt0



def _needs_extras(name: str) -> bool:
    """Members that need the loss or Hessian-vector products (``unroll`` supplies neither)."""
    rule = zoo.rule(name)
    return bool(rule.caps.needs(rule.hp, 1))


def test_sqrt0_value_and_derivative():
    x = torch.tensor([0.0, 1e-300, 0.25, 4.0], dtype=torch.float64, requires_grad=True)
    y = sqrt0(x)
    assert torch.equal(y.detach(), x.detach().sqrt())
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g[0] == 0 and torch.isfinite(g).all()
    torch.testing.assert_close(g[2:], 0.5 / x.detach()[2:].sqrt())


def _final_sum(rule, hp, x0) -> torch.Tensor:
    """Sum of the parameters after 4 unrolled steps on a loss whose second column never
    receives a gradient (members with random state draw the same numbers every call)."""
    def loss(ps, batch):
        return ((ps[0][:, 0] - 2.0) ** 2).sum()

    torch.manual_seed(0)
    ps, _, _ = unroll(rule, loss, [x0], [None] * 4, hp=hp)
    return ps[0].sum()


def _differentiable_without_extras() -> list:
    """Members whose registry entry does not opt out of differentiation (muon: bfloat16) and
    that need no extras."""
    return [n for n in zoo.names()
            if "differentiable" not in zoo.entry(n).opt_out and not _needs_extras(n)]


@pytest.mark.parametrize("name", _differentiable_without_extras())
def test_unrolled_gradient_with_a_dead_coordinate_matches_finite_differences(name):
    """d/d lr and d/d x0 (a dead and a live coordinate) through 4 steps equal central finite
    differences in float64, so the zero-gradient guard (sqrt0) is finite and right."""
    sample = dict(zoo.entry(name).sample)
    rule = zoo.rule(name, **sample)
    x0 = torch.tensor([[1.0, 0.5], [0.3, -1.0]], dtype=torch.float64, requires_grad=True)
    lr0 = float(rule.hp["lr"])
    lr = torch.tensor(lr0, dtype=torch.float64, requires_grad=True)
    gx, glr = torch.autograd.grad(_final_sum(rule, {"lr": lr}, x0), (x0, lr))
    assert torch.isfinite(gx).all() and torch.isfinite(glr)
    x = x0.detach()
    with torch.no_grad():
        h = 1e-6 * lr0
        fd_lr = (_final_sum(rule, {"lr": lr0 + h}, x) - _final_sum(rule, {"lr": lr0 - h}, x)) / (2 * h)
        torch.testing.assert_close(glr, fd_lr, rtol=1e-5, atol=1e-9)
        for idx in ((0, 1), (1, 1), (0, 0)):  # dead, dead, live
            e = torch.zeros_like(x)
            e[idx] = 1e-6
            fd = (_final_sum(rule, None, x + e) - _final_sum(rule, None, x - e)) / 2e-6
            torch.testing.assert_close(gx[idx], fd, rtol=1e-5, atol=1e-8)
