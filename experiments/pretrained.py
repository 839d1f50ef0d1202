"""The pretrained μLO shipped as ``learned.pretrained("mulo_small")``: meta-training and evaluation.

    python experiments/pretrained.py --stage meta-train --minutes 45 [--work DIR] [--device cpu]
    python experiments/pretrained.py --stage evaluate [--work DIR] [--out experiments/results/pretrained.md]

Stage ``meta-train`` (resumable: rerun the same command after a crash):

1. Warm start: :func:`learned.adam_like_theta` (the exact Adam feature, so theta *is* μAdam
   at ``lr0``), ``lr0`` picked on a small grid by the geometric mean final train loss over a
   few problems of the *training* family (one seed).
2. PES (:func:`learned.meta_train`, meta-objective ``mean_log_train_loss``, so problems of
   different loss scales weigh alike) on :func:`train_family`: MLPs (μP and SP, two widths, two
   batch sizes), CNNs (two widths) and byte-level transformers (μP and SP, two widths) on the
   digits and the Python standard library's text, horizon ``HORIZON``.
3. Meta-validation every ``--val-every`` outer steps on :func:`validation_problems` (wider
   models and a longer horizon than meta-training, seeds never used elsewhere): the best
   theta so far (the warm start included) is kept. Snapshots of theta at every validation are
   kept too, for the quality-vs-compute table. The held-out test problems of stage
   ``evaluate`` are never run here.

Every outer step's seconds are logged, so the results give outer steps per hour. The run stops
at ``--meta-steps`` or after ``--minutes`` of meta-training (checked between validations).

Several processes (one core each) share a meta-training run under ``torchrun``; the PES slots
and the meta-validation runs are dealt among them, and rank 0 writes (same results as one
process, to rounding of batched kernels; see :mod:`learned.distributed`)::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 experiments/pretrained.py \
        --stage meta-train --work DIR [--val-width-mult 2 --val-mults 0.562,1]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learned import (MLPLOpt, TaskChoice, TaskFamily, adam_like_theta, load_theta,  # noqa: E402
                     load_lopt, meta_train, save_theta)
from learned import distributed  # noqa: E402
from learned.distributed import LOCAL, Comm  # noqa: E402
from learned.unroll import lopt_step  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402
from metaopt import tasks  # noqa: E402

#: the shipped LO's configuration (learned/pretrained/mulo_small.safetensors carries it)
LOPT_CONFIG = dict(hidden=16, layers=2, step_mult=0.01, exp_mult=1e-3, mup=True, base_fan_in=64,
                   adam_feature=True, adam_scale=True, taus=(1, 3, 10, 30), readout_scale=True)
HORIZON = 100          # inner steps of a meta-training run
TRUNCATION = 10
NUM_TASKS = 8
OUTER_LR = 1e-3
LR0_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
VAL_SEEDS = (100, 101)  # meta-validation seeds; the evaluation uses others
VAL_MULTS = (0.1, 0.178, 0.316, 0.562, 1.0)  # step multipliers meta-validation chooses among
CHARLM = dict(depth=1, heads=4, context=32, base_width=64, eval_windows=64)


def make_lopt(config: dict | None = None) -> MLPLOpt:
    """The LO of ``config`` (a meta-training log's; default the shipped ``LOPT_CONFIG``)."""
    return MLPLOpt(**(LOPT_CONFIG if config is None else config))


def lopt_config(orthogonalize: bool = False, ortho_gain: float = 1.0) -> dict:
    """``LOPT_CONFIG``, with hidden matrices' steps orthogonalized (:mod:`learned.orthogonal`)
    when ``orthogonalize``; JSON-ready (``taus`` a list)."""
    config = {**LOPT_CONFIG, "taus": list(LOPT_CONFIG["taus"])}
    return with_ortho(config, ortho_gain) if orthogonalize else config


def with_ortho(config: dict, gain: float) -> dict:
    """An LO ``config`` with hidden matrices' steps orthogonalized at ``ortho_gain`` ``gain``."""
    return {**config, "orthogonalize": True, "ortho_gain": gain}


class Mixture(TaskFamily):
    """A task family drawing one of several families uniformly per sample (one horizon)."""

    vmappable = False

    def __init__(self, name: str, families: list[TaskFamily], horizon: int):
        self.name, self.families, self.horizon = name, families, horizon

    def sample(self, generator: torch.Generator):
        i = int(torch.randint(len(self.families), (), generator=generator))
        return self.families[i].sample(generator)

    def __repr__(self) -> str:
        return f"Mixture({self.name!r}, horizon={self.horizon}, {self.families!r})"


#: meta-training families: (width multipliers, horizon). ``base``: the shipped theta's 1000
#: outer steps; ``wide``: every width doubled and a 4x longer horizon (session 9, continued from
#: a ``base`` theta); ``mixed``: the base horizon at 1x, 2x and 4x the base widths (drawn
#: uniformly over the resulting widths), towards the held-out problems' widths
FAMILIES = {"base": ((1,), HORIZON), "wide": ((2,), 4 * HORIZON), "mixed": ((1, 2, 4), HORIZON)}


def _widths(base: tuple[int, ...], mults: tuple[int, ...]) -> list[int]:
    """Every ``b * k`` for ``b`` in ``base`` and ``k`` in ``mults``, each once, ascending."""
    return sorted({b * k for b in base for k in mults})


def train_family(device: str = "cpu", family: str = "base") -> Mixture:
    """The meta-training distribution (see the module docstring)."""
    ks, h = FAMILIES[family]
    return Mixture(f"pretrained-train-{family}" if family != "base" else "pretrained-train", [
        TaskChoice("mlp_digits", h, {"width": _widths((32, 64), ks), "batch_size": [32, 128],
                                     "param": ["mup", "sp"]}, device=device, depth=2,
                   base_width=64),
        TaskChoice("cnn_digits", h, {"channels": _widths((8, 16), ks), "batch_size": [32, 128]},
                   device=device),
        TaskChoice("charlm", h, {"width": _widths((32, 64), ks), "param": ["mup", "sp"]},
                   device=device, batch_size=16, **CHARLM),
        TaskChoice("autoencoder_digits", h, {"width": _widths((32, 64), ks),
                                             "batch_size": [32, 128]}, device=device, code=8),
        TaskChoice("rnn_digits", h, {"width": _widths((16, 32), ks), "batch_size": [32, 64]},
                   device=device, cell="gru"),
    ], h)


def lr0_problems(device: str = "cpu") -> list:
    """Training-family problems on which the warm start's lr is picked."""
    return [tasks.get("mlp_digits", width=64, depth=2, param="mup", base_width=64,
                      batch_size=32, device=device),
            tasks.get("cnn_digits", channels=16, batch_size=32, device=device),
            tasks.get("charlm", width=64, param="mup", batch_size=16, device=device, **CHARLM)]


def validation_problems(device: str = "cpu", width_mult: int = 1) -> list:
    """Meta-validation: the training kinds in SP (as users' modules), 4x wider and 2x longer
    (seeds ``VAL_SEEDS``); ``width_mult`` widens them further (stage ``width-validate``)."""
    k = width_mult
    return [tasks.get("mlp_digits", width=256 * k, depth=2, param="sp", base_width=64,
                      batch_size=32, device=device),
            tasks.get("charlm", width=128 * k, param="sp", batch_size=16, device=device, **CHARLM),
            tasks.get("autoencoder_digits", width=256 * k, code=8, batch_size=64, device=device),
            tasks.get("rnn_digits", cell="gru", width=64 * k, batch_size=64, device=device)]


def run_lo(task, lopt, theta, steps: int, seed: int) -> float:
    """Final training loss (a fixed batch of 512 training examples) after ``steps`` LO steps;
    inf when not finite."""
    params = [p.detach() for p in task.init(task.generator(seed))]
    infos = task.param_info
    theta = {k: v.to(params[0].device) for k, v in theta.items()}
    states = [lopt.init(p, i) for p, i in zip(params, infos)]
    gen, grad = task.generator(1000 + seed), torch.func.grad(task.loss)
    for t in range(1, steps + 1):
        grads = grad(params, task.sample_batch(gen))
        with torch.no_grad():
            params, states = lopt_step(lopt, theta, params, list(grads), states, t, infos)
    with torch.no_grad():
        loss = float(task.loss(params, score_batch(task)))
    return loss if math.isfinite(loss) else float("inf")


def score_batch(task):
    """A fixed scoring batch of the task's training data (seed 12345, 512 examples)."""
    old = getattr(task, "batch_size", None)
    if old is not None:
        task.batch_size = 512
    try:
        return task.sample_batch(task.generator(12345))
    finally:
        if old is not None:
            task.batch_size = old


def geomean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(max(x, 1e-30)) for x in xs) / len(xs))


