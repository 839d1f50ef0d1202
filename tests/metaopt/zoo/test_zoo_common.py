"""Table-driven checks over the first-order zoo members: bf16 kept, state_dict round trip
exact, tensor-valued step/hyperparameters (vmap, torch.func.grad) equal the float path, bad
hyperparameters and unknown names rejected in one line, convergence on a quadratic and on
Rosenbrock (optax's protocol: from (0, 0) to (1, 1) within 3e-2)."""
import copy

import pytest
import torch

from metaopt import apply, init_states, tasks, zoo

from zoo_support import assert_lr_vmap_equals_loop, rosenbrock_grad  # noqa: I001

MEMBERS = ["adabelief", "adabound", "adadelta", "adafactor", "adagrad", "adagrad_sn",
           "adagrad_snsm", "adam", "adamax", "adamp", "adamw", "adamw_sn", "adamw_snsm",
           "ademamix", "amsgrad", "cadamw", "clion", "diffgrad", "dog", "frugal", "grams",
           "gravity", "lion", "mfac", "microadam", "nadam", "online_subspace_descent",
           "optimistic_amsgrad", "radam", "rmsprop", "sgd", "sgdp", "shampoo4bit"]
# members that keep their statistics in float32 for bf16 parameters (as the official code)
FLOAT32_STATISTICS = {"dog", "mfac", "online_subspace_descent", "shampoo4bit"}

# hyperparameters used for the behavioural checks: each member's contract sample from its
# registry entry (weight decay on where the member has it)
HP = {name: dict(zoo.entry(name).sample) for name in MEMBERS}

SHAPES = [(5,), (3, 4), (2, 3, 2, 2)]


def _params(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def _loss(params):
    return sum(0.5 * (p.double() ** 2).sum() + torch.sin(p.double()).sum() for p in params)


def _train(opt, params, steps):
    for _ in range(steps):
        opt.zero_grad()
        _loss(params).backward()
        opt.step()


def test_members_are_registered():
    assert set(MEMBERS) <= set(zoo.names())


@pytest.mark.parametrize("name", MEMBERS)
def test_bf16_parameters_stay_bf16(name):
    params = [p.requires_grad_() for p in _params(torch.bfloat16)]
    opt = zoo.create(name, params, **HP[name])
    torch.manual_seed(0)
    _train(opt, params, 3)
    for p in params:
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
        for k, v in opt.state[p].items():
            if k != "step" and v.dim() > 0 and v.is_floating_point():  # not indices/codes
                allowed = {torch.bfloat16} | ({torch.float32} if name in FLOAT32_STATISTICS
                                              else set())
                assert v.dtype in allowed, (k, v.dtype)
    # the functional path keeps the dtype too
    rule = zoo.rule(name, **HP[name])
    ps = [p.detach() for p in params]
    new, _ = apply(rule, ps, [torch.ones_like(p) for p in ps], init_states(rule, ps), 1)
    assert all(q.dtype == torch.bfloat16 for q in new)


@pytest.mark.parametrize("name", MEMBERS)
def test_state_dict_round_trip_is_exact(name):
    torch.manual_seed(0)
    a = [p.requires_grad_() for p in _params()]
    opt_a = zoo.create(name, a, **HP[name])
    _train(opt_a, a, 4)
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_b = zoo.create(name, b, **HP[name])
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    _train(opt_a, a, 4)
    _train(opt_b, b, 4)
    for p, q in zip(a, b):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", MEMBERS)
def test_tensor_step_and_hp_under_vmap_equal_float_path(name):
    """A vmapped population of 3 learning rates (tensor lr, tensor step) equals 3 separate
    runs with float lr and int step."""
    rule = zoo.rule(name, **HP[name])
    lr0 = rule.hp["lr"]
    lrs = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64) * lr0
    p0 = _params()
    torch.manual_seed(0)
    s0 = init_states(rule, p0)

    def run(lr, params, states, steps):
        for t in range(1, 4):
            grads = [p + torch.cos(p) for p in params]  # gradient of _loss
            params, states = apply(rule, params, grads, states, steps[t - 1], {"lr": lr})
        return params

    assert_lr_vmap_equals_loop(run, lrs, p0, s0)


