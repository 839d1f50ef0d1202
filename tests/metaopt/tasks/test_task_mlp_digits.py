"""mlp_digits (and the digits data): split, forward against torch.nn, μP init, vmapped
populations, gradients through unrolled training against float64 finite differences."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.func import vmap

from metaopt import apply, init_states, tasks, unroll, zoo
from metaopt.tasks.digits_data import digits_arrays


def test_split_is_fixed_disjoint_and_standardized():
    xt, yt, xv, yv = digits_arrays()
    assert xt.shape == (1437, 64) and xv.shape == (360, 64)
    assert yt.shape == (1437,) and yv.shape == (360,)
    np.testing.assert_allclose(xt.mean(0), 0, atol=1e-12)
    std = xt.std(0)
    assert np.all((np.abs(std - 1) < 1e-9) | (std == 0))
    raw = load_digits()  # every image appears exactly once across the split
    x_all = np.concatenate([xt, xv])
    assert len({row.tobytes() for row in np.round(x_all, 9)}) == len(
        {row.tobytes() for row in raw.data})
    assert np.bincount(np.concatenate([yt, yv])).tolist() == np.bincount(raw.target).tolist()


def _reference_mlp(task, params):
    """The same network as torch.nn modules (an independent forward)."""
    layers, n = [], (len(params) - 2) // 2
    for k in range(n):
        lin = torch.nn.Linear(params[2 * k].shape[1], params[2 * k].shape[0], dtype=task.dtype)
        lin.weight.data, lin.bias.data = params[2 * k].clone(), params[2 * k + 1].clone()
        layers += [lin, torch.nn.ReLU()]
    out = torch.nn.Linear(params[-2].shape[1], params[-2].shape[0], dtype=task.dtype)
    out.weight.data = params[-2].clone() * task.readout_mult
    out.bias.data = params[-1].clone()
    return torch.nn.Sequential(*layers, out)


@pytest.mark.parametrize("param", ["sp", "mup"])
def test_forward_and_loss_match_torch_nn(param):
    task = tasks.get("mlp_digits", width=48, depth=3, param=param, base_width=16,
                     dtype=torch.float64)
    params = [p + 0.1 * torch.randn_like(p) for p in task.init(task.generator(0))]
    x, y = task.sample_batch(task.generator(1))
    ref = _reference_mlp(task, params)
    torch.testing.assert_close(task.logits(params, x), ref(x))
    torch.testing.assert_close(task.loss(params, (x, y)),
                               torch.nn.functional.cross_entropy(ref(x), y))
    acc = float((ref(task.x_val).argmax(-1) == task.y_val).double().mean())
    assert task.evaluate(params)["accuracy"] == pytest.approx(acc)


def test_mup_init_scales():
    task = tasks.get("mlp_digits", width=512, depth=2, param="mup", base_width=64, output_mult=2.0)
    w_in, b_in, w_h, b_h, w_out, b_out = task.init(task.generator(0))
    assert float(w_in.var()) == pytest.approx(1 / 64, rel=0.05)
    assert float(w_h.var()) == pytest.approx(1 / 512, rel=0.05)
    assert not w_out.any() and not b_in.any() and not b_h.any() and not b_out.any()
    assert task.readout_mult == pytest.approx(2.0 * 64 / 512)
    sp = tasks.get("mlp_digits", width=512, param="sp")
    assert sp.readout_mult == 1.0
    assert float(sp.init(sp.generator(0))[-2].var()) == pytest.approx(1 / 512, rel=0.1)


def test_batches_follow_the_generator():
    task = tasks.get("mlp_digits", batch_size=32)
    (x1, y1), (x2, y2) = task.sample_batch(task.generator(5)), task.sample_batch(task.generator(5))
    assert x1.shape == (32, 64) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(task.sample_batch(task.generator(6))[0], x1)


@pytest.mark.parametrize("rule_name,hp", [("sgd", {"lr": 0.1, "momentum": 0.9}),
                                          ("adam", {"lr": 3e-3})])
def test_vmapped_population_of_8_equals_separate_runs(rule_name, hp):
    """8 seeds (initialisations and batch streams) trained at once under torch.func.vmap."""
    task = tasks.get("mlp_digits", width=24, depth=2, param="sp", batch_size=32,
                     dtype=torch.float64)
    rule = zoo.rule(rule_name, **hp)
    steps, seeds = 6, range(8)
    inits = [task.init(task.generator(s)) for s in seeds]
    streams = [task.generator(100 + s) for s in seeds]
    batches = [[task.sample_batch(g) for _ in range(steps)] for g in streams]

    def train(params, xs, ys):
        final, _, losses = unroll(rule, task.loss, params, list(zip(xs, ys)))
        return final, torch.stack(losses)

    stacked = [torch.stack([p[i] for p in inits]) for i in range(len(inits[0]))]
    xs = torch.stack([torch.stack([b[0] for b in bs]) for bs in batches])
    ys = torch.stack([torch.stack([b[1] for b in bs]) for bs in batches])
    pop_params, pop_losses = vmap(train, in_dims=(0, 1, 1))(stacked, xs.transpose(0, 1),
                                                          ys.transpose(0, 1))
    for s in seeds:
        params, states = inits[s], init_states(rule, inits[s])
        grad_and_loss = torch.func.grad_and_value(task.loss)
        for t, batch in enumerate(batches[s], start=1):
            g, loss = grad_and_loss(params, batch)
            torch.testing.assert_close(pop_losses[s, t - 1], loss, rtol=1e-10, atol=1e-12)
            params, states = apply(rule, params, g, states, t)
        for p_pop, p in zip(pop_params, params):
            torch.testing.assert_close(p_pop[s], p, rtol=1e-10, atol=1e-12)
    assert (pop_losses[:, -1] < pop_losses[:, 0]).all()


FD_CASES = [
    ("mlp_digits", dict(width=8, depth=2, batch_size=16), "sgd", {"lr": 0.05, "momentum": 0.9}),
    ("cnn_digits", dict(channels=3, batch_size=16), "sgd", {"lr": 0.05}),
    # Adam only where no gradient coordinate is exactly 0: d sqrt(v)/dv is infinite at v = 0, so
    # autograd through Adam gives NaN for constant-zero pixels of the digits (a spine issue).
    ("rosenbrock", dict(dim=6), "adam", {"lr": 0.01}),
]


@pytest.mark.parametrize("name,kw,rule_name,hp", FD_CASES)
def test_grad_through_5_unrolled_steps_matches_finite_differences(name, kw, rule_name, hp):
    """d(loss after 5 steps)/d(lr, initial params) vs float64 central differences."""
    task = tasks.get(name, dtype=torch.float64, **kw)
    rule = zoo.rule(rule_name, **hp)
    # Nonzero biases: at zero bias, conv patches of constant-zero pixels sit exactly on ReLU's
    # kink, where autograd's one-sided slope and a central difference legitimately differ.
    noise = torch.Generator().manual_seed(7)
    params0 = [p + 0.05 * torch.randn(p.shape, generator=noise, dtype=torch.float64)
               for p in task.init(task.generator(0))]
    gen = task.generator(1)
    batches = [task.sample_batch(gen) for _ in range(5)]
    probe = task.sample_batch(gen)
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i),
                             dtype=torch.float64) for i, p in enumerate(params0)]
    lr0 = torch.tensor(hp["lr"], dtype=torch.float64)

    def outer(lr, eps):
        start = [p + eps * d for p, d in zip(params0, direction)]
        final, _, _ = unroll(rule, task.loss, start, batches, hp={"lr": lr})
        return task.loss(final, probe)

    zero = torch.tensor(0.0, dtype=torch.float64)
    g_lr, g_eps = torch.func.grad(outer, argnums=(0, 1))(lr0, zero)
    h = 1e-6
    fd_lr = (outer(lr0 + h, zero) - outer(lr0 - h, zero)) / (2 * h)
    fd_eps = (outer(lr0, zero + h) - outer(lr0, zero - h)) / (2 * h)
    torch.testing.assert_close(g_lr, fd_lr, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(g_eps, fd_eps, rtol=1e-5, atol=1e-8)
    assert abs(float(g_lr)) > 1e-4 and abs(float(g_eps)) > 1e-4


def test_trains_to_high_accuracy_with_mup_adam():
    from metaopt import mup

    task = tasks.get("mlp_digits", width=64, param="mup")
    params = task.init(task.generator(0))
    rule = zoo.rule("adam")
    hp = mup.per_tensor_hp(mup.lr_multipliers(task.param_info, "adam", task.base_param_info), 1e-2)
    states, gen = init_states(rule, params), task.generator(1)
    grad = torch.func.grad(task.loss)
    for t in range(1, 151):
        params, states = apply(rule, params, grad(params, task.sample_batch(gen)), states, t, hp)
    result = task.evaluate(params)
    assert result["accuracy"] > 0.93 and result["val_loss"] < 0.3