def scaled(lopt: MLPLOpt, mult: float) -> MLPLOpt:
    """``lopt`` with its step multiplied by ``mult`` (``step_mult`` scales every step linearly;
    the shipped file carries the chosen one, so a user's ``lr=1.0`` is it)."""
    return MLPLOpt(**{**lopt.config(), "step_mult": lopt.step_mult * mult})


def validate(lopt, theta, device: str, steps: int | None = None, mults=VAL_MULTS,
             width_mult: int = 1, comm: Comm = LOCAL) -> dict[float, float]:
    """Meta-validation score (geometric mean final train loss over :func:`validation_problems`
    at ``width_mult`` times their widths and ``VAL_SEEDS``) for each step multiplier in
    ``mults``. Under ``torch.distributed`` (``comm``) the runs are dealt round-robin among the
    ranks and every rank gets every score (each run is one process's, so the scores equal a
    single process's)."""
    steps = 2 * HORIZON if steps is None else steps
    problems = validation_problems(device, width_mult)
    runs = [(m, t, s) for m in mults for t in problems for s in VAL_SEEDS]
    owners = comm.owners(len(runs), chunk=1)
    mine = {j: torch.tensor([run_lo(t, scaled(lopt, m), theta, steps, s)], dtype=torch.float64)
            for j, (m, t, s) in enumerate(runs) if owners[j] == comm.rank}
    losses = [float(r[0]) for r in comm.gather_rows(mine, owners)]
    per = len(problems) * len(VAL_SEEDS)
    return {m: geomean(losses[i * per:(i + 1) * per]) for i, m in enumerate(mults)}


