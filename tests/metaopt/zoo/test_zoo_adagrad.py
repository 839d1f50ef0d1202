"""adagrad against its update written out by hand (Duchi et al. 2011, torch.optim.Adagrad's
form with lr decay and initial accumulator) on f(w) = sum(a * w^2) / 2, in float64."""
import math

import torch

from metaopt import zoo


def test_adagrad_matches_hand_recurrence():
    a, w0 = [1.0, 3.0, 0.5], [1.0, -2.0, 0.25]
    lr, lr_decay, s0, eps = 0.1, 0.05, 0.2, 1e-10
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("adagrad", [w], lr=lr, lr_decay=lr_decay, initial_accumulator_value=s0,
                     eps=eps)
    ref, s = list(w0), [s0] * 3
    for t in range(1, 13):
        w.grad = torch.tensor(a, dtype=torch.float64) * w.detach()
        opt.step()
        g = [ai * wi for ai, wi in zip(a, ref)]
        s = [si + gi * gi for si, gi in zip(s, g)]
        clr = lr / (1 + (t - 1) * lr_decay)
        ref = [wi - clr * gi / (math.sqrt(si) + eps) for wi, gi, si in zip(ref, g, s)]
    torch.testing.assert_close(w.detach(), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.state[w]["sum"], torch.tensor(s, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)
