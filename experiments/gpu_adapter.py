"""Step time of the RuleOptimizer adapter (zoo ``adamw``: loop / fused / compiled) against
``torch.optim.AdamW`` (for-loop / foreach / fused) on CUDA, within a 60 s cap.

Parameter sets of the notes (zoo-and-performance §3): many small tensors (1024 x 256x256 =
67M params) first, then few large ones (32 x 2048x2048 = 134M params) including the compiled
path (its compile time grows with the tensor count, so it is not run on the small set).
Round-robin timing with CUDA synchronisation, medians, ratios to torch's fused AdamW in the
same run, and the multiple of the 28 B/param floor at the measured device copy bandwidth.
Candidates that would start after the cap are reported as skipped.

    python experiments/gpu_adapter.py --out DIR         # writes DIR/adapter.md and prints it
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from metaopt.bench.machine import machine_line
from metaopt.bench.step_timing import adamw_factories, copy_bandwidth, time_candidates, timing_table
from metaopt.helpers import write_atomic

SETS = {
    "many small tensors (1024 x 256x256 = 67M params)": ([(256, 256)] * 1024, False),
    "few large tensors (32 x 2048x2048 = 134M params)": ([(2048, 2048)] * 32, True),
}
SMOKE_SETS = {"smoke: 16 x 8x8": ([(8, 8)] * 16, False),
              "smoke: 2 x 32x32": ([(32, 32)] * 2, True)}
REFERENCE = "torch AdamW for-loop"
RATIO_TO = "torch AdamW fused"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cap-s", type=float, default=60.0, help="time cap in seconds (default 60)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--smoke", action="store_true",
                   help="tiny tensors on the CPU: checks the script, measures nothing useful")
    args = p.parse_args(argv)
    if not (args.smoke or torch.cuda.is_available()):
        print("gpu_adapter: error: CUDA is not available on this machine", flush=True)
        return 2
    started = time.perf_counter()
    deadline = started + 0.85 * args.cap_s
    dev = torch.device("cpu" if args.smoke else "cuda")
    sets = SMOKE_SETS if args.smoke else SETS
    bandwidth = copy_bandwidth(dev)
    parts = [f"# RuleOptimizer step time vs torch.optim.AdamW ({dev.type.upper()})\n\n"
             f"Machine: {machine_line(dev)}\n\n"
             f"Measured device copy bandwidth: {bandwidth / 1e9:.0f} GB/s. Median of up to "
             f"{args.repeats} steps after {args.warmup} warm-up steps, round-robin; "
             f"`x {RATIO_TO}`: ratio of medians in this run; `x floor`: over 28 B/param / "
             f"bandwidth; max abs diff: parameters after the same steps against {REFERENCE}.\n"]
    for title, (shapes, compiled) in sets.items():
        timings = time_candidates(adamw_factories(compiled), shapes, dev, args.warmup,
                                  args.repeats, deadline=deadline, reference=REFERENCE)
        n = sum(torch.Size(s).numel() for s in shapes)
        parts.append(f"\n## {title}\n\n" + timing_table(timings, n, bandwidth, RATIO_TO))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    parts.append(f"\nTotal wall time {time.perf_counter() - started:.0f} s "
                 f"(cap {args.cap_s:.0f} s).\n")
    os.makedirs(args.out, exist_ok=True)
    text = "".join(parts)
    write_atomic(os.path.join(args.out, "adapter.md"), text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
