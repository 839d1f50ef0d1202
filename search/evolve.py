"""``search.run``: regularized evolution over programs (Real et al., AAAI 2019; Chen et al.
2023, Sec. 2).

Each round draws ``batch`` parents by tournament (the best of ``tournament`` random members),
mutates each into a child that abstract execution accepts, removes its dead code and looks up
its numeric fingerprint: a known function reuses the cached fitness (a cache hit), new ones are
trained together on the backend. Children join the population and the oldest members leave.
When the best fitness has not improved for ``plateau`` evaluations the population restarts as
copies of the start program and of the best program, alternately. Every evaluation and a
snapshot of the evolution are committed to ``out/search.sqlite`` together, so ``resume=True``
continues a killed run without losing or re-running an evaluation.
"""
from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field, replace

from .backends import evaluate_local, make_backend
from .check import InvalidProgram, check
from .family import Family
from .fitness import FitnessConfig
from .fingerprint import fingerprint
from .graph import structural_hash
from .mutate import MUTATIONS, MAX_TRIES, valid_child
from .parse import parse
from .program import Program
from .simplify import funnel, funnel_stages, simplify
from .store import Store, check_out, open_store, remove_empty_store
from .warm import check_baseline, warm_start as make_warm_start


@dataclass
class SearchResult:
    """The best program (raw and pruned), its fitness, the history (one dict per evaluated
    program in order) and the counters; for a family search with held-out meta-validation
    also the validation rows, the program that scored best there (``validated``) and the
    funnel's stages."""

    best: Program
    best_pruned: Program
    fitness: float
    history: list[dict]
    summary: dict = field(default_factory=dict)
    simplified: Program | None = None
    funnel: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    validated: Program | None = None


@dataclass
class _Member:
    id: int
    prog: Program
    fitness: float


STRATEGIES = ("evolution", "random")
RANDOM_CHAIN = 8  # the random arm: chains of 1..RANDOM_CHAIN mutations of the start program


def resolve_task(task, device="cpu"):
    """A registered task name (built on ``device``) or a task object, returned as a task."""
    if isinstance(task, str):
        from metaopt import tasks

        return tasks.get(task, device=device)
    for attr in ("init", "loss", "sample_batch", "evaluate", "generator"):
        if not callable(getattr(task, attr, None)):
            raise ValueError(f"task must be a registered name or a Task object; missing .{attr}()")
    return task


def rank_key(row: dict) -> tuple:
    """Deterministic order of evaluated programs: fitness, then the earliest evaluated (ties
    between different functions are counted in ``summary['ties_at_best']``)."""
    return row["fitness"], row["id"]


