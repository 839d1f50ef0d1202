"""LearnedOptimizer as a torch optimizer, and theta files: safe, checked, round-tripping."""
from __future__ import annotations

import io

import pytest
import torch

from learned import LearnedOptimizer, MLPLOpt, load_theta, save_theta
from learned.unroll import lopt_step
from metaopt import tasks


def _task():
    return tasks.get("mlp_digits", width=16, depth=2, param="mup", base_width=16, batch_size=32)


def _params(task):
    return [p.clone().requires_grad_(True) for p in task.init(task.generator(0))]


def _steps(task, params, opt, gen, n):
    for _ in range(n):
        opt.zero_grad()
        task.loss(params, task.sample_batch(gen)).backward()
        opt.step()


def test_optimizer_equals_the_functional_lo_steps():
    task, lopt = _task(), MLPLOpt(step_mult=0.01, base_fan_in=4)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    params = _params(task)
    opt = LearnedOptimizer(params, lopt, theta, infos=task.param_info)
    _steps(task, params, opt, task.generator(1), 3)

    ref = [p.detach().clone() for p in task.init(task.generator(0))]
    states = [lopt.init(p, i) for p, i in zip(ref, task.param_info)]
    gen = task.generator(1)
    for t in range(1, 4):
        grads = torch.func.grad(task.loss)(ref, task.sample_batch(gen))
        ref, states = lopt_step(lopt, theta, ref, grads, states, t, task.param_info)
    for a, b in zip(params, ref):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-7)


def test_state_dict_resume_is_exact_and_loads_weights_only():
    task, lopt = _task(), MLPLOpt(step_mult=0.01)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    params = _params(task)
    opt = LearnedOptimizer(params, lopt, theta, infos=task.param_info)
    gen = task.generator(1)
    _steps(task, params, opt, gen, 2)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict(),
                "gen": gen.get_state()}, buf)
    _steps(task, params, opt, gen, 2)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    params2 = [p.clone().requires_grad_(True) for p in saved["params"]]
    opt2 = LearnedOptimizer(params2, lopt, theta, infos=task.param_info)
    opt2.load_state_dict(saved["opt"])
    gen2 = torch.Generator().manual_seed(0)
    gen2.set_state(saved["gen"])
    _steps(task, params2, opt2, gen2, 2)
    assert all(torch.equal(a, b) for a, b in zip(params, params2))


def test_wrong_shaped_theta_is_a_clear_error():
    task = _task()
    theta = MLPLOpt(hidden=32).init_theta()
    with pytest.raises(ValueError, match=r"theta\['w0'\] has shape \(17, 32\), expected \(17, 16\)"):
        LearnedOptimizer(_params(task), MLPLOpt(hidden=16), theta)
    with pytest.raises(ValueError, match="missing"):
        LearnedOptimizer(_params(task), MLPLOpt(layers=3), theta)
    with pytest.raises(ValueError, match="infos"):
        LearnedOptimizer(_params(task), MLPLOpt(), theta, infos=task.param_info[:2])


def test_theta_file_round_trip_and_checks(tmp_path):
    lopt = MLPLOpt(hidden=8)
    theta = lopt.init_theta(torch.Generator().manual_seed(3))
    path = tmp_path / "theta.safetensors"
    save_theta(path, theta, lopt)
    back = load_theta(path, MLPLOpt(hidden=8))
    assert all(torch.equal(theta[k], back[k]) for k in theta)
    with pytest.raises(ValueError, match="hidden=8"):
        load_theta(path, MLPLOpt(hidden=16))
    with pytest.raises(ValueError, match="mlp_lopt"):
        load_theta(path, MLPLOpt(hidden=8, mup=False))
    with pytest.raises(ValueError, match="step_mult"):
        load_theta(path, MLPLOpt(hidden=8, step_mult=0.01))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not a safetensors theta file"):
        load_theta(junk, lopt)
    with pytest.raises(ValueError, match="no theta file"):
        load_theta(tmp_path / "missing.safetensors", lopt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.safetensors", "theta.safetensors"]
