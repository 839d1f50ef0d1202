"""rmsprop (Tieleman & Hinton 2012; centered: Graves 2013) against its update written out by
hand with momentum and coupled L2, on f(w) = sum(a * w^2) / 2, in float64."""
import math

import pytest
import torch

from metaopt import zoo


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_matches_hand_recurrence(centered):
    a, w0 = [1.0, 3.0, 0.5], [1.0, -2.0, 0.25]
    lr, alpha, eps, mu, wd = 0.01, 0.9, 1e-8, 0.5, 0.05
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("rmsprop", [w], lr=lr, alpha=alpha, eps=eps, momentum=mu, weight_decay=wd,
                     centered=centered)
    ref, v, avg, b = list(w0), [0.0] * 3, [0.0] * 3, [0.0] * 3
    for _ in range(12):
        w.grad = torch.tensor(a, dtype=torch.float64) * w.detach()
        opt.step()
        g = [ai * wi + wd * wi for ai, wi in zip(a, ref)]
        v = [alpha * vi + (1 - alpha) * gi * gi for vi, gi in zip(v, g)]
        avg = [alpha * ai + (1 - alpha) * gi for ai, gi in zip(avg, g)]
        var = [vi - ai * ai for vi, ai in zip(v, avg)] if centered else v
        d = [gi / (math.sqrt(si) + eps) for gi, si in zip(g, var)]
        b = [mu * bi + di for bi, di in zip(b, d)]
        ref = [wi - lr * bi for wi, bi in zip(ref, b)]
    torch.testing.assert_close(w.detach(), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)
