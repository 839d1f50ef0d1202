"""The fused MLPLOpt step (learned/fused_mlp.py) equals the eager MLPLOpt.update: eagerly in
float64 to rounding, over several steps, every tensor shape and option; compiled (slow) to
float32 rounding through LearnedOptimizer(impl="fused")."""
from __future__ import annotations

import pytest
import torch

from learned import LearnedOptimizer, MLPLOpt, fused_mlp_cpu
from learned.fused_mlp import fused_rule_step
from metaopt import cbuild
from metaopt.tasks import ParamInfo

SHAPES = [(), (7,), (5, 6), (2, 3, 4, 5)]
INFOS = [None, ParamInfo("b", "bias", 1, 7), ParamInfo("w", "hidden", 6, 5),
         ParamInfo("k", "hidden", 60, 2)]


def _run_both(lopt, steps=4, dtype=torch.float64, compile=False):
    theta = {k: v.to(dtype) for k, v in lopt.init_theta(torch.Generator().manual_seed(0)).items()}
    gen = torch.Generator().manual_seed(1)
    ps = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    eager_p, eager_s = list(ps), [lopt.init(p) for p in ps]
    fused_p = [p.clone() for p in ps]
    fused_s = [lopt.init(p) for p in ps]
    fused = fused_rule_step(lopt, theta, compile=compile)
    for t in range(1, steps + 1):
        gs = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
        for i, (g, info) in enumerate(zip(gs, INFOS)):
            delta, eager_s[i] = lopt.update(theta, g, eager_p[i], eager_s[i], t, info)
            eager_p[i] = eager_p[i] - delta
            fused([fused_p[i]], [g], [fused_s[i]], {"info": info}, [t])
    return eager_p, eager_s, fused_p, fused_s


@pytest.mark.parametrize("kw", [{}, {"layers": 3, "hidden": 5}, {"scale_features": True},
                                {"mup": False, "step_mult": 0.3, "exp_mult": 0.5},
                                {"adam_feature": True, "taus": (2.0, 50.0)},
                                {"adam_feature": True, "adam_scale": True}])
def test_fused_formulation_equals_the_eager_update(kw):
    lopt = MLPLOpt(**{"hidden": 6, "step_mult": 0.1, "base_fan_in": 3, **kw})
    eager_p, eager_s, fused_p, fused_s = _run_both(lopt)
    for a, b in zip(eager_p, fused_p):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    for sa, sb in zip(eager_s, fused_s):
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-12, atol=1e-14)


def test_the_steps_are_not_trivial():
    """The comparison above is not between two no-ops: parameters move by O(step_mult)."""
    lopt = MLPLOpt(hidden=6, step_mult=0.1)
    _, _, fused_p, _ = _run_both(lopt, steps=1)
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    moved = [(a - b).abs().max().item() for a, b in zip(fused_p, start)]
    assert min(moved) > 1e-3, moved


@pytest.mark.slow
@pytest.mark.parametrize("path", ["c", "inductor"])
def test_compiled_fused_optimizer_equals_the_loop(path, monkeypatch):
    """On a CPU ``impl="fused"`` runs the C step (learned/fused_mlp_cpu.py) where a C compiler
    exists, else the Inductor-compiled one (the path GPUs take): both equal the loop."""
    if path == "inductor":
        monkeypatch.setattr(cbuild, "compiler", lambda: None)
    elif not fused_mlp_cpu.available():
        pytest.skip("no C compiler")
    lopt = MLPLOpt(hidden=4, step_mult=0.05)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(2)
    init = [torch.randn(s, generator=gen) for s in [(6, 5), (6, 5), (4,)]]
    runs = []
    for impl in ("loop", "fused"):
        ps = [p.clone().requires_grad_() for p in init]
        opt = LearnedOptimizer(ps, lopt, theta, impl=impl)
        for k in range(3):
            opt.zero_grad()
            sum(((p - 0.3 * k) ** 2 * (i + 1)).sum() for i, p in enumerate(ps)).backward()
            opt.step()
        runs.append((ps, opt))
    (pl, ol), (pf, of) = runs
    for a, b in zip(pl, pf):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
        for k in ol.state[a]:
            torch.testing.assert_close(of.state[b][k], ol.state[a][k], rtol=1e-5, atol=1e-6)


def test_compile_is_announced_once_per_kernel_family(monkeypatch, capsys):
    """The first step of each kernel family (rank, sides of 1) says what it compiles, how
    long that may take and where it is cached, and then how long it took; other shapes of
    a family reuse its dynamic-shape graph silently (``torch.compile`` stubbed: the message
    logic, not Inductor, is under test)."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    monkeypatch.setattr(cbuild, "compiler", lambda: None)  # the Inductor path
    lopt = MLPLOpt(hidden=4, step_mult=0.1)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    fused = fused_rule_step(lopt, theta, compile=True)
    ps = [torch.randn(5, 6), torch.randn(7, 3), torch.randn(4), torch.randn(9)]
    for _ in range(2):
        fused(ps, [torch.randn_like(p) for p in ps], [lopt.init(p) for p in ps], {}, [1] * 4)
    err = capsys.readouterr().err
    assert err.count("compiling the fused MLPLOpt step") == 2, err
    assert "2-d torch.float32" in err and "1-d torch.float32" in err
    assert err.count("compiled in") == 2
