"""lion, clion and lion(cautious=True) against lucidrains/lion-pytorch (float64, 25 steps,
1-D/2-D/4-D tensors, two param groups, decoupled weight decay on)."""
import pytest
from lion_pytorch import Lion
from lion_pytorch.cautious_lion import Lion as CautiousLion

from metaopt.zoo.equivalence import compare_with_reference

GROUPS = [{"lr": 0.01, "weight_decay": 0.1},
          {"lr": 0.003, "betas": (0.8, 0.95), "weight_decay": 0.5}]


def test_lion_matches_lion_pytorch():
    compare_with_reference("lion", lambda g: Lion(g), GROUPS, state_map={"exp_avg": "exp_avg"})


@pytest.mark.parametrize("name, extra", [("clion", {}), ("lion", {"cautious": True})])
def test_cautious_lion_matches_lion_pytorch(name, extra):
    """lion-pytorch's cautious Lion with cautious_factor=0 is the C-Optim mask; it clamps the
    mean at 1e-5 where C-Optim uses 1e-3, which only matters when under 0.1% of the
    coordinates agree (never here)."""
    groups = [dict(g, **extra) for g in GROUPS]
    compare_with_reference(name, lambda g: CautiousLion(g, cautious_factor=0.0), groups,
                           ref_groups=GROUPS, state_map={"exp_avg": "exp_avg"})