def revalidate_stage(work: Path, device: str = "cpu") -> dict:
    """Score every logged snapshot ``work/theta_<step>.safetensors`` at the multipliers of
    ``VAL_MULTS`` its log row lacks (a grid made finer after the run started), re-pick each
    row's multiplier and ``work/best.safetensors``; rows already complete are not rerun."""
    log_path = work / "meta.json"
    log = json.loads(log_path.read_text())
    lopt = make_lopt(log["config"])
    for i, row in enumerate(log["val"]):
        missing = [m for m in VAL_MULTS if f"{m:g}" not in row[4]]
        if not missing:
            continue
        theta = load_theta(work / f"theta_{row[0]}.safetensors", lopt)
        scores = {float(k): v for k, v in row[4].items()}
        scores.update(validate(lopt, theta, device, mults=missing,
                               width_mult=log.get("val_width_mult", 1)))
        log["val"][i] = _val_entry(row[0], scores, row[2])
        _write(log_path, log)
        print(f"outer step {row[0]}: validation {log['val'][i][1]:.4f} at step multiplier "
              f"{log['val'][i][3]:g}", flush=True)
    best = min(log["val"], key=lambda v: v[1])
    save_theta(work / "best.safetensors",
               load_theta(work / f"theta_{best[0]}.safetensors", lopt), lopt)
    return log


