"""The benchmark harness: rules x tasks x seeds, an equal Optuna learning-rate budget per rule,
curves appended as runs finish, then a markdown table and PNG plots.

Output folder ``out``:
  * ``curves.jsonl``: one record per (task, optimizer, seed) run (see :mod:`.run`);
  * ``results.md``: machine, settings, and the table of :mod:`.summary`;
  * ``curves_<task>.png``: loss curves; ``profile.png``: performance profile over tasks on the
    median steps-to-target (:mod:`.profile`); ``profile_final_loss.png``: the same on the median
    final validation loss;
  * ``optuna.sqlite3``: the tuning studies, unless another storage URL is given;
  * ``bench_config.json``: the settings a resumed run must share.

With ``resume=True`` finished records are kept and skipped, and the Optuna studies continue
from their completed trials, so a killed benchmark loses at most the run in progress.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

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
from .run import final_val_loss, train_curve
from .summary import group_runs, markdown_table, median, steps_to_target, summary_rows, task_target
from .tune import open_storage, tune_lr

#: tuning runs use seeds disjoint from the reported ones: ``seed + TUNE_SEED_OFFSET``
TUNE_SEED_OFFSET = 1_000_000
#: settings that must match for ``resume`` to append to an existing folder
RESUME_KEYS = ("steps", "eval_every", "tune_trials", "seed", "lr_range")


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``eval_every=None`` means ``max(1, steps // 20)``; ``storage=None`` means
    ``sqlite:///<out>/optuna.sqlite3``; ``lr_range`` scales each rule's default lr; ``impl`` is
    the RuleOptimizer path for every rule (``"fused"`` needs every rule to have one)."""

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
    shared: bool = False

    def resolved(self) -> "BenchConfig":
        """Validated, with defaults filled in."""
        for what, got, choices in (("task", self.tasks, task_registry.names()),
                                   ("optimizer", self.optimizers, zoo.names())):
            if not got:
                raise ValueError(f"no {what} given; choose from: {', '.join(choices)}")
            for name in got:
                if name not in choices:
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
            lacking = [o for o in self.optimizers if zoo.rule(o).fused is None]
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
            **asdict(self), "out": out, "tasks": tuple(self.tasks),
            "optimizers": tuple(self.optimizers), "lr_range": tuple(self.lr_range),
            "eval_every": self.eval_every or max(1, self.steps // 20),
            "storage": self.storage or f"sqlite:///{out}/optuna.sqlite3",
        })


@dataclass(frozen=True)
class BenchResult:
    records: list[dict]
    rows: list[dict]
    files: dict[str, str]


