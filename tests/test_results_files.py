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
