"""adam and adamw against Kingma & Ba (2015), Algorithm 1, written out by hand (torch's eps
placement), and AdamW's decoupled decay (Loshchilov & Hutter 2019), in float64; amsgrad
(Reddi et al. 2018) against torch.optim.Adam(amsgrad=True)."""
import math

import pytest
import torch

from metaopt import zoo
from metaopt.zoo.equivalence import compare_with_reference


@pytest.mark.parametrize("name,wd", [("adam", 0.0), ("adamw", 0.1)])
def test_adam_matches_algorithm_1(name, wd):
    a, w0 = [1.0, 3.0, 0.5], [1.0, -2.0, 0.25]
    lr, b1, b2, eps = 0.01, 0.8, 0.99, 1e-8
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = zoo.create(name, [w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref, m, v = list(w0), [0.0] * 3, [0.0] * 3
    for t in range(1, 13):
        w.grad = torch.tensor(a, dtype=torch.float64) * w.detach()
        opt.step()
        g = [ai * wi for ai, wi in zip(a, ref)]
        ref = [wi * (1 - lr * wd) for wi in ref]  # decoupled decay before the Adam step
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        ref = [wi - lr * (mi / (1 - b1 ** t)) / (math.sqrt(vi / (1 - b2 ** t)) + eps)
               for wi, mi, vi in zip(ref, m, v)]
    torch.testing.assert_close(w.detach(), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)


def test_amsgrad_matches_torch_adam_amsgrad(float64_default):
    groups = [{"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.03, "betas": (0.8, 0.99)}]
    compare_with_reference(
        "amsgrad", lambda g: torch.optim.Adam(g, amsgrad=True, foreach=False), groups,
        state_map={"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq",
                   "max_exp_avg_sq": "max_exp_avg_sq"})
