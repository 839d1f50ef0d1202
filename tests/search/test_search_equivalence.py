"""Programs written in the language equal the zoo's (and public) optimizers step for step."""
import copy

import pytest
import torch

import search
from metaopt import zoo

SGD = "def train(w, g, lr):\n    update = g * lr\n    return update\n"
MOMENTUM = """def train(w, g, m, lr):
    m = m * 0.9 + g
    update = m * lr
    return update, m
"""
ADAM = """def train(w, g, m, v, lr, t):
    m = interp(g, m, 0.9)
    v = interp(square(g), v, 0.999)
    mhat = m / (1 - power(0.9, t))
    vhat = v / (1 - power(0.999, t))
    update = lr * mhat / (sqrt(vhat) + eps)
    return update, m, v
"""
ADAMW = ADAM.replace("    update = lr * mhat / (sqrt(vhat) + eps)\n",
                     "    update = lr * (mhat / (sqrt(vhat) + eps) + 0.05 * w)\n")
LION = """def train(w, g, m, lr):
    update = interp(g, m, 0.9)
    update = sign(update)
    m = interp(g, m, 0.99)
    update = (update + w * 0.5) * lr
    return update, m
"""


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _trajectories(make_a, make_b, steps=12):
    """Train two copies of one model with two optimizers on the same batches."""
    a, b = _model(), _model()
    oa, ob = make_a(a.parameters()), make_b(b.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 5, generator=gen), torch.randn(16, 3, generator=gen)
        for model, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=2e-5, atol=2e-6)
    return a


@pytest.mark.parametrize("text, name, hp", [
    (SGD, "sgd", {"lr": 0.1}),
    (MOMENTUM, "sgd", {"lr": 0.05, "momentum": 0.9}),
    (ADAM, "adam", {"lr": 0.01}),
    (ADAMW, "adamw", {"lr": 0.01, "weight_decay": 0.05}),
])
def test_program_equals_zoo_member(text, name, hp):
    prog = search.parse(text)
    lr = hp["lr"]
    _trajectories(lambda ps: search.to_optimizer(prog, ps, lr=lr),
                  lambda ps: zoo.create(name, ps, impl="loop", **hp))


def test_program_equals_torch_optim_adamw():
    prog = search.parse(ADAMW)
    _trajectories(lambda ps: search.to_optimizer(prog, ps, lr=0.01),
                  lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.05, foreach=False))


def test_lion_program_equals_lion_pytorch_and_zoo():
    lion_pytorch = pytest.importorskip("lion_pytorch")
    prog = search.parse(LION)
    _trajectories(lambda ps: search.to_optimizer(prog, ps, lr=1e-3),
                  lambda ps: lion_pytorch.Lion(ps, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.5))
    if "lion" in zoo.names():
        _trajectories(lambda ps: search.to_optimizer(prog, ps, lr=1e-3),
                      lambda ps: zoo.create("lion", ps, impl="loop", lr=1e-3, weight_decay=0.5))


def test_to_rule_is_an_update_rule_with_zero_states_and_lr():
    rule = search.to_rule(search.parse(ADAM), lr=0.3)
    assert rule.hp == {"lr": 0.3} and rule.caps.elementwise
    state = rule.init(torch.ones(2, 3))
    assert set(state) == {"m", "v"} and all(bool((s == 0).all()) for s in state.values())
    assert not search.to_rule(search.parse(
        "def train(w, g, lr):\n    update = clip_by_global_norm(g, 1.0) * lr\n    return update\n"
    )).caps.elementwise


def test_to_optimizer_state_dict_resume_is_exact():
    prog = search.parse(ADAM)
    model = _model()
    opt = search.to_optimizer(prog, model.parameters(), lr=0.01)
    x = torch.randn(8, 5)
    for _ in range(3):
        opt.zero_grad(); model(x).pow(2).mean().backward(); opt.step()
    clone = _model(); clone.load_state_dict(model.state_dict())
    opt2 = search.to_optimizer(prog, clone.parameters(), lr=0.01)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad(); m(x).pow(2).mean().backward(); o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("text", [ADAMW, LION, MOMENTUM], ids=["adamw", "lion", "momentum"])
def test_a_program_takes_the_generated_c_kernel_on_a_cpu_and_equals_its_loop(text):
    """A found program is an elementwise rule, so on a CPU ``"auto"`` runs it as one
    generated C kernel per group (``metaopt.ckernel``), equal to the interpreter's loop."""
    from metaopt import cbuild

    if not cbuild.available():
        pytest.skip("no C compiler")
    gen = torch.Generator().manual_seed(3)
    ps = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True)
          for s in [(6, 5), (11,)]]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    fast = search.to_optimizer(text, ps, lr=0.01)
    loop = search.to_optimizer(text, qs, lr=0.01, impl="loop")
    for _ in range(5):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = p.grad.clone()
        fast.step()
        loop.step()
    assert fast._paths.plans
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
