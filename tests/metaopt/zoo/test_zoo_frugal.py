"""frugal against a per-parameter transcription of the paper's Algorithm 1, FRUGAL(AdamW,
signSGD), with the official code's choices (subspace chosen at steps 1, T+1, ...; moments and
bias-correction count reset then; decoupled decay with the group lr; 1-D tensors on AdamW):
float64, 25 steps, T = 5 or 4, 1-D/2-D (both projection sides)/4-D tensors, two param
groups, weight decay on, for each projection type. No public package implements FRUGAL.
Special cases: density 1 is AdamW (restarted every T steps when the state is reset), density
0 is signSGD with the state-free lr; the split is orthogonal; convergence with the
projection active on a matrix quadratic and (slow) on stacked Rosenbrock problems. The common
checks (test_zoo_common.py) run on its 1-D AdamW path and its default SVD projection."""
import pytest
import torch

from metaopt import unroll, zoo
from metaopt.zoo.equivalence import compare_with_reference
from metaopt.zoo.frugal import embed, new_subspace, project, split_gradient

SHAPES = ((7,), (6, 4), (5, 6), (2, 3, 4, 5))
STATE = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}


class FrugalAlgorithm1(torch.optim.Optimizer):
    """Algorithm 1 with Adam as the state-full and signSGD as the state-free step, one
    parameter at a time; every group carries all its hyperparameters. A tensor of 2+
    dimensions is the matrix G = grad.reshape(m, -1); its subspace: m < n: r = round(rho m)
    orthonormal columns Q in R^m, coordinates Q^T G; else r = round(rho n) columns Q in R^n,
    coordinates G Q; randk: floor(rho m n) entries of G."""

    def __init__(self, params):
        super().__init__(params, {})

    @staticmethod
    def adam(st, x, b1, b2, eps):
        st["tau"] += 1
        st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * x
        st["exp_avg_sq"] = b2 * st["exp_avg_sq"] + (1 - b2) * x * x
        m_hat = st["exp_avg"] / (1 - b1 ** st["tau"])
        v_hat = st["exp_avg_sq"] / (1 - b2 ** st["tau"])
        return m_hat / (v_hat.sqrt() + eps)

    @staticmethod
    def choose_subspace(G, rho, kind):
        m, n = G.shape
        if kind == "randk":
            return torch.randperm(m * n)[: int(m * n * rho)]
        if m < n:
            r = round(rho * m)
            if kind == "svd":
                return torch.linalg.svd(G, full_matrices=False)[0][:, :r]
            return torch.nn.init.orthogonal_(torch.empty(m, r, dtype=G.dtype))
        r = round(rho * n)
        if kind == "svd":
            return torch.linalg.svd(G, full_matrices=False)[2][:r].T
        return torch.nn.init.orthogonal_(torch.empty(r, n, dtype=G.dtype)).T

    @staticmethod
    def coordinates(G, sub, kind):
        m, n = G.shape
        if kind == "randk":
            flat = G.reshape(-1)
            return torch.stack([flat[i] for i in sub.tolist()]) if len(sub) else flat[:0]
        return sub.T @ G if m < n else G @ sub

    @staticmethod
    def embed(x, sub, kind, shape):
        m, n = shape
        if kind == "randk":
            full = torch.zeros(m * n, dtype=x.dtype)
            for j, i in enumerate(sub.tolist()):
                full[i] = x[j]
            return full.reshape(m, n)
        return sub @ x if m < n else x @ sub.T

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd, (b1, b2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
            kind = group["proj_type"]
            for p in group["params"]:
                st = self.state[p]
                st["k"] = st.get("k", 0) + 1
                if p.dim() < 2:  # not projected: AdamW
                    if st["k"] == 1:
                        zeros = torch.zeros_like(p)
                        st.update(tau=0, exp_avg=zeros, exp_avg_sq=zeros.clone())
                    u = self.adam(st, p.grad, b1, b2, eps)
                    p.mul_(1 - lr * wd).sub_(lr * u)
                    continue
                G = p.grad.reshape(p.shape[0], -1)
                if (st["k"] - 1) % group["update_gap"] == 0:  # new subspace, state reset
                    st["sub"] = self.choose_subspace(G, group["density"], kind)
                    zeros = torch.zeros_like(self.coordinates(G, st["sub"], kind))
                    st.update(tau=0, exp_avg=zeros, exp_avg_sq=zeros.clone())
                coords = self.coordinates(G, st["sub"], kind)
                free = G - self.embed(coords, st["sub"], kind, G.shape)
                u_full = self.embed(self.adam(st, coords, b1, b2, eps), st["sub"], kind, G.shape)
                step = lr * u_full + lr * group["inactive_lr_scale"] * free.sign()
                p.mul_(1 - lr * wd).sub_(step.reshape(p.shape))


GROUPS = [{"lr": 0.02, "weight_decay": 0.1, "density": 0.4, "update_gap": 5},
          {"lr": 0.01, "weight_decay": 0.0, "density": 0.3, "update_gap": 4,
           "betas": (0.8, 0.95), "eps": 1e-6, "inactive_lr_scale": 0.5}]
REF_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "inactive_lr_scale": 1.0}


