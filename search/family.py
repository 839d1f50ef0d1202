"""Task families: the fitness of a program over several proxy tasks, each normalised against
tuned AdamW on that task (Chen et al. 2023, Sec. 3: proxy tasks that resemble the targets,
and meta-validation on larger held-out tasks).

A family is a list of members ``(task name, options, steps)`` (or a built Task with its
steps). The score of a program on a family is

    score = (1 / N) * sum_i log(L_i(program) / L_i(AdamW))

where ``L_i`` is the validation loss after the member's ``steps`` with the lr chosen from the
grid (per task, as in the single-task fitness) and AdamW is the search's start program
(:data:`search.warm.ADAMW`) tuned on the same grid and seeds, or, with
``baseline="adamw_tuned"``, the best of AdamW's constant variants (first-moment decay and
weight decay, :data:`search.warm.BASELINES`), so that a score below 0 means better than a
constants-tuned AdamW, not only than AdamW's defaults. The baseline shifts every program's
score by the same amount, so the ranking, and with it the search, is the same under either;
it sets what 0 means. 0 means "as good as tuned AdamW",
-0.105 means 0.90x its loss (geometric mean over the members); a program that diverges on any
member scores ``inf``. The log ratio keeps a task whose losses are large from dominating and
never saturates at a tie the way a loss that reaches 0 does.

Named families come from :mod:`metaopt.tasks.families` (``proxy``, ``heldout``) and from
:data:`BUILTIN` (``tiny``, ``small``, ``small_long`` and ``tiny_heldout``, CPU-sized).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .fitness import WORST, Fitness, FitnessConfig
from .program import Program

LOSS_FLOOR = 1e-12  # losses are clamped here before the log (a task that reaches 0 exactly)

#: Search's own small families (task, options, steps), for tests and CPU runs; the shared
#: ``proxy`` and ``heldout`` families live in :mod:`metaopt.tasks.families`.
BUILTIN: dict[str, list[tuple[str, dict, int]]] = {
    "tiny": [  # for tests, smoke runs and CPU searches: seconds on one core
        ("logreg_digits", {"batch_size": 32}, 20),
        ("mlp_digits", {"width": 8, "depth": 1, "batch_size": 32}, 20),
    ],
    "small": [  # six kinds at width 8 and 20-30 steps: about 6 programs/s on one core
        ("logreg_digits", {"batch_size": 32}, 20),
        ("mlp_digits", {"width": 8, "depth": 1, "batch_size": 32}, 20),
        ("cnn_digits", {"channels": 2, "batch_size": 32}, 20),
        ("autoencoder_digits", {"width": 8, "code": 4, "batch_size": 32}, 20),
        ("rnn_digits", {"cell": "gru", "width": 8, "batch_size": 32}, 20),
        ("charlm", {"width": 8, "batch_size": 8, "depth": 1, "heads": 1, "context": 8,
                    "corpus_bytes": 50_000, "eval_windows": 16}, 30),
    ],
    "tiny_heldout": [  # held out from "tiny" and "small": 4x wider, 2 layers, 3-4x longer
        ("mlp_digits", {"width": 32, "depth": 2, "batch_size": 64}, 80),
        ("logreg_digits", {"batch_size": 128, "l2": 1e-3}, 80),
        ("cnn_digits", {"channels": 4, "batch_size": 32}, 60),
    ],
}

#: ``small`` at 5x its horizons (100-150 steps; about 1 program/s on one core): proxies whose
#: horizons are nearer the held-out problems', against the short-horizon bias of 20 steps
BUILTIN["small_long"] = [(task, opts, 5 * steps) for task, opts, steps in BUILTIN["small"]]


@dataclass
class Member:
    """One task of a family: a label, the built task and its training steps."""

    label: str
    task: object
    steps: int


def family_names() -> list[str]:
    names = set(BUILTIN)
    shared = _shared_families()
    if shared is not None:
        names |= set(shared.names())
    return sorted(names)


def _shared_families():
    try:
        from metaopt.tasks import families
    except ImportError:
        return None
    return families if callable(getattr(families, "get", None)) else None


def _spec_parts(spec) -> tuple[object, dict, int]:
    """(task name or Task, options, steps) from a tuple, a dict or a spec object."""
    if isinstance(spec, (tuple, list)) and len(spec) == 3:
        return spec[0], dict(spec[1] or {}), spec[2]
    if isinstance(spec, dict):
        return spec.get("task"), dict(spec.get("options") or {}), spec.get("steps")
    task = getattr(spec, "task", getattr(spec, "name", None))
    opts = getattr(spec, "options", getattr(spec, "kwargs", None)) or {}
    steps = getattr(spec, "steps", getattr(spec, "horizon", None))
    return task, dict(opts), steps


def _label(name: str, opts: dict) -> str:
    inner = ",".join(f"{k}={v}" for k, v in sorted(opts.items()) if k not in ("device", "dtype"))
    return f"{name}({inner})" if inner else name


def build_members(family, device="cpu", name: str = "family") -> list[Member]:
    """Members of ``family`` (a name or a list of specs) built on ``device``. Unknown names,
    empty families and members that fail to build are one-line ``ValueError``s."""
    if isinstance(family, str):
        name = family
        shared = _shared_families()
        if shared is not None and family in set(shared.names()):
            specs = list(shared.get(family))
        elif family in BUILTIN:
            specs = BUILTIN[family]
        else:
            raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(family_names())}")
    else:
        specs = list(family)
    if not specs:
        raise ValueError(f"family {name!r} is empty; give at least one (task, options, steps)")
    from metaopt import tasks

    members = []
    for spec in specs:
        task, opts, steps = _spec_parts(spec)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"family {name!r}: member {spec!r} needs an integer steps >= 1")
        if isinstance(task, str):
            label = _label(task, opts)
            try:
                built = tasks.get(task, device=device, **opts)
            except Exception as err:  # noqa: BLE001 - any failure to build is the user's input
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ValueError(f"family {name!r}: member {label} failed to build: {msg}") from None
        elif all(callable(getattr(task, a, None)) for a in ("init", "loss", "sample_batch", "evaluate")):
            label, built = getattr(task, "name", type(task).__name__), task
        else:
            raise ValueError(f"family {name!r}: member {spec!r} is not (task name, options, steps)")
        members.append(Member(f"{label}@{steps}", built, steps))
    return members


@dataclass
class Family:
    """A family of tasks with normalised fitness. ``baselines[i]`` is tuned AdamW's loss on
    member ``i`` (computed once by :meth:`prepare`)."""

    name: str
    members: list[Member]
    baselines: list[float] = field(default_factory=list)
    baseline_lrs: list[float | None] = field(default_factory=list)
    baseline: str = "adamw"
    baseline_texts: list[str] = field(default_factory=list)

    def __post_init__(self):
        from .warm import check_baseline
        check_baseline(self.baseline)

    @classmethod
    def build(cls, family, device="cpu", baseline: str = "adamw") -> "Family":
        if isinstance(family, Family):
            return family
        name = family if isinstance(family, str) else "custom"
        return cls(name, build_members(family, device, name), baseline=baseline)

    def scaled(self, factor: int) -> "Family":
        """The same tasks trained ``factor`` times longer (a funnel stage; its own baselines)."""
        members = [Member(m.label.rsplit("@", 1)[0] + f"@{m.steps * factor}", m.task,
                          m.steps * factor) for m in self.members]
        return Family(f"{self.name}x{factor}", members, baseline=self.baseline)

    def labels(self) -> list[str]:
        return [m.label for m in self.members]

    def member_cfg(self, cfg: FitnessConfig, i: int) -> FitnessConfig:
        """``cfg`` with the member's steps (the time limit grows with them)."""
        steps = self.members[i].steps
        return replace(cfg, steps=steps, time_limit=cfg.time_limit * max(1.0, steps / cfg.steps))

    def prepare(self, cfg: FitnessConfig, evaluator: str = "batched") -> None:
        """Train the baseline on every member: tuned AdamW (``baseline="adamw"``), or the best
        of AdamW's constant variants (``"adamw_tuned"``: :data:`search.warm.BASELINES`), each
        with its lr tuned; ``baseline_texts[i]`` is the program that won on member ``i``. A
        member on which the baseline diverges at every lr cannot normalise anything and is an
        error."""
        if self.baselines:
            return
        from .backends import evaluate_local
        from .parse import parse
        from .warm import BASELINES

        texts = BASELINES[self.baseline]
        programs = [parse(t) for t in texts]
        for i, m in enumerate(self.members):
            fits = evaluate_local(programs, m.task, self.member_cfg(cfg, i), evaluator)
            best = min(range(len(fits)), key=lambda k: (fits[k].value, k))
            fit = fits[best]
            if not math.isfinite(fit.value):
                raise ValueError(f"family {self.name!r}: tuned AdamW diverges (or runs past the "
                                 f"time limit) on {m.label} at every lr of {list(cfg.lrs)}; fix "
                                 "the member, the grid or the time limit")
            self.baselines.append(fit.value)
            self.baseline_lrs.append(fit.best_lr)
            self.baseline_texts.append(texts[best])

    def evaluate(self, programs: list[Program], cfg: FitnessConfig,
                 evaluator: str = "batched") -> list[Fitness]:
        """Normalised family fitness of each program (see the module docstring)."""
        from .backends import evaluate_local

        self.prepare(cfg, evaluator)
        per_member = [evaluate_local(programs, m.task, self.member_cfg(cfg, i), evaluator)
                      for i, m in enumerate(self.members)]
        out = []
        for p in range(len(programs)):
            fits = [per_member[i][p] for i in range(len(self.members))]
            out.append(combine(fits, self.baselines))
        return out


def normalised(loss: float, baseline: float) -> float:
    """``log(loss / baseline)`` with both clamped at :data:`LOSS_FLOOR`; ``inf`` if ``loss``
    is not finite."""
    if not math.isfinite(loss):
        return WORST
    return math.log(max(loss, LOSS_FLOOR) / max(baseline, LOSS_FLOOR))


def combine(fits: list[Fitness], baselines: list[float]) -> Fitness:
    """One program's member fitnesses -> its family fitness: the mean normalised score;
    ``best_lr`` is the median of the members' tuned lrs and ``task_lrs`` keeps each of them."""
    scores = [normalised(f.value, b) for f, b in zip(fits, baselines)]
    seconds = sum(f.seconds for f in fits)
    lrs = [f.best_lr for f in fits]
    if not all(math.isfinite(s) for s in scores):
        return Fitness(WORST, None, [], seconds, task_lrs=lrs, task_scores=scores)
    finite_lrs = sorted(lr for lr in lrs if lr is not None)
    median = finite_lrs[len(finite_lrs) // 2] if finite_lrs else None
    return Fitness(sum(scores) / len(scores), median, scores, seconds, task_lrs=lrs,
                   task_scores=scores)
