"""Implicit hypergradients against closed forms (ridge) and float64 central finite differences
(per-feature logistic regression on digits)."""
import math

import pytest
import torch

import bilevel
from bilevel import problems
from bilevel.inner import newton_solve
from bilevel.linsolve import neumann

DT = torch.float64


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


@pytest.fixture(scope="module")
def ridge():
    return problems.get("ridge", n_features=20, n_train=40, n_val=50, seed=3)


def _losses(pb):
    return (lambda p, h: pb.inner_loss(p, h)), (lambda p, h: pb.outer_loss(p, h))


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_direct_matches_ridge_closed_form(ridge, seed):
    h = 1.5 * randn(20, seed=seed)
    inner, outer = _losses(ridge)
    hg = bilevel.hypergrad(inner, outer, ridge.solve(h), h, "direct")
    assert _rel(hg, ridge.closed_form_hypergrad(h)) <= 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cg_matches_ridge_closed_form(ridge, seed):
    h = 1.5 * randn(20, seed=seed)
    inner, outer = _losses(ridge)
    hg, info = bilevel.hypergrad(inner, outer, ridge.solve(h), h, "cg", tol=1e-12, return_info=True)
    assert _rel(hg, ridge.closed_form_hypergrad(h)) <= 1e-8
    assert bool(info.converged) and float(info.relative_residual) <= 1e-10
    assert 1 <= int(info.iterations) <= 60


def test_closed_form_agrees_with_autograd_through_solve(ridge):
    """The test's reference itself: closed form = autograd through torch.linalg.solve."""
    h = randn(20, seed=5)
    auto = torch.func.grad(lambda x: ridge.outer_loss(ridge.solve(x), x))(h)
    assert _rel(ridge.closed_form_hypergrad(h), auto) <= 1e-12


def test_direct_dependence_of_outer_loss_is_included(ridge):
    """outer = f + 0.5 ||h||^2: the hypergradient gains exactly h (total derivative)."""
    h = randn(20, seed=6)
    inner, outer = _losses(ridge)
    with_direct = lambda p, x: outer(p, x) + 0.5 * (x**2).sum()  # noqa: E731
    hg = bilevel.hypergrad(inner, with_direct, ridge.solve(h), h, "cg", tol=1e-13)
    assert _rel(hg, ridge.closed_form_hypergrad(h) + h) <= 1e-8


def test_implicit_matches_central_fd_on_logistic_regression():
    pb = problems.get("logreg", n_train=200, n_val=200, seed=1)
    g = torch.Generator().manual_seed(0)
    h = 0.5 * torch.randn(64, generator=g, dtype=DT) - 2.0
    params = pb.solve(h, tol=1e-10)
    inner, outer = _losses(pb)
    hg, info = bilevel.hypergrad(inner, outer, params, h, "cg", tol=1e-12, maxiter=400, return_info=True,
                                 check_stationary=1e-10)
    assert pb.num_hparams >= 50 and bool(info.converged)
    eps = 1e-4
    directions = [torch.randn(64, generator=g, dtype=DT) for _ in range(2)] + [torch.eye(64, dtype=DT)[9]]
    for u in directions:
        plus = pb.outer_loss(pb.solve(h + eps * u, params, tol=1e-11), h)
        minus = pb.outer_loss(pb.solve(h - eps * u, params, tol=1e-11), h)
        fd = float(plus - minus) / (2 * eps)
        assert abs(float(hg @ u) - fd) <= 1e-6 * abs(fd), (float(hg @ u), fd)


def test_neumann_series_error_is_exactly_the_truncation_term(ridge):
    """linsolve.neumann: v_K - H^{-1} b = -(I - alpha H)^{K+1} H^{-1} b (eigendecomposition)."""
    h = randn(20, seed=7)
    hess = ridge.system(h)
    b = randn(20, seed=8)
    eig, vec = torch.linalg.eigh(hess)
    alpha = 1.0 / float(eig[-1])
    for k in (0, 5, 20, 60):
        v, _ = neumann(lambda u: hess @ u, b, alpha=alpha, iters=k)
        expected = -vec @ (((1 - alpha * eig) ** (k + 1) / eig) * (vec.T @ b))
        assert torch.linalg.vector_norm((v - torch.linalg.solve(hess, b)) - expected) <= 1e-12 * torch.linalg.vector_norm(b)


