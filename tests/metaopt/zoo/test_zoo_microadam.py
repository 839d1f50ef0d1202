"""microadam against a literal transcription of the paper's Algorithm 1 (no public reference
runs on CPU: the official optimizer is CUDA kernels), float64, 25 steps, 1-D/2-D/4-D tensors,
two param groups with weight decay, window wrap-around and several quantization blocks; the
closed forms of ``k_init = 1`` (torch's AdamW for ``t <= m``, Adam restricted to the last ``m``
gradients after); the error-feedback invariant; one-line errors for each hyperparameter.
bf16, state_dict, vmap, torch.func.grad and convergence are in test_zoo_common.py."""
import math

import pytest
import torch

from metaopt import zoo
from metaopt.zoo.equivalence import compare_with_reference
from metaopt.zoo.microadam import add_dequantized, quantize, unpack_nibbles


# --- Algorithm 1, transcribed ------------------------------------------------------------

def _quantize(x, lo, hi):
    """Q(x, delta, Delta) with b = 4 bits."""
    if hi == lo:
        return 0
    u = (hi - lo) / 15
    return math.floor((x - lo) / u + 0.5)


def _dequantize(q, lo, hi):
    """Q^{-1}(q, delta, Delta)."""
    return lo + (hi - lo) / 15 * q


def _pack(codes):
    """Two codes per byte, the even entry in the high nibble (the official kernels' layout)."""
    codes = codes + [0] * (len(codes) % 2)
    return torch.tensor([16 * codes[i] + codes[i + 1] for i in range(0, len(codes), 2)])


class PaperMicroAdam(torch.optim.Optimizer):
    """Algorithm 1 of arXiv 2405.15593 per tensor, in Python floats: error feedback ``e``
    (4-bit codes, min/max per block), Top-K of ``|g + Q^{-1}(e)|``, the window row
    ``(t - 1) mod m`` (the official ring buffer's order), ADAMSTATS over the window with
    weights ``beta^age``, then ``p <- p (1 - lr wd) - lr m / (eps + sqrt(v))``."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, m=10,
                 k_init=0.01, quant_block_size=100_000):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      m=m, k_init=k_init, quant_block_size=quant_block_size))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                self._step_tensor(p, group)

    def _step_tensor(self, p, group):
        b1, b2 = group["betas"]
        d, m = p.numel(), group["m"]
        k = min(d, math.ceil(group["k_init"] * d))
        bs = min(group["quant_block_size"], d)
        n_blocks = math.ceil(d / bs)
        st = self.state[p]
        if not st:
            st.update(t=0, e=[0] * d, lo=[0.0] * n_blocks, hi=[0.0] * n_blocks,
                      G=[([0] * k, [0.0] * k) for _ in range(m)])
        st["t"] += 1
        t = st["t"]
        g = p.grad.reshape(-1).tolist()
        a = [g[j] + _dequantize(st["e"][j], st["lo"][j // bs], st["hi"][j // bs])
             for j in range(d)]
        I = sorted(range(d), key=lambda j: -abs(a[j]))[:k]
        V = [a[j] for j in I]
        for j in I:
            a[j] = 0.0
        st["lo"] = [min(a[b * bs:(b + 1) * bs]) for b in range(n_blocks)]
        st["hi"] = [max(a[b * bs:(b + 1) * bs]) for b in range(n_blocks)]
        st["e"] = [_quantize(a[j], st["lo"][j // bs], st["hi"][j // bs]) for j in range(d)]
        st["G"][(t - 1) % m] = (I, V)
        mt, vt = [0.0] * d, [0.0] * d
        for row in range(min(t, m)):
            age = (t - 1 - row) % m
            for j, v in zip(*st["G"][row]):
                mt[j] += b1**age * v
                vt[j] += b2**age * v * v
        new = p.reshape(-1).tolist()
        for j in range(d):
            m_hat = (1 - b1) / (1 - b1**t) * mt[j]
            v_hat = (1 - b2) / (1 - b2**t) * vt[j]
            new[j] = new[j] * (1 - group["lr"] * group["weight_decay"]) \
                - group["lr"] * m_hat / (group["eps"] + math.sqrt(v_hat))
        p.copy_(torch.tensor(new, dtype=p.dtype).reshape(p.shape))


STATE_MAP = {
    "window_indices": lambda st: torch.tensor([row[0] for row in st["G"]]),
    "window_values": lambda st: torch.tensor([row[1] for row in st["G"]], dtype=torch.float64),
    "ef_codes": lambda st: _pack(st["e"]),
    "ef_min": lambda st: torch.tensor(st["lo"], dtype=torch.float64),
    "ef_max": lambda st: torch.tensor(st["hi"], dtype=torch.float64),
}


def test_microadam_matches_paper_algorithm():
    """d = 7, 30, 120 with blocks of 8 (group 1) and 16 (group 2): k = 1, 3, 12 and 2, 9, 36;
    25 steps wrap both windows (m = 6, 4)."""
    groups = [{"lr": 0.02, "weight_decay": 0.1, "m": 6, "k_init": 0.1, "quant_block_size": 8},
              {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "m": 4, "k_init": 0.3,
               "quant_block_size": 16}]
    compare_with_reference("microadam", lambda g: PaperMicroAdam(g, lr=1e-3), groups,
                           state_map=STATE_MAP)


# --- special cases -----------------------------------------------------------------------

def test_full_density_equals_adamw_within_the_first_window():
    """k_init = 1 keeps every entry, so e stays 0 and, while t <= m, the window holds every
    gradient: the moments are AdamW's (torch.optim.AdamW)."""
    groups = [{"lr": 0.05, "weight_decay": 0.1, "k_init": 1.0, "m": 25},
              {"lr": 0.02, "betas": (0.8, 0.99), "k_init": 1.0, "m": 30}]
    ref_groups = [{"lr": 0.05, "weight_decay": 0.1}, {"lr": 0.02, "betas": (0.8, 0.99),
                                                      "weight_decay": 0.0}]
    compare_with_reference("microadam", torch.optim.AdamW, groups, ref_groups)


