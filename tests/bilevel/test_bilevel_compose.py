"""hypergrad composes with torch.func (vmap, jacrev), refuses inference_mode, and meets its cost
bound (counted in FLOPs, one gradient evaluation as the unit)."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import bilevel
from bilevel import problems

DT = torch.float64


@pytest.fixture(scope="module")
def ridge():
    return problems.get("ridge", n_features=12, n_train=40, n_val=40, seed=4)


def _hg(pb, method="cg", **kw):
    def fn(h):
        return bilevel.hypergrad(lambda p, x: pb.inner_loss(p, x), lambda p, x: pb.outer_loss(p, x),
                                 pb.solve(h), h, method, **kw)
    return fn


def test_vmap_over_hparams_matches_closed_form(ridge):
    hs = torch.randn(5, 12, generator=torch.Generator().manual_seed(0), dtype=DT)
    hs[0] *= 3.0  # members converge after different numbers of CG iterations
    batched = torch.func.vmap(_hg(ridge, tol=1e-13, maxiter=40))(hs)
    for h, hg in zip(hs, batched):
        ref = ridge.closed_form_hypergrad(h)
        assert torch.linalg.vector_norm(hg - ref) <= 1e-8 * torch.linalg.vector_norm(ref)


@pytest.mark.parametrize("method", ["cg", "direct"])
def test_jacrev_through_hypergrad_is_the_hessian_of_F(ridge, method):
    h = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=DT)
    kw = {"tol": 1e-14, "maxiter": 40} if method == "cg" else {}
    jac = torch.func.jacrev(_hg(ridge, method, **kw))(h)
    ref = torch.func.jacrev(ridge.closed_form_hypergrad)(h)
    assert torch.linalg.matrix_norm(jac - ref) <= 1e-7 * torch.linalg.matrix_norm(ref)
    assert torch.linalg.matrix_norm(jac - jac.T) <= 1e-7 * torch.linalg.matrix_norm(ref)


def test_inference_mode_is_an_error_not_zeros(ridge):
    h = torch.zeros(12, dtype=DT)
    params = ridge.solve(h)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        _hg(ridge)(h)
    with torch.inference_mode():
        frozen = torch.zeros(12, dtype=DT)
    with pytest.raises(RuntimeError, match="inference"):
        bilevel.hypergrad(lambda p, x: ridge.inner_loss(p, x), lambda p, x: ridge.outer_loss(p, x), params,
                          frozen, "cg")


def test_no_grad_context_still_gives_the_hypergradient(ridge):
    h = torch.randn(12, generator=torch.Generator().manual_seed(2), dtype=DT)
    with torch.no_grad():
        hg = _hg(ridge, tol=1e-13)(h)
    ref = ridge.closed_form_hypergrad(h)
    assert torch.linalg.vector_norm(hg - ref) <= 1e-8 * torch.linalg.vector_norm(ref)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_cg_cost_is_at_most_2k_plus_3_gradients(k):
    pb = problems.get("logreg", n_train=100, n_val=100, seed=0)
    h = torch.full((64,), -1.0, dtype=DT)
    # FLOPs do not depend on where the products are taken: any params will do
    params = (0.1 * torch.randn(65, 10, generator=torch.Generator().manual_seed(0), dtype=DT),)
    inner = lambda p, x: pb.inner_loss(p, x)  # noqa: E731
    outer = lambda p, x: pb.outer_loss(p, x)  # noqa: E731
    with FlopCounterMode(display=False) as one:
        torch.func.grad(inner)(params, h)
    with FlopCounterMode(display=False) as total:
        _, info = bilevel.hypergrad(inner, outer, params, h, "cg", maxiter=k, early_stop=False, return_info=True)
    assert info.products == k + 1
    assert one.get_total_flops() > 0
    assert total.get_total_flops() <= (2 * k + 3) * one.get_total_flops()
