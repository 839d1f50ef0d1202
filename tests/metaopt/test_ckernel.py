"""The generated C kernels (``metaopt.ckernel``, ``impl="c"``) against the rules' own
``update`` run per tensor by torch (the independent reference), and the path's choices."""
from __future__ import annotations

import math

import pytest
import torch

from metaopt import cbuild, ckernel, zoo
from metaopt.rule import UpdateRule
from metaopt.zoo import registry
from kernel_cache import assert_built_once_then_loaded  # noqa: I001 (tests/support)

pytestmark = pytest.mark.skipif(not cbuild.available(), reason="no C compiler")

SHAPES = [(7, 5), (300,), (1,), (0,), (64, 33), (2, 3, 4)]


def _members() -> list[str]:
    out = []
    for name in registry.names():
        r = registry.rule(name)
        if r.caps.elementwise and r.caps.reduce is None:
            out.append(name)
    return out


def _pair(name: str, hp: dict, dtype, shapes=SHAPES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.randn(s, generator=gen, dtype=dtype, requires_grad=True) for s in shapes]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    return ps, qs, zoo.create(name, ps, impl="c", **hp), zoo.create(name, qs, impl="loop", **hp)


def _grads(ps, qs, gen) -> None:
    for p, q in zip(ps, qs):
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        q.grad = p.grad.clone()


def _closure(opt):
    return (lambda: torch.zeros(())) if opt.rule.caps.predict is not None else None


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-11), (torch.float32, 2e-5)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("name", _members())
@pytest.mark.parametrize("variant", ["defaults", "sample"])
def test_every_elementwise_member_equals_its_update(name, variant, dtype, rtol):
    """Six steps of each member (defaults, and its registry sample of non-default
    hyperparameters) on tensors of several shapes, one empty: parameters and every state
    entry equal the per-tensor loop."""
    hp = dict(registry.entry(name).sample or {}) if variant == "sample" else {}
    hp.pop("cautious", None)  # the cautious mask is not elementwise (tested below)
    rule = registry.rule(name)
    if any(rule.caps.needs({**rule.hp, **hp}, t) for t in range(1, 7)):
        pytest.skip("needs extra inputs on some steps (tested below)")
    ps, qs, c, loop = _pair(name, hp, dtype)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        _grads(ps, qs, gen)
        c.step(_closure(c))
        loop.step(_closure(loop))
    assert c._paths.plans, "the C kernel did not run"
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=rtol, atol=rtol * 1e-2)
        for k, v in loop.state[q].items():
            torch.testing.assert_close(c.state[p][k], v, rtol=rtol, atol=rtol * 1e-2)


def test_sophia_takes_the_kernel_between_its_hessian_steps():
    """Sophia needs Hessian-vector products every ``k`` steps (those steps take the loop);
    the steps between take the kernel. On a quartic loss with ``create_graph`` gradients,
    ten steps equal the loop's."""
    gen = torch.Generator().manual_seed(7)
    ps = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True)
          for s in [(6, 5), (9,)]]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    hp = {"lr": 0.01, "update_period": 3}
    c, loop = zoo.create("sophia", ps, impl="c", **hp), zoo.create("sophia", qs, impl="loop",
                                                                   **hp)
    for _ in range(10):
        for opt, xs in ((c, ps), (loop, qs)):
            opt.zero_grad()
            sum((x ** 4).sum() + (x * 0.3).sum() for x in xs).backward(create_graph=True)
            torch.manual_seed(0)  # the same Hutchinson probes for both
            opt.step()
    assert c._paths.plans
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["xgrad_sgd", "xgrad_adam", "xgrad_adamw"])
def test_weight_prediction_by_the_kernel_equals_the_per_tensor_prediction(name):
    """XGrad takes each gradient at predicted weights: the C path moves a group to its
    prediction in one kernel and restores it by one copy. With a closure whose gradients
    depend on where the weights are, eight steps equal the per-tensor path's."""
    gen = torch.Generator().manual_seed(8)
    ps = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True)
          for s in [(6, 5), (9,), (2, 3, 4)]]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    c = zoo.create(name, ps, impl="c", lr=0.01, weight_decay=0.01)
    loop = zoo.create(name, qs, impl="loop", lr=0.01, weight_decay=0.01)

    def closure_of(opt, xs):
        def closure():
            opt.zero_grad()
            loss = sum((x ** 4).sum() - (x * x.detach().sign()).sum() for x in xs)
            loss.backward()
            return loss
        return closure

    for _ in range(8):
        torch.testing.assert_close(c.step(closure_of(c, ps)), loop.step(closure_of(loop, qs)),
                                   rtol=1e-11, atol=1e-12)
    assert c._paths.predict_plans
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["lion", "adabelief", "nadam", "diffgrad"])
def test_threads_split_the_elements_without_changing_a_bit(name):
    """The elements of all tensors are split among torch's threads; each element's
    arithmetic is the same, so 1 and 2 threads agree bitwise."""
    shapes = [(300, 300), (17,), (200, 201)]  # above the kernel's parallel threshold
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            ps, qs, c, _ = _pair(name, {}, torch.float32, shapes)
            gen = torch.Generator().manual_seed(3)
            for _ in range(3):
                _grads(ps, qs, gen)
                c.step()
            results.append([p.detach().clone() for p in ps])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def _op_rule(fn) -> UpdateRule:
    """A one-state rule whose update is ``fn(g, p, m, hp)`` (its new ``m`` and delta)."""
    return UpdateRule("ops", lambda p: {"m": torch.zeros_like(p)},
                      lambda g, p, s, hp, step: fn(g, p, s["m"], hp, step),
                      hp={"a": 0.3, "b": -1.5})


