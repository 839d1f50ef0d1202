"""The functional spine: apply / unroll are pure, differentiable and vmappable."""
import pytest
import torch
from torch.func import vmap

from metaopt import Capabilities, apply, init_states, unroll, zoo


def _quad_loss(params, batch):
    (x,), (a, b) = params, batch
    return 0.5 * ((a @ x - b) ** 2).sum() + 0.1 * (x ** 4).sum()


def _problem(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 4, generator=g, dtype=dtype)
    b = torch.randn(6, generator=g, dtype=dtype)
    return a, b


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_apply_matches_optimizer(name):
    hp = {"lr": 0.05, "weight_decay": 0.1} | ({"momentum": 0.9} if name == "sgd" else {})
    rule = zoo.rule(name, **hp)
    x0 = torch.randn(4, dtype=torch.float64)
    batch = _problem(0)
    xs, states = [x0.clone()], init_states(rule, [x0])
    p = x0.clone().requires_grad_()
    opt = zoo.create(name, [p], impl="loop", **hp)
    loss_grad = torch.func.grad(_quad_loss)
    for t in range(1, 11):
        xs, states = apply(rule, xs, loss_grad(xs, batch), states, t)
        opt.zero_grad()
        _quad_loss([p], batch).backward()
        opt.step()
    torch.testing.assert_close(xs[0], p.detach(), rtol=1e-12, atol=1e-12)