@pytest.mark.parametrize("proj_type", ["svd", "random", "randk"])
def test_frugal_matches_algorithm_1(proj_type):
    groups = [dict(g, proj_type=proj_type) for g in GROUPS]
    ref_groups = [dict(REF_DEFAULTS, **g) for g in groups]
    compare_with_reference("frugal", FrugalAlgorithm1, groups, ref_groups=ref_groups,
                           state_map=STATE, shapes=SHAPES)


def test_density_one_is_adamw():
    """All coordinates state-full and no subspace change within the run: AdamW."""
    groups = [{"lr": 0.02, "weight_decay": 0.1, "density": 1.0, "update_gap": 100,
               "proj_type": "randk"},
              {"lr": 0.01, "weight_decay": 0.0, "density": 1.0, "update_gap": 100,
               "proj_type": "randk", "betas": (0.8, 0.95), "eps": 1e-6}]
    ref = [{k: v for k, v in g.items() if k not in ("density", "update_gap", "proj_type")}
           for g in groups]
    compare_with_reference("frugal", lambda gs: torch.optim.AdamW(gs, foreach=False), groups,
                           ref_groups=ref, shapes=SHAPES, rtol=1e-12, atol=1e-14)


class AdamWRestarted(torch.optim.AdamW):
    """AdamW whose moments and step count of 2+-D tensors restart every ``gap`` steps."""

    def __init__(self, params, gap, **kw):
        super().__init__(params, foreach=False, **kw)
        self.gap, self.k = gap, 0

    def step(self):
        if self.k % self.gap == 0:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.dim() >= 2:
                        self.state.pop(p, None)
        self.k += 1
        super().step()


def test_density_one_with_reset_is_adamw_restarted_every_update_gap():
    groups = [{"lr": 0.02, "weight_decay": 0.1, "density": 1.0, "update_gap": 5,
               "proj_type": "randk"}]
    ref = [{"lr": 0.02, "weight_decay": 0.1}]
    compare_with_reference("frugal", lambda gs: AdamWRestarted(gs, gap=5), groups,
                           ref_groups=ref, shapes=SHAPES, rtol=1e-12, atol=1e-14)


class SignSGDW(torch.optim.Optimizer):
    """p <- p (1 - lr wd) - lr_free sign(g)."""

    def __init__(self, params):
        super().__init__(params, {})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.sub_(group["free_lr"] * p.grad.sign())


@pytest.mark.parametrize("proj_type", ["svd", "random", "randk"])
def test_density_zero_is_sign_sgd_with_the_state_free_lr(proj_type):
    groups = [{"lr": 0.02, "weight_decay": 0.1, "density": 0.0, "update_gap": 3,
               "proj_type": proj_type, "inactive_lr_scale": 0.5, "proj_params_lr_scale": 0.4}]
    ref = [{"lr": 0.02, "weight_decay": 0.1, "free_lr": 0.02 * 0.4 * 0.5}]
    compare_with_reference("frugal", SignSGDW, groups,
                           ref_groups=ref, shapes=((6, 4), (2, 3, 4, 5)), rtol=1e-12)


