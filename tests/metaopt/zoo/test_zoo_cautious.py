"""The cautious mask and the cautious members (cadamw; adamw / sgd with cautious=True)
against transcriptions of kyleliang919/C-Optim's steps (no installable package exists), and
clion / lion(cautious=True) against lion-pytorch's cautious Lion: float64, 25 steps,
1-D/2-D/4-D tensors, two param groups, weight decay on."""
import pytest
import torch
from lion_pytorch.cautious_lion import Lion as CautiousLion
from zoo_support import LION_GROUPS

from metaopt import zoo
from metaopt.zoo._cautious_mask import cautious
from metaopt.zoo.equivalence import compare_with_reference


def test_mask_closed_form():
    u = torch.tensor([1.0, -2.0, 3.0, 4.0])
    g = torch.tensor([2.0, 1.0, -1.0, 0.5])
    # agreeing coordinates: 0 and 3 -> mean(mask) = 1/2 -> kept entries doubled
    torch.testing.assert_close(cautious(u, g), torch.tensor([2.0, 0.0, 0.0, 8.0]))


def test_mask_mean_is_clamped_at_1e3():
    u = torch.zeros(10_000)
    u[0] = 1.0
    g = torch.ones(10_000)
    assert cautious(u, g)[0].item() == pytest.approx(1.0 / 1e-3)


def _c_optim_mask(update, grad):
    mask = (update * grad > 0).to(grad.dtype)
    return mask / mask.mean().clamp(min=1e-3)


class COptimAdamW(torch.optim.Optimizer):
    """C-Optim's c_adamw step (Hugging Face AdamW form: eps on sqrt(v) before the bias
    correction, weight decay after the step), per parameter."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                st["step"] += 1
                g, m, v = p.grad, st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).add_(g * g, alpha=1 - b2)
                step_size = group["lr"] * (1 - b2 ** st["step"]) ** 0.5 / (1 - b1 ** st["step"])
                p.add_(m * _c_optim_mask(m, g) / (v.sqrt() + group["eps"]), alpha=-step_size)
                p.add_(p, alpha=-group["lr"] * group["weight_decay"])


class CautiousTorchAdamW(torch.optim.Optimizer):
    """torch.optim.AdamW's step with the C-Optim mask on the normalized direction."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                st["step"] += 1
                t, g = st["step"], p.grad
                p.mul_(1 - group["lr"] * group["weight_decay"])
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                u = (st["exp_avg"] / (1 - b1**t)) / (
                    st["exp_avg_sq"].sqrt() / (1 - b2**t) ** 0.5 + group["eps"])
                p.add_(u * _c_optim_mask(u, g), alpha=-group["lr"])


class CautiousSGD(torch.optim.Optimizer):
    """torch.optim.SGD's momentum step with the C-Optim mask on the direction."""

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                g = p.grad + group["weight_decay"] * p
                st = self.state[p]
                st["momentum_buffer"] = (g.clone() if not st
                                         else mu * st["momentum_buffer"] + g)
                d = g + mu * st["momentum_buffer"] if group["nesterov"] else st["momentum_buffer"]
                p.add_(d * _c_optim_mask(d, g), alpha=-group["lr"])


GROUPS = [{"lr": 0.01, "weight_decay": 0.1},
          {"lr": 0.003, "betas": (0.8, 0.95), "weight_decay": 0.3}]


def test_cadamw_matches_c_optim():
    compare_with_reference("cadamw", COptimAdamW, GROUPS,
                           state_map={"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"})


@pytest.mark.parametrize("impl", ["loop", "fused"])
def test_adamw_cautious_matches_transcription(impl):
    groups = [dict(g, cautious=True) for g in GROUPS]
    compare_with_reference("adamw", CautiousTorchAdamW, groups, ref_groups=GROUPS, impl=impl,
                           state_map={"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"})


def test_sgd_cautious_matches_transcription():
    groups = [{"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1, "nesterov": True},
              {"lr": 0.03, "momentum": 0.5}]
    compare_with_reference("sgd", CautiousSGD, [dict(g, cautious=True) for g in groups],
                           ref_groups=groups, state_map={"momentum_buffer": "momentum_buffer"})


def test_cautious_changes_the_update():
    """With momentum disagreeing with the gradient on some coordinates, the cautious step
    differs from the plain one exactly there (zero) and is rescaled elsewhere."""
    p0 = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    steps = {}
    for flag in (False, True):
        p = p0.clone().requires_grad_()
        opt = zoo.create("sgd", [p], lr=0.1, momentum=0.9, cautious=flag)
        for g in ([1.0, 1.0, 1.0, 1.0], [-0.5, 1.0, -0.5, 1.0]):
            p.grad = torch.tensor(g, dtype=torch.float64)
            opt.step()
        steps[flag] = p.detach() - p0
    plain, caut = steps[False], steps[True]
    # step 1: buffer = g = 1 everywhere (all agree), step -0.1. Step 2: buffer = 0.9 + g =
    # [0.4, 1.9, 0.4, 1.9] disagrees with g on coordinates 0 and 2 (masked); mean(mask) = 1/2
    # doubles the rest: -0.1 * 1.9 * 2
    torch.testing.assert_close(caut, torch.tensor([-0.1, -0.1 - 2 * 0.19, -0.1, -0.1 - 2 * 0.19],
                                                  dtype=torch.float64))
    assert not torch.allclose(plain, caut)


@pytest.mark.parametrize("name, extra", [("clion", {}), ("lion", {"cautious": True})])
def test_cautious_lion_matches_lion_pytorch(name, extra):
    """lion-pytorch's cautious Lion with cautious_factor=0 is the C-Optim mask; it clamps the
    mean at 1e-5 where C-Optim uses 1e-3, which only matters when under 0.1% of the
    coordinates agree (never here)."""
    groups = [dict(g, **extra) for g in LION_GROUPS]
    compare_with_reference(name, lambda g: CautiousLion(g, cautious_factor=0.0), groups,
                           ref_groups=LION_GROUPS, state_map={"exp_avg": "exp_avg"})


@pytest.mark.slow
def test_lion_cautious_compiled_path_equals_loop():
    groups = [{"lr": 0.5, "betas": (0.5, 0.99), "cautious": True}, {"lr": 0.3, "cautious": True}]
    compare_with_reference("lion", lambda g: zoo.create("lion", g, impl="loop"), groups,
                           impl="compiled", steps=25, rtol=1e-9)