def width_validate_stage(theta_path: Path, width_mult: int, mults: list[float],
                         device: str = "cpu") -> None:
    """Meta-validation of a shipped theta file at ``width_mult`` times the validation widths,
    at step multipliers ``mults`` relative to its own step: does a wider meta-validation choose
    another default step? Prints a markdown table (one row per multiplier, per problem and seed
    the final train loss, then the geometric mean), each row as it finishes."""
    lopt, theta = load_lopt(theta_path, device)
    _validation_table("multiplier", {f"x{m:g}": scaled(lopt, m) for m in mults}, theta,
                      validation_problems(device, width_mult))


def ortho_validate_stage(theta_path: Path, gains: list[float], out: Path | None,
                         device: str = "cpu", width_mult: int = 1) -> float:
    """Meta-validation (the runs of :func:`validate`, at the file's own step) of
    ``theta_path``'s LO with hidden matrices' steps orthogonalized (:mod:`learned.orthogonal`)
    at each ``ortho_gain`` in ``gains``; prints a markdown table (per problem and seed the final
    train loss, then the geometric mean), writes the best gain's LO to ``out`` (when given) and
    returns that gain."""
    lopt, theta = load_lopt(theta_path, device)
    lopts = {g: MLPLOpt(**with_ortho(lopt.config(), g)) for g in gains}
    scores = _validation_table("ortho_gain", {f"{g:g}": lo for g, lo in lopts.items()}, theta,
                               validation_problems(device, width_mult))
    best = min(gains, key=lambda g: scores[f"{g:g}"])
    if out is not None:
        save_theta(out, theta, lopts[best])
        print(f"wrote ortho_gain {best:g} (validation {scores[f'{best:g}']:.4f}) to {out}",
              flush=True)
    return best


def _validation_table(column: str, lopts: dict[str, MLPLOpt], theta, problems) -> dict[str, float]:
    """Run every LO of ``lopts`` (by row label) on ``problems`` x ``VAL_SEEDS`` for
    ``2 * HORIZON`` steps, printing a markdown table row by row (per run the final train loss,
    then the geometric mean); returns the geometric means by label."""
    names = [f"{t.name} {s}" for t in problems for s in VAL_SEEDS]
    print(f"| {column} | " + " | ".join(names) + " | geomean |\n|---:|"
          + "---:|" * (len(names) + 1), flush=True)
    scores = {}
    for label, lo in lopts.items():
        start = time.perf_counter()
        losses = [run_lo(t, lo, theta, 2 * HORIZON, s) for t in problems for s in VAL_SEEDS]
        scores[label] = geomean(losses)
        print(f"| {label} | " + " | ".join(f"{x:.4g}" for x in losses)
              + f" | {scores[label]:.4f} |", f"({time.perf_counter() - start:.0f} s)", flush=True)
    return scores


def pick_lr0(lopt, device: str) -> tuple[float, dict]:
    scores = {}
    for lr in LR0_GRID:
        theta = adam_like_theta(lopt, lr, torch.Generator().manual_seed(0), noise=0.0)
        scores[lr] = geomean(run_lo(t, lopt, theta, HORIZON, 0) for t in lr0_problems(device))
        if distributed.current().is_root:
            print(f"warm start lr {lr:g}: training-family geomean loss {scores[lr]:.4f}",
                  flush=True)
    return min(scores, key=scores.get), scores


