"""L2O on one GPU, time-capped (about 35-45 s of work; gpu.sh gives it 60 s).

Meta-trains Math-L2O (L2O-PA), L2O-DM and RNNprop on the paper-sized LASSO (250 x 500, 64
instances per outer step, horizon 100, unroll 20) for a fixed wall-clock budget each, then reports
seconds per outer step and the relative error at 100 and 1,000 iterations on 64 in-distribution
test instances (float64), with ISTA, FISTA and Adam for reference.

    python experiments/gpu_l2o.py --out DIR          # writes DIR/l2o.md and prints it

Training problems cycle through 4 pre-generated batches (generation and the Lipschitz SVDs run on
the CPU); the paper trains 500 outer steps on fresh batches, so this is a throughput measurement
and a short-training result, not a reproduction of the paper's numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from l2o_common import (MODEL_LR, MODELS, TEST_SEED, TRAIN_SEED, curves, machine,  # noqa: E402
                        optimal_value, problem)
from learned.l2o import meta_train_l2o  # noqa: E402
from metaopt.helpers import write_atomic

ADAM_LR = 0.1  # the lr l2o_bench.py tuned for LASSO on CPU (best of 1e-3 .. 1e-1)
BUDGET_S = {"Math-L2O (PA)": 10.0, "L2O-DM": 4.0, "RNNprop": 4.0}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--instances", type=int, default=64)
    p.add_argument("--device", default="cuda", help="cuda (default); cpu for a smoke test")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiplies the time budgets")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_l2o: error: CUDA is not available on this machine; use --device cpu")
    dev = torch.device(args.device)
    t_start = time.perf_counter()
    pool = [problem("lasso", "gaussian", args.instances, TRAIN_SEED + i, dev) for i in range(4)]
    rows, trained = [], {}
    for model, budget in BUDGET_S.items():
        lopt = MODELS[model]()
        theta = {k: v.to(dev) for k, v in lopt.init_theta(torch.Generator().manual_seed(0)).items()}
        meta_train_l2o(lopt, lambda i: pool[i % 4], 1, lr=MODEL_LR["lasso"][model], theta=theta,
                       progress=False)                                    # warm-up
        sync(dev)
        t0 = time.perf_counter()
        theta, hist = meta_train_l2o(lopt, lambda i: pool[i % 4], 10_000,
                                     lr=MODEL_LR["lasso"][model], theta=theta, progress=False,
                                     time_limit_s=budget * args.budget_scale)
        sync(dev)
        sec = time.perf_counter() - t0
        steps = len(hist) // 5
        rows.append(f"| {model} | {steps} | {sec / steps:.3f} | {hist[0]:.4g} -> {hist[-1]:.4g} |")
        trained[model] = (lopt, theta)
    test = problem("lasso", "gaussian", args.instances, TEST_SEED, dev, dtype=torch.float64)
    fstar = optimal_value(test)
    errs = curves(test, fstar, 1000, trained, adam_lr=ADAM_LR)
    lines = ["# L2O on GPU: LASSO 250 x 500", "", f"Device: {machine()}.", "",
             f"Meta-training, {args.instances} instances per outer step (time-capped):", "",
             "| model | outer steps | s / outer step | first -> last segment meta-loss |",
             "|---|---|---|---|", *rows, "",
             f"Relative error (F - F*)/F* on {args.instances} test instances (float64):", "",
             "| method | @100 | @1000 |", "|---|---|---|"]
    lines += [f"| {m} | {e[100]:.2e} | {e[1000]:.2e} |" for m, e in errs.items()]
    lines += ["", f"Total wall time {time.perf_counter() - t_start:.0f} s."]
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, "l2o.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
