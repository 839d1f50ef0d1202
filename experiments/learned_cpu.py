"""μLO on the CPU, scaled down: meta-training, width and horizon generalization, step time.

    python experiments/learned_cpu.py [--quick] [--task mlp_digits|charlm] [--adam-scale]
        [--stage all|meta-mu|meta-sp] [--work DIR] [--out experiments/results/learned.md]

Setting (``--task mlp_digits``, the default): ``mlp_digits`` (depth 2), batch 32, horizon
H = 100 steps (about 2 epochs of the 1437 training images): tuned Adam then ends near train
loss 0.06 with validation loss close to it, so the comparison is not a ratio of two
interpolating runs (at batch 128 the tuned baselines reach train loss ~0.002 and every ratio
is a ratio of near-zeros). Beyond about 500 steps every optimizer memorises the digits, so the
horizon test is repeated on ``--task charlm`` (a one-block byte transformer, base width 64,
batch 16 windows of 32 bytes; 25 H steps read 1.3 MB of its 1.8 MB of training text, so it
never interpolates).

1. Tuned baselines: AdamW (SP task) and μAdam (μP task, per-layer lr), learning rate tuned per
   width and per horizon by Optuna (:func:`metaopt.bench.tune.tune_lr`, TPE, the same trial
   budget for both; objective: mean final train loss over the evaluation seeds).
2. Meta-train a μLO (μP task, per-layer scales) and an SP-LO (SP task, no scales) with PES at
   the base width, both warm-started from :func:`learned.adam_like_theta` with the exact Adam feature
   (with noise 0 it *is* μAdam resp. Adam at μAdam's tuned lr at the base width), meta-objective
   ``mean_log_train_loss``, time features with taus <= H / 3 (saturated by the end of the
   horizon, so in distribution on longer runs). Meta-validation: every ``--val-every`` outer
   steps theta is scored by its final train loss (geometric mean) on held-out seeds; the best
   theta seen (the warm start included) is kept.
3. Width generalization: final losses after H steps at widths up to 32x (digits) / 8x
   (charlm) the base; horizon generalization: the same at the base width after 5 H and 25 H
   steps (baselines re-tuned).
4. Step time of one LO step against torch's AdamW on the CPU.

Every finished measurement is cached in ``--work`` (JSON, Optuna SQLite, checkpoints), so a
rerun resumes; ``--stage meta-mu`` / ``meta-sp`` run one meta-training alone (to run both at once),
``--stage tune-horizon`` the baselines' learning-rate studies for the horizon test.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learned import (LearnedOptimizer, MLPLOpt, SingleTask, adam_like_theta, load_theta,  # noqa: E402
                     meta_train, save_theta)
from learned.unroll import lopt_step  # noqa: E402
from metaopt import mup, tasks, zoo  # noqa: E402
from metaopt.bench.machine import command_line, machine_line  # noqa: E402
from metaopt.bench.tune import open_storage, tune_lr  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402
from metaopt.rule import apply, init_states  # noqa: E402

VAL_SEEDS = (100, 101)  # meta-validation: never used for evaluation
CHARLM_WINDOWS = 256  # fixed training / validation windows scored after a charlm run


@dataclass(frozen=True)
class Setting:
    """One task of the experiment: its μP base width, batch size and default widths."""
    name: str
    base: int
    batch: int
    widths: str
    about: str


SETTINGS = {
    "mlp_digits": Setting("mlp_digits", 128, 32, "128,256,512,1024,2048,4096",
                          "`mlp_digits` (64 -> width -> width -> 10, ReLU)"),
    "charlm": Setting("charlm", 64, 16, "64,128,256,512",
                      "`charlm` (byte-level transformer on the Python standard library's source, "
                      "1 block, 4 heads, context 32; train loss on 256 fixed training windows, "
                      "validation on 256 held-out windows)"),
}


def make_task(a, width: int, param: str):
    if a.task == "charlm":
        return tasks.get("charlm", width=width, depth=1, heads=4, context=32, param=param,
                         base_width=a.base, batch_size=a.batch, eval_windows=CHARLM_WINDOWS)
    return tasks.get("mlp_digits", width=width, depth=2, param=param, base_width=a.base,
                     batch_size=a.batch)


def make_lopt(a, which: str) -> MLPLOpt:
    return MLPLOpt(hidden=a.hidden, step_mult=0.01, mup=which == "mu", base_fan_in=a.base,
                   adam_feature=True, adam_scale=a.adam_scale, taus=a.taus)


def train_data(task):
    """The data a run's final train loss is scored on: the whole training set (digits) or
    ``CHARLM_WINDOWS`` evenly spaced windows of the training text (charlm)."""
    if hasattr(task, "x_train"):
        return task.x_train, task.y_train
    stride = (len(task.train_text) - task.context - 1) // CHARLM_WINDOWS
    return task._windows(task.train_text, torch.arange(CHARLM_WINDOWS) * stride)


def final_losses(task, params) -> list[float]:
    """[final train loss, validation loss]; inf when not finite."""
    with torch.no_grad():
        train = float(task.loss(params, train_data(task)))
        val = task.evaluate(params)["val_loss"]
    return [x if math.isfinite(x) else float("inf") for x in (train, val)]


def run_rule(task, rule, hp, steps, seed) -> list[float]:
    params = task.init(task.generator(seed))
    states = init_states(rule, params)
    gen, grad = task.generator(1000 + seed), torch.func.grad(task.loss)
    for t in range(1, steps + 1):
        params, states = apply(rule, params, grad(params, task.sample_batch(gen)), states, t, hp)
    return final_losses(task, params)


def run_lo(task, lopt, theta, steps, seed, fused: bool = False) -> list[float]:
    """Train with the LO; ``fused`` runs its compiled fused step (learned/fused_mlp.py, equal
    to the eager step up to float rounding) in place of the eager one, for the large widths."""
    params = task.init(task.generator(seed))
    infos = task.param_info
    states = [lopt.init(p, i) for p, i in zip(params, infos)]
    gen, grad = task.generator(1000 + seed), torch.func.grad(task.loss)
    fused_step = lopt.fused_rule(theta) if fused else None
    with torch.no_grad():
        for t in range(1, steps + 1):
            with torch.enable_grad():
                grads = grad(params, task.sample_batch(gen))
            if fused_step is None:
                params, states = lopt_step(lopt, theta, params, list(grads), states, t, infos)
                continue
            for p, g, s, i in zip(params, grads, states, infos):
                fused_step([p], [g], [s], {"info": i}, [t])
    return final_losses(task, params)


class Cache:
    """JSON file of finished measurements (key -> value)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key, fn):
        if key not in self.data:
            self.data[key] = fn()
            write_atomic(self.path, json.dumps(self.data, indent=1))
        return self.data[key]


