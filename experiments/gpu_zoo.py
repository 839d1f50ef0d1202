"""The zoo step benchmark on CUDA at the issue's sizes, within a hard cap (run by gpu.sh).

    python experiments/gpu_zoo.py --out DIR        # writes DIR/zoo.md (+ zoo_bench.json)
    python experiments/gpu_zoo.py --out /tmp/z --device cpu --scale 0.03 --cap-s 90  # rehearsal

Ends within ``--cap-s`` (135 s) plus interpreter start; gpu.sh gives it 150 s.

Phases share one result file (each resumes the last), so whatever finished before the cap is
in the table: (1) AdamW and the most used elementwise members on (a) 32 x 2048^2 and
(b) 1024 x 256^2, (2) the second-order members amortized on (c) 8 x 1024^2, (3) every other
member on (a) and (b) while time is left. ``torch.compile`` warm-up (the "first step s"
column) counts toward the cap; members that do not fit are listed as skipped.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo_step_bench  # noqa: E402

FIRST = ["adamw", "lion", "sgd", "adabelief", "sophia", "adam", "grams", "ademamix"]
SECOND_ORDER = ["soap", "psgd", "muon", "shampoo"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cap-s", type=float, default=135.0, help="total wall-clock cap")
    ap.add_argument("--device", default="cuda", help="cpu only to rehearse at a small --scale")
    ap.add_argument("--scale", default="1")
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: gpu_zoo.py needs CUDA; run experiments/zoo_step_bench.py on CPU",
              file=sys.stderr)
        return 2
    end = time.perf_counter() + args.cap_s
    left = lambda: max(1.0, end - time.perf_counter())  # noqa: E731
    common = ["--device", args.device, "--scale", args.scale, "--steps", "20", "--windows", "5",
              "--warmup", "5", "--min-left-s", "20", "--out", args.out]
    from metaopt import zoo

    rest = [m for m in zoo.names() if m not in FIRST + SECOND_ORDER]
    zoo_step_bench.main(common + ["--members", ",".join(FIRST), "--configs", "a,b",
                                  "--budget-s", str(left() * 0.55)])
    zoo_step_bench.main(common + ["--members", ",".join(SECOND_ORDER), "--configs", "c",
                                  "--steps", "10", "--windows", "3", "--warmup", "2",
                                  "--budget-s", str(left() * 0.5), "--resume"])
    zoo_step_bench.main(common + ["--members", ",".join(rest), "--configs", "a,b",
                                  "--budget-s", str(left() - 3), "--resume"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
