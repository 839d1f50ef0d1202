"""Step-time measurement of optimizer implementations on a fixed set of tensors.

Each candidate optimizer gets its own copy of the same parameters and the same fixed
gradients, steps are timed round-robin (one step of each candidate per round, so load spikes on
a shared machine hit every candidate alike), and the median per candidate is reported with
ratios to a reference candidate measured in the same run. The physical floor of an AdamW step
is 28 bytes per fp32 parameter (read p, g, m, v; write p, m, v) divided by the measured copy
bandwidth of main (device) memory (notes: zoo-and-performance §3); it is meaningful only when
the optimizer's working set exceeds the caches.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

ADAMW_BYTES_PER_PARAM = 28


@dataclass
class Timing:
    name: str
    first_s: float | None = None        # first step (includes compilation)
    times_s: list[float] | None = None
    max_diff: float | None = None       # max |p - p_ref| after the same steps
    skipped: str | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def make_tensors(shapes: list[tuple[int, ...]], device, seed: int = 0) -> tuple[list, list]:
    """Parameters and fixed gradients of the given shapes (float32, seeded)."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(device) for s in shapes]
    grads = [torch.randn(s, generator=g).to(device) * 1e-2 for s in shapes]
    return params, grads


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device, n: int = 1 << 25, repeats: int = 5) -> float:
    """Bytes per second of ``dst.copy_(src)`` on ``n`` float32 (read + write counted)."""
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * 4 * n / statistics.median(times)


def time_candidates(
    factories: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]],
    shapes: list[tuple[int, ...]],
    device,
    warmup: int,
    repeats: int,
    deadline: float = float("inf"),
    reference: str | None = None,
) -> list[Timing]:
    """Median step time of each candidate (round-robin after ``warmup`` steps each).

    ``deadline`` (a ``time.perf_counter()`` value) skips candidates whose first step would
    start after it, and stops the timed rounds early (at least 3 rounds are kept).
    ``reference`` names the candidate whose parameters the others are compared with.
    """
    params0, grads = make_tensors(shapes, device)
    runs, timings = {}, {}
    for name, factory in factories.items():
        timings[name] = Timing(name)
        if time.perf_counter() > deadline:
            timings[name].skipped = "time cap reached"
            continue
        ps = [p.clone().requires_grad_(True) for p in params0]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt = factory(ps)
        _sync(device)
        t0 = time.perf_counter()
        opt.step()
        _sync(device)
        timings[name].first_s = time.perf_counter() - t0
        for _ in range(warmup - 1):
            opt.step()
        runs[name] = (ps, opt)
    for name in runs:
        timings[name].times_s = []
    for r in range(repeats):
        if r >= 3 and time.perf_counter() > deadline:
            break
        for name, (_, opt) in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            opt.step()
            _sync(device)
            timings[name].times_s.append(time.perf_counter() - t0)
    rounds = {len(t.times_s) for t in timings.values() if t.times_s is not None}
    if reference in runs and len(rounds) == 1:
        ref = runs[reference][0]
        for name, (ps, _) in runs.items():
            diffs = [float((a - b).detach().abs().max()) for a, b in zip(ps, ref)]
            timings[name].max_diff = max(diffs)
    return list(timings.values())


def timing_table(timings: list[Timing], n_params: int, bandwidth: float, ratio_to: str) -> str:
    """Markdown: median ms, ratio to ``ratio_to``, multiple of the bytes floor, first step."""
    ref = next(t for t in timings if t.name == ratio_to)
    floor_s = ADAMW_BYTES_PER_PARAM * n_params / bandwidth
    lines = [f"| implementation | median step ms | x {ratio_to} | x floor | first step ms | "
             "max abs diff vs reference |", "|---|---|---|---|---|---|"]
    for t in timings:
        if t.skipped or not t.times_s:
            lines.append(f"| {t.name} | skipped ({t.skipped}) | | | | |")
            continue
        ratio = t.median_s / ref.median_s if ref.times_s else float("nan")
        diff = "-" if t.max_diff is None else f"{t.max_diff:.1e}"
        lines.append(f"| {t.name} | {1e3 * t.median_s:.2f} | {ratio:.2f} | "
                     f"{t.median_s / floor_s:.1f} | {1e3 * t.first_s:.0f} | {diff} |")
    return "\n".join(lines) + "\n"


def adamw_factories(compiled: bool = True) -> dict[str, Callable]:
    """torch.optim.AdamW (for-loop, foreach, fused) and the zoo's adamw through RuleOptimizer
    (loop, fused, compiled), all with lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 1e-2."""
    from .. import zoo

    hp = {"lr": 1e-3, "weight_decay": 1e-2}
    out = {
        "torch AdamW for-loop": lambda ps: torch.optim.AdamW(ps, foreach=False, **hp),
        "torch AdamW foreach": lambda ps: torch.optim.AdamW(ps, foreach=True, **hp),
        "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, fused=True, **hp),
        "RuleOptimizer adamw loop": lambda ps: zoo.create("adamw", ps, impl="loop", **hp),
        "RuleOptimizer adamw fused": lambda ps: zoo.create("adamw", ps, impl="fused", **hp),
    }
    if compiled:
        out["RuleOptimizer adamw compiled"] = lambda ps: zoo.create("adamw", ps, impl="compiled",
                                                                    **hp)
    return out
