"""Linear solvers as parts passed in (callables; names as shortcuts) and non-convergence that is
never silent (warning with the residual, error under on_fail="raise")."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import bilevel
from bilevel import NotConvergedError, NotConvergedWarning, problems
from bilevel.inner import newton_solve
from bilevel.linsolve import SOLVERS, SolveInfo, conjugate_gradient

DT = torch.float64


@pytest.fixture(scope="module")
def ridge():
    return problems.get("ridge", n_features=20, n_train=40, n_val=50, seed=3)


def _losses(pb):
    return (lambda p, h: pb.inner_loss(p, h)), (lambda p, h: pb.outer_loss(p, h))


def _h(seed, n=20):
    return 1.5 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=DT)


def test_a_callable_solver_returning_x_matches_the_closed_form(ridge):
    """A user's solver (a materialised Cholesky solve) passed in as jaxopt's solve= is."""
    def cholesky(matvec, b):
        hess = torch.func.vmap(matvec)(torch.eye(b.numel(), dtype=b.dtype))
        return torch.cholesky_solve(b[:, None], torch.linalg.cholesky(hess))[:, 0]

    h = _h(0)
    inner, outer = _losses(ridge)
    hg, info = bilevel.hypergrad(inner, outer, ridge.solve(h), h, cholesky, return_info=True)
    ref = ridge.closed_form_hypergrad(h)
    assert float(torch.linalg.vector_norm(hg - ref) / torch.linalg.vector_norm(ref)) <= 1e-10
    assert info.method == "cholesky" and bool(info.converged)


def test_names_are_shortcuts_for_the_registered_callables(ridge):
    h = _h(1)
    inner, outer = _losses(ridge)
    params = ridge.solve(h)
    for name, solve in SOLVERS.items():
        kw = {"alpha": 0.05, "iters": 5, "on_fail": "ignore"} if name == "neumann" else {}
        assert torch.equal(bilevel.hypergrad(inner, outer, params, h, name, **kw),
                           bilevel.hypergrad(inner, outer, params, h, solve, **kw))


def test_callable_options_are_validated_against_its_signature(ridge):
    h = _h(2)
    inner, outer = _losses(ridge)
    with pytest.raises(ValueError, match="unknown option.*'restart'.*allowed: \\['early_stop', 'maxiter', 'tol'\\]"):
        bilevel.hypergrad(inner, outer, ridge.solve(h), h, conjugate_gradient, restart=3)
    with pytest.raises(ValueError, match="solver name .* or a callable"):
        bilevel.hypergrad(inner, outer, ridge.solve(h), h, 3)
    with pytest.raises(ValueError, match="returned \\(3,\\); it must return a tensor shaped like b \\(20,\\)"):
        bilevel.hypergrad(inner, outer, ridge.solve(h), h, lambda mv, b: b[:3])
    with pytest.raises(ValueError, match="on_fail='loud'"):
        bilevel.hypergrad(inner, outer, ridge.solve(h), h, on_fail="loud")


def test_stopping_short_warns_with_the_residual_and_raises_on_request(ridge):
    h = 3 * _h(9)
    inner, outer = _losses(ridge)
    params = ridge.solve(h)
    with pytest.warns(NotConvergedWarning, match=r"cg solve stopped .*relative residual \d\.\d+e[+-]\d+ > tol=1e-10 "
                                                 r"after 2 iterations"):
        bilevel.hypergrad(inner, outer, params, h, "cg", maxiter=2)
    with pytest.raises(NotConvergedError, match="relative residual"):
        bilevel.hypergrad(inner, outer, params, h, "cg", maxiter=2, on_fail="raise")
    with pytest.warns(NotConvergedWarning, match="neumann solve"):
        bilevel.hypergrad(inner, outer, params, h, "neumann", alpha=1e-3, iters=2)
    with pytest.warns(NotConvergedWarning, match="wrong solve"):  # a bare x judged by its true residual
        def wrong(matvec, b):
            return 0.5 * b
        bilevel.hypergrad(inner, outer, params, h, wrong)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bilevel.hypergrad(inner, outer, params, h, "cg")  # converges: silent
        bilevel.hypergrad(inner, outer, params, h, "cg", maxiter=2, on_fail="ignore")


def test_a_solver_may_return_its_own_info(ridge):
    h = _h(4)
    inner, outer = _losses(ridge)

    def flagged(matvec, b):
        x, _ = conjugate_gradient(matvec, b, tol=1e-12)
        zero = torch.zeros((), dtype=torch.long)
        return x, SolveInfo(zero, 7, torch.zeros((), dtype=DT), torch.tensor(False))

    with pytest.warns(NotConvergedWarning):
        _, info = bilevel.hypergrad(inner, outer, ridge.solve(h), h, flagged, return_info=True)
    assert info.products == 8 and not bool(info.converged)


def test_vmapped_members_do_not_warn_inside_the_transform(ridge):
    """Inside vmap no host check is possible; info.converged carries it per member."""
    inner, outer = _losses(ridge)
    hs = torch.stack([_h(5), _h(6)])
    params = torch.stack([ridge.solve(h)[0] for h in hs])

    def one(p, h):
        _, info = bilevel.hypergrad(inner, outer, (p,), h, "cg", maxiter=2, return_info=True)
        return info.converged

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flags = torch.func.vmap(one)(params, hs)
    assert not flags.any()


@pytest.mark.slow
def test_cg_default_maxiter_converges_on_logistic_regression_at_d_1000():
    """Issue 18: at d = 1000 the old fixed maxiter=100 stopped short (9e-8 relative error)."""
    g = torch.Generator().manual_seed(0)
    n, d = 600, 1000
    x, xv = torch.randn(n, d, generator=g, dtype=DT), torch.randn(n, d, generator=g, dtype=DT)
    truth = torch.randn(d, generator=g, dtype=DT) / d**0.5
    y, yv = (x @ truth > 0).to(DT), (xv @ truth > 0).to(DT)
    lam = torch.full((d,), -7.0, dtype=DT) + 2.0 * torch.randn(d, generator=g, dtype=DT)

    def inner(p, h):
        return F.binary_cross_entropy_with_logits(x @ p[0], y) + 0.5 * (h.exp() * p[0] ** 2).sum()

    def outer(p, h):
        return F.binary_cross_entropy_with_logits(xv @ p[0], yv)

    (w,) = newton_solve(lambda p: inner(p, lam), (torch.zeros(d, dtype=DT),), tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NotConvergedWarning at the default maxiter
        hg, info = bilevel.hypergrad(inner, outer, (w,), lam, "cg", return_info=True)
    assert bool(info.converged) and int(info.iterations) > 100  # the old default would stop short
    exact = bilevel.hypergrad(inner, outer, (w,), lam, "direct")
    assert float(torch.linalg.vector_norm(hg - exact) / torch.linalg.vector_norm(exact)) <= 1e-8
