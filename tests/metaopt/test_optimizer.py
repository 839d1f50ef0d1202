"""RuleOptimizer, the torch.optim adapter: groups, closures, state_dict, schedulers, fast paths."""
import io

import pytest
import torch

from metaopt import Capabilities, RuleOptimizer, zoo

# gradients built with backward(create_graph=True) are differentiated on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")


def _model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)]
    return torch.nn.Sequential(*layers).to(dtype)


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 6, generator=g, dtype=dtype)
    return x, torch.randn(16, 2, generator=g, dtype=dtype)


def _loss(model, x, y):
    return ((model(x) - y) ** 2).mean()


def _train(opt, model, steps, create_graph=False, sched=None, seed0=0):
    x, y = _data(next(model.parameters()).dtype)
    losses = []
    for t in range(steps):
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward(create_graph=create_graph)
        torch.manual_seed(seed0 + t)
        opt.step()
        if create_graph:
            for p in model.parameters():
                p.grad = None
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses


def test_matches_torch_adamw_with_param_groups_and_scheduler():
    """Two groups with their own lr / weight decay and a StepLR schedule: the loop and fused
    paths equal torch.optim.AdamW (foreach=False) to float64 rounding."""
    ref, ours_loop, ours_fused = _model(), _model(), _model()

    def groups(m):
        return [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.03,
                                                "weight_decay": 0.2}]

    opt_ref = torch.optim.AdamW(groups(ref), lr=0.01, weight_decay=0.05, foreach=False)
    opts = [zoo.create("adamw", groups(m), impl=impl, lr=0.01, weight_decay=0.05)
            for m, impl in ((ours_loop, "loop"), (ours_fused, "fused"))]
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5) for o in [opt_ref, *opts]]
    _train(opt_ref, ref, 20, sched=scheds[0])
    _train(opts[0], ours_loop, 20, sched=scheds[1])
    _train(opts[1], ours_fused, 20, sched=scheds[2])
    assert opts[0].param_groups[1]["lr"] == pytest.approx(0.03 * 0.5 ** 4)
    for a, b, c in zip(ref.parameters(), ours_loop.parameters(), ours_fused.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-14)


def test_zero_grad_and_params_without_grad_are_skipped():
    model = _model()
    frozen = model[0].weight.detach().clone()
    opt = zoo.create("adamw", model.parameters(), lr=0.1)
    x, y = _data()
    _loss(model, x, y).backward()
    model[0].weight.grad = None
    opt.step()
    assert torch.equal(model[0].weight.detach(), frozen)
    assert model[0].weight not in opt.state
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_closure_is_called_and_its_loss_returned():
    model = _model()
    opt = zoo.create("sgd", model.parameters(), lr=0.1)
    x, y = _data()
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    first = opt.step(closure)
    second = opt.step(closure)
    assert len(calls) == 2 and second.item() < first.item()


