"""CPU optimizer-step speed of every elementwise zoo member against pytorch-optimizer's and
torch's implementation of the same rule and torch's fused AdamW, all in one run.

    python experiments/zoo_cpu_bench.py --out experiments/results        # the issue's sizes
    python experiments/zoo_cpu_bench.py --scale 0.01 --windows 2 --out /tmp/z   # rehearsal

Configurations (fp32, fixed random gradients): (big) 16 tensors of 640x1024 = 10.5M params;
(small) 1024 tensors of 80x128 = 10.5M params. For every member: the median step time of the
default path (``zoo.create(name, params)``, what users get) over timed windows that alternate
with windows of the references on the same tensors (pytorch-optimizer's class for the rule,
torch's own class where torch has the rule, torch's fused AdamW), so a loaded machine biases
the ratios less than the times. Targets (issue 20): faster than pytorch-optimizer's version,
and at most 1.5x fused AdamW scaled by bytes moved, ``(3 + 2 S) / 7`` for ``S`` state tensors
the size of the parameter (AdamW: S = 2, 28 bytes per fp32 parameter). Also the first step
(state creation and any one-off cost, such as compiling) of a fresh optimizer, twice: *cold*
in this process with empty compile caches (a fresh ``TORCHINDUCTOR_CACHE_DIR`` and
``METAOPT_KERNEL_CACHE``, so a generated C kernel is built), and *warm* in a new process that
finds the caches this process filled (what a user's second run pays).
Writes ``<out>/zoo_cpu.md``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo_step_bench import (  # noqa: E402
    _prepare, chosen_path, machine, pytorch_optimizer_factory, state_tensors,
    with_loss_closure, write_atomic)

from metaopt import zoo  # noqa: E402

# hyperparameters that make a member benchmarkable without a model (Sophia's Hessian-vector
# product only on step 1: its cost is the model's, not the optimizer step's)
BENCH_HP = {"sophia": {"update_period": 10 ** 9}}
PO_HP = {"sophia": {"update_period": 10 ** 9}}
PO_NAMES = {"sophia": "sophia"}  # pytorch-optimizer's SophiaH (zoo_step_bench's mapping)
# torch.optim's class for the same rule (its fastest non-fused path, foreach; fused where the
# zoo's default is torch's fused kernel)
TORCH = {
    "adam": lambda ps: torch.optim.Adam(ps, fused=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, fused=True),
    "amsgrad": lambda ps: torch.optim.Adam(ps, amsgrad=True, fused=True),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2, fused=True),
    "adadelta": lambda ps: torch.optim.Adadelta(ps, foreach=True),
    "adamax": lambda ps: torch.optim.Adamax(ps, lr=2e-3, foreach=True),
    "nadam": lambda ps: torch.optim.NAdam(ps, lr=2e-3, foreach=True),
    "radam": lambda ps: torch.optim.RAdam(ps, foreach=True),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-2, foreach=True),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=1e-3, foreach=True),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="factor on every tensor's size (1 = 10.5M params per config)")
    ap.add_argument("--configs", default="big,small", help="comma-separated: big, small")
    ap.add_argument("--members", default="all", help="comma-separated ids, or 'all' "
                    "(every elementwise member)")
    ap.add_argument("--steps", type=int, default=3, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=7, help="timed windows per optimizer")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--first-step", default=None, metavar="MEMBER:CONFIG",
                    help=argparse.SUPPRESS)  # internal: print one fresh first step's seconds
    args = ap.parse_args(argv)
    if args.scale <= 0 or args.steps < 1 or args.windows < 1 or args.threads < 1:
        ap.error("--scale must be > 0; --steps, --windows and --threads >= 1")
    if args.first_step is not None and (args.first_step.count(":") != 1
                                        or args.first_step.split(":")[1] not in ("big", "small")):
        ap.error("--first-step must be MEMBER:big or MEMBER:small")
    bad = sorted(set(args.configs.split(",")) - {"big", "small"})
    if bad:
        ap.error(f"unknown config(s) {bad}; choose from big, small")
    return args


def configs(scale: float) -> dict[str, tuple[int, tuple[int, int]]]:
    rows = lambda n: max(1, int(round(n * scale)))  # noqa: E731
    return {"big": (16, (rows(640), 1024)), "small": (1024, (rows(80), 128))}


def elementwise_members() -> list[str]:
    return [n for n in zoo.names() if zoo.rule(n).caps.elementwise]


def make_params(n: int, shape: tuple[int, int]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(n):
        p = torch.randn(shape, generator=gen).requires_grad_()
        p.grad = 1e-3 * torch.randn(shape, generator=gen)
        params.append(p)
    return params


def window_ms(step, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) * 1e3 / steps


def reference_steps(name: str, params) -> dict:
    """Warmed-up ``step`` of pytorch-optimizer's and torch's versions of ``name``."""
    refs = {}
    po_cls = pytorch_optimizer_factory(PO_NAMES.get(name, name))
    if po_cls is not None and po_cls.__module__.startswith("pytorch_optimizer"):
        opt = po_cls(params, **PO_HP.get(name, {}))
        if name == "sophia":
            _prepare("sophia", opt, params)
        refs["pytorch-optimizer"] = opt
    if name in TORCH:
        refs["torch"] = TORCH[name](params)
    for opt in refs.values():
        for _ in range(2):
            opt.step()
    return {k: v.step for k, v in refs.items()}


def bench_member(name: str, cfg: str, params, adamw_step, args) -> dict:
    """First step of a fresh default optimizer (and of one in a new process), then windows
    alternating with the references' and fused AdamW's; medians per step."""
    refs = reference_steps(name, params)
    opt, first_s = fresh_first_step(name, params)
    opt.step()
    steps = {"ours": opt.step, **refs, "adamw": adamw_step}
    times = {k: [] for k in steps}
    for _ in range(args.windows):
        for k, step in steps.items():
            times[k].append(window_ms(step, args.steps))
    row = {k: statistics.median(v) for k, v in times.items()}
    impl = taken_path(opt, params)
    return dict(row, member=name, first_s=first_s, S=state_tensors(opt, params), impl=impl,
                warm_s=warm_first_step_s(name, cfg, args))


def taken_path(opt, params) -> str:
    """The path ``opt``'s last step took: :func:`chosen_path`, except that a ``"c"`` choice
    whose kernel was refused (no plan was made) reports the path taken instead."""
    path = chosen_path(opt, params)
    if path == "c" and not opt._paths.plans:
        from metaopt.fastpath import choose_impl
        return choose_impl(opt.rule, opt.impl, params, [p.grad for p in params], True,
                           c_kernel=False)
    return path


def fresh_first_step(name: str, params) -> tuple:
    """A fresh default optimizer on ``params`` and the seconds of its first step."""
    opt = with_loss_closure(zoo.create(name, params, **BENCH_HP.get(name, {})))
    _prepare(name, opt, params)
    t0 = time.perf_counter()
    opt.step()
    return opt, time.perf_counter() - t0


def warm_first_step_s(name: str, cfg: str, args) -> float:
    """:func:`fresh_first_step`'s seconds in a new process (same cache directory, so
    Inductor's and the C kernels' on-disk caches are warm)."""
    cmd = [sys.executable, __file__, "--first-step", f"{name}:{cfg}", "--scale",
           str(args.scale), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def judge(row: dict) -> tuple[float, str]:
    """``(x byte-scaled AdamW, verdict)`` for one row."""
    scaled = row["ours"] / (row["adamw"] * (3 + 2 * row["S"]) / 7)
    po = row.get("pytorch-optimizer")
    ok = scaled <= 1.5 and (po is None or row["ours"] < po) and row["warm_s"] <= 1.0
    return scaled, "yes" if ok else "no"


def render(meta: dict, rows: dict[str, list[dict]]) -> str:
    out = [
        f"Command: `{meta['command']}`",
        "",
        "# Zoo optimizer step on CPU: the default path against pytorch-optimizer and torch",
        "",
        f"- machine: {meta['machine']}; load average at start {meta['load0']}, at end "
        f"{meta['load1']} (shared by other jobs)",
        f"- versions: Python {meta['python']}, torch {meta['torch']}, pytorch-optimizer "
        f"{meta['po']}; date {meta['date']}",
        "- configs: " + "; ".join(f"({k}) {n} x {s[0]}x{s[1]} fp32 = {n * s[0] * s[1] / 1e6:.1f}M "
                                  "params" for k, (n, s) in meta["configs"].items()),
        f"- every time is the median ms per step over {meta['windows']} windows of "
        f"{meta['steps']} steps; each member's windows alternate with those of its references "
        "and of torch's fused AdamW on the same tensors, so ratios are within one run and one "
        "load; `x AdamW bytes` = ours / (fused AdamW x (3 + 2 S) / 7), S = parameter-sized "
        "state tensors; target <= 1.5 and faster than pytorch-optimizer",
        "- first step s: a fresh optimizer's first step (state creation, any one-off cost such "
        "as compiling or building a C kernel): cold = this process, empty Inductor and kernel "
        "caches; warm = a new process with the caches this run filled; target <= 1 s warm",
        "",
    ]
    for cfg, cfg_rows in rows.items():
        out += [f"## ({cfg})", "",
                "| member | path | S | ours ms | pytorch-optimizer ms | ours / p-o | torch ms | "
                "ours / torch | fused AdamW ms | x AdamW bytes | first step s cold | warm | "
                "target met |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in cfg_rows:
            scaled, ok = judge(r)
            po, tc = r.get("pytorch-optimizer"), r.get("torch")
            out.append(
                f"| {r['member']} | {r['impl']} | {r['S']} | {r['ours']:.2f} | {_fmt(po)} | "
                f"{_fmt(po and r['ours'] / po)} | {_fmt(tc)} | {_fmt(tc and r['ours'] / tc)} | "
                f"{r['adamw']:.2f} | {scaled:.2f} | {r['first_s']:.3f} | {r['warm_s']:.3f} | {ok} |")
        out.append("")
    return "\n".join(out)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.first_step is not None:
        name, cfg = args.first_step.split(":")
        if name not in zoo.names():
            print(f"error: unknown member {name!r}; choose from {zoo.names()}", file=sys.stderr)
            return 2
        print(f"{fresh_first_step(name, make_params(*configs(args.scale)[cfg]))[1]:.6f}")
        return 0
    names = elementwise_members() if args.members == "all" else args.members.split(",")
    unknown = sorted(set(names) - set(zoo.names()))
    if unknown:
        print(f"error: unknown member(s) {unknown}; choose from {zoo.names()}", file=sys.stderr)
        return 2
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="zoo_cpu_inductor_")
    os.environ["METAOPT_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="zoo_cpu_kernels_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        po_version = importlib.metadata.version("pytorch-optimizer")
    except importlib.metadata.PackageNotFoundError:
        po_version = "not installed"
    cfgs = {k: v for k, v in configs(args.scale).items() if k in args.configs.split(",")}
    meta = {"command": "python " + " ".join(sys.argv), "machine": machine("cpu"),
            "load0": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "python": platform.python_version(), "torch": torch.__version__, "po": po_version,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "configs": cfgs, "windows": args.windows, "steps": args.steps}
    rows: dict[str, list[dict]] = {}
    total, done, t_start = len(cfgs) * len(names), 0, time.perf_counter()
    for cfg, (n, shape) in cfgs.items():
        params = make_params(n, shape)
        adamw = torch.optim.AdamW(params, fused=True)
        adamw.step()
        rows[cfg] = []
        for name in names:
            rows[cfg].append(bench_member(name, cfg, params, adamw.step, args))
            for p in params:  # members that clear or replace gradients get fresh ones
                p.grad = 1e-3 * torch.randn_like(p)
            done += 1
            per = (time.perf_counter() - t_start) / done
            print(f"[{done}/{total}] {cfg}/{name}: {rows[cfg][-1]['ours']:.2f} ms "
                  f"(about {per * (total - done) / 60:.1f} min left)", file=sys.stderr)
        del params, adamw
    meta["load1"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = render(meta, rows)
    write_atomic(out / "zoo_cpu.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
