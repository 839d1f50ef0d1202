"""``metaopt meta-train``: meta-train a learned optimizer from the command line.

    metaopt meta-train --task mlp_digits --task-opt width=128 --param mup \\
        --method pes --steps 500 --truncation 20 --num-tasks 8 --horizon 200 --out runs/mulo
    metaopt meta-train ... --out runs/mulo --resume       # continue after a crash or Ctrl-C
    metaopt meta-train ... --out runs/mulo --nproc 4      # 4 local processes (torchrun)

Writes ``OUT/theta.safetensors`` (load with :func:`learned.load_theta` into the LO built with
the same flags; the defaults are :class:`~learned.MLPLOpt`'s and :func:`~learned.meta_train`'s,
so a default run loads into ``MLPLOpt()``), ``OUT/meta_train.json`` (settings and the meta-loss
per outer step), ``OUT/meta_loss.png`` and ``OUT/summary.md`` (see :mod:`learned.meta_report`),
and checkpoints under ``OUT/checkpoints`` (or ``--checkpoint-dir``). ``--task-opt key=value``
fixes a task option, ``key=v1,v2`` draws one per sampled task. ``--param mup`` is μLO (per-layer
scales, and the task in μP when it has a ``param`` option); ``--param sp`` is the SP-LO.

Across processes or machines, run this module under ``torchrun`` (``--nproc N`` does that for
one machine)::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m learned.cli --task mlp_digits --out runs/mulo ...

Every rank runs the same command; slots are shared among ranks (:mod:`learned.distributed`),
rank 0 writes every file, and ``--resume`` works with any number of ranks.
"""
from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from metaopt.cli_common import (Parser, UsageError, add_common_flags, check_out_dir, cli_entry,
                                 int_at_least, parse_task_opts, resolve_device)

from . import distributed, estimators
from .checkpoint import LATEST, load_checkpoint, save_json
from .meta_report import report
from .meta_train import meta_train
from .mlp_lopt import MLPLOpt
from .sgdm_lopt import SGDMLOpt
from .task_family import TaskChoice
from .theta_io import save_theta
from .unroll import META_LOSSES

LOPTS = ("mlp", "sgdm")
THETA = "theta.safetensors"
EPILOG = """examples:
  metaopt meta-train --task quadratic --task-opt dim=8 --lopt sgdm --steps 20 --truncation 5 \\
      --horizon 40 --out runs/quad           # seconds
  metaopt meta-train --task mlp_digits --task-opt width=32 --steps 50 --out runs/lo
  metaopt meta-train ... --out runs/lo --resume       # continue after Ctrl-C or a crash
  metaopt meta-train ... --out runs/lo --nproc 2      # two local processes"""


def _default(fn, name: str):
    """The default of ``fn``'s parameter ``name`` (the Python API is the one source)."""
    return inspect.signature(fn).parameters[name].default


