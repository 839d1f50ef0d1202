"""Programs evaluated per second: batched interpreter vs one program at a time, same run.

A candidate mix like the search's (mutants of AdamW, each trained on the lr grid) is trained
for K steps on the teacher-student MLP proxy by three evaluators that give the same numbers:
  serial  - each (program, lr, seed) separately, metaopt.rule.apply per step (one at a time);
  vmapped - one program at a time, its lr grid and seeds vmapped;
  batched - all programs together in the register-machine interpreter (search.batched).

    python experiments/search_throughput.py [--programs 256] [--serial 4] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search_tasks import TeacherStudentMLP, machine_line  # noqa: E402

from metaopt.helpers import write_atomic  # noqa: E402
from search.backends import evaluate_local  # noqa: E402
from search.fitness import FitnessConfig  # noqa: E402
from search.mutate import valid_child  # noqa: E402
from search.warm import warm_start  # noqa: E402


def candidates(n: int, seed: int = 0):
    """``n`` checked, pruned mutants of AdamW (random walks of 1-8 mutations)."""
    rng, start, out = random.Random(seed), warm_start("adamw"), []
    while len(out) < n:
        prog = start
        for _ in range(rng.randint(1, 8)):
            prog, pruned, _ = valid_child(prog, rng)
        out.append(pruned)
    return out


def rate(progs, task, cfg, evaluator, chunk=None) -> tuple[float, float]:
    """(programs per second, seconds) evaluating ``progs`` (in chunks for ``batched``)."""
    if task.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    chunk = chunk or len(progs)
    for i in range(0, len(progs), chunk):
        evaluate_local(progs[i:i + chunk], task, cfg, evaluator)
    if task.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return len(progs) / dt, dt


def measure(n_batched: int, n_serial: int, device: str, steps: int, chunk: int | None = None) -> list[tuple]:
    task = TeacherStudentMLP(device=device)
    cfg = FitnessConfig(steps=steps, lrs=(1e-3, 1e-2, 1e-1, 1.0), seeds=(0,), time_limit=600)
    progs = candidates(n_batched)
    evaluate_local(progs[:2], task, cfg, "batched")  # warm-up (lazy init, kernels)
    evaluate_local(progs[:1], task, cfg, "vmapped")
    evaluate_local(progs[:1], task, cfg, "serial")
    rows = []
    for name, n, ch in (("serial (one at a time)", n_serial, None), ("vmapped (lr grid)", n_serial, None),
                        ("batched interpreter", n_batched, chunk)):
        ev = name.split()[0]
        r, dt = rate(progs[:n], task, cfg, ev, ch)
        rows.append((name, n, dt, r))
    return rows, task, cfg


def table(rows, task, cfg, device) -> str:
    base = rows[0][3]
    lines = [f"Proxy: teacher-student MLP ({task.d_in}-{task.width}-1, batch {task.batch}), "
             f"K={cfg.steps} steps, lr grid of {len(cfg.lrs)}, {len(cfg.seeds)} seed; device {device}.",
             "", "| evaluator | programs | seconds | programs/s | vs one at a time |",
             "|---|---:|---:|---:|---:|"]
    for name, n, dt, r in rows:
        lines.append(f"| {name} | {n} | {dt:.2f} | {r:.2f} | {r / base:.1f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--programs", type=int, default=256)
    p.add_argument("--serial", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the table to OUT/search_throughput.md")
    a = p.parse_args(argv)
    rows, task, cfg = measure(a.programs, a.serial, a.device, a.steps)
    text = f"{machine_line()}\n\n{table(rows, task, cfg, a.device)}\n"
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        write_atomic(os.path.join(a.out, "search_throughput.md"), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
