"""MLPLOpt: exactly SGD for a constructed theta, chunking changes nothing, differentiable and
vmappable for meta-training, and μLO passes the coordinate check where the SP-LO fails it."""
from __future__ import annotations

import pytest
import torch

from learned import LearnedOptimizer, MLPLOpt, sgd_theta
from learned.coord_check import lo_coord_check
from learned.estimators import estimate
from learned.pool import InnerPool
from learned.task_family import SingleTask
from metaopt import tasks


def _digits(width=16, param="sp", dtype=torch.float64):
    return tasks.get("mlp_digits", width=width, depth=2, param=param, base_width=8,
                     batch_size=32, dtype=dtype)


def _train(task, make_opt, steps=5):
    params = [p.clone().requires_grad_(True) for p in task.init(task.generator(0))]
    opt = make_opt(params)
    gen = task.generator(1)
    for _ in range(steps):
        opt.zero_grad()
        task.loss(params, task.sample_batch(gen)).backward()
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("mup", [False, True])
def test_sgd_theta_makes_the_lo_exactly_sgd(mup):
    task, lr = _digits(), 0.05
    lopt = MLPLOpt(hidden=8, mup=mup, base_fan_in=4, scale_features=True)
    theta = {k: v.double() for k, v in sgd_theta(lopt, lr).items()}
    ours = _train(task, lambda ps: LearnedOptimizer(ps, lopt, theta, infos=task.param_info))

    def torch_sgd(ps):  # μLO scales hidden weights by base_fan_in / fan_in
        groups = [{"params": [p], "lr": lr * (4 / i.fan_in if mup and i.role == "hidden" else 1)}
                  for p, i in zip(ps, task.param_info)]
        return torch.optim.SGD(groups, lr=lr)

    ref = _train(task, torch_sgd)
    assert any(i.role == "hidden" for i in task.param_info)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not torch.equal(ours[0], task.init(task.generator(0))[0])


@pytest.mark.parametrize("adam_feature", [False, True])
def test_chunked_features_give_the_same_update(adam_feature):
    lopt_big = MLPLOpt(chunk_elems=1 << 20, adam_feature=adam_feature)
    lopt_small = MLPLOpt(chunk_elems=7, adam_feature=adam_feature)
    theta = {k: v.double() for k, v in lopt_big.init_theta(torch.Generator().manual_seed(1)).items()}
    gen = torch.Generator().manual_seed(2)
    for shape in [(9, 5), (4, 3, 2), (11,)]:
        g, p = torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
        s = lopt_big.init(p)
        d1, s1 = lopt_big.update(theta, g, p, s, 3)
        d2, s2 = lopt_small.update(theta, g, p, s, 3)
        torch.testing.assert_close(d1, d2, rtol=1e-12, atol=1e-15)
        assert all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize("adam_feature", [False, True])
def test_mlp_lopt_tbptt_gradient_matches_finite_differences(adam_feature):
    """The meta-gradient through 3 MLPLOpt steps on a float64 μP MLP (vmapped in the pool)
    agrees with central differences along random directions in theta."""
    task = _digits(width=8, param="mup")
    lopt = MLPLOpt(hidden=8, step_mult=0.05, adam_feature=adam_feature, taus=(1.0, 10.0))
    theta = {k: v.double() for k, v in lopt.init_theta(torch.Generator().manual_seed(0)).items()}

    def run(th):
        pool = InnerPool(lopt, SingleTask(task, horizon=10), 2, 1, seed=4,
                         device=torch.device("cpu"), truncation=3, meta_loss="mean_train_loss")
        return estimate("tbptt", pool, th, 0.0, torch.Generator())

    est = run(theta)
    norm = lambda t: torch.sqrt(sum((v * v).sum() for v in t.values())).item()  # noqa: E731
    gen = torch.Generator().manual_seed(5)
    along_grad = {k: v / norm(est.grad) for k, v in est.grad.items()}
    randoms = [{k: torch.randn(v.shape, generator=gen, dtype=torch.float64)
                for k, v in theta.items()} for _ in range(2)]
    for u in [along_grad, *randoms]:
        h = 1e-6  # 1e-5 is off by ~1e-5 |g||u| (the features' curvature), 1e-7 by rounding
        up = run({k: v + h * u[k] for k, v in theta.items()}).meta_loss
        down = run({k: v - h * u[k] for k, v in theta.items()}).meta_loss
        directional = sum((est.grad[k] * u[k]).sum() for k in theta).item()
        # The difference quotient's error (curvature ~h^2 |u|^3, rounding ~eps |L| / h) does not
        # shrink with the directional derivative, which for a random u is a sum of terms of size
        # |g||u| that may cancel; so it is bounded relative to |g||u| (Cauchy-Schwarz's scale).
        scale = norm(est.grad) * norm(u)
        assert abs(directional - (up - down) / (2 * h)) <= 1e-6 * scale, (directional, scale)


