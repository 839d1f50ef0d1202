"""Step time of the RuleOptimizer adapter (zoo ``adamw``: loop / fused / compiled) against
``torch.optim.AdamW`` (for-loop / foreach / fused) on CPU.

Two parameter sets of about 10M float32 parameters: a few large tensors (4 x 2560x1024) and
many small ones (1024 x 100x100). Every candidate steps its own copy of the same tensors with the
same fixed gradients; steps are timed round-robin and the median is reported, with ratios to
torch's fused AdamW measured in the same run and the multiple of the 28 B/param memory floor.
The compiled path is measured on the large set only: its compile time grows with the number of
tensors (the loop over tensors is unrolled into the graph).

    python experiments/adapter_step_bench.py            # writes experiments/results/adapter.md
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from metaopt.bench.machine import command_line, machine_line
from metaopt.bench.step_timing import adamw_factories, copy_bandwidth, time_candidates, timing_table
from metaopt.helpers import write_atomic

SETS = {
    "few large tensors (4 x 2560x1024 = 10.5M params)": [(2560, 1024)] * 4,
    "many small tensors (1024 x 100x100 = 10.2M params)": [(100, 100)] * 1024,
}
REFERENCE = "torch AdamW for-loop"
RATIO_TO = "torch AdamW fused"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the CPU is shared)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    bandwidth = copy_bandwidth("cpu")
    parts = [f"Command: `{command_line()}`\n\n"
             f"# RuleOptimizer step time vs torch.optim.AdamW (CPU)\n\n"
             f"Machine: {machine_line('cpu')}\n\n"
             f"Measured copy bandwidth: {bandwidth / 1e9:.1f} GB/s. Median of {args.repeats} "
             f"steps after {args.warmup} warm-up steps, round-robin over implementations; "
             f"`x {RATIO_TO}` is the ratio of medians in this run; `x floor` divides by "
             "28 B/param / bandwidth; max abs diff: parameters after the same steps against "
             f"{REFERENCE}.\n"]
    for title, shapes in SETS.items():
        compiled = len(shapes) <= 32
        timings = time_candidates(adamw_factories(compiled), shapes, "cpu", args.warmup,
                                  args.repeats, reference=REFERENCE)
        n = sum(torch.Size(s).numel() for s in shapes)
        note = "" if compiled else "\n(compiled path not run here: see the docstring)\n"
        parts.append(f"\n## {title}\n\n" + timing_table(timings, n, bandwidth, RATIO_TO) + note)
        print(parts[-1], flush=True)
    parts.append(f"\nTotal wall time {time.perf_counter() - started:.0f} s.\n")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "adapter.md")
    write_atomic(path, "".join(parts))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
