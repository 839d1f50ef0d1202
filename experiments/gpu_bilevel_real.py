"""GPU row for issue 18: peak GPU memory of one implicit hypergradient (T inner steps without a
graph + CG 20) and of one unrolled hypergradient (reverse mode through T steps) against T, on the
real-model problem ``task_head``; torch.cuda.max_memory_allocated, so exact for the GPU.

    python experiments/gpu_bilevel_real.py --out DIR        # < 60 s on one GPU

Writes DIR/bilevel_real_gpu.md (command on the first line). On a machine without CUDA it runs on
the CPU and reports times only (memory: "-"), which is how it is tested.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bilevel import problems  # noqa: E402
from bilevel_real_cost import one_hypergrad  # noqa: E402
from metaopt import zoo  # noqa: E402
from metaopt.bench.machine import machine_line  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402


def measure(pb, method: str, steps: int, device) -> tuple[float | None, float]:
    h = pb.init_hparams()
    rule = zoo.rule("sgd", lr=0.5, momentum=0.9)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    one_hypergrad(pb, h, rule, method, steps)
    if device.type != "cuda":
        return None, time.perf_counter() - start
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", default="25,50,100,200")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pb = problems.get("task_head", width=args.width, train_steps=100, device=device)
    measure(pb, "implicit", 2, device), measure(pb, "unrolled", 2, device)  # warm-up
    lines = [f"Command: `python experiments/gpu_bilevel_real.py {' '.join(sys.argv[1:])}`", "",
             "# Peak memory of implicit vs unrolled hypergradients against inner steps (task_head)", "",
             f"Machine: {machine_line(device)}. "
             f"task_head width {args.width}: {pb.num_hparams} hyperparameters, float64.", "",
             "| inner steps T | implicit peak MiB | implicit s | unrolled peak MiB | unrolled s |",
             "|---|---|---|---|---|"]
    for steps in [int(s) for s in args.steps.split(",")]:
        (mi, ti), (mu, tu) = measure(pb, "implicit", steps, device), measure(pb, "unrolled", steps, device)
        fmt = lambda m: "-" if m is None else f"{m:.1f}"  # noqa: E731
        lines.append(f"| {steps} | {fmt(mi)} | {ti:.2f} | {fmt(mu)} | {tu:.2f} |")
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, "bilevel_real_gpu.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