OPS = {
    "arith": lambda g, p, m, hp, t: (hp["a"] * g - p / 3 + 2.5, {"m": -m + g * g}),
    "pow_sqrt_rsqrt": lambda g, p, m, hp, t: (g.abs().sqrt() + (g * g + 1).rsqrt()
                                              + g.pow(3) + (g.abs() + 1).pow(-0.5),
                                              {"m": m + hp["a"] ** t}),
    "exp_sigmoid": lambda g, p, m, hp, t: (torch.exp(g) - torch.sigmoid(3 * p),
                                           {"m": torch.sigmoid(-g * 40)}),
    "compare_where": lambda g, p, m, hp, t: (torch.where(g > p, g, hp["b"] * p)
                                             + (g <= 0.1).to(g.dtype), {"m": (g != p) * 1.0}),
    "min_max_clamp": lambda g, p, m, hp, t: (torch.maximum(g, p) - torch.minimum(g, m)
                                             + g.clamp(-0.5, 0.7), {"m": p.clamp(min=0.2)}),
    "sign_reciprocal_lerp": lambda g, p, m, hp, t: (torch.sign(g) + (p.abs() + 1).reciprocal(),
                                                    {"m": torch.lerp(m, g, 1 - hp["a"])
                                                     + torch.lerp(g, p, 0.8)}),
    "addcmul_addcdiv": lambda g, p, m, hp, t: (torch.addcdiv(p, g, p.abs() + 1, value=0.5),
                                               {"m": torch.addcmul(m, g, p, value=-0.25)}),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-13), (torch.float32, 2e-6)],
                         ids=["float64", "float32"])
def test_each_operation_equals_torch(op, dtype, rtol):
    """Every operation the generator writes, on values that include negatives, zeros, NaN
    and infinities, equals torch's own operation (NaN where torch gives NaN)."""
    rule = _op_rule(OPS[op])
    gen = torch.Generator().manual_seed(2)
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-30, 88.0,
                            -100.0], dtype=dtype)
    p = torch.cat([torch.randn(50, generator=gen, dtype=dtype), special])
    g = torch.cat([torch.randn(50, generator=gen, dtype=dtype), special.flip(0)])
    m = torch.randn(60, generator=gen, dtype=dtype)
    delta, new = rule.update(g, p, {"m": m}, rule.hp, 3)
    pc, mc = p.clone(), m.clone()
    ckernel.step(rule.update, [pc], [g], [{"m": mc}], rule.hp, 3)
    torch.testing.assert_close(pc, p - delta, rtol=rtol, atol=rtol, equal_nan=True)
    torch.testing.assert_close(mc, new["m"].to(dtype), rtol=rtol, atol=rtol, equal_nan=True)


