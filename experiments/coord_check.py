"""Coordinate check and learning-rate transfer of μP against SP (Tensor Programs V, §7, Fig. 1;
microsoft/mup's coord check).

For the digits MLP (3 ReLU layers) and the byte-level transformer (``charlm``, 2 blocks), train
each width for a few Adam steps at one base learning rate (μP: per-layer multipliers from
``metaopt.mup.lr_multipliers``; SP: one global lr) and record every layer's mean |activation|
after each step; fit the log-log slope against width. μP should be flat (|slope| <= 0.1), SP not.
Then μTransfer on the digits MLP: an Adam learning-rate sweep at several widths, final training
loss per (lr, width); under μP the best lr should stay put and wider should be better.

    python experiments/coord_check.py                       # ~5 min on one CPU core
    python experiments/coord_check.py --device cuda --mlp-widths 64,128,256,512,1024,2048,4096

Writes ``coord_check.md`` and ``coord_check_{mlp,charlm}.png`` to ``--out`` (default
experiments/results); finished (model, parametrization) runs are kept as JSON in
``--out/coord_check_work/`` and reused by a rerun with the same settings.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import torch

from tqdm.auto import tqdm

from metaopt.helpers import write_atomic
from metaopt import apply, init_states, mup, tasks, zoo
from metaopt.cli_common import Parser, UsageError, add_common_flags, fail, resolve_device
from metaopt.bench.machine import command_line, machine_line


def parse(argv=None):
    p = Parser(prog="coord_check", description=__doc__.splitlines()[0])
    add_common_flags(p)
    p.add_argument("--mlp-widths", default="64,128,256,512,1024,2048")
    p.add_argument("--lm-widths", default="64,128,256,512,1024")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--transfer-widths", default="64,256,1024")
    p.add_argument("--transfer-lrs", default="0.001,0.003,0.01,0.03,0.1")
    p.add_argument("--transfer-steps", type=int, default=50)
    args = p.parse_args(argv)
    args.out = args.out or "experiments/results"
    return args


def widths(text: str, flag: str) -> tuple[int, ...]:
    try:
        ws = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if len(ws) < 2 or min(ws) < 4 or any(w % 4 for w in ws):
        raise UsageError(f"{flag} needs at least two widths, each a multiple of 4, got {text!r}")
    return ws


def learning_rates(text: str) -> tuple[float, ...]:
    try:
        lrs = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--transfer-lrs must be comma-separated numbers, got {text!r}") from None
    if not lrs or not all(0 < lr < 10 for lr in lrs):
        raise UsageError(f"--transfer-lrs must be in (0, 10), got {text!r}")
    return lrs


def model_factory(model: str, param: str, device, dtype=torch.float32):
    if model == "mlp":
        return lambda w: tasks.get("mlp_digits", width=w, depth=3, param=param, base_width=64,
                                   batch_size=64, device=device, dtype=dtype)
    return lambda w: tasks.get("charlm", width=w, depth=2, heads=4, context=32, param=param,
                               base_width=64, batch_size=8, corpus_bytes=500_000,
                               device=device, dtype=dtype)


def run(model, param, ws, args, device, work) -> mup.CoordCheck:
    """The coord check of one (model, parametrization), reused from ``work`` when present."""
    config = {"model": model, "param": param, "widths": ws, "steps": args.steps, "lr": args.lr,
              "seeds": list(range(args.seed, args.seed + args.seeds)), "device": device.type}
    path = os.path.join(work, f"{model}_{param}.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved["config"] == json.loads(json.dumps(config)):
            return mup.CoordCheck(tuple(ws), tuple(saved["layers"]), np.array(saved["values"]))
    res = mup.coord_check(model_factory(model, param, device), widths=ws, steps=args.steps,
                          lr=args.lr, seeds=config["seeds"])
    write_atomic(path, json.dumps({"config": config, "layers": res.layers,
                                   "values": res.values.tolist()}))
    return res


def train_loss_after(task, lr: float, steps: int, seed: int) -> float:
    """Full-training-set loss after ``steps`` of μP Adam (SP: one lr) from seed ``seed``."""
    params = task.init(task.generator(seed))
    rule = zoo.rule("adam")
    hp = mup.per_tensor_hp(mup.lr_multipliers(task.param_info, "adam", task.base_param_info), lr)
    states, gen = init_states(rule, params), task.generator(1000 + seed)
    grad = torch.func.grad(task.loss)
    for t in range(1, steps + 1):
        params, states = apply(rule, params, grad(params, task.sample_batch(gen)), states, t, hp)
    with torch.no_grad():
        loss = float(task.loss(params, (task.x_train, task.y_train)))
    return loss if math.isfinite(loss) else float("inf")


def transfer(ws, lrs, args, device, work) -> dict:
    """``{(param, lr, width): train loss averaged over seeds}``; each finished run is kept in
    ``work`` (a rerun resumes)."""
    path = os.path.join(work, f"transfer_{args.transfer_steps}_{device.type}.json")
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            done = json.load(f)
    seeds = range(args.seed, args.seed + args.seeds)
    runs = [(p, lr, w, s) for p in ("mup", "sp") for lr in lrs for w in ws for s in seeds]
    for param, lr, w, seed in tqdm(runs, desc="lr transfer"):
        key = f"{param}|{lr}|{w}|{seed}"
        if key not in done:
            task = model_factory("mlp", param, device)(w)
            done[key] = train_loss_after(task, lr, args.transfer_steps, seed)
            write_atomic(path, json.dumps(done))
    return {(p, lr, w): float(np.mean([done[f"{p}|{lr}|{w}|{s}"] for s in seeds]))
            for p in ("mup", "sp") for lr in lrs for w in ws}


def transfer_table(losses: dict, ws, lrs) -> list[str]:
    rows = []
    for param in ("mup", "sp"):
        best = {w: min(lrs, key=lambda lr: losses[param, lr, w]) for w in ws}
        rows += [f"\n**{param}: training loss after the sweep (best lr per width in bold)**\n",
                 "| lr | " + " | ".join(f"w={w}" for w in ws) + " |",
                 "|---|" + "---|" * len(ws)]
        for lr in lrs:
            cells = [f"**{losses[param, lr, w]:.4f}**" if best[w] == lr
                     else f"{losses[param, lr, w]:.4f}" for w in ws]
            rows.append(f"| {lr:g} | " + " | ".join(cells) + " |")
    return rows


def machine(device) -> str:
    return machine_line(device)


def slope_table(results: dict) -> list[str]:
    rows = ["| model | param | step | slope per layer (log mean abs activation vs log width) |",
            "|---|---|---|---|"]
    for (model, param), res in results.items():
        for t in range(res.values.shape[0]):
            cells = ", ".join(f"{k} {v:+.3f}" for k, v in res.slopes(t).items())
            worst = max(abs(v) for v in res.slopes(t).values())
            rows.append(f"| {model} | {param} | {t + 1} | {cells} (max abs {worst:.3f}) |")
    return rows


def value_table(results: dict) -> list[str]:
    rows = []
    for (model, param), res in results.items():
        rows += [f"\n**{model}, {param}: mean abs activation after the last step**\n",
                 "| layer | " + " | ".join(f"w={w}" for w in res.widths) + " |",
                 "|---|" + "---|" * len(res.widths)]
        rows += [f"| {name} | " + " | ".join(f"{v:.3g}" for v in res.values[-1, i]) + " |"
                 for i, name in enumerate(res.layers)]
    return rows


def main(argv=None) -> int:
    try:
        args = parse(argv)
        device = resolve_device(args.device)
        model_widths = {"mlp": widths(args.mlp_widths, "--mlp-widths"),
                        "charlm": widths(args.lm_widths, "--lm-widths")}
        transfer_ws = widths(args.transfer_widths, "--transfer-widths")
        lrs = learning_rates(args.transfer_lrs)
        if min(args.steps, args.seeds, args.transfer_steps) < 1 or not args.lr > 0:
            raise UsageError("--steps, --seeds and --transfer-steps must be >= 1 and --lr > 0")
    except UsageError as e:
        return fail(str(e))
    work = os.path.join(args.out, "coord_check_work")
    os.makedirs(work, exist_ok=True)
    results = {(m, p): run(m, p, ws, args, device, work)
               for m, ws in model_widths.items() for p in ("mup", "sp")}
    for m in model_widths:
        mup.plot_coord_check({"μP": results[m, "mup"], "SP": results[m, "sp"]},
                             os.path.join(args.out, f"coord_check_{m}.png"))
    losses = transfer(transfer_ws, lrs, args, device, work)
    text = "\n".join([
        f"Command: `{command_line()}`",
        "",
        "# Coordinate check: μP vs SP",
        "",
        f"Machine: {machine(device)}.",
        f"Adam (betas 0.9, 0.999), base lr {args.lr}, {args.steps} steps, mean over "
        f"{args.seeds} seed(s). MLP: mlp_digits, depth 3, batch 64, base width 64, widths "
        f"{model_widths['mlp']}. Transformer: charlm, 2 blocks, 4 heads, context 32, batch 8, "
        f"base width 64, widths {model_widths['charlm']}. μP uses the per-layer lrs of "
        "`metaopt.mup.lr_multipliers` (hidden lr / width_mult), zero readout with multiplier "
        "base_width / width, 1/d attention and zero queries; SP uses one lr, N(0, 1/fan_in) "
        "weights, 1/sqrt(d) attention.",
        "",
        "A slope of 0 means the layer's coordinates do not change size with width (what μP "
        "promises); a positive slope means they grow with width. Plots: "
        + ", ".join(f"`coord_check_{m}.png`" for m in model_widths) + ".",
        "",
        *slope_table(results),
        *value_table(results),
        "",
        "## Learning-rate transfer (digits MLP, depth 3)",
        "",
        f"Adam, {args.transfer_steps} steps of batch 64, mean over {args.seeds} seed(s); loss "
        "on the full "
        "training set (1437 images) at the end. Under μP the lr is the base lr (hidden layers "
        "get lr / width_mult); under SP every tensor gets it.",
        *transfer_table(losses, transfer_ws, lrs),
        "",
    ])
    write_atomic(os.path.join(args.out, "coord_check.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
