"""Every registered task (including other modules' tasks): finite loss that falls under plain
SGD, param_info matching the parameters, dtype kept, one-line errors."""
import math

import pytest
import torch

from metaopt import apply, init_states, tasks, zoo
from metaopt.tasks import ROLES

# Keep the expensive tasks small in the default run; other tasks use their defaults.
SMALL = {
    "charlm": dict(width=32, depth=1, context=16, batch_size=8, corpus_bytes=100_000),
    "mlp_digits": dict(width=32),
    "cnn_digits": dict(channels=4),
    "rnn_digits": dict(width=8),
    "text_lm": dict(width=16, context=8, batch_size=8, corpus_bytes=20_000, eval_windows=16),
}
LRS = (0.1, 1e-2, 1e-3, 1e-4)


def _make(name, **kw):
    return tasks.get(name, **{**SMALL.get(name, {}), **kw})


def _sgd_run(task, lr, steps=15):
    params = task.init(task.generator(0))
    rule = zoo.rule("sgd", lr=lr)
    states = init_states(rule, params)
    batches = task.generator(1)
    grad = torch.func.grad(task.loss)
    for t in range(1, steps + 1):
        params, states = apply(rule, params, grad(params, task.sample_batch(batches)), states, t)
    return params


def test_the_suite_is_registered():
    assert {"quadratic", "rosenbrock", "logreg_digits", "mlp_digits", "cnn_digits",
            "charlm"} <= set(tasks.names())


@pytest.mark.parametrize("name", tasks.names())
def test_loss_is_finite_and_falls_under_sgd(name):
    task = _make(name)
    params = task.init(task.generator(0))
    before = task.evaluate(params)["val_loss"]
    train = task.loss(params, task.sample_batch(task.generator(1)))
    assert math.isfinite(before) and torch.isfinite(train)
    afters = []
    for lr in LRS:  # the largest of these step sizes that makes progress
        after = task.evaluate(_sgd_run(task, lr))["val_loss"]
        afters.append(after)
        if math.isfinite(after) and after < before - 1e-3 * abs(before):
            return
    pytest.fail(f"{name}: val_loss {before} did not fall by 0.1% with SGD at {LRS}: {afters}")


@pytest.mark.parametrize("name", tasks.names())
def test_param_info_matches_params(name):
    task = _make(name)
    params, info = task.init(task.generator(0)), task.param_info
    assert len(params) == len(info)
    assert len({p.name for p in info}) == len(info)
    for p, i in zip(params, info):
        assert i.role in ROLES
        assert p.numel() == i.fan_in * i.fan_out, (i, tuple(p.shape))


@pytest.mark.parametrize("name", tasks.names())
def test_float64_is_kept(name):
    task = _make(name, dtype=torch.float64)
    params = task.init(task.generator(0))
    assert all(p.dtype == torch.float64 for p in params)
    batch = task.sample_batch(task.generator(1))
    loss = task.loss(params, batch)
    assert loss.dtype == torch.float64
    grads = torch.func.grad(task.loss)(params, batch)
    assert all(g.dtype == torch.float64 for g in grads)


@pytest.mark.parametrize("name", tasks.names())
def test_init_is_reproducible_from_the_generator(name):
    task = _make(name)
    a, b = task.init(task.generator(3)), task.init(task.generator(3))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_unknown_task_is_a_one_line_error():
    with pytest.raises(ValueError) as e:
        tasks.get("no_such_task")
    assert "\n" not in str(e.value) and "mlp_digits" in str(e.value)


@pytest.mark.parametrize("name,kw,needle", [
    ("mlp_digits", {"widht": 3}, "widht"),
    ("mlp_digits", {"param": "ntk"}, "param"),
    ("mlp_digits", {"width": 0}, "width"),
    ("mlp_digits", {"batch_size": 5000}, "batch_size"),
    ("charlm", {"width": 30, "heads": 4}, "heads"),
    ("charlm", {"param": "xx"}, "param"),
    ("cnn_digits", {"channels": -1}, "channels"),
    ("rosenbrock", {"dim": 1}, "dim"),
    ("rosenbrock", {"noise": 1.5}, "noise"),
    ("logreg_digits", {"l2": -1.0}, "l2"),
])
def test_bad_options_are_one_line_value_errors(name, kw, needle):
    with pytest.raises(ValueError) as e:
        tasks.get(name, **kw)
    msg = str(e.value)
    assert "\n" not in msg and needle in msg
