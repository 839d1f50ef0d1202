"""Performance profiles (Dolan & Moré, "Benchmarking optimization software with performance
profiles", Math. Programming 91, 2002).

For problems p (tasks) and solvers s (optimizers) with cost t[p][s] (here median steps to the
task's target; ``inf`` = failure):

    r[p][s]   = t[p][s] / min_s' t[p][s']           (performance ratio; inf if s failed)
    rho_s(tau) = |{p : r[p][s] <= tau}| / |P|       (fraction solved within a factor tau)

rho_s(1) is the share of tasks on which s is (one of) the fastest; rho_s(inf) is the share it
solves at all. A task that no solver solves counts as a failure for every solver.
"""
from __future__ import annotations

import math


def performance_ratios(costs: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """``{solver: [r[p][s] for each problem p]}`` from ``costs[p][s]``.

    Every problem must list the same solvers; a missing or non-positive cost is an error."""
    solvers = sorted({s for by in costs.values() for s in by})
    ratios: dict[str, list[float]] = {s: [] for s in solvers}
    for p, by in costs.items():
        if sorted(by) != solvers:
            raise ValueError(f"problem {p!r} has costs for {sorted(by)}, expected {solvers}")
        if any(not (c > 0) for c in by.values()):
            raise ValueError(f"problem {p!r}: costs must be > 0 (inf for a failure), got {by}")
        best = min(by.values())
        for s in solvers:
            ratios[s].append(by[s] / best if math.isfinite(best) else math.inf)
    return ratios


def profile(ratios: list[float], taus: list[float]) -> list[float]:
    """``rho(tau)`` for each tau: the fraction of ratios ``<= tau``."""
    n = len(ratios)
    return [sum(r <= tau for r in ratios) / n for tau in taus]