def mean_runs(runs: list[list[float]]) -> list[float]:
    return [sum(r[i] for r in runs) / len(runs) for i in range(2)]


def tuned(cache, storage, a, name, width, steps) -> tuple[list[float], float]:
    """([train, val] loss, lr) of AdamW (SP) or μAdam at the Optuna-tuned lr (``a.trials``
    trials in [3e-4, 0.1], objective the mean final train loss over ``a.seeds``)."""
    task = make_task(a, width, "sp" if name == "adamw" else "mup")
    rule = zoo.rule("adamw" if name == "adamw" else "adam")
    mults = (mup.lr_multipliers(task.param_info, "adam", task.base_param_info)
             if name == "muadam" else [1.0] * len(task.param_info))

    def losses(lr):
        hp = mup.per_tensor_hp(mults, lr)
        return mean_runs([cache.get(f"{name}/w{width}/T{steps}/lr{lr!r}/s{s}",
                                    lambda s=s: run_rule(task, rule, hp, steps, s))
                          for s in a.seeds])

    lr = tune_lr(lambda lr: losses(lr)[0], study_name=f"{name}/w{width}/T{steps}",
                 storage=storage, trials=a.trials, default_lr=3e-3, lr_range=(0.1, 100 / 3))
    return losses(lr), lr


def validate(task, lopt, theta, a) -> float:
    """Geometric mean of the final train loss after H steps on the held-out seeds."""
    runs = [run_lo(task, lopt, theta, a.horizon, s)[0] for s in VAL_SEEDS]
    return math.exp(sum(math.log(max(x, 1e-30)) for x in runs) / len(runs))


