"""The out-of-distribution L2O problems (learned.l2o.ood): data, conditioning, interface."""
import pytest
import torch

from learned.l2o.ood import VARIANTS, kappa, lasso_ood, sparse_logreg_ood

F64 = torch.float64


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("cond")])
def test_l2o_ood_condition_numbers(variant):
    t = lasso_ood(variant, 2, m=40, n=80, dtype=F64)
    s = torch.linalg.svdvals(t.A)
    torch.testing.assert_close(s[:, 0] / s[:, -1], torch.full((2,), kappa(variant), dtype=F64),
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(t.A.norm(dim=(1, 2)) ** 2, torch.full((2,), 80.0, dtype=F64))
    lr = sparse_logreg_ood(variant, 2, m=400, n=10, dtype=F64)
    s = torch.linalg.svdvals(lr.A)
    # column scales span kappa; Gaussian columns keep the design's condition number near it
    assert (s[:, 0] / s[:, -1] > 0.3 * kappa(variant)).all()
    assert (s[:, 0] / s[:, -1] < 3 * kappa(variant)).all()


def test_l2o_ood_real_data_rows_come_from_sklearn():
    from sklearn.datasets import load_diabetes, load_wine

    for variant, load, cols in (("diabetes", load_diabetes, 10), ("wine", load_wine, 13)):
        X = torch.as_tensor(load().data, dtype=F64)
        Xs = (X - X.mean(0)) / X.std(0)
        lr = sparse_logreg_ood(variant, 2, m=100, dtype=F64)
        assert lr.A.shape == (2, 100, cols)
        # every row of the design is a standardised row of the data set
        d = torch.cdist(lr.A[0], Xs).min(-1).values
        assert d.max() < 1e-6
        assert set(lr.b.unique().tolist()) <= {0.0, 1.0}
        la = lasso_ood(variant, 1, dtype=F64)
        torch.testing.assert_close(la.A.norm(dim=1), torch.ones(1, cols, dtype=F64))


def test_l2o_ood_covtype_like_columns():
    t = sparse_logreg_ood("covtype_like", 1, m=500, dtype=F64)
    A = t.A[0]
    assert A.shape == (500, 54)
    binary = A[:, 10:]
    assert set(binary.unique().tolist()) == {0.0, 1.0}
    rate = binary.mean(0)
    assert (rate > 0.01).all() and (rate < 0.25).all()
    torch.testing.assert_close(A[:, :10].mean(0), torch.zeros(10, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_l2o_ood_interface_matches_autograd_and_lipschitz(variant):
    for t in (lasso_ood(variant, 2, m=40, n=60, dtype=F64),
              sparse_logreg_ood(variant, 2, m=120, n=12, dtype=F64)):
        x = torch.randn(2, t.dim, dtype=F64, requires_grad=True)
        g, = torch.autograd.grad(t.smooth(x).sum(), x)
        torch.testing.assert_close(t.smooth_grad(x.detach()), g)
        # L bounds the curvature: |<grad(x) - grad(y), x - y>| <= L ||x - y||^2
        y = torch.randn(2, t.dim, dtype=F64)
        d = x.detach() - y
        lhs = ((t.smooth_grad(x.detach()) - t.smooth_grad(y)) * d).sum(-1)
        assert (lhs <= t.lipschitz[:, 0] * (d * d).sum(-1) * (1 + 1e-12)).all()
        assert t.objective(t.init()[0]).shape == (2,)
        assert t.cast(torch.float32).A.dtype == torch.float32
