"""Seconds per evaluation of each member of the proxy and held-out task families on one CPU
thread: build the task, train it with AdamW (lr 1e-3) for its horizon through metaopt.unroll's
per-step functional path (torch.func.grad + metaopt.apply), then evaluate it once.

    OMP_NUM_THREADS=1 python experiments/families_timing.py --out experiments/results/families.md
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from metaopt import apply, init_states, zoo
from metaopt.bench.machine import machine_line
from metaopt.helpers import write_atomic
from metaopt.tasks import families


def evaluation_seconds(spec) -> tuple[float, float, float]:
    """(build s, train+evaluate s, final val_loss) of one member."""
    t0 = time.perf_counter()
    task = spec.build("cpu")
    t1 = time.perf_counter()
    rule = zoo.rule("adamw", lr=1e-3)
    gen = task.generator(0)
    params = task.init(gen)
    states = init_states(rule, params)
    grad = torch.func.grad(task.loss)
    for t in range(1, spec.horizon + 1):
        params, states = apply(rule, params, grad(params, task.sample_batch(gen)), states, t)
    loss = task.evaluate(params)["val_loss"]
    return t1 - t0, time.perf_counter() - t1, loss


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="markdown file to write (default: print)")
    args = p.parse_args()
    torch.set_num_threads(1)
    lines = [f"# Task families: seconds per evaluation\n",
             f"Command: `OMP_NUM_THREADS=1 python experiments/families_timing.py"
             f"{' --out ' + args.out if args.out else ''}`\n",
             f"Machine: {machine_line('cpu')}; one torch thread. Times scale with the load "
             "average shown (other jobs sharing the cores).\n",
             "AdamW (lr 1e-3) for the member's horizon, then one evaluation; build time "
             "(data, template module) separately.\n",
             "| family | member | steps | build s | train+eval s | ms/step | val loss |",
             "|---|---|---|---|---|---|---|"]
    evaluation_seconds(families.TaskSpec("logreg_digits", {}, 2))  # warm up torch.func, data
    for name in ("proxy", "heldout"):
        for spec in families.get(name):
            build_s, run_s, loss = evaluation_seconds(spec)
            lines.append(f"| {name} | `{spec.label}` | {spec.horizon} | {build_s:.2f} | "
                         f"{run_s:.2f} | {1000 * run_s / spec.horizon:.1f} | {loss:.4g} |")
            print(lines[-1], file=sys.stderr)
    text = "\n".join(lines) + "\n"
    if args.out:
        write_atomic(args.out, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
