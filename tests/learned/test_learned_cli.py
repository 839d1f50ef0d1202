"""``metaopt meta-train``: writes a loadable theta, resumes exactly, bad input is one line + exit 2."""
from __future__ import annotations

import json

import pytest
import torch

from learned import MLPLOpt, load_theta
from learned.cli import main

BASE = ["--step-mult", "0.01", "--task-opt", "width=16", "--task-opt", "batch_size=16", "--hidden", "8",
        "--truncation", "2", "--num-tasks", "2", "--horizon", "4", "--no-progress",
        "--device", "cpu", "--checkpoint-every", "1"]
QUAD = ["--task-family", "quadratic", "--task-opt", "dim=4", "--task-opt", "noise=0.5",
        "--task-opt", "seed=0,1", "--lopt", "sgdm", "--truncation", "2", "--num-tasks", "2",
        "--horizon", "4", "--no-progress", "--device", "cpu", "--checkpoint-every", "1",
        "--outer-lr", "0.05"]


def test_meta_train_cli_writes_a_loadable_mulo_theta(tmp_path):
    assert main(BASE + ["--steps", "1", "--out", str(tmp_path)]) == 0
    theta = load_theta(tmp_path / "theta.safetensors", MLPLOpt(hidden=8, step_mult=0.01))
    assert all(v.isfinite().all() for v in theta.values())
    summary = json.loads((tmp_path / "meta_train.json").read_text())
    assert "'param': 'mup'" in summary["family"] and "'width': 16" in summary["family"]


def test_meta_train_cli_adam_feature_and_log_meta_loss(tmp_path):
    argv = BASE + ["--steps", "1", "--out", str(tmp_path), "--adam-feature",
                   "--meta-loss", "mean_log_train_loss"]
    assert main(argv) == 0
    lopt = MLPLOpt(hidden=8, step_mult=0.01, adam_feature=True)
    assert load_theta(tmp_path / "theta.safetensors", lopt)["w0"].shape[0] == lopt.n_features
    assert json.loads((tmp_path / "meta_train.json").read_text())["settings"]["meta_loss"] == (
        "mean_log_train_loss")


def test_meta_train_cli_adam_scale(tmp_path, capsys):
    argv = BASE + ["--steps", "1", "--out", str(tmp_path), "--adam-feature", "--adam-scale"]
    assert main(argv) == 0
    lopt = MLPLOpt(hidden=8, step_mult=0.01, adam_feature=True, adam_scale=True)
    load_theta(tmp_path / "theta.safetensors", lopt)
    with pytest.raises(ValueError, match="adam_scale"):  # trained with the scale: not loadable
        load_theta(tmp_path / "theta.safetensors", MLPLOpt(hidden=8, step_mult=0.01,
                                                           adam_feature=True))
    assert main(BASE + ["--steps", "1", "--out", str(tmp_path / "b"), "--adam-scale"]) == 2
    assert "adam_scale=True needs adam_feature=True" in capsys.readouterr().err


def test_meta_train_cli_resumes_exactly(tmp_path):
    from learned import SGDMLOpt

    assert main(QUAD + ["--steps", "4", "--out", str(tmp_path / "straight")]) == 0
    assert main(QUAD + ["--steps", "2", "--out", str(tmp_path / "split")]) == 0
    assert main(QUAD + ["--steps", "4", "--out", str(tmp_path / "split"), "--resume"]) == 0
    a = load_theta(tmp_path / "straight" / "theta.safetensors", SGDMLOpt())
    b = load_theta(tmp_path / "split" / "theta.safetensors", SGDMLOpt())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["log_lr"], SGDMLOpt().init_theta()["log_lr"])
    summary = json.loads((tmp_path / "split" / "meta_train.json").read_text())
    assert [h[0] for h in summary["history_this_session"]] == [3, 4]


@pytest.mark.parametrize("argv,needle", [
    (["--steps", "0"], "--steps"), (["--task-opt", "width"], "KEY=VALUE"),
    (["--task-family", "nope"], "nope"), (["--task-opt", "wdth=3"], "no option"),
    (["--method", "sgd"], "invalid choice"), (["--outer-lr", "-1"], "positive"),
    (["--device", "tpu"], "--device")])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_existing_checkpoint_needs_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(QUAD + ["--steps", "1", "--out", out]) == 0
    capsys.readouterr()
    assert main(QUAD + ["--steps", "2", "--out", out]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(QUAD + ["--steps", "2", "--out", out, "--resume", "--truncation", "3"]) == 2
    assert "truncation" in capsys.readouterr().err
