"""Meta-train the pretrained μLO on one GPU within a time budget (the CPU run's recipe).

    python experiments/gpu_pretrained.py --out DIR --minutes 4 [--init THETA] [--device cuda]

Runs stage ``meta-train`` of ``experiments/pretrained.py`` (same LO, task family, PES settings,
warm-start lr pick and meta-validation) on ``--device`` for at most ``--minutes`` of wall time
(a chunk of outer steps and its validation start only when their measured time still fits),
and writes into DIR:

* ``best.safetensors``: the theta selected by meta-validation (loadable with
  ``learned.load_lopt``; ship it with ``cp DIR/best.safetensors learned/pretrained/``),
* ``theta_<outer step>.safetensors``: a snapshot at every validation,
* ``meta.json``: the log (warm-start lr grid, validation score and meta-training seconds at
  every validation, the device), ``gpu_pretrained.md``: a summary with outer steps per hour.

``--init`` starts from a theta file (e.g. the CPU run's best) instead of the Adam warm start.
Needs no optuna. Tested on the CPU with ``--device cpu --minutes 0.5``.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pretrained  # noqa: E402
from pretrained import meta_train_stage  # noqa: E402

from metaopt.helpers import write_atomic  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--val-every", type=int, default=20)
    p.add_argument("--init", default=None)
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    a = p.parse_args(argv)
    if a.minutes <= 0:
        p.error("--minutes must be > 0")
    torch.set_num_threads(1)
    if a.quick:
        pretrained.HORIZON, pretrained.TRUNCATION, pretrained.NUM_TASKS = 4, 2, 2
        pretrained.LR0_GRID = (3e-3, 3e-2)
    out = Path(a.out)
    t0 = time.time()
    log = meta_train_stage(out, a.minutes, 10**9, a.val_every, a.device, a.init)
    steps, secs = log["val"][-1][0], log["seconds"]
    device = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor()
    lines = [f"python experiments/gpu_pretrained.py {' '.join(sys.argv[1:])}", "",
             f"device {a.device} ({device}) | torch {torch.__version__} | "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | wall {time.time() - t0:.0f} s",
             "", f"warm-start lr {log['lr0']} (grid scores {log['lr0_scores']})",
             f"outer steps {steps} in {secs:.0f} s of meta-training"
             + (f" = {3600 * steps / secs:.0f} outer steps/hour" if secs else ""), "",
             "| outer step | meta-training s | validation (geomean final train loss) |",
             "|---:|---:|---:|"]
    lines += [f"| {r[0]} | {r[2]:.0f} | {r[1]:.4f} |" for r in log["val"]]
    write_atomic(out / "gpu_pretrained.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
