"""μLO on the CPU, scaled down: meta-training cost, width and horizon generalization, step time.

    python experiments/learned_cpu.py [--quick] [--work DIR] [--out experiments/results/learned.md]

1. Meta-train a μLO (μP task, per-layer scales) and an SP-LO (SP task, no scales) with PES on
   ``mlp_digits`` at width 128, horizon H, both warm-started from the same Adam-like theta
   (:func:`learned.adam_like_theta`, its lr the best of the grid at width 128) -- a CPU budget,
   far from μLO's 103-250 GPU-hours.
2. Width generalization: final full-training-set loss after H steps at widths 128..1024 of
   μLO, SP-LO, the warm-start theta, AdamW (SP) and μAdam, the baselines' lr tuned per width on a
   log grid (same step budget); ratio = LO loss / best tuned baseline loss.
3. Horizon generalization: the same at width 128 for 5 H and 25 H steps (baselines re-tuned).
4. Step time of one LO step against torch's AdamW (foreach and fused) on the CPU.

Every finished measurement is cached in ``--work`` (JSON), so a rerun after a crash resumes;
meta-training resumes from its checkpoints.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learned import MLPLOpt, SingleTask, adam_like_theta, load_theta, meta_train, save_theta  # noqa: E402
from learned.unroll import lopt_step  # noqa: E402
from metaopt import mup, tasks, zoo  # noqa: E402
from metaopt.rule import apply, init_states  # noqa: E402
from metaopt.bench.machine import cpu_model

BASE = 128


def make_task(width: int, param: str):
    return tasks.get("mlp_digits", width=width, depth=2, param=param, base_width=BASE,
                     batch_size=128)


def final_losses(task, params) -> list[float]:
    """[loss on the full training set, validation loss]; inf when not finite."""
    with torch.no_grad():
        train = float(task.loss(params, (task.x_train, task.y_train)))
        val = task.evaluate(params)["val_loss"]
    return [x if math.isfinite(x) else float("inf") for x in (train, val)]


def run_rule(task, rule, hp, steps, seed) -> float:
    params = task.init(task.generator(seed))
    states = init_states(rule, params)
    gen, grad = task.generator(1000 + seed), torch.func.grad(task.loss)
    for t in range(1, steps + 1):
        params, states = apply(rule, params, grad(params, task.sample_batch(gen)), states, t, hp)
    return final_losses(task, params)


def run_lo(task, lopt, theta, steps, seed) -> float:
    params = task.init(task.generator(seed))
    infos = task.param_info
    states = [lopt.init(p, i) for p, i in zip(params, infos)]
    gen, grad = task.generator(1000 + seed), torch.func.grad(task.loss)
    with torch.no_grad():
        for t in range(1, steps + 1):
            with torch.enable_grad():
                grads = grad(params, task.sample_batch(gen))
            params, states = lopt_step(lopt, theta, params, list(grads), states, t, infos)
    return final_losses(task, params)


class Cache:
    """JSON file of finished measurements (key -> value)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key, fn):
        if key not in self.data:
            self.data[key] = fn()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            os.replace(tmp, self.path)
        return self.data[key]


def mean_runs(runs: list[list[float]]) -> list[float]:
    return [sum(r[i] for r in runs) / len(runs) for i in range(2)]


def tuned(cache, name, width, steps, seeds, lrs) -> tuple[list[float], float]:
    """([train, val] loss, lr) of AdamW-SP or μAdam at the lr with the best mean final train
    loss on the grid."""
    task = make_task(width, "sp" if name == "adamw" else "mup")
    rule = zoo.rule("adamw" if name == "adamw" else "adam")
    mults = (mup.lr_multipliers(task.param_info, "adam", task.base_param_info)
             if name == "muadam" else [1.0] * len(task.param_info))
    best = ([float("inf")] * 2, None)
    for lr in lrs:
        hp = mup.per_tensor_hp(mults, lr)
        losses = mean_runs([cache.get(f"{name}/w{width}/T{steps}/lr{lr:.2e}/s{s}",
                                      lambda s=s: run_rule(task, rule, hp, steps, s))
                            for s in seeds])
        best = min(best, (losses, lr))
    return best


def warm_start_lr(cache, a, lrs, seeds) -> float:
    """The lr whose Adam-like theta (μ version) has the best mean final train loss at width
    BASE and horizon H: the LO's per-tensor feature normalisation keeps its step RMS at lr
    for the whole run, so it wants a smaller lr than Adam."""
    lopt = MLPLOpt(hidden=a.hidden, step_mult=0.01, mup=True, base_fan_in=BASE)
    task = make_task(BASE, "mup")
    best = ([float("inf")] * 2, None)
    for lr in lrs:
        theta = adam_like_theta(lopt, lr, torch.Generator().manual_seed(0))
        losses = mean_runs([cache.get(f"warm/w{BASE}/T{a.horizon}/lr{lr:.2e}/s{s}",
                                      lambda s=s: run_lo(task, lopt, theta, a.horizon, s))
                            for s in seeds])
        best = min(best, (losses, lr))
    return best[1]


