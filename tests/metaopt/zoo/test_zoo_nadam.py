"""nadam against Dozat (2016) with torch.optim.NAdam's momentum schedule, written out by hand,
on f(w) = sum(a * w^2) / 2, in float64."""
import math

import torch

from metaopt import zoo


def test_nadam_matches_hand_recurrence():
    a, w0 = [1.0, 3.0, 0.5], [1.0, -2.0, 0.25]
    lr, b1, b2, eps, wd, psi = 0.01, 0.8, 0.99, 1e-8, 0.05, 0.05
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("nadam", [w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd,
                     momentum_decay=psi)
    ref, m, v, prod = list(w0), [0.0] * 3, [0.0] * 3, 1.0

    def mu(t):
        return b1 * (1 - 0.5 * 0.96 ** (t * psi))

    for t in range(1, 13):
        w.grad = torch.tensor(a, dtype=torch.float64) * w.detach()
        opt.step()
        g = [ai * wi + wd * wi for ai, wi in zip(a, ref)]
        prod *= mu(t)
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        ref = [wi - lr * ((1 - mu(t)) / (1 - prod) * gi
                          + mu(t + 1) / (1 - prod * mu(t + 1)) * mi)
               / (math.sqrt(vi / (1 - b2 ** t)) + eps)
               for wi, gi, mi, vi in zip(ref, g, m, v)]
    torch.testing.assert_close(w.detach(), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)
