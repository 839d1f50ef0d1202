"""Capabilities, a rule's optional declarations: each one changes what its consumer does, and
only the declared names are accepted."""
import dataclasses
import pickle

import pytest
import torch

from metaopt import Capabilities, RuleOptimizer, UpdateRule, zoo


def _sgd_update(g, p, s, hp, step):
    return hp["lr"] * g, s


def _sgd_init(p):
    return {}


def _squared_norm(g, p, s, hp, step):
    return (g * g).sum()


class _CountingFused:
    """An in-place multi-tensor SGD step (the same ops as ``_sgd_update``) that counts its
    calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, params, grads, states, hp, steps):
        self.calls += 1
        for p, g in zip(params, grads):
            p.sub_(hp["lr"] * g)


def _quadratic_steps(rule, impl, steps=3, **group):
    """``steps`` steps of ``rule`` on f = (||x1||^2 + 3 ||x2||^2) / 2 (float64)."""
    xs = [torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True),
          torch.tensor([[3.0, 0.25]], dtype=torch.float64, requires_grad=True)]
    opt = RuleOptimizer([{"params": xs, **group}], rule, impl=impl)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (xs[0] ** 2).sum() + 1.5 * (xs[1] ** 2).sum()).backward()
        opt.step()
    return [x.detach() for x in xs]


def test_defaults_are_a_plain_elementwise_rule():
    rule = UpdateRule("toy", _sgd_init, _sgd_update, hp={"lr": 0.1})
    assert rule.caps == Capabilities()
    assert rule.caps.needs(rule.hp, 1) == frozenset() and rule.caps.elementwise
    assert (rule.caps.fused, rule.caps.reduce, rule.caps.predict) == (None, None, None)


def test_fused_capability_is_the_adapters_fast_path():
    """The adapter runs a declared ``fused`` step for ``impl="auto"`` and ``"fused"`` (not for
    the loop, nor for a group that checks its update), and it equals the loop path; plain
    gradient descent on f: x <- x (1 - lr c) per step."""
    fused = _CountingFused()
    rule = UpdateRule("toy", _sgd_init, _sgd_update, hp={"lr": 0.1},
                      caps=Capabilities(fused=fused))
    loop = _quadratic_steps(rule, "loop")
    assert fused.calls == 0
    for impl in ("auto", "fused"):
        got = _quadratic_steps(rule, impl)
        for a, b in zip(got, loop):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fused.calls == 6
    _quadratic_steps(rule, "auto", skip_nonfinite=True)
    assert fused.calls == 6
    torch.testing.assert_close(loop[0], torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
                               * 0.9 ** 3)
    torch.testing.assert_close(loop[1], torch.tensor([[3.0, 0.25]], dtype=torch.float64)
                               * 0.7 ** 3)
    with pytest.raises(ValueError, match="toy has no fused implementation"):
        RuleOptimizer([torch.zeros(1, requires_grad=True)],
                      UpdateRule("toy", _sgd_init, _sgd_update, hp={"lr": 0.1}), impl="fused")


def test_predict_added_to_a_zoo_rule_moves_the_weights_for_the_closure():
    """SGD with the capability ``predict(p) = p + 1`` on f = x^2 / 2 from x = 1, lr 0.1: step 1
    (no state yet) takes the gradient at 1 (x -> 0.9), step 2 at 1.9 (x -> 0.9 - 0.19)."""
    sgd = zoo.rule("sgd", lr=0.1)
    rule = dataclasses.replace(
        sgd, caps=dataclasses.replace(sgd.caps, predict=lambda p, s, hp, step: p + 1.0))
    assert rule.caps.fused is sgd.caps.fused  # the other capabilities are kept
    for impl in ("loop", "auto"):
        x = torch.ones(1, dtype=torch.float64, requires_grad=True)
        opt = RuleOptimizer([x], rule, impl=impl)
        seen = []

        def closure():
            opt.zero_grad()
            seen.append(x.item())
            loss = 0.5 * (x * x).sum()
            loss.backward()
            return loss

        opt.step(closure)
        opt.step(closure)
        assert seen == [1.0, 1.9]
        torch.testing.assert_close(x.detach(), torch.tensor([0.71], dtype=torch.float64))


def test_unknown_capability_is_a_one_line_error():
    allowed = r"allowed: \['needs', 'fused', 'elementwise', 'reduce', 'predict'\]$"
    with pytest.raises(ValueError, match=r"^unknown capability\(ies\) \['fusd'\]; " + allowed):
        Capabilities(fusd=_CountingFused())
    with pytest.raises(ValueError, match=r"^unknown capability\(ies\) \['hvp'\]; " + allowed):
        dataclasses.replace(Capabilities(elementwise=False), hvp=True)
    with pytest.raises(ValueError, match=r"^UpdateRule 'toy': caps must be a "
                                         r"metaopt.Capabilities, got dict$"):
        UpdateRule("toy", _sgd_init, _sgd_update, caps={"elementwise": False})


def test_capabilities_survive_pickling_and_hyperparameter_changes():
    """A rule without a registry origin pickles field by field, its capabilities with it;
    ``with_hp`` keeps them."""
    rule = UpdateRule("toy", _sgd_init, _sgd_update, hp={"lr": 0.1},
                      caps=Capabilities(elementwise=False, reduce=_squared_norm))
    again = pickle.loads(pickle.dumps(rule))
    assert again == rule and again.caps.reduce is _squared_norm
    assert rule.with_hp(lr=0.5).caps is rule.caps
    sps = zoo.rule("sps")
    copied = pickle.loads(pickle.dumps(sps.with_hp(lr=0.5)))
    assert copied.hp["lr"] == 0.5 and not copied.caps.elementwise
    assert copied.caps.needs(copied.hp, 1) == sps.caps.needs(sps.hp, 1) == {"loss"}
