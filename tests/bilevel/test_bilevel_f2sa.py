"""F2SA (Kwon et al. 2023): the penalty hypergradient's bias falls like 1/lambda on ridge; the
inner loops track y*_lam and y*; the method reduces the outer objective, with and without noise."""
import math

import pytest
import torch

import bilevel
from bilevel import F2SASchedule, problems
from bilevel.inner import newton_solve

DT = torch.float64


@pytest.fixture(scope="module")
def ridge():
    return problems.get("ridge", n_features=10, n_train=40, n_val=40, seed=6)


def _penalty_solution(pb, h, lam):
    """y*_lam = argmin_y f(y) + lam g(y, h) (a quadratic: one Newton step)."""
    return tuple(newton_solve(lambda p: pb.outer_loss(p, h) + lam * pb.inner_loss(p, h), pb.init_params(),
                              tol=1e-11 * (1 + lam)))


def test_penalty_bias_falls_like_one_over_lambda(ridge):
    h = torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=DT)
    exact = ridge.closed_form_hypergrad(h)
    lams = [10.0 ** e for e in (1, 1.5, 2, 2.5, 3, 3.5, 4)]
    errors = []
    for lam in lams:
        est = bilevel.penalty_hypergrad(ridge.inner_loss, ridge.outer_loss, _penalty_solution(ridge, h, lam),
                                        ridge.solve(h), h, lam)
        errors.append(float(torch.linalg.vector_norm(est - exact) / torch.linalg.vector_norm(exact)))
    x = torch.tensor([math.log(v) for v in lams], dtype=DT)
    y = torch.tensor([math.log(e) for e in errors], dtype=DT)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    assert slope == pytest.approx(-1.0, abs=0.05), errors
    assert errors[-1] <= 1e-3


def test_inner_loops_track_the_penalty_and_inner_solutions(ridge):
    h = torch.randn(10, generator=torch.Generator().manual_seed(1), dtype=DT)
    lip = float(torch.linalg.eigvalsh(ridge.system(h))[-1])
    lam = 50.0
    sched = F2SASchedule(gamma0=0.9 / lip, lam0=lam, beta0=1e-300, a=0.5, c=0.5, inner_steps=20)
    res = bilevel.f2sa(ridge.inner_loss, ridge.outer_loss, ridge.init_params(), h, outer_steps=10, schedule=sched)
    assert torch.equal(res.hparams, h) or torch.allclose(res.hparams, h, rtol=0, atol=1e-250)
    assert torch.linalg.vector_norm(res.z[0] - ridge.solve(h)[0]) <= 1e-9
    assert torch.linalg.vector_norm(res.y[0] - _penalty_solution(ridge, h, lam)[0]) <= 1e-6
    assert res.gradient_calls == 10 * (3 * 20 + 3)


@pytest.mark.parametrize("momentum, batch", [
    (False, None), (True, 8),
    pytest.param(True, None, marks=pytest.mark.slow), pytest.param(False, 8, marks=pytest.mark.slow)])
def test_f2sa_decreases_the_outer_objective(ridge, momentum, batch):
    g = torch.Generator().manual_seed(2)
    h0 = ridge.init_hparams()
    sample = (lambda which: (lambda: ridge.sample(which, batch, g))) if batch else (lambda which: None)
    sched = F2SASchedule(gamma0=0.3, lam0=20.0, beta0=0.1, inner_steps=10)
    res = bilevel.f2sa(ridge.inner_loss, ridge.outer_loss, ridge.init_params(), h0, outer_steps=60, schedule=sched,
                       momentum=momentum, outer_rule="adam", sample_inner=sample("train"), sample_outer=sample("val"))
    start, end = ridge.value(h0), ridge.value(res.hparams)
    assert end < start - 0.1 * abs(start), (start, end)
    calls = 60 * (3 * 10 + 3) + (59 * 3 if momentum else 0)
    assert res.gradient_calls == calls
