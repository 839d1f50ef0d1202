"""gravity against pytorch-optimizer's Gravity (float64, 25 steps, 1-D/2-D/4-D tensors, two
param groups; Gravity has no weight decay). Both draw the initial velocity
v_0 ~ N(0, alpha / lr) from torch's RNG but in a different order across groups, so the test
gives both the same draws before the first step."""
import pytorch_optimizer as po
import torch

from metaopt import zoo
from metaopt.zoo.equivalence import compare_with_reference


def _same_initial_velocity(ours, ref):
    torch.manual_seed(0)
    for group, ref_group in zip(ours.param_groups, ref.param_groups):
        for p, q in zip(group["params"], ref_group["params"]):
            unit = torch.randn_like(p)
            ours.state[p].update(step=torch.zeros(()), v=unit.clone())
            ref.state[q]["v"] = unit * ref_group["alpha"] / ref_group["lr"]


def test_gravity_matches_pytorch_optimizer():
    groups = [{"lr": 0.01, "alpha": 0.02}, {"lr": 0.05, "beta": 0.8}]
    compare_with_reference("gravity", lambda g: po.Gravity(g, foreach=False), groups,
                           state_map={"v": "v"}, setup=_same_initial_velocity)


def test_gravity_initial_velocity_has_std_alpha_over_lr():
    """v_1 = beta_1 v_0 + (1 - beta_1) zeta_1 with v_0 ~ N(0, alpha/lr): with a zero gradient,
    v_1's sample std is beta_1 alpha / lr (beta_1 = (beta + 1) / 3)."""
    p = torch.zeros(200_000, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("gravity", [p], lr=0.01, alpha=0.05, beta=0.9)
    p.grad = torch.zeros_like(p)
    p.grad[0] = 1.0  # max|g| > 0
    torch.manual_seed(1)
    opt.step()
    v = opt.state[p]["v"][1:]
    assert abs(v.std().item() / (0.05 / 0.01 * (0.9 + 1) / 3) - 1) < 0.01