def meta_train_lo(work, which, lr0, a) -> tuple[dict, float]:
    lopt = MLPLOpt(hidden=a.hidden, step_mult=0.01, mup=which == "mu", base_fan_in=BASE)
    path = work / f"theta_{which}.safetensors"
    timing = work / f"time_{which}.json"
    if path.exists():
        return load_theta(path, lopt), json.loads(timing.read_text())["seconds"]
    task = make_task(BASE, "mup" if which == "mu" else "sp")
    start = adam_like_theta(lopt, lr0, torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    theta = meta_train(lopt, SingleTask(task, horizon=a.horizon), a.meta_steps, method="pes",
                       truncation=a.truncation, num_tasks=a.num_tasks, outer_lr=a.outer_lr,
                       std=0.01, checkpoint_dir=str(work / f"ckpt_{which}"), checkpoint_every=10,
                       seed=0, theta=start)
    seconds = time.perf_counter() - t0  # this session's share if resumed
    save_theta(path, theta, lopt)
    timing.write_text(json.dumps({"seconds": seconds}))
    return theta, seconds


def meta_loss_blocks(folder: Path, a) -> list[tuple[int, float]]:
    """Mean meta-loss over consecutive blocks of outer steps (each block spans whole inner runs:
    the slots start together and reset every horizon / truncation outer steps)."""
    latest = folder / "latest.json"
    if not latest.exists():
        return []
    history = json.loads(latest.read_text())["history"]
    block = max(1, a.horizon // a.truncation) * 2
    return [(h[0][0], sum(x[1] for x in h) / len(h))
            for h in (history[i:i + block] for i in range(0, len(history), block))]


def step_times(a) -> list[tuple[str, float]]:
    """Seconds per optimizer step on a [1024 x 1024] x 4 model (4.2M params)."""
    params = [torch.randn(1024, 1024, requires_grad=True) for _ in range(4)]
    for p in params:
        p.grad = torch.randn_like(p)
    lopt = MLPLOpt(hidden=a.hidden, step_mult=0.01, base_fan_in=BASE)
    from learned import LearnedOptimizer

    opts = {"AdamW (foreach)": torch.optim.AdamW(params, foreach=True),
            "AdamW (fused)": torch.optim.AdamW(params, fused=True),
            f"MLPLOpt hidden {a.hidden} (eager)": LearnedOptimizer(params, lopt, lopt.init_theta())}
    out = []
    for name, opt in opts.items():
        opt.step()
        t0, n = time.perf_counter(), 3
        for _ in range(n):
            opt.step()
        out.append((name, (time.perf_counter() - t0) / n))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    p.add_argument("--work", default="/tmp/learned_cpu_work")
    p.add_argument("--out", default="experiments/results/learned.md")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    q = a.quick
    a.hidden, a.horizon = (8, 10) if q else (16, 100)
    a.meta_steps, a.truncation, a.num_tasks, a.outer_lr = (3, 5, 2, 1e-3) if q else (120, 10, 4, 3e-3)
    widths = (128, 256) if q else (128, 256, 512, 1024)
    horizons = (a.horizon, 2 * a.horizon) if q else (a.horizon, 5 * a.horizon, 25 * a.horizon)
    lrs = [1e-3, 1e-2] if q else [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    seeds = (0,) if q else (0, 1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = Cache(work / "cache.json")

    lr0 = warm_start_lr(cache, a, lrs, seeds)
    thetas, meta_secs = {}, {}
    for which in ("mu", "sp"):
        thetas[which], meta_secs[which] = meta_train_lo(work, which, lr0, a)
    los = {"μLO": ("mu", thetas["mu"], "mup"), "SP-LO": ("sp", thetas["sp"], "sp"),
           "warm start (μ)": ("mu", None, "mup")}

    def lo_loss(label, width, steps):
        which, theta, param = los[label]
        lopt = MLPLOpt(hidden=a.hidden, step_mult=0.01, mup=which == "mu", base_fan_in=BASE)
        if theta is None:
            theta = adam_like_theta(lopt, lr0, torch.Generator().manual_seed(0))
        task = make_task(width, param)
        return mean_runs([cache.get(f"{label}/w{width}/T{steps}/s{s}",
                                    lambda s=s: run_lo(task, lopt, theta, steps, s)) for s in seeds])

    width_rows = []
    for w in widths:
        base = {n: tuned(cache, n, w, a.horizon, seeds, lrs) for n in ("adamw", "muadam")}
        best = min(base["adamw"][0], base["muadam"][0])  # by train loss
        width_rows.append((w, base, {lab: lo_loss(lab, w, a.horizon) for lab in los}, best))
    horizon_rows = []
    for T in horizons:
        base = {n: tuned(cache, n, BASE, T, seeds, lrs) for n in ("adamw", "muadam")}
        best = min(base["adamw"][0], base["muadam"][0])
        horizon_rows.append((T, base, {lab: lo_loss(lab, BASE, T) for lab in ("μLO", "SP-LO")}, best))
    times = step_times(a)
    curves = {which: meta_loss_blocks(work / f"ckpt_{which}", a) for which in ("mu", "sp")}
    write_report(Path(a.out), a, widths, lrs, seeds, lr0, meta_secs, width_rows, horizon_rows, times,
                 curves)
    return 0


def write_report(out, a, widths, lrs, seeds, lr0, meta_secs, width_rows, horizon_rows, times,
                 curves):
    cpu = cpu_model()
    L = [f"# Learned optimizers (μLO) on the CPU: {'QUICK SMOKE TEST, ' if a.quick else ''}results",
         "",
         f"Machine: {cpu}, 1 thread (shared with other jobs), torch {torch.__version__}, "
         f"Python {platform.python_version()}, {datetime.date.today().isoformat()}. "
         "Script: `experiments/learned_cpu.py`.",
         "",
         "## Setup",
         f"- Task: `mlp_digits` (64 -> width -> width -> 10, ReLU, depth 2), batch 128; μP tasks use "
         f"base width {BASE} (readout x {BASE}/width, zero-init readout).",
         f"- LO: `MLPLOpt(hidden={a.hidden}, layers=2, step_mult=0.01)`; μLO scales hidden-weight "
         f"steps by {BASE}/fan_in, SP-LO by 1.",
         f"- Meta-training: PES, {a.meta_steps} outer steps, truncation {a.truncation}, "
         f"{a.num_tasks} tasks, horizon {a.horizon}, outer Adam lr {a.outer_lr}, std 0.01, at width {BASE}; "
         f"warm start: `adam_like_theta(lr={lr0:g}, noise=0.01)` (the grid's best lr for it at width "
         f"{BASE}; its steps are per-tensor normalised Adam directions).",
         f"- Metric: loss on the full 1437-image training set (and the 360-image validation set) after the run, mean of seeds {list(seeds)}. "
         f"Baselines: AdamW (SP task, wd 0.01) and μAdam (μP task, per-layer lr), lr tuned per width "
         f"and horizon on the grid {lrs} (same step budget). Ratio = LO / best tuned baseline.",
         "",
         "## Meta-training wall time (CPU)",
         "| LO | seconds |", "|---|---:|",
         *[f"| {k} | {v:.0f} |" for k, v in meta_secs.items()],
         "",
         "Meta-loss (mean train loss over the truncations) averaged over blocks of outer steps "
         "that span whole inner runs:",
         "",
         "| from outer step | " + " | ".join(f"{k} LO" for k in curves) + " |",
         "|---:|" + "---:|" * len(curves),
         *[f"| {row[0][0]} | " + " | ".join(f"{r[1]:.4f}" for r in row) + " |"
           for row in zip(*curves.values())],
         "",
         f"## Width generalization ({a.horizon} steps; meta-trained at width {BASE})",
         "Each cell: final train loss / validation loss. Ratios: LO / best tuned baseline "
         "(train; val in brackets, the baselines' lr chosen by train loss).",
         "",
         "| width | AdamW (lr) | μAdam (lr) | μLO | SP-LO | warm start | μLO ratio | SP-LO ratio |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w, base, lo, best in width_rows:
        bval = min(base["adamw"][0][1], base["muadam"][0][1])
        L.append(f"| {w} | {_pair(base['adamw'][0])} ({base['adamw'][1]:g}) | "
                 f"{_pair(base['muadam'][0])} ({base['muadam'][1]:g}) | {_pair(lo['μLO'])} | "
                 f"{_pair(lo['SP-LO'])} | {_pair(lo['warm start (μ)'])} | "
                 f"{_ratio(lo['μLO'], best, bval)} | {_ratio(lo['SP-LO'], best, bval)} |")
    L += ["", f"## Horizon generalization (width {BASE}; meta-trained with horizon {a.horizon})",
          "| steps | x horizon | AdamW (lr) | μAdam (lr) | μLO | SP-LO | μLO ratio |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    for T, base, lo, best in horizon_rows:
        bval = min(base["adamw"][0][1], base["muadam"][0][1])
        L.append(f"| {T} | {T // a.horizon} | {_pair(base['adamw'][0])} ({base['adamw'][1]:g}) | "
                 f"{_pair(base['muadam'][0])} ({base['muadam'][1]:g}) | {_pair(lo['μLO'])} | "
                 f"{_pair(lo['SP-LO'])} | {_ratio(lo['μLO'], best, bval)} |")
    ref = times[0][1]
    L += ["", "## Optimizer step time, CPU (4 x [1024 x 1024] fp32 = 4.2M params)",
          "| optimizer | ms / step | x AdamW (foreach) |", "|---|---:|---:|",
          *[f"| {n} | {t * 1e3:.1f} | {t / ref:.1f} |" for n, t in times], ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(L) + "\n")
    os.replace(tmp, out)
    print("\n".join(L))


def _pair(x: list[float]) -> str:
    return f"{x[0]:.4f} / {x[1]:.3f}"


def _ratio(lo: list[float], best: list[float], best_val: float) -> str:
    return f"{lo[0] / best[0]:.2f} ({lo[1] / best_val:.2f})"


if __name__ == "__main__":
    raise SystemExit(main())
