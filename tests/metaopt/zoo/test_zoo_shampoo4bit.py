"""shampoo4bit (Wang et al., NeurIPS 2024) against a literal per-parameter transcription of the
official ``ShampooAdamW`` of Sike-Wang/low-bit-Shampoo (``optimizers/shampoo2.py`` with
``qtensor``'s ``QTensorSVDFast``/``QTensorDiagReal`` and ``compute_power``), float64, 25 steps,
1-D/2-D/4-D tensors in two param groups with weight decay and small preconditioning intervals;
the quantizer pair on its own; the 32-bit mode against an eigh-computed inverse fourth root;
the 4-bit state's size.

The generic checks (bf16 kept, exact state_dict round trip, vmap over lr, grad through steps,
sparse gradients, quadratic and Rosenbrock convergence) are in test_zoo_common.py, with the
preconditioner active; here: bad input, and convergence on a problem the preconditioner is for.
"""
import math

import pytest
import torch

from metaopt import zoo
from metaopt.zoo.equivalence import compare_with_reference
from metaopt.zoo.shampoo4bit import (bjorck, dequantize, dequantize_offdiag, quantization_levels,
                                     quantize, quantize_offdiag)

# the official maps for 4 bits, written out
LINEAR2 = [-(k / 15) ** 2 for k in (15, 13, 11, 9, 7, 5, 3)] + [0.0] + \
          [(k / 15) ** 2 for k in (1, 3, 5, 7, 9, 11, 13, 15)]
DYNAMIC = [-0.8875, -0.6625, -0.4375, -0.2125, -0.0775, -0.0325, -0.0055, 0.0,
           0.0055, 0.0325, 0.0775, 0.2125, 0.4375, 0.6625, 0.8875, 1.0]


