"""PSGD-Kron (Li 2018; kron_torch) against pytorch_optimizer.Kron in float64: 25 steps on a
1-D, a 2-D and a 4-D parameter in two param groups (the second with its own lr and weight
decay), parameters, momentum and the Kronecker-product preconditioner to 1e-6 relative."""
import pytest
import torch
import pytorch_optimizer as po
from zoo_support import (assert_bf16_tracks_float32, assert_close_rel,
                         assert_converges_on_quadratic, run_against_reference)


def _solve_triangular_right_same_dtype(x, a):
    """pytorch_optimizer's ``solve_triangular_right`` casts to float32 (for bf16 support); the
    same solve kept in the input dtype, so the float64 comparison is not limited by float32."""
    flat = torch.linalg.solve_triangular(a, x.reshape(-1, x.size(-1)), upper=True, left=False)
    return flat.reshape_as(x)


def _kron(factors):
    """The full preconditioner factor ``Q_1 (x) ... (x) Q_k`` (diagonal factors as matrices);
    single factors differ by balancing scalars, their product must not."""
    out = torch.ones(1, 1, dtype=torch.float64)
    for q in factors:
        out = torch.kron(out, torch.diag(q) if q.dim() == 1 else q)
    return out


@pytest.mark.parametrize("prob,decouple,mode", [(1.0, True, None), (0.5, False, None),
                                               (1.0, True, "one_diag")])
def test_psgd_matches_pytorch_optimizer_kron(monkeypatch, prob, decouple, mode):
    """pytorch_optimizer.Kron (kron_torch's PSGD-Kron) with float64 preconditioners, its random
    factor balancing off (balancing leaves Q = Q_1 (x) ... (x) Q_k unchanged; ours balances at
    every preconditioner update) and the same probe draws (same seed, same order)."""
    import pytorch_optimizer.optimizer.psgd as po_psgd

    monkeypatch.setattr(po_psgd, "solve_triangular_right", _solve_triangular_right_same_dtype)
    hp = dict(lr=0.05, momentum=0.9, weight_decay=0.02, weight_decouple=decouple,
              precondition_lr=0.2, memory_save_mode=mode)
    ref_hp = dict(hp, pre_conditioner_update_probability=prob, precondition_dtype=None,
                  balance_prob=0.0)
    hp["precondition_lr"] = 0.1  # pytorch_optimizer fixes precondition_lr at 0.1 (a default)
    opt, ref_opt, ours, ref = run_against_reference(
        dict(hp, update_probability=prob), po.Kron, ref_hp, "psgd",
        ours_group2={"lr": 0.02, "weight_decay": 0.05},
        ref_group2={"lr": 0.02, "weight_decay": 0.05})
    for a, b in zip(ours, ref):
        assert_close_rel(opt.state[a]["momentum_buffer"], ref_opt.state[b]["momentum_buffer"])
        ref_q = ref_opt.state[b]["Q"]
        assert_close_rel(_kron([opt.state[a][f"q_{i}"] for i in range(len(ref_q))]), _kron(ref_q))
    # the 2-D weight has triangular factors (its wider one diagonal in one_diag mode)
    assert [q.dim() for q in opt.state[ours[1]].values() if q.dim() and q.shape[0] > 1][-2:] \
        == ([2, 1] if mode == "one_diag" else [2, 2])


def test_psgd_converges_on_quadratic():
    assert_converges_on_quadratic("psgd", dict(lr=0.05, weight_decay=0.0), 300)


def test_psgd_bf16_parameters_stay_bf16_and_make_float32_progress():
    assert_bf16_tracks_float32("psgd", dict(lr=1e-2, update_probability=1.0))