@pytest.mark.parametrize("name,hp,create_graph", [
    ("adamw", {}, False),
    ("sgd", {"momentum": 0.9, "nesterov": True}, False),
    ("sophia", {"lr": 0.01, "update_period": 2}, True),
    ("shampoo", {"precondition_frequency": 3, "momentum": 0.5}, False),
    ("soap", {"precondition_frequency": 3}, False),
    ("psgd", {"update_probability": 0.5}, False),
])
def test_state_dict_round_trip_resumes_bit_identically(name, hp, create_graph):
    """10 steps, save (torch.save / weights_only load), a fresh model + optimizer resume for 10
    more: bit-identical to 20 uninterrupted steps (random probes reseeded per step)."""
    full = _model()
    opt = zoo.create(name, full.parameters(), **hp)
    _train(opt, full, 20, create_graph)

    first = _model()
    opt1 = zoo.create(name, first.parameters(), **hp)
    _train(opt1, first, 10, create_graph)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = _model(seed=5)
    resumed.load_state_dict(ckpt["model"])
    opt2 = zoo.create(name, resumed.parameters(), **hp)
    opt2.load_state_dict(ckpt["opt"])
    _train(opt2, resumed, 10, create_graph, seed0=10)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_state_keeps_its_dtype_on_load_and_bf16_params_stay_bf16():
    """PSGD keeps float32 factors for a bf16 parameter; torch's loader would cast them."""
    p = torch.nn.Parameter(torch.randn(4, 3).to(torch.bfloat16))
    opt = zoo.create("psgd", [p], lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        (p.float() ** 2).sum().backward()
        opt.step()
    assert p.dtype == torch.bfloat16 and opt.state[p]["q_0"].dtype == torch.float32
    opt2 = zoo.create("psgd", [p], lr=0.01)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[p]["q_0"].dtype == torch.float32
    assert torch.equal(opt2.state[p]["q_0"], opt.state[p]["q_0"])


def test_sophia_hvp_across_two_groups():
    """Hessian-vector products are taken before any group moves (an in-place update of the
    first group would otherwise break the second group's double backward)."""
    model = _model()
    opt = zoo.create("sophia", [{"params": model[0].parameters()},
                                {"params": model[2].parameters(), "lr": 1e-3}], lr=1e-2)
    losses = _train(opt, model, 12, create_graph=True)
    assert losses[-1] < losses[0]


def test_sparse_gradient_is_an_error():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = zoo.create("adam", emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_unknown_or_invalid_hyperparameters_are_value_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="unknown hyperparameter.*momentum"):
        zoo.create("adam", params, momentum=0.9)
    with pytest.raises(ValueError, match="unknown hyperparameter.*beta3"):
        zoo.create("adam", [{"params": params, "beta3": 1.0}])
    with pytest.raises(ValueError, match="lr"):
        zoo.create("soap", params, lr=-1.0)
    with pytest.raises(ValueError, match="impl"):
        RuleOptimizer(params, zoo.rule("adam"), impl="fast")
    with pytest.raises(ValueError, match="precondition_frequency"):
        zoo.create("shampoo", params, precondition_frequency=0)


def test_needs_loss_without_closure_is_an_error():
    from metaopt.rule import UpdateRule

    rule = UpdateRule("polyak", lambda p: {}, lambda g, p, s, hp, t, loss: (loss * g, {}),
                      hp={"lr": 1.0}, caps=Capabilities(needs=lambda hp, t: frozenset({"loss"})))
    p = torch.nn.Parameter(torch.ones(2))
    opt = RuleOptimizer([p], rule)
    (p * p).sum().backward()
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    opt.step(lambda: (p.detach() * p.detach()).sum())
    torch.testing.assert_close(p.detach(), torch.ones(2) - 2.0 * 2.0)


@pytest.mark.slow
@pytest.mark.parametrize("name,hp", [("adamw", {}), ("sgd", {"momentum": 0.9}),
                                     ("lion", {"weight_decay": 0.1}),
                                     ("sophia", {"update_period": 4})])
def test_compiled_equals_loop_and_schedules_do_not_recompile(monkeypatch, name, hp):
    """impl='compiled' (flat 1-D kernels: a large tensor in place, small ones gathered into
    chunks whose state lives in flat buffers) equals the loop path under a changing learning
    rate, state included, and the lr changes do not trigger recompilation."""
    import torch._dynamo

    from metaopt import fastpath

    monkeypatch.setattr(fastpath, "FLAT_BIG_NUMEL", 20)  # the 5x6 weight goes in place
    monkeypatch.setattr(fastpath, "FLAT_CHUNK_NUMEL", 16)  # the rest in three chunks
    torch._dynamo.reset()
    fastpath._COMPILED.clear()
    loop_m, comp_m = _model(dtype=torch.float32), _model(dtype=torch.float32)
    opts = [zoo.create(name, m.parameters(), impl=impl, lr=0.01, **hp)
            for m, impl in ((loop_m, "loop"), (comp_m, "compiled"))]
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8) for o in opts]
    hvp = name == "sophia"  # Hessian steps (1 and 5) take the loop, the others the graph
    _train(opts[0], loop_m, 6, hvp, sched=scheds[0])
    _train(opts[1], comp_m, 2, hvp, sched=scheds[1])
    with torch._dynamo.config.patch(error_on_recompile=True):
        _train(opts[1], comp_m, 4, hvp, sched=scheds[1], seed0=2)
    layout = next(iter(opts[1]._paths.flat.values()))
    assert layout.big == [0] and len(layout.chunks) == 3
    for a, b in zip(loop_m.parameters(), comp_m.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        for k, v in opts[0].state[a].items():
            torch.testing.assert_close(opts[1].state[b][k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_state_dict_round_trip_is_bit_identical(monkeypatch):
    from metaopt import fastpath

    monkeypatch.setattr(fastpath, "FLAT_BIG_NUMEL", 20)
    full = _model(dtype=torch.float32)
    opt = zoo.create("adamw", full.parameters(), impl="compiled")
    _train(opt, full, 8)
    first = _model(dtype=torch.float32)
    opt1 = zoo.create("adamw", first.parameters(), impl="compiled")
    _train(opt1, first, 4)
    buf = io.BytesIO()
    torch.save(opt1.state_dict(), buf)
    buf.seek(0)
    opt1.load_state_dict(torch.load(buf, weights_only=True))
    _train(opt1, first, 4, seed0=4)
    for a, b in zip(full.parameters(), first.parameters()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_compiled_follows_loop_when_the_tensors_with_gradients_change(monkeypatch):
    """A step where the first tensor has no gradient rebuilds the flat layout from the current
    state; the next full step must not reuse the stale buffers."""
    from metaopt import fastpath

    monkeypatch.setattr(fastpath, "FLAT_BIG_NUMEL", 20)
    models = [_model(dtype=torch.float32), _model(dtype=torch.float32)]
    opts = [zoo.create("lion", m.parameters(), impl=impl, lr=0.01)
            for m, impl in zip(models, ("loop", "compiled"))]
    x, y = _data(torch.float32)
    for t in range(6):
        for m, o in zip(models, opts):
            o.zero_grad()
            _loss(m, x, y).backward()
            if t in (2, 3):
                m[0].weight.grad = None
            o.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opts[1].state[b]["exp_avg"], opts[0].state[a]["exp_avg"],
                                   rtol=1e-5, atol=1e-6)


def test_predict_moves_weights_for_the_closure_and_back_for_the_update():
    """A rule with ``predict`` (gradient at ``p - ahead * last delta``): the closure sees the
    predicted weights (the weights themselves before any state exists), the update moves the
    original weights, and a missing closure is an error."""
    from metaopt.rule import UpdateRule
    rule = UpdateRule(
        "ahead_sgd", init=lambda p: {"last": torch.zeros_like(p)}, hp={"lr": 0.5, "ahead": 1.0},
        update=lambda g, p, s, hp, step: (hp["lr"] * g, {"last": hp["lr"] * g}),
        caps=Capabilities(predict=lambda p, s, hp, step: p - hp["ahead"] * s["last"]))
    a = torch.ones(2, dtype=torch.float64, requires_grad=True)
    b = torch.full((1,), 2.0, dtype=torch.float64, requires_grad=True)
    opt = RuleOptimizer([{"params": [a]}, {"params": [b], "ahead": 0.0}], rule)
    seen = []

    def closure():  # f = (|a|^2 + |b|^2) / 2, gradient = the weights
        opt.zero_grad()
        seen.append((a.detach().clone(), b.detach().clone()))
        loss = 0.5 * ((a * a).sum() + (b * b).sum())
        loss.backward()
        return loss

    opt.step(closure)  # no state yet: gradients at (1, 1), (2); a -> 0.5, b -> 1
    assert seen[0][0].tolist() == [1.0, 1.0] and seen[0][1].tolist() == [2.0]
    opt.step(closure)  # a's gradient at 0.5 - 0.5 = 0; b (ahead 0) at 1
    assert seen[1][0].tolist() == [0.0, 0.0] and seen[1][1].tolist() == [1.0]
    assert a.detach().tolist() == [0.5, 0.5] and b.detach().tolist() == [0.5]
    with pytest.raises(RuntimeError, match=r"ahead_sgd evaluates gradients at predicted weights"):
        opt.step()