@pytest.fixture(autouse=True)
def _one_thread():
    """The factors here are tiny: on a shared machine intra-op threads only add waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- quantizer
@pytest.mark.parametrize("kind, want", [("linear-2", LINEAR2), ("dynamic", DYNAMIC)])
def test_maps_have_the_official_16_levels(kind, want):
    levels = quantization_levels(kind, 4)
    assert levels.shape == (16,) and levels.unique().numel() == 16
    torch.testing.assert_close(levels, torch.tensor(want, dtype=torch.float64),
                               rtol=0, atol=1e-15)
    assert quantization_levels(kind, 8).unique().numel() == 256


@pytest.mark.parametrize("kind", ["linear-2", "dynamic"])
def test_round_trip_error_within_the_blocks_quantization_step(kind):
    levels = quantization_levels(kind, 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 150, generator=gen, dtype=torch.float64)
    x[2, 64:128] = 0.0  # an all-zero block
    codes, absmax = quantize(x, levels, 64)
    assert codes.dtype == torch.uint8 and codes.numel() == math.ceil(7 * 150 / 2)
    blocks = [x[:, :64], x[:, 64:128], x[:, 128:]]
    torch.testing.assert_close(absmax, torch.stack([b.abs().amax(1) for b in blocks], 1))
    y = dequantize(codes, absmax, levels, (7, 150), 64)
    assert torch.equal(y[2, 64:128], torch.zeros(64, dtype=torch.float64))
    # each entry lands on the nearest level: error <= half the gap of its bracketing levels
    scale = absmax.repeat_interleave(64, 1)[:, :150]
    u = (x / scale.clamp_min(1e-300)).clamp(-1, 1)
    hi = torch.bucketize(u, levels).clamp(1, 15)
    half_gap = (levels[hi] - levels[hi - 1]) / 2
    assert ((x - y).abs() <= half_gap * scale + 1e-15).all()
    assert (x - y).abs().max() > 0
    if kind == "linear-2":  # +-1 are levels, so values on the grid come back exactly
        assert torch.equal(dequantize(*quantize(y, levels, 64), levels, (7, 150), 64), y)


def test_offdiag_quantization_keeps_the_diagonal_exact():
    levels = quantization_levels("linear-2", 4)
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(9, 9, generator=gen, dtype=torch.float64)
    a = a @ a.T + 30 * torch.eye(9, dtype=torch.float64)  # a diagonal far above the rest
    codes, absmax, diag = quantize_offdiag(a, levels, 4)
    b = dequantize_offdiag(codes, absmax, diag, levels, 4)
    assert torch.equal(b.diagonal(), a.diagonal())
    off = ~torch.eye(9, dtype=torch.bool)
    assert (b - a)[off].abs().max() <= 0.5 * (1 - levels[-2]) * absmax.max()


def test_bjorck_rectifies_quantized_eigenvectors():
    levels = quantization_levels("linear-2", 4)
    gen = torch.Generator().manual_seed(2)
    v, _ = torch.linalg.qr(torch.randn(64, 64, generator=gen, dtype=torch.float64))
    vq = dequantize(*quantize(v, levels, 64), levels, (64, 64), 64)
    eye = torch.eye(64, dtype=torch.float64)
    errs = [(bjorck(vq, k).T @ bjorck(vq, k) - eye).norm() for k in range(4)]
    assert errs[0] > 1 and all(b < 0.5 * a for a, b in zip(errs, errs[1:]))
    assert (bjorck(vq, 4) - v).norm() < (vq - v).norm()  # closer to the true eigenvectors


# ----------------------------------------------------------------------------- reference
def _ref_quantize(x, levels, block):
    """Per row, per block of ``block`` entries: absmax, then the nearest level."""
    n, m = x.shape
    idx = torch.zeros(n, m, dtype=torch.long)
    absmax = torch.zeros(n, -(-m // block), dtype=x.dtype)
    for r in range(n):
        for j, c in enumerate(range(0, m, block)):
            blk = x[r, c:c + block]
            amax = blk.abs().max()
            absmax[r, j] = amax
            scaled = blk / amax if amax > 0 else blk
            idx[r, c:c + block] = (scaled[:, None] - levels[None, :]).abs().argmin(1)
    return idx, absmax


def _ref_dequantize(idx, absmax, levels, block):
    out = levels[idx]
    for r in range(idx.shape[0]):
        for j, c in enumerate(range(0, idx.shape[1], block)):
            out[r, c:c + block] = out[r, c:c + block] * absmax[r, j]
    return out


class RefFactor:
    """One statistic (QTensorSVDFast) and its inverse root (QTensorDiagReal)."""

    def __init__(self, n, group):
        self.g = group
        self.quantized = group["prec_bits"] < 16 and n * n >= group["min_lowbit_size"]
        self.levels = torch.tensor(LINEAR2 if group["quan_map"] == "linear-2" else DYNAMIC,
                                   dtype=torch.float64)
        eye = torch.eye(n, dtype=torch.float64)
        self.s = group["matrix_eps"] * torch.ones(n, dtype=torch.float64)
        self.set_vt(eye)
        self.set_root(eye)

    def set_vt(self, vt):
        self.vt = _ref_quantize(vt, self.levels, self.g["quan_blocksize"]) if self.quantized else vt

    def get_vt(self):
        if not self.quantized:
            return self.vt
        return _ref_dequantize(*self.vt, self.levels, self.g["quan_blocksize"])

    def set_root(self, a):
        if self.quantized:
            off = a.clone()
            off.fill_diagonal_(0.0)
            self.root = (_ref_quantize(off, self.levels, self.g["quan_blocksize"]), a.diagonal())
        else:
            self.root = a

    def get_root(self):
        if not self.quantized:
            return self.root
        out = _ref_dequantize(*self.root[0], self.levels, self.g["quan_blocksize"])
        out[range(len(self.root[1])), range(len(self.root[1]))] = self.root[1]
        return out

    def add(self, stat):
        vt = self.get_vt()
        if self.quantized:
            for _ in range(self.g["rect_t1"]):
                vt = 1.5 * vt - 0.5 * vt @ vt.T @ vt
        w1 = self.g["stat_decay"]
        w2 = 1.0 if w1 == 1.0 else 1.0 - w1
        a = (vt.T @ torch.diag(self.s) @ vt) * w1 + w2 * stat
        v, _ = torch.linalg.qr(a @ vt.T)
        self.s = (v.T @ a @ v).diag()
        self.set_vt(v.T)

    def compute_root(self):
        vt = self.get_vt()
        if self.quantized:
            for _ in range(self.g["rect_t2"]):
                vt = 1.5 * vt - 0.5 * vt @ vt.T @ vt
        rho = self.g["matrix_eps"] * self.s.max()
        self.set_root(vt.T @ torch.diag(1 / (self.s + rho) ** 0.25) @ vt)


def _blocks(n, size):
    return [size] * (n // size) + ([n % size] if n % size else [])


class OfficialShampooAdamW(torch.optim.Optimizer):
    def __init__(self, params, **defaults):
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                grad, st = p.grad, self.state[p]
                dims = [d for d in p.shape if d != 1]
                mat_shape = (dims[0], p.numel() // dims[0]) if len(dims) > 1 else None
                if not st:
                    st["step"], st["active"] = 0, False
                    st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                    if mat_shape:
                        rows = _blocks(mat_shape[0], group["prec_maxorder"])
                        cols = _blocks(mat_shape[1], group["prec_maxorder"])
                        st["factors"] = [(RefFactor(r, group), RefFactor(c, group))
                                         for r in rows for c in cols]
                st["step"] += 1
                t = st["step"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                shampoo_grad = grad
                if mat_shape:
                    G = grad.reshape(mat_shape)
                    size = group["prec_maxorder"]
                    blocks = [(i, j) for i in range(0, mat_shape[0], size)
                              for j in range(0, mat_shape[1], size)]
                    if t % group["stat_compute_steps"] == 0:
                        for (i, j), (fl, fr) in zip(blocks, st["factors"]):
                            gb = G[i:i + size, j:j + size]
                            fl.add(gb @ gb.T)
                            fr.add(gb.T @ gb)
                    if t % group["prec_compute_steps"] == 0:
                        for fl, fr in st["factors"]:
                            fl.compute_root()
                            fr.compute_root()
                        st["active"] = True
                    if t >= group["start_prec_step"] and st["active"]:
                        out = torch.zeros_like(G)
                        for (i, j), (fl, fr) in zip(blocks, st["factors"]):
                            gb = G[i:i + size, j:j + size]
                            out[i:i + size, j:j + size] = fl.get_root() @ gb @ fr.get_root()
                        shampoo_grad = out.reshape(p.shape)
                        shampoo_grad = shampoo_grad * (grad.norm() / (shampoo_grad.norm() + 1e-12))
                b1, b2 = group["betas"]
                st["exp_avg"].mul_(b1).add_(shampoo_grad, alpha=1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(shampoo_grad, shampoo_grad, value=1 - b2)
                denom = st["exp_avg_sq"].sqrt() / math.sqrt(1 - b2 ** t) + group["eps"]
                p.addcdiv_(st["exp_avg"], denom, value=-group["lr"] / (1 - b1 ** t))


GROUPS = [
    # every factor quantized, many blocks (4-D -> (2, 60) -> 15 blocks of 2 x 4), roots every 2
    dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1, stat_compute_steps=1,
         prec_compute_steps=2, prec_maxorder=4, min_lowbit_size=0),
    # accumulated statistics (decay 1), dynamic-tree levels, only the 60 x 60 factor quantized
    # (in blocks of 16), preconditioning from step 5, more rectification steps. Its damping is
    # larger: that factor has rank <= 2 per update, and with matrix_eps 1e-6 the QR of a
    # matrix of condition ~1e8 lets two float64 codes of the same algorithm drift 1e-8 apart
    dict(lr=0.02, weight_decay=0.05, stat_compute_steps=2, prec_compute_steps=3,
         start_prec_step=5, stat_decay=1.0, matrix_eps=1e-2, min_lowbit_size=1000,
         quan_blocksize=16, quan_map="dynamic", rect_t1=2, rect_t2=3),
]


def _factor_states(ours, ref, factor_hp):
    """Our eigenvalues, dequantized eigenvectors and roots against the reference's."""
    for po, pr in zip([p for g in ours.param_groups for p in g["params"]],
                      [p for g in ref.param_groups for p in g["params"]]):
        so, sr = ours.state[po], ref.state[pr]
        for b, pair in enumerate(sr.get("factors", [])):
            for s, f in enumerate(pair):
                key, n = f"{b}_{s}", len(f.s)
                torch.testing.assert_close(so[f"eigvals_{key}"], f.s, rtol=1e-6, atol=1e-12)
                if f.quantized:
                    vt = dequantize(so[f"eigvecs_{key}"], so[f"eigvecs_absmax_{key}"],
                                    f.levels, (n, n), f.g["quan_blocksize"])
                    root = dequantize_offdiag(so[f"root_{key}"], so[f"root_absmax_{key}"],
                                              so[f"root_diag_{key}"], f.levels,
                                              f.g["quan_blocksize"])
                else:
                    vt, root = so[f"eigvecs_{key}"], so[f"root_{key}"]
                torch.testing.assert_close(vt, f.get_vt(), rtol=1e-6, atol=1e-9)
                torch.testing.assert_close(root, f.get_root(), rtol=1e-6, atol=1e-9)
                factor_hp.add((f.quantized, f.g["quan_map"]))


