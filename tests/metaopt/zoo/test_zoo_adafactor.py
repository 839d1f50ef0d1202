"""adafactor against torch.optim.Adafactor (float64, 25 steps, 1-D/2-D/4-D tensors, two
param groups, weight decay on): parameters and the factored row/column state."""
import pytest
import torch

from metaopt.zoo.equivalence import compare_with_reference


@pytest.mark.parametrize("shapes", [((7,), (3,)), ((5, 6), (2, 3, 4, 5))])
def test_adafactor_matches_torch(shapes):
    groups = [{"lr": 0.05, "weight_decay": 0.1}, {"lr": 0.01, "beta2_decay": -0.5, "d": 0.5,
                                                  "eps": (1e-20, 1e-2)}]
    keys = ("variance",) if len(shapes[0]) == 1 else ("row_var", "col_var")
    compare_with_reference("adafactor", lambda g: torch.optim.Adafactor(g, foreach=False),
                           groups, shapes=shapes, state_map={k: k for k in keys})
