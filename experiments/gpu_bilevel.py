"""GPU check of the bilevel part (about 1-2 minutes on one H100):

1. exactness on CUDA in float64: implicit hypergradients (direct, CG) against the ridge closed form;
2. peak GPU memory of one hypergradient against the number of inner steps T: implicit (T inner
   steps without a graph, then 20 CG iterations) vs unrolled (reverse mode through T steps);
3. time of one hypergradient in units of one inner gradient, measured in the same run.

    python experiments/gpu_bilevel.py --out DIR     # writes DIR/bilevel.md and prints it
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bilevel  # noqa: E402
from bilevel import problems  # noqa: E402
from bilevel.inner import rule_solve  # noqa: E402
from metaopt import zoo  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402


def exactness(dev) -> list[str]:
    pb = problems.get("ridge", n_features=50, n_train=200, n_val=200, seed=0, device=dev)
    h = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dev)
    ref = pb.closed_form_hypergrad(h)
    rows = []
    for method, kw in (("direct", {}), ("cg", {"tol": 1e-12, "maxiter": 200})):
        hg, info = bilevel.hypergrad(lambda p, x: pb.inner_loss(p, x), lambda p, x: pb.outer_loss(p, x), pb.solve(h), h,
                                     method, return_info=True, **kw)
        err = float(torch.linalg.vector_norm(hg - ref) / torch.linalg.vector_norm(ref))
        rows.append(f"| ridge d=50 float64 | {method} | {err:.2e} | {int(info.iterations)} |")
    return rows


def _timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def memory_and_time(dev) -> tuple[list[str], int]:
    pb = problems.get("mlp_wd", hidden=1024, n_train=1500, n_val=290, seed=0, dtype=torch.float32, device=dev)
    h = pb.init_hparams()
    inner, outer = (lambda p, x: pb.inner_loss(p, x)), (lambda p, x: pb.outer_loss(p, x))
    rule = zoo.rule("sgd", lr=0.05, momentum=0.9)
    grad_time = _timed(lambda: torch.func.grad(inner)(pb.init_params(), h), reps=10)
    rows = []
    for steps in (25, 100, 400):
        params = tuple(rule_solve(lambda p: inner(p, h), pb.init_params(), rule="sgd", steps=steps, lr=0.05,
                                  momentum=0.9))

        def implicit():
            return bilevel.hypergrad(inner, outer, params, h, "cg", maxiter=20, early_stop=False)

        def unrolled():
            return bilevel.unrolled_hypergrad(inner, outer, pb.init_params(), h, rule, steps)

        out = []
        for fn in (implicit, unrolled):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            t = _timed(fn, reps=1)
            out.append(((torch.cuda.max_memory_allocated(dev) - base) / 2**20, t / grad_time))
        rows.append(f"| {steps} | {out[0][0]:.1f} | {out[0][1]:.1f} | {out[1][0]:.1f} | {out[1][1]:.1f} |")
    return rows, pb.num_hparams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_bilevel.py: CUDA is not available")
    dev = torch.device("cuda")
    rows, nh = memory_and_time(dev)
    text = "\n".join([
        "# bilevel on GPU",
        f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        "| problem | method | relative error vs closed form | CG iterations |", "|---|---|---|---|",
        *exactness(dev),
        "",
        f"MLP 64-1024-10 on digits (1500 train), float32, {nh} weight-decay hyperparameters. Peak memory above "
        "the resident model, and time in units of one full-batch inner gradient (same run).",
        "",
        "| inner steps T | implicit CG-20 MiB | implicit time / grad | unrolled MiB | unrolled time / grad |",
        "|---|---|---|---|---|",
        *rows,
    ])
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, "bilevel.md"), text + "\n")
    print(text)


if __name__ == "__main__":
    main()
