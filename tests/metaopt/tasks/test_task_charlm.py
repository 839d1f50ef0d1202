"""charlm: the standard-library corpus, the transformer against torch's own attention and
LayerNorm, causality, μP's 1/d attention, vmap over a population."""
import math
import sysconfig

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from metaopt import tasks
from metaopt.tasks.stdlib_text import stdlib_corpus, stdlib_files

SMALL = dict(width=32, depth=2, heads=4, context=16, batch_size=4, corpus_bytes=100_000)


def test_corpus_is_the_stdlib_source_in_sorted_order():
    files = stdlib_files()
    root = sysconfig.get_paths()["stdlib"]
    assert files and all(f.startswith(root) and f.endswith(".py") for f in files)
    assert not any("site-packages" in f for f in files)
    train, val = stdlib_corpus(100_000)
    assert len(train) + len(val) == 100_000 and len(train) == 90_000
    with open(files[0], "rb") as f:
        first = f.read()
    assert (train + val).startswith(first[:50_000])
    assert stdlib_corpus(100_000) == (train, val)


def test_batches_are_shifted_windows_of_the_training_text():
    task = tasks.get("charlm", **SMALL)
    x, y = task.sample_batch(task.generator(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    text = task.train_text.numpy().tobytes()
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        assert bytes(row_x + row_y[-1:]) in text


def _reference_logits(task, params, x):
    """An independent forward: torch's scaled_dot_product_attention and nn.functional ops."""
    d, heads = task.width, task.heads
    h = params[0][x] + params[1][: x.shape[1]]
    for l in range(task.depth):
        g1, b1, wq, wk, wv, wo, g2, b2, w1, c1, w2, c2 = params[2 + 12 * l: 14 + 12 * l]
        a = F.layer_norm(h, (d,), g1, b1)
        q, k, v = (F.linear(a, w).unflatten(-1, (heads, d // heads)).transpose(1, 2)
                   for w in (wq, wk, wv))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=task.attn_scale)
        h = h + F.linear(att.transpose(1, 2).flatten(-2), wo)
        h = h + F.linear(F.relu(F.linear(F.layer_norm(h, (d,), g2, b2), w1, c1)), w2, c2)
    z = F.linear(F.layer_norm(h, (d,), params[-4], params[-3]), params[-2]) * task.readout_mult
    return z + params[-1]


@pytest.mark.parametrize("param", ["sp", "mup"])
def test_forward_matches_torch_attention(param):
    task = tasks.get("charlm", param=param, base_width=16, dtype=torch.float64, **SMALL)
    params = [p + 0.1 * torch.randn_like(p) for p in task.init(task.generator(0))]
    x, y = task.sample_batch(task.generator(1))
    ref = _reference_logits(task, params, x)
    torch.testing.assert_close(task.activations(params, x)["logits"], ref)
    torch.testing.assert_close(task.loss(params, (x, y)),
                               F.cross_entropy(ref.reshape(-1, 256), y.reshape(-1)))


def test_attention_scale_is_one_over_d_under_mup():
    sp = tasks.get("charlm", param="sp", width=256, heads=4, base_width=64, corpus_bytes=100_000)
    mup = tasks.get("charlm", param="mup", width=256, heads=4, base_width=64,
                    corpus_bytes=100_000)
    assert sp.attn_scale == pytest.approx(1 / math.sqrt(64))
    assert mup.attn_scale == pytest.approx(math.sqrt(16) / 64)
    base = tasks.get("charlm", param="mup", width=64, heads=4, base_width=64, corpus_bytes=100_000)
    assert base.attn_scale == pytest.approx(1 / math.sqrt(16)) and base.readout_mult == 1.0
    params = mup.init(mup.generator(0))
    names = [i.name for i in mup.param_info]
    assert not params[names.index("out.w")].any() and not params[names.index("b0.attn.q")].any()


def test_prediction_is_causal():
    task = tasks.get("charlm", dtype=torch.float64, **SMALL)
    params = task.init(task.generator(0))
    x, _ = task.sample_batch(task.generator(1))
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 7) % 256
    z1, z2 = task.activations(params, x)["logits"], task.activations(params, x2)["logits"]
    torch.testing.assert_close(z1[:, :10], z2[:, :10], rtol=0, atol=1e-12)
    assert not torch.allclose(z1[:, 10:], z2[:, 10:])


def test_initial_loss_is_near_uniform_and_evaluate_is_deterministic():
    task = tasks.get("charlm", param="mup", **SMALL)
    params = task.init(task.generator(0))
    e = task.evaluate(params)
    assert e["val_loss"] == pytest.approx(math.log(256), rel=1e-5)  # zero readout: uniform
    assert task.evaluate(params) == e and 0 <= e["accuracy"] <= 1


def test_vmap_over_a_population_of_params_and_batches():
    task = tasks.get("charlm", dtype=torch.float64, **SMALL)
    pop = [task.init(task.generator(s)) for s in range(3)]
    batches = [task.sample_batch(task.generator(10 + s)) for s in range(3)]
    stacked = [torch.stack([p[i] for p in pop]) for i in range(len(pop[0]))]
    xs = torch.stack([b[0] for b in batches])
    ys = torch.stack([b[1] for b in batches])
    losses = vmap(torch.func.grad_and_value(task.loss))(stacked, (xs, ys))
    for s in range(3):
        grads, loss = torch.func.grad_and_value(task.loss)(pop[s], batches[s])
        torch.testing.assert_close(losses[1][s], loss)
        for g_pop, g in zip(losses[0], grads):
            torch.testing.assert_close(g_pop[s], g)
