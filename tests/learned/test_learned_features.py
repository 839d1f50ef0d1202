"""MLPLOpt's features against a literal per-coordinate transcription of their definition."""
from __future__ import annotations

import math

import pytest
import torch

from learned.features import (DECAYS, EPS, FEATURES, NORM_EPS, RMS_DECAY, TAUS, init_state,
                              normalized_features, tensor_features, update_state)


def literal(g, p, old):
    """Features of every coordinate with Python floats, one coordinate at a time (row-major over
    the [R, C] view), normalised per tensor."""
    shape = list(g.shape)
    R = shape[0] if len(shape) >= 2 else 1
    C = g.numel() // R
    G = g.reshape(R, C).tolist()
    P = p.reshape(R, C).tolist()
    M = [old[f"m{i + 1}"].reshape(R, C).tolist() for i in range(3)]
    V = old["v"].reshape(R, C).tolist()
    row_old, col_old = old["row"].tolist(), old["col"].tolist()
    row = [RMS_DECAY * row_old[r] + (1 - RMS_DECAY) * sum(G[r][c] ** 2 for c in range(C)) / C
           for r in range(R)]
    col = [RMS_DECAY * col_old[c] + (1 - RMS_DECAY) * sum(G[r][c] ** 2 for r in range(R)) / R
           for c in range(C)]
    row_mean = sum(row) / R
    rows = []
    for r in range(R):
        for c in range(C):
            gi, pi = G[r][c], P[r][c]
            m = [b * M[i][r][c] + (1 - b) * gi for i, b in enumerate(DECAYS)]
            v = RMS_DECAY * V[r][c] + (1 - RMS_DECAY) * gi * gi
            a = 1 / math.sqrt(v + EPS)
            f = row[r] * col[c] / (row_mean + EPS)
            b = 1 / math.sqrt(f + EPS)
            rows.append([gi, pi, *m, math.sqrt(v + EPS), m[0] * a, m[1] * a, m[2] * a, a,
                         b, gi * b, m[0] * b, m[1] * b, m[2] * b,
                         1 / math.sqrt(row[r] + EPS), 1 / math.sqrt(col[c] + EPS)])
    n = len(rows)
    for k in range(len(FEATURES)):
        z = 1 / math.sqrt(sum(x[k] ** 2 for x in rows) / n + NORM_EPS)
        for x in rows:
            x[k] *= z
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2), (7,), ()])
def test_features_match_literal_transcription(shape):
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    p = torch.randn(shape, generator=gen, dtype=torch.float64)
    old = {k: v.uniform_(0.0, 0.5, generator=gen) if k in ("v", "row", "col")
           else v.normal_(generator=gen) for k, v in init_state(p).items()}
    new = update_state(g, old)
    ours = normalized_features(g, p, new)
    assert ours.shape == (max(1, g.numel()), len(FEATURES))
    torch.testing.assert_close(ours, literal(g, p, old), rtol=1e-12, atol=1e-12)


def test_vector_factored_moment_equals_unfactored():
    """For a vector, Adafactor's factored second moment is the second moment itself (up to the
    eps in ``row / (mean(row) + eps)``, a relative 1e-8 / row)."""
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(6, generator=gen, dtype=torch.float64)
    p = torch.randn(6, generator=gen, dtype=torch.float64)
    state = update_state(g, init_state(p))
    f = normalized_features(g, p, state)
    a_col, b_col = FEATURES.index("a"), FEATURES.index("b")
    torch.testing.assert_close(f[:, a_col], f[:, b_col], rtol=1e-4, atol=0.0)
    assert not torch.allclose(f[:, a_col], f[:, FEATURES.index("row")], rtol=1e-2)


def test_time_and_scale_features():
    g, p = torch.full((3,), 2.0), torch.full((3,), 0.5)
    tf = tensor_features(g, p, 7)
    assert torch.allclose(tf, torch.tensor([math.tanh(7 / t - 1) for t in TAUS]))
    both = tensor_features(g, p, torch.tensor(7.0), scales=True)
    assert both[-2].item() == pytest.approx(0.5 * math.log(4 + NORM_EPS))
    assert both[-1].item() == pytest.approx(0.5 * math.log(0.25 + NORM_EPS))
