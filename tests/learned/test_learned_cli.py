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


def test_cli_defaults_are_the_python_defaults_and_load_into_the_default_lopt(tmp_path):
    """One source for every default: a CLI theta trained with default LO flags loads into
    MLPLOpt() (step multiplier), and the checkpoint interval is meta_train's."""
    import inspect

    from learned import meta_train
    from learned.cli import build_parser

    args = build_parser().parse_args(["--out", "x"])
    sig = inspect.signature(meta_train).parameters
    for name in ("checkpoint_every", "checkpoint_seconds", "truncation", "num_tasks", "outer_lr",
                 "std", "method", "meta_loss"):
        assert getattr(args, name) == sig[name].default, name
    small = ["--task-opt", "width=16", "--task-opt", "batch_size=16", "--truncation", "2",
             "--num-tasks", "1", "--horizon", "4", "--no-progress", "--device", "cpu"]
    assert main(small + ["--steps", "1", "--out", str(tmp_path)]) == 0
    load_theta(tmp_path / "theta.safetensors", MLPLOpt())


def test_bare_meta_train_is_a_one_line_error(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err


@pytest.mark.parametrize("case", ["file", "finished run", "file parent"])
def test_out_is_validated_before_anything_is_written(tmp_path, capsys, case):
    if case == "file":
        out = tmp_path / "f"
        out.write_text("x")
    elif case == "finished run":
        out = tmp_path / "run"
        assert main(QUAD + ["--steps", "1", "--out", str(out)]) == 0
        (out / "checkpoints" / "latest.json").unlink()  # only the finished theta is left
        capsys.readouterr()
    else:
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "sub"
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(QUAD + ["--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_files_are_0644_and_report_rerenders_the_curve_and_table(tmp_path):
    import os
    import stat

    from learned.meta_report import report

    assert main(QUAD + ["--steps", "3", "--out", str(tmp_path)]) == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"theta.safetensors", "meta_train.json", "meta_loss.png",
                                       "summary.md", "latest.json"}
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o644 for p in files)
    history = json.loads((tmp_path / "meta_train.json").read_text())["history"]
    (tmp_path / "meta_loss.png").unlink()
    (tmp_path / "summary.md").unlink()
    table = report(tmp_path)
    assert (tmp_path / "meta_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "summary.md").read_text() == table
    assert f"| last meta-loss | {history[-1][1]:.4g} |" in table
    assert "| outer steps | 3 |" in table


def test_ctrl_c_says_meta_train_and_exits_130(tmp_path, capsys, monkeypatch):
    import learned.cli as cli

    import inspect

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    interrupted.__signature__ = inspect.signature(cli.meta_train)  # the CLI reads its defaults
    monkeypatch.setattr(cli, "meta_train", interrupted)
    assert main(QUAD + ["--steps", "1", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "meta-train" in err and "bench" not in err and err.count("\n") == 1


def test_nproc_2_gives_the_same_theta_as_one_process(tmp_path):
    """``--nproc 2`` runs torchrun with two gloo processes (tasks not vmappable here, so the
    per-task computations are the same in both runs)."""
    from learned import SGDMLOpt

    assert main(QUAD + ["--steps", "3", "--out", str(tmp_path / "one")]) == 0
    assert main(QUAD + ["--steps", "3", "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    a = load_theta(tmp_path / "one" / "theta.safetensors", SGDMLOpt())
    b = load_theta(tmp_path / "two" / "theta.safetensors", SGDMLOpt())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "two" / "meta_train.json").read_text())["history"] == \
        json.loads((tmp_path / "one" / "meta_train.json").read_text())["history"]


test_nproc_2_gives_the_same_theta_as_one_process = pytest.mark.slow(
    test_nproc_2_gives_the_same_theta_as_one_process)


def test_metaopt_report_dispatches_a_meta_train_folder_to_learned_report(tmp_path):
    from metaopt import cli as top

    assert main(QUAD + ["--steps", "2", "--out", str(tmp_path)]) == 0
    (tmp_path / "summary.md").unlink()
    assert top.main(["report", str(tmp_path)]) == 0
    assert "| outer steps | 2 |" in (tmp_path / "summary.md").read_text()
