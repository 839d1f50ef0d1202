"""adabound against the authors' package adabound 0.0.5 (float64, 25 steps, 1-D/2-D/4-D
tensors, two param groups, weight decay on, with and without amsbound). The lr is constant,
where the package's ``final_lr * lr / base_lr`` equals ``final_lr``."""
import pytest
from adabound import AdaBound

from metaopt.zoo.equivalence import compare_with_reference

# the package calls Tensor.add(Number, Tensor), deprecated by torch
pytestmark = pytest.mark.filterwarnings("ignore:This overload of add")


@pytest.mark.parametrize("amsbound", [False, True])
def test_adabound_matches_package(amsbound):
    groups = [{"lr": 0.01, "weight_decay": 0.1, "final_lr": 0.05, "gamma": 0.1,
               "amsbound": amsbound},
              {"lr": 0.003, "betas": (0.8, 0.95), "amsbound": amsbound}]
    state_map = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}
    if amsbound:
        state_map["max_exp_avg_sq"] = "max_exp_avg_sq"
    compare_with_reference("adabound", lambda g: AdaBound(g), groups, state_map=state_map)


@pytest.mark.parametrize("gamma, match", [(0.0, "gamma=0.0: must be > 0"),
                                          (1.0, r"gamma=1.0: must be in \[0, 1\)")])
def test_adabound_gamma_range(gamma, match):
    from metaopt import zoo
    with pytest.raises(ValueError, match=match):
        zoo.rule("adabound", gamma=gamma)
