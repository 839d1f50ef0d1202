"""Subset-Norm / Subspace-Momentum (adamw_sn, adagrad_sn, adamw_snsm, adagrad_snsm).

* adamw_sn with integer subsets against the public pytorch_optimizer.AdamWSN;
* all four ids against a literal per-tensor transcription of the official GenericOptim
  (timmytonga/sn-sm), written with one loop over explicit index subsets, float64, 25 steps,
  1-D / 2-D (wide and tall) / 4-D tensors, two param groups, weight decay on. The
  transcription departs from the official code where the module does (see its docstring):
  at a projector refresh the momentum restarts from zero and the refresh step uses it (the
  official code steps with the stale pre-refresh momentum, then stores zeros), the SVD runs in
  float64 (official: float32), and a 4-D tensor is its ``shape[0] x rest`` matrix;
* closed forms: subset size 1 is torch.optim.Adagrad / torch.optim.Adam (eps = 0: the
  official eps is added to the un-corrected ``sqrt(v)``, torch's to the bias-corrected one),
  one subset per tensor is AdaGrad-Norm, a gradient orthogonal to the momentum subspace takes
  a plain step while the momentum only decays, full rank without refresh is SN;
* the memory claim (state shapes), vmap and differentiation through a projector refresh, and
  convergence on a matrix least-squares problem with SN and SM active. The generic checks
  (bf16, state_dict, bad hp, quadratic, Rosenbrock) are in test_zoo_common.py.
"""
import math

import pytest
import torch
from torch.func import vmap

from metaopt import apply, init_states, zoo
from metaopt.zoo.equivalence import compare_with_reference

IDS = ["adamw_sn", "adagrad_sn", "adamw_snsm", "adagrad_snsm"]
SHAPES = ((7,), (5, 6), (6, 4), (2, 3, 4, 5))