def run_bench(config: BenchConfig) -> BenchResult:
    """Run (or resume) the benchmark described by ``config`` and write its outputs."""
    cfg = config.resolved()
    if cfg.shared:
        return _run_shared(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    store = CurveStore(out / "curves.jsonl")
    _check_resume(cfg, store)
    storage = open_storage(cfg.storage) if cfg.tune_trials > 0 else None
    done = store.keys()
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    pairs = [(t, o) for t in cfg.tasks for o in cfg.optimizers
             if any((t, o, s) not in done for s in seeds)]
    total = sum(cfg.tune_trials + sum((t, o, s) not in done for s in seeds) for t, o in pairs)
    with tqdm(total=total, desc="bench", unit="run", dynamic_ncols=True) as bar:
        built: dict[str, Task] = {}
        for t, o in pairs:
            task = built.setdefault(t, task_registry.get(t, device=cfg.device))
            lr = _pick_lr(cfg, task, t, o, storage, bar)
            for s in seeds:
                if (t, o, s) in done:
                    continue
                bar.set_postfix_str(f"{t}/{o}/seed {s}")
                record = train_curve(task, _rule(o, lr), s, cfg.steps, cfg.eval_every, cfg.impl)
                store.append({"task": t, "optimizer": o, "seed": s, **record})
                bar.update(1)
    return write_report(cfg, store.load())


def _rule(name: str, lr: float | None):
    return zoo.rule(name) if lr is None else zoo.rule(name, lr=lr)


def _pick_lr(cfg: BenchConfig, task: Task, task_name: str, opt: str, storage,
             bar) -> float | None:
    """The tuned learning rate (or the default when not tuning / the rule has no lr)."""
    default = zoo.defaults(opt).get("lr")
    if cfg.tune_trials == 0 or not isinstance(default, (int, float)) or default <= 0:
        bar.update(cfg.tune_trials)
        return default
    ran = []

    def objective(lr: float) -> float:
        tune_seed = cfg.seed + TUNE_SEED_OFFSET
        record = train_curve(task, _rule(opt, lr), tune_seed, cfg.steps, cfg.steps, cfg.impl)
        return final_val_loss(record)

    def on_trial():
        ran.append(1)
        bar.update(1)

    bar.set_postfix_str(f"{task_name}/{opt}/tuning")
    lr = tune_lr(objective, study_name=study_name(cfg, task_name, opt), storage=storage, trials=cfg.tune_trials,
                 default_lr=float(default), lr_range=cfg.lr_range, seed=cfg.seed,
                 on_trial=on_trial)
    bar.update(cfg.tune_trials - len(ran))
    return lr


def study_name(cfg: BenchConfig, task_name: str, opt: str) -> str:
    """The Optuna study that tunes ``opt`` on ``task_name`` (shared by workers and resumes)."""
    lo, hi = cfg.lr_range
    return f"{task_name}/{opt}/steps={cfg.steps}/seed={cfg.seed}/lr=default*[{lo:g},{hi:g}]"


def _run_shared(cfg: BenchConfig) -> BenchResult:
    """This worker's share of a sweep shared through ``cfg.storage`` (:mod:`.shared`): tuning
    trials and seed runs are claimed from the storage, each done once over all workers; the
    runs this worker did go to its own ``curves.jsonl``, and the table is rendered from every
    worker's runs in the storage."""
    from .shared import open_shared_storage, run_seeds_shared, shared_records, tune_shared

    storage = open_shared_storage(cfg.storage)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    store = CurveStore(out / "curves.jsonl")
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    pairs = [(t, o) for t in cfg.tasks for o in cfg.optimizers]
    built: dict[str, Task] = {}
    worker = os.getpid()
    with tqdm(desc="bench (shared)", unit="run", dynamic_ncols=True) as bar:
        for t, o in pairs:
            task = built.setdefault(t, task_registry.get(t, device=cfg.device))
            lr = zoo.defaults(o).get("lr")
            name = study_name(cfg, t, o)
            if cfg.tune_trials and isinstance(lr, (int, float)) and lr > 0:
                def objective(lr_try: float, task=task, o=o) -> float:
                    return final_val_loss(train_curve(task, _rule(o, lr_try),
                                                      cfg.seed + TUNE_SEED_OFFSET, cfg.steps,
                                                      cfg.steps, cfg.impl))
                bar.set_postfix_str(f"{t}/{o}/tuning")
                lr = tune_shared(objective, study_name=name, storage=storage,
                                 trials=cfg.tune_trials, default_lr=float(lr),
                                 lr_range=cfg.lr_range, seed=cfg.seed, worker=worker,
                                 on_trial=lambda: bar.update(1))

            def run(seed: int, task=task, t=t, o=o, lr=lr) -> dict:
                bar.set_postfix_str(f"{t}/{o}/seed {seed}")
                record = train_curve(task, _rule(o, lr), seed, cfg.steps, cfg.eval_every,
                                     cfg.impl)
                return {"task": t, "optimizer": o, "seed": seed, **record}

            run_seeds_shared(run, study_name=name + "/runs", storage=storage, seeds=seeds,
                             value=final_val_loss,
                             on_run=lambda r: (store.append(r), bar.update(1)))
    records = shared_records(storage, [study_name(cfg, t, o) + "/runs" for t, o in pairs])
    return write_report(cfg, sorted(records, key=record_key))


def _check_resume(cfg: BenchConfig, store: CurveStore) -> None:
    path = Path(cfg.out) / "bench_config.json"
    settings = {k: list(v) if isinstance(v, tuple) else v
                for k, v in asdict(cfg).items() if k in RESUME_KEYS}
    if store.load() or path.exists():
        if not cfg.resume:
            raise ValueError(f"{cfg.out} already holds benchmark results; pass --resume to "
                             "continue them or choose another --out")
        old = json.loads(path.read_text()) if path.exists() else settings
        diff = [f"{k}: {old.get(k)} -> {settings[k]}"
                for k in RESUME_KEYS if old.get(k) != settings[k]]
        if diff:
            raise ValueError(f"cannot resume {cfg.out} with different settings ({'; '.join(diff)})")
    write_atomic(path, json.dumps(settings, indent=1) + "\n")


def write_report(cfg: BenchConfig, records: list[dict]) -> BenchResult:
    """Write ``results.md``, ``curves_<task>.png`` and ``profile.png`` from ``records``."""
    out = Path(cfg.out)
    rows = summary_rows(records, cfg.target_tol)
    files = {"curves": str(out / "curves.jsonl"), "table": str(out / "results.md")}
    groups = group_runs(records)
    for task, by_opt in groups.items():
        files[f"plot:{task}"] = str(out / f"curves_{task}.png")
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
              f"Machine: {machine_line(cfg.device)}\n\n"
              f"Settings: {cfg.steps} steps, validation every {cfg.eval_every} steps, "
              f"{cfg.tune_trials} Optuna TPE trials per optimizer and task on the learning rate "
              f"(log-uniform, default x [{cfg.lr_range[0]:g}, {cfg.lr_range[1]:g}], tuned on a "
              f"separate seed for the final validation loss), "
              f"seeds {cfg.seed}..{cfg.seed + cfg.seeds - 1}, device {cfg.device}, "
              f"RuleOptimizer impl {cfg.impl}.\n\n")
    write_atomic(files["table"], header + markdown_table(rows, cfg.target_tol))
    return BenchResult(records, rows, files)


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