def test_matches_transcription_of_official_shampoo_adamw():
    ref_groups = [dict(zoo.defaults("shampoo4bit"), **g) for g in GROUPS]
    pair = []
    compare_with_reference("shampoo4bit", lambda gs: OfficialShampooAdamW(gs), GROUPS,
                           ref_groups=ref_groups, state_map={"exp_avg": "exp_avg",
                                                             "exp_avg_sq": "exp_avg_sq"},
                           setup=lambda ours, ref: pair.extend([ours, ref]))
    seen = set()
    _factor_states(*pair, seen)
    assert seen == {(True, "linear-2"), (True, "dynamic"), (False, "dynamic")}


# ----------------------------------------------------------------------------- 32-bit mode
def _exact_root(a, eps):
    lam, vec = torch.linalg.eigh(a)
    return (vec * (lam + eps * lam.max()) ** -0.25) @ vec.T


def test_32bit_root_is_the_eigh_inverse_fourth_root_of_the_held_statistics():
    """prec_bits=32 keeps V (orthonormal, from the QR step) and lam in full precision; the
    root equals ``(A + eps max(lam) I)^{-1/4}`` of the statistic it holds,
    ``A = V diag(lam) V^T``, computed independently by float64 eigh."""
    rule = zoo.rule("shampoo4bit", prec_bits=32, stat_compute_steps=1, prec_compute_steps=1)
    gen = torch.Generator().manual_seed(0)
    p, state = torch.zeros(6, 8, dtype=torch.float64), {}
    for t in range(1, 21):
        _, state = rule.update(torch.randn(6, 8, generator=gen, dtype=torch.float64), p, state,
                               rule.hp, t)
    for key in ("0_0", "0_1"):
        v, lam = state[f"eigvecs_{key}"].T, state[f"eigvals_{key}"]
        assert v.dtype == torch.float64  # not quantized
        torch.testing.assert_close(v.T @ v, torch.eye(len(lam), dtype=torch.float64),
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(state[f"root_{key}"], _exact_root((v * lam) @ v.T, 1e-6),
                                   rtol=1e-10, atol=1e-10)


def test_32bit_root_is_exact_when_the_statistics_commute():
    """With gradients whose Gram matrices are all diagonal, the warm-started QR step keeps the
    exact eigenvectors, so the root is that of the true statistics
    ``A_t = b A_{t-1} + (1 - b) G_t G_t^T`` (``A_0 = eps I``) by float64 eigh."""
    rule = zoo.rule("shampoo4bit", prec_bits=32, stat_compute_steps=1, prec_compute_steps=1)
    gen = torch.Generator().manual_seed(0)
    b, eps = 0.95, 1e-6
    a_left = eps * torch.eye(3, dtype=torch.float64)
    a_right = eps * torch.eye(5, dtype=torch.float64)
    p, state = torch.zeros(3, 5, dtype=torch.float64), {}
    for t in range(1, 21):
        g = torch.zeros(3, 5, dtype=torch.float64)
        g[range(3), range(3)] = torch.randn(3, generator=gen, dtype=torch.float64)
        a_left, a_right = b * a_left + (1 - b) * g @ g.T, b * a_right + (1 - b) * g.T @ g
        _, state = rule.update(g, p, state, rule.hp, t)
    torch.testing.assert_close(state["root_0_0"], _exact_root(a_left, eps), rtol=1e-12, atol=0)
    torch.testing.assert_close(state["root_0_1"], _exact_root(a_right, eps), rtol=1e-12, atol=0)


def test_4bit_root_approximates_the_32bit_root_and_rectification_helps():
    """After 30 statistic updates of a 64 x 96 parameter the 4-bit inverse root is within 5%
    of the 32-bit one, and rectifying the dequantized eigenvectors (rect_t2 = 4 Björck steps)
    beats using them as they are (about 11% off)."""
    gen = torch.Generator().manual_seed(3)
    gs = [torch.randn(64, 96, generator=gen, dtype=torch.float64) for _ in range(30)]
    errs = {}
    for bits, rect in ((32, 0), (4, 0), (4, 4)):
        rule = zoo.rule("shampoo4bit", prec_bits=bits, rect_t2=rect, stat_compute_steps=1,
                        prec_compute_steps=30, lr=0.0)
        p, state = torch.zeros(64, 96, dtype=torch.float64), {}
        for t, g in enumerate(gs, 1):
            _, state = rule.update(g, p, state, rule.hp, t)
        if bits == 32:
            exact = state["root_0_0"]
            continue
        levels = quantization_levels("linear-2", 4)
        root = dequantize_offdiag(state["root_0_0"], state["root_absmax_0_0"],
                                  state["root_diag_0_0"], levels, 64)
        errs[rect] = ((root - exact).norm() / exact.norm()).item()
    assert errs[4] < errs[0] and errs[4] < 0.05


# ----------------------------------------------------------------------------- memory
def test_4bit_eigenvector_state_is_an_eighth_of_32bit():
    def state_after_one_step(bits):
        p = torch.zeros(128, 128, requires_grad=True)
        opt = zoo.create("shampoo4bit", [p], prec_bits=bits)
        p.grad = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))
        opt.step()
        return opt.state[p]

    q, full = state_after_one_step(4), state_after_one_step(32)
    for key in ("eigvecs_0_0", "eigvecs_0_1", "root_0_0", "root_0_1"):
        assert q[key].dtype == torch.uint8 and full[key].dtype == torch.float32
        assert q[key].nbytes * 8 == full[key].nbytes == 128 * 128 * 4
    # with the float32 block scales (one per 64 entries) and eigenvalues / diagonal
    small = sum(v.nbytes for k, v in q.items() if k.startswith(("eigvecs", "eigvals", "root")))
    large = sum(v.nbytes for k, v in full.items() if k.startswith(("eigvecs", "eigvals", "root")))
    assert small / large < 0.15


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("hp, match", [
    ({"lr": -0.1}, r"^shampoo4bit: invalid lr=-0.1: must be"),
    ({"betas": (0.9,)}, r"shampoo4bit: invalid betas.*tuple of 2"),
    ({"stat_decay": 1.5}, r"shampoo4bit: invalid stat_decay=1.5: must be in \[0, 1\]"),
    ({"prec_bits": 3}, r"shampoo4bit: invalid prec_bits=3: must be one of \(4, 8, 32\)"),
    ({"quan_map": "nf4"}, r"shampoo4bit: invalid quan_map='nf4'"),
    ({"stat_compute_steps": 0}, r"shampoo4bit: invalid stat_compute_steps=0"),
    ({"matrix_eps": 0.0}, r"shampoo4bit: invalid matrix_eps=0.0: must be > 0"),
])
def test_bad_hyperparameters_are_rejected(hp, match):
    with pytest.raises(ValueError, match=match):
        zoo.rule("shampoo4bit", **hp)
    with pytest.raises(ValueError, match=match):
        zoo.create("shampoo4bit", [{"params": [torch.zeros(2, requires_grad=True)], **hp}])


