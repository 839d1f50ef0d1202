"""Every results file (experiments/results/*.md) starts with the command that produced it.

The project standard: a results file opens with the exact command of its run, so nobody has
to guess how a table was made. The first line is either ``Command: ...`` (which may also say
that the exact command was not recorded, and what is known) or a backticked command line
that runs ``python`` or ``bash``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "results"
BACKTICKED_COMMAND = re.compile(r"^`[^`]*\b(?:python3?|bash) [^`]+`")


def names_a_command(first_line: str) -> bool:
    """True when a results file's first line names the command that produced it."""
    return first_line.startswith("Command:") or bool(BACKTICKED_COMMAND.match(first_line))


def test_recogniser_rejects_lines_without_a_command():
    assert names_a_command("Command: `python experiments/x.py --out experiments/results`")
    assert names_a_command("`OMP_NUM_THREADS=1 nice -n 10 python experiments/x.py`")
    assert names_a_command("`bash experiments/gpu.sh zoo`")
    assert not names_a_command("# Zoo quality")
    assert not names_a_command("Machine: Intel(R) Xeon(R) Processor")
    assert not names_a_command("`metaopt.mup`: per-layer lrs")
    assert not names_a_command("")


RESULT_FILES = sorted(RESULTS.glob("*.md"))


def test_results_folder_has_files():
    assert RESULT_FILES, f"no results files under {RESULTS}"


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_results_file_starts_with_its_command(path):
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    assert names_a_command(first), (
        f"{path.name}: first line must be 'Command: ...' or a backticked python/bash command, "
        f"got {first[:80]!r}")


ROOT = RESULTS.parent.parent
SCRIPT_RUN = re.compile(r"(?:python3?|bash) (experiments/[\w/]+\.(?:py|sh))((?: +[^ `]+)*)")


def _script_source(script: Path, seen: set | None = None) -> str:
    """The text of ``script`` and of the experiments modules it imports (its options may be
    declared there, e.g. ``l2o_common.add_run_args``)."""
    seen = set() if seen is None else seen
    seen.add(script)
    text = script.read_text(encoding="utf-8")
    for name in re.findall(r"^(?:from|import) (\w+)", text, flags=re.M):
        helper = script.parent / f"{name}.py"
        if helper.is_file() and helper not in seen:
            text += _script_source(helper, seen)
    return text


def named_runs(first_line: str) -> list[tuple[str, list[str]]]:
    """``(script, options)`` of every ``python|bash experiments/...`` run in backticks."""
    runs = []
    for quoted in re.findall(r"`([^`]*)`", first_line):
        for script, rest in SCRIPT_RUN.findall(quoted):
            runs.append((script, re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest)))
    return runs


def test_named_runs_reads_scripts_and_options():
    assert named_runs("Command: `OMP_NUM_THREADS=1 python experiments/x.py --a 1 --b-c` and "
                      "`bash experiments/gpu.sh zoo`") == [("experiments/x.py", ["--a", "--b-c"]),
                                                           ("experiments/gpu.sh", [])]
    assert named_runs("Command: not recorded.") == []


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_the_command_names_an_existing_script_and_its_options(path):
    """The script a results file names exists and still takes every option the command
    passes (a renamed flag makes the recorded command wrong)."""
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    for script, options in named_runs(first):
        assert (ROOT / script).is_file(), f"{path.name}: {script} does not exist"
        source = _script_source(ROOT / script)
        missing = [o for o in options if f'"{o}"' not in source and f"'{o}'" not in source]
        assert not missing, f"{path.name}: {script} has no option {missing}"
