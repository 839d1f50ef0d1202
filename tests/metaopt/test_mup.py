"""metaopt.mup: Table 8 multipliers, param groups equal to torch's optimizers, and the
coordinate check (flat under μP, growing under SP)."""
import pytest
import torch

from metaopt import apply, init_states, mup, tasks, zoo


def _mlp(width, param="mup", **kw):
    return tasks.get("mlp_digits", width=width, param=param, base_width=64, **kw)


def test_multipliers_follow_table_8():
    task = _mlp(256)  # width_mult 4: [in.w, in.b, h2.w, h2.b, out.w, out.b]
    assert mup.lr_multipliers(task.param_info, "adam", task.base_param_info) == [
        1, 1, 1 / 4, 1, 1, 1]
    assert mup.lr_multipliers(task.param_info, "sgd", task.base_param_info) == [
        4, 4, 1, 4, 4, 1]
    lm = tasks.get("charlm", width=128, param="mup", base_width=32, corpus_bytes=100_000)
    mults = dict(zip([i.name for i in lm.param_info],
                     mup.lr_multipliers(lm.param_info, "adam", lm.base_param_info)))
    assert mults["b0.mlp.w2"] == mults["b0.attn.q"] == 1 / 4  # fan_in 4d and d both grow 4x
    assert mults["tok_emb"] == mults["out.w"] == mults["b0.ln1.g"] == 1


def test_multipliers_are_one_at_base_width_and_under_sp():
    base = _mlp(64)
    assert mup.lr_multipliers(base.param_info, "sgd", base.base_param_info) == [1.0] * 6
    sp = _mlp(1024, param="sp")
    for kind in mup.KINDS:
        assert mup.lr_multipliers(sp.param_info, kind, sp.base_param_info) == [1.0] * 6
        assert mup.lr_multipliers(sp.param_info, kind) == [1.0] * 6


def test_multiplier_errors_are_one_line():
    task = _mlp(128)
    with pytest.raises(ValueError, match="kind must be one of"):
        mup.lr_multipliers(task.param_info, "lion", task.base_param_info)
    with pytest.raises(ValueError, match="base_info has"):
        mup.lr_multipliers(task.param_info, "adam", task.base_param_info[:3])
    with pytest.raises(ValueError, match="does not match"):
        mup.lr_multipliers(task.param_info, "adam", task.base_param_info[::-1])


@pytest.mark.parametrize("kind,torch_opt,rule_name,hp", [
    ("adam", torch.optim.Adam, "adam", {"betas": (0.9, 0.99)}),
    ("sgd", torch.optim.SGD, "sgd", {"momentum": 0.9}),
    ("adam", lambda groups: zoo.create("adam", groups, impl="loop"), "adam", {}),
])
def test_param_groups_in_torch_equal_per_tensor_hp_in_apply(kind, torch_opt, rule_name, hp):
    """MuAdam / MuSGD built from param_groups (torch's optimizer) == metaopt.rule.apply with the
    per-tensor hyperparameter list."""
    task = _mlp(192, dtype=torch.float64, batch_size=32)
    mults = mup.lr_multipliers(task.param_info, kind, task.base_param_info)
    lr = 0.01
    params = task.init(task.generator(0))
    leaves = [p.clone().requires_grad_() for p in params]
    opt = torch_opt(mup.param_groups(leaves, mults, lr=lr, **hp))
    assert sorted(g["lr"] for g in opt.param_groups) == sorted({lr * m for m in mults})
    rule = zoo.rule(rule_name)
    per_tensor = mup.per_tensor_hp(mults, lr, **hp)
    states, gen = init_states(rule, params), task.generator(1)
    for t in range(1, 6):
        batch = task.sample_batch(gen)
        params, states = apply(rule, params, torch.func.grad(task.loss)(params, batch), states,
                               t, per_tensor)
        opt.zero_grad()
        task.loss(leaves, batch).backward()
        opt.step()
    for p, leaf in zip(params, leaves):
        torch.testing.assert_close(p, leaf.detach(), rtol=1e-10, atol=1e-12)


