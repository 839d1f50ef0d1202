"""Differentiating through steps where a gradient coordinate is exactly zero stays finite
(constant input pixels and dead units make this the common case on real tasks)."""
import pytest
import torch

from metaopt import unroll, zoo
from metaopt.zoo._sqrt import sqrt0

SECOND_ORDER = {"shampoo", "soap", "psgd", "muon", "mfac"}  # matrices; costly by default


def _needs_extras(name: str) -> bool:
    """Members that need the loss or Hessian-vector products (``unroll`` supplies neither)."""
    rule = zoo.rule(name)
    return bool(rule.needs(rule.hp, 1))


def test_sqrt0_value_and_derivative():
    x = torch.tensor([0.0, 1e-300, 0.25, 4.0], dtype=torch.float64, requires_grad=True)
    y = sqrt0(x)
    assert torch.equal(y.detach(), x.detach().sqrt())
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g[0] == 0 and torch.isfinite(g).all()
    torch.testing.assert_close(g[2:], 0.5 / x.detach()[2:].sqrt())


@pytest.mark.parametrize("name", [n for n in zoo.names()
                                  if n not in SECOND_ORDER and not _needs_extras(n)])
def test_unrolled_gradient_is_finite_with_a_dead_coordinate(name):
    rule = zoo.rule(name)
    x0 = torch.tensor([[1.0, 0.5], [0.0, -1.0]], dtype=torch.float64, requires_grad=True)

    def loss(ps, batch):  # the second column never receives a gradient
        return ((ps[0][:, 0] - 2.0) ** 2).sum()

    lr = torch.tensor(zoo.defaults(name)["lr"] or 1e-3, dtype=torch.float64, requires_grad=True)
    ps, _, _ = unroll(rule, loss, [x0], [None] * 4, hp={"lr": lr})
    gx, glr = torch.autograd.grad(ps[0].sum(), (x0, lr))
    assert torch.isfinite(gx).all(), gx
    assert torch.isfinite(glr), glr
