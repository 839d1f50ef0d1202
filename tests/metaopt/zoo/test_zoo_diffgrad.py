"""diffgrad against pytorch-optimizer's DiffGrad (float64, 25 steps, 1-D/2-D/4-D tensors,
two param groups, weight decay on). The official code (shivram1987/diffGrad) adds weight decay
to the gradient, so pytorch-optimizer runs with weight_decouple=False (its default decouples)."""
import pytorch_optimizer as po

from metaopt.zoo.equivalence import compare_with_reference


def test_diffgrad_matches_pytorch_optimizer():
    groups = [{"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.003, "betas": (0.8, 0.95), "eps": 1e-6}]
    compare_with_reference(
        "diffgrad", lambda g: po.DiffGrad(g, weight_decouple=False, foreach=False), groups,
        state_map={"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq",
                   "previous_grad": "previous_grad"})
