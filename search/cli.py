"""``metaopt search``: discover an update rule by program search.

    metaopt search --task quadratic --budget 200 --seed 0 --out runs/q
    metaopt search --family proxy --heldout heldout --validate-every 200 --budget 2000 --out runs/f
        [--warm-start adamw|sgd|random|FILE] [--population P] [--tournament T]
        [--strategy evolution|random] [--constants-only]
        [--backend local|ray] [--address ADDR] [--workers N] [--resume] [--device D]
        [--steps K] [--batch B] [--simplify-tol TOL] [--funnel-steps N]

Writes ``DIR/best.txt`` (the best program), ``DIR/best_pruned.txt``, ``DIR/best_simplified.txt``,
``DIR/funnel.json`` (with ``--funnel-steps``), ``DIR/summary.json``
(best_fitness, evaluated, unique, cache_hits, ...), ``DIR/search.sqlite`` and
``DIR/progress.png``. Bad flags or an unreadable warm-start file: one line on stderr, exit 2.
"""
from __future__ import annotations

import json
import math
import os
import sys

from metaopt.helpers import write_atomic
from metaopt.cli_common import (Parser, UsageError, add_common_flags, build_task, fail,
                                resolve_device)

from .warm import BASELINES


def build_parser() -> Parser:
    p = Parser(prog="metaopt search", description="Program search over optimizer update rules.")
    add_common_flags(p)
    p.add_argument("--task", default=None, metavar="NAME|pkg.mod:factory",
                   help="a task: a registered name ('metaopt tasks' lists them) or an importable "
                        "factory returning one")
    p.add_argument("--task-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a task option, e.g. width=64 (repeatable; with --task)")
    p.add_argument("--family", default=None,
                   help="search over a task family (e.g. proxy, tiny); fitness = mean log(loss / tuned AdamW loss)")
    p.add_argument("--heldout", default=None,
                   help="held-out family for meta-validation of the top programs and the final funnel")
    p.add_argument("--baseline", default="adamw", choices=list(BASELINES),
                   help="what --family losses are normalised by (the score's zero; the ranking is "
                        "the same): AdamW with its lr tuned (default), or the best of AdamW's "
                        "first-moment and weight decays, each lr-tuned")
    p.add_argument("--validate-every", type=int, default=0,
                   help="meta-validate the top programs on --heldout every N evaluations (default 0: at the end)")
    p.add_argument("--validate-top", type=int, default=3, help="programs meta-validated each time (default 3)")
    p.add_argument("--strategy", default="evolution", choices=["evolution", "random"],
                   help="evolution (default) or random search: random mutation chains of the start program")
    p.add_argument("--constants-only", action="store_true",
                   help="mutate only the start program's constants (the constants-tuning arm)")
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
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="where candidates train: this process (default) or Ray workers")
    p.add_argument("--address", default=None,
                   help="Ray cluster address to join (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray tasks per round (default: the cluster's CPUs, or GPUs with --device cuda)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if (args.task is None) == (args.family is None):
            raise UsageError("give exactly one of --task NAME and --family NAME")
        if args.task_opt and args.task is None:
            raise UsageError("--task-opt sets options of --task; a --family fixes its members' "
                             "options")
        if args.baseline != "adamw" and args.family is None:
            raise UsageError("--baseline normalises a --family's fitness; give --family NAME")
        if args.out is None:
            raise UsageError("--out DIR is required (the search database and results go there)")
        device = resolve_device(args.device)
        task = None if args.task is None else build_task(args.task, args.task_opt, str(device))
        from .evolve import run
        from .fitness import FitnessConfig
        from .mutate import MUTATIONS
        from .warm import warm_start

        start = warm_start(args.warm_start, args.seed)
        cfg = FitnessConfig(steps=args.steps)
        result = run(task, budget=args.budget, seed=args.seed, out=args.out,
                     warm_start=start if args.warm_start not in ("adamw", "sgd", "random") else args.warm_start,
                     backend=args.backend, population=args.population,
                     tournament=args.tournament, batch=args.batch, fitness=cfg,
                     plateau=args.plateau, resume=args.resume, device=str(device),
                     progress=not args.no_progress,
                     simplify_tol=args.simplify_tol if args.simplify_tol >= 0 else None,
                     funnel_steps=args.funnel_steps or None, family=args.family,
                     heldout=args.heldout, validate_every=args.validate_every,
                     validate_top=args.validate_top, strategy=args.strategy,
                     mutations=("perturb_constant",) if args.constants_only else MUTATIONS,
                     workers=args.workers, address=args.address, baseline=args.baseline)
    except ValueError as err:
        return fail(str(err).splitlines()[0])
    except KeyboardInterrupt:
        print("metaopt search: interrupted; every committed evaluation is saved (rerun the same "
              "command with --resume to continue)", file=sys.stderr)
        return 130
    write_outputs(args.out, result)
    print(f"best fitness {result.fitness:.6g} after {result.summary['evaluated']} programs "
          f"({result.summary['unique']} trained); see {os.path.join(args.out, 'best.txt')}")
    return 0


def write_outputs(out: str, result) -> None:
    """best.txt (+ best.json with its tuned lr), best_pruned.txt, best_simplified.txt,
    validated.txt, funnel.json, validation.json, summary.json, progress.png and validation.png,
    each written atomically with mode 0644."""
    write_atomic(os.path.join(out, "best.txt"), result.best.to_text())
    best = {"text": result.best_pruned.to_text(), "lr": result.summary.get("best_lr"),
            "task_lrs": result.summary.get("best_task_lrs"), "fitness": result.fitness}
    write_atomic(os.path.join(out, "best.json"), _json(best))
    write_atomic(os.path.join(out, "best_pruned.txt"), result.best_pruned.to_text())
    if result.simplified is not None:
        write_atomic(os.path.join(out, "best_simplified.txt"), result.simplified.to_text())
    if result.validated is not None:
        write_atomic(os.path.join(out, "validated.txt"), result.validated.to_text())
    if result.funnel:
        write_atomic(os.path.join(out, "funnel.json"), _json(result.funnel))
    if result.validation:
        write_atomic(os.path.join(out, "validation.json"), _json(result.validation))
        plot_validation(result.validation, os.path.join(out, "validation.png"))
    write_atomic(os.path.join(out, "summary.json"), _json(result.summary))
    plot_progress(result.history, os.path.join(out, "progress.png"))


def _json(value) -> str:
    """JSON with non-finite floats as null (strict JSON has no inf/nan)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), indent=2) + "\n"


def plot_validation(rows: list[dict], path: str) -> None:
    """Held-out score (log loss ratio to tuned AdamW) of the meta-validated top programs and
    the best of them, against evaluations."""
    pts = [(r["evaluated"], r["score"]) for r in rows if math.isfinite(r["score"])]
    best: dict[int, float] = {}
    for x, y in pts:
        best[x] = min(best.get(x, math.inf), y)
    fig, ax = _figure()
    if pts:
        ax.scatter(*zip(*pts), s=8, alpha=0.5, label="validated top-k")
        ax.plot(sorted(best), [best[x] for x in sorted(best)], color="C3", marker="o",
                label="best held-out")
    ax.axhline(0.0, color="grey", lw=0.8, ls="--", label="tuned AdamW")
    ax.set_xlabel("programs evaluated")
    ax.set_ylabel("held-out mean log(loss / tuned AdamW)")
    ax.legend()
    _save(fig, path)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4))


def _save(fig, path: str) -> None:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def plot_progress(history: list[dict], path: str) -> None:
    """Fitness of every evaluated program and the best so far, against evaluations (log
    scale when every value is positive: a family's log ratios can be negative)."""
    xs = list(range(1, len(history) + 1))
    fig, ax = _figure()
    pts = [(x, h["fitness"]) for x, h in zip(xs, history) if math.isfinite(h["fitness"])]
    if pts:
        ax.scatter(*zip(*pts), s=4, alpha=0.3, label="evaluated")
    best = [(x, h["best"]) for x, h in zip(xs, history) if math.isfinite(h["best"])]
    if best:
        ax.plot(*zip(*best), color="C3", label="best so far")
    if pts and all(y > 0 for _, y in pts):
        ax.set_yscale("log")
    ax.set_xlabel("programs evaluated")
    ax.set_ylabel("fitness (lower is better)")
    ax.legend()
    _save(fig, path)
