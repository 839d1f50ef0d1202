"""dog against a transcription of the official formll/dog LDoG step (the layer-wise form,
which is what a per-tensor rule computes), float64, 25 steps, 1-D/2-D/4-D tensors, two param
groups, weight decay on. Convergence on quadratic/Rosenbrock is in test_zoo_common.py."""
import torch

from metaopt import zoo
from metaopt.zoo.equivalence import compare_with_reference


class OfficialLDoG(torch.optim.Optimizer):
    """formll/dog's LDoG: per tensor, eta = lr * rbar / sqrt(G) with
    rbar = max(reps_rel (1 + ||x0||), max ||x_i - x0||) and G = eps + sum ||g_i||^2."""

    def __init__(self, params, reps_rel=1e-6, lr=1.0, weight_decay=0.0, eps=1e-8):
        super().__init__(params, dict(reps_rel=reps_rel, lr=lr, weight_decay=weight_decay, eps=eps))
        self.first = True

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            ps = group["params"]
            if self.first:
                group["init"] = [p.clone() for p in ps]
            for p in ps:
                p.grad.add_(p, alpha=group["weight_decay"])
            sq = torch.stack([(p.grad ** 2).sum() for p in ps])
            if self.first:
                group["rbar"] = group["reps_rel"] * (1 + torch.stack([p.norm() for p in ps]))
                group["G"] = sq + group["eps"]
            else:
                d = torch.stack([(p - x0).norm() for p, x0 in zip(ps, group["init"])])
                group["rbar"] = torch.maximum(group["rbar"], d)
                group["G"] = group["G"] + sq
            for i, p in enumerate(ps):
                self.state[p]["rbar"], self.state[p]["G"] = group["rbar"][i], group["G"][i]
                eta = group["lr"] * group["rbar"][i] / group["G"][i].sqrt()
                p.add_(p.grad, alpha=-eta.item())
        self.first = False


def test_dog_matches_official_ldog():
    groups = [{"lr": 1.0, "reps_rel": 1e-2, "weight_decay": 0.1},
              {"lr": 0.5, "reps_rel": 1e-4, "eps": 1e-6}]
    compare_with_reference("dog", OfficialLDoG, groups, state_map={"rbar": "rbar", "G": "G"})


def test_dog_first_step_length_is_reps_rel_times_one_plus_norm():
    """Step 1 moves by exactly eta_0 ||g_0|| = reps_rel (1 + ||x0||) ||g|| / sqrt(||g||^2 + eps)."""
    x0 = torch.tensor([3.0, 4.0], dtype=torch.float64)
    p = x0.clone().requires_grad_()
    opt = zoo.create("dog", [p], reps_rel=1e-3, eps=0.0)
    p.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt.step()
    assert abs((p.detach() - x0).norm().item() - 1e-3 * (1 + 5.0)) < 1e-15


def _run_from_small_weights(dtype, steps):
    g = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter((0.05 * torch.randn(s, generator=g, dtype=torch.float64)).to(dtype))
          for s in [(5,), (3, 4), (2, 3, 2, 2)]]

    def loss():
        return sum(0.5 * (p.double() ** 2).sum() + torch.sin(p.double()).sum() for p in ps)

    opt = zoo.create("dog", ps)  # default reps_rel 1e-6: first steps below bf16 resolution
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    return float(loss())


def test_low_precision_moves_from_the_tiny_first_steps_and_reaches_float32():
    """bf16/fp16: the distance grows from the steps taken (float32 state) although the first
    ones round away, so DoG leaves x0 and ends where float32 does; keeping the distance from
    the rounded parameters (the official code in bf16) never moves."""
    ref = _run_from_small_weights(torch.float32, 200)
    for dtype in (torch.bfloat16, torch.float16):
        assert abs(_run_from_small_weights(dtype, 200) - ref) < 1e-2 * abs(ref)
