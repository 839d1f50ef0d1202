"""radam against Liu et al. (2020), Algorithm 2, written out by hand (torch's eps placement),
on f(w) = sum(a * w^2) / 2, in float64; b2 = 0.9 so the run crosses from the un-rectified
(rho_t <= 5) to the rectified branch."""
import math

import torch

from metaopt import zoo


def test_radam_matches_algorithm_2_through_both_branches():
    a, w0 = [1.0, 3.0, 0.5], [1.0, -2.0, 0.25]
    lr, b1, b2, eps, wd = 0.01, 0.8, 0.9, 1e-8, 0.05
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("radam", [w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref, m, v, branches = list(w0), [0.0] * 3, [0.0] * 3, set()
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, 13):
        w.grad = torch.tensor(a, dtype=torch.float64) * w.detach()
        opt.step()
        g = [ai * wi + wd * wi for ai, wi in zip(a, ref)]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        branches.add(rho > 5)
        if rho > 5:
            r = math.sqrt((1 - b2 ** t) * (rho - 4) * (rho - 2) * rho_inf
                          / ((rho_inf - 4) * (rho_inf - 2) * rho))
            ref = [wi - lr * r * mi / (1 - b1 ** t) / (math.sqrt(vi) + eps)
                   for wi, mi, vi in zip(ref, m, v)]
        else:
            ref = [wi - lr * mi / (1 - b1 ** t) for wi, mi in zip(ref, m)]
    assert branches == {False, True}
    torch.testing.assert_close(w.detach(), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)
