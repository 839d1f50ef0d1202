"""``metaopt meta-train``: meta-train a learned optimizer from the command line.

    metaopt meta-train --task-family mlp_digits --task-opt width=128 --param mup \\
        --method pes --steps 500 --truncation 20 --num-tasks 8 --horizon 200 --out runs/mulo
    metaopt meta-train ... --out runs/mulo --resume       # continue after a crash

Writes ``OUT/theta.safetensors`` (load with :func:`learned.load_theta`), ``OUT/meta_train.json``
(settings and the meta-loss per outer step) and checkpoints under ``OUT/checkpoints`` (or
``--checkpoint-dir``). ``--task-opt key=value`` fixes a task option, ``key=v1,v2`` draws one per
sampled task. ``--param mup`` is μLO (per-layer scales, and the task in μP when it has a
``param`` option); ``--param sp`` is the SP-LO.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import torch

from metaopt.cli_common import (Parser, UsageError, add_common_flags, fail, int_at_least,
                                 resolve_device)

from .checkpoint import LATEST, save_json
from .estimators import METHODS
from .meta_train import meta_train
from .mlp_lopt import MLPLOpt
from .sgdm_lopt import SGDMLOpt
from .task_family import TaskChoice
from .theta_io import save_theta
from .unroll import META_LOSSES

LOPTS = ("mlp", "sgdm")
DEFAULT_OUT = "meta-train-out"


def build_parser() -> Parser:
    p = Parser(prog="metaopt meta-train", description="Meta-train a learned optimizer.")
    p.add_argument("--task-family", default="mlp_digits",
                   help="registered task (default mlp_digits)")
    p.add_argument("--task-opt", action="append", default=[], metavar="KEY=VALUE[,VALUE..]",
                   help="task option; several values are drawn per task (repeatable)")
    p.add_argument("--horizon", type=int_at_least(1), default=200,
                   help="inner steps per task (default 200)")
    p.add_argument("--lopt", choices=LOPTS, default="mlp",
                   help="mlp (MLPLOpt) or sgdm (default mlp)")
    p.add_argument("--param", choices=("mup", "sp"), default="mup",
                   help="μLO or SP-LO (default mup)")
    p.add_argument("--hidden", type=int_at_least(1), default=32, help="MLPLOpt hidden units (default 32)")
    p.add_argument("--step-mult", type=_pos, default=0.01, help="MLPLOpt step_mult (default 0.01)")
    p.add_argument("--base-fan-in", type=int_at_least(1), default=1,
                   help="μLO hidden scale base_fan_in/fan_in (default 1, as μLO)")
    p.add_argument("--adam-feature", action="store_true",
                   help="MLPLOpt: also feed Adam's bias-corrected direction (see adam_like_theta)")
    p.add_argument("--adam-scale", action="store_true",
                   help="MLPLOpt: scale each tensor's step by the RMS of Adam's direction "
                        "(needs --adam-feature)")
    p.add_argument("--meta-loss", choices=META_LOSSES, default="mean_train_loss",
                   help="per-truncation meta-loss (default mean_train_loss)")
    p.add_argument("--method", choices=METHODS, default="pes",
                   help="pes | es | tbptt (default pes)")
    p.add_argument("--steps", type=int_at_least(1), default=500, help="outer steps (default 500)")
    p.add_argument("--truncation", type=int_at_least(1), default=20,
                   help="inner steps per outer step (default 20)")
    p.add_argument("--num-tasks", type=int_at_least(1), default=8, help="tasks per estimate (default 8)")
    p.add_argument("--outer-lr", type=_pos, default=1e-3, help="Adam lr on theta (default 1e-3)")
    p.add_argument("--std", type=_pos, default=0.01, help="PES/ES perturbation std (default 0.01)")
    p.add_argument("--checkpoint-dir", default=None, help="default OUT/checkpoints")
    p.add_argument("--checkpoint-every", type=int_at_least(1), default=25, help="outer steps (default 25)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in OUT")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``metaopt meta-train`` with ``argv``; returns the exit code (2 on bad input)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        return _run(args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    except ValueError as e:  # UsageError included
        return fail(" ".join(str(e).split()))


def _run(args) -> int:
    device = resolve_device(args.device)
    out = Path(args.out or DEFAULT_OUT)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else out / "checkpoints"
    if (ckpt / LATEST).exists() and not args.resume:
        raise UsageError(f"{ckpt} already holds a checkpoint; pass --resume to continue it "
                         "or choose another --out / --checkpoint-dir")
    family = _family(args, device)
    lopt = (MLPLOpt(hidden=args.hidden, step_mult=args.step_mult, mup=args.param == "mup",
                    base_fan_in=args.base_fan_in, adam_feature=args.adam_feature,
                    adam_scale=args.adam_scale)
            if args.lopt == "mlp" else SGDMLOpt())
    history: list = []
    theta = meta_train(lopt, family, args.steps, method=args.method, truncation=args.truncation,
                       num_tasks=args.num_tasks, outer_lr=args.outer_lr, std=args.std,
                       checkpoint_dir=str(ckpt), checkpoint_every=args.checkpoint_every,
                       device=device, seed=args.seed, meta_loss=args.meta_loss,
                       progress=not args.no_progress,
                       resume=args.resume,
                       callback=lambda step, loss, bad: history.append([step, loss, len(bad)]))
    save_theta(out / "theta.safetensors", theta, lopt)
    save_json(out / "meta_train.json", {
        "settings": {k: v for k, v in vars(args).items()}, "family": repr(family),
        "history_this_session": history})
    print(f"theta written to {out / 'theta.safetensors'}")
    return 0


def _family(args, device) -> TaskChoice:
    fixed, choices = {}, {}
    for item in args.task_opt:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--task-opt {item!r}: expected KEY=VALUE or KEY=V1,V2")
        values = [_parse_value(v) for v in value.split(",")]
        (choices if len(values) > 1 else fixed)[key] = values if len(values) > 1 else values[0]
    family = TaskChoice(args.task_family, args.horizon, choices, device=device, **fixed)
    task = family.sample(torch.Generator().manual_seed(0))
    if "param" not in fixed and "param" not in choices and _accepts(task, "param"):
        family = TaskChoice(args.task_family, args.horizon, choices, device=device,
                            param=args.param, **fixed)
    return family


def _accepts(task, option: str) -> bool:
    return option in inspect.signature(type(task)).parameters


def _parse_value(text: str):
    """``"128"`` -> 128, ``"0.5"`` -> 0.5, ``"true"`` -> True, else the text (never evaluated)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def _pos(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v