def subsets(shape, subset_size):
    """The subsets of a tensor as lists of flat indices, and the shape the state gives their
    accumulators: a subset per row ``(c, 1)``, per column ``(1, c)``, per chunk ``(c, 1)``."""
    numel = math.prod(shape)
    if subset_size == "heuristics":
        if len(shape) == 1:
            return [[j] for j in range(numel)], (numel, 1)
        m, n = shape[0], numel // shape[0]
        if m >= n:
            return [[i * n + j for j in range(n)] for i in range(m)], (m, 1)
        return [[i * n + j for i in range(m)] for j in range(n)], (1, n)
    want = subset_size if subset_size > 0 else int(math.sqrt(numel) / -subset_size)
    k = max(i for i in range(1, min(max(want, 1), numel) + 1) if numel % i == 0)
    return [list(range(c * k, (c + 1) * k)) for c in range(numel // k)], (numel // k, 1)


class OfficialSNSM(torch.optim.Optimizer):
    """GenericOptim(momentum_type "ema" or "sm", second_moment_type "sn"), per tensor: the
    numerator (momentum; or subspace momentum plus the orthogonal gradient), one accumulator
    per subset, ``p -= lr c_t num / (sqrt(acc) + eps)``, then ``p -= lr wd p``."""

    def __init__(self, params, adam, lr=1e-3, betas=(0.9, 0.999), beta1=0.9, eps=1e-6,
                 weight_decay=0.0, subset_size="heuristics", rank=None, update_proj_gap=None):
        super().__init__(params, dict(lr=lr, betas=betas, beta1=beta1, eps=eps,
                                      weight_decay=weight_decay, subset_size=subset_size,
                                      rank=rank, update_proj_gap=update_proj_gap))
        self.adam = adam

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"] if self.adam else (group["beta1"], 1.0)
            for p in group["params"]:
                st = self.state[p]
                st["t"] = t = st.get("t", 0) + 1
                g = p.grad.clone()
                num = self._numerator(group, st, g, t, b1)
                parts, acc_shape = subsets(p.shape, group["subset_size"])
                acc = st.setdefault("acc", torch.zeros(acc_shape, dtype=p.dtype)).view(-1)
                c = math.sqrt(1 - b2**t) / (1 - b1**t) if self.adam else 1.0
                flat_g, flat_num, flat_p = g.reshape(-1), num.reshape(-1), p.view(-1)
                for i, idx in enumerate(parts):
                    sq = (flat_g[idx] ** 2).sum()
                    acc[i] = b2 * acc[i] + (1 - b2) * sq if self.adam else acc[i] + sq
                    flat_p[idx] -= group["lr"] * c * flat_num[idx] / (acc[i].sqrt() + group["eps"])
                p.sub_(group["lr"] * group["weight_decay"] * p)

    @staticmethod
    def _numerator(group, st, g, t, b1):
        if b1 == 0:
            return g
        if group["rank"] is None or g.dim() == 1:
            st["m"] = b1 * st.get("m", torch.zeros_like(g)) + (1 - b1) * g
            return st["m"]
        G = g.reshape(g.shape[0], -1)
        rows, cols = G.shape
        r = min(group["rank"], rows, cols)
        if t == 1 or t % group["update_proj_gap"] == 0:  # new subspace, momentum restarts
            U, _, Vh = torch.linalg.svd(G, full_matrices=False)
            st["P"] = Vh[:r] if rows >= cols else U[:, :r]
            st["m"] = torch.zeros((rows, r) if rows >= cols else (r, cols), dtype=g.dtype)
        P = st["P"]
        if rows >= cols:  # momentum of G V_r, back with X V_r^T
            low = G @ P.T
            st["m"] = b1 * st["m"] + (1 - b1) * low
            num = st["m"] @ P + (G - low @ P)
        else:  # momentum of U_r^T G, back with U_r X
            low = P.T @ G
            st["m"] = b1 * st["m"] + (1 - b1) * low
            num = P @ st["m"] + (G - P @ low)
        return num.reshape(g.shape)


def _groups(name):
    """Two groups: heuristics subsets with weight decay, sqrt(numel)/2 chunks with a large eps;
    adagrad_sn's second group has no momentum (the paper's AdaGrad-Subset-Norm)."""
    adam = name.startswith("adamw")
    g1 = dict(lr=0.05, weight_decay=0.1, subset_size="heuristics")
    g2 = dict(lr=0.02, eps=1e-3, subset_size=-2)
    g1.update({"betas": (0.9, 0.99)} if adam else {"beta1": 0.8})
    g2.update({"betas": (0.5, 0.9)} if adam else {"beta1": 0.0 if name == "adagrad_sn" else 0.7})
    if name.endswith("snsm"):
        g1.update(rank=2, update_proj_gap=7)  # refreshes at steps 1, 7, 14, 21
        g2.update(rank=1, update_proj_gap=3)
    return [g1, g2]


@pytest.mark.parametrize("name", IDS)
def test_matches_transcription_of_official_code(name):
    state_map = {"exp_avg_sq": "acc"}
    if name != "adagrad_sn":  # its second group keeps no momentum
        state_map["exp_avg"] = "m"
    compare_with_reference(name, lambda gs: OfficialSNSM(gs, adam=name.startswith("adamw")),
                           _groups(name), shapes=SHAPES, steps=25, state_map=state_map)


def test_adamw_sn_with_integer_subsets_matches_pytorch_optimizer():
    from pytorch_optimizer import AdamWSN
    groups = [dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.1, subset_size=4),
              dict(lr=0.02, betas=(0.5, 0.9), eps=1e-3, subset_size=-2)]
    ref_groups = [dict(g, sn=True, eps=g.get("eps", 1e-6)) for g in groups]
    compare_with_reference("adamw_sn", lambda gs: AdamWSN(gs, foreach=False), groups,
                           ref_groups=ref_groups, shapes=SHAPES,
                           state_map={"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"})


# --- special cases with closed forms ------------------------------------------------------

def test_singleton_subsets_make_adagrad_sn_torch_adagrad():
    """Subset size 1, no momentum: torch.optim.Adagrad (both add eps outside the root)."""
    groups = [dict(lr=0.1, beta1=0.0, eps=1e-10, subset_size=1),
              dict(lr=0.03, beta1=0.0, eps=1e-3, subset_size=1)]
    ref_groups = [dict(lr=g["lr"], eps=g["eps"]) for g in groups]
    compare_with_reference("adagrad_sn", lambda gs: torch.optim.Adagrad(gs, foreach=False),
                           groups, ref_groups=ref_groups, shapes=SHAPES,
                           state_map={"exp_avg_sq": lambda st: st["sum"].reshape(-1, 1)})


def test_singleton_subsets_and_zero_eps_make_adamw_sn_torch_adam():
    """Subset size 1 is coordinate-wise Adam; equal to torch.optim.Adam only at eps = 0,
    since the official eps is added to sqrt(v_t), torch's to sqrt(v_t / (1 - b2^t))."""
    groups = [dict(lr=0.05, betas=(0.9, 0.99), eps=0.0, subset_size=1),
              dict(lr=0.02, betas=(0.5, 0.9), eps=0.0, subset_size=1)]
    ref_groups = [dict(lr=g["lr"], betas=g["betas"], eps=0.0) for g in groups]
    compare_with_reference("adamw_sn", lambda gs: torch.optim.Adam(gs, foreach=False), groups,
                           ref_groups=ref_groups, shapes=SHAPES,
                           state_map={"exp_avg": "exp_avg",
                                      "exp_avg_sq": lambda st: st["exp_avg_sq"].reshape(-1, 1)})


def test_eps_is_added_to_the_uncorrected_root():
    """Step 1 of adamw_sn: lr g / (|g| + eps / sqrt(1 - b2)) coordinate-wise."""
    rule = zoo.rule("adamw_sn", lr=0.1, betas=(0.9, 0.99), eps=0.01, subset_size=1)
    g = torch.tensor([0.5, -2.0, 0.03], dtype=torch.float64)
    delta, _ = rule.update(g, torch.zeros_like(g), rule.init(g), rule.hp, 1)
    torch.testing.assert_close(delta, 0.1 * g / (g.abs() + 0.01 / math.sqrt(0.01)),
                               rtol=1e-14, atol=0)


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2)])
def test_one_subset_per_tensor_is_adagrad_norm(shape):
    """b_t^2 = b_{t-1}^2 + ||g_t||^2,  p_{t+1} = p_t - lr g_t / (b_t + eps)."""
    gen = torch.Generator().manual_seed(0)
    rule = zoo.rule("adagrad_sn", lr=0.5, beta1=0.0, eps=1e-8, subset_size=10**6)
    p = torch.randn(shape, generator=gen, dtype=torch.float64)
    state, b_sq = rule.init(p), 0.0
    for t in range(1, 6):
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        delta, state = rule.update(g, p, state, rule.hp, t)
        b_sq = b_sq + (g * g).sum()
        torch.testing.assert_close(delta, 0.5 * g / (b_sq.sqrt() + 1e-8), rtol=1e-13, atol=0)
        assert state["exp_avg_sq"].shape == (1, 1)
        p = p - delta