def _coord_slopes(mup, widths):
    lopt = MLPLOpt(hidden=8, mup=mup, step_mult=0.01, base_fan_in=64)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    param = "mup" if mup else "sp"
    res = lo_coord_check(lopt, theta, lambda w: tasks.get("mlp_digits", width=w, param=param,
                                                          base_width=64),
                         widths=widths, steps=3, progress=False)
    return [res.slopes(t) for t in range(3)]


def test_mulo_passes_the_coordinate_check_and_sp_lo_fails_it():
    widths = (64, 128, 256, 512)
    for slopes in _coord_slopes(True, widths):
        assert all(abs(s) <= 0.1 for s in slopes.values()), slopes
    sp = _coord_slopes(False, widths)
    assert max(abs(s) for s in sp[-1].values()) > 0.25, sp[-1]


@pytest.mark.slow
def test_mulo_coordinate_check_to_width_2048():
    widths = (64, 128, 256, 512, 1024, 2048)
    for slopes in _coord_slopes(True, widths):
        assert all(abs(s) <= 0.1 for s in slopes.values()), slopes
    assert max(abs(s) for s in _coord_slopes(False, widths)[-1].values()) > 0.3


@pytest.mark.parametrize("kw,match", [({"hidden": 0}, "hidden"), ({"step_mult": -1.0}, "step_mult"),
                                      ({"layers": 1.5}, "layers"), ({"taus": ()}, "taus"),
                                      ({"taus": (3, -1)}, "taus")])
def test_bad_mlp_lopt_options_are_one_line_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        MLPLOpt(**kw)


def test_adam_like_theta_without_noise_steps_along_the_normalised_adam_direction():
    from learned import adam_like_theta
    from learned.features import EPS, NORM_EPS
    from metaopt.tasks import ParamInfo

    lopt = MLPLOpt(hidden=8, base_fan_in=4)
    theta = {k: v.double() for k, v in
             adam_like_theta(lopt, 0.3, torch.Generator().manual_seed(0), noise=0.0).items()}
    info = ParamInfo("w", "hidden", 16, 5)
    g, p = torch.randn(5, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)
    state = lopt.init(p)
    for step in (1, 2):
        delta, state = lopt.update(theta, g, p, state, step, info)
        u = state["m1"] / torch.sqrt(state["v"] + EPS)
        expected = 0.3 * (4 / 16) * u / torch.sqrt((u * u).mean() + NORM_EPS)
        torch.testing.assert_close(delta, expected, rtol=1e-10, atol=1e-14)
        g = torch.randn(5, 16, dtype=torch.float64)


