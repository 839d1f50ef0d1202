"""``metaopt bilevel``: tune a problem's hyperparameters with implicit, unrolled, F2SA or Optuna
under a wall-clock budget, with a progress bar and a results table.

    metaopt bilevel --problem hyperclean --method implicit,optuna --budget 20 --out runs/hc
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from typing import Sequence

import torch

from metaopt.cli_common import Parser, UsageError, add_common_flags, fail, resolve_device

from . import problems
from .tuning import METHODS, RUNNERS, evaluate_trace


def build_parser() -> Parser:
    parser = Parser(prog="metaopt bilevel", description=__doc__.splitlines()[0])
    parser.add_argument("--problem", required=True, help=f"one of: {', '.join(problems.names())}")
    parser.add_argument("--method", default="implicit",
                        help=f"comma-separated list of: {', '.join(METHODS)} (default: implicit)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per method (default: 10)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="also stop each method after this many outer steps / trials")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam step on the hyperparameters (default: 0.1)")
    parser.add_argument("--unroll-steps", type=int, default=20, help="K for --method unrolled (default: 20)")
    parser.add_argument("--cg-iters", type=int, default=20, help="CG iterations for implicit (default: 20)")
    parser.add_argument("--inner-steps", type=int, default=20,
                        help="warm-started inner steps per outer step for implicit; 0 = exact solve (default: 20)")
    parser.add_argument("--batch-size", type=int, default=64, help="F2SA minibatch size (default: 64)")
    parser.add_argument("--n-train", type=int, default=None, help="training examples (problem default)")
    parser.add_argument("--storage", default=None,
                        help="Optuna RDB URL (default: sqlite file in --out, else a temporary one)")
    add_common_flags(parser)
    return parser


def _methods(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise UsageError(f"--method {text!r}: choose from {', '.join(METHODS)} (comma-separated)")
    return chosen


def _check(args) -> None:
    if args.problem not in problems.names():
        raise UsageError(f"--problem {args.problem!r}: choose one of {', '.join(problems.names())}")
    for name in ("budget", "lr"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"--{name} {value}: it must be a positive number")
    for name in ("unroll_steps", "cg_iters", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: it must be >= 1")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps {args.max_steps}: it must be >= 1")
    if args.inner_steps < 0:
        raise UsageError(f"--inner-steps {args.inner_steps}: it must be >= 0 (0 = exact inner solve)")


def _options(method: str, args, storage: str | None) -> dict:
    if method == "implicit":
        return {"lr": args.lr, "cg_iters": args.cg_iters, "inner_steps": args.inner_steps}
    if method == "unrolled":
        return {"lr": args.lr, "steps": args.unroll_steps}
    if method == "f2sa":
        return {"lr": args.lr, "batch_size": args.batch_size}
    return {"storage": storage}


def _table(problem, rows: list[dict]) -> str:
    head = (f"problem {problem.name}: {problem.num_hparams} hyperparameters, validation loss at the exact "
            "inner solution\n\n| method | outer steps / trials | best val loss | at second | final val loss |\n"
            "|---|---|---|---|---|\n")
    lines = [f"| {r['method']} | {r['trainings']} | {r['best']:.4f} | {r['best_at']:.1f} | {r['final']:.4f} |"
             for r in rows]
    return head + "\n".join(lines)


def _write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check(args)
        methods = _methods(args.method)
        device = resolve_device(args.device)
        kw = {"seed": args.seed, "device": device}
        if args.n_train is not None:
            kw["n_train"] = args.n_train
        try:
            problem = problems.get(args.problem, **kw)
        except ValueError as err:
            raise UsageError(str(err)) from None
    except UsageError as err:
        return fail(str(err))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    storage = args.storage or (f"sqlite:///{os.path.abspath(os.path.join(args.out, 'optuna.db'))}" if args.out else None)
    torch.manual_seed(args.seed)
    rows, traces = [], {}
    for method in methods:
        trace = _run_with_progress(problem, method, args, storage)
        trace = evaluate_trace(problem, trace)
        best = trace.best_so_far()
        i = min(range(len(best)), key=lambda j: (best[j], j))
        rows.append({"method": method, "trainings": trace.inner_trainings[-1], "best": best[-1],
                     "best_at": trace.seconds[i], "final": trace.values[-1]})
        traces[method] = trace.to_json()
    table = _table(problem, rows)
    print(table)
    if args.out:
        _write_atomic(os.path.join(args.out, "results.md"), table + "\n")
        _write_atomic(os.path.join(args.out, "traces.json"), json.dumps(traces))
    return 0


def _run_with_progress(problem, method, args, storage):
    from tqdm import tqdm

    bar = tqdm(total=round(args.budget, 1), desc=f"{problem.name}/{method}", unit="s", file=sys.stderr,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f}s {postfix}")

    def tick(trace):
        bar.n = min(round(trace.seconds[-1], 1), bar.total)
        value = trace.values[-1]
        bar.set_postfix_str(f"steps={trace.inner_trainings[-1]}" + (f" val={value:.4f}" if value is not None else ""))

    try:
        return RUNNERS[method](problem, args.budget, args.seed, tick=tick, max_steps=args.max_steps,
                               **_options(method, args, storage))
    finally:
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
