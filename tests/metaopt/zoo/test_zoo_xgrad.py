"""XGrad (weight prediction) and the spine's ``predict`` hook.

* xgrad_sgd / xgrad_adam / xgrad_adamw against a literal per-parameter transcription of the
  official guanleics/XGrad step (``load_predicted_weights(s)``, the closure at the predicted
  weights, the weights restored, the base step), float64, 25 steps, 1-D/2-D/4-D tensors, two
  param groups, weight decay on. Where the transcription is not the official file: Adam's
  weight decay is coupled L2 (the official ``Adam.py`` has its decay line commented out), and
  SGD runs at dampening 0, where the official zero-initialised buffer equals torch's
  ``b_1 = g_1``.
* With ``s = 0`` each member equals its base member exactly.
* The spine: the update moves the original weights (two steps by hand on a quadratic), a
  missing closure is a one-line error, weights are restored when the closure raises,
  state_dict round trip, ``unroll`` equals the optimizer's trajectory, ``torch.func.grad``
  through ``unroll`` matches finite differences, tensor steps equal int steps.
* Convergence on a quadratic and (slow) Rosenbrock. Not in test_zoo_common.py: its loops
  call ``step()`` / ``update`` without a closure or a prediction.
"""
import copy
import math

import pytest
import torch

from metaopt import init_states, tasks, unroll, zoo
from metaopt.rule import predicted_params
from metaopt.zoo.equivalence import make_problem

from zoo_support import rosenbrock_grad  # noqa: I001