# ----------------------------------------------------------------------------- convergence
def _run_rule(rule, x, grad_fn, steps):
    state = rule.init(x)
    for t in range(1, steps + 1):
        delta, state = rule.update(grad_fn(x), x, state, rule.hp, t)
        x = x - delta
    return x


def test_converges_on_ill_conditioned_matrix_least_squares():
    """f(W) = 1/2 ||A W B - C||^2 with cond(A), cond(B) = 30: preconditioned, 4-bit factors
    (min_lowbit_size 0), roots every 10 steps."""
    gen = torch.Generator().manual_seed(0)
    qa, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    qb, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    a = qa @ torch.diag(torch.logspace(0, math.log10(30), 8, dtype=torch.float64)) @ qa.T
    b = qb @ torch.diag(torch.logspace(0, math.log10(30), 6, dtype=torch.float64)) @ qb.T
    w_star = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    c = a @ w_star @ b
    loss = lambda w: 0.5 * ((a @ w @ b - c) ** 2).sum()
    grad = lambda w: a.T @ (a @ w @ b - c) @ b.T
    w0 = torch.zeros(8, 6, dtype=torch.float64)
    rule = zoo.rule("shampoo4bit", lr=0.05, stat_compute_steps=1, prec_compute_steps=10,
                    min_lowbit_size=0)
    w = _run_rule(rule, w0, grad, 500)
    assert loss(w) < 1e-3 * loss(w0)


def _rosenbrock_rows_grad(w):
    """Gradient of sum over rows (x, y) of (1 - x)^2 + 100 (y - x^2)^2."""
    x, y = w[:, 0], w[:, 1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], 1)


@pytest.mark.slow
def test_converges_on_rosenbrock():
    """Two Rosenbrock problems as the rows of a 2 x 2 parameter (so the preconditioner
    couples them; 4-bit factors), from zeros to ones within 3e-2."""
    rule = zoo.rule("shampoo4bit", lr=0.01, stat_compute_steps=1, prec_compute_steps=1,
                    min_lowbit_size=0)
    w = _run_rule(rule, torch.zeros(2, 2, dtype=torch.float64), _rosenbrock_rows_grad, 10_000)
    torch.testing.assert_close(w, torch.ones(2, 2, dtype=torch.float64), rtol=3e-2, atol=3e-2)