def meta_train_stage(work: Path, minutes: float, meta_steps: int, val_every: int,
                     device: str = "cpu", init: str | None = None,
                     family: str = "base", outer_lr: float = OUTER_LR,
                     val_width_mult: int = 1, val_mults: tuple[float, ...] = VAL_MULTS,
                     config: dict | None = None) -> dict:
    """Meta-train (resuming ``work``), validating every ``val_every`` outer steps, for at
    most ``minutes`` from now (a chunk of outer steps and its validation start only when
    their measured time still fits); returns the log. ``work/best.safetensors`` is the
    selected theta. ``init``: a theta file to start from instead of the Adam warm start
    (a shipped file's folded step multiplier is unfolded: its ``step_mult`` may differ).
    Meta-validation runs :func:`validation_problems` at ``val_width_mult`` times their widths
    and the step multipliers ``val_mults``; ``config`` is the LO's (default
    :func:`lopt_config`).

    Under ``torchrun`` (``torch.distributed``, gloo) the PES slots and the validation runs are
    shared among the ranks (:mod:`learned.distributed`); every rank takes the same decisions
    (the deadline check is agreed on) and rank 0 alone writes."""
    deadline = time.time() + 60 * minutes
    config = lopt_config() if config is None else config
    lopt = make_lopt(config)
    comm = distributed.current()
    log_path = work / "meta.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {
        "config": config, "val": [],
        "seconds": 0.0, "device": device, "family": family, "init": init,
        "outer_lr": outer_lr, "val_width_mult": val_width_mult, "val_mults": list(val_mults)}
    for key, ours, default in (("family", family, "base"), ("outer_lr", outer_lr, OUTER_LR),
                               ("val_width_mult", val_width_mult, 1),
                               ("val_mults", list(val_mults), list(VAL_MULTS)),
                               ("config", config, lopt_config())):
        if log.get(key, default) != ours:
            raise ValueError(f"--work {work} meta-trains with {key} {log.get(key, default)!r}, "
                             f"not {ours!r}; use another folder")
    if init is not None:  # checked before the work folder is made
        start = init_theta(init, lopt)
    if comm.is_root:
        work.mkdir(parents=True, exist_ok=True)
    comm.barrier()

    def score(theta) -> dict[float, float]:
        return validate(lopt, theta, device, mults=val_mults, width_mult=val_width_mult,
                        comm=comm)

    def save(path: Path, theta) -> None:
        if comm.is_root:
            save_theta(path, theta, lopt)

    def write_log() -> None:
        if comm.is_root:
            _write(log_path, log)

    if init is None:
        if "lr0" not in log:
            t0 = time.perf_counter()
            log["lr0"], log["lr0_scores"] = pick_lr0(lopt, device)
            log["lr0_seconds"] = time.perf_counter() - t0
        start = adam_like_theta(lopt, log["lr0"], torch.Generator().manual_seed(0))
    if not log["val"]:
        t0 = time.perf_counter()
        log["val"].append(_val_entry(0, score(start), 0.0))
        log["val_seconds"] = time.perf_counter() - t0
        save(work / "best.safetensors", start)
        save(work / "theta_0.safetensors", start)
        write_log()
    tasks_ = train_family(device, family)
    while log["val"][-1][0] < meta_steps:
        upto = log["val"][-1][0] + val_every
        per_step = log["seconds"] / log["val"][-1][0] if log["val"][-1][0] else 0.0
        late = time.time() + val_every * per_step + log.get("val_seconds", 0.0) > deadline
        if comm.any([late])[0]:
            break
        t0 = time.perf_counter()
        theta = meta_train(lopt, tasks_, upto, method="pes", truncation=TRUNCATION,
                           num_tasks=NUM_TASKS, outer_lr=outer_lr, std=0.01,
                           checkpoint_dir=str(work / "ckpt"), checkpoint_every=val_every,
                           seed=0, theta=start, meta_loss="mean_log_train_loss",
                           progress=False, device=device)
        log["seconds"] += time.perf_counter() - t0
        entry = _val_entry(upto, score(theta), log["seconds"])
        if entry[1] < min(v[1] for v in log["val"]):
            save(work / "best.safetensors", theta)
        save(work / f"theta_{upto}.safetensors", theta)
        log["val"].append(entry)
        write_log()
        rate = 3600 * upto / log["seconds"]
        if comm.is_root:
            print(f"outer step {upto}: validation {entry[1]:.4f} at step multiplier "
                  f"{entry[3]:g} ({rate:.0f} outer steps/hour, {comm.world} processes)",
                  flush=True)
    return log