def test_neumann_hypergradient_error_decays_at_its_rate(ridge):
    h = randn(20, seed=7)
    inner, outer = _losses(ridge)
    params = ridge.solve(h)
    eig = torch.linalg.eigvalsh(ridge.system(h))
    mu, lip = float(eig[0]), float(eig[-1])
    alpha = 1.0 / lip
    rate = 1 - alpha * mu
    exact = bilevel.hypergrad(inner, outer, params, h, "direct")
    (theta,) = params
    b_norm = float(torch.linalg.vector_norm(ridge.x_val.T @ (ridge.x_val @ theta - ridge.y_val) / ridge.n_val))
    mixed_norm = float((h.exp() * theta).abs().max())  # ||d^2 g / dlam dtheta|| (diagonal)
    ks = list(range(5, 80, 5))
    errors = [float(torch.linalg.vector_norm(
        bilevel.hypergrad(inner, outer, params, h, "neumann", alpha=alpha, iters=k, on_fail="ignore") - exact))
        for k in ks]
    for k, err in zip(ks, errors):  # ||e_K|| <= ||M|| (1 - alpha mu)^{K+1} ||H^{-1}|| ||b||
        assert err <= mixed_norm * rate ** (k + 1) * b_norm / mu * (1 + 1e-9)
    slope = (math.log(errors[-1]) - math.log(errors[-5])) / (ks[-1] - ks[-5])
    assert 1.5 * math.log(rate) <= slope <= 0.98 * math.log(rate)


def test_nn_module_through_functional_call():
    """A bias-free nn.Linear trained by ridge: same closed form as the ridge problem."""
    pb = problems.get("ridge", n_features=8, n_train=30, n_val=30, seed=2)
    model = torch.nn.Linear(8, 1, bias=False).double()
    h = randn(8, seed=1)
    (theta,) = pb.solve(h)
    params = {"weight": theta.reshape(1, 8)}

    def inner(p, lam):
        pred = torch.func.functional_call(model, p, (pb.x_train,)).squeeze(1)
        return 0.5 * ((pred - pb.y_train) ** 2).mean() + 0.5 * (lam.exp() * p["weight"][0] ** 2).sum()

    def outer(p, lam):
        pred = torch.func.functional_call(model, p, (pb.x_val,)).squeeze(1)
        return 0.5 * ((pred - pb.y_val) ** 2).mean()

    hg = bilevel.hypergrad(inner, outer, params, h, "cg", tol=1e-13)
    assert _rel(hg, pb.closed_form_hypergrad(h)) <= 1e-8


def test_hparams_structure_is_preserved(ridge):
    h = randn(20, seed=8)
    inner, outer = _losses(ridge)
    tree = {"a": h[:5], "b": h[5:]}
    out = bilevel.hypergrad(lambda p, t: inner(p, torch.cat([t["a"], t["b"]])),
                            lambda p, t: outer(p, torch.cat([t["a"], t["b"]])), ridge.solve(h), tree, "direct")
    assert set(out) == {"a", "b"} and out["a"].shape == (5,)
    assert _rel(torch.cat([out["a"], out["b"]]), ridge.closed_form_hypergrad(h)) <= 1e-10


def test_cg_diagnostics_report_non_convergence(ridge):
    h = 3 * randn(20, seed=9)
    inner, outer = _losses(ridge)
    _, info = bilevel.hypergrad(inner, outer, ridge.solve(h), h, "cg", maxiter=2, return_info=True,
                                on_fail="ignore")
    assert not bool(info.converged) and int(info.iterations) == 2 and info.products == 3
    assert float(info.relative_residual) > 1e-6


def test_newton_inner_solver_reaches_tolerance():
    pb = problems.get("hyperclean", n_train=100, n_val=100, seed=0)
    h = randn(100, seed=0)
    (w,) = newton_solve(lambda p: pb.inner_loss(p, h), pb.init_params(), tol=1e-10)
    grad = torch.func.grad(lambda x: pb.inner_loss((x,), h))(w)
    assert float(torch.linalg.vector_norm(grad)) <= 1e-10
