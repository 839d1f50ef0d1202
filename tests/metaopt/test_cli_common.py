"""The shared CLI helpers: --task / --task-opt, output-folder checks, the Ctrl-C wrapper."""
import argparse
import os
import sys
import textwrap

import pytest
import torch

from metaopt import cli_common, tasks
from metaopt.cli_common import (UsageError, add_task_flags, check_out_dir, cli_entry,
                                parse_task_opts, parse_value, task_from_args)

PLUGIN = '''
import torch
from metaopt import tasks

def factory(width=8, scale=1.0, device="cpu"):
    """A plugin task: mlp_digits at another width."""
    task = tasks.get("mlp_digits", width=width, device=device)
    task.scale = scale
    return task

def not_a_task(**kw):
    return 42

def broken():
    raise RuntimeError("no data here\\nsecond line")
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("mypkg", "mypkg.mod"):
        sys.modules.pop(name, None)


def parse(argv, default=None):
    p = argparse.ArgumentParser()
    add_task_flags(p, default=default)
    return p.parse_args(argv)


def test_task_from_args_builtin_with_typed_options():
    args = parse(["--task", "mlp_digits", "--task-opt", "width=24", "--task-opt",
                  "param=mup", "--task-opt", "output_mult=2", "--task-opt", "dtype=float64"])
    task = task_from_args(args, torch.device("cpu"))
    assert (task.width, task.param, task.dtype) == (24, "mup", torch.float64)
    assert task.param_info[0].fan_out == 24
    assert isinstance(parse_task_opts("mlp_digits", ["output_mult=2"])["output_mult"], float)


def test_task_from_plugin_factory(plugin):
    task = task_from_args(parse(["--task", "mypkg.mod:factory", "--task-opt", "width=12"]), "cpu")
    assert task.width == 12 and task.scale == 1.0


@pytest.mark.parametrize("argv,words", [
    (["--task", "nope"], ["unknown task 'nope'", "mlp_digits", "pkg.module:factory"]),
    (["--task", "mlp_digits", "--task-opt", "widht=3"], ["no option 'widht'", "width"]),
    (["--task", "mlp_digits", "--task-opt", "width=abc"], ["width=abc", "integer"]),
    (["--task", "mlp_digits", "--task-opt", "width=2.5"], ["integer"]),
    (["--task", "mlp_digits", "--task-opt", "width"], ["KEY=VALUE"]),
    (["--task", "mlp_digits", "--task-opt", "width=0"], ["width must be an integer >= 1"]),
    (["--task", "mlp_digits", "--task-opt", "device=cuda"], ["--device"]),
    (["--task", "mlp_digits", "--task-opt", "width=3", "--task-opt", "width=4"], ["twice"]),
    (["--task", "mypkg.mod:nothere"], ["mypkg.mod:nothere", "not found"]),
    (["--task", "nopkg.mod:factory"], ["cannot import 'nopkg'", "PYTHONPATH"]),
    (["--task", "mypkg.mod:not_a_task"], ["not a task", "int"]),
    (["--task", "mypkg.mod:broken"], ["failed to build", "RuntimeError: no data here"]),
    (["--task", "mypkg.mod:factory", "--task-opt", "depth=3"], ["no option 'depth'", "width"]),
    (["--task", "os.system;x:y"], ["pkg.module:factory"]),
])
def test_bad_task_flags_are_one_line(plugin, argv, words):
    with pytest.raises(UsageError) as e:
        task_from_args(parse(argv), "cpu")
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("text,default,want", [
    ("3", 1, 3), ("3", 1.0, 3.0), ("true", False, True), ("0", True, False), ("mup", "sp", "mup"),
    ("12", "sp", "12"), ("1e-3", inspect_empty := __import__("inspect").Parameter.empty, 1e-3),
    ("7", inspect_empty, 7), ("False", inspect_empty, False), ("abc", inspect_empty, "abc"),
    ("float64", torch.float32, torch.float64),
])
def test_parse_value(text, default, want):
    got = parse_value(text, default)
    assert got == want and type(got) is type(want)


def test_check_out_dir_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_out_dir(target, resume=False, marker="m.json") == target
    assert not (tmp_path / "a").exists()
    target.mkdir(parents=True)
    (target / "m.json").write_text("{}")
    with pytest.raises(UsageError, match=r"already holds a run \(m.json\); pass --resume"):
        check_out_dir(target, resume=False, marker="m.json")
    check_out_dir(target, resume=True, marker="m.json")


def test_check_out_dir_file_and_below_file(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_out_dir(f, resume=False, marker="m")
    with pytest.raises(UsageError, match="f.txt is a file, so the folder cannot be created"):
        check_out_dir(f / "sub", resume=False, marker="m")


def test_check_out_dir_unwritable(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(cli_common.os, "access",
                        lambda p, mode: False if str(p) == str(locked) else real(p, mode))
    with pytest.raises(UsageError, match="cannot write in .*locked"):
        check_out_dir(locked / "run", resume=False, marker="m")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_out_dir_unwritable_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UsageError, match="cannot write"):
        check_out_dir(locked / "run", resume=False, marker="m")


def test_cli_entry_ctrl_c_is_one_line(capsys):
    @cli_entry(what="bench")
    def main(argv):
        raise KeyboardInterrupt

    assert main([]) == 130
    err = capsys.readouterr().err
    assert err.strip() == ("metaopt: interrupted: bench; rerun the same command with --resume "
                           "to continue")


def test_cli_entry_usage_errors_and_codes(capsys):
    @cli_entry
    def main(argv):
        if argv == ["bad"]:
            raise UsageError("bad\n   thing")
        return None if argv == ["none"] else 3

    assert main(["bad"]) == 2
    assert capsys.readouterr().err == "metaopt: error: bad thing\n"
    assert main(["none"]) == 0 and main(["x"]) == 3
