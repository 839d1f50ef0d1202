"""sgd against its update written out by hand (Polyak 1964 heavy ball, Sutskever et al. 2013
Nesterov form as torch.optim.SGD) on f(w) = sum(a * w^2) / 2 + wd * |w|^2 / 2, in float64."""
import pytest
import torch

from metaopt import zoo


@pytest.mark.parametrize("nesterov,dampening", [(False, 0.1), (True, 0.0)])
def test_sgd_momentum_matches_hand_recurrence(nesterov, dampening):
    a, w0 = [1.0, 3.0, 0.5], [1.0, -2.0, 0.25]
    lr, mu, wd = 0.05, 0.9, 0.1
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("sgd", [w], lr=lr, momentum=mu, dampening=dampening, nesterov=nesterov,
                     weight_decay=wd)
    ref, buf = list(w0), None
    for t in range(1, 13):
        w.grad = torch.tensor(a, dtype=torch.float64) * w.detach()
        opt.step()
        g = [ai * wi + wd * wi for ai, wi in zip(a, ref)]
        buf = g if t == 1 else [mu * b + (1 - dampening) * gi for b, gi in zip(buf, g)]
        d = [gi + mu * b for gi, b in zip(g, buf)] if nesterov else buf
        ref = [wi - lr * di for wi, di in zip(ref, d)]
    torch.testing.assert_close(w.detach(), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-14)
    assert abs(ref[1]) < 2.0  # the iterate moved
