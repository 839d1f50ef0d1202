"""`metaopt bilevel` (bilevel.cli.main): a results table, files written, one-line errors, exit 2."""
import json

import pytest

from bilevel.cli import main


@pytest.mark.slow
def test_runs_methods_and_writes_table(tmp_path, capsys):
    rc = main(["--problem", "ridge", "--method", "implicit,unrolled,f2sa", "--budget", "60", "--max-steps", "6",
               "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    for method in ("implicit", "unrolled", "f2sa"):
        assert f"| {method} |" in out
    assert (tmp_path / "results.md").read_text().strip() == out.strip()
    traces = json.loads((tmp_path / "traces.json").read_text())
    assert set(traces) == {"implicit", "unrolled", "f2sa"}
    for method in ("implicit", "unrolled"):
        assert traces[method]["inner_trainings"][-1] == 6
        values = traces[method]["values"]
        assert min(values) < 0.9 * values[0], method  # the tuner improved the validation loss


@pytest.mark.slow
def test_optuna_uses_sqlite_storage(tmp_path, capsys):
    rc = main(["--problem", "ridge", "--method", "optuna", "--budget", "0.2", "--out", str(tmp_path)])
    assert rc == 0 and (tmp_path / "optuna.db").exists()
    assert "| optuna |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--problem", "mnist"], "--problem 'mnist'"),
    (["--problem", "ridge", "--method", "adam"], "--method 'adam'"),
    (["--problem", "ridge", "--budget", "-1"], "--budget -1.0"),
    (["--problem", "ridge", "--inner-steps", "-2"], "--inner-steps -2"),
    (["--problem", "ridge", "--max-steps", "0"], "--max-steps 0"),
    (["--problem", "ridge", "--n-train", "0"], "n_train"),
    (["--problem", "ridge", "--device", "tpu"], "--device"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("metaopt: error:")
    assert not (tmp_path / "o").exists()


def test_missing_problem_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "--problem" in capsys.readouterr().err


def test_bad_storage_url_is_one_line_and_creates_nothing(capsys, tmp_path):
    out = tmp_path / "o"
    assert main(["--problem", "ridge", "--method", "optuna", "--storage", "notaurl", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metaopt: error: --storage 'notaurl' is not a usable database URL") and err.count("\n") == 1
    assert not out.exists()


def test_out_pointing_at_a_file_is_one_line_and_writes_nothing(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    for out in (target, target / "sub"):
        assert main(["--problem", "ridge", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("metaopt: error: --out") and "file" in err and err.count("\n") == 1
    assert target.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_out_in_a_read_only_folder_is_one_line(capsys, tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions
        pytest.skip("running as a user that can write anywhere")
    assert main(["--problem", "ridge", "--out", str(locked / "o")]) == 2
    assert "cannot write" in capsys.readouterr().err and not (locked / "o").exists()


@pytest.mark.slow
def test_budget_is_kept_files_are_0644_and_report_rerenders(tmp_path, capsys):
    import os
    import stat
    import time

    import bilevel

    def timed(argv):
        start = time.perf_counter()
        assert main(argv) == 0
        return time.perf_counter() - start

    # the budget covers each method and the scoring of its snapshots; setup (data, imports,
    # warm-up) is what a one-step run also costs, so it is measured by one and subtracted
    budget = 3.0
    base = ["--problem", "ridge", "--budget", str(budget)]
    for method in ("unrolled", "optuna", "f2sa"):
        capsys.readouterr()
        one_step = timed(base + ["--method", method, "--max-steps", "1"])
        full = timed(base + ["--method", method])
        assert full - one_step <= 1.1 * budget, (method, full, one_step)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["--problem", "ridge", "--method", "unrolled,optuna", "--budget", "1", "--out", str(out)]) == 0
    table = capsys.readouterr().out.strip()
    for name in ("results.md", "traces.json", "run.json", "val_loss_vs_time.png", "optuna.db"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o644, name
    assert (out / "val_loss_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    (out / "results.md").unlink()
    (out / "val_loss_vs_time.png").unlink()
    assert bilevel.report(out).strip() == table
    assert (out / "results.md").read_text().strip() == table and (out / "val_loss_vs_time.png").exists()
    with pytest.raises(ValueError, match="holds no finished bilevel run"):
        bilevel.report(tmp_path)
