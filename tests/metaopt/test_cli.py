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


# ---- issue 14: help, version, tasks, report, plugins, bench hardening ----

import os  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

from metaopt.bench import harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--steps", "3", "--seeds", "1", "--tune-trials", "0", "--device", "cpu"]


def test_no_arguments_prints_help(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: metaopt") and "examples:" in out and "bench" in out


def test_version(capsys):
    from metaopt import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"metaopt {__version__}"


def _help(argv, capsys):
    assert cli.main(argv + ["--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["bench"], ["tasks"], ["zoo"], ["report"]])
def test_help_shows_defaults_and_no_module_paths_or_rest(argv, capsys):
    text = _help(argv, capsys)
    assert "``" not in text and not re.search(r":(mod|func|class):", text)
    assert not re.search(r"\((search|learned|bilevel|metaopt)\.\w+\)", text)
    parser = cli.build_parser()
    if argv:
        parser = parser._subparsers._group_actions[0].choices[argv[0]]
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
            flat = " ".join(text.split())
            assert re.search(re.escape(action.option_strings[-1]) + r".*?\(default", flat), \
                action.option_strings
    if argv in ([], ["bench"], ["report"]):
        assert "example" in text


def test_tasks_lists_names_options_docs_and_families(capsys):
    assert cli.main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in tasks.names():
        assert re.search(rf"^{name}\s", out, re.M), name
    assert "width=128, depth=2, param=sp" in out  # mlp_digits' options with defaults
    assert "An MLP of any width and depth on the digits" in out
    assert "proxy: 9 tasks" in out and "heldout: 8 tasks" in out
    assert "``" not in out and "device=" not in out


def test_tasks_lists_entry_point_plugins_lazily(monkeypatch, capsys):
    from importlib import metadata

    from metaopt.tasks import registry

    ep = metadata.EntryPoint("ep_quad", "metaopt.tasks.quadratic:Quadratic", "metaopt.tasks")
    monkeypatch.setattr(registry, "_entry_points", lambda: {"ep_quad": ep})
    assert "ep_quad" in tasks.names() and "ep_quad" not in registry.builtin_names()
    assert cli.main(["tasks"]) == 0
    assert re.search(r"^ep_quad\s+An ill-conditioned quadratic", capsys.readouterr().out, re.M)
    assert tasks.get("ep_quad", dim=3).init()[0].shape == (3,)
    registry._TASKS.pop("ep_quad", None)


def test_optimizer_entry_point_plugin_is_benchable(monkeypatch, tmp_path, capsys):
    from importlib import metadata

    from metaopt import cli_common

    ep = metadata.EntryPoint("sgd_plugin", "metaopt.zoo.sgd:sgd", "metaopt.zoo")
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group=None: [ep] if group == "metaopt.zoo" else [])
    assert "sgd_plugin" in cli_common.zoo_plugin_names()
    try:
        assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd_plugin",
                         "--out", str(tmp_path / "o"), *QUICK]) == 0
        assert "| quadratic | sgd_plugin | 1 |" in capsys.readouterr().out
    finally:
        from metaopt.zoo import registry as zoo_registry

        zoo_registry._ENTRIES.pop("sgd_plugin", None)


def _only_some_members(monkeypatch, names):
    monkeypatch.setattr(zoo, "names", lambda: sorted(names))


def test_optimizer_all_skips_members_that_cannot_run_with_a_note(monkeypatch, tmp_path, capsys):
    _only_some_members(monkeypatch, ["adafisher", "muon", "sgd"])
    out = tmp_path / "b"
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "all", "--out", str(out),
                     *QUICK]) == 0
    captured = capsys.readouterr()
    assert "skipping adafisher" in captured.err and "skipping muon on quadratic" in captured.err
    table = (out / "results.md").read_text()
    assert "Skipped: muon on quadratic: muon: a parameter of shape (64,) is not a matrix" in table
    assert "| quadratic | sgd | 1 |" in table
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "all", "--out", str(out),
                     *QUICK, "--resume"]) == 0  # resume skips it again


def test_naming_an_optimizer_that_cannot_run_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "b"
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd,muon", "--out",
                     str(out), *QUICK]) == 2
    assert "optimizer muon cannot run task quadratic" in _err_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("storage,words", [
    ("notaurl", ["expected an Optuna storage URL"]),
    ("foo://x", ["not a database URL"]),
])
def test_bad_storage_writes_nothing_and_the_corrected_command_runs(tmp_path, capsys, storage,
                                                                   words):
    out = tmp_path / "b"
    argv = ["bench", "--task", "quadratic", "--optimizer", "sgd", "--steps", "3", "--seeds",
            "1", "--tune-trials", "1", "--out", str(out), "--device", "cpu"]
    assert cli.main(argv + ["--storage", storage]) == 2
    line = _err_line(capsys)
    assert all(w in line for w in words)
    assert not out.exists()
    assert cli.main(argv) == 0


def test_missing_postgresql_driver_is_one_line_naming_psycopg2(tmp_path, capsys):
    try:
        import psycopg  # noqa: F401
        pytest.skip("psycopg installed")
    except ImportError:
        pass
    out = tmp_path / "b"
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd", "--tune-trials", "1",
                     "--storage", "postgresql://u@localhost/db", "--out", str(out)]) == 2
    assert "psycopg2" in _err_line(capsys) and not out.exists()


