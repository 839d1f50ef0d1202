"""lion against lucidrains/lion-pytorch (float64, 25 steps, 1-D/2-D/4-D tensors, two param
groups, decoupled weight decay on); clion and lion(cautious=True): test_zoo_cautious.py."""
from lion_pytorch import Lion
from zoo_support import LION_GROUPS

from metaopt.zoo.equivalence import compare_with_reference


def test_lion_matches_lion_pytorch():
    compare_with_reference("lion", lambda g: Lion(g), LION_GROUPS,
                           state_map={"exp_avg": "exp_avg"})
