"""The benchmark harness: rules x tasks x seeds, an equal Optuna learning-rate budget per rule,
curves appended as runs finish, then a markdown table and PNG plots.

Output folder ``out``:
  * ``curves.jsonl``: one record per (task, optimizer, seed) run (see :mod:`.run`);
  * ``results.md``: machine, settings, and the table of :mod:`.summary`;
  * ``curves_<task>.png``: loss curves; ``profile.png``: performance profile over tasks on the
    median steps-to-target (:mod:`.profile`); ``profile_final_loss.png``: the same on the median
    final validation loss;
  * ``optuna.sqlite3``: the tuning studies, unless another storage URL is given;
  * ``bench_config.json``: the settings (a resumed run must share those of
    :data:`RESUME_KEYS`; ``metaopt report`` re-renders the table and plots from it).

Everything is validated before anything is written: the tasks and their options, that each
optimizer can run each task (one step; muon rejects vectors, for instance -- such pairs are
an error, or skipped with a note when ``skip_unrunnable``), the storage URL and its driver,
and the output folder. With ``resume=True`` finished records are kept and skipped, the
Optuna studies continue from their completed trials (stale running trials of a killed run
are marked failed, and no learning rate is tried twice), and the progress bar starts at the
work already done, so a killed benchmark loses at most the run in progress.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .. import tasks as task_registry
from .. import zoo
from ..optimizer import IMPLS
from ..tasks import Task
from .atomic import write_atomic
from .machine import machine_line
from .plots import plot_profile, plot_task_curves
from .profile import performance_ratios
from .records import CurveStore, record_key
from .run import final_val_loss, jsonable, train_curve
from .summary import group_runs, markdown_table, median, steps_to_target, summary_rows, task_target
from .tune import check_storage_url, completed_trials, open_storage, tune_lr

#: tuning runs use seeds disjoint from the reported ones: ``seed + TUNE_SEED_OFFSET``
TUNE_SEED_OFFSET = 1_000_000
#: settings that must match for ``resume`` to append to an existing folder
RESUME_KEYS = ("steps", "eval_every", "tune_trials", "seed", "lr_range", "task_options")
CONFIG_FILE = "bench_config.json"
CURVES_FILE = "curves.jsonl"


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``eval_every=None`` means ``max(1, steps // 20)``; ``storage=None`` means
    ``sqlite:///<out>/optuna.sqlite3``; ``lr_range`` scales each rule's default lr; ``impl`` is
    the RuleOptimizer path for every rule (``"fused"`` needs every rule to have one).
    ``tasks`` are registered names or ``pkg.module:factory`` plugins, all built with
    ``task_options``, or task objects (e.g. from :func:`metaopt.tasks.from_module`), named by
    their ``name`` in the records; ``skip_unrunnable`` skips (with a note) the optimizer/task pairs that
    cannot run instead of refusing the whole benchmark."""

    tasks: tuple[str, ...]
    optimizers: tuple[str, ...]
    out: str
    seeds: int = 3
    steps: int = 300
    eval_every: int | None = None
    tune_trials: int = 0
    storage: str | None = None
    device: str = "cpu"
    seed: int = 0
    target_tol: float = 0.1
    lr_range: tuple[float, float] = (1e-2, 1e2)
    impl: str = "auto"
    resume: bool = False
    task_options: dict[str, Any] = field(default_factory=dict)
    skip_unrunnable: bool = False
    shared: bool = False

    def resolved(self) -> "BenchConfig":
        """Validated, with defaults filled in."""
        for what, got, choices in (("task", self.tasks, task_registry.names()),
                                   ("optimizer", self.optimizers, zoo.names())):
            if not got:
                raise ValueError(f"no {what} given; choose from: {', '.join(choices)}")
            for name in got:
                if what == "task" and isinstance(name, Task):
                    if self.task_options:
                        raise ValueError("task_options apply to tasks given by name; build the "
                                         f"task object {name.name!r} with its options instead")
                elif what == "task" and ":" in name:
                    task_registry.factory(name)  # a plugin: importable, else a one-line error
                elif name not in choices:
                    raise ValueError(f"unknown {what} {name!r}; choose from: {', '.join(choices)}")
        for key in ("seeds", "steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.tune_trials < 0:
            raise ValueError(f"tune_trials must be >= 0, got {self.tune_trials}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.impl not in IMPLS:
            raise ValueError(f"unknown impl {self.impl!r}; choose from: {', '.join(IMPLS)}")
        if self.impl == "fused":
            lacking = [o for o in self.optimizers if zoo.rule(o).caps.fused is None]
            if lacking:
                raise ValueError(f"impl 'fused' is not available for: {', '.join(lacking)}; "
                                 "use auto or loop")
        if self.shared and not self.storage:
            raise ValueError("a shared sweep needs --storage: an Optuna storage URL every "
                             "worker reaches (postgresql://..., sqlite:///file, "
                             "journal:///file)")
        if not self.target_tol >= 0:
            raise ValueError(f"target_tol must be >= 0, got {self.target_tol}")
        out = str(Path(self.out).resolve())
        return BenchConfig(**{
            **shallow_fields(self), "out": out, "tasks": tuple(self.tasks),
            "optimizers": tuple(self.optimizers), "lr_range": tuple(self.lr_range),
            "task_options": dict(self.task_options),
            "eval_every": self.eval_every or max(1, self.steps // 20),
            "storage": self.storage or f"sqlite:///{out}/optuna.sqlite3",
        })


def shallow_fields(cfg: BenchConfig) -> dict[str, Any]:
    """``cfg``'s fields without copying them (``asdict`` would deep-copy task objects)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


@dataclass(frozen=True)
class BenchResult:
    records: list[dict]
    rows: list[dict]
    files: dict[str, str]


def run_bench(config: BenchConfig) -> BenchResult:
    """Run (or resume) the benchmark described by ``config`` and write its outputs."""
    from ..cli_common import check_out_dir

    cfg = config.resolved()
    if cfg.shared:
        return _run_shared(cfg)
    out = Path(cfg.out)
    check_out_dir(out, resume=True, marker=CONFIG_FILE, flag="out")  # a file / unwritable
    _check_resume(cfg)
    built = {task_label(t): _build_task(t, cfg) for t in cfg.tasks}
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    done = _finished_keys(out)
    pairs, skipped = _runnable_pairs(cfg, built, seeds, done)
    storage = _storage_before_writing(cfg)
    machine = machine_line(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CONFIG_FILE,
                 json.dumps({**_settings(cfg, skipped), "machine": machine}, indent=1) + "\n")
    store = CurveStore(out / CURVES_FILE)
    done = store.keys()
    if cfg.tune_trials > 0 and storage is None:
        storage = open_storage(cfg.storage)
    total, initial = _progress(cfg, pairs, seeds, done, storage)
    with tqdm(total=total, initial=initial, desc="bench", unit="run", dynamic_ncols=True) as bar:
        for t, o in pairs:
            if all((t, o, s) in done for s in seeds):
                continue
            lr = _pick_lr(cfg, built[t], t, o, storage, bar)
            for s in seeds:
                if (t, o, s) in done:
                    continue
                bar.set_postfix_str(f"{t}/{o}/seed {s}")
                record = train_curve(built[t], _rule(o, lr), s, cfg.steps, cfg.eval_every,
                                     cfg.impl)
                store.append({"task": t, "optimizer": o, "seed": s, **record})
                bar.update(1)
    return write_report(cfg, store.load(), skipped, machine)


def task_label(spec: str | Task) -> str:
    """How a task is named in records, studies and plots: its spec, or a task object's name."""
    return spec.name if isinstance(spec, Task) else spec


def _build_task(spec: str | Task, cfg: BenchConfig) -> Task:
    """Task ``spec`` with the benchmark's task options; a bad option is a one-line error."""
    if isinstance(spec, Task):
        return spec
    opts = dict(cfg.task_options)
    allowed = task_registry.options(spec)
    if "device" in allowed or "**" in allowed:
        opts["device"] = cfg.device
    return task_registry.get(spec, **opts)


def _finished_keys(out: Path) -> set:
    """Keys of the runs already recorded in ``out`` (read only; nothing is repaired yet)."""
    path = out / CURVES_FILE
    if not path.exists():
        return set()
    from .records import record_key

    lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # a cut last line is no run
    return {record_key(json.loads(line)) for line in lines if line.strip()}


def _tunable(cfg: BenchConfig, opt: str) -> bool:
    default = zoo.defaults(opt).get("lr")
    return cfg.tune_trials > 0 and isinstance(default, (int, float)) and default > 0


def cannot_run(task: Task, opt: str, cfg: BenchConfig) -> str | None:
    """Why ``opt`` cannot train ``task`` (its one-line ``ValueError`` on one step), or None."""
    try:
        train_curve(task, zoo.rule(opt), cfg.seed, 1, 1, cfg.impl)
    except ValueError as e:
        return " ".join(str(e).split())
    return None


def _runnable_pairs(cfg: BenchConfig, built: dict[str, Task], seeds: list[int],
                    done: set) -> tuple[list[tuple[str, str]], list[str]]:
    """The (task, optimizer) pairs to run and notes on the skipped ones; a pair that cannot
    run is an error unless ``cfg.skip_unrunnable``."""
    pairs, skipped = [], []
    for t in built:
        for o in cfg.optimizers:
            finished = all((t, o, s) in done for s in seeds)
            why = None if finished else cannot_run(built[t], o, cfg)
            if why is None:
                pairs.append((t, o))
            elif cfg.skip_unrunnable:
                skipped.append(f"{o} on {t}: {why}")
                print(f"metaopt bench: skipping {o} on {t}: {why}", file=sys.stderr)
            else:
                raise ValueError(f"optimizer {o} cannot run task {t}: {why}")
    if not pairs:
        raise ValueError("no optimizer can run any of the tasks: " + "; ".join(skipped))
    return pairs, skipped


def _storage_before_writing(cfg: BenchConfig):
    """Check the storage URL (and its driver); open a storage outside ``out`` now, so that a
    bad one fails before any file is written. The default SQLite file is opened later."""
    if cfg.tune_trials == 0:
        return None
    check_storage_url(cfg.storage)
    default = f"sqlite:///{cfg.out}/optuna.sqlite3"
    return None if cfg.storage == default else open_storage(cfg.storage)


def _study_name(cfg: BenchConfig, task_name: str, opt: str) -> str:
    lo, hi = cfg.lr_range
    return f"{task_name}/{opt}/steps={cfg.steps}/seed={cfg.seed}/lr=default*[{lo:g},{hi:g}]"


def _run_shared(cfg: BenchConfig) -> BenchResult:
    """This worker's share of a sweep shared through ``cfg.storage`` (:mod:`.shared`): tuning
    trials and seed runs are claimed from the storage, each done once over all workers; the
    runs this worker did go to its own ``curves.jsonl``, and the table is rendered from every
    worker's runs in the storage."""
    from .shared import open_shared_storage, run_seeds_shared, shared_records, tune_shared

    built = {task_label(t): _build_task(t, cfg) for t in cfg.tasks}  # bad options: nothing made
    storage = open_shared_storage(cfg.storage)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    store = CurveStore(out / CURVES_FILE)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    pairs = [(t, o) for t in built for o in cfg.optimizers]
    with tqdm(desc="bench (shared)", unit="run", dynamic_ncols=True) as bar:
        for t, o in pairs:
            task, lr, name = built[t], zoo.defaults(o).get("lr"), _study_name(cfg, t, o)
            if _tunable(cfg, o):
                bar.set_postfix_str(f"{t}/{o}/tuning")
                lr = tune_shared(_tuning_loss(cfg, task, o), study_name=name, storage=storage,
                                 trials=cfg.tune_trials, default_lr=float(lr),
                                 lr_range=cfg.lr_range, seed=cfg.seed, worker=os.getpid(),
                                 on_trial=lambda: bar.update(1))

            def run(seed: int, task=task, t=t, o=o, lr=lr) -> dict:
                bar.set_postfix_str(f"{t}/{o}/seed {seed}")
                record = train_curve(task, _rule(o, lr), seed, cfg.steps, cfg.eval_every,
                                     cfg.impl)
                return {"task": t, "optimizer": o, "seed": seed, **record}

            run_seeds_shared(run, study_name=name + "/runs", storage=storage, seeds=seeds,
                             value=final_val_loss,
                             on_run=lambda r: (store.append(r), bar.update(1)))
    records = shared_records(storage, [_study_name(cfg, t, o) + "/runs" for t, o in pairs])
    return write_report(cfg, sorted(records, key=record_key))


def _progress(cfg, pairs, seeds, done, storage) -> tuple[int, int]:
    """(total, already done) units of work: one per run and one per tuning trial."""
    total = initial = 0
    for t, o in pairs:
        trials = cfg.tune_trials if _tunable(cfg, o) else 0
        runs = sum((t, o, s) in done for s in seeds)
        total += len(seeds) + trials
        if runs == len(seeds):
            initial += len(seeds) + trials
        elif trials:
            initial += runs + min(trials, completed_trials(storage, _study_name(cfg, t, o)))
        else:
            initial += runs
    return total, initial


def _rule(name: str, lr: float | None):
    return zoo.rule(name) if lr is None else zoo.rule(name, lr=lr)


def _pick_lr(cfg: BenchConfig, task: Task, task_name: str, opt: str, storage,
             bar) -> float | None:
    """The tuned learning rate (or the default when not tuning / the rule has no lr)."""
    default = zoo.defaults(opt).get("lr")
    if not _tunable(cfg, opt):
        return default

    bar.set_postfix_str(f"{task_name}/{opt}/tuning")
    return tune_lr(_tuning_loss(cfg, task, opt), study_name=_study_name(cfg, task_name, opt),
                   storage=storage,
                   trials=cfg.tune_trials, default_lr=float(default), lr_range=cfg.lr_range,
                   seed=cfg.seed, on_trial=lambda: bar.update(1), resume=cfg.resume)


def _tuning_loss(cfg: BenchConfig, task: Task, opt: str):
    """The tuning objective of ``opt`` on ``task``: the final validation loss of one run on
    the tuning seed (disjoint from the reported seeds) at a given lr."""
    def objective(lr: float) -> float:
        record = train_curve(task, _rule(opt, lr), cfg.seed + TUNE_SEED_OFFSET, cfg.steps,
                             cfg.steps, cfg.impl)
        return final_val_loss(record)

    return objective


def _settings(cfg: BenchConfig, skipped: list[str]) -> dict:
    """``bench_config.json``: every setting (JSON-able) and the skipped pairs."""
    settings = {k: jsonable(v) for k, v in shallow_fields(cfg).items()}
    return {**settings, "tasks": [task_label(t) for t in cfg.tasks], "skipped": skipped}


def _check_resume(cfg: BenchConfig) -> None:
    """Results already in ``out`` need ``resume`` and the same :data:`RESUME_KEYS`."""
    out = Path(cfg.out)
    path = out / CONFIG_FILE
    if not (path.exists() or (out / CURVES_FILE).exists()):
        return
    if not cfg.resume:
        raise ValueError(f"{cfg.out} already holds benchmark results; pass --resume to "
                         "continue them or choose another --out")
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(f"cannot resume {cfg.out}: {path} is not readable JSON") from None
    ours = _settings(cfg, [])
    diff = [f"{k}: {old.get(k)} -> {ours[k]}" for k in RESUME_KEYS
            if k in old and old.get(k) != ours[k]]
    if diff:
        raise ValueError(f"cannot resume {cfg.out} with different settings ({'; '.join(diff)})")


def config_from_folder(out: str | Path) -> tuple[BenchConfig, list[str], str | None]:
    """The :class:`BenchConfig`, skipped-pair notes and machine line of a finished or partial
    benchmark in ``out``, from its ``bench_config.json`` and records (``metaopt report``)."""
    out = Path(out)
    path = out / CONFIG_FILE
    saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    records = CurveStore(out / CURVES_FILE).load()
    known = {f.name for f in fields(BenchConfig)}
    kw = {k: v for k, v in saved.items() if k in known}
    kw["tasks"] = tuple(kw.get("tasks") or dict.fromkeys(r["task"] for r in records))
    kw["optimizers"] = tuple(kw.get("optimizers") or
                             dict.fromkeys(r["optimizer"] for r in records))
    kw["lr_range"] = tuple(kw.get("lr_range", (1e-2, 1e2)))
    kw["seeds"] = kw.get("seeds") or len({r["seed"] for r in records}) or 1
    kw["out"] = str(out.resolve())
    if kw.get("eval_every") is None and records:
        kw["eval_every"] = records[0]["eval_every"]
    return BenchConfig(**kw), list(saved.get("skipped", [])), saved.get("machine")


def file_stem(task: str) -> str:
    """A task label as a file-name part (a plugin ``pkg.mod:factory`` has a colon)."""
    return re.sub(r"[^\w.-]", "_", task)


def write_report(cfg: BenchConfig, records: list[dict], skipped: list[str] | None = None,
                 machine: str | None = None) -> BenchResult:
    """Write ``results.md``, ``curves_<task>.png`` and ``profile.png`` from ``records``;
    ``machine`` is the machine line of the table (default: this machine, now)."""
    out = Path(cfg.out)
    rows = summary_rows(records, cfg.target_tol)
    files = {"curves": str(out / "curves.jsonl"), "table": str(out / "results.md")}
    groups = group_runs(records)
    for task, by_opt in groups.items():
        files[f"plot:{task}"] = str(out / f"curves_{file_stem(task)}.png")
        plot_task_curves(task, by_opt, files[f"plot:{task}"])
    # a task solved at initialisation counts as one step, so every ratio is defined
    costs = _common_solvers({
        t: {o: max(1.0, _median_steps(runs, task_target(by, cfg.target_tol)))
            for o, runs in by.items()}
        for t, by in groups.items()})
    if costs and all(costs.values()):
        files["profile"] = str(out / "profile.png")
        plot_profile(performance_ratios(costs), files["profile"], "steps to target")
    # quality: the median final validation loss, floored so that losses at round-off tie
    finals = _common_solvers({
        t: {o: max(LOSS_FLOOR, median([final_val_loss(r) for r in runs]))
            for o, runs in by.items()}
        for t, by in groups.items()})
    if finals and all(finals.values()):
        files["profile_final"] = str(out / "profile_final_loss.png")
        plot_profile(performance_ratios(finals), files["profile_final"],
                     f"final validation loss (floored at {LOSS_FLOOR:g})")
    header = (f"# Benchmark: {', '.join(groups)}\n\n"
              f"Machine: {machine or machine_line(cfg.device)}\n\n"
              f"Settings: {cfg.steps} steps, validation every {cfg.eval_every} steps, "
              f"{cfg.tune_trials} Optuna TPE trials per optimizer and task on the learning rate "
              f"(log-uniform, default x [{cfg.lr_range[0]:g}, {cfg.lr_range[1]:g}], tuned on a "
              f"separate seed for the final validation loss), "
              f"seeds {cfg.seed}..{cfg.seed + cfg.seeds - 1}, device {cfg.device}, "
              f"RuleOptimizer impl {cfg.impl}."
              + (f" Task options: {_options_text(cfg.task_options)}." if cfg.task_options
                 else "") + "\n\n"
              + ("".join(f"Skipped: {note}\n" for note in skipped or []) + "\n"
                 if skipped else ""))
    write_atomic(files["table"], header + markdown_table(rows, cfg.target_tol))
    return BenchResult(records, rows, files)


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


#: final losses below this count as equal (round-off on problems whose optimum is 0)
LOSS_FLOOR = 1e-12


def _median_steps(runs: list[dict], target: float) -> float:
    return median([steps_to_target(r, target) for r in runs])


def _common_solvers(costs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Costs restricted to the optimizers run on every task (a profile compares like with like)."""
    if not costs:
        return {}
    common = set.intersection(*(set(by) for by in costs.values()))
    return {t: {o: c for o, c in by.items() if o in common} for t, by in costs.items()}
