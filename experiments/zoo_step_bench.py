"""Optimizer-step speed of every zoo member against its byte floor and torch's fused AdamW.

    python experiments/zoo_step_bench.py                       # CPU, sizes scaled by 1/8
    python experiments/zoo_step_bench.py --device cuda --scale 1 --budget-s 140

Configurations (fp32, random gradients): (a) 32 tensors of 2048x2048 and (b) 1024 tensors of
256x256, both with their side scaled by ``--scale``; the matrix members (shampoo, soap, psgd,
muon) run on (c) 8 tensors of 1024x1024 (scaled likewise), preconditioners refreshed every 10
steps, so a timed window of 10 steps holds one refresh and the reported time is amortized.
For each member: the median step time over timed windows; its ratio to the byte floor (bytes
read + written per parameter over the measured copy bandwidth; 4 (3 + 2 S) bytes for fp32 with
S param-sized state tensors: read p, g and the state, write p and the state); its ratio to
torch's fused AdamW and to pytorch-optimizer's version of the rule where one exists (both
timed in windows alternating with the member's, so a shared or throttled machine biases the
ratios less); and on CUDA the peak transient memory of a step in parameter-sized buffers.
torch's fused and foreach AdamW are also timed alone. HeavyBall's version (where it has the
rule; ``HEAVYBALL``) is timed the same way; its ``step`` sets ``p.grad = None`` (HeavyBall 3.2),
so each of its timed steps hands the gradients back before and after (two attribute stores per
tensor), and a step that does not move the parameters fails the row. Members that would run past
``--budget-s`` are skipped and listed. Finished rows are kept in ``<out>/zoo_bench.json`` and
reused by ``--resume``. Writes ``<out>/zoo.md``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metaopt.helpers import write_atomic  # noqa: E402
from metaopt import zoo  # noqa: E402
from metaopt.bench.machine import cpu_model

SECOND_ORDER = {"shampoo", "soap", "psgd", "muon", "mfac", "shampoo4bit"}
# pytorch-optimizer's class for the same rule (its load_optimizer names)
PYTORCH_OPTIMIZER = {
    "adabelief": "adabelief", "adabound": "adabound", "adadelta": "adadelta",
    "adafactor": "adafactor", "adamax": "adamax", "adamp": "adamp", "ademamix": "ademamix",
    "diffgrad": "diffgrad", "grams": "grams", "gravity": "gravity", "lion": "lion",
    "sgdp": "sgdp", "shampoo": "shampoo", "soap": "soap", "psgd": "kron", "sophia": "sophiah",
}
# hyperparameters that make a member benchmarkable without a model (see _prepare)
BENCH_HP = {
    "sophia": {"update_period": 10 ** 9},  # Hessian only on step 1; its cost is the model's
    "shampoo": {"precondition_frequency": 10},
    "soap": {"precondition_frequency": 10},
    "psgd": {"update_probability": 0.1},
}

# HeavyBall's class for the same rule, and the hyperparameters that give it the same schedule
HEAVYBALL = {"adamw": "AdamW", "ademamix": "AdEMAMix", "nadam": "NAdam", "rmsprop": "RMSprop",
             "sgd": "SGD", "soap": "SOAP", "psgd": "PSGDKron", "muon": "Muon"}
HB_HP = {"soap": {"precondition_frequency": 10},
         "psgd": {"preconditioner_update_probability": 0.1}}

# the same schedules for pytorch-optimizer's versions
PO_HP = {
    "sophia": {"update_period": 10 ** 9},
    "shampoo": {"preconditioning_compute_steps": 10},
    "psgd": {"pre_conditioner_update_probability": 0.1},
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", type=float, default=0.125,
                    help="side-length factor for the tensor sizes (1 = the issue's sizes)")
    ap.add_argument("--members", default="all", help="comma-separated ids, or 'all'")
    ap.add_argument("--impl", default="auto", choices=["auto", "loop", "fused", "compiled"],
                    help="RuleOptimizer path for every member (auto: what users get)")
    ap.add_argument("--configs", default="a,b,c", help="which of a,b,c to run")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=3, help="timed windows (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--window-s", type=float, default=0.5,
                    help="fewer steps per window for members slower than this allows")
    ap.add_argument("--budget-s", type=float, default=600.0, help="hard cap for the whole run")
    ap.add_argument("--min-left-s", type=float, default=5.0,
                    help="start a member only with this much of the budget left")
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--resume", action="store_true", help="reuse rows in <out>/zoo_bench.json")
    ap.add_argument("--default-hp", action="store_true",
                    help="every member at its default hyperparameters (preconditioner "
                    "frequencies included), not BENCH_HP's (Sophia's Hessian still step 1 only)")
    args = ap.parse_args(argv)
    if args.scale <= 0 or args.steps < 1 or args.windows < 1 or args.warmup < 0:
        ap.error("--scale must be > 0 and --steps/--windows >= 1, --warmup >= 0")
    return args


def configs(scale: float) -> dict[str, tuple[int, int]]:
    side = lambda n: max(8, int(round(n * scale)))  # noqa: E731
    return {"a": (32, side(2048)), "b": (1024, side(256)), "c": (8, side(1024))}


def make_params(n: int, side: int, device) -> list[torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    params = []
    for _ in range(n):
        p = torch.randn(side, side, device=device, generator=gen).requires_grad_()
        p.grad = 1e-3 * torch.randn(side, side, device=device, generator=gen)
        params.append(p)
    return params


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, device, steps: int, windows: int) -> float:
    """Median milliseconds per call of ``step`` over ``windows`` windows of ``steps`` calls
    (CUDA events on CUDA, perf_counter otherwise)."""
    per_window = []
    for _ in range(windows):
        if torch.device(device).type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            torch.cuda.synchronize()
            per_window.append(start.elapsed_time(end) / steps)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            per_window.append((time.perf_counter() - t0) * 1e3 / steps)
    return statistics.median(per_window)


def copy_bandwidth(device, numel: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` (read + write) on ``numel`` fp32 values."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    ms = time_steps(lambda: dst.copy_(src), device, 10, 5)
    return 2 * 4 * numel / (ms / 1e3)


def state_tensors(opt, params) -> int:
    """Parameter-sized state tensors per parameter (S in the byte floor)."""
    st = opt.state[params[0]]
    return sum(1 for k, v in st.items() if torch.is_tensor(v) and v.shape == params[0].shape)


def _prepare(name: str, opt, params) -> None:
    """Step 1 of rules that ask for extra inputs: Sophia-H's Hessian-vector product comes from
    the elementwise loss sum(p^2)/2 (its Hessian is the identity); later steps need none."""
    if name != "sophia":
        return
    for p in params:
        p.grad = None
    with torch.enable_grad():
        sum((p * p).sum() / 2 for p in params).backward(create_graph=True)
    opt.step()
    for p in params:
        p.grad = (1e-3 * torch.randn_like(p)).detach()


def with_loss_closure(opt):
    """``opt`` whose ``step()`` hands a constant loss through a closure: members that need
    the loss (Polyak step sizes) or a closure (weight prediction) are timed on their own work
    (gradients stay the fixed random ones; the model's forward and backward are not timed)."""
    rule = opt.rule
    if rule.caps.predict is None and "loss" not in rule.caps.needs(rule.hp, 1):
        return opt
    loss, step = torch.ones((), device=opt.param_groups[0]["params"][0].device), opt.step
    opt.step = lambda closure=None: step(lambda: loss)
    return opt


def peak_extra_buffers(step, params, device) -> float | None:
    """Peak transient memory of one step, in parameter-sized buffers (CUDA only)."""
    if torch.device(device).type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    sync(device)
    return (torch.cuda.max_memory_allocated() - base) / (4 * sum(p.numel() for p in params))


def bench_optimizer(make, params, device, args, prepare=None, fixed_steps=False,
                    references=()) -> dict:
    """Time ``make(params).step()``: first step (compile, state), warm-up, then the median of
    timed windows (``--steps`` per window, fewer for slow members unless ``fixed_steps``).
    Windows of each ``references`` step (torch's AdamW, pytorch-optimizer's version) alternate
    with the member's, so the ratios are measured under the same machine load (``ref_ms``)."""
    opt = make(params)
    if prepare is not None:
        prepare(opt, params)
    t0 = time.perf_counter()
    opt.step()
    sync(device)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(max(1, args.warmup)):
        opt.step()
    sync(device)
    per_step = (time.perf_counter() - t0) / max(1, args.warmup)
    steps = args.steps if fixed_steps else max(1, min(args.steps, int(args.window_s / per_step)))
    ms, refs = [], [[] for _ in references]
    for _ in range(args.windows):
        ms.append(time_steps(opt.step, device, steps, 1))
        for ref, out in zip(references, refs):
            out.append(time_steps(ref, device, steps, 1))
    return {"ms": statistics.median(ms), "first_s": first_s, "S": state_tensors(opt, params),
            "mem": peak_extra_buffers(opt.step, params, device),
            "ref_ms": [statistics.median(r) for r in refs]}


def chosen_path(opt, params) -> str:
    """The path (``fused``, ``compiled``, ``loop``) ``opt`` takes for ``params`` on a plain
    step; ``opt.impl`` where the adapter does not say (its internals move between versions)."""
    try:
        from metaopt.fastpath import choose_impl
        return choose_impl(opt.rule, opt.impl, params, [p.grad for p in params], True)
    except Exception:  # noqa: BLE001 - an older adapter: its private method, else the request
        try:
            return opt._choose_impl(params, False)
        except Exception:  # noqa: BLE001
            return opt.impl


def pytorch_optimizer_factory(name: str):
    key = PYTORCH_OPTIMIZER.get(name)
    if key is None:
        return None
    try:
        from pytorch_optimizer import load_optimizer
        return load_optimizer(key)
    except Exception:  # not installed (GPU machine) or unknown there
        return None


def machine(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def render(meta: dict, rows: list[dict], skipped: list[str]) -> str:
    out = [
        "# Zoo optimizer-step benchmark",
        "",
        f"- machine: {meta['machine']}; torch {meta['torch']}; date {meta['date']}",
        *[f"- run {r['run']}: `{r['command']}`; copy bandwidth {r['bw'] / 1e9:.1f} GB/s "
          "(read + write, fp32 copy_)" + (f"; {r['note']}" if r.get("note") else "")
          for r in meta["runs"]],
        "- configs: " + "; ".join(f"({k}) {n} x {s}x{s} fp32 = {n * s * s / 1e6:.2f}M params"
                                  for k, (n, s) in meta["configs"].items()),
        "- floor = 4 (3 + 2 S) bytes/param / copy bandwidth (S = param-sized state tensors); "
        "x AdamW = / torch fused AdamW (foreach where fused is unavailable), timed in windows "
        "alternating with the member's (the AdamW rows: measured alone at the run's start); "
        "second-order rows (c) are amortized over windows of 10 steps holding one refresh; "
        "mem = peak transient memory of a step in parameter-sized buffers (CUDA).",
        "",
        "| run | config | member | impl | ms/step | S | x floor | x AdamW | "
        "pytorch-optimizer ms | ours / p-o | HeavyBall ms | ours / HB | first step s | mem |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fl = f"{r['ms'] / r['floor_ms']:.2f}" if r.get("floor_ms") else "-"
        po = f"{r['po_ms']:.3f}" if r.get("po_ms") else "-"
        ratio = f"{r['ms'] / r['po_ms']:.2f}" if r.get("po_ms") else "-"
        mem = f"{r['mem']:.2f}" if r.get("mem") is not None else "-"
        hb = f"{r['hb_ms']:.3f}" if r.get("hb_ms") else "-"
        hb_ratio = f"{r['ms'] / r['hb_ms']:.2f}" if r.get("hb_ms") else "-"
        out.append(f"| {r.get('run', 1)} | {r['config']} | {r['member']} | {r['impl']} | "
                   f"{r['ms']:.3f} | {r['S']} | "
                   f"{fl} | {r['ms'] / r['adamw_ms']:.2f} | {po} | {ratio} | {hb} | {hb_ratio} | "
                   f"{r['first_s']:.2f} | {mem} |")
    if skipped:
        out += ["", "Not measured (time cap or error): " + "; ".join(skipped)]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = time.perf_counter() + args.budget_s
    device = torch.device(args.device)
    names = zoo.names() if args.members == "all" else args.members.split(",")
    unknown = sorted(set(names) - set(zoo.names()))
    if unknown:
        print(f"error: unknown member(s) {unknown}; choose from {zoo.names()}", file=sys.stderr)
        return 2
    cfgs = {k: v for k, v in configs(args.scale).items() if k in args.configs.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(device), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(), "configs": cfgs,
            "command": "python " + " ".join(sys.argv)}
    meta["bw"] = copy_bandwidth(device, max(n * s * s for n, s in cfgs.values()))
    store = out / "zoo_bench.json"
    saved = json.loads(store.read_text()) if args.resume and store.exists() else {}
    done = saved.get("rows", [])
    run = 1 + max((r.get("run", 1) for r in done), default=0)
    meta["runs"] = saved.get("meta", {}).get("runs", []) + [
        {"run": run, "command": meta["command"], "bw": meta["bw"]}]
    rows, skipped = list(done), list(saved.get("skipped", []))
    finished = {(r["config"], r["member"], r.get("asked", "auto")) for r in done}

    def save():
        write_atomic(store, json.dumps({"meta": meta, "rows": rows, "skipped": skipped},
                                       indent=1))
        write_atomic(out / "zoo.md", render(meta, rows, skipped))

    from tqdm import tqdm

    try:
        for cfg, (n, side) in cfgs.items():
            members = [m for m in names if (m in SECOND_ORDER) == (cfg == "c")]
            params = make_params(n, side, device)
            numel = sum(p.numel() for p in params)
            torch_ms = {}  # measured in every invocation: ratios are within one run
            for label, kw in (("fused", {"fused": True}), ("foreach", {"foreach": True})):
                try:
                    make_ref = lambda ps, kw=kw: torch.optim.AdamW(ps, **kw)  # noqa: E731
                    r = bench_optimizer(make_ref, params, device, args)
                    torch_ms[label] = r["ms"]
                    rows.append(dict(r, config=cfg, member=f"torch AdamW {label}", impl=label,
                                     run=run,
                                     floor_ms=4 * 7 * numel / meta["bw"] * 1e3,
                                     adamw_ms=r["ms"]))
                except RuntimeError as err:  # fused AdamW unsupported on this device
                    skipped.append(f"{cfg}: torch AdamW {label} ({str(err).splitlines()[0]})")
            adamw_ms = torch_ms.get("fused") or torch_ms["foreach"]
            ref_opt = torch.optim.AdamW(params, **({"fused": True} if "fused" in torch_ms
                                                   else {"foreach": True}))
            ref_opt.step()
            for row in rows:
                row.setdefault("adamw_ms", adamw_ms)
                row.setdefault("run", run)
            for name in tqdm(members, desc=f"config {cfg}", file=sys.stderr):
                if (cfg, name, args.impl) in finished:
                    continue
                left = deadline - time.perf_counter()
                if left < args.min_left_s:
                    skipped.append(f"{cfg}/{name} (time cap)")
                    continue
                hp = BENCH_HP.get(name, {}) if name == "sophia" or not args.default_hp else {}
                make = lambda ps, name=name, hp=hp: with_loss_closure(zoo.create(  # noqa: E731
                    name, ps, impl=args.impl, **hp))
                prep = lambda opt, ps, name=name: _prepare(name, opt, ps)  # noqa: E731
                po = _pytorch_optimizer_step(name, params, side, device, args, skipped, cfg)
                hb = heavyball_step(name, params, device, args, skipped, cfg)
                refs = [ref_opt.step] + [r for r in (po, hb) if r is not None]
                try:
                    r = bench_optimizer(make, params, device, args, prep, cfg == "c", refs)
                except Exception as err:  # report, keep benchmarking the others
                    skipped.append(f"{cfg}/{name} ({type(err).__name__}: {str(err)[:80]})")
                    continue
                impl = chosen_path(make(params[:1]), params[:1])
                row = dict(r, config=cfg, member=name, impl=impl, asked=args.impl, run=run,
                           adamw_ms=r["ref_ms"][0], po_ms=r["ref_ms"][1] if po else None,
                           hb_ms=r["ref_ms"][-1] if hb else None,
                           floor_ms=None if cfg == "c" else 4 * (3 + 2 * r["S"]) * numel
                           / meta["bw"] * 1e3)
                rows.append(row)
                for p in params:
                    p.grad = 1e-3 * torch.randn_like(p)
                save()
            del params, ref_opt
    except KeyboardInterrupt:
        skipped.append("interrupted (time cap)")
    save()
    print((out / "zoo.md").read_text())
    return 0


def _pytorch_optimizer_step(name, params, side, device, args, skipped, cfg):
    """pytorch-optimizer's version of ``name`` on ``params``, warmed up; its ``step``."""
    po_cls = pytorch_optimizer_factory(name)
    if po_cls is None:
        return None
    if name == "psgd" and side > 32:
        skipped.append(f"{cfg}/pytorch-optimizer Kron (its 5-operand einsum, contracted left "
                       "to right without opt_einsum, is O(side^4))")
        return None
    try:
        opt = po_cls(params, **PO_HP.get(name, {}))
        prepare = _po_prepare(name)
        if prepare is not None:
            prepare(opt, params)
        for _ in range(1 + max(1, args.warmup)):
            opt.step()
        sync(device)
        return opt.step
    except Exception as err:
        skipped.append(f"{cfg}/pytorch-optimizer {name} ({type(err).__name__})")
        return None


def heavyball_step(name, params, device, args, skipped, cfg):
    """HeavyBall's version of ``name`` on ``params``, warmed up and validated; its step
    (gradients handed back first: HeavyBall clears ``p.grad``), or None."""
    cls_name = HEAVYBALL.get(name)
    if cls_name is None:
        return None
    try:
        import heavyball
        opt = getattr(heavyball, cls_name)(params, lr=1e-3, **HB_HP.get(name, {}))
    except Exception as err:  # not installed, or no such class in this version
        skipped.append(f"{cfg}/HeavyBall {name} ({type(err).__name__})")
        return None
    grads = [p.grad for p in params]

    def step():
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for p, g in zip(params, grads):  # for the other optimizers timed on these tensors
            p.grad = g

    try:
        for _ in range(1 + max(1, args.warmup)):
            step()
        before = [p.detach().clone() for p in params[:2]]
        step()
        sync(device)
        if all(torch.equal(a, p) for a, p in zip(before, params[:2])):
            raise RuntimeError("its step did not move the parameters")
        return step
    except Exception as err:
        reason = " ".join(str(err).split())[:80]
        skipped.append(f"{cfg}/HeavyBall {name} ({type(err).__name__}: {reason})")
        return None


def _po_prepare(name):
    if name != "sophia":
        return None

    def prepare(opt, params):  # SophiaH estimates its Hessian from a create_graph gradient
        _prepare("sophia", opt, params)

    return prepare


if __name__ == "__main__":
    sys.exit(main())