def init_theta(path: str, lopt: MLPLOpt):
    """The theta of file ``path`` for ``lopt``: a file of ``lopt``'s configuration up to
    ``step_mult`` (a shipped file carries its chosen multiplier folded in); its multiplier
    relative to ``lopt`` is left to meta-validation, which scores several. The rest of the
    configuration is checked by :func:`learned.load_theta`."""
    saved, _ = load_lopt(path)
    step = getattr(saved, "step_mult", lopt.step_mult)
    return load_theta(path, MLPLOpt(**{**lopt.config(), "step_mult": step}))


def _val_entry(step: int, scores: dict[float, float], seconds: float) -> list:
    """A log row: outer step, best score, meta-training seconds, its multiplier, all scores."""
    best = min(scores, key=scores.get)
    return [step, scores[best], seconds, best, {f"{m:g}": v for m, v in scores.items()}]


def ship_stage(work: Path, out: Path) -> Path:
    """Write the meta-validation's best theta (``work/best.safetensors``) with its chosen step
    multiplier folded into ``step_mult`` to ``out`` (the package's pretrained file)."""
    log = json.loads((work / "meta.json").read_text())
    best = min(log["val"], key=lambda v: v[1])
    lopt = make_lopt(log["config"])
    theta = load_theta(work / "best.safetensors", lopt)
    save_theta(out, theta, scaled(lopt, best[3]))
    print(f"shipped outer step {best[0]} (validation {best[1]:.4f}, step multiplier "
          f"{best[3]:g}) to {out}", flush=True)
    return out


def eval_problems() -> tuple[str, ...]:
    """The evaluation's problems (``pretrained_eval.PROBLEMS``)."""
    from pretrained_eval import PROBLEMS
    return PROBLEMS


def _positive_list(text: str, flag: str) -> tuple[float, ...]:
    """``text`` as comma-separated positive numbers, else a ValueError naming ``flag``."""
    try:
        xs = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give comma-separated numbers, e.g. 0.316,1,1.78") \
            from None
    if not all(x > 0 for x in xs):
        raise ValueError(f"{flag} {text!r}: every multiplier must be > 0")
    return xs


