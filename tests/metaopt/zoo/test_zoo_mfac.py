"""mfac: the paper's closed form, a literal transcription of the official optimizer
(IST-DASLab/M-FAC optim.py, ``MFAC.step`` with ``HInvFastUpMulti``'s CPU path) and bad input.
The generic checks (bf16 parameters with float32 statistics, as the official code keeps them:
a bf16 Gram matrix scaled by 1/damp loses positive definiteness; state_dict, vmap,
torch.func.grad, convergence) are in test_zoo_common.py.
"""
import pytest
import torch

from metaopt import zoo
from metaopt.zoo.equivalence import compare_with_reference

F64 = torch.float64


# --- the paper's closed form ---------------------------------------------------------------

@pytest.mark.parametrize("dim", [3, 10])          # fewer and more coordinates than ngrads
@pytest.mark.parametrize("damp", [1e-1, 1e-4])
def test_direction_is_the_damped_empirical_fisher_solve(dim, damp):
    """u_t = (damp I + (1/m) G^T G)^{-1} g_t with G the last min(t, m) gradients (1/m also
    while the window fills), over 11 steps so the ring buffer of m = 4 wraps twice."""
    m = 4
    rule = zoo.rule("mfac", lr=1.0, ngrads=m, damp=damp)
    gen = torch.Generator().manual_seed(dim)
    p, history = torch.zeros(dim, dtype=F64), []
    state = rule.init(p)
    for t in range(1, 12):
        g = torch.randn(dim, generator=gen, dtype=F64)
        history.append(g)
        delta, state = rule.update(g, p, state, rule.hp, t)
        window = torch.stack(history[-m:])
        fisher = damp * torch.eye(dim, dtype=F64) + window.T @ window / m
        torch.testing.assert_close(delta, torch.linalg.solve(fisher, g), rtol=1e-8, atol=0)
        assert torch.equal(state["grads"][(t - 1) % m], g)
        torch.testing.assert_close(state["dots"], state["grads"] @ state["grads"].T)


def test_first_step_scales_the_gradient_by_damp_plus_its_norm_over_m():
    """One gradient x in a window of m: F = damp I + x x^T / m, so u = x / (damp + |x|^2 / m)."""
    rule = zoo.rule("mfac", lr=1.0, ngrads=8, damp=0.5)
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    delta, _ = rule.update(x, torch.zeros_like(x), rule.init(x), rule.hp, 1)
    torch.testing.assert_close(delta, x / (0.5 + (x * x).sum() / 8), rtol=1e-14, atol=0)


# --- the official optimizer ----------------------------------------------------------------

def _lu_upper_no_pivoting(a):
    """U of a = LU by Gaussian elimination without row exchanges (the official code takes it
    from ``torch.lu(pivot=False)``, which torch implements on CUDA only)."""
    u = a.clone()
    for k in range(len(u) - 1):
        u[k + 1:] -= torch.outer(u[k + 1:, k] / u[k, k], u[k])
    return torch.triu(u)


def _setup(st, m, lambd):
    """HInvFastUpMulti.setup: D (giHig), the denominators and the rows of B from ``last`` on."""
    diag = m * torch.eye(m, dtype=F64)
    st["giHig"] = torch.triu(_lu_upper_no_pivoting(lambd * st["dots"] + diag) - diag)
    st["denom"] = m + torch.diagonal(st["giHig"])
    tmp = -st["giHig"].t() / st["denom"].reshape(1, -1)
    for i in range(max(st["last"], 1), m):
        st["coef"][i, :i] = tmp[i, :i] @ st["coef"][:i, :i]


def _mul(st, x, dots, m, lambd):
    """HInvFastUpMulti.mul (CPU path)."""
    gi_hix = lambd * dots
    for i in range(1, m):
        gi_hix[i:] -= st["giHig"][i - 1, i:] * gi_hix[i - 1] / st["denom"][i - 1]
    return lambd * x - ((gi_hix / st["denom"]) @ st["coef"]) @ st["grads"]


def _update_mul(st, g, m, lambd):
    """HInvFastUpMulti.update_mul: replace the oldest gradient, rebuild, multiply."""
    st["grads"][st["last"]] = g
    tmp = st["grads"] @ g
    st["dots"][st["last"], :] = tmp
    st["dots"][:, st["last"]] = tmp
    _setup(st, m, lambd)
    res = _mul(st, g, tmp, m, lambd)
    st["last"] = (st["last"] + 1) % m
    return res


class OfficialMFAC(torch.optim.Optimizer):
    """optim.MFAC.step, one window per parameter (the block-wise variant a per-tensor rule
    computes; the official class concatenates all parameters into one) and weight decay per
    group (the official class takes one value); float64 instead of the official float32."""

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, ngrads=1024, damp=1e-5):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      ngrads=ngrads, damp=damp))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            m, lambd, mu = group["ngrads"], 1.0 / group["damp"], group["momentum"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st.update(grads=torch.zeros(m, p.numel(), dtype=F64),
                              dots=torch.zeros(m, m, dtype=F64), last=0,
                              coef=lambd * torch.eye(m, dtype=F64), v=torch.zeros_like(p))
                g = p.grad + group["weight_decay"] * p if group["weight_decay"] > 0 else p.grad
                tmp = _update_mul(st, g.reshape(-1), m, lambd).reshape(p.shape)
                if mu > 0:
                    st["v"] = mu * st["v"] + (1 - mu) * tmp
                    tmp = st["v"]
                p.add_(tmp, alpha=-group["lr"])


GROUPS = [{"lr": 0.05, "weight_decay": 0.1, "ngrads": 4, "damp": 1e-2},
          {"lr": 0.02, "weight_decay": 0.01, "ngrads": 3, "damp": 0.1}]


def test_matches_official_mfac():
    """20 steps, windows of 4 and 3 (both wrap), 1-D/2-D/4-D tensors, weight decay."""
    final = compare_with_reference("mfac", OfficialMFAC, GROUPS,
                                   state_map={"grads": "grads", "dots": "dots"}, steps=20)
    assert all(torch.isfinite(p).all() for p in final)


def test_matches_official_mfac_with_momentum():
    groups = [dict(GROUPS[0], momentum=0.9), dict(GROUPS[1], momentum=0.5)]
    compare_with_reference("mfac", OfficialMFAC, groups,
                           state_map={"grads": "grads", "momentum_buffer": "v"}, steps=20)


# --- bad input (the other generic checks: test_zoo_common.py) -----------------------------

@pytest.mark.parametrize("bad,match", [
    ({"lr": -0.1}, r"^mfac: invalid lr=-0.1: must be >= 0"),
    ({"damp": 0.0}, r"^mfac: invalid damp=0.0: must be > 0"),
    ({"ngrads": 0}, r"^mfac: invalid ngrads=0: must be an integer >= 1"),
    ({"ngrads": 2.5}, r"^mfac: invalid ngrads=2.5: must be an integer >= 1"),
    ({"momentum": 1.0}, r"^mfac: invalid momentum=1.0: must be in \[0, 1\)"),
    ({"weight_decay": -1.0}, r"^mfac: invalid weight_decay=-1.0: must be >= 0"),
])
def test_bad_hyperparameters_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        zoo.rule("mfac", **bad)
    with pytest.raises(ValueError, match=match):
        zoo.create("mfac", [{"params": [torch.zeros(2, requires_grad=True)], **bad}])
