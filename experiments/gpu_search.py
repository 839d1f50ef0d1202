"""GPU check for program search (about 60-90 s on one H100/H200; parts that would start after
--budget-s seconds are skipped).

1. Throughput: candidate programs (AdamW mutants, lr grid of 4) trained per second on the
   teacher-student MLP proxy, one at a time vs vmapped vs the batched interpreter with >= 1000
   programs (4,000+ training runs) in flight, in the same run.
2. End to end: a short regularized-evolution search on the GPU with 256 children per round.

    python experiments/gpu_search.py --out DIR     # writes DIR/search.md and prints it
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search_tasks import TeacherStudentMLP, machine_line  # noqa: E402
from search_throughput import candidates, rate  # noqa: E402

from metaopt.helpers import write_atomic  # noqa: E402
from search.backends import evaluate_local  # noqa: E402
from search.evolve import run  # noqa: E402
from search.fitness import FitnessConfig  # noqa: E402


def throughput(task, label, cfg, progs, sizes, n_serial, t_start, budget_s) -> list[str]:
    """A markdown table of programs/s for each evaluator on ``task`` (parts past the time
    budget are skipped and shown as n/a)."""
    evaluate_local(progs[:8], task, cfg, "batched")
    evaluate_local(progs[:1], task, cfg, "vmapped")
    evaluate_local(progs[:1], task, cfg, "serial")
    plan = [("serial (one at a time)", "serial", n_serial), ("vmapped (lr grid)", "vmapped", n_serial)]
    plan += [("batched interpreter", "batched", n) for n in sizes]
    rows = []
    for name, ev, n in plan:
        if time.perf_counter() - t_start > budget_s:
            rows.append((name, n, None, None))
            continue
        n = len(progs[:n])
        r, dt = rate(progs[:n], task, cfg, ev)
        rows.append((name, n, dt, r))
        print(f"{label[:30]:30s} {name:24s} {n:5d} programs {dt:7.2f}s {r:9.2f}/s", flush=True)
    base = rows[0][3]
    lines = [f"Proxy: {label}, K={cfg.steps} steps, lr grid of {len(cfg.lrs)} (4 training runs per "
             f"program).", "", "| evaluator | programs in flight | seconds | programs/s | vs one at a time |",
             "|---|---:|---:|---:|---:|"]
    for name, n, dt, r in rows:
        if r is None:
            lines.append(f"| {name} | {n} | n/a (time cap) | | |")
        else:
            lines.append(f"| {name} | {n} | {dt:.2f} | {r:.2f} | {r / base:.1f}x |")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="program-search GPU check")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=60.0, help="stop starting new parts after this many seconds")
    p.add_argument("--programs", default="1024,4096", help="batched sizes to time")
    p.add_argument("--serial", type=int, default=6, help="programs timed one at a time")
    p.add_argument("--search-budget", type=int, default=1024)
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_search: CUDA is not available", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    sizes = [int(x) for x in a.programs.split(",")]
    progs = candidates(max(sizes))
    cfg = FitnessConfig(steps=50, lrs=(1e-3, 1e-2, 1e-1, 1.0), seeds=(0,), time_limit=600)
    task = TeacherStudentMLP(device=a.device)
    lines = [machine_line(), "", "## Throughput", ""]
    lines += throughput(task, f"teacher-student MLP {task.d_in}-{task.width}-1 (batch {task.batch})",
                        cfg, progs, sizes, a.serial, t_start, a.budget_s)
    if time.perf_counter() - t_start < a.budget_s:
        t0 = time.perf_counter()
        res = run(task, budget=a.search_budget, seed=0, warm_start="adamw", population=256,
                  tournament=8, batch=256, fitness=cfg, device=a.device, progress=False)
        dt = time.perf_counter() - t0
        s = res.summary
        lines += ["## End-to-end search", "",
                  f"{s['evaluated']} programs ({s['unique']} trained, {s['cache_hits']} cache hits) in "
                  f"{dt:.1f} s on {a.device} = {s['evaluated'] / dt:.1f} evaluated/s, "
                  f"{s['unique'] / dt:.1f} trained/s; best val loss {res.fitness:.4g} "
                  f"(AdamW start {res.history[0]['fitness']:.4g}).", "", "```",
                  res.best_pruned.to_text().rstrip(), "```", ""]
    if time.perf_counter() - t_start < a.budget_s:
        from metaopt import tasks

        digits = tasks.get("mlp_digits", width=32, device=a.device)
        lines += throughput(digits, "mlp_digits width 32 (batch 128)", cfg, progs, [1024],
                            max(2, a.serial // 2), t_start, a.budget_s + 10)
    text = "\n".join(lines) + "\n"
    os.makedirs(a.out, exist_ok=True)
    write_atomic(os.path.join(a.out, "search.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
