"""adadelta against Zeiler (2012), Algorithm 1, written out by hand (torch's lr factor and
coupled L2), on f(w) = sum(a * w^2) / 2, in float64."""
import math

import torch

from metaopt import zoo


def test_adadelta_matches_algorithm_1():
    a, w0 = [1.0, 3.0, 0.5], [1.0, -2.0, 0.25]
    lr, rho, eps, wd = 0.7, 0.8, 1e-4, 0.05
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("adadelta", [w], lr=lr, rho=rho, eps=eps, weight_decay=wd)
    ref, v, u = list(w0), [0.0] * 3, [0.0] * 3
    for _ in range(12):
        w.grad = torch.tensor(a, dtype=torch.float64) * w.detach()
        opt.step()
        g = [ai * wi + wd * wi for ai, wi in zip(a, ref)]
        v = [rho * vi + (1 - rho) * gi * gi for vi, gi in zip(v, g)]
        d = [math.sqrt(ui + eps) / math.sqrt(vi + eps) * gi for ui, vi, gi in zip(u, v, g)]
        u = [rho * ui + (1 - rho) * di * di for ui, di in zip(u, d)]
        ref = [wi - lr * di for wi, di in zip(ref, d)]
    torch.testing.assert_close(w.detach(), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)
