"""Speed-up of meta-training across local processes (``metaopt meta-train --nproc N``, gloo).

Runs the same ``metaopt meta-train`` command (PES, μLO on ``mlp_digits``) with 1, 2 and 4
local processes, one after the other in this run, and reports the training time of each (the
``meta_train`` call on rank 0, from ``meta_train.json``; process start-up and torch import are
shown apart), its ratio to one process, and how far each theta is from the one-process theta
(float32 tasks vmapped in batches of another size round differently; see
:mod:`learned.distributed`)::

    python experiments/scale_meta_train.py --steps 8 --nprocs 1,2,4

writes ``experiments/results/scale_meta_train.md`` (first line: the exact command).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from learned import MLPLOpt, load_theta  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402

RESULT = ROOT / "experiments" / "results" / "scale_meta_train.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--nprocs", default="1,2,4")
    p.add_argument("--num-tasks", type=int, default=8)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--truncation", type=int, default=10)
    p.add_argument("--out", type=Path, default=RESULT)
    a = p.parse_args()
    command = "python " + " ".join(shlex.quote(x) for x in
                                   [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    flags = ["--task", "mlp_digits", "--task-opt", f"width={a.width}", "--task-opt",
             "batch_size=32", "--num-tasks", str(a.num_tasks), "--truncation",
             str(a.truncation), "--horizon", "100", "--steps", str(a.steps), "--no-progress",
             "--device", "cpu", "--checkpoint-every", str(a.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rows, thetas = [], {}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in a.nprocs.split(",")]:
            out = Path(tmp) / f"n{n}"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "learned.cli", *flags, "--out", str(out),
                            "--nproc", str(n)], check=True, env=env, cwd=ROOT)
            wall = time.perf_counter() - t0
            summary = json.loads((out / "meta_train.json").read_text())
            assert summary["processes"] == n, summary["processes"]
            thetas[n] = load_theta(out / "theta.safetensors", MLPLOpt())
            rows.append((n, summary["seconds_this_session"], wall))
            print(f"{n} process(es): train {rows[-1][1]:.1f} s, command {wall:.1f} s", flush=True)
    base = rows[0][1]
    first = thetas[rows[0][0]]
    lines = [
        f"`{command}`", "",
        "# Meta-training across local processes (`metaopt meta-train --nproc N`, gloo)", "",
        f"Machine: {_cpu_name()}, {os.cpu_count()} cores, "
        f"shared with other engineers' jobs and loaded (load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end); torch {torch.__version__}; Python "
        f"{platform.python_version()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        "1 torch thread per process.", "",
        f"Settings: PES, μLO (MLPLOpt defaults) on mlp_digits width {a.width}, batch 32, "
        f"{a.num_tasks} tasks, truncation {a.truncation}, {a.steps} outer steps (the same "
        "seed in every row). `train s`: the `meta_train` call on rank 0 (includes the first, "
        "slower step); `command s`: the whole command (process start, torch import, "
        "rendezvous).", "",
        "| processes | train s | speed-up (train) | command s | max abs theta diff vs 1 |",
        "|---|---|---|---|---|"]
    for n, train, wall in rows:
        diff = max(float((thetas[n][k] - first[k]).abs().max()) for k in first)
        lines.append(f"| {n} | {train:.1f} | {base / train:.2f} | {wall:.1f} | {diff:.1e} |")
    lines += ["", "Each process vmaps its share of the tasks; the result equals one process's "
              "up to the rounding of vmapped batches of another size (bit for bit with the "
              "same `tasks_per_vmap`, tested in `tests/learned/test_learned_distributed.py`). "
              "On 2 shared cores more than 2 processes cannot speed up; the ratios are "
              "measured in one run under the same load."]
    write_atomic(a.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
