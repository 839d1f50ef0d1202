"""The command line a results file records is the one that ran (shell-quoted, with the thread
variable and niceness of the process)."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

from metaopt.bench.machine import command_line


def test_command_line_quotes_arguments_and_reads_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    line = command_line(["experiments/x.py", "--out", "a b"])
    words = shlex.split(line)
    assert words[0] == "OMP_NUM_THREADS=1"
    assert words[-4:] == ["python", "experiments/x.py", "--out", "a b"]
    assert ("nice" in words) == (os.nice(0) != 0)


def test_command_line_names_niceness_of_a_niced_process():
    code = ("import os; os.environ.pop('OMP_NUM_THREADS', None); "
            "from metaopt.bench.machine import command_line; print(command_line(['s.py']))")
    out = subprocess.run(["nice", "-n", "3", sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == f"nice -n {os.nice(0) + 3} python s.py"