def _write(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("meta-train", "revalidate", "ship", "evaluate",
                                       "report", "width-validate", "ortho-validate"),
                   required=True)
    p.add_argument("--work", default="/tmp/pretrained_work")
    p.add_argument("--minutes", type=float, default=45.0)
    p.add_argument("--meta-steps", type=int, default=10_000)
    p.add_argument("--val-every", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="experiments/results/pretrained.md")
    p.add_argument("--init", default=None, help="start from this theta file (meta-train)")
    p.add_argument("--family", default="base", choices=sorted(FAMILIES),
                   help="meta-train: the task family (see FAMILIES)")
    p.add_argument("--outer-lr", type=float, default=OUTER_LR,
                   help="meta-train: PES's outer Adam learning rate")
    p.add_argument("--orthogonalize", action="store_true",
                   help="meta-train: orthogonalize hidden matrices' steps (learned.orthogonal)")
    p.add_argument("--ortho-gain", type=float, default=1.0,
                   help="meta-train: with --orthogonalize, their step relative to step_mult")
    p.add_argument("--results", default="/tmp/pretrained_results",
                   help="evaluate/report: folder of the evaluation's runs (eval.json)")
    p.add_argument("--theta", default="learned/pretrained/mulo_small.safetensors",
                   help="evaluate: the theta file evaluated")
    p.add_argument("--snapshots", nargs="*", default=[],
                   help="evaluate: more theta files (meta-training checkpoints), default lr only")
    p.add_argument("--workers", type=int, default=1, help="evaluate: processes")
    p.add_argument("--eval-steps", type=int, default=400)
    p.add_argument("--eval-width", type=int, default=1024,
                   help="evaluate: width of the held-out problems (see pretrained_eval.py)")
    p.add_argument("--lo-grid", default=",".join(f"{10 ** (e / 2):.6g}" for e in range(-2, 3)),
                   help="evaluate: the LO's lr multipliers tried (comma-separated)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--problems", default=",".join(eval_problems()))
    p.add_argument("--no-width", dest="width", action="store_false",
                   help="evaluate: skip the width-transfer runs")
    p.add_argument("--width-size", type=int, default=2048)
    p.add_argument("--no-soap", dest="soap", action="store_false",
                   help="evaluate: skip the SOAP reference")
    p.add_argument("--theta-steps", type=int, default=None,
                   help="report: outer steps of the evaluated theta (looked up in --work)")
    p.add_argument("--command", default="",
                   help="report: the exact command line that produced the results, as one "
                        "quoted string (its flags are not parsed as this run's)")
    p.add_argument("--width-steps", type=int, default=100)
    p.add_argument("--val-width-mult", type=int, default=None,
                   help="meta-train, width-validate: times the meta-validation widths "
                        "(default 1 for meta-train, 2 for width-validate)")
    p.add_argument("--val-mults", default=",".join(f"{m:g}" for m in VAL_MULTS),
                   help="meta-train: the step multipliers meta-validation chooses among")
    p.add_argument("--mults", default="0.316,0.562,1,1.78",
                   help="width-validate: step multipliers relative to --theta's step")
    p.add_argument("--gains", default="1,1.78,3.16,5.62,10",
                   help="ortho-validate: the ortho_gain values tried (comma-separated)")
    p.add_argument("--ortho-out", default=None,
                   help="ortho-validate: write --theta's LO at the best gain to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from pretrained_eval import evaluate_stage, report_stage
    work = Path(a.work)
    if a.val_width_mult is not None and a.val_width_mult < 1:
        print(f"error: --val-width-mult {a.val_width_mult}: it must be >= 1", file=sys.stderr)
        return 2
    if a.stage == "width-validate":
        a.val_width_mult = 2 if a.val_width_mult is None else a.val_width_mult
        try:
            mults = list(_positive_list(a.mults, "--mults"))
            width_validate_stage(Path(a.theta), a.val_width_mult, mults, a.device)
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if a.stage == "ortho-validate":
        try:
            gains = list(_positive_list(a.gains, "--gains"))
            out = None if a.ortho_out is None else Path(a.ortho_out)
            if out is not None and not out.parent.is_dir():
                raise ValueError(f"--ortho-out {out}: no folder {out.parent}")
            ortho_validate_stage(Path(a.theta), gains, out, a.device, a.val_width_mult or 1)
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if a.stage == "meta-train":
        try:
            if not a.outer_lr > 0:
                raise ValueError(f"--outer-lr {a.outer_lr}: it must be > 0")
            if not 0 < a.ortho_gain < math.inf:
                raise ValueError(f"--ortho-gain {a.ortho_gain}: it must be > 0")
            val_mults = _positive_list(a.val_mults, "--val-mults")
            width = 1 if a.val_width_mult is None else a.val_width_mult
            distributed.init_from_env(a.device)
            meta_train_stage(work, a.minutes, a.meta_steps, a.val_every, a.device, a.init,
                             a.family, a.outer_lr, width, val_mults,
                             lopt_config(a.orthogonalize, a.ortho_gain))
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if a.stage in ("ship", "revalidate"):
        missing = [str(f) for f in (work / "meta.json", work / "best.safetensors")
                   if not f.exists()]
        if missing:
            print(f"error: --work {work} is not a meta-training folder (missing "
                  f"{', '.join(missing)}); run --stage meta-train first", file=sys.stderr)
            return 2
        if a.stage == "revalidate":
            revalidate_stage(work, a.device)
            return 0
        ship_stage(work, Path(a.theta))
        return 0
    if a.stage == "evaluate":
        return evaluate_stage(work, a)
    return report_stage(work, a)


if __name__ == "__main__":
    sys.exit(main())
