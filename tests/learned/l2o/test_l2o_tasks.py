"""The L2O problems: LASSO and sparse logistic regression (metaopt.tasks)."""
import pytest
import torch

from metaopt import tasks
from metaopt.tasks.lasso import MATRICES
from metaopt.tasks.sparse_logreg import FEATURES

F64 = torch.float64


def small_lasso(**kw):
    return tasks.get("lasso", **{"m": 20, "n": 40, "sparsity": 5, "instances": 3,
                                 "dtype": F64, **kw})


def small_logreg(**kw):
    return tasks.get("sparse_logreg", **{"m": 60, "n": 10, "sparsity": 4, "instances": 3,
                                         "dtype": F64, **kw})


def test_l2o_registered():
    assert {"lasso", "sparse_logreg"} <= set(tasks.names())


def test_l2o_lasso_default_distribution():
    t = tasks.get("lasso", instances=2)
    assert t.A.shape == (2, 250, 500) and t.b.shape == (2, 250) and t.lam == 0.1
    torch.testing.assert_close(t.A.norm(dim=1), torch.ones(2, 500))
    assert ((t.x_true != 0).sum(-1) == 50).all()
    torch.testing.assert_close(t.b, (t.A @ t.x_true[..., None])[..., 0], rtol=1e-5, atol=1e-5)
    assert t.init()[0].shape == (2, 500) and t.param_info[0].fan_out == 1000


@pytest.mark.parametrize("make,variants,key", [(small_lasso, MATRICES, "matrix"),
                                               (small_logreg, FEATURES, "features")])
def test_l2o_smooth_grad_matches_autograd(make, variants, key):
    for v in variants:
        t = make(**{key: v})
        x = torch.randn(t.instances, t.dim, dtype=F64, requires_grad=True)
        g, = torch.autograd.grad(t.smooth(x).sum(), x)
        torch.testing.assert_close(t.smooth_grad(x.detach()), g, rtol=1e-10, atol=1e-12)
        # the loss is the sum of the instances' objectives: its gradient is each one's own
        x2 = x.detach().clone().requires_grad_(True)
        g_all, = torch.autograd.grad(t.loss([x2], t.sample_batch()), x2)
        g0, = torch.autograd.grad(t.objective(x2)[0], x2)
        torch.testing.assert_close(g_all[0], g0[0])


def test_l2o_lipschitz_constants():
    t = small_lasso()
    eig = torch.linalg.eigvalsh(t.A.transpose(1, 2) @ t.A)[:, -1]
    torch.testing.assert_close(t.lipschitz[:, 0], eig)
    lr = small_logreg()
    eig = torch.linalg.eigvalsh(lr.A.transpose(1, 2) @ lr.A)[:, -1] / (4 * lr.A.shape[1])
    torch.testing.assert_close(lr.lipschitz[:, 0], eig)
    # grad f is L-Lipschitz: check on random pairs
    for _ in range(20):
        x, y = torch.randn(2, 3, 10, dtype=F64) * 3
        lhs = (lr.smooth_grad(x) - lr.smooth_grad(y)).norm(dim=-1)
        assert (lhs <= lr.lipschitz[:, 0] * (x - y).norm(dim=-1) + 1e-12).all()


def test_l2o_prox_is_the_l1_proximal_point():
    t = small_lasso(lam=0.3)
    v = torch.randn(3, 40, dtype=F64)
    step = 0.7
    u = t.prox(v, step)
    thr = t.lam * step
    nz = u != 0
    # optimality of argmin_u 1/2 ||u - v||^2 + thr ||u||_1
    torch.testing.assert_close((u - v + thr * torch.sign(u))[nz], torch.zeros(int(nz.sum()), dtype=F64))
    assert (v[~nz].abs() <= thr).all()


def test_l2o_real_data_variants():
    d = tasks.get("lasso", matrix="digits", n=100, instances=2)
    assert d.A.shape == (2, 64, 100) and d.x_true is None
    torch.testing.assert_close(d.b.norm(dim=-1), torch.ones(2))
    bc = tasks.get("lasso", matrix="breast_cancer", m=100, instances=2)
    assert bc.A.shape == (2, 100, 30) and set(bc.b.unique().tolist()) == {-1.0, 1.0}
    lr = tasks.get("sparse_logreg", features="digits", m=300)
    assert lr.A.shape == (1, 300, 64) and set(lr.b.unique().tolist()) == {0.0, 1.0}
    lr = tasks.get("sparse_logreg", features="breast_cancer", m=569)
    assert lr.A.shape == (1, 569, 30)


def test_l2o_seed_determinism_and_cast():
    a, b = small_lasso(seed=3), small_lasso(seed=3)
    assert torch.equal(a.A, b.A) and not torch.equal(a.A, small_lasso(seed=4).A)
    t = tasks.get("lasso", m=20, n=40, sparsity=5)
    t64 = t.cast(F64)
    assert t64.A.dtype == F64 and t.A.dtype == torch.float32 and t64.lipschitz.dtype == F64


@pytest.mark.parametrize("name,kw,match", [
    ("lasso", {"matrix": "laplace"}, "unknown matrix"),
    ("lasso", {"sparsity": 600}, "sparsity"),
    ("lasso", {"lam": -1.0}, "lam"),
    ("lasso", {"matrix": "breast_cancer", "m": 600}, "569 rows"),
    ("sparse_logreg", {"features": "mnist"}, "unknown features"),
    ("sparse_logreg", {"features": "digits", "m": 5000}, "1797 rows"),
    ("sparse_logreg", {"rho": -0.1}, "rho"),
    ("lasso", {"bogus": 1}, "unknown option"),
])
def test_l2o_bad_options_are_one_line_errors(name, kw, match):
    with pytest.raises(ValueError, match=match) as e:
        tasks.get(name, **kw)
    assert "\n" not in str(e.value)
