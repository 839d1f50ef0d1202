"""adamax against Kingma & Ba (2015), Algorithm 2, written out by hand (torch's eps inside the
max, coupled L2), on f(w) = sum(a * w^2) / 2, in float64."""
import torch

from metaopt import zoo


def test_adamax_matches_algorithm_2():
    a, w0 = [1.0, 3.0, 0.5], [1.0, -2.0, 0.25]
    lr, b1, b2, eps, wd = 0.02, 0.8, 0.99, 1e-8, 0.05
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("adamax", [w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref, m, u = list(w0), [0.0] * 3, [0.0] * 3
    for t in range(1, 13):
        w.grad = torch.tensor(a, dtype=torch.float64) * w.detach()
        opt.step()
        g = [ai * wi + wd * wi for ai, wi in zip(a, ref)]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        u = [max(b2 * ui, abs(gi) + eps) for ui, gi in zip(u, g)]
        ref = [wi - lr / (1 - b1 ** t) * mi / ui for wi, mi, ui in zip(ref, m, u)]
    torch.testing.assert_close(w.detach(), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)
