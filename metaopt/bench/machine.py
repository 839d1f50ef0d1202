"""A one-line description of the machine a benchmark ran on (CPU model, GPU, torch, date), and
the command line that ran it."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys

import torch


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: str | torch.device = "cpu") -> str:
    """``CPU ... (cores, load, threads) | GPU ... | torch X | Python Y | UTC date``; the load
    average says how shared the machine was while timings were taken."""
    dev = torch.device(device)
    parts = [f"CPU {cpu_model()} ({os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f}, {torch.get_num_threads()} torch threads)"]
    if dev.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(dev)}")
    parts += [f"torch {torch.__version__}", f"Python {platform.python_version()}",
              _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")]
    return " | ".join(parts)


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran this script, to retype from the same folder:
    ``[OMP_NUM_THREADS=n] [nice -n k] python <script> <args>``, shell-quoted. ``argv`` is
    ``sys.argv`` (script first) unless given; the thread variable and the niceness are read from
    this process."""
    argv = list(sys.argv if argv is None else argv)
    prefix = []
    if "OMP_NUM_THREADS" in os.environ:
        prefix.append(f"OMP_NUM_THREADS={shlex.quote(os.environ['OMP_NUM_THREADS'])}")
    niceness = os.nice(0)
    if niceness:
        prefix.append(f"nice -n {niceness}")
    return " ".join(prefix + ["python"] + [shlex.quote(a) for a in argv])