def meta_train_lo(work: Path, which: str, lr0: float, a) -> tuple[dict, dict]:
    """Meta-train in chunks of ``a.val_every`` outer steps (resuming the checkpoint) and keep the
    best theta on the held-out seeds. Returns (best theta, log)."""
    lopt = make_lopt(a, which)
    task = make_task(a, a.base, "mup" if which == "mu" else "sp")
    log_path, best_path = work / f"meta_{which}.json", work / f"theta_{which}.safetensors"
    log = json.loads(log_path.read_text()) if log_path.exists() else {"val": [], "seconds": 0.0}
    start = adam_like_theta(lopt, lr0, torch.Generator().manual_seed(0))
    if not log["val"]:
        log["val"].append([0, validate(task, lopt, start, a)])
        save_theta(best_path, start, lopt)
    while log["val"][-1][0] < a.meta_steps:
        upto = log["val"][-1][0] + a.val_every
        t0 = time.perf_counter()
        theta = meta_train(lopt, SingleTask(task, horizon=a.horizon), upto, method="pes",
                           truncation=a.truncation, num_tasks=a.num_tasks, outer_lr=a.outer_lr,
                           std=0.01, checkpoint_dir=str(work / f"ckpt_{which}"),
                           checkpoint_every=a.val_every, seed=0, theta=start,
                           meta_loss="mean_log_train_loss", progress=False)
        log["seconds"] += time.perf_counter() - t0
        score = validate(task, lopt, theta, a)
        if score < min(v for _, v in log["val"]):
            save_theta(best_path, theta, lopt)
        log["val"].append([upto, score])
        write_atomic(log_path, json.dumps(log))
        print(f"{which}: outer step {upto}, held-out final train loss {score:.4f}", flush=True)
    return load_theta(best_path, lopt), log