def build_parser() -> Parser:
    mt = lambda name: _default(meta_train, name)  # noqa: E731
    mlp = lambda name: _default(MLPLOpt, name)  # noqa: E731
    p = Parser(prog="metaopt meta-train", description="Meta-train a learned optimizer.",
               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
               allow_abbrev=False)
    p.add_argument("--task", "--task-family", dest="task", default="mlp_digits",
                   metavar="NAME|pkg.mod:factory",
                   help="registered task or an importable factory (default: mlp_digits)")
    p.add_argument("--task-opt", action="append", default=[], metavar="KEY=VALUE[,VALUE..]",
                   help="task option; several values are drawn per task (repeatable)")
    p.add_argument("--horizon", type=int_at_least(1), default=200,
                   help="inner steps per task (default: 200)")
    p.add_argument("--lopt", choices=LOPTS, default="mlp",
                   help="mlp (MLPLOpt) or sgdm (default: mlp)")
    p.add_argument("--param", choices=("mup", "sp"), default="mup",
                   help="μLO or SP-LO (default: mup)")
    p.add_argument("--hidden", type=int_at_least(1), default=mlp("hidden"),
                   help=f"MLPLOpt hidden units (default: {mlp('hidden')})")
    p.add_argument("--step-mult", type=_pos, default=mlp("step_mult"),
                   help=f"MLPLOpt step_mult (default: {mlp('step_mult')}, as MLPLOpt())")
    p.add_argument("--base-fan-in", type=int_at_least(1), default=mlp("base_fan_in"),
                   help=f"μLO hidden scale base_fan_in/fan_in (default: {mlp('base_fan_in')})")
    p.add_argument("--adam-feature", action="store_true",
                   help="MLPLOpt: also feed Adam's bias-corrected direction (see adam_like_theta)")
    p.add_argument("--adam-scale", action="store_true",
                   help="MLPLOpt: scale each tensor's step by the RMS of Adam's direction "
                        "(needs --adam-feature)")
    p.add_argument("--meta-loss", choices=META_LOSSES, default=mt("meta_loss"),
                   help=f"per-truncation meta-loss (default: {mt('meta_loss')})")
    p.add_argument("--method", choices=estimators.METHODS, default=mt("method"),
                   help=f"meta-gradient estimator (default: {mt('method')})")
    p.add_argument("--steps", type=int_at_least(1), default=500,
                   help="outer steps (default: 500)")
    p.add_argument("--truncation", type=int_at_least(1), default=mt("truncation"),
                   help=f"inner steps per outer step (default: {mt('truncation')})")
    p.add_argument("--num-tasks", type=int_at_least(1), default=mt("num_tasks"),
                   help=f"tasks per estimate (default: {mt('num_tasks')})")
    p.add_argument("--outer-lr", type=_pos, default=mt("outer_lr"),
                   help=f"Adam lr on theta (default: {mt('outer_lr')})")
    p.add_argument("--std", type=_pos, default=mt("std"),
                   help=f"PES/ES perturbation std (default: {mt('std')})")
    p.add_argument("--checkpoint-dir", default=None, help="(default: OUT/checkpoints)")
    p.add_argument("--checkpoint-every", type=int_at_least(1), default=mt("checkpoint_every"),
                   help=f"outer steps between checkpoints (default: {mt('checkpoint_every')})")
    p.add_argument("--checkpoint-seconds", type=_pos, default=mt("checkpoint_seconds"),
                   help="seconds between checkpoints (default: "
                        f"{mt('checkpoint_seconds'):g})")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in OUT")
    p.add_argument("--nproc", type=int_at_least(1), default=1,
                   help="local processes sharing the tasks (torchrun; default: 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_common_flags(p)
    p.set_defaults(out=None)
    for action in p._actions:
        if action.dest == "out":
            action.required, action.help = True, "output folder (required)"
    return p


@cli_entry(what="meta-train")
def main(argv: list[str] | None = None) -> int:
    """Run ``metaopt meta-train`` with ``argv``; returns the exit code (2 on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    out, ckpt = _check_paths(args)
    family = _family(args, device)
    lopt = _lopt(args)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _spawn(args.nproc, argv)
    comm = distributed.init_from_env(device)
    history: list = []
    started = time.perf_counter()
    theta = meta_train(lopt, family, args.steps, method=args.method, truncation=args.truncation,
                       num_tasks=args.num_tasks, outer_lr=args.outer_lr, std=args.std,
                       checkpoint_dir=str(ckpt), checkpoint_every=args.checkpoint_every,
                       checkpoint_seconds=args.checkpoint_seconds, device=device,
                       seed=args.seed, meta_loss=args.meta_loss,
                       progress=not args.no_progress, resume=args.resume,
                       callback=lambda step, loss, bad: history.append([step, loss, len(bad)]))
    if comm.is_root:
        save_theta(out / THETA, theta, lopt)
        _, meta = load_checkpoint(ckpt)
        save_json(out / "meta_train.json", {
            "settings": {k: v for k, v in vars(args).items()}, "family": repr(family),
            "lopt": {"name": lopt.name, **(lopt.config() if hasattr(lopt, "config") else {})},
            "history": meta["history"], "history_this_session": history,
            "seconds_this_session": time.perf_counter() - started, "processes": comm.world})
        report(out)
        print(f"theta written to {out / THETA}")
    return 0


def _check_paths(args) -> tuple[Path, Path]:
    """Validate ``--out`` and ``--checkpoint-dir`` before anything is written."""
    out = check_out_dir(args.out, resume=args.resume, marker=THETA)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else out / "checkpoints"
    check_out_dir(ckpt, resume=args.resume, marker=LATEST,
                  flag="--checkpoint-dir" if args.checkpoint_dir else "--out")
    return out, ckpt


def _lopt(args):
    if args.lopt == "sgdm":
        return SGDMLOpt()
    return MLPLOpt(hidden=args.hidden, step_mult=args.step_mult, mup=args.param == "mup",
                   base_fan_in=args.base_fan_in, adam_feature=args.adam_feature,
                   adam_scale=args.adam_scale)


def _spawn(nproc: int, argv: list[str]) -> int:
    """Run this command in ``nproc`` local processes under ``torch.distributed.run``."""
    rest, skip = [], False
    for a in argv:  # torchrun reads a bare --nproc as an ambiguous flag of its own
        if not skip and not a.startswith("--nproc"):
            rest.append(a)
        skip = a == "--nproc"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "learned.cli", *rest]
    return subprocess.call(cmd)


def _family(args, device) -> TaskChoice:
    fixed, choices = {}, {}
    for item in args.task_opt:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--task-opt {item!r}: expected KEY=VALUE or KEY=V1,V2")
        values = [parse_task_opts(args.task, [f"{key}={v}"])[key.strip()]
                  for v in value.split(",")]
        (choices if len(values) > 1 else fixed)[key.strip()] = \
            values if len(values) > 1 else values[0]
    family = TaskChoice(args.task, args.horizon, choices, device=device, **fixed)
    task = family.sample(torch.Generator().manual_seed(0))
    if "param" not in fixed and "param" not in choices and _accepts(task, "param"):
        family = TaskChoice(args.task, args.horizon, choices, device=device,
                            param=args.param, **fixed)
    return family


def _accepts(task, option: str) -> bool:
    return option in inspect.signature(type(task)).parameters


def _pos(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


if __name__ == "__main__":
    sys.exit(main())