def _check(param, widths, steps=3, make=None):
    make = make or (lambda w: _mlp(w, param=param, depth=3, batch_size=64))
    return mup.coord_check(make, widths=widths, steps=steps, lr=1e-2, progress=False)


def test_coord_check_is_flat_under_mup_and_not_under_sp():
    widths = (64, 128, 256, 512, 1024)
    mu, sp = _check("mup", widths), _check("sp", widths)
    assert mu.layers == ("h1", "h2", "h3", "logits") and mu.values.shape == (3, 4, 5)
    for t in range(3):
        assert all(abs(s) <= 0.1 for s in mu.slopes(t).values()), mu.slopes(t)
    # SP with Adam: hidden features and logits grow with width after the first update.
    assert max(sp.slopes(0).values()) > 0.5, sp.slopes(0)
    assert any(abs(s) > 0.1 for t in range(3) for s in sp.slopes(t).values())


def test_coord_check_with_sgd_multipliers():
    """MuSGD's multipliers (input, output and biases x width_mult) keep SGD width-independent;
    plain SGD at the same lr grows the logits with width."""
    widths = (64, 128, 256, 512)

    def run(param):
        return mup.coord_check(lambda w: _mlp(w, param=param, depth=3, batch_size=64),
                               widths=widths, steps=3, lr=0.5, rule=zoo.rule("sgd"),
                               kind="sgd", progress=False)

    mu, sp = run("mup"), run("sp")
    for t in range(3):
        assert all(abs(s) <= 0.1 for s in mu.slopes(t).values()), mu.slopes(t)
    assert sp.slopes(0)["logits"] > 0.5, sp.slopes(0)


@pytest.mark.parametrize("kw,needle", [({"widths": (64,)}, "two distinct"),
                                        ({"steps": 0}, "steps"), ({"seeds": ()}, "seed"),
                                        ({"kind": "lion"}, "kind")])
def test_coord_check_rejects_bad_settings(kw, needle):
    with pytest.raises(ValueError, match=needle) as e:
        mup.coord_check(lambda w: _mlp(w), **{"widths": (64, 128), **kw}, progress=False)
    assert "\n" not in str(e.value)


def test_slopes_recover_a_known_power_law():
    import numpy as np

    widths = (64, 256, 1024)
    values = np.array([[[3.0 * w ** 0.5 for w in widths], [2.0 for _ in widths]]])
    res = mup.CoordCheck(widths, ("a", "b"), values)
    assert res.slopes() == pytest.approx({"a": 0.5, "b": 0.0}, abs=1e-12)


def test_plot_coord_check_writes_a_png(tmp_path):
    widths = (64, 128)
    results = {"μP": _check("mup", widths, steps=2), "SP": _check("sp", widths, steps=2)}
    path = tmp_path / "coord.png"
    mup.plot_coord_check(results, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["coord.png"]


@pytest.mark.slow
def test_coord_check_to_2048_and_on_the_transformer():
    widths = (64, 128, 256, 512, 1024, 2048)
    mu = _check("mup", widths, steps=4)
    for t in range(4):
        assert all(abs(s) <= 0.1 for s in mu.slopes(t).values()), mu.slopes(t)

    def lm(param):
        return lambda w: tasks.get("charlm", width=w, param=param, depth=2, context=32,
                                   batch_size=8, corpus_bytes=200_000)

    widths = (64, 128, 256, 512)
    mu, sp = _check("mup", widths, make=lm("mup")), _check("sp", widths, make=lm("sp"))
    for t in range(3):
        assert all(abs(s) <= 0.1 for s in mu.slopes(t).values()), mu.slopes(t)
    assert max(sp.slopes(2).values()) > 0.5, sp.slopes(2)
