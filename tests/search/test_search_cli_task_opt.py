"""``metaopt search --task NAME --task-opt KEY=VALUE``: task options reach the searched task;
bad options and --task-opt without --task are one-line errors that leave nothing behind."""
import json

from search.cli import main


def test_task_opt_sets_the_searched_task_options(tmp_path):
    out = tmp_path / "s"
    assert main(["--task", "quadratic", "--task-opt", "dim=3", "--budget", "4", "--population",
                 "2", "--tournament", "2", "--batch", "2", "--steps", "3", "--simplify-tol",
                 "-1", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "best.json").read_text())
    import sqlite3

    with sqlite3.connect(out / "search.sqlite") as db:
        assert db.execute("select count(*) from programs").fetchone()[0] == 4


def test_bad_task_opt_is_one_line_and_writes_nothing(tmp_path, capsys):
    for argv in (["--task", "quadratic", "--task-opt", "nope=3"],
                 ["--family", "tiny", "--task-opt", "dim=3"]):
        out = tmp_path / "s"
        assert main([*argv, "--budget", "4", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("task-opt" in err or "nope" in err)
        assert not out.exists()


def test_task_opt_values_reach_the_task(tmp_path, capsys):
    """An invalid value is refused by the task itself, so the option was passed through."""
    out = tmp_path / "s"
    assert main(["--task", "quadratic", "--task-opt", "dim=0", "--budget", "4",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dim" in err
    assert not out.exists()
