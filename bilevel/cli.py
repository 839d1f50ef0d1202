"""``metaopt bilevel``: tune a problem's hyperparameters with implicit, unrolled, F2SA or Optuna
under a wall-clock budget, with a progress bar, a results table and a plot of validation loss vs
wall clock (``--out``: results.md, val_loss_vs_time.png, traces.json, run.json; re-render with
``bilevel.report(DIR)``).

    metaopt bilevel --problem hyperclean --method implicit,optuna --budget 20 --out runs/hc
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Sequence

import torch

from metaopt.cli_common import Parser, UsageError, add_common_flags, check_out_dir, cli_entry, resolve_device

from . import problems, reporting
from .tuning import METHODS, RUNNERS, evaluate_trace


def build_parser() -> Parser:
    parser = Parser(prog="metaopt bilevel", description=__doc__.splitlines()[0],
                    epilog="example: metaopt bilevel --problem hyperclean --method implicit,optuna "
                           "--budget 20 --out runs/hc")
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


def _check_storage(url: str | None) -> None:
    """A malformed or unsupported Optuna storage URL is a one-line error, found before any file
    or database is created (the URL is parsed and its dialect loaded, nothing is connected)."""
    if url is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise UsageError(f"--storage {url!r} is not a usable database URL ({type(e).__name__}); "
                         "use e.g. sqlite:///path/optuna.db or postgresql://user@host/db") from None
    except ImportError as e:
        raise UsageError(f"--storage {url!r}: its database driver is not installed ({e.name})") from None


def _needs_evaluation(method: str, args) -> bool:
    """Whether the method's snapshots are scored after it stops (inner solves on the clock)."""
    return method in ("unrolled", "f2sa") or (method == "implicit" and args.inner_steps > 0)


@cli_entry(what="bilevel tuning")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args)
    methods = _methods(args.method)
    device = resolve_device(args.device)
    _check_storage(args.storage)
    if args.out:
        check_out_dir(args.out, resume=True, marker=reporting.TRACES_FILE)
    kw = {"seed": args.seed, "device": device}
    if args.n_train is not None:
        kw["n_train"] = args.n_train
    try:
        problem = problems.get(args.problem, **kw)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    storage = args.storage or (f"sqlite:///{os.path.abspath(os.path.join(args.out, 'optuna.db'))}" if args.out else None)
    torch.manual_seed(args.seed)
    traces = {}
    for method in methods:
        traces[method] = _run_within_budget(problem, method, args, storage).to_json()
    text = reporting.table(problem.name, problem.num_hparams, traces)
    if args.out:
        text = reporting.write(args.out, problem.name, problem.num_hparams, traces)
        if storage and storage.startswith("sqlite:///") and os.path.exists(storage[len("sqlite:///"):]):
            os.chmod(storage[len("sqlite:///"):], 0o644)
    print(text)
    return 0


def _run_within_budget(problem, method, args, storage):
    """Run ``method`` so that it and the scoring of its snapshots end within ``--budget``
    seconds: the time of one inner solve is measured first and three solves are reserved."""
    deadline = time.perf_counter() + args.budget
    budget = args.budget
    if _needs_evaluation(method, args):
        start = time.perf_counter()
        problem.value(problem.init_hparams())
        budget = max(0.0, args.budget - 3 * (time.perf_counter() - start))
    trace = _run_with_progress(problem, method, args, storage, budget)
    return evaluate_trace(problem, trace, deadline=deadline)


def _run_with_progress(problem, method, args, storage, budget):
    from tqdm import tqdm

    bar = tqdm(total=round(args.budget, 1), desc=f"{problem.name}/{method}", unit="s", file=sys.stderr,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f}s {postfix}")

    def tick(trace):
        bar.n = min(round(trace.seconds[-1], 1), bar.total)
        value = trace.values[-1]
        bar.set_postfix_str(f"steps={trace.inner_trainings[-1]}" + (f" val={value:.4f}" if value is not None else ""))

    try:
        return RUNNERS[method](problem, budget, args.seed, tick=tick, max_steps=args.max_steps,
                               **_options(method, args, storage))
    finally:
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
