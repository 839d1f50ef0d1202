"""The ``metaopt`` command line: zoo listing, bench runs, dispatch, one-line errors."""
import json
import subprocess
import sys
import types

import pytest

from metaopt import cli, tasks, zoo


def _err_line(capsys):
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_zoo_lists_every_member_with_defaults(capsys):
    assert cli.main(["zoo"]) == 0
    out = capsys.readouterr().out
    rows = {l.split()[0]: l for l in out.splitlines()[2:]}
    assert sorted(rows) == zoo.names()
    assert "lr=0.001" in rows["adamw"] and "betas=(0.9, 0.999)" in rows["adamw"]
    assert "weight_decay=0.01" in rows["adamw"]


@pytest.mark.parametrize("argv,words", [
    (["bench", "--task", "nope", "--optimizer", "sgd"], ["unknown task 'nope'", "quadratic"]),
    (["bench", "--task", "quadratic", "--optimizer", "sgd,nope"],
     ["unknown optimizer 'nope'", "adamw"]),
    (["bench", "--task", "quadratic", "--optimizer", "sgd", "--seeds", "x"],
     ["--seeds", "integer >= 1", "'x'"]),
    (["bench", "--task", "quadratic", "--optimizer", "sgd", "--steps", "0"], ["--steps", ">= 1"]),
    (["bench", "--task", "quadratic", "--optimizer", "sgd", "--tune-trials", "-1"],
     ["--tune-trials", ">= 0"]),
    (["bench", "--task", "quadratic", "--optimizer", "sgd", "--device", "tpu"],
     ["--device", "cpu"]),
    (["bench", "--optimizer", "sgd"], ["--task"]),
    (["bogus"], ["invalid choice", "zoo", "bench"]),
    ([], ["missing command", "zoo", "bench", "search", "meta-train", "bilevel"]),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, words):
    assert cli.main(argv) == 2
    line = _err_line(capsys)
    for w in words:
        assert w in line


def test_bad_storage_url_is_one_line(capsys, tmp_path):
    pytest.importorskip("optuna")
    argv = ["bench", "--task", "quadratic", "--optimizer", "sgd", "--steps", "2", "--seeds", "1",
            "--tune-trials", "1", "--storage", "not-a-url", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "expected an Optuna storage URL" in _err_line(capsys)


def test_parse_names_expands_all_and_drops_repeats():
    assert cli.parse_names("all", tasks.names(), "--task") == tuple(tasks.names())
    assert cli.parse_names("adamw,sgd,adamw", zoo.names(), "--optimizer") == ("adamw", "sgd")


def test_bench_writes_table_and_plots(tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["bench", "--task", "quadratic", "--optimizer", "sgd,adamw", "--seeds", "2",
            "--steps", "6", "--tune-trials", "0", "--out", str(out), "--device", "cpu",
            "--impl", "loop"]
    assert cli.main(argv) == 0
    records = [json.loads(l) for l in (out / "curves.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["impl"] for r in records} == {"loop"}
    printed = capsys.readouterr().out
    assert "| quadratic | sgd | 2 |" in printed and "| quadratic | adamw | 2 |" in printed
    assert {p.name for p in out.iterdir()} >= {"curves.jsonl", "results.md", "profile.png",
                                               "curves_quadratic.png"}
    assert cli.main(argv) == 2  # the folder holds results: resume or choose another
    assert "--resume" in _err_line(capsys)
    assert cli.main(argv + ["--resume"]) == 0


def test_dispatch_hands_argv_to_the_module(monkeypatch):
    seen = []
    fake = types.ModuleType("fake_search_cli")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fake_search_cli", fake)
    monkeypatch.setitem(cli.DISPATCH, "search", "fake_search_cli")
    assert cli.main(["search", "--help", "x"]) == 0
    assert seen == [["--help", "x"]]


def test_dispatch_to_a_missing_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.DISPATCH, "bilevel", "no_such_pkg_xyz.cli")
    assert cli.main(["bilevel", "--help"]) == 2
    assert "not available yet" in _err_line(capsys)


@pytest.mark.parametrize("command", sorted(cli.DISPATCH))
def test_entry_points_answer_help(command, capsys):
    """Each entry point either prints its help (exit 0) or says in one line it is missing."""
    code = cli.main([command, "--help"])
    if code == 2:
        assert "not available yet" in _err_line(capsys)
    else:
        assert code == 0 and "usage" in capsys.readouterr().out.lower()


def test_python_dash_m_reports_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "metaopt", "bench", "--task", "nope",
                           "--optimizer", "sgd"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "unknown task 'nope'" in proc.stderr


def test_interrupt_is_reported_with_the_resume_hint(monkeypatch, capsys):
    import metaopt.bench

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(metaopt.bench, "run_bench", interrupted)
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd"]) == 130
    assert "--resume" in _err_line(capsys)


@pytest.mark.slow
def test_done_when_bench_on_mlp_digits(tmp_path, capsys):
    """The issue's check, shortened: tuned adamw on mlp_digits learns the digits."""
    if "mlp_digits" not in tasks.names():
        pytest.skip("mlp_digits not present")
    pytest.importorskip("optuna")
    argv = ["bench", "--task", "mlp_digits", "--optimizer", "adamw", "--seeds", "3",
            "--tune-trials", "4", "--steps", "150", "--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(argv) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("| mlp_digits"))
    cells = [c.strip() for c in row.split("|")]
    assert float(cells[6]) > 0.9  # median validation accuracy
    assert (tmp_path / "profile.png").exists() and (tmp_path / "curves_mlp_digits.png").exists()
