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

from .backends import make_backend
from .check import InvalidProgram, check
from .fitness import FitnessConfig
from .fingerprint import fingerprint
from .graph import structural_hash
from .mutate import MUTATIONS, MAX_TRIES, valid_child
from .parse import parse
from .program import Program
from .simplify import funnel, simplify
from .store import Store, open_store
from .warm import warm_start as make_warm_start


@dataclass
class SearchResult:
    """The best program (raw and pruned), its fitness, the history (one dict per evaluated
    program in order) and the counters."""

    best: Program
    best_pruned: Program
    fitness: float
    history: list[dict]
    summary: dict = field(default_factory=dict)
    simplified: Program | None = None
    funnel: list[dict] = field(default_factory=list)


@dataclass
class _Member:
    id: int
    prog: Program
    fitness: float


def resolve_task(task, device="cpu"):
    """A registered task name (built on ``device``) or a task object, returned as a task."""
    if isinstance(task, str):
        from metaopt import tasks

        return tasks.get(task, device=device)
    for attr in ("init", "loss", "sample_batch", "evaluate", "generator"):
        if not callable(getattr(task, attr, None)):
            raise ValueError(f"task must be a registered name or a Task object; missing .{attr}()")
    return task


def run(task, budget: int = 200, seed: int = 0, out: str | None = None,
        warm_start: str | Program = "adamw", backend: str = "local", population: int = 32,
        tournament: int = 4, batch: int = 8, fitness: FitnessConfig | None = None,
        plateau: int | None = None, resume: bool = False, device: str = "cpu",
        evaluator: str = "batched", workers: int = 2, progress: bool = True,
        mutations: tuple[str, ...] = MUTATIONS, simplify_tol: float | None = None,
        funnel_steps: int | None = None, funnel_top: int = 5) -> SearchResult:
    """Search for an update rule on ``task`` with ``budget`` evaluated programs (cache hits
    included; the start program counts as one). Writes ``out/search.sqlite`` when ``out`` is
    given (required for ``resume``; resuming an empty folder starts a new run). ``mutations``
    restricts the mutation kinds (``("perturb_constant",)`` tunes only the start program's
    constants). ``simplify_tol`` simplifies the best program (statements whose removal costs
    less than this relative fitness are dropped, :func:`search.simplify.simplify`);
    ``funnel_steps`` re-evaluates the ``funnel_top`` best distinct programs with that many
    steps against the start program with its lr tuned (the baseline) and records which beat
    it. Returns a :class:`SearchResult`."""
    _check_args(budget, population, tournament, batch, plateau, resume, out)
    unknown = sorted(set(mutations) - set(MUTATIONS))
    if unknown or not mutations:
        raise ValueError(f"unknown mutations {unknown}; choose from {MUTATIONS}")
    cfg = fitness or FitnessConfig()
    task_obj = resolve_task(task, device)
    start = make_warm_start(warm_start, seed)
    check(start)
    store = open_store(out, resume) if out else Store(":memory:")
    back = make_backend(backend, task_obj, cfg, evaluator, workers)
    try:
        evo = _Evolution(store, back, start, seed, population, tournament, batch,
                         plateau or 20 * population, tuple(mutations))
        evo.load_or_start(_run_key(task, seed, warm_start, cfg, population, tournament, mutations))
        evo.loop(budget, progress)
        result = evo.result()
        if simplify_tol is not None and math.isfinite(result.fitness):
            simple, sfit = simplify(result.best_pruned, task_obj, cfg, simplify_tol, evaluator)
            result.simplified = simple
            result.summary.update(simplified_fitness=sfit, simplified_statements=len(simple),
                                  best_statements=len(result.best_pruned))
        if funnel_steps:
            _funnel(result, store, start, task_obj, replace(cfg, steps=funnel_steps), funnel_top,
                    evaluator)
        return result
    finally:
        back.close()
        store.close()


def _funnel(result, store, start, task, cfg, top, evaluator) -> None:
    """Re-evaluate the ``top`` best distinct programs on the longer ``cfg``; only those that
    beat the lr-tuned start program there advance (Chen et al. 2023, Sec. 3)."""
    seen, programs = set(), []
    for row in sorted(store.rows(), key=lambda r: (r["fitness"], r["id"])):
        if math.isfinite(row["fitness"]) and row["fingerprint"] not in seen:
            seen.add(row["fingerprint"])
            programs.append(parse(row["pruned"]))
        if len(programs) == top:
            break
    ranked, base = funnel(programs, start, task, cfg, evaluator)
    result.funnel = [{"text": p.to_text(), "fitness": f, "beats_baseline": ok} for p, f, ok in ranked]
    result.summary.update(funnel_baseline=base, funnel_advanced=sum(ok for _, _, ok in ranked))


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


