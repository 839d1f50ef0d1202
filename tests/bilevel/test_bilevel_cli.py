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
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    assert "--problem" in capsys.readouterr().err
