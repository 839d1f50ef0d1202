"""Bad input to the bilevel API is a one-line ValueError naming what is wrong."""
import pytest
import torch

import bilevel
from bilevel import F2SASchedule, problems

DT = torch.float64


@pytest.fixture(scope="module")
def ridge():
    return problems.get("ridge", n_features=6, n_train=20, n_val=20, seed=0)


def _call(pb, params, h, method="cg", **kw):
    return bilevel.hypergrad(lambda p, x: pb.inner_loss(p, x), lambda p, x: pb.outer_loss(p, x), params, h,
                             method, **kw)


def _one_line(exc):
    assert "\n" not in str(exc.value)


def test_unknown_method_and_option(ridge):
    h = torch.zeros(6, dtype=DT)
    with pytest.raises(ValueError, match="unknown method 'lu'.*cg, neumann, direct") as e:
        _call(ridge, ridge.solve(h), h, "lu")
    _one_line(e)
    with pytest.raises(ValueError, match="unknown option.*'iters'.*allowed"):
        _call(ridge, ridge.solve(h), h, "cg", iters=3)
    with pytest.raises(ValueError, match="needs alpha"):
        _call(ridge, ridge.solve(h), h, "neumann")
    with pytest.raises(ValueError, match="maxiter"):
        _call(ridge, ridge.solve(h), h, "cg", maxiter=0)


def test_hparams_of_the_wrong_shape(ridge):
    with pytest.raises(ValueError, match="inner_loss\\(params, hparams\\) failed") as e:
        _call(ridge, ridge.solve(torch.zeros(6, dtype=DT)), torch.zeros(4, dtype=DT))
    _one_line(e)


def test_non_scalar_loss_and_bad_leaves(ridge):
    h = torch.zeros(6, dtype=DT)
    params = ridge.solve(h)
    with pytest.raises(ValueError, match="inner_loss must return a scalar"):
        bilevel.hypergrad(lambda p, x: p[0] * x, lambda p, x: ridge.outer_loss(p, x), params, h)
    with pytest.raises(ValueError, match="leaf 0 is float"):
        _call(ridge, params, 1.0)
    with pytest.raises(ValueError, match="floating dtype"):
        _call(ridge, params, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="params is empty"):
        _call(ridge, (), h)


def test_non_stationary_params_are_refused_when_checked(ridge):
    h = torch.zeros(6, dtype=DT)
    (theta,) = ridge.solve(h)
    _call(ridge, (theta,), h, check_stationary=1e-10)  # exact solution passes
    with pytest.raises(ValueError, match="not a stationary point.*check_stationary=1e-06") as e:
        _call(ridge, (theta + 0.01,), h, check_stationary=1e-6)
    _one_line(e)


def test_bad_problem_schedule_and_unroll_arguments(ridge):
    with pytest.raises(ValueError, match="unknown problem 'mnist'"):
        problems.get("mnist")
    with pytest.raises(ValueError, match="unknown option.*'width'"):
        problems.get("ridge", width=3)
    with pytest.raises(ValueError, match="lam0"):
        F2SASchedule(lam0=0.0)
    with pytest.raises(ValueError, match="exponents"):
        F2SASchedule(a=0.2, c=0.5)
    h = torch.zeros(6, dtype=DT)
    with pytest.raises(ValueError, match="batches for 3 steps"):
        bilevel.unrolled_hypergrad(lambda p, x: ridge.inner_loss(p, x), lambda p, x: ridge.outer_loss(p, x),
                                   ridge.init_params(), h, "sgd", 3, batches=[None])
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        bilevel.unrolled_hypergrad(lambda p, x: ridge.inner_loss(p, x), lambda p, x: ridge.outer_loss(p, x),
                                   ridge.init_params(), h, "adamx", 3)


def test_one_loss_convention_with_a_one_line_arity_error(ridge):
    """loss(params, hparams) without batches, loss(params, hparams, batch) with them."""
    h = torch.zeros(6, dtype=DT)
    two = lambda p, x: ridge.inner_loss(p, x)  # noqa: E731
    three = lambda p, x, b: ridge.inner_loss(p, x, b)  # noqa: E731
    outer = lambda p, x: ridge.outer_loss(p, x)  # noqa: E731
    params = ridge.init_params()
    # the README-style two-argument loss works in all three methods
    for_two = [lambda: bilevel.hypergrad(two, outer, ridge.solve(h), h),
               lambda: bilevel.unrolled_hypergrad(two, outer, params, h, "sgd", 2),
               lambda: bilevel.f2sa(two, outer, params, h, outer_steps=1)]
    hg, unrolled, f2sa = (run() for run in for_two)
    assert torch.isfinite(hg).all() and torch.isfinite(unrolled).all() and torch.isfinite(f2sa.hparams).all()
    batches = [torch.arange(4)] * 2
    with pytest.raises(ValueError, match=r"inner_loss must be callable as inner_loss\(params, hparams, batch\) "
                                         "because batches are given") as e:
        bilevel.unrolled_hypergrad(two, outer, params, h, "sgd", 2, batches=batches)
    _one_line(e)
    with pytest.raises(ValueError, match=r"inner_loss must be callable as inner_loss\(params, hparams\) because no"):
        bilevel.hypergrad(three, outer, ridge.solve(h), h)
    with pytest.raises(ValueError, match=r"outer_loss\(params, hparams, batch\)"):
        bilevel.f2sa(three, outer, params, h, outer_steps=1, sample_inner=lambda: torch.arange(4),
                     sample_outer=lambda: torch.arange(4))
    # a default batch=None serves both
    bilevel.unrolled_hypergrad(ridge.inner_loss, outer, params, h, "sgd", 2, batches=batches)
    bilevel.unrolled_hypergrad(ridge.inner_loss, outer, params, h, "sgd", 2)