def _run_key(task, seed, warm, cfg: FitnessConfig, population, tournament, mutations) -> dict:
    name = task if isinstance(task, str) else getattr(task, "name", type(task).__name__)
    warm_text = warm.to_text() if isinstance(warm, Program) else str(warm)
    return {"task": name, "seed": seed, "warm_start": warm_text, "steps": cfg.steps,
            "lrs": list(cfg.lrs), "seeds": list(cfg.seeds), "population": population,
            "tournament": tournament, "mutations": list(mutations)}


class _Evolution:
    def __init__(self, store, backend, start, seed, population, tournament, batch, plateau, kinds):
        self.store, self.backend, self.start = store, backend, start
        self.P, self.T, self.batch, self.plateau = population, tournament, batch, plateau
        self.kinds = kinds
        self.rng = random.Random(seed)
        self.c = {"evaluated": 0, "unique": 0, "cache_hits": 0, "rejected": 0, "ran": 0,
                  "failed": 0, "restarts": 0, "since_improve": 0, "generation": 0}
        self.cache: dict[str, tuple[float, float | None]] = {}
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
        row = self._row(self.start, pruned, fingerprint(pruned), fit.value, fit.best_lr,
                        None, 0, fit.seconds, 0)
        self.cache[row["fingerprint"]] = (fit.value, fit.best_lr)
        self.c.update(evaluated=1, unique=1, ran=1)
        member = _Member(0, self.start, fit.value)
        self.pop = deque([member] * self.P)
        self.best = member

        def snap(ids):
            member.id = self.start_id = ids[0]
            return self.snapshot()

        self.store.commit([row], snap, run=key)

    def _row(self, prog, pruned, fp, value, lr, parent, tries, seconds, hit) -> dict:
        return {"text": prog.to_text(), "pruned": pruned.to_text(), "struct_hash":
                structural_hash(pruned), "fingerprint": fp, "fitness": value, "best_lr": lr,
                "parent": parent, "generation": self.c["generation"], "cache_hit": int(hit),
                "eval_seconds": seconds, "check_tries": tries}

    # -- evolution -----------------------------------------------------------------------
    def tournament(self) -> _Member:
        contenders = [self.pop[self.rng.randrange(len(self.pop))] for _ in range(self.T)]
        return min(contenders, key=lambda m: m.fitness)

    def _child(self, parents: int = 20):
        """A checked child of a tournament winner (another winner when a parent has no valid
        child in its tries)."""
        for _ in range(parents):
            parent = self.tournament()
            try:
                child, pruned, tries = valid_child(parent.prog, self.rng, self.kinds)
            except InvalidProgram:
                self.c["rejected"] += MAX_TRIES
                continue
            self.c["rejected"] += tries
            return parent, child, pruned, tries
        raise InvalidProgram(f"no valid child from {parents} parents; widen the mutations")

    def loop(self, budget: int, progress: bool) -> None:
        bar = _bar(budget, self.c["evaluated"], progress)
        while self.c["evaluated"] < budget:
            n = min(self.batch, budget - self.c["evaluated"])
            members = self._round(n)
            bar.update(len(members))
            bar.set_postfix(unique=self.c["unique"], hits=self.c["cache_hits"],
                            best=f"{self.best.fitness:.4g}")
        bar.close()

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
                value, lr, secs, hit = f.value, f.best_lr, f.seconds, False
                self.cache[fp] = (value, lr)
                self.c["unique"] += 1
                self.c["ran" if f.per_lr else "failed"] += 1
            else:
                (value, lr), secs, hit = self.cache[fp], 0.0, True
                self.c["cache_hits"] += 1
            rows.append(self._row(child, pruned, fp, value, lr, parent.id, tries, secs, hit))
            members.append(_Member(0, child, value))
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
        best_row = min(rows, key=lambda r: (r["fitness"], r["id"]))
        summary = {"best_fitness": best_row["fitness"], "best_lr": best_row["best_lr"],
                   **{k: self.c[k] for k in ("evaluated", "unique", "cache_hits", "rejected",
                                             "ran", "failed", "restarts")}}
        checked = summary["unique"]
        summary["cache_hit_rate"] = summary["cache_hits"] / max(1, summary["evaluated"] - 1)
        summary["ran_share"] = summary["ran"] / max(1, checked)
        return SearchResult(parse(best_row["text"]), parse(best_row["pruned"]),
                            best_row["fitness"], history, summary)


def _bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="search", unit="prog", disable=not enabled,
                dynamic_ncols=True)
