"""adamp and sgdp against pytorch-optimizer's AdamP/SGDP (float64, 25 steps, two param
groups, weight decay on) on a problem with scale-invariant weights, so that both projection
branches (per channel and per layer) and the plain branch are exercised.

pytorch-optimizer's AdamP puts eps as (sqrt(v) + eps) / sqrt(1 - b2^t); the official
clovaai/AdamP code (followed here) uses sqrt(v) / sqrt(1 - b2^t) + eps. The comparison with
pytorch-optimizer therefore runs with eps = 1e-12 (where the two placements agree to 1e-10),
and a transcription of the official step checks the placement at the default eps."""
import pytest
import pytorch_optimizer as po
import torch

from metaopt.zoo.adamp import project
from metaopt.zoo.equivalence import compare_with_reference

SHAPES = ((7,), (5, 6), (2, 3, 4, 5), (4, 3))


def scale_invariant_problem(shapes, n_groups):
    """(5, 6): invariant to the scale of each row; (2, 3, 4, 5): to the scale of the whole
    tensor; (7,) and (4, 3): an ordinary smooth loss."""
    gen = torch.Generator().manual_seed(0)
    inits = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
             for _ in range(n_groups)]
    targets = [torch.randn(s, generator=gen, dtype=torch.float64) for _ in range(n_groups)
               for s in shapes]

    def loss(params):
        total = 0.0
        for p, t in zip(params, targets):
            if p.shape == (5, 6):
                w = p / p.norm(dim=1, keepdim=True)
            elif p.dim() == 4:
                w = p / p.norm()
            else:
                w = p
            total = total + ((w - t) ** 2).sum() + 0.1 * torch.sin(3 * w).sum()
        return total

    return inits, loss


def test_projection_branches_are_exercised():
    _, loss = scale_invariant_problem(SHAPES, 1)
    inits, _ = scale_invariant_problem(SHAPES, 1)
    params = [t.clone().requires_grad_() for t in inits[0]]
    grads = torch.autograd.grad(loss(params), params)
    ratios = [project(p, g, g.clone(), 0.1, 0.1, 1e-8)[1] for p, g in zip(params, grads)]
    assert [float(r) for r in ratios] == [1.0, 0.1, 0.1, 1.0]


@pytest.mark.parametrize("nesterov", [False, True])
def test_adamp_matches_pytorch_optimizer(nesterov):
    groups = [{"lr": 0.01, "weight_decay": 0.1, "nesterov": nesterov, "eps": 1e-12},
              {"lr": 0.003, "betas": (0.8, 0.95), "wd_ratio": 0.3, "weight_decay": 0.2,
               "nesterov": nesterov, "eps": 1e-12}]
    compare_with_reference("adamp", lambda g: po.AdamP(g, foreach=False), groups, shapes=SHAPES,
                           problem=scale_invariant_problem,
                           state_map={"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"})


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgdp_matches_pytorch_optimizer(nesterov):
    groups = [{"lr": 0.01, "weight_decay": 0.1, "momentum": 0.9, "nesterov": nesterov},
              {"lr": 0.03, "momentum": 0.5, "wd_ratio": 0.3, "weight_decay": 0.2,
               "nesterov": nesterov}]
    compare_with_reference("sgdp", lambda g: po.SGDP(g, foreach=False), groups, shapes=SHAPES,
                           problem=scale_invariant_problem, state_map={"momentum": "momentum"})


class OfficialAdamP(torch.optim.Optimizer):
    """A per-parameter transcription of clovaai/AdamP's AdamP.step (eps after the bias
    correction of sqrt(v); projection tried per channel, then per layer)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 delta=0.1, wd_ratio=0.1, nesterov=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      delta=delta, wd_ratio=wd_ratio, nesterov=nesterov))

    @staticmethod
    def _project(p, g, u, delta, wd_ratio, eps):
        expand = [-1] + [1] * (p.dim() - 1)
        for view in (lambda x: x.reshape(x.shape[0], -1), lambda x: x.reshape(1, -1)):
            cos = torch.nn.functional.cosine_similarity(view(g), view(p), dim=1, eps=eps).abs()
            if cos.max() < delta / view(p).shape[1] ** 0.5:
                p_n = p / view(p).norm(dim=1).reshape(expand).add(eps)
                return u - p_n * view(p_n * u).sum(dim=1).reshape(expand), wd_ratio
        return u, 1.0

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                g = p.grad
                st["step"] += 1
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = st["exp_avg_sq"].sqrt() / (1 - b2 ** st["step"]) ** 0.5 + group["eps"]
                m = st["exp_avg"]
                u = (b1 * m + (1 - b1) * g if group["nesterov"] else m) / denom
                ratio = 1.0
                if p.dim() > 1:
                    u, ratio = self._project(p, g, u, group["delta"], group["wd_ratio"],
                                             group["eps"])
                p.mul_(1 - group["lr"] * group["weight_decay"] * ratio)
                p.add_(u, alpha=-group["lr"] / (1 - b1 ** st["step"]))


def test_adamp_matches_official_transcription_at_default_eps():
    groups = [{"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.003, "nesterov": True}]
    compare_with_reference("adamp", OfficialAdamP, groups, shapes=SHAPES,
                           problem=scale_invariant_problem,
                           state_map={"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"})
