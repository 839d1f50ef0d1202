"""SOAP (Vyas et al. 2024) against pytorch_optimizer.SOAP in float64: 25 steps on a 1-D, a 2-D
and a 4-D parameter in two param groups (the second with its own lr and weight decay),
parameters, moments, statistics and eigenbases to 1e-6 relative."""
import pytest
import pytorch_optimizer as po
from zoo_support import (assert_bf16_tracks_float32, assert_close_rel,
                         assert_converges_on_quadratic, run_against_reference)


@pytest.mark.parametrize("precondition_1d", [False, True])
def test_soap_matches_pytorch_optimizer_soap(precondition_1d):
    """pytorch_optimizer.SOAP is a line-by-line port of nikhilvyas/SOAP (first step only
    collects statistics, float32 QR refresh, decoupled decay after the step). Frequency 3 so
    that 25 steps include 8 eigenbasis refreshes; max dim 5 leaves the 6-wide dimension
    unrotated."""
    hp = dict(lr=0.01, betas=(0.9, 0.95), weight_decay=0.05, precondition_frequency=3,
              precondition_1d=precondition_1d)
    opt, ref_opt, ours, ref = run_against_reference(
        dict(hp, max_precond_dim=5), po.SOAP, dict(hp, max_precondition_dim=5), "soap",
        ours_group2={"lr": 0.02, "weight_decay": 0.1}, ref_group2={"lr": 0.02, "weight_decay": 0.1})
    for a, b in zip(ours, ref):
        assert_close_rel(opt.state[a]["exp_avg"], ref_opt.state[b]["exp_avg"])
        assert_close_rel(opt.state[a]["exp_avg_sq"], ref_opt.state[b]["exp_avg_sq"])
        for i, gg in enumerate(ref_opt.state[b]["GG"]):
            if len(gg) == 0:
                assert f"gg_{i}" not in opt.state[a]
                continue
            assert_close_rel(opt.state[a][f"gg_{i}"], gg)
            assert_close_rel(opt.state[a][f"q_{i}"], ref_opt.state[b]["Q"][i])


def test_soap_converges_on_quadratic():
    assert_converges_on_quadratic("soap", dict(lr=0.05, weight_decay=0.0), 300)


def test_soap_bf16_parameters_stay_bf16_and_make_float32_progress():
    assert_bf16_tracks_float32("soap", dict(lr=1e-2))
