"""adabelief against the authors' package adabelief-pytorch 0.2.1 (float64, 25 steps,
1-D/2-D/4-D tensors, two param groups, weight decay on).

The package follows the paper's Algorithm 2 in keeping eps inside the second-moment state
(s_t = b2 s_{t-1} + (1 - b2)(g - m)^2 + eps), so the states agree exactly. Its rectified
update (the default, from RAdam) drops the bias correction of s_t from the denominator and
moves it into the rectification factor; ours does the same (the code is the reference)."""
import pytest
from adabelief_pytorch import AdaBelief

from metaopt.zoo.equivalence import compare_with_reference

GROUPS = [{"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.003, "betas": (0.8, 0.95), "eps": 1e-8}]


@pytest.mark.parametrize("rectify", [True, False])
@pytest.mark.parametrize("decouple", [True, False])
def test_adabelief_matches_package(rectify, decouple):
    groups = [dict(g, rectify=rectify, weight_decouple=decouple) for g in GROUPS]
    ref = lambda g: AdaBelief(g, rectify=rectify, weight_decouple=decouple,
                              print_change_log=False)
    # betas (0.8, 0.95) reach rho_t >= 5 at step 6, so both rectify branches are exercised
    compare_with_reference("adabelief", ref, groups, ref_groups=GROUPS,
                           state_map={"exp_avg": "exp_avg", "exp_avg_var": "exp_avg_var"})


def test_adabelief_without_sgd_fallback_skips_early_steps():
    groups = [{"lr": 0.01, "degenerated_to_sgd": False}]
    ref = lambda g: AdaBelief(g, degenerated_to_sgd=False, print_change_log=False)
    compare_with_reference("adabelief", ref, groups,
                           ref_groups=[{"lr": 0.01}], state_map={"exp_avg_var": "exp_avg_var"})


def test_adabelief_small_beta2_never_rectifies():
    """With b2 = 0.6, rho_inf = 4 < 5: every step takes the SGD branch (and the rectification
    factor, whose formula divides by rho_inf - 4, is never evaluated)."""
    groups = [{"lr": 0.01, "betas": (0.9, 0.6)}]
    compare_with_reference("adabelief", lambda g: AdaBelief(g, print_change_log=False), groups,
                           steps=20, state_map={"exp_avg_var": "exp_avg_var"})
