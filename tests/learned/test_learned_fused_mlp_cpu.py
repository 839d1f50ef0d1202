"""The C step of learned/fused_mlp_cpu.py equals the eager MLPLOpt.update: in float64 to
rounding (its sums are taken in another order), over several steps, every tensor shape and
option; in float32 to float32 rounding; with 1 and 2 threads; built once and then loaded from
the on-disk cache."""
from __future__ import annotations

import pytest
import torch

from learned import MLPLOpt, fused_mlp_cpu
from learned.fused_mlp import fused_rule_step, theta_weights
from metaopt import cbuild
from metaopt.tasks import ParamInfo
from kernel_cache import assert_built_once_then_loaded  # noqa: I001 (tests/support)

pytestmark = pytest.mark.skipif(not fused_mlp_cpu.available(), reason="no C compiler")

SHAPES = [(), (7,), (5, 6), (2, 3, 4, 5), (3, 40)]  # (3, 40): full blocks of 16 and a tail
INFOS = [None, ParamInfo("b", "bias", 1, 7), ParamInfo("w", "hidden", 6, 5),
         ParamInfo("k", "hidden", 60, 2), ParamInfo("o", "output", 40, 3)]
OPTIONS = [{}, {"layers": 3, "hidden": 5}, {"layers": 1}, {"scale_features": True},
           {"mup": False, "step_mult": 0.3, "exp_mult": 0.5},
           {"adam_feature": True, "taus": (2.0, 50.0)},
           {"adam_feature": True, "adam_scale": True}]


@pytest.fixture(autouse=True)
def _kernel_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(tmp_path_factory.getbasetemp() / "kernels"))


def _run_both(lopt, dtype, steps=4, threads=1):
    theta = {k: v.to(dtype) for k, v in lopt.init_theta(torch.Generator().manual_seed(0)).items()}
    gen = torch.Generator().manual_seed(1)
    ps = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    eager_p, eager_s = list(ps), [lopt.init(p) for p in ps]
    c_p, c_s = [p.clone() for p in ps], [lopt.init(p) for p in ps]
    weights = theta_weights(lopt, theta, dtype)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for t in range(1, steps + 1):
            gs = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
            for i, (g, info) in enumerate(zip(gs, INFOS)):
                delta, eager_s[i] = lopt.update(theta, g, eager_p[i], eager_s[i], t, info)
                eager_p[i] = eager_p[i] - delta
                fused_mlp_cpu.tensor_step(lopt, weights, g, c_p[i], c_s[i], t,
                                          lopt.step_mult * lopt.scale(info))
    finally:
        torch.set_num_threads(old)
    return eager_p, eager_s, c_p, c_s, ps


@pytest.mark.parametrize("kw", OPTIONS)
def test_c_step_equals_the_eager_update_in_float64(kw):
    lopt = MLPLOpt(**{"hidden": 6, "step_mult": 0.1, "base_fan_in": 3, **kw})
    eager_p, eager_s, c_p, c_s, start = _run_both(lopt, torch.float64)
    for a, b, s0 in zip(eager_p, c_p, start):
        assert not torch.equal(a, s0)  # the steps moved the parameters
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    for sa, sb in zip(eager_s, c_s):
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("threads", [1, 2])
def test_c_step_equals_the_eager_update_in_float32(threads):
    lopt = MLPLOpt(hidden=16, step_mult=0.01, base_fan_in=4, adam_feature=True, adam_scale=True)
    eager_p, eager_s, c_p, c_s, _ = _run_both(lopt, torch.float32, threads=threads)
    for a, b in zip(eager_p, c_p):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for sa, sb in zip(eager_s, c_s):
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-5, atol=1e-7)


def test_fused_rule_step_runs_the_c_step_on_cpu(monkeypatch):
    """``fused_rule_step(compile=True)`` routes a CPU float tensor to the C step (Inductor is
    never called) and a bf16 tensor elsewhere."""
    lopt = MLPLOpt(hidden=4, step_mult=0.05)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    calls = []
    real = fused_mlp_cpu.tensor_step
    monkeypatch.setattr(fused_mlp_cpu, "tensor_step", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    fused = fused_rule_step(lopt, theta, compile=True)
    p, g = torch.randn(6, 5), torch.randn(6, 5)
    s = lopt.init(p)
    fused([p], [g], [s], {"info": None}, [1])
    assert calls == [1]
    pb = torch.randn(6, 5, dtype=torch.bfloat16)
    fused([pb], [pb.clone()], [lopt.init(pb)], {"info": None}, [1])
    assert calls == [1]


def test_kernel_is_built_once_then_loaded_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(tmp_path))
    assert_built_once_then_loaded(lambda: fused_mlp_cpu.kernels(torch.float32, 3, 2, 17),
                                  fused_mlp_cpu.kernels.cache_clear, tmp_path, "lo_mlp_*.so",
                                  monkeypatch)


def test_without_a_compiler_the_c_step_is_not_used(monkeypatch):
    monkeypatch.setattr(cbuild, "compiler", lambda: None)
    assert not fused_mlp_cpu.supports(torch.zeros(3), torch.zeros(3))


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    """A compiler error leaves nothing in the cache and the step takes the other path."""
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    fused_mlp_cpu.kernels.cache_clear()
    fused_mlp_cpu.kernels_or_none.cache_clear()
    lopt = MLPLOpt(hidden=2, step_mult=0.05)
    weights = theta_weights(lopt, lopt.init_theta(torch.Generator().manual_seed(0)), torch.float32)
    p, g = torch.randn(3, 4), torch.randn(3, 4)
    s, p0 = lopt.init(p), p.clone()
    with pytest.warns(RuntimeWarning, match="C kernels unavailable"):
        assert not fused_mlp_cpu.tensor_step(lopt, weights, g, p, s, 1, 0.05)
    assert torch.equal(p, p0) and not list(tmp_path.rglob("*.so"))
    fused_mlp_cpu.kernels.cache_clear()
    fused_mlp_cpu.kernels_or_none.cache_clear()


def test_learned_optimizer_auto_takes_the_c_step_and_equals_the_loop(monkeypatch):
    """``LearnedOptimizer``'s default ``impl="auto"`` runs the C step on a CPU (the fused
    capability names the CPU among its devices) and matches ``impl="loop"``."""
    from learned import LearnedOptimizer

    lopt = MLPLOpt(hidden=4, step_mult=0.05, adam_feature=True, adam_scale=True)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    calls = []
    real = fused_mlp_cpu.tensor_step
    monkeypatch.setattr(fused_mlp_cpu, "tensor_step", lambda *a: calls.append(1) or real(*a))
    init = [torch.randn(s, generator=torch.Generator().manual_seed(2)) for s in [(6, 5), (4,)]]
    runs = []
    for impl in ("loop", "auto"):
        ps = [p.clone().requires_grad_() for p in init]
        opt = LearnedOptimizer(ps, lopt, theta, impl=impl, lr=0.5, weight_decay=0.1)
        for k in range(3):
            opt.zero_grad()
            sum(((p - 0.3 * k) ** 2).sum() for p in ps).backward()
            opt.step()
        runs.append(ps)
    assert len(calls) == 6  # auto: 2 tensors x 3 steps; loop: none
    for a, b, p0 in zip(*runs, init):
        assert (a.detach() - p0).abs().max() > 1e-3  # the steps moved the parameters
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
