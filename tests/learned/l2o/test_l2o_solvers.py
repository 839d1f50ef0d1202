"""ISTA / FISTA against scikit-learn's solvers, optimality conditions and the known rates;
the relative-error metric."""
import numpy as np
import pytest
import torch

from learned.l2o import fista, ista, optimal_value, relative_error
from metaopt import tasks

F64 = torch.float64


def lasso(**kw):
    return tasks.get("lasso", **{"m": 40, "n": 80, "sparsity": 8, "instances": 2, "lam": 0.05,
                                 "noise": 0.01, "dtype": F64, "seed": 1, **kw})


@pytest.fixture(scope="module")
def solved():
    t = lasso()
    return t, fista(t, 4000)[0]


def test_l2o_fista_matches_sklearn_lasso(solved):
    from sklearn.linear_model import Lasso as SkLasso

    t, x = solved
    m = t.A.shape[1]
    for i in range(t.instances):
        # sklearn minimises 1/(2m) ||b - A w||^2 + alpha ||w||_1: alpha = lam / m
        sk = SkLasso(alpha=t.lam / m, fit_intercept=False, tol=1e-14, max_iter=200000)
        sk.fit(t.A[i].numpy(), t.b[i].numpy())
        np.testing.assert_allclose(x[i].numpy(), sk.coef_, atol=1e-7)


def test_l2o_fista_meets_lasso_optimality_conditions(solved):
    t, x = solved
    g = t.smooth_grad(x)
    nz = x != 0
    # 0 in grad f(x) + lam d||x||_1: equality on the support, |g_i| <= lam off it
    torch.testing.assert_close(g[nz], -t.lam * torch.sign(x[nz]), atol=1e-9, rtol=0)
    assert (g[~nz].abs() <= t.lam + 1e-9).all()


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_l2o_fista_matches_sklearn_l1_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    t = tasks.get("sparse_logreg", m=200, n=15, sparsity=5, rho=0.02, instances=2, dtype=F64)
    x, objs = fista(t, 5000)
    m = t.A.shape[1]
    for i in range(t.instances):
        # sklearn: ||w||_1 + C sum_i logloss  ==  m C (mean logloss + ||w||_1 / (m C))
        sk = LogisticRegression(penalty="l1", C=1.0 / (m * t.lam), fit_intercept=False,
                                solver="liblinear", tol=1e-12, max_iter=100000)
        sk.fit(t.A[i].numpy(), t.b[i].numpy())
        w = torch.as_tensor(sk.coef_[0], dtype=F64)
        f_sk = t.objective(torch.stack([w] * t.instances))[i]
        assert objs[-1, i] <= f_sk + 1e-9
        np.testing.assert_allclose(x[i].numpy(), sk.coef_[0], atol=1e-4)


def test_l2o_ista_fista_rates():
    """Beck & Teboulle (2009), Thm 3.1 (ISTA, F decreasing, F_k - F* <= L ||x0 - x*||^2 / 2k)
    and Thm 4.4 (FISTA, F_k - F* <= 2 L ||x0 - x*||^2 / (k + 1)^2), with L/0.9999 as the
    step's Lipschitz bound."""
    t = lasso(m=30, n=60, sparsity=6, instances=3)
    x_star, ref = fista(t, 8000)
    f_star = ref.min(0).values
    lip = t.lipschitz[:, 0] / 0.9999
    r2 = (x_star ** 2).sum(-1)                       # x_0 = 0
    k = torch.arange(1, 301, dtype=F64)[:, None]
    _, oi = ista(t, 300)
    _, of = fista(t, 300)
    assert (oi[1:] <= oi[:-1] + 1e-12).all()
    assert (oi[1:] - f_star <= lip * r2 / (2 * k) + 1e-10).all()
    assert (of[1:] - f_star <= 2 * lip * r2 / (k + 1) ** 2 + 1e-10).all()
    # and FISTA is faster than ISTA on this problem
    assert relative_error(of[300], f_star) < relative_error(oi[300], f_star)


def test_l2o_optimal_value_in_float64():
    t = tasks.get("lasso", m=30, n=60, sparsity=6, instances=2)      # float32 problem
    fs = optimal_value(t, 3000)
    assert fs.dtype == F64
    x, _ = fista(t.cast(F64), 3000)
    torch.testing.assert_close(fs, t.cast(F64).objective(x), rtol=1e-12, atol=0)


def test_l2o_relative_error():
    objs = torch.tensor([[2.0, 9.0], [1.5, 4.5]])
    fstar = torch.tensor([1.0, 3.0], dtype=F64)
    # iteration 0: (1 + 2) / 2; iteration 1: (0.5 + 0.5) / 2
    torch.testing.assert_close(relative_error(objs, fstar), torch.tensor([1.5, 0.5]))
    with pytest.raises(ValueError, match="positive"):
        relative_error(objs, torch.tensor([1.0, 0.0]))
