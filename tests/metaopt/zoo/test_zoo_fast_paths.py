"""The multi-tensor fast paths (``rule.caps.fused``) equal the rules' pure ``update``.

Each member's in-place path runs a few steps in float64 on tensors of several shapes (some cut
into blocks, some batched, one non-contiguous) next to the per-tensor reference ``p - update``;
parameters and every state entry must agree to 1e-12 relative, for the default
hyperparameters, weight decay and the member's options.
"""
from __future__ import annotations

import pytest
import torch

from metaopt import zoo
from metaopt.zoo import _multi_tensor

# members (by elementwise rule) whose fast path is not a multi-tensor kernel of theirs, and why
NO_FAST_PATH = {
    "sophia": "its Hessian-estimate steps need extra inputs that fused paths do not receive",
}

CASES = {
    "lion": [{}, {"weight_decay": 0.1}, {"cautious": True}],
    "sgd": [{}, {"weight_decay": 0.1}, {"momentum": 0.9, "weight_decay": 0.01},
            {"momentum": 0.9, "nesterov": True}, {"momentum": 0.9, "dampening": 0.3},
            {"momentum": 0.9, "cautious": True}],
    "xgrad_sgd": [{}, {"weight_decay": 0.01, "dampening": 0.1}],
    "adabelief": [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "weight_decouple": False},
                  {"rectify": False, "weight_decay": 0.1},
                  {"degenerated_to_sgd": False, "betas": (0.9, 0.7)}],
    "adabound": [{}, {"amsbound": True, "weight_decay": 0.01, "final_lr": 1e-3}],
    "adadelta": [{}, {"weight_decay": 0.1, "rho": 0.5}],
    "adagrad": [{}, {"lr_decay": 0.1, "initial_accumulator_value": 0.1, "weight_decay": 0.01}],
    "adamax": [{}, {"weight_decay": 0.1}],
    "ademamix": [{}, {"weight_decay": 0.1, "alpha_warmup": 5, "beta3_warmup": 5}],
    "diffgrad": [{}, {"weight_decay": 0.1}],
    "grams": [{}, {"weight_decay": 0.1}],
    "nadam": [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled_weight_decay": True}],
    "optimistic_amsgrad": [{}, {"lr": 1e-2}],
    "radam": [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled_weight_decay": True}],
    "rmsprop": [{}, {"weight_decay": 0.1}, {"centered": True, "momentum": 0.9},
                {"centered": True, "weight_decay": 0.01, "alpha": 0.5}],
}

SHAPES = [(7, 13), (130,), (3, 2, 5, 4), (5,), (64, 3)]


def _tensors(seed: int, steps: int):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    params.append(torch.randn(9, 6, generator=gen, dtype=torch.float64).t())  # non-contiguous
    grads = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
             for _ in range(steps)]
    grads[1][1].zero_()  # a zero gradient (sign 0, the friction's previous gradient)
    return params, grads


def _reference(rule, params, grads, steps):
    params = [p.clone() for p in params]
    states = [rule.init(p) for p in params]
    for t, gs in enumerate(grads, start=1):
        for i, (p, g) in enumerate(zip(params, gs)):
            delta, states[i] = rule.update(g, p, states[i], rule.hp, steps[i] + t - 1)
            params[i] = p - delta
    return params, states


def _fast(rule, params, grads, steps):
    params = [p.clone() for p in params]
    states = [rule.init(p) for p in params]
    for t, gs in enumerate(grads):
        rule.caps.fused(params, gs, states, dict(rule.hp), [s + t for s in steps])
    return params, states