@pytest.mark.parametrize("proj_type", ["svd", "random", "randk"])
@pytest.mark.parametrize("shape", [(5, 9), (9, 5)])
def test_split_is_orthogonal_and_sums_to_the_gradient(proj_type, shape):
    torch.manual_seed(0)
    G = torch.randn(shape, dtype=torch.float64)
    hp = {"proj_type": proj_type, "density": 0.4, "reset_statistics": True}
    state = new_subspace(G, {}, hp)
    R, F = split_gradient(G, state)
    full = embed(R, state, G.shape)
    torch.testing.assert_close(full + F, G, rtol=0, atol=1e-14)
    assert abs((full * F).sum()) < 1e-12 * (G * G).sum()
    torch.testing.assert_close(project(F, state), torch.zeros_like(R), rtol=0, atol=1e-13)
    # the state-full part keeps the projection of G and loses no more of it
    torch.testing.assert_close(project(full, state), R, rtol=0, atol=1e-13)
    assert R.numel() == (4 * 5 * 9 // 10 if proj_type == "randk" else 2 * max(shape))


def test_svd_subspace_is_the_dominant_one():
    """The SVD projection keeps the largest singular directions: its state-full part is the
    best rank-r approximation of G (Eckart-Young)."""
    torch.manual_seed(1)
    G = torch.randn(6, 10, dtype=torch.float64)
    state = new_subspace(G, {}, {"proj_type": "svd", "density": 0.5, "reset_statistics": True})
    R, F = split_gradient(G, state)
    s = torch.linalg.svdvals(G)
    torch.testing.assert_close(F.norm() ** 2, (s[3:] ** 2).sum(), rtol=1e-12, atol=0)


def test_keeping_statistics_carries_the_moments_into_the_new_subspace():
    """reset_statistics=False (GaLore): at a subspace change the moments continue, unprojected,
    with the new coordinates, and the bias-correction count is not restarted."""
    p = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("frugal", [p], update_gap=2, reset_statistics=False, density=0.5)
    grads = [torch.randn(6, 4, dtype=torch.float64) for _ in range(3)]
    for k, g in enumerate(grads):
        if k == 2:
            m_old = opt.state[p]["exp_avg"].clone()
        p.grad = g
        opt.step()
    state = opt.state[p]
    m_new = 0.9 * m_old + 0.1 * project(grads[2], state)  # the basis chosen at step 3
    torch.testing.assert_close(state["exp_avg"], m_new, rtol=1e-14, atol=0)
    assert state["count"] == 3


def test_unrolled_gradient_is_finite_with_a_rank_deficient_gradient():
    """Dead columns make singular values repeat (zeros), where the SVD's derivative is
    infinite; the subspace is held constant, so hypergradients stay finite."""
    rule = zoo.rule("frugal", density=0.5, update_gap=2)
    x0 = torch.tensor([[1.0, 0.5, 0.2], [0.0, -1.0, 0.3], [0.3, 0.1, 0.2], [1.0, 2.0, 3.0]],
                      dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(1e-2, dtype=torch.float64, requires_grad=True)
    loss = lambda ps, batch: ((ps[0][:, 0] - 2.0) ** 2).sum()  # columns 2, 3 never move
    ps, _, _ = unroll(rule, loss, [x0], [None] * 5, hp={"lr": lr})
    gx, glr = torch.autograd.grad(ps[0].sum(), (x0, lr))
    assert torch.isfinite(gx).all() and torch.isfinite(glr)


@pytest.mark.parametrize("proj_type", ["svd", "random", "randk"])
def test_converges_on_a_matrix_quadratic_with_the_projection_active(proj_type):
    """1/2 sum_ij h_ij (W - W*)_ij^2 with W 12 x 8, condition 10, rho 0.25, T 20; signSGD's
    constant steps leave O(lr) noise, so lr decays."""
    gen = torch.Generator().manual_seed(0)
    h = 1 + 9 * torch.rand(12, 8, generator=gen, dtype=torch.float64)
    w_star = torch.randn(12, 8, generator=gen, dtype=torch.float64)
    W = torch.zeros(12, 8, dtype=torch.float64, requires_grad=True)
    opt = zoo.create("frugal", [W], lr=0.05, weight_decay=0.0, update_gap=20,
                     proj_type=proj_type)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.99)
    torch.manual_seed(0)
    loss = lambda: 0.5 * (h * (W - w_star) ** 2).sum()
    start = loss().item()
    for _ in range(500):
        opt.zero_grad()
        loss().backward()
        opt.step()
        sched.step()
    assert loss().item() < 1e-3 * start


def _rosenbrock_grad(X):
    a, b = X[:, 0], X[:, 1]
    return torch.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], dim=1)


@pytest.mark.slow
@pytest.mark.parametrize("proj_type", ["svd", "random", "randk"])
def test_converges_on_stacked_rosenbrock(proj_type):
    """Four Rosenbrock problems as the rows of a 4 x 2 parameter, rho 0.5 (one state-full
    direction), from (0, 0) to (1, 1) within 3e-2 in 10k steps."""
    rule = zoo.rule("frugal", lr=1e-2, weight_decay=0.0, density=0.5, update_gap=20,
                    proj_type=proj_type, inactive_lr_scale=0.1)
    X = torch.zeros(4, 2, dtype=torch.float64)
    torch.manual_seed(0)
    state = rule.init(X)
    for t in range(1, 10_001):
        delta, state = rule.update(_rosenbrock_grad(X), X, state, rule.hp, t)
        X = X - delta
    torch.testing.assert_close(X, torch.ones(4, 2, dtype=torch.float64), rtol=3e-2, atol=3e-2)