def test_a_rule_it_cannot_write_is_refused_once_and_auto_takes_another_path():
    """The cautious mask rescales by a mean over the tensor (a reduction): the kernel is
    refused once (remembered), ``"auto"`` takes the rule's other path and equals the loop,
    and an explicit ``impl="c"`` says why in one line."""
    rule = registry.rule("lion")
    p = torch.randn(10)
    sig, _ = ckernel.signature(rule.update, {**rule.hp, "cautious": True}, [rule.init(p)],
                               torch.float32)
    with pytest.raises(ckernel.Unsupported, match="reduces over elements"):
        ckernel.kernel(sig)
    assert sig in ckernel._REFUSED
    ps, qs, _, loop = _pair("lion", {"cautious": True}, torch.float64)
    auto = zoo.create("lion", ps, cautious=True)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        _grads(ps, qs, gen)
        auto.step()
        loop.step()
    assert not auto._paths.plans
    for a, b in zip(ps, qs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    explicit = zoo.create("lion", ps, impl="c", cautious=True)
    with pytest.raises(ValueError, match=r"^lion: impl='c' cannot step this group: .*reduces"):
        explicit.step()


def test_groups_it_cannot_run_fall_back_under_auto_and_fail_clearly_when_asked_for():
    """A bfloat16 group and a non-contiguous gradient: ``"auto"`` steps them by another path
    (equal to the loop); an explicit ``impl="c"`` raises a one-line ValueError."""
    for make, match in ((lambda: torch.randn(6, 4, dtype=torch.bfloat16), "bfloat16"),
                        (lambda: torch.randn(6, 4), "non-contiguous")):
        p = make().requires_grad_()
        q = p.detach().clone().requires_grad_()
        g = torch.randn(4, 6, dtype=p.dtype).t() if match == "non-contiguous" else \
            torch.randn(6, 4, dtype=p.dtype)
        p.grad, q.grad = g, g.clone()
        auto, loop = zoo.create("adabelief", [p]), zoo.create("adabelief", [q], impl="loop")
        auto.step()
        loop.step()
        assert not auto._paths.plans
        torch.testing.assert_close(p, q)
        with pytest.raises(ValueError, match=match):
            zoo.create("adabelief", [p], impl="c").step()
    with pytest.raises(ValueError, match="not elementwise"):
        zoo.create("shampoo", [torch.randn(3, 3, requires_grad=True)], impl="c")


def test_a_zero_hyperparameter_is_part_of_the_kernel_and_schedules_reuse_it():
    """A float that is 0.0 is fixed in the kernel (rules skip a term in Python when its
    factor is zero): SGD with momentum switched from 0 to 0.9 mid-run equals the loop. An lr
    changed at every step (a schedule) is a value, not a new kernel."""
    ps, qs, c, loop = _pair("sgd", {"momentum": 0.0, "lr": 0.1}, torch.float64)
    gen = torch.Generator().manual_seed(4)
    built = ckernel._build.cache_info().currsize
    for i in range(8):
        if i == 4:
            for opt in (c, loop):
                opt.param_groups[0]["momentum"] = 0.9
        for opt in (c, loop):
            opt.param_groups[0]["lr"] = 0.1 / (i + 1)
        _grads(ps, qs, gen)
        c.step()
        loop.step()
    assert ckernel._build.cache_info().currsize - built <= 2  # momentum 0 and 0.9, at most
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_swapped_storage_and_replaced_state_are_followed():
    """Pointers are read at every step: a parameter whose storage is swapped through
    ``p.data`` and a state entry replaced in ``opt.state`` are both updated where they now
    live, as the loop does."""
    ps, qs, c, loop = _pair("adamax", {}, torch.float64, [(5, 4), (3,)])
    gen = torch.Generator().manual_seed(5)
    _grads(ps, qs, gen)
    c.step()
    loop.step()
    ps[0].data = ps[0].data.clone()
    c.state[ps[1]]["exp_avg"] = c.state[ps[1]]["exp_avg"].clone()
    for _ in range(2):
        _grads(ps, qs, gen)
        c.step()
        loop.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_the_kernel_is_built_once_per_machine_and_then_loaded(monkeypatch, tmp_path):
    """A new process (the in-memory caches cleared) loads the library from the disk cache
    without running the compiler; nothing half-written is left beside it."""
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(tmp_path))
    rule = registry.rule("grams")
    sig, _ = ckernel.signature(rule.update, {**rule.hp, "lr": 0.123},
                               [rule.init(torch.zeros(2))], torch.float64)
    assert_built_once_then_loaded(lambda: ckernel.kernel(sig), ckernel._build.cache_clear,
                                  tmp_path, "zoo_step_*.so", monkeypatch)