def _assert_equal(got, want):
    scale = max(float(w.abs().max()) for w in want) or 1.0
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12 * scale)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 50 elements: the 130-element and 192-element tensors are cut, the others
    batched, as large models are on a real step."""
    monkeypatch.setattr(_multi_tensor, "BLOCK", 50)


@pytest.mark.parametrize("name,hp", [(n, hp) for n, cases in CASES.items() for hp in cases],
                         ids=lambda x: x if isinstance(x, str) else str(x))
def test_fast_path_equals_update(name, hp, small_blocks):
    rule = zoo.rule(name, **hp)
    assert rule.caps.fused is not None
    params, grads = _tensors(0, steps=8)
    ones = [1] * len(params)
    want_p, want_s = _reference(rule, params, grads, ones)
    got_p, got_s = _fast(rule, params, grads, ones)
    _assert_equal(got_p, want_p)
    for got, want in zip(got_s, want_s):
        assert set(got) == set(want)
        _assert_equal([got[k] for k in sorted(got)], [want[k] for k in sorted(want)])


@pytest.mark.parametrize("name", ["adabelief", "nadam", "sgd"])
def test_tensors_at_different_steps(name, small_blocks):
    """A group whose tensors are at different step counts (a parameter added later)."""
    rule = zoo.rule(name, **({"momentum": 0.9} if name == "sgd" else {}))
    params, grads = _tensors(1, steps=3)
    steps = [1, 4, 1, 2, 7, 1]
    want_p, _ = _reference(rule, params, grads, steps)
    got_p, _ = _fast(rule, params, grads, steps)
    _assert_equal(got_p, want_p)


def test_every_elementwise_member_has_a_fast_path():
    without = sorted(n for n in zoo.names()
                     if zoo.rule(n).caps.elementwise and zoo.rule(n).caps.fused is None)
    assert without == sorted(NO_FAST_PATH)


@pytest.mark.parametrize("name", ["lion", "nadam", "rmsprop"])
def test_optimizer_default_path_matches_loop(name):
    """``zoo.create`` (auto: the fast path on CPU) against ``impl="loop"`` with lr given as
    a 0-d tensor, float32, several groups."""
    torch.manual_seed(0)
    ps = [torch.randn(33, 17, requires_grad=True), torch.randn(17, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    fast = zoo.create(name, [{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.1}],
                      lr=torch.tensor(1e-2))
    loop = zoo.create(name, [{"params": qs[:1]}, {"params": qs[1:], "weight_decay": 0.1}],
                      impl="loop", lr=1e-2)
    for _ in range(4):
        grads = [torch.randn_like(p) for p in ps]
        for p, q, g in zip(ps, qs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fast.step()
        loop.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_auto_prefers_native_kernels_then_c_then_compiling_then_the_foreach_fallback(
        monkeypatch):
    """``impl="auto"``: torch's own fused kernels (adamw) everywhere; for an elementwise rule
    whose fast path is a foreach sequence (lion), the generated C kernel on a CPU with a C
    compiler; without one, the compiled single-pass step where compiling pays (a CPU group of
    at least ``CPU_COMPILE_MIN_NUMEL`` elements, with a C++ compiler) and the foreach path
    otherwise (small CPU groups, devices without a compiled path)."""
    from metaopt import cbuild, fastpath
    from metaopt.fastpath import choose_impl

    lion, adamw = zoo.rule("lion"), zoo.rule("adamw")
    assert lion.caps.fused.devices == frozenset()
    small, big = [torch.zeros(4)], [torch.zeros(64)]
    meta = [torch.zeros(64, device="meta")]
    monkeypatch.setattr(fastpath, "CPU_COMPILE_MIN_NUMEL", 64)
    monkeypatch.setattr(fastpath, "_cxx_available", lambda: True)
    monkeypatch.setattr(cbuild, "compiler", lambda: "/usr/bin/cc")
    assert choose_impl(lion, "auto", small, small, plain=True) == "c"
    assert choose_impl(lion, "auto", big, big, plain=True) == "c"
    sgd = zoo.rule("sgd")  # its foreach path names the CPU, but the C kernel beats it there
    assert choose_impl(sgd, "auto", big, big, plain=True) == "c"
    assert choose_impl(adamw, "auto", big, big, plain=True) == "fused"
    assert choose_impl(lion, "auto", meta, meta, plain=True) == "fused"
    assert choose_impl(lion, "auto", big, big, plain=False) == "loop"  # extra inputs
    monkeypatch.setattr(cbuild, "compiler", lambda: None)
    assert choose_impl(sgd, "auto", big, big, plain=True) == "fused"
    assert choose_impl(lion, "auto", small, small, plain=True) == "fused"
    assert choose_impl(lion, "auto", big, big, plain=True) == "compiled"
    assert choose_impl(lion, "auto", meta, meta, plain=True) == "fused"
    assert choose_impl(adamw, "auto", big, big, plain=True) == "fused"
    monkeypatch.setattr(fastpath, "_cxx_available", lambda: False)
    assert choose_impl(lion, "auto", big, big, plain=True) == "fused"


def test_auto_on_cpu_compiles_only_the_flat_path(monkeypatch):
    """NAdam keeps a scalar momentum product per tensor, so its state is not flat: on CPU
    ``"auto"`` then takes its foreach fallback (a whole-group graph over many tensors would
    compile for minutes), while lion (flat state) takes the compiled flat path. Both equal the
    loop."""
    from metaopt import cbuild, fastpath

    monkeypatch.setattr(cbuild, "compiler", lambda: None)  # no generated C kernels here

    monkeypatch.setattr(fastpath, "CPU_COMPILE_MIN_NUMEL", 1)
    monkeypatch.setattr(fastpath, "_cxx_available", lambda: True)
    calls = []
    monkeypatch.setattr(fastpath.CompiledPaths, "step",
                        lambda self, *a, **k: calls.append(self.rule.name))
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4)] * 20
    ps = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
    qs = [p.detach().clone().requires_grad_() for p in ps]
    for q, p in zip(qs, ps):
        q.grad = p.grad.clone()
    auto, loop = zoo.create("nadam", ps), zoo.create("nadam", qs, impl="loop")
    for _ in range(3):
        auto.step()
        loop.step()
    assert calls == []  # the compiled path never ran
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    lion = zoo.create("lion", [p.detach().clone().requires_grad_() for p in ps])
    for p, q in zip(lion.param_groups[0]["params"], ps):
        p.grad = q.grad.clone()
    lion.step()
    lion.step()
    assert calls == ["lion", "lion"]  # both steps take the compiled flat path


def test_a_failing_cpu_compile_warns_once_and_falls_back(monkeypatch):
    """A machine whose C++ toolchain cannot build Inductor's kernels: the first compiled step
    raises inside ``CompiledPaths.step``; ``"auto"`` warns once, takes the rule's fused path
    for that step and every later one, and the parameters equal the loop's."""
    from metaopt import cbuild, fastpath

    monkeypatch.setattr(cbuild, "compiler", lambda: None)  # no generated C kernels here

    monkeypatch.setattr(fastpath, "CPU_COMPILE_MIN_NUMEL", 1)
    monkeypatch.setattr(fastpath, "_cxx_available", lambda: True)
    attempts = []

    def broken(self, *a, **k):
        attempts.append(1)
        raise RuntimeError("InductorError: CppCompileError: c++ not usable")

    monkeypatch.setattr(fastpath.CompiledPaths, "step", broken)
    gen = torch.Generator().manual_seed(1)
    ps = [torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
          for _ in range(3)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    for p, q in zip(ps, qs):
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        q.grad = p.grad.clone()
    auto, loop = zoo.create("lion", ps), zoo.create("lion", qs, impl="loop")
    with pytest.warns(RuntimeWarning, match="lion: compiling the CPU step failed"):
        auto.step()
    loop.step()
    for _ in range(2):
        auto.step()
        loop.step()
    assert attempts == [1]
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
