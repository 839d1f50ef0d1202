"""grams against pytorch-optimizer's Grams (float64, 25 steps, 1-D/2-D/4-D tensors, two
param groups, decoupled weight decay on)."""
import pytorch_optimizer as po

from metaopt.zoo.equivalence import compare_with_reference


def test_grams_matches_pytorch_optimizer():
    groups = [{"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.003, "betas": (0.8, 0.95), "eps": 1e-8}]
    compare_with_reference("grams", lambda g: po.Grams(g, foreach=False), groups,
                           state_map={"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"})