def test_a_failed_build_warns_once_and_auto_takes_another_path(monkeypatch, tmp_path):
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    ckernel._build.cache_clear()
    try:
        ps, qs, _, loop = _pair("lion", {"lr": 0.01}, torch.float64)
        auto = zoo.create("lion", ps, lr=0.01)
        gen = torch.Generator().manual_seed(6)
        _grads(ps, qs, gen)
        with pytest.warns(RuntimeWarning, match="building the C kernel failed"):
            auto.step()
        loop.step()
        _grads(ps, qs, gen)
        auto.step()  # no second attempt, no second warning
        loop.step()
        assert auto._paths.c_failed and not list(tmp_path.rglob("*.so"))
        for p, q in zip(ps, qs):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    finally:
        ckernel._build.cache_clear()


def test_python_control_flow_on_a_value_is_refused_not_baked_in():
    """An update that branches in Python on a hyperparameter's value cannot be traced with
    fake tensors: it is refused (a kernel specialised on one value would be wrong for the
    next)."""
    def update(g, p, s, hp, step):
        scale = 2.0 if hp["a"] > 0.5 else 1.0
        return scale * g, {"m": s["m"]}

    sig, _ = ckernel.signature(update, {"a": 0.7}, [{"m": torch.zeros(3)}], torch.float32)
    with pytest.raises(ckernel.Unsupported, match="tracing failed"):
        ckernel.kernel(sig)


def test_the_vectorised_exp_is_within_two_ulp_over_the_float_range():
    """``exp`` and ``sigmoid`` in float32 kernels use the generator's own vectorisable
    exponential: against float64 ``torch.exp`` over [-110, 100] it is within 2 units of
    float32 rounding (relative 2^-23) wherever the result is a normal float, inf above
    that range and 0 below it."""
    def update(g, p, s, hp, step):
        return p - torch.exp(g), {"m": torch.sigmoid(g)}

    x = torch.linspace(-110, 100, 200_001)
    p, m = torch.zeros_like(x), torch.zeros_like(x)
    ckernel.step(update, [p], [x], [{"m": m}], {}, 1)
    exact = torch.exp(x.double())
    normal = (exact < torch.finfo(torch.float32).max) & (exact > torch.finfo(torch.float32).tiny)
    assert ((p.double() - exact).abs() / exact)[normal].max() < 2 ** -23
    assert torch.isinf(p[exact > torch.finfo(torch.float32).max]).all()
    assert (p[exact < torch.finfo(torch.float32).tiny] == 0).all()
    assert (m.double() - torch.sigmoid(x.double())).abs().max() < 2 ** -23


def test_a_tensor_subclass_is_refused_before_any_pointer_is_read():
    """A subclass that dispatches its own operations (a DTensor shard under FSDP2: its
    ``numel`` is the global one, its storage the local shard) is never handed to a kernel."""
    from torch.testing._internal.two_tensor import TwoTensor

    p = TwoTensor(torch.zeros(4), torch.zeros(4))
    reason = ckernel.refusal([p], [torch.zeros(4)], [{"m": torch.zeros(4)}], [1])
    assert reason is not None and "subclass" in reason
    assert ckernel.refusal([torch.zeros(4)], [torch.zeros(4)], [{"m": p}], [1]) is not None


def test_a_compiler_without_openmp_still_gets_a_one_thread_kernel(monkeypatch, tmp_path):
    """A compiler that rejects ``-fopenmp`` (Apple's clang) builds the kernel without it:
    one thread, the same values."""
    import shutil
    import stat

    cc = shutil.which("cc") or shutil.which("gcc")
    wrapper = tmp_path / "cc-no-openmp"
    wrapper.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -fopenmp ] && "
                       "{ echo 'unsupported option -fopenmp' >&2; exit 1; }; done\n"
                       f"exec {cc} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(wrapper))
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(tmp_path / "cache"))
    cbuild._which.cache_clear()
    ckernel._build.cache_clear()
    try:
        ps, qs, c, loop = _pair("adabelief", {}, torch.float64, [(300, 300), (7,)])
        gen = torch.Generator().manual_seed(9)
        for _ in range(3):
            _grads(ps, qs, gen)
            c.step()
            loop.step()
        assert c._paths.plans
        for p, q in zip(ps, qs):
            torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)
        assert len(list((tmp_path / "cache").glob("zoo_step_*.so"))) == 1
    finally:
        ckernel._build.cache_clear()
        cbuild._which.cache_clear()