@pytest.mark.parametrize("mup,adam_scale", [(False, False), (True, False), (True, True)])
def test_adam_like_theta_with_the_adam_feature_is_exactly_mu_adam(mup, adam_scale):
    """With the exact Adam feature and no noise, the LO is ``zoo.rule("adam")`` with μP's
    per-layer learning rates (μLO on a μP task) or one learning rate (SP-LO), in float64."""
    from learned import adam_like_theta
    from learned.unroll import lopt_step
    from metaopt import mup as mup_, zoo
    from metaopt.rule import apply, init_states

    task = tasks.get("mlp_digits", width=32, depth=3, param="mup" if mup else "sp",
                     base_width=8, batch_size=16, dtype=torch.float64)
    lopt = MLPLOpt(hidden=8, mup=mup, base_fan_in=8, adam_feature=True, adam_scale=adam_scale,
                   chunk_elems=50)
    lr = 0.02
    theta = {k: v.double() for k, v in
             adam_like_theta(lopt, lr, torch.Generator().manual_seed(0), noise=0.0).items()}
    rule = zoo.rule("adam")
    base = task.base_param_info if mup else None
    hp = mup_.per_tensor_hp(mup_.lr_multipliers(task.param_info, "adam", base), lr)
    ours = task.init(task.generator(0))
    ref = [p.clone() for p in ours]
    s_ours, s_ref = [lopt.init(p) for p in ours], init_states(rule, ref)
    gen, grad = task.generator(1), torch.func.grad(task.loss)
    for t in range(1, 8):
        batch = task.sample_batch(gen)
        ours, s_ours = lopt_step(lopt, theta, ours, list(grad(ours, batch)), s_ours, t,
                                 task.param_info)
        ref, s_ref = apply(rule, ref, grad(ref, batch), s_ref, t, hp)
    start = task.init(task.generator(0))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not torch.equal(ours[-2], start[-2])


def test_taus_set_the_time_features_and_round_trip_through_theta_files(tmp_path):
    from learned import load_theta, save_theta
    from learned.features import tensor_features

    lopt = MLPLOpt(hidden=4, taus=(2, 5))
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    assert theta["wt"].shape == (2, 4)
    tf = tensor_features(torch.ones(3), torch.ones(3), 4, taus=lopt.taus)
    torch.testing.assert_close(tf, torch.tanh(torch.tensor([4 / 2 - 1, 4 / 5 - 1])))
    save_theta(tmp_path / "t.safetensors", theta, lopt)
    back = load_theta(tmp_path / "t.safetensors", lopt)
    assert all(torch.equal(back[k], theta[k]) for k in theta)
    with pytest.raises(ValueError, match="taus"):
        load_theta(tmp_path / "t.safetensors", MLPLOpt(hidden=4, taus=(2, 6)))


def test_adam_scale_makes_the_step_follow_the_size_of_adams_direction():
    """With ``adam_scale`` every input is normalised per tensor and the step is multiplied by the
    RMS of Adam's direction. With a zero gradient, scaling the momenta by c scales Adam's
    direction by c and leaves every normalised feature unchanged (up to the normalisers' 1e-5,
    negligible at these sizes), so the step scales by c; without ``adam_scale`` (raw Adam
    feature) it does not."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    ratios = {}
    for adam_scale in (True, False):
        lopt = MLPLOpt(hidden=8, step_mult=0.1, adam_feature=True, adam_scale=adam_scale)
        theta = {k: v.double() for k, v in lopt.init_theta(gen).items()}
        state = {k: 100 * torch.rand(v.shape, generator=gen, dtype=torch.float64) + 10
                 for k, v in lopt.init(p).items()}
        deltas = []
        for c in (1.0, 10.0):
            scaled = {k: v * c if k.startswith("m") else v for k, v in state.items()}
            delta, _ = lopt.update(theta, torch.zeros_like(p), p, scaled, 7)
            deltas.append(delta)
        ratios[adam_scale] = deltas
    torch.testing.assert_close(ratios[True][1], 10 * ratios[True][0], rtol=1e-4, atol=0)
    off = (ratios[False][1] - 10 * ratios[False][0]).abs().max()
    assert off > 0.1 * ratios[False][0].abs().max()


def test_adam_scale_needs_the_adam_feature():
    with pytest.raises(ValueError, match="adam_scale=True needs adam_feature=True"):
        MLPLOpt(adam_scale=True)
