"""optimistic_amsgrad against a coordinate-by-coordinate transcription of Algorithm 2 of Wang
et al. (arXiv 1903.01435) with the guess m_{t+1} = g_t, float64, 25 steps, 1-D/2-D/4-D
tensors, two param groups (the algorithm has no weight decay). No public reference
implementation exists; convergence on quadratic/Rosenbrock is in test_zoo_common.py."""
import math

import torch

from metaopt.zoo.equivalence import compare_with_reference


class AlgorithmBox(torch.optim.Optimizer):
    """Lines 5-9 of the algorithm box, one coordinate at a time in Python floats."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            eta, eps = group["lr"], group["eps"]
            for p in group["params"]:
                st = self.state[p]
                w, g = p.reshape(-1).tolist(), p.grad.reshape(-1).tolist()
                n = len(w)
                if not st:  # w_{-1/2} = w_1, theta_0 = 0, v_0 = vhat_0 = eps
                    st.update(half=list(w), theta=[0.0] * n, v=[eps] * n, vhat=[eps] * n)
                new_w = []
                for i in range(n):
                    theta = b1 * st["theta"][i] + (1 - b1) * g[i]            # line 5
                    v = b2 * st["v"][i] + (1 - b2) * g[i] ** 2                # line 6
                    vhat = max(st["vhat"][i], v)                              # line 7
                    half = st["half"][i] - eta * theta / math.sqrt(vhat)      # line 8
                    h = b1 * st["theta"][i] + (1 - b1) * g[i]   # theta_{t-1}; m_{t+1} = g_t
                    new_w.append(half - eta * h / math.sqrt(vhat))            # line 9
                    st["theta"][i], st["v"][i], st["vhat"][i], st["half"][i] = theta, v, vhat, half
                p.copy_(torch.tensor(new_w, dtype=p.dtype).reshape(p.shape))


def test_optimistic_amsgrad_matches_algorithm_box():
    groups = [{"lr": 0.01}, {"lr": 0.003, "betas": (0.8, 0.95), "eps": 1e-6}]
    compare_with_reference("optimistic_amsgrad", AlgorithmBox, groups, steps=25)


def test_optimistic_amsgrad_state():
    """The state holds the half iterate and the AMSGrad moments, with vhat >= v."""
    from metaopt import zoo
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = zoo.create("optimistic_amsgrad", [p], lr=0.1)
    for _ in range(3):
        p.grad = 2 * p.detach()
        opt.step()
    s = opt.state[p]
    assert torch.all(s["max_exp_avg_sq"] >= s["exp_avg_sq"])
    keys = sorted(k for k in s if k != "step")
    assert keys == ["exp_avg", "exp_avg_sq", "half", "max_exp_avg_sq"]