def meta_loss_blocks(folder: Path, a) -> list[tuple[int, float]]:
    """Mean meta-loss (mean log train loss) over blocks of outer steps spanning whole inner runs
    (the slots start together and reset every horizon / truncation outer steps)."""
    latest = folder / "latest.json"
    if not latest.exists():
        return []
    history = json.loads(latest.read_text())["history"]
    block = max(1, a.horizon // a.truncation) * 3
    return [(h[0][0], sum(x[1] for x in h) / len(h))
            for h in (history[i:i + block] for i in range(0, len(history), block))]


def step_times(a) -> list[tuple[str, float]]:
    """Seconds per optimizer step on a [1024 x 1024] x 4 model (4.2M params)."""
    params = [torch.randn(1024, 1024, requires_grad=True) for _ in range(4)]
    for p in params:
        p.grad = torch.randn_like(p)
    lopt = make_lopt(a, "mu")
    opts = {"AdamW (foreach)": torch.optim.AdamW(params, foreach=True),
            "AdamW (fused)": torch.optim.AdamW(params, fused=True),
            f"MLPLOpt hidden {a.hidden} (eager)": LearnedOptimizer(params, lopt, lopt.init_theta()),
            f"MLPLOpt hidden {a.hidden} (fused, learned/fused_mlp.py)":
                LearnedOptimizer(params, lopt, lopt.init_theta(), impl="fused")}
    out = []
    for name, opt in opts.items():
        opt.step()
        t0, n = time.perf_counter(), 3
        for _ in range(n):
            opt.step()
        out.append((name, (time.perf_counter() - t0) / n))
    return out


def settings(a) -> None:
    q = a.quick
    a.hidden, a.horizon = (8, 10) if q else (16, 100)
    a.taus = (1, 3) if q else (1, 3, 10, 30)
    a.meta_steps, a.val_every = (4, 2) if q else (a.meta_steps, a.val_every)
    a.truncation, a.num_tasks, a.outer_lr = (5, 2, 1e-3) if q else (10, 8, 1e-3)
    a.widths = (a.base, 2 * a.base) if q else tuple(int(w) for w in a.widths.split(","))
    a.horizons = (a.horizon, 2 * a.horizon) if q else (a.horizon, 5 * a.horizon, 25 * a.horizon)
    a.trials = 2 if q else a.trials
    a.seeds = (0,) if q else (0, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    p.add_argument("--stage", choices=("all", "meta-mu", "meta-sp", "tune-horizon"),
                   default="all", help="run one part alone, beside others (default all)")
    p.add_argument("--meta-steps", type=int, default=150)
    p.add_argument("--val-every", type=int, default=15)
    p.add_argument("--trials", type=int, default=10, help="Optuna trials per baseline study")
    p.add_argument("--task", choices=sorted(SETTINGS), default="mlp_digits")
    p.add_argument("--widths", default=None, help="comma-separated (default: the task's)")
    p.add_argument("--fused-from", type=int, default=2048,
                   help="evaluate the LOs with their fused step from this width on")
    p.add_argument("--adam-scale", action="store_true",
                   help="MLPLOpt(adam_scale=True): steps scaled by the RMS of Adam's direction")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="/tmp/learned_cpu_work")
    p.add_argument("--out", default=None, help="default experiments/results/learned.md "
                   "(mlp_digits) or learned_charlm.md")
    a = p.parse_args(argv)
    setting = SETTINGS[a.task]
    a.base, a.batch, a.widths = setting.base, setting.batch, a.widths or setting.widths
    a.out = a.out or ("experiments/results/learned.md" if a.task == "mlp_digits"
                      else f"experiments/results/learned_{a.task}.md")
    settings(a)
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = Cache(work / f"cache_{a.stage}.json")
    storage = open_storage(f"sqlite:///{work / 'optuna.sqlite3'}")

    base0, lr0 = tuned(cache, storage, a, "muadam", a.base, a.horizon)  # the warm start's lr
    if a.stage == "tune-horizon":  # the baselines' Optuna studies, shared through the storage
        for steps in a.horizons:
            for name in ("adamw", "muadam"):
                print("tuned", name, steps, tuned(cache, storage, a, name, a.base, steps), flush=True)
        return 0
    if a.stage != "all":
        meta_train_lo(work, a.stage.split("-")[1], lr0, a)
        return 0
    metas = {w: meta_train_lo(work, w, lr0, a) for w in ("mu", "sp")}
    los = {"μLO": ("mu", metas["mu"][0]), "SP-LO": ("sp", metas["sp"][0]),
           "warm start (μAdam-like)": ("mu", None)}

    def lo_loss(label, width, steps):
        which, theta = los[label]
        lopt = make_lopt(a, which)
        if theta is None:
            theta = adam_like_theta(lopt, lr0, torch.Generator().manual_seed(0))
        task = make_task(a, width, "mup" if which == "mu" else "sp")
        fused = width >= a.fused_from
        return mean_runs([cache.get(f"{label}/w{width}/T{steps}/s{s}",
                                    lambda s=s: run_lo(task, lopt, theta, steps, s, fused))
                          for s in a.seeds])

    rows = {"width": [], "horizon": []}
    for kind, points in (("width", a.widths), ("horizon", a.horizons)):
        for x in points:
            width, steps = (x, a.horizon) if kind == "width" else (a.base, x)
            base = {n: tuned(cache, storage, a, n, width, steps) for n in ("adamw", "muadam")}
            rows[kind].append((x, base, {lab: lo_loss(lab, width, steps) for lab in los}))
            print(kind, x, rows[kind][-1], flush=True)
    times = step_times(a)
    curves = {w: meta_loss_blocks(work / f"ckpt_{w}", a) for w in ("mu", "sp")}
    write_report(Path(a.out), a, lr0, base0, metas, rows, times, curves)
    return 0


def write_report(out, a, lr0, base0, metas, rows, times, curves):
    labels = ("μLO", "SP-LO", "warm start (μAdam-like)")
    L = [f"Command: `{command_line()}`", "",
         f"# Learned optimizers (μLO) on the CPU: {'QUICK SMOKE TEST, ' if a.quick else ''}results",
         "", f"Machine: {machine_line()}.", "",
         "## Setup",
         f"- Task: {SETTINGS[a.task].about}, batch {a.batch}, horizon "
         f"H = {a.horizon} steps; μP tasks use base width {a.base} (readout x {a.base}/width, "
         "zero-init readout).",
         f"- LO: `MLPLOpt(hidden={a.hidden}, layers=2, step_mult=0.01, adam_feature=True, "
         f"adam_scale={a.adam_scale}, taus={a.taus})`; μLO scales hidden-weight steps by "
         f"{a.base}/fan_in, SP-LO by 1.",
         f"- Warm start: `adam_like_theta(lr={lr0:.3g}, noise=0.01)`: Adam (exact, bias-corrected) "
         f"at μAdam's tuned lr at width {a.base}, plus 1% random MLP corrections.",
         f"- Meta-training: PES, {a.meta_steps} outer steps, truncation {a.truncation}, "
         f"{a.num_tasks} tasks, outer Adam lr {a.outer_lr}, std 0.01, meta-loss "
         f"`mean_log_train_loss`, width {a.base}; theta kept: the best on held-out seeds "
         f"{list(VAL_SEEDS)} (final train loss after H), checked every {a.val_every} outer steps.",
         f"- Baselines: AdamW (SP task, wd 0.01) and μAdam (μP task, per-layer lr); lr tuned by "
         f"Optuna TPE per width and horizon, {a.trials} trials each in [3e-4, 0.1] (objective: "
         f"mean final train loss over the evaluation seeds {list(a.seeds)}, so the baselines are "
         "tuned on the very runs they are scored on; the LOs get no per-width tuning).",
         "- Metric: train loss (" + ("the full 1437-image training set" if a.task == "mlp_digits"
                                     else f"{CHARLM_WINDOWS} fixed training windows")
         + ") / validation loss after the run, mean over the evaluation seeds. "
         "Ratio = LO / tuned baseline.",
         f"- From width {a.fused_from} on, the LOs run their fused step (`learned/fused_mlp.py`, "
         "equal to the eager step up to float rounding; tested) to fit the CPU budget.",
         "", "## Meta-training (CPU)",
         "| LO | meta-training seconds | held-out final train loss by outer step (0 = warm start) |",
         "|---|---:|---|"]
    for w, (_, log) in metas.items():
        L.append(f"| {w} | {log['seconds']:.0f} | "
                 + ", ".join(f"{s}: {v:.4f}" for s, v in log["val"]) + " |")
    L += ["", "Meta-loss (mean log train loss of the truncations), averaged over blocks of outer "
          "steps spanning whole inner runs:", "",
          "| from outer step | " + " | ".join(f"{k} LO" for k in curves) + " |",
          "|---:|" + "---:|" * len(curves),
          *[f"| {row[0][0]} | " + " | ".join(f"{r[1]:.4f}" for r in row) + " |"
            for row in zip(*curves.values())]]
    for kind, title in (("width", f"Width generalization ({a.horizon} steps; meta-trained at "
                                  f"width {a.base})"),
                        ("horizon", f"Horizon generalization (width {a.base}; meta-trained with "
                                    f"horizon {a.horizon})")):
        L += ["", f"## {title}", "Cells: final train loss / validation loss (lr).", "",
              f"| {'width' if kind == 'width' else 'steps'} | AdamW | μAdam | "
              + " | ".join(labels) + " |", "|---:|" + "---:|" * (2 + len(labels))]
        for x, base, lo in rows[kind]:
            L.append(f"| {x} | {_pair(base['adamw'][0])} ({base['adamw'][1]:.2g}) | "
                     f"{_pair(base['muadam'][0])} ({base['muadam'][1]:.2g}) | "
                     + " | ".join(_pair(lo[lab]) for lab in labels) + " |")
        L += ["", "Ratios LO / tuned AdamW, train (validation); then / tuned μAdam, train:", "",
              f"| {'width' if kind == 'width' else 'steps'} | "
              + " | ".join(f"{lab} / AdamW" for lab in labels) + " | μLO / μAdam | SP-LO / μAdam |",
              "|---:|" + "---:|" * (len(labels) + 2)]
        for x, base, lo in rows[kind]:
            aw, mu = base["adamw"][0], base["muadam"][0]
            L.append(f"| {x} | " + " | ".join(f"{lo[lab][0] / aw[0]:.2f} ({lo[lab][1] / aw[1]:.2f})"
                                               for lab in labels)
                     + f" | {lo['μLO'][0] / mu[0]:.2f} | {lo['SP-LO'][0] / mu[0]:.2f} |")
    ref = times[0][1]
    L += ["", "## Optimizer step time, CPU (4 x [1024 x 1024] fp32 = 4.2M params)",
          "| optimizer | ms / step | x AdamW (foreach) |", "|---|---:|---:|",
          *[f"| {n} | {t * 1e3:.1f} | {t / ref:.1f} |" for n, t in times], ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, "\n".join(L) + "\n")
    print("\n".join(L))


def _pair(x: list[float]) -> str:
    return f"{x[0]:.4f} / {x[1]:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