@pytest.mark.parametrize("name", ["adamw_snsm", "adagrad_snsm"])
def test_full_rank_subspace_without_refresh_is_subset_norm(name):
    """Rank >= min(m, n): P^* P = I, the orthogonal part vanishes, momentum is full."""
    groups = [dict(g, rank=100, update_proj_gap=1000) for g in _groups(name)]
    sn_groups = [{k: v for k, v in g.items() if k not in ("rank", "update_proj_gap")}
                 for g in groups]
    sn_name = name[:-2]
    compare_with_reference(name, lambda gs: zoo.create(sn_name, gs, impl="loop"), groups,
                           ref_groups=sn_groups, shapes=SHAPES, rtol=1e-9)


def test_gradient_orthogonal_to_the_subspace_takes_a_plain_step():
    """Rank 1 from G1 = u e1^T (tall 3 x 2: P g = G e1). Then G2 = w e2^T has P G2 = 0: the
    momentum only decays (m2 = b1 m1) and the numerator is P^* m2 + G2 = b1 (1 - b1) G1 + G2."""
    b1, lr, eps = 0.5, 0.1, 1e-6
    rule = zoo.rule("adagrad_snsm", lr=lr, beta1=b1, eps=eps, rank=1, update_proj_gap=100)
    u = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    w = torch.tensor([0.3, 1.0, -1.5], dtype=torch.float64)
    e1, e2 = torch.eye(2, dtype=torch.float64)
    G1, G2 = torch.outer(u, e1), torch.outer(w, e2)
    p = torch.zeros(3, 2, dtype=torch.float64)
    _, s1 = rule.update(G1, p, rule.init(p), rule.hp, 1)
    torch.testing.assert_close(s1["projector"].abs(), e1[None])
    delta, s2 = rule.update(G2, p, s1, rule.hp, 2)
    torch.testing.assert_close(s2["exp_avg"], b1 * s1["exp_avg"], rtol=1e-14, atol=0)
    num = b1 * (1 - b1) * G1 + G2
    torch.testing.assert_close(delta, lr * num / (s2["exp_avg_sq"].sqrt() + eps),
                               rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("name,hp,shape,want", [
    ("adagrad_sn", {"beta1": 0.0}, (5, 6), {"exp_avg_sq": (1, 6)}),      # one per column
    ("adagrad_sn", {"beta1": 0.0}, (6, 4), {"exp_avg_sq": (6, 1)}),      # one per row
    ("adagrad_sn", {"beta1": 0.0}, (2, 3, 4, 5), {"exp_avg_sq": (1, 60)}),
    ("adagrad_sn", {"beta1": 0.0}, (7,), {"exp_avg_sq": (7, 1)}),        # vector: per coordinate
    ("adagrad_sn", {"beta1": 0.0, "subset_size": -2}, (2, 3, 4, 5), {"exp_avg_sq": (24, 1)}),
    ("adagrad_sn", {"beta1": 0.0, "subset_size": 7}, (5, 6), {"exp_avg_sq": (5, 1)}),
    ("adamw_sn", {}, (5, 6), {"exp_avg": (5, 6), "exp_avg_sq": (1, 6)}),
    ("adamw_snsm", {"rank": 2}, (5, 6), {"exp_avg": (2, 6), "projector": (5, 2),
                                         "exp_avg_sq": (1, 6)}),
    ("adamw_snsm", {"rank": 2}, (6, 4), {"exp_avg": (6, 2), "projector": (2, 4),
                                         "exp_avg_sq": (6, 1)}),
    ("adagrad_snsm", {"rank": 3}, (2, 3, 4, 5), {"exp_avg": (2, 60), "projector": (2, 2),
                                                 "exp_avg_sq": (1, 60)}),
    ("adagrad_snsm", {"rank": 3}, (7,), {"exp_avg": (7,), "exp_avg_sq": (7, 1)}),
])
def test_state_is_one_number_per_subset_and_rank_r_momentum(name, hp, shape, want):
    p = torch.randn(shape, requires_grad=True)
    opt = zoo.create(name, [p], **hp)
    for _ in range(2):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
    got = {k: tuple(v.shape) for k, v in opt.state[p].items() if k != "step"}
    assert got == want


# --- functional paths through a projector refresh -----------------------------------------

VSHAPES = [(5,), (3, 4), (2, 3, 2, 2)]


def _run(rule, lr, params, steps):
    states = init_states(rule, params)
    for t in steps:
        grads = [p + torch.cos(p) for p in params]
        params, states = apply(rule, params, grads, states, t, {"lr": lr})
    return params


@pytest.mark.parametrize("name", ["adamw_snsm", "adagrad_snsm"])
def test_vmap_and_grad_through_projector_refreshes(name):
    """Rank 1, refreshes at steps 1, 2 and 4: a vmapped population of lrs equals separate
    runs, and d(loss)/d(lr) through the SVDs matches central differences."""
    rule = zoo.rule(name, rank=1, update_proj_gap=2, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    p0 = [torch.randn(s, generator=gen, dtype=torch.float64) for s in VSHAPES]
    lrs = torch.tensor([0.05, 0.1, 0.2], dtype=torch.float64)
    steps_t = [torch.tensor(float(t), dtype=torch.float64) for t in range(1, 5)]
    batched = vmap(lambda lr: _run(rule, lr, p0, steps_t))(lrs)
    for i in range(3):
        for x, y in zip(batched, _run(rule, float(lrs[i]), p0, range(1, 5))):
            torch.testing.assert_close(x[i], y, rtol=1e-10, atol=1e-12)

    def loss(lr):
        return sum((p**2).sum() + torch.sin(p).sum() for p in _run(rule, lr, p0, range(1, 5)))

    lr = torch.tensor(0.1, dtype=torch.float64)
    h = 1e-6
    fd = (loss(lr + h) - loss(lr - h)) / (2 * h)
    torch.testing.assert_close(torch.func.grad(loss)(lr), fd, rtol=1e-5, atol=1e-8)


# --- convergence with SN and SM active ----------------------------------------------------

CONV_HP = {"adamw_sn": {"lr": 0.05}, "adagrad_sn": {"lr": 0.5},
           "adamw_snsm": {"lr": 0.05, "rank": 2, "update_proj_gap": 20},
           "adagrad_snsm": {"lr": 0.5, "rank": 2, "update_proj_gap": 20}}


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
@pytest.mark.parametrize("name", IDS)
def test_converges_on_matrix_least_squares(name, shape):
    """min_X 1/2 ||A X - B||^2 with B = A X*: a matrix parameter, so the subsets are rows or
    columns and the momentum lives in a rank-2 subspace."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(10, shape[0], generator=gen, dtype=torch.float64)
    x_star = torch.randn(shape, generator=gen, dtype=torch.float64)
    loss = lambda x: 0.5 * ((a @ (x - x_star)) ** 2).sum()
    x0 = torch.zeros(shape, dtype=torch.float64)
    rule = zoo.rule(name, **CONV_HP[name])
    x, state = x0, rule.init(x0)
    for t in range(1, 1001):
        delta, state = rule.update(a.T @ (a @ (x - x_star)), x, state, rule.hp, t)
        x = x - delta
    assert loss(x) < 1e-4 * loss(x0)


def test_bad_hyperparameters_are_rejected():
    for bad in (0, 2.5, "rows", True):
        with pytest.raises(ValueError, match=r"^adamw_sn: invalid subset_size=.*'heuristics' or"):
            zoo.rule("adamw_sn", subset_size=bad)
    with pytest.raises(ValueError, match=r"^adagrad_snsm: invalid rank=0: must be an integer >= 1"):
        zoo.rule("adagrad_snsm", rank=0)
    with pytest.raises(ValueError, match=r"^adamw_snsm: invalid update_proj_gap=0"):
        zoo.rule("adamw_snsm", update_proj_gap=0)
    with pytest.raises(ValueError, match=r"^adagrad_sn: invalid beta1=1.0: must be in \[0, 1\)"):
        zoo.rule("adagrad_sn", beta1=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("name,lr", [("adamw_sn", 3e-3), ("adagrad_sn", 0.1)])
def test_one_subset_converges_on_rosenbrock(name, lr):
    """Rosenbrock from (0, 0) with both coordinates in one subset (a norm-adaptive step);
    test_zoo_common's run is coordinate-wise, as the heuristics make a vector."""
    rule = zoo.rule(name, lr=lr, subset_size=2)
    x = torch.zeros(2, dtype=torch.float64)
    state = rule.init(x)
    for t in range(1, 10_001):
        a, b = x
        g = torch.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
        delta, state = rule.update(g, x, state, rule.hp, t)
        x = x - delta
    torch.testing.assert_close(x, torch.ones(2, dtype=torch.float64), rtol=3e-2, atol=3e-2)
