"""metaopt.hoist: scalar subexpressions of a compiled CPU step are computed once, not per
vector, and the values are unchanged."""
import shutil

import pytest
import torch
from torch._inductor.utils import run_and_get_code

from metaopt.hoist import compile_options, realize

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="Inductor's CPU backend needs a C++ compiler")


def adam_like(p, g, m, v, lr, b1, b2, eps, step):
    """An Adam step with its bias corrections computed from 0-d tensors (as the compiled
    fast path passes hyperparameters)."""
    m.copy_(b1 * m + (1 - b1) * g)
    v.copy_(b2 * v + (1 - b2) * g * g)
    p.copy_(p - lr / (1 - b1 ** step) * m / (torch.sqrt(v / (1 - b2 ** step)) + eps))


def _inputs(seed=0, n=1000):
    gen = torch.Generator().manual_seed(seed)
    p, g, m = (torch.randn(n, generator=gen) for _ in range(3))
    v = torch.rand(n, generator=gen)
    hp = [torch.tensor(x) for x in (1e-3, 0.9, 0.999, 1e-8, 7.0)]
    return [p, g, m, v], hp


def test_the_elementwise_loop_no_longer_computes_pow():
    tensors, hp = _inputs()
    compiled = torch.compile(adam_like, dynamic=True, options=compile_options())
    _, codes = run_and_get_code(compiled, *tensors, *hp)
    code = "\n".join(codes)
    assert "torch.ops.metaopt.realize" in code
    kernels = code.split("extern \"C\"")[1:]
    vector_loops = [k for k in kernels if "Vectorized<float>::loadu" in k]
    assert vector_loops and all("std::pow" not in k for k in vector_loops)
    assert any("std::pow" in k for k in kernels)  # still computed, once, in a scalar kernel


def test_values_equal_the_eager_step():
    tensors, hp = _inputs(1)
    expect = [t.clone() for t in tensors]
    for _ in range(3):
        adam_like(*expect, *hp)
    compiled = torch.compile(adam_like, dynamic=True, options=compile_options())
    for _ in range(3):
        compiled(*tensors, *hp)
    for got, want in zip(tensors, expect):
        torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-7)


def test_realize_copies():
    xs = [torch.tensor(1.5), torch.tensor(-2.0)]
    out = realize(xs)
    assert [float(x) for x in out] == [1.5, -2.0]
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(out, xs))


def normalised_step(p, g, lr, step):
    """A step scaled by a 0-d hyperparameter expression (``lr / (1 - 0.9^t)``) and then
    normalised by a reduction of the scaled update (its RMS): the second scalar depends on
    elements that read the first, so the two cannot be realized by one call."""
    u = g * (lr / (1 - 0.9 ** step))
    rms = u.square().mean().sqrt() + 1e-8
    p.copy_(p - u / rms)


def test_scalars_from_reductions_and_from_hyperparameters_compile_and_agree():
    gen = torch.Generator().manual_seed(2)
    p, g = torch.randn(1000, generator=gen), torch.randn(1000, generator=gen)
    hp = (torch.tensor(1e-2), torch.tensor(3.0))
    want = p.clone()
    normalised_step(want, g, *hp)
    compiled = torch.compile(normalised_step, dynamic=True, options=compile_options())
    got = p.clone()
    _, codes = run_and_get_code(compiled, got, g, *hp)
    assert "torch.ops.metaopt.realize" in "\n".join(codes)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-7)
