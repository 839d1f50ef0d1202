"""The ``metaopt`` command line (also ``python -m metaopt``).

    metaopt zoo                                   list the baseline zoo with its defaults
    metaopt bench --task T[,T..]|all --optimizer O[,O..]|all [--seeds N --steps N
                  --eval-every N --tune-trials N --storage URL --target-tol X --impl I
                  --out DIR --device D --seed S --resume]
    metaopt search ...  |  metaopt meta-train ...  |  metaopt bilevel ...

``search``, ``meta-train`` and ``bilevel`` hand their arguments to ``search.cli.main``,
``learned.cli.main`` and ``bilevel.cli.main``, imported only when called. Bad input is one line
on stderr naming what is wrong and what is allowed, with exit code 2 and no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .cli_common import (Parser, UsageError, add_common_flags, cli_entry, fail,
                         float_at_least, int_at_least, resolve_device)
from .optimizer import IMPLS

#: subcommand -> module whose ``main(argv) -> int`` runs it
DISPATCH = {"search": "search.cli", "meta-train": "learned.cli", "bilevel": "bilevel.cli"}
DISPATCH_HELP = {
    "search": "program search for update rules (search.cli)",
    "meta-train": "meta-train a learned optimizer (learned.cli)",
    "bilevel": "bilevel / hypergradient tuning (bilevel.cli)",
}
#: enough for adamw to reach ~99% validation accuracy on mlp_digits; 3 seeds + 10 tuning trials
#: of it take about one CPU-minute
DEFAULT_STEPS = 300
DEFAULT_OUT = "bench-results"


def main(argv: list[str] | None = None) -> int:
    """Run ``metaopt`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_entry(_main, what=argv[0] if argv else "metaopt")(argv)


def _main(argv: list[str]) -> int:
    if not argv:
        return fail(f"missing command; choose one of: zoo, bench, {', '.join(DISPATCH)}")
    if argv[0] in DISPATCH:
        return _dispatch(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


def build_parser() -> Parser:
    parser = Parser(prog="metaopt", description="Discover, learn and tune optimizers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    zoo_p = sub.add_parser("zoo", help="list the baseline zoo with each member's defaults")
    zoo_p.set_defaults(run=run_zoo)
    _add_bench(sub.add_parser("bench", help="benchmark optimizers on tasks (tuned lr, curves, "
                                             "table, plots)"))
    for name, text in DISPATCH_HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _add_bench(p: Parser) -> None:
    p.add_argument("--task", required=True, help="task name(s), comma-separated, or 'all'")
    p.add_argument("--optimizer", required=True, help="zoo name(s), comma-separated, or 'all'")
    p.add_argument("--seeds", type=int_at_least(1), default=3, help="seeds per run (default 3)")
    p.add_argument("--steps", type=int_at_least(1), default=DEFAULT_STEPS,
                   help=f"optimizer steps per run (default {DEFAULT_STEPS})")
    p.add_argument("--eval-every", type=int_at_least(1), default=None,
                   help="validation interval in steps (default steps/20)")
    p.add_argument("--tune-trials", type=int_at_least(0), default=10,
                   help="Optuna TPE trials on the learning rate per optimizer and task; "
                        "0 uses the defaults (default 10)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite:///OUT/optuna.sqlite3)")
    p.add_argument("--target-tol", type=float_at_least(0.0), default=0.1,
                   help="target = best median final val loss + tol*|best| (default 0.1)")
    p.add_argument("--impl", choices=IMPLS, default="auto",
                   help="RuleOptimizer implementation path for every rule (default auto)")
    p.add_argument("--resume", action="store_true", help="continue OUT, skipping finished runs")
    p.add_argument("--shared", action="store_true",
                   help="join a sweep shared by many workers through --storage (every worker "
                        "runs the same command with its own --out; tuning trials and seed runs "
                        "are each done once, and every worker writes the merged table)")
    add_common_flags(p)
    p.set_defaults(run=run_bench_command)


def parse_names(text: str, choices: list[str], flag: str) -> tuple[str, ...]:
    """``a,b`` or ``all`` -> names, each checked against ``choices`` (order kept, no repeats)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == ["all"]:
        return tuple(choices)
    for name in items:
        if name not in choices:
            raise UsageError(f"unknown {flag[2:]} {name!r} in {flag}; choose from: all, "
                             f"{', '.join(choices)}")
    if not items:
        raise UsageError(f"{flag} is empty; choose from: all, {', '.join(choices)}")
    return tuple(dict.fromkeys(items))


def bench_optimizers(text: str, zoo) -> tuple[str, ...]:
    """``--optimizer`` for bench. Members that need per-layer statistics of an ``nn.Module``
    (``zoo.LayerStatistics``: AdaFisher, MKOR) cannot run on bench's functional tasks: ``all``
    leaves them out with a note on stderr, naming one is a usage error."""
    names = parse_names(text, zoo.names(), "--optimizer")
    layered = [n for n in names if zoo.needs_layer_statistics(zoo.rule(n))]
    if not layered:
        return names
    why = ("per-layer statistics of an nn.Module model are needed (zoo.LayerStatistics); bench "
           "tasks are functional")
    if [t.strip() for t in text.split(",") if t.strip()] != ["all"]:
        raise UsageError(f"--optimizer {', '.join(layered)} cannot be benchmarked: {why}")
    print(f"metaopt bench: skipping {', '.join(layered)}: {why}", file=sys.stderr)
    return tuple(n for n in names if n not in layered)


def run_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    print(zoo_table(zoo), end="")
    return 0


def zoo_table(zoo) -> str:
    """Aligned two-column text table: each member and its default hyperparameters."""
    rows = [(name, ", ".join(f"{k}={_fmt_value(v)}" for k, v in zoo.defaults(name).items()))
            for name in zoo.names()]
    width = max(len("optimizer"), *(len(n) for n, _ in rows))
    lines = [f"{'optimizer':<{width}}  defaults", f"{'-' * width}  {'-' * 8}"]
    lines += [f"{n:<{width}}  {d}" for n, d in rows]
    return "\n".join(lines) + "\n"


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_fmt_value(x) for x in v) + ")"
    return str(v)


def run_bench_command(args: argparse.Namespace) -> int:
    from . import tasks, zoo
    from .bench import BenchConfig, run_bench

    config = BenchConfig(
        tasks=parse_names(args.task, tasks.names(), "--task"),
        optimizers=bench_optimizers(args.optimizer, zoo),
        out=args.out or DEFAULT_OUT, seeds=args.seeds, steps=args.steps,
        eval_every=args.eval_every, tune_trials=args.tune_trials, storage=args.storage,
        device=str(resolve_device(args.device)), seed=args.seed, target_tol=args.target_tol,
        impl=args.impl, resume=args.resume, shared=args.shared,
    )
    result = run_bench(config)
    print(open(result.files["table"], encoding="utf-8").read(), end="")
    for what, path in result.files.items():
        print(f"{what}: {path}")
    return 0


def _dispatch(command: str, argv: list[str]) -> int:
    module_name = DISPATCH[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name not in (module_name, module_name.split(".")[0]):
            raise
        raise UsageError(
            f"'metaopt {command}' is not available yet: {module_name} is missing") from None
    code = module.main(argv)
    return 0 if code is None else int(code)
