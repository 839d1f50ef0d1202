"""The ``metaopt`` command line (also ``python -m metaopt``).

    metaopt zoo                                   the baseline zoo with its defaults
    metaopt tasks                                 every task, its options and defaults
    metaopt bench --task T[,T..]|all|pkg.mod:factory --optimizer O[,O..]|all [--task-opt K=V ..]
    metaopt report DIR                            re-render a finished run's tables and plots
    metaopt search ...  |  metaopt meta-train ...  |  metaopt bilevel ...

``search``, ``meta-train`` and ``bilevel`` hand their arguments to the ``main`` of the
modules in :data:`DISPATCH`, imported only when called. Bad input is one line on stderr naming
what is wrong and what is allowed, with exit code 2 and no traceback; Ctrl-C is one line and
exit code 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .cli_common import (Parser, UsageError, add_common_flags, check_out_dir, cli_entry, fail,
                         float_at_least, int_at_least, load_zoo_plugins, parse_task_opts,
                         resolve_device, zoo_plugin_names)
from .optimizer import IMPLS

#: subcommand -> module whose ``main(argv) -> int`` runs it
DISPATCH = {"search": "search.cli", "export": "search.export", "meta-train": "learned.cli",
            "bilevel": "bilevel.cli"}
DISPATCH_HELP = {
    "search": "program search for update rules",
    "export": "a found program as a ready optimizer file (a torch.optim.Optimizer, no metaopt "
              "import)",
    "meta-train": "meta-train a learned optimizer",
    "bilevel": "bilevel / hypergradient tuning of hyperparameters",
}
#: run kinds ``metaopt report`` knows: (a file that marks a folder as that run, the package
#: whose ``report(dir)`` re-renders it; bench's is here)
REPORTS = {
    "bench": (("bench_config.json", "curves.jsonl"), None),
    "search": (("search.sqlite",), "search"),
    "meta-train": (("meta_train.json", "theta.safetensors", "checkpoints/latest.json"),
                   "learned"),
    "bilevel": (("traces.json",), "bilevel"),
}
#: enough for adamw to reach ~99% validation accuracy on mlp_digits; 3 seeds + 10 tuning trials
#: of it take about one CPU-minute
DEFAULT_STEPS = 300
DEFAULT_OUT = "bench-results"

EPILOG = """examples:
  metaopt tasks
  metaopt bench --task quadratic --optimizer sgd,adamw --tune-trials 0 --steps 50
  metaopt bench --task mlp_digits --task-opt width=64 --optimizer adamw,lion --out runs/b
  metaopt report runs/b
  metaopt search --help"""

BENCH_EPILOG = """examples:
  metaopt bench --task quadratic --optimizer sgd,adamw --tune-trials 0 --steps 50
      (under a minute on 2 CPU cores)
  metaopt bench --task mlp_digits --task-opt width=64 --optimizer adamw,lion --out runs/b
  metaopt bench --task mypkg.tasks:make_task --task-opt size=10 --optimizer all
  metaopt bench ... --out runs/b --resume      (continue a stopped benchmark)"""


def main(argv: list[str] | None = None) -> int:
    """Run ``metaopt`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_entry(_main, what=argv[0] if argv else "metaopt")(argv)


def _main(argv: list[str]) -> int:
    if not argv:
        build_parser().print_help()
        return 0
    if argv[0] in DISPATCH:
        return _dispatch(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


def _version() -> str:
    from . import __version__

    return f"metaopt {__version__}"


def build_parser() -> Parser:
    parser = Parser(prog="metaopt", description="Discover, learn and tune optimizers.",
                    epilog=EPILOG)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    zoo_p = sub.add_parser("zoo", help="list the baseline zoo with each member's defaults",
                           description="List the baseline zoo with each member's defaults.")
    zoo_p.set_defaults(run=run_zoo)
    tasks_p = sub.add_parser("tasks", help="list the tasks with their options and defaults",
                             description="List the tasks (built-in and plugins), their options "
                                         "with defaults, and the named task families.")
    tasks_p.set_defaults(run=run_tasks)
    _add_bench(sub.add_parser("bench", help="benchmark optimizers on tasks (tuned lr, curves, "
                                             "table, plots)", epilog=BENCH_EPILOG,
                              description="Benchmark optimizers on tasks: tune each one's "
                                          "learning rate with the same Optuna budget, run "
                                          "seeds, write curves, a table and plots."))
    report_p = sub.add_parser("report", help="re-render the tables and plots of a run folder",
                              description="Re-render the tables and plots of a bench, search, "
                                          "meta-train or bilevel output folder.",
                              epilog="example:\n  metaopt report bench-results")
    report_p.add_argument("dir", metavar="DIR", help="the run's output folder")
    report_p.set_defaults(run=run_report)
    for name, text in DISPATCH_HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _add_bench(p: Parser) -> None:
    p.add_argument("--task", required=True, metavar="T[,T..]|all|pkg.mod:factory",
                   help="task name(s), comma-separated, 'all', or an importable factory "
                        "returning a task ('metaopt tasks' lists them)")
    p.add_argument("--task-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a task option for every --task, e.g. width=64 (repeatable)")
    p.add_argument("--optimizer", required=True, metavar="O[,O..]|all",
                   help="zoo name(s), comma-separated, or 'all' (members that cannot run a "
                        "task are then skipped with a note)")
    p.add_argument("--seeds", type=int_at_least(1), default=3, help="seeds per run")
    p.add_argument("--steps", type=int_at_least(1), default=DEFAULT_STEPS,
                   help="optimizer steps per run")
    p.add_argument("--eval-every", type=int_at_least(1), default=None,
                   help="validation interval in steps (default: steps/20)")
    p.add_argument("--tune-trials", type=int_at_least(0), default=10,
                   help="Optuna TPE trials on the learning rate per optimizer and task; "
                        "0 uses each optimizer's default lr")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: sqlite:///OUT/optuna.sqlite3)")
    p.add_argument("--target-tol", type=float_at_least(0.0), default=0.1,
                   help="target = best median final validation loss + tol*|best|")
    p.add_argument("--impl", choices=IMPLS, default="auto",
                   help="RuleOptimizer implementation path for every rule")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT: skip finished runs and tried learning rates")
    p.add_argument("--shared", action="store_true",
                   help="join a sweep shared by many workers through --storage (every worker "
                        "runs the same command with its own --out; tuning trials and seed runs "
                        "are each done once, and every worker writes the merged table)")
    add_common_flags(p)
    p.set_defaults(run=run_bench_command, out=DEFAULT_OUT)


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


def bench_tasks(text: str, tasks) -> tuple[str, ...]:
    """``--task`` for bench: names, ``all`` (the registered tasks) and ``pkg.mod:factory``
    plugins, each checked (a plugin is imported)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    plugins = [t for t in items if ":" in t]
    for spec in plugins:
        try:
            tasks.factory(spec)
        except ValueError as e:
            raise UsageError(str(e)) from None
    names = [t for t in items if ":" not in t]
    chosen = parse_names(",".join(names), tasks.names(), "--task") if names else ()
    return tuple(dict.fromkeys([*chosen, *plugins]))


def bench_task_options(specs: tuple[str, ...], items: list[str]) -> dict:
    """``--task-opt`` items, checked against every task (each must have every option)."""
    parsed = [parse_task_opts(spec, items) for spec in specs]
    return parsed[0] if parsed else {}


def bench_optimizers(text: str, zoo) -> tuple[str, ...]:
    """``--optimizer`` for bench. Members that need per-layer statistics of an ``nn.Module``
    (``zoo.LayerStatistics``: AdaFisher, MKOR) cannot run on bench's functional tasks: ``all``
    leaves them out with a note on stderr, naming one is a usage error."""
    names = parse_names(text, sorted({*zoo.names(), *zoo_plugin_names()}), "--optimizer")
    load_zoo_plugins(names)
    layered = [n for n in names if zoo.needs_layer_statistics(zoo.rule(n))]
    if not layered:
        return names
    why = ("per-layer statistics of an nn.Module model are needed (zoo.LayerStatistics); bench "
           "tasks are functional")
    if not _is_all(text):
        raise UsageError(f"--optimizer {', '.join(layered)} cannot be benchmarked: {why}")
    print(f"metaopt bench: skipping {', '.join(layered)}: {why}", file=sys.stderr)
    return tuple(n for n in names if n not in layered)


def _is_all(text: str) -> bool:
    return [t.strip() for t in text.split(",") if t.strip()] == ["all"]


def run_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    load_zoo_plugins(zoo_plugin_names())
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
    if hasattr(v, "is_floating_point"):  # a torch dtype
        return str(v).replace("torch.", "")
    return str(v)


def run_tasks(args: argparse.Namespace) -> int:
    from . import tasks

    print(tasks_table(tasks), end="")
    return 0


def tasks_table(tasks) -> str:
    """Each task with its one-line doc and its options (``device`` is ``--device``), then the
    named task families."""
    import inspect

    from .tasks import families

    rows = []
    for name in tasks.names():
        try:
            text = tasks.doc(name)
            opts = tasks.options(name)
        except ValueError as e:  # a plugin that does not load
            rows.append((name, f"(cannot load: {e})", ""))
            continue
        shown = [f"{k}={_fmt_value(v)}" if v is not inspect.Parameter.empty else f"{k} (required)"
                 for k, v in opts.items() if k not in ("device", "**")]
        rows.append((name, text, ", ".join(shown) + (", ..." if "**" in opts else "")))
    width = max(len("task"), *(len(n) for n, _, _ in rows))
    pad = " " * (width + 2)
    lines = [f"{'task':<{width}}  description / options (set with --task-opt KEY=VALUE)",
             f"{'-' * width}  {'-' * 11}"]
    for name, text, opts in rows:
        lines.append(f"{name:<{width}}  {text}")
        if opts:
            lines.append(f"{pad}options: {opts}")
    lines.append("")
    lines.append("task families (lists of tasks with horizons, for search and meta-training):")
    for fam in families.names():
        lines.append(f"  {fam}: {len(families.get(fam))} tasks: "
                     f"{', '.join(dict.fromkeys(s.task for s in families.get(fam)))}")
    lines.append("any importable factory returning a task also works: --task pkg.module:factory")
    return "\n".join(lines) + "\n"


def run_bench_command(args: argparse.Namespace) -> int:
    from . import tasks, zoo
    from .bench import BenchConfig, run_bench

    task_specs = bench_tasks(args.task, tasks)
    config = BenchConfig(
        tasks=task_specs, task_options=bench_task_options(task_specs, args.task_opt),
        optimizers=bench_optimizers(args.optimizer, zoo), skip_unrunnable=_is_all(args.optimizer),
        out=args.out, seeds=args.seeds, steps=args.steps,
        eval_every=args.eval_every, tune_trials=args.tune_trials, storage=args.storage,
        device=str(resolve_device(args.device)), seed=args.seed, target_tol=args.target_tol,
        impl=args.impl, resume=args.resume, shared=args.shared,
    )
    check_out_dir(args.out, resume=args.resume, marker="bench_config.json")
    result = run_bench(config)
    _print_result(result.files)
    return 0


def _print_result(files: dict[str, str]) -> None:
    print(Path(files["table"]).read_text(encoding="utf-8"), end="")
    for what, path in files.items():
        print(f"{what}: {path}")


def run_kind(folder: Path) -> str:
    """Which command wrote ``folder`` (by the files in it); a one-line error when none did."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give the output folder of a run")
    for kind, (markers, _) in REPORTS.items():
        if any((folder / m).exists() for m in markers):
            return kind
    raise UsageError(f"{folder} holds no bench, search, meta-train or bilevel run "
                     f"(none of: {', '.join(m for ms, _ in REPORTS.values() for m in ms)})")


def run_report(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    kind = run_kind(folder)
    if kind == "bench":
        from .bench import write_report
        from .bench.harness import CURVES_FILE, config_from_folder
        from .bench.records import CurveStore

        cfg, skipped, machine = config_from_folder(folder)
        records = CurveStore(folder / CURVES_FILE).load()
        if not records:
            raise UsageError(f"{folder} holds a benchmark with no finished run yet; rerun it "
                             "with --resume")
        _print_result(write_report(cfg, records, skipped, machine).files)
        return 0
    package = REPORTS[kind][1]
    try:
        report = getattr(importlib.import_module(package), "report", None)
    except ModuleNotFoundError:
        report = None
    if report is None:
        raise UsageError(f"{folder} holds a {kind} run, but this installation has no report "
                         f"for it yet ({package}.report is missing)")
    code = report(str(folder))
    return 0 if code is None or not isinstance(code, int) else code


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