@pytest.mark.parametrize("name", MEMBERS)
def test_grad_through_steps_matches_finite_differences(name):
    """d(loss after 3 steps)/d(lr) by torch.func.grad against float64 central differences."""
    rule = zoo.rule(name, **HP[name])
    p0 = _params(seed=1)
    torch.manual_seed(0)
    s0 = init_states(rule, p0)

    def final_loss(lr):
        params, states = p0, s0
        for t in range(1, 4):
            grads = [p + torch.cos(p) for p in params]
            params, states = apply(rule, params, grads, states, t, {"lr": lr})
        return _loss(params)

    lr = torch.tensor(rule.hp["lr"], dtype=torch.float64)
    got = torch.func.grad(final_loss)(lr)
    h = 1e-6 * lr
    fd = (final_loss(lr + h) - final_loss(lr - h)) / (2 * h)
    torch.testing.assert_close(got, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", MEMBERS)
def test_negative_lr_is_rejected(name):
    with pytest.raises(ValueError, match=rf"^{name}: invalid lr=-0.1: must be"):
        zoo.rule(name, lr=-0.1)


@pytest.mark.parametrize("name", [n for n in MEMBERS if "betas" in zoo.defaults(n)])
def test_bad_betas_are_rejected(name):
    n = len(zoo.defaults(name)["betas"])
    with pytest.raises(ValueError, match=rf"{name}: invalid betas.*tuple of {n}"):
        zoo.rule(name, betas=(0.9,) * (n + 1))
    bad = (1.5,) + (0.9,) * (n - 1)
    with pytest.raises(ValueError, match=rf"{name}: invalid betas\[0\]=1.5: must be in \[0, 1"):
        zoo.create(name, [torch.zeros(2, requires_grad=True)], betas=bad)


@pytest.mark.parametrize("name", MEMBERS)
def test_bad_hp_in_a_param_group_is_rejected(name):
    with pytest.raises(ValueError, match="invalid lr"):
        zoo.create(name, [{"params": [torch.zeros(2, requires_grad=True)], "lr": -1.0}])


def test_unknown_name_lists_the_members():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamz'; choose one of: .*adabelief"):
        zoo.create("adamz", [torch.zeros(1, requires_grad=True)])


def test_unknown_hyperparameter_is_rejected():
    with pytest.raises(ValueError, match=r"lion: unknown hyperparameter\(s\) \['eps'\]"):
        zoo.rule("lion", eps=1e-8)


@pytest.mark.parametrize("name", MEMBERS)
def test_sparse_gradients_are_rejected(name):
    p = torch.zeros(4, requires_grad=True)
    opt = zoo.create(name, [p])
    p.grad = torch.zeros(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


# --- convergence --------------------------------------------------------------------------

QUAD_HP = {"adabelief": {"lr": 0.3}, "adabound": {"lr": 0.3}, "adadelta": {"lr": 3.0},
           "adafactor": {"lr": 0.1}, "adagrad": {"lr": 1.0}, "adam": {"lr": 0.1},
           "adamax": {"lr": 0.3}, "adamp": {"lr": 0.1}, "adamw": {"lr": 0.1, "weight_decay": 0.0},
           "ademamix": {"lr": 0.1, "alpha": 0.5}, "amsgrad": {"lr": 0.1}, "cadamw": {"lr": 0.1},
           "clion": {"lr": 3e-3}, "diffgrad": {"lr": 0.3}, "dog": {},
           "frugal": {"lr": 0.1, "weight_decay": 0.0}, "grams": {"lr": 0.3},
           "mfac": {"lr": 0.1, "ngrads": 8, "damp": 0.1}, "microadam": {"lr": 5e-3},
           "shampoo4bit": {"lr": 0.1},
           "gravity": {"lr": 0.3}, "lion": {"lr": 1e-2}, "nadam": {"lr": 0.03},
           "online_subspace_descent": {"lr": 0.1},
           "adamw_sn": {"lr": 0.1}, "adagrad_sn": {"lr": 1.0}, "adamw_snsm": {"lr": 0.1},
           "adagrad_snsm": {"lr": 1.0},
           "optimistic_amsgrad": {"lr": 0.1}, "radam": {"lr": 0.1}, "rmsprop": {"lr": 0.03},
           "sgd": {"lr": 0.3, "momentum": 0.9}, "sgdp": {"lr": 0.3, "momentum": 0.9}}


def _run_rule(rule, x, grad_fn, steps):
    torch.manual_seed(0)
    state = rule.init(x)
    for t in range(1, steps + 1):
        delta, state = rule.update(grad_fn(x), x, state, rule.hp, t)
        x = x - delta
    return x


@pytest.mark.parametrize("name", MEMBERS)
def test_converges_on_quadratic(name):
    task = tasks.get("quadratic", dim=16, cond=10.0, dtype=torch.float64)
    x0 = task.init()[0]
    batch = task.sample_batch()
    grad = lambda x: task.h * (x - task.x_star)  # the task's loss is 1/2 (x - x*)' H (x - x*)
    torch.testing.assert_close(grad(x0), torch.func.grad(lambda y: task.loss([y], batch))(x0))
    x = _run_rule(zoo.rule(name, **QUAD_HP[name]), x0, grad, 500)
    assert task.loss([x], batch) < 1e-3 * task.loss([x0], batch)


ROSEN_HP = {"adabelief": {"lr": 3e-3}, "adabound": {"lr": 1e-2, "final_lr": 3e-3},
            "adadelta": {"lr": 0.1}, "adafactor": {"lr": 1e-2}, "adagrad": {"lr": 0.03},
            "adam": {"lr": 0.01}, "adamax": {"lr": 0.01}, "adamp": {"lr": 0.01},
            "adamw": {"lr": 0.01, "weight_decay": 0.0}, "ademamix": {"lr": 3e-3, "alpha": 0.5},
            "amsgrad": {"lr": 0.01}, "cadamw": {"lr": 3e-3}, "clion": {"lr": 1e-3},
            "diffgrad": {"lr": 0.03}, "dog": {"reps_rel": 1e-2},
            "frugal": {"lr": 0.01, "weight_decay": 0.0}, "grams": {"lr": 3e-3},
            "mfac": {"lr": 1e-3, "ngrads": 8, "damp": 0.1}, "microadam": {"lr": 1e-3, "m": 100},
            "shampoo4bit": {"lr": 0.01},
            "gravity": {"lr": 0.03}, "lion": {"lr": 1e-3}, "nadam": {"lr": 1e-3},
            "online_subspace_descent": {"lr": 0.01},
            "adamw_sn": {"lr": 0.01}, "adagrad_sn": {"lr": 0.03}, "adamw_snsm": {"lr": 0.01},
            "adagrad_snsm": {"lr": 0.03},
            "optimistic_amsgrad": {"lr": 3e-3}, "radam": {"lr": 0.01}, "rmsprop": {"lr": 1e-3},
            "sgd": {"lr": 1e-3, "momentum": 0.9}, "sgdp": {"lr": 1e-3, "momentum": 0.9}}


@pytest.mark.slow
@pytest.mark.parametrize("name", MEMBERS)
def test_converges_on_rosenbrock(name):
    x = _run_rule(zoo.rule(name, **ROSEN_HP[name]), torch.zeros(2, dtype=torch.float64),
                  rosenbrock_grad, 10_000)
    torch.testing.assert_close(x, torch.ones(2, dtype=torch.float64), rtol=3e-2, atol=3e-2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adabelief", "optimistic_amsgrad"])
def test_compiled_path_equals_loop(name):
    """The torch.compile path (the default for elementwise rules on CUDA; hyperparameters and
    the step enter as tensors) equals the per-tensor loop. adabelief exercises the tensor-step
    rectification branch, optimistic_amsgrad the first-step selection of its state."""
    from metaopt.zoo.equivalence import compare_with_reference
    groups = [{"lr": 0.01}, {"lr": 0.003, "betas": (0.8, 0.95)}]
    compare_with_reference(name, lambda g: zoo.create(name, g, impl="loop"), groups,
                           impl="compiled", steps=8, rtol=1e-9)