def test_vmap_population_equals_separate_runs():
    """A vmapped population of 8 (seeds x learning rates) equals 8 separate runs."""
    rule = zoo.rule("adam")
    lrs = torch.logspace(-3, -1, 8, dtype=torch.float64)
    x0 = torch.stack([torch.randn(4, generator=torch.Generator().manual_seed(s),
                                  dtype=torch.float64) for s in range(8)])
    batch = _problem(1)

    def run(x, lr):
        params, _, losses = unroll(rule, _quad_loss, [x], [batch] * 15, hp={"lr": lr})
        return params[0], torch.stack(losses)

    xs, losses = vmap(run)(x0, lrs)
    for i in range(8):
        x_i, l_i = run(x0[i], lrs[i])
        torch.testing.assert_close(xs[i], x_i, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(losses[i], l_i, rtol=1e-12, atol=1e-12)
    assert (losses[:, -1] < losses[:, 0]).all()


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_grad_through_unrolled_steps_matches_finite_differences(name):
    """d(loss after 5 steps)/d(x0, lr) by torch.func.grad against float64 central FD."""
    hp0 = {"momentum": 0.9} if name == "sgd" else {}
    rule = zoo.rule(name, **hp0)
    batch = _problem(2)

    def final_loss(x0, lr):
        params, _, _ = unroll(rule, _quad_loss, [x0], [batch] * 5, hp={"lr": lr})
        return _quad_loss(params, batch)

    x0 = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    lr = torch.tensor(0.03, dtype=torch.float64)
    gx, glr = torch.func.grad(final_loss, argnums=(0, 1))(x0, lr)
    eps = 1e-6
    fd_x = torch.stack([(final_loss(x0 + eps * e, lr) - final_loss(x0 - eps * e, lr)) / (2 * eps)
                        for e in torch.eye(4, dtype=torch.float64)])
    fd_lr = (final_loss(x0, lr + eps) - final_loss(x0, lr - eps)) / (2 * eps)
    torch.testing.assert_close(gx, fd_x, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(glr, fd_lr, rtol=1e-6, atol=1e-9)


def test_per_tensor_hyperparameters():
    rule = zoo.rule("sgd")
    ps = [torch.ones(3), torch.ones(2)]
    gs = [torch.ones(3), torch.ones(2)]
    new, _ = apply(rule, ps, gs, init_states(rule, ps), 1, hp=[{"lr": 0.5}, {"lr": 0.25}])
    torch.testing.assert_close(new[0], torch.full((3,), 0.5))
    torch.testing.assert_close(new[1], torch.full((2,), 0.75))
    with pytest.raises(ValueError, match="per-tensor hp has 1 entries for 2 tensors"):
        apply(rule, ps, gs, init_states(rule, ps), 1, hp=[{"lr": 0.5}])


def test_with_hp_rejects_unknown_and_invalid():
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        zoo.rule("adam", momentum=0.9)
    with pytest.raises(ValueError, match="lr"):
        zoo.rule("adam", lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        zoo.rule("adam", betas=(0.9,))
    with pytest.raises(ValueError, match="unknown optimizer 'nope'.*adamw"):
        zoo.rule("nope")


def _checked_rule(check):
    from metaopt.rule import UpdateRule
    return UpdateRule("toy", lambda p: {}, lambda g, p, s, hp, step: (hp["lr"] * g, {}),
                      hp={"lr": 0.1}, check=check)


def test_validate_names_a_hyperparameter_error_with_the_rule():
    from metaopt import RuleOptimizer
    from metaopt.rule import HyperparameterError

    def check(hp):
        if hp["lr"] < 0:
            raise HyperparameterError(f"invalid lr={hp['lr']}: must be >= 0")

    rule = _checked_rule(check)
    with pytest.raises(ValueError, match=r"^toy: invalid lr=-1.0: must be >= 0$") as err:
        rule.with_hp(lr=-1.0)
    assert type(err.value) is ValueError  # named: an outer validate does not name it again
    with pytest.raises(ValueError, match=r"^toy: invalid lr=-2.0: must be >= 0$"):
        RuleOptimizer([torch.zeros(2, requires_grad=True)], rule, lr=-2.0)


def test_validate_passes_a_named_value_error_unchanged():
    def check(hp):
        raise ValueError("other: says its own name")

    with pytest.raises(ValueError, match=r"^other: says its own name$"):
        _checked_rule(check).with_hp(lr=1.0)


def _global_normalized_sgd():
    """A toy rule with a cross-tensor sum: p <- p - lr g / ||g||, ||g|| over every tensor."""
    from metaopt.rule import UpdateRule
    return UpdateRule(
        "gnsgd", init=lambda p: {}, hp={"lr": 0.1},
        caps=Capabilities(elementwise=False, reduce=lambda g, p, s, hp, step: (g * g).sum()),
        update=lambda g, p, s, hp, step, total: (hp["lr"] * g / total.sqrt(), {}))


def test_reduce_sums_over_every_tensor_in_apply():
    rule = _global_normalized_sgd()
    ps = [torch.ones(3, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)]
    gs = [torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64),
          torch.tensor([[0.0, 4.0], [0.0, 0.0]], dtype=torch.float64)]
    new, _ = apply(rule, ps, gs, init_states(rule, ps), 1, [{"lr": 0.1}, {"lr": 0.2}])
    torch.testing.assert_close(new[0], ps[0] - 0.1 * gs[0] / 5.0)
    torch.testing.assert_close(new[1], ps[1] - 0.2 * gs[1] / 5.0)


def test_reduce_sums_over_param_groups_in_the_optimizer():
    """The optimizer's total spans all param groups and is taken before any tensor moves."""
    from metaopt.optimizer import RuleOptimizer
    a = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = RuleOptimizer([{"params": [a]}, {"params": [b], "lr": 0.5}], _global_normalized_sgd())
    a.grad = torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64)
    b.grad = torch.tensor([4.0, 0.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.tensor([1.0, 1 - 0.1 * 3 / 5, 1.0],
                                                        dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([1 - 0.5 * 4 / 5, 1.0],
                                                        dtype=torch.float64))


def _predicting_sgd():
    """A toy rule with ``predict``: the gradient is taken at ``p - ahead * last delta``."""
    from metaopt.rule import UpdateRule
    return UpdateRule(
        "ahead_sgd", init=lambda p: {"last": torch.zeros_like(p)}, hp={"lr": 0.5, "ahead": 1.0},
        update=lambda g, p, s, hp, step: (hp["lr"] * g, {"last": hp["lr"] * g}),
        caps=Capabilities(predict=lambda p, s, hp, step: p - hp["ahead"] * s["last"]))


def test_unroll_takes_gradients_at_the_predicted_point():
    """f = x^2 / 2 from 1, lr 0.5: step 1 at x = 1 moves to 0.5; step 2's gradient is taken at
    0.5 - 0.5 = 0, so x stays at 0.5 (0.25 without the prediction)."""
    from metaopt.rule import predicted_params
    rule = _predicting_sgd()
    loss = lambda ps, batch: 0.5 * (ps[0] ** 2).sum()
    x0 = [torch.ones(1, dtype=torch.float64)]
    xs, _, losses = unroll(rule, loss, x0, [None, None])
    assert xs[0].item() == 0.5 and [l.item() for l in losses] == [0.5, 0.0]
    xs, _, _ = unroll(rule, loss, x0, [None, None], hp={"ahead": 0.0})
    assert xs[0].item() == 0.25
    plain = zoo.rule("sgd")
    assert predicted_params(plain, x0, init_states(plain, x0), 3)[0] is x0[0]
