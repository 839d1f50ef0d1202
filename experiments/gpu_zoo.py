"""The zoo's GPU rows in one capped run (run by ``gpu.sh zoo``, 3.5 minutes).

    python experiments/gpu_zoo.py --out DIR             # on a CUDA device
    python experiments/gpu_zoo.py --out /tmp/z --device cpu --scale 0.02 --cap-s 150  # rehearsal

Phases, each with a hard share of ``--cap-s`` (whatever finished is in the tables):

1. *Cold compile*, in parallel worker processes (``--workers``): every elementwise member's
   ``impl="compiled"`` step on (a) 32 x 2048^2 and (b) 1024 x 256^2 fp32, in a fresh Inductor
   cache (``TORCHINDUCTOR_CACHE_DIR``, set by gpu.sh to a new folder per run); each first step
   is written to ``DIR/zoo_compile.jsonl`` (cold: nothing cached; the workers compile side by
   side, so a lone cold compile is somewhat faster). One more worker compiles the learned
   optimizer's fused step (``gpu_learned.py --quick``, rows in ``DIR/lo_cold/``); it may run
   on through the later phases (its few timed steps then share the device), and is stopped
   at the cap; ``gpu.sh lostep`` then measures the same step with the warm cache.
2. *Measure*, one process, members one after another (``zoo_step_bench.py --impl compiled``):
   median step time against the byte floor (bytes read and written per parameter x parameters
   / measured copy bandwidth) and against torch's fused AdamW in alternating windows, with the
   warm-cache first step; then the members whose default is torch's fused kernel
   (``--impl auto``). Rows in ``DIR/zoo.md`` and ``DIR/zoo_bench.json``.
3. *Second-order members* (shampoo, soap, psgd, muon) on (c) 8 x 1024^2 at their default
   preconditioner frequencies, amortized over windows of 10 steps, against fused AdamW.
4. ``DIR/zoo_compile.md``: cold against warm first step per member and configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo_step_bench  # noqa: E402

SECOND_ORDER = ["muon", "soap", "psgd", "shampoo"]
# members whose default path is torch's own fused kernel (no compile)
TORCH_FUSED = ["adamw", "adam", "amsgrad", "xgrad_adam", "xgrad_adamw"]
# shares of the cap: cold compile; measure (a) compiled, torch-fused members, (b) compiled;
# the second-order members get what is left (about 0.12)
SHARES = (0.33, 0.36, 0.05, 0.14)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cap-s", type=float, default=210.0, help="total wall-clock cap")
    ap.add_argument("--device", default="cuda", help="cpu only to rehearse at a small --scale")
    ap.add_argument("--scale", default="1", help="side-length factor (1 = the issue's sizes)")
    ap.add_argument("--workers", type=int, default=8, help="parallel cold-compile processes")
    ap.add_argument("--members", default="all", help="comma-separated ids, or 'all' "
                    "(every elementwise member)")
    ap.add_argument("--no-lo", action="store_true", help="skip the LO cold-compile worker")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # members of one worker
    return ap.parse_args(argv)


def compiled_members(names: list[str]) -> list[str]:
    return [n for n in names if n not in TORCH_FUSED]


def worker(args) -> int:
    """Phase 1 in one process: the first (cold) compiled step of each member, per config."""
    import torch

    from metaopt import zoo

    device = torch.device(args.device)
    cfgs = zoo_step_bench.configs(float(args.scale))
    log = Path(args.out) / "zoo_compile.jsonl"
    for name in args.worker.split(","):
        for cfg in ("a", "b"):
            n, side = cfgs[cfg]
            params = zoo_step_bench.make_params(n, side, device)
            hp = zoo_step_bench.BENCH_HP.get(name, {}) if name == "sophia" else {}
            opt = zoo_step_bench.with_loss_closure(zoo.create(name, params, impl="compiled",
                                                              **hp))
            zoo_step_bench._prepare(name, opt, params)
            t0 = time.perf_counter()
            opt.step()
            zoo_step_bench.sync(device)
            first = time.perf_counter() - t0
            with log.open("a") as f:
                f.write(json.dumps({"member": name, "config": cfg, "cold_s": first}) + "\n")
            del opt, params
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


def cold_compile(args, names: list[str], seconds: float) -> subprocess.Popen | None:
    """Phase 1: ``--workers`` processes, members dealt round-robin, killed at the deadline.
    The LO worker (its compile can take minutes) keeps running; it is returned."""
    script = str(Path(__file__).resolve())
    common = ["--out", args.out, "--device", args.device, "--scale", args.scale]
    procs = []
    for k in range(args.workers):
        mine = names[k::args.workers]
        if mine:
            procs.append(subprocess.Popen([sys.executable, script, "--worker", ",".join(mine),
                                           *common]))
    lo = None
    if not args.no_lo:
        cmd = [sys.executable, str(Path(script).with_name("gpu_learned.py")), "--quick",
               "--out", str(Path(args.out) / "lo_cold")]
        lo = subprocess.Popen(cmd + (["--smoke"] if args.device == "cpu" else []))
    deadline = time.perf_counter() + seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    print(f"cold compile phase: {time.perf_counter() - deadline + seconds:.0f} s", flush=True)
    return lo


def compile_table(out: Path) -> None:
    """``zoo_compile.md``: cold (phase 1) against warm (phase 2) first step."""
    cold = {}
    log = out / "zoo_compile.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            cold[(r["member"], r["config"])] = r["cold_s"]
    store = out / "zoo_bench.json"
    rows = json.loads(store.read_text())["rows"] if store.exists() else []
    warm = {(r["member"], r["config"]): r["first_s"] for r in rows if r.get("asked") ==
            "compiled"}
    lines = ["# First compiled step of each zoo member: cold and warm Inductor cache", "",
             "cold: a fresh cache, members compiled side by side in parallel worker processes; "
             "warm: the same step in a later process with that cache (dynamo still traces).",
             "", "| member | config | cold s | warm s |", "|---|---|---:|---:|"]
    for key in sorted(set(cold) | set(warm)):
        c, w = cold.get(key), warm.get(key)
        lines.append(f"| {key[0]} | {key[1]} | {'-' if c is None else f'{c:.1f}'} | "
                     f"{'-' if w is None else f'{w:.2f}'} |")
    zoo_step_bench.write_atomic(out / "zoo_compile.md", "\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import torch

    from metaopt import zoo

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: gpu_zoo.py needs CUDA; run experiments/zoo_cpu_bench.py on CPU",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("zoo_compile.jsonl", "zoo_bench.json"):
        (out / stale).unlink(missing_ok=True)
    names = ([n for n in zoo.names() if zoo.rule(n).caps.elementwise] if args.members == "all"
             else args.members.split(","))
    print("inductor cache:", os.environ.get("TORCHINDUCTOR_CACHE_DIR", "(default)"), flush=True)
    end = time.perf_counter() + args.cap_s
    left = lambda: max(1.0, end - time.perf_counter())  # noqa: E731
    lo = cold_compile(args, compiled_members(names), args.cap_s * SHARES[0])
    common = ["--device", args.device, "--scale", args.scale, "--steps", "20", "--windows", "5",
              "--warmup", "3", "--min-left-s", "2", "--out", args.out]
    compiled = ",".join(compiled_members(names))
    auto = ",".join(n for n in names if n in TORCH_FUSED)
    runs = [  # (share of the cap, arguments); each run resumes the table of the ones before
        (SHARES[1], ["--members", compiled, "--configs", "a", "--impl", "compiled"]),
        (SHARES[2], ["--members", auto, "--configs", "a,b", "--impl", "auto"]),
        (SHARES[3], ["--members", compiled, "--configs", "b", "--impl", "compiled"]),
        (None, ["--members", ",".join(SECOND_ORDER), "--configs", "c", "--default-hp",
                "--steps", "10", "--windows", "3", "--warmup", "1"]),
    ]
    try:
        for i, (share, extra) in enumerate(runs):
            if extra[1]:
                budget = left() - 2 if share is None else min(left(), args.cap_s * share)
                zoo_step_bench.main(common + extra + ["--budget-s", str(max(1.0, budget))]
                                    + (["--resume"] if i else []))
    finally:
        if lo is not None and lo.poll() is None:  # the LO's cold compile ran out of time
            lo.kill()
        compile_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