MEMBERS = ["xgrad_sgd", "xgrad_adam", "xgrad_adamw"]
BASE = {"xgrad_sgd": "sgd", "xgrad_adam": "adam", "xgrad_adamw": "adamw"}
GROUPS = {
    "xgrad_sgd": [{"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "s": 1.0},
                  {"lr": 0.02, "momentum": 0.8, "s": 2.0}],
    "xgrad_adam": [{"lr": 0.05, "weight_decay": 0.01, "s": 1.0},
                   {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "s": 2.0}],
    "xgrad_adamw": [{"lr": 0.05, "weight_decay": 0.1, "s": 1.0},
                    {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01,
                     "s": 2.0}],
}


# --- a transcription of the official step -------------------------------------------------

def _official_hp(name, group):
    hp = {"weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8, "dampening": 0.0,
          **zoo.defaults(name), **group}
    return hp


def _official_predict(name, w, st, hp, steps_done):
    """``load_predicted_weights(s)`` for one tensor (skipped before the first step)."""
    if steps_done == 0:
        return w.clone()
    if name == "xgrad_sgd":
        return w - hp["lr"] * hp["s"] * st["momentum_buffer"]
    b1, b2 = hp["betas"]
    bc1, bc2 = 1 - b1 ** steps_done, 1 - b2 ** steps_done
    denom = st["exp_avg_sq"].sqrt() / math.sqrt(bc2) + hp["eps"]
    return w - hp["lr"] / bc1 * hp["s"] * st["exp_avg"] / denom


def _official_update(name, w, g, st, hp, t):
    """The official SGD.py / Adam.py / AdamW.py ``step`` for one tensor: returns the new w."""
    lr, wd = hp["lr"], hp["weight_decay"]
    if name == "xgrad_sgd":
        g = g + wd * w
        st["momentum_buffer"] = hp["momentum"] * st["momentum_buffer"] + (1 - hp["dampening"]) * g
        return w - lr * st["momentum_buffer"]
    if name == "xgrad_adamw":
        w = w * (1 - lr * wd)
    else:
        g = g + wd * w
    b1, b2 = hp["betas"]
    st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * g
    st["exp_avg_sq"] = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    denom = st["exp_avg_sq"].sqrt() / math.sqrt(bc2) + hp["eps"]
    return w - lr / bc1 * st["exp_avg"] / denom


def _closure(opt, params, loss, seen=None):
    def closure():
        opt.zero_grad()
        value = loss(params)
        value.backward()
        if seen is not None:
            seen.append([p.detach().clone() for p in params])
        return value

    return closure


@pytest.mark.parametrize("impl", ["loop", "auto"])
@pytest.mark.parametrize("name", MEMBERS)
def test_matches_transcription_of_official_step(name, impl):
    inits, loss = make_problem()
    hps = [_official_hp(name, g) for g, grp in zip(GROUPS[name], inits) for _ in grp]
    ws = [t.clone() for grp in inits for t in grp]
    states = [{k: torch.zeros_like(w) for k in ("momentum_buffer", "exp_avg", "exp_avg_sq")}
              for w in ws]
    groups = [dict(g, params=[t.clone().requires_grad_() for t in grp])
              for g, grp in zip(GROUPS[name], inits)]
    ours = [p for g in groups for p in g["params"]]
    opt = zoo.create(name, groups, impl=impl)
    for t in range(1, 26):
        w_hat = [_official_predict(name, w, st, hp, t - 1) for w, st, hp in zip(ws, states, hps)]
        x = [w.clone().requires_grad_() for w in w_hat]
        ref_loss = loss(x)
        grads = torch.autograd.grad(ref_loss, x)
        ws = [_official_update(name, w, g, st, hp, t)
              for w, g, st, hp in zip(ws, grads, states, hps)]
        our_loss = opt.step(_closure(opt, ours, loss))
        torch.testing.assert_close(our_loss, ref_loss.detach(), rtol=1e-6, atol=1e-10)
        for i, (p, w, st) in enumerate(zip(ours, ws, states)):
            torch.testing.assert_close(p.detach(), w, rtol=1e-6, atol=1e-10,
                                       msg=lambda m: f"{name} step {t} param {i}: {m}")
            for k, v in opt.state[p].items():
                if k != "step":
                    torch.testing.assert_close(v, st[k], rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", MEMBERS)
def test_zero_prediction_step_is_the_base_member(name):
    inits, loss = make_problem()
    runs = []
    for member, extra in ((name, {"s": 0.0}), (BASE[name], {})):
        groups = [dict({k: v for k, v in g.items() if k != "s"}, **extra,
                       params=[t.clone().requires_grad_() for t in grp])
                  for g, grp in zip(GROUPS[name], inits)]
        params = [p for g in groups for p in g["params"]]
        opt = zoo.create(member, groups, impl="loop")
        for _ in range(20):
            opt.step(_closure(opt, params, loss))
        runs.append(params)
    for p, q in zip(*runs):
        assert torch.equal(p, q)


# --- the spine ----------------------------------------------------------------------------

def test_update_moves_the_original_weights_not_the_predicted_ones():
    """f(w) = 3/2 w^2 from w_1 = 2, lr 0.1, momentum 0.9, s 1, by hand:
    step 1: w_hat = 2,   g = 6,   b = 6,                 w_2 = 2 - 0.6 = 1.4
    step 2: w_hat = 1.4 - 0.1 * 6 = 0.8,  g = 2.4,  b = 0.9 * 6 + 2.4 = 7.8,
            w_3 = 1.4 - 0.78 = 0.62   (from w_2, not from w_hat: 0.8 - 0.78 = 0.02)."""
    w = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = zoo.create("xgrad_sgd", [w], lr=0.1, momentum=0.9, s=1.0)
    seen = []
    loss = lambda ps: 1.5 * (ps[0] ** 2).sum()
    opt.step(_closure(opt, [w], loss, seen))
    assert seen[-1][0].item() == 2.0 and abs(w.item() - 1.4) < 1e-15
    opt.step(_closure(opt, [w], loss, seen))
    assert abs(seen[-1][0].item() - 0.8) < 1e-15
    assert abs(opt.state[w]["momentum_buffer"].item() - 7.8) < 1e-14
    assert abs(w.item() - 0.62) < 1e-15


def test_missing_closure_is_a_one_line_error():
    p = torch.zeros(3, requires_grad=True)
    opt = zoo.create("xgrad_adam", [p])
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"^xgrad_adam evaluates gradients at predicted "
                                           r"weights: call step\(closure\)[^\n]*$"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(3)) and not opt.state[p]


def test_weights_are_restored_when_the_closure_raises():
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = zoo.create("xgrad_adamw", [p], lr=0.1)
    loss = lambda ps: (ps[0] ** 2).sum()
    opt.step(_closure(opt, [p], loss))
    before = p.detach().clone()

    def failing():
        assert not torch.equal(p.detach(), before)  # the closure sees the predicted weights
        raise ValueError("data loader failed")

    with pytest.raises(ValueError, match="data loader failed"):
        opt.step(failing)
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("name", MEMBERS)
def test_state_dict_round_trip_is_exact(name):
    inits, loss = make_problem(n_groups=1)
    a = [t.clone().requires_grad_() for t in inits[0]]
    opt_a = zoo.create(name, a, **GROUPS[name][0])
    for _ in range(4):
        opt_a.step(_closure(opt_a, a, loss))
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_b = zoo.create(name, b, **GROUPS[name][0])
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for _ in range(4):
        opt_a.step(_closure(opt_a, a, loss))
        opt_b.step(_closure(opt_b, b, loss))
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def _unroll_problem():
    inits, loss = make_problem(shapes=((4,), (2, 3)), n_groups=1)
    return inits[0], lambda ps, batch: loss(ps)


@pytest.mark.parametrize("name", MEMBERS)
def test_unroll_matches_the_optimizer(name):
    x0, loss_fn = _unroll_problem()
    hp = GROUPS[name][1]
    xs, _, losses = unroll(zoo.rule(name, **hp), loss_fn, x0, [None] * 12)
    params = [x.clone().requires_grad_() for x in x0]
    opt = zoo.create(name, params, impl="loop", **hp)
    for k in range(12):
        value = opt.step(_closure(opt, params, lambda ps: loss_fn(ps, None)))
        torch.testing.assert_close(losses[k], value.detach(), rtol=1e-12, atol=1e-12)
    for x, p in zip(xs, params):
        torch.testing.assert_close(x, p.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MEMBERS)
def test_grad_through_unroll_matches_finite_differences(name):
    """d(loss after 4 predicted steps)/d(lr, s) by torch.func.grad against central
    differences (float64)."""
    x0, loss_fn = _unroll_problem()
    rule = zoo.rule(name, **GROUPS[name][0])

    def final_loss(lr, s):
        xs, _, _ = unroll(rule, loss_fn, x0, [None] * 4, hp={"lr": lr, "s": s})
        return loss_fn(xs, None)

    lr = torch.tensor(rule.hp["lr"], dtype=torch.float64)
    s = torch.tensor(1.0, dtype=torch.float64)
    got = torch.func.grad(final_loss, argnums=(0, 1))(lr, s)
    h_lr, h_s = 1e-6 * lr, torch.tensor(1e-6, dtype=torch.float64)
    fd_lr = (final_loss(lr + h_lr, s) - final_loss(lr - h_lr, s)) / (2 * h_lr)
    fd_s = (final_loss(lr, s + h_s) - final_loss(lr, s - h_s)) / (2 * h_s)
    torch.testing.assert_close(got[0], fd_lr, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(got[1], fd_s, rtol=1e-5, atol=1e-8)
    assert got[1].abs() > 1e-6  # the prediction step really enters the trajectory


@pytest.mark.parametrize("name", MEMBERS)
def test_tensor_step_prediction_equals_int_step(name):
    """The prediction with a 0-d tensor step (vmapped/compiled paths) equals the int step,
    including step 1 (a fresh state: the parameter itself)."""
    x0, loss_fn = _unroll_problem()
    rule = zoo.rule(name, **GROUPS[name][0])
    states = init_states(rule, x0)
    for t in (1, 2, 3):
        at = predicted_params(rule, x0, states, t)
        at_t = predicted_params(rule, x0, states, torch.tensor(float(t), dtype=torch.float64))
        for a, b in zip(at, at_t):
            torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
        if t == 1:
            assert all(torch.equal(a, x) for a, x in zip(at, x0))
        x0, states, _ = unroll(rule, loss_fn, x0, [None], states=states, first_step=t)


# --- convergence --------------------------------------------------------------------------

QUAD_HP = {"xgrad_sgd": {"lr": 0.3, "momentum": 0.9}, "xgrad_adam": {"lr": 0.1},
           "xgrad_adamw": {"lr": 0.1, "weight_decay": 0.0}}
ROSEN_HP = {"xgrad_sgd": {"lr": 1e-3, "momentum": 0.9}, "xgrad_adam": {"lr": 0.01},
            "xgrad_adamw": {"lr": 0.01, "weight_decay": 0.0}}


def _run_predicted(rule, x, grad_fn, steps):
    """The rule's functional step with the gradient taken at its predicted point."""
    state = rule.init(x)
    for t in range(1, steps + 1):
        delta, state = rule.update(grad_fn(rule.caps.predict(x, state, rule.hp, t)), x, state,
                                   rule.hp, t)
        x = x - delta
    return x


@pytest.mark.parametrize("name", MEMBERS)
def test_converges_on_quadratic(name):
    task = tasks.get("quadratic", dim=16, cond=10.0, dtype=torch.float64)
    x0, batch = task.init()[0], task.sample_batch()
    grad = lambda x: task.h * (x - task.x_star)
    x = _run_predicted(zoo.rule(name, **QUAD_HP[name]), x0, grad, 500)
    assert task.loss([x], batch) < 1e-3 * task.loss([x0], batch)


@pytest.mark.slow
@pytest.mark.parametrize("name", MEMBERS)
def test_converges_on_rosenbrock(name):
    x = _run_predicted(zoo.rule(name, **ROSEN_HP[name]), torch.zeros(2, dtype=torch.float64),
                       rosenbrock_grad, 10_000)
    torch.testing.assert_close(x, torch.ones(2, dtype=torch.float64), rtol=3e-2, atol=3e-2)