def test_out_that_is_a_file_or_below_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    for out in (f, f / "sub"):
        assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd", "--out", str(out),
                         *QUICK]) == 2
        assert "is a file" in _err_line(capsys)
    assert f.read_text() == "x"


def test_out_unwritable_is_one_line(tmp_path, capsys, monkeypatch):
    from metaopt import cli_common

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(cli_common.os, "access",
                        lambda p, m: False if Path(p) == locked else real(p, m))
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd", "--out",
                     str(locked / "b"), *QUICK]) == 2
    assert "cannot write in" in _err_line(capsys) and not (locked / "b").exists()


def test_task_options_on_bench(tmp_path, capsys):
    out = tmp_path / "b"
    assert cli.main(["bench", "--task", "quadratic,rosenbrock", "--task-opt", "dim=6",
                     "--optimizer", "sgd", "--out", str(out), *QUICK]) == 0
    table = (out / "results.md").read_text()
    assert "Task options: dim=6" in table
    cfg = json.loads((out / "bench_config.json").read_text())
    assert cfg["task_options"] == {"dim": 6}
    capsys.readouterr()
    assert cli.main(["bench", "--task", "quadratic,mlp_digits", "--task-opt", "dim=6",
                     "--optimizer", "sgd", "--out", str(tmp_path / "c"), *QUICK]) == 2
    assert "task 'mlp_digits' has no option 'dim'" in _err_line(capsys)
    assert not (tmp_path / "c").exists()
    # resuming with other task options is refused
    assert cli.main(["bench", "--task", "quadratic,rosenbrock", "--task-opt", "dim=7",
                     "--optimizer", "sgd", "--out", str(out), *QUICK, "--resume"]) == 2
    assert "task_options" in _err_line(capsys)


PLUGIN = '''
from metaopt import tasks


def factory(dim=4, device="cpu"):
    """A quadratic from a plugin package."""
    return tasks.get("quadratic", dim=dim, device=device)
'''


def test_bench_runs_a_plugin_task_from_a_temporary_package(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(PLUGIN)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "metaopt", "bench", "--task",
                           "mypkg.mod:factory", "--task-opt", "dim=3", "--optimizer", "sgd",
                           "--out", str(out), *QUICK], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| mypkg.mod:factory | sgd | 1 |" in proc.stdout
    assert (out / "curves_mypkg.mod_factory.png").exists()
    rec = json.loads((out / "curves.jsonl").read_text().splitlines()[0])
    assert rec["task"] == "mypkg.mod:factory"
    bad = subprocess.run([sys.executable, "-m", "metaopt", "bench", "--task",
                          "mypkg.mod:nothing", "--optimizer", "sgd", "--out",
                          str(tmp_path / "o2")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "mypkg.mod:nothing" in bad.stderr and bad.stderr.count("\n") == 1


def test_bench_files_are_0644(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "b"
        assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd", "--steps", "3",
                         "--seeds", "1", "--tune-trials", "1", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert {"curves.jsonl", "results.md", "bench_config.json", "optuna.sqlite3"} <= set(modes)
    assert set(modes.values()) == {"0o644"}, modes


def test_ctrl_c_during_tuning_is_one_line(tmp_path, monkeypatch, capfd):
    def interrupted(*a, **k):
        if a[3] > 1:  # not the one-step check
            raise KeyboardInterrupt
        return real(*a, **k)

    real = harness.train_curve
    monkeypatch.setattr(harness, "train_curve", interrupted)
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd", "--steps", "3",
                     "--seeds", "1", "--tune-trials", "2", "--out", str(tmp_path / "b")]) == 130
    err = [l for l in capfd.readouterr().err.splitlines() if l.strip() and "bench:" not in l]
    assert err == ["metaopt: interrupted: bench; rerun the same command with --resume to "
                   "continue"]


def test_report_rerenders_a_bench_folder(tmp_path, capsys):
    out = tmp_path / "b"
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd,adamw", "--out",
                     str(out), *QUICK]) == 0
    table = (out / "results.md").read_text()
    for name in ("results.md", "curves_quadratic.png", "profile.png"):
        (out / name).unlink()
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "results.md").read_text() == table
    assert (out / "curves_quadratic.png").exists() and (out / "profile.png").exists()
    assert "| quadratic | adamw | 1 |" in capsys.readouterr().out


def test_report_errors_and_dispatch(tmp_path, capsys, monkeypatch):
    assert cli.main(["report", str(tmp_path / "none")]) == 2
    assert "is not a folder" in _err_line(capsys)
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "holds no bench, search, meta-train or bilevel run" in _err_line(capsys)
    (tmp_path / "search.sqlite").write_bytes(b"")
    fake = types.ModuleType("search")
    monkeypatch.setitem(sys.modules, "search", fake)
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "search.report is missing" in _err_line(capsys)
    seen = []
    fake.report = lambda d: seen.append(d) or 0
    assert cli.main(["report", str(tmp_path)]) == 0 and seen == [str(tmp_path)]


def test_export_dispatches_to_search_export(tmp_path, capsys):
    """``metaopt export DIR`` is search's exporter: a folder without a search is one line."""
    assert cli.main(["export", str(tmp_path / "no_search_here")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metaopt: error:" in err
