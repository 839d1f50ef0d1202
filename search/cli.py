"""``metaopt search``: discover an update rule by program search.

    metaopt search --task quadratic --budget 200 --seed 0 --out runs/q
        [--warm-start adamw|sgd|random|FILE] [--population P] [--tournament T]
        [--backend local|ray] [--resume] [--device D] [--steps K] [--batch B]
        [--simplify-tol TOL] [--funnel-steps N]

Writes ``DIR/best.txt`` (the best program), ``DIR/best_pruned.txt``, ``DIR/best_simplified.txt``,
``DIR/funnel.json`` (with ``--funnel-steps``), ``DIR/summary.json``
(best_fitness, evaluated, unique, cache_hits, ...), ``DIR/search.sqlite`` and
``DIR/progress.png``. Bad flags or an unreadable warm-start file: one line on stderr, exit 2.
"""
from __future__ import annotations

import json
import os
import tempfile

from metaopt.cli_common import Parser, UsageError, add_common_flags, fail, resolve_device


def build_parser() -> Parser:
    p = Parser(prog="metaopt search", description="Program search over optimizer update rules.")
    add_common_flags(p)
    p.add_argument("--task", required=True, help="a registered task name (metaopt.tasks.names())")
    p.add_argument("--budget", type=int, required=True, help="programs to evaluate (cache hits count)")
    p.add_argument("--warm-start", default="adamw", help="adamw | sgd | random | FILE (default adamw)")
    p.add_argument("--population", type=int, default=32, help="population size (default 32)")
    p.add_argument("--tournament", type=int, default=4, help="tournament size (default 4)")
    p.add_argument("--batch", type=int, default=8, help="children trained together per round")
    p.add_argument("--steps", type=int, default=50, help="training steps K per evaluation")
    p.add_argument("--plateau", type=int, default=None, help="restart after this many evaluations without improvement")
    p.add_argument("--simplify-tol", type=float, default=0.01,
                   help="simplify the best program within this relative fitness loss (default 0.01; <0 skips)")
    p.add_argument("--funnel-steps", type=int, default=0,
                   help="re-evaluate the 5 best programs with this many steps against the tuned start program")
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from metaopt import tasks

        if args.task not in tasks.names():
            raise UsageError(f"unknown --task {args.task!r}; choose one of: {', '.join(tasks.names())}")
        if args.out is None:
            raise UsageError("--out DIR is required (the search database and results go there)")
        device = resolve_device(args.device)
        from .evolve import run
        from .fitness import FitnessConfig
        from .warm import warm_start

        start = warm_start(args.warm_start, args.seed)
        cfg = FitnessConfig(steps=args.steps)
        result = run(args.task, budget=args.budget, seed=args.seed, out=args.out,
                     warm_start=start if args.warm_start not in ("adamw", "sgd", "random") else args.warm_start,
                     backend=args.backend, population=args.population,
                     tournament=args.tournament, batch=args.batch, fitness=cfg,
                     plateau=args.plateau, resume=args.resume, device=str(device),
                     progress=not args.no_progress,
                     simplify_tol=args.simplify_tol if args.simplify_tol >= 0 else None,
                     funnel_steps=args.funnel_steps or None)
    except ValueError as err:
        return fail(str(err).splitlines()[0])
    write_outputs(args.out, result)
    print(f"best fitness {result.fitness:.6g} after {result.summary['evaluated']} programs "
          f"({result.summary['unique']} trained); see {os.path.join(args.out, 'best.txt')}")
    return 0


def write_outputs(out: str, result) -> None:
    """best.txt, best_pruned.txt, summary.json and progress.png, each written atomically."""
    _atomic_text(os.path.join(out, "best.txt"), result.best.to_text())
    _atomic_text(os.path.join(out, "best_pruned.txt"), result.best_pruned.to_text())
    if result.simplified is not None:
        _atomic_text(os.path.join(out, "best_simplified.txt"), result.simplified.to_text())
    if result.funnel:
        _atomic_text(os.path.join(out, "funnel.json"), json.dumps(result.funnel, indent=2) + "\n")
    summary = {k: (None if isinstance(v, float) and v != v else v) for k, v in result.summary.items()}
    summary["best_fitness"] = result.fitness if result.fitness != float("inf") else None
    _atomic_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    plot_progress(result.history, os.path.join(out, "progress.png"))


def _atomic_text(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def plot_progress(history: list[dict], path: str) -> None:
    """Fitness of every evaluated program and the best so far, against evaluations."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(1, len(history) + 1))
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(x, h["fitness"]) for x, h in zip(xs, history) if math.isfinite(h["fitness"])]
    if pts:
        ax.scatter(*zip(*pts), s=4, alpha=0.3, label="evaluated")
    best = [(x, h["best"]) for x, h in zip(xs, history) if math.isfinite(h["best"])]
    if best:
        ax.plot(*zip(*best), color="C3", label="best so far")
    ax.set_yscale("log")
    ax.set_xlabel("programs evaluated")
    ax.set_ylabel("validation loss (fitness)")
    ax.legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".png")
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