def test_full_density_is_adam_over_the_last_m_gradients():
    """k_init = 1: ``m_t = (1 - b1) / (1 - b1^t) sum_{s > t - m} b1^(t - s) g_s`` (and v_t
    likewise with g_s^2), the error feedback stays exactly 0, across window wrap-arounds."""
    lr, (b1, b2), eps, m = 0.1, (0.9, 0.999), 1e-8, 4
    rule = zoo.rule("microadam", lr=lr, k_init=1.0, m=m, quant_block_size=5)
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(13, 3, 4, generator=gen, dtype=torch.float64)
    p = torch.zeros(3, 4, dtype=torch.float64)
    state = rule.init(p)
    for t in range(1, 14):
        delta, state = rule.update(grads[t - 1], p, state, rule.hp, t)
        window = range(max(1, t - m + 1), t + 1)
        m_t = sum(b1 ** (t - s) * grads[s - 1] for s in window) * (1 - b1) / (1 - b1**t)
        v_t = sum(b2 ** (t - s) * grads[s - 1] ** 2 for s in window) * (1 - b2) / (1 - b2**t)
        torch.testing.assert_close(delta, lr * m_t / (eps + v_t.sqrt()), rtol=1e-12, atol=0)
        for key in ("ef_codes", "ef_min", "ef_max"):
            assert not state[key].any(), (t, key)


def _decoded_error(state, block, numel):
    codes = unpack_nibbles(state["ef_codes"], numel)
    zeros = torch.zeros(numel, dtype=state["ef_min"].dtype)
    return add_dequantized(zeros, codes, state["ef_min"], state["ef_max"], block)


def _per_entry(stat, block, numel):
    return stat.repeat_interleave(block)[:numel]


