"""ademamix against pytorch-optimizer's AdEMAMix (no warm-up) and against a transcription of
the official apple/ml-ademamix PyTorch step (with the alpha and beta3 warm-ups), float64,
25 steps, 1-D/2-D/4-D tensors, two param groups, weight decay on.

pytorch-optimizer's own warm-up (``t_alpha_beta3``) schedules beta3 with a different formula
than the official code, so warm-ups are checked against the official form only."""
import math

import pytest
import pytorch_optimizer as po
import torch

from metaopt.zoo.equivalence import compare_with_reference

STATE = {"exp_avg_fast": "exp_avg", "exp_avg_slow": "exp_avg_slow", "exp_avg_sq": "exp_avg_sq"}


def test_ademamix_matches_pytorch_optimizer():
    groups = [{"lr": 0.01, "weight_decay": 0.1, "alpha": 2.0},
              {"lr": 0.003, "betas": (0.8, 0.95, 0.99), "alpha": 5.0, "eps": 1e-6}]
    ref = lambda g: po.AdEMAMix(g, weight_decouple=True, foreach=False)  # noqa: E731
    compare_with_reference("ademamix", ref, groups, state_map=STATE)


class OfficialAdEMAMix(torch.optim.Optimizer):
    """Transcription of apple/ml-ademamix pytorch/ademamix.py's step (per parameter)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0,
                 beta3_warmup=None, alpha_warmup=None, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, alpha=alpha, eps=eps,
                                      beta3_warmup=beta3_warmup, alpha_warmup=alpha_warmup,
                                      weight_decay=weight_decay))

    @staticmethod
    def _alpha(step, end, warmup):
        return end * step / warmup if step < warmup else end

    @staticmethod
    def _beta3(step, start, end, warmup):
        def half_life(b):
            return math.log(0.5) / math.log(b + 1e-8) - 1
        if step < warmup:
            a = step / warmup
            return 0.5 ** (1 / ((1 - a) * half_life(start) + a * half_life(end) + 1))
        return end

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2, b3_end = group["betas"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st.update(step=0, exp_avg=torch.zeros_like(p),
                              exp_avg_slow=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                st["step"] += 1
                t, g = st["step"], p.grad
                alpha = (self._alpha(t, group["alpha"], group["alpha_warmup"])
                         if group["alpha_warmup"] else group["alpha"])
                b3 = (self._beta3(t, b1, b3_end, group["beta3_warmup"])
                      if group["beta3_warmup"] else b3_end)
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                st["exp_avg_slow"].mul_(b3).add_(g, alpha=1 - b3)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = st["exp_avg_sq"].sqrt() / math.sqrt(1 - b2**t) + group["eps"]
                u = (st["exp_avg"] / (1 - b1**t) + alpha * st["exp_avg_slow"]) / denom
                u = u + group["weight_decay"] * p
                p.add_(-group["lr"] * u)


@pytest.mark.parametrize("warmups", [(10, 15), (None, 8), (12, None)])
def test_ademamix_matches_official_with_warmups(warmups):
    aw, bw = warmups
    groups = [{"lr": 0.01, "weight_decay": 0.1, "alpha_warmup": aw, "beta3_warmup": bw},
              {"lr": 0.003, "betas": (0.8, 0.95, 0.999), "alpha": 5.0, "alpha_warmup": aw,
               "beta3_warmup": bw}]
    compare_with_reference("ademamix", OfficialAdEMAMix, groups, state_map=STATE)


def test_ademamix_needs_three_betas():
    from metaopt import zoo
    with pytest.raises(ValueError, match="betas"):
        zoo.rule("ademamix", betas=(0.9, 0.999))