def run(task=None, budget: int = 200, seed: int = 0, out: str | None = None,
        warm_start: str | Program = "adamw", backend: str = "local", population: int = 32,
        tournament: int = 4, batch: int = 8, fitness: FitnessConfig | None = None,
        plateau: int | None = None, resume: bool = False, device: str = "cpu",
        evaluator: str = "batched", workers: int | None = None, progress: bool = True,
        mutations: tuple[str, ...] = MUTATIONS, simplify_tol: float | None = None,
        funnel_steps: int | None = None, funnel_top: int = 5, *, family=None, heldout=None,
        validate_every: int = 0, validate_top: int = 3, strategy: str = "evolution",
        address: str | None = None, baseline: str = "adamw") -> SearchResult:
    """Search for an update rule on ``task`` (or on a task ``family``) with ``budget``
    evaluated programs (cache hits included; the start program counts as one). Writes
    ``out/search.sqlite`` when ``out`` is given (required for ``resume``; resuming an empty
    folder starts a new run). ``mutations`` restricts the mutation kinds
    (``("perturb_constant",)`` tunes only the start program's constants); ``strategy="random"``
    is random search: every candidate is a chain of 1-8 random mutations of the start
    program.

    ``family``: a family name (:func:`search.family.family_names`) or a list of
    ``(task, options, steps)``; the fitness is the mean over its members of log(loss / tuned
    AdamW's loss), the lr tuned per member on ``fitness.lrs`` (each member's own ``steps``
    replace ``fitness.steps``). ``heldout``: a family the selection never sees except through
    meta-validation: every ``validate_every`` evaluations (and at the end) the ``validate_top``
    best distinct programs are scored on it and stored; at the end the ``funnel_top`` best go
    through a funnel (the family at 2x steps, then ``heldout``). ``baseline``: what a family's
    losses are normalised by: ``"adamw"`` (tuned lr) or ``"adamw_tuned"`` (the best of AdamW's
    first-moment and weight decays, each lr-tuned; it moves the score's zero, not the
    ranking).

    ``simplify_tol`` simplifies the best program (statements whose removal costs less than
    this relative loss are dropped, the update must keep depending on lr and, with
    ``heldout``, its held-out score must stay within the same tolerance;
    :func:`search.simplify.simplify`). ``funnel_steps`` (single task) re-evaluates the
    ``funnel_top`` best distinct programs with that many steps against the start program with
    its lr tuned. ``backend="ray"`` fans candidates out to Ray (``address`` or ``RAY_ADDRESS``
    joins a running cluster; ``workers`` defaults to its CPUs). Returns a
    :class:`SearchResult`."""
    _check_args(budget, population, tournament, batch, plateau, resume, out)
    unknown = sorted(set(mutations) - set(MUTATIONS))
    if unknown or not mutations:
        raise ValueError(f"unknown mutations {unknown}; choose from {MUTATIONS}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    if (task is None) == (family is None):
        raise ValueError("give exactly one of task= (a task) and family= (a task family)")
    if validate_every < 0 or validate_top < 1 or (validate_every and heldout is None):
        raise ValueError(f"validate_every={validate_every}, validate_top={validate_top}: need "
                         "validate_every >= 0 (0 = only at the end), validate_top >= 1, and "
                         "heldout= for meta-validation")
    cfg = fitness or FitnessConfig()
    start = make_warm_start(warm_start, seed)
    check(start)
    check_baseline(baseline)  # also when ``family`` is a built Family (its own baseline)
    if baseline != "adamw" and family is None:
        raise ValueError(f"baseline={baseline!r} normalises a family's fitness; give family=")
    target = (Family.build(family, device, baseline) if family is not None
              else resolve_task(task, device))
    held = Family.build(heldout, device, baseline) if heldout is not None else None
    if out:
        check_out(out, resume)
    back = make_backend(backend, target, cfg, evaluator, workers, address)
    store = None
    try:
        for fam in (target, held):
            if isinstance(fam, Family):
                fam.prepare(cfg, evaluator)
        store = open_store(out, resume) if out else Store(":memory:")
        key = _run_key(task if family is None else target, seed, warm_start, cfg, population,
                       tournament, mutations, strategy, held)
        evo = _Evolution(store, back, start, seed, population, tournament, batch,
                         plateau or 20 * population, tuple(mutations), strategy)
        evo.validator = _Validator(held, cfg, evaluator, validate_every, validate_top) if held else None
        evo.load_or_start(key)
        evo.loop(budget, progress)
        result = evo.result()
        if simplify_tol is not None and math.isfinite(result.fitness):
            simple, sfit = simplify(result.best_pruned, target, cfg, simplify_tol, evaluator,
                                    heldout=held)
            result.simplified = simple
            result.summary.update(simplified_fitness=sfit, simplified_statements=len(simple),
                                  best_statements=len(result.best_pruned))
        if isinstance(target, Family) and held is not None and funnel_top:
            _family_funnel(result, store, target, held, cfg, funnel_top, evaluator)
        elif funnel_steps:
            _funnel(result, store, start, target, replace(cfg, steps=funnel_steps), funnel_top,
                    evaluator)
        return result
    except BaseException:
        if store is not None and out and store.count() == 0:
            store.close()
            store = None
            remove_empty_store(out)
        raise
    finally:
        back.close()
        if store is not None:
            store.close()


def _top_distinct(store, top: int) -> list[dict]:
    """The ``top`` best rows with distinct fingerprints (finite fitness), in rank order."""
    seen, out = set(), []
    for row in sorted(store.rows(), key=rank_key):
        if math.isfinite(row["fitness"]) and row["fingerprint"] not in seen:
            seen.add(row["fingerprint"])
            out.append(row)
        if len(out) == top:
            break
    return out


def _funnel(result, store, start, task, cfg, top, evaluator) -> None:
    """Re-evaluate the ``top`` best distinct programs on the longer ``cfg``; only those that
    beat the lr-tuned start program there advance (Chen et al. 2023, Sec. 3)."""
    programs = [parse(row["pruned"]) for row in _top_distinct(store, top)]
    ranked, base = funnel(programs, start, task, cfg, evaluator)
    result.funnel = [{"text": p.to_text(), "fitness": f, "beats_baseline": ok} for p, f, ok in ranked]
    result.summary.update(funnel_baseline=base, funnel_advanced=sum(ok for _, _, ok in ranked))


def _family_funnel(result, store, family, held, cfg, top, evaluator) -> None:
    """The funnel at growing scale: the ``top`` best distinct programs on the family at 2x
    its steps, then the survivors (those beating tuned AdamW, score < 0) on ``held``."""
    programs = [parse(row["pruned"]) for row in _top_distinct(store, top)]
    stages = funnel_stages(programs, [family.scaled(2), held], cfg, evaluator)
    result.funnel = stages
    survivors = stages[-1]["programs"] if stages else []
    result.summary.update(funnel_advanced=sum(p["advances"] for p in survivors),
                          funnel_stages=[s["stage"] for s in stages])


def _check_args(budget, population, tournament, batch, plateau, resume, out):
    if budget < 1:
        raise ValueError(f"budget={budget}: must be >= 1")
    if population < 1 or not 1 <= tournament <= population:
        raise ValueError(f"population={population}, tournament={tournament}: need "
                         "population >= 1 and 1 <= tournament <= population")
    if batch < 1 or (plateau is not None and plateau < 1):
        raise ValueError(f"batch={batch}, plateau={plateau}: both must be >= 1")
    if resume and not out:
        raise ValueError("resume needs out= (the folder of the run to resume)")


def _run_key(task, seed, warm, cfg: FitnessConfig, population, tournament, mutations,
             strategy="evolution", held=None) -> dict:
    if isinstance(task, Family):
        name = f"family:{task.name}:{'|'.join(task.labels())}"
    else:
        name = task if isinstance(task, str) else getattr(task, "name", type(task).__name__)
    warm_text = warm.to_text() if isinstance(warm, Program) else str(warm)
    key = {"task": name, "seed": seed, "warm_start": warm_text, "steps": cfg.steps,
           "lrs": list(cfg.lrs), "seeds": list(cfg.seeds), "population": population,
           "tournament": tournament, "mutations": list(mutations)}
    if strategy != "evolution":
        key["strategy"] = strategy
    if held is not None:
        key["heldout"] = f"{held.name}:{'|'.join(held.labels())}"
    return key


class _Validator:
    """Held-out meta-validation of the current top-k (Chen et al. 2023, Sec. 3): scores on the
    held-out family, reused per fingerprint, committed with the evaluation count they follow."""

    def __init__(self, held: Family, cfg, evaluator, every: int, top: int):
        self.held, self.cfg, self.evaluator, self.every, self.top = held, cfg, evaluator, every, top

    def due(self, store, evaluated: int, final: bool) -> bool:
        done = store.get_meta("validated_at") or 0
        if done >= evaluated:
            return False
        return final or (self.every > 0 and evaluated - done >= self.every)

    def validate(self, store, evaluated: int, generation: int) -> None:
        known = {v["fingerprint"]: v for v in store.validation()}
        rows = _top_distinct(store, self.top)
        fresh = [r for r in rows if r["fingerprint"] not in known]
        fits = evaluate_local([parse(r["pruned"]) for r in fresh], self.held, self.cfg,
                              self.evaluator) if fresh else []
        for r, f in zip(fresh, fits):
            known[r["fingerprint"]] = {"score": f.value, "task_scores": f.task_scores or []}
        out = [{"evaluated": evaluated, "generation": generation, "program": r["id"],
                "fingerprint": r["fingerprint"], "score": known[r["fingerprint"]]["score"],
                "task_scores": known[r["fingerprint"]]["task_scores"]} for r in rows]
        store.commit([], validation=out, validated_at=evaluated)


class _Evolution:
    def __init__(self, store, backend, start, seed, population, tournament, batch, plateau, kinds,
                 strategy="evolution"):
        self.store, self.backend, self.start = store, backend, start
        self.P, self.T, self.batch, self.plateau = population, tournament, batch, plateau
        self.kinds, self.strategy = kinds, strategy
        self.validator = None
        self.rng = random.Random(seed)
        self.c = {"evaluated": 0, "unique": 0, "cache_hits": 0, "rejected": 0, "ran": 0,
                  "failed": 0, "restarts": 0, "since_improve": 0, "generation": 0}
        self.cache: dict[str, tuple[float, float | None, list | None]] = {}
        self.pop: deque[_Member] = deque()
        self.best: _Member | None = None
        self.start_id = 0

    # -- state ---------------------------------------------------------------------------
    def snapshot(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"population": [m.id for m in self.pop], "rng": [version, list(internal), gauss],
                "counters": dict(self.c), "best": self.best.id, "start": self.start_id}

    def load_or_start(self, key: dict) -> None:
        snap = self.store.get_meta("snapshot")
        if snap is None:
            self._start(key)
            return
        old = self.store.get_meta("run")
        if old != key:
            diff = sorted(k for k in key if old.get(k) != key[k])
            raise ValueError(f"cannot resume: the run in the store differs in {diff}")
        version, internal, gauss = snap["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.c.update(snap["counters"])
        rows = {r["id"]: r for r in self.store.rows(set(snap["population"]) | {snap["best"], snap["start"]})}
        self.pop = deque(self._member(rows[i]) for i in snap["population"])
        self.best, self.start_id = self._member(rows[snap["best"]]), snap["start"]
        self.cache = self.store.cache()

    @staticmethod
    def _member(row) -> _Member:
        return _Member(row["id"], parse(row["text"]), row["fitness"])

    def _start(self, key: dict) -> None:
        pruned = check(self.start)
        fit = self.backend.evaluate([pruned])[0]
        row = self._row(self.start, pruned, fingerprint(pruned), (fit.value, fit.best_lr,
                        fit.task_lrs), None, 0, fit.seconds, 0)
        self.cache[row["fingerprint"]] = (fit.value, fit.best_lr, fit.task_lrs)
        self.c.update(evaluated=1, unique=1, ran=1)
        member = _Member(0, self.start, fit.value)
        self.pop = deque([member] * self.P)
        self.best = member

        def snap(ids):
            member.id = self.start_id = ids[0]
            return self.snapshot()

        self.store.commit([row], snap, run=key)

    def _row(self, prog, pruned, fp, scored, parent, tries, seconds, hit) -> dict:
        value, lr, task_lrs = scored
        return {"text": prog.to_text(), "pruned": pruned.to_text(), "struct_hash":
                structural_hash(pruned), "fingerprint": fp, "fitness": value, "best_lr": lr,
                "task_lrs": task_lrs, "parent": parent, "generation": self.c["generation"],
                "cache_hit": int(hit), "eval_seconds": seconds, "check_tries": tries}

    # -- evolution -----------------------------------------------------------------------
    def tournament(self) -> _Member:
        contenders = [self.pop[self.rng.randrange(len(self.pop))] for _ in range(self.T)]
        return min(contenders, key=lambda m: m.fitness)

    def _child(self, parents: int = 20):
        """A checked child of a tournament winner (another winner when a parent has no valid
        child in its tries)."""
        for _ in range(parents):
            if self.strategy == "random":
                return self._random_chain()
            parent = self.tournament()
            try:
                child, pruned, tries = valid_child(parent.prog, self.rng, self.kinds)
            except InvalidProgram:
                self.c["rejected"] += MAX_TRIES
                continue
            self.c["rejected"] += tries
            return parent, child, pruned, tries
        raise InvalidProgram(f"no valid child from {parents} parents; widen the mutations")

    def _random_chain(self):
        """Random search's candidate: 1..RANDOM_CHAIN valid mutations of the start program."""
        parent = _Member(self.start_id, self.start, math.nan)
        prog, total = self.start, 0
        for _ in range(self.rng.randint(1, RANDOM_CHAIN)):
            prog, pruned, tries = valid_child(prog, self.rng, self.kinds)
            total += tries
        self.c["rejected"] += total
        return parent, prog, pruned, total

    def loop(self, budget: int, progress: bool) -> None:
        bar = _bar(budget, self.c["evaluated"], progress)
        self._maybe_validate(budget)
        while self.c["evaluated"] < budget:
            n = min(self.batch, budget - self.c["evaluated"])
            members = self._round(n)
            bar.update(len(members))
            bar.set_postfix(unique=self.c["unique"], hits=self.c["cache_hits"],
                            best=f"{self.best.fitness:.4g}")
            self._maybe_validate(budget)
        bar.close()

    def _maybe_validate(self, budget: int) -> None:
        v, n = self.validator, self.c["evaluated"]
        if v is not None and v.due(self.store, n, final=n >= budget):
            v.validate(self.store, n, self.c["generation"])

    def _round(self, n: int) -> list[_Member]:
        self.c["generation"] += 1
        kids = []
        for _ in range(n):
            parent, child, pruned, tries = self._child()
            kids.append((parent, child, pruned, fingerprint(pruned), tries))
        fresh = {}
        for _, _, pruned, fp, _ in kids:
            if fp not in self.cache and fp not in fresh:
                fresh[fp] = pruned
        fits = dict(zip(fresh, self.backend.evaluate(list(fresh.values())))) if fresh else {}
        rows, members = [], []
        for parent, child, pruned, fp, tries in kids:
            if fp in fits:
                f = fits.pop(fp)
                scored, secs, hit = (f.value, f.best_lr, f.task_lrs), f.seconds, False
                self.cache[fp] = scored
                self.c["unique"] += 1
                self.c["ran" if f.per_lr else "failed"] += 1
            else:
                scored, secs, hit = self.cache[fp], 0.0, True
                self.c["cache_hits"] += 1
            rows.append(self._row(child, pruned, fp, scored, parent.id, tries, secs, hit))
            members.append(_Member(0, child, scored[0]))
        self.c["evaluated"] += len(kids)
        for m in members:
            self.pop.append(m)
            if len(self.pop) > self.P:
                self.pop.popleft()
        improved = [m for m in members if m.fitness < self.best.fitness]
        if improved:
            self.best = min(improved, key=lambda m: m.fitness)
            self.c["since_improve"] = 0
        else:
            self.c["since_improve"] += len(kids)
            if self.c["since_improve"] >= self.plateau:
                self._restart()

        def snap(ids):  # ids exist only inside the insert's transaction
            for m, i in zip(members, ids):
                m.id = i
            return self.snapshot()

        self.store.commit(rows, snap)
        return members

    def _restart(self) -> None:
        self.c["restarts"] += 1
        self.c["since_improve"] = 0
        if self.c["restarts"] % 2:
            rows = self.store.rows([self.start_id])
            seed = self._member(rows[0])
        else:
            seed = self.best
        self.pop = deque([seed] * self.P)

    def result(self) -> SearchResult:
        rows = self.store.rows()
        history, best_so_far = [], math.inf
        for r in rows:
            best_so_far = min(best_so_far, r["fitness"])
            history.append({"id": r["id"], "fitness": r["fitness"], "best": best_so_far,
                            "cache_hit": bool(r["cache_hit"]), "parent": r["parent"],
                            "generation": r["generation"]})
        best_row = min(rows, key=rank_key)
        tied = {r["fingerprint"] for r in rows if r["fitness"] == best_row["fitness"]}
        summary = {"best_fitness": best_row["fitness"], "best_lr": best_row["best_lr"],
                   "best_task_lrs": best_row["task_lrs"], "best_id": best_row["id"],
                   "ties_at_best": len(tied), "tie_break": "earliest evaluated program",
                   **{k: self.c[k] for k in ("evaluated", "unique", "cache_hits", "rejected",
                                             "ran", "failed", "restarts")}}
        checked = summary["unique"]
        summary["cache_hit_rate"] = summary["cache_hits"] / max(1, summary["evaluated"] - 1)
        summary["ran_share"] = summary["ran"] / max(1, checked)
        result = SearchResult(parse(best_row["text"]), parse(best_row["pruned"]),
                              best_row["fitness"], history, summary)
        result.validation = self.store.validation()
        if result.validation:
            by_id = {r["id"]: r for r in rows}
            top = min(result.validation, key=lambda v: (v["score"], v["program"]))
            result.validated = parse(by_id[top["program"]]["pruned"])
            summary.update(best_validated_id=top["program"], best_validated_score=top["score"])
        return result


def _bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="search", unit="prog", disable=not enabled,
                dynamic_ncols=True)