def test_error_feedback_keeps_what_was_not_applied():
    """Each step splits ``a_t = g_t + Q^{-1}(e_t)`` into its Top-K (written to the window)
    and ``Q^{-1}(e_{t+1})`` up to half a quantization step ``u = (Delta - delta) / 15`` of
    each entry's block; the kept entries dominate the rest. Summed over steps: every gradient
    is either in a window row, in the error feedback, or in the accumulated quantization
    error, which stays within the sum of half-steps."""
    block, m = 8, 3
    rule = zoo.rule("microadam", k_init=0.1, m=m, quant_block_size=block)
    gen = torch.Generator().manual_seed(1)
    p = torch.zeros(30, dtype=torch.float64)
    state = rule.init(p)
    applied, seen, bound = torch.zeros(30, dtype=torch.float64), torch.zeros_like(p), 0.0
    error = torch.zeros_like(p)
    for t in range(1, 21):
        g = torch.randn(30, generator=gen, dtype=torch.float64)
        _, state = rule.update(g, p, state, rule.hp, t)
        row = (t - 1) % m
        idx, vals = state["window_indices"][row].long(), state["window_values"][row]
        a = g + error
        torch.testing.assert_close(vals, a[idx], rtol=0, atol=0)
        error = _decoded_error(state, block, 30)
        half_step = _per_entry((state["ef_max"] - state["ef_min"]) / 30, block, 30)
        rest = a.scatter(0, idx, torch.zeros_like(vals))
        assert ((rest - error).abs() <= half_step * (1 + 1e-12)).all()
        assert vals.abs().min() >= rest.abs().max()
        seen, applied, bound = seen + g, applied.index_add(0, idx, vals), bound + half_step
        assert ((seen - applied - error).abs() <= bound * (1 + 1e-12)).all()
    assert (error != 0).any() and (seen - applied - error).abs().max() > 0


def test_first_step_keeps_the_largest_entry_and_rounds_halves_up():
    """One 4-entry tensor, k = 1, one block: the largest |g| is kept; the residual
    [0, -1, 1.5, 14] (the kept entry zeroed) spans [-1, 14], so u = 1 and the codes are
    1, 0, floor(2.5 + 0.5) = 3, 15."""
    p = torch.zeros(4, dtype=torch.float64)
    rule = zoo.rule("microadam", k_init=0.25)
    _, state = rule.update(torch.tensor([-20.0, -1.0, 1.5, 14.0], dtype=torch.float64), p,
                           rule.init(p), rule.hp, 1)
    assert state["window_indices"][0].tolist() == [0]
    assert state["window_values"][0].tolist() == [-20.0]
    assert unpack_nibbles(state["ef_codes"], 4).tolist() == [1, 0, 3, 15]
    assert state["ef_codes"].tolist() == [1 * 16 + 0, 3 * 16 + 15]


def test_blocks_have_their_own_range_and_the_last_may_be_short():
    """Blocks of 3 over 8 entries: ranges [1, 3], [4, 10], [11, 12] (the short last block's
    range is its own), and each block's min and max decode exactly."""
    x = torch.tensor([1.0, 2, 3, 4, 5, 10, 11, 12], dtype=torch.float64)
    codes, lo, hi = quantize(x, 3, torch.float64)
    assert lo.tolist() == [1, 4, 11] and hi.tolist() == [3, 10, 12]
    assert codes.tolist() == [0, 8, 15, 0, 3, 15, 0, 15]
    decoded = add_dequantized(torch.zeros_like(x), codes, lo, hi, 3)
    assert decoded[[0, 2, 3, 5, 6, 7]].tolist() == [1, 3, 4, 10, 11, 12]


# --- bad input (the other common checks: test_zoo_common.py) -----------------------------

@pytest.mark.parametrize("hp, match", [
    ({"lr": -0.1}, r"^microadam: invalid lr=-0.1: must be >= 0"),
    ({"betas": (0.9,)}, r"^microadam: invalid betas=.*tuple of 2"),
    ({"betas": (1.5, 0.9)}, r"^microadam: invalid betas\[0\]=1.5: must be in \[0, 1\)"),
    ({"eps": 0.0}, r"^microadam: invalid eps=0.0: must be > 0"),
    ({"k_init": 0.0}, r"^microadam: invalid k_init=0.0: must be > 0"),
    ({"k_init": 1.5}, r"^microadam: invalid k_init=1.5: must be in \[0, 1\]"),
    ({"m": 0}, r"^microadam: invalid m=0: must be an integer >= 1"),
    ({"quant_block_size": 2.5}, r"^microadam: invalid quant_block_size=2.5: must be an integer"),
])
def test_bad_hyperparameters_are_rejected(hp, match):
    with pytest.raises(ValueError, match=match):
        zoo.rule("microadam", **hp)
