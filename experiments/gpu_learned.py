"""GPU step overhead of MLPLOpt (small_fc_lopt-sized: 17 features, 32-32 MLP) against fused AdamW.

    python experiments/gpu_learned.py --out DIR      # writes DIR/learned.md and prints it
    python experiments/gpu_learned.py --cpu --out DIR    # the CPU version (4 x 1024^2)
    python experiments/gpu_learned.py --quick --out DIR  # fused AdamW and the fused hidden-16
                                                         # step only (gpu.sh part lostep)

A 105M-parameter model as 50 fp32 tensors of [1448 x 1448] with random gradients (the optimizer
step alone). Measured, each after warm-up, in one run on one device:
  * ``torch.optim.AdamW(fused=True)``;
  * the LO eager (``MLPLOpt`` default chunking: features never materialised for a whole tensor);
  * the LO's fused step (``learned/fused_mlp.py``: the MLP written unit by unit so Inductor
    keeps features and hidden units in registers), hidden 32 and hidden 16, with its
    agreement with the eager step;
  * the LO per-tensor step under plain ``torch.compile`` (features and hidden layers
    materialised as matrices);
plus optimizer-state memory; then, if time is left, the seconds per PES outer step of a
μLO_S-sized meta-training (8 tasks, truncation 20, width-128 ``mlp_digits`` in μP, hidden 32),
extrapolated to μLO_S's 5000 outer steps. Every finished row is written at once, so a timeout
keeps what was measured (gpu.sh caps this part at 240 s: the fused step compiles for 1-2 min).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learned import MLPLOpt  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402
from metaopt.tasks import ParamInfo  # noqa: E402

N_TENSORS, SIDE = 50, 1448
HIDDEN16 = MLPLOpt(hidden=16, step_mult=0.01, base_fan_in=128)  # the hidden-16 rows' LO


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps: int) -> float:
    """Mean seconds per call of ``fn`` after two warm-up calls (synchronised; a compiled
    function's second call still pays one-off costs)."""
    fn()
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def peak_since(start: int) -> float:
    return (torch.cuda.max_memory_allocated() - start) / 1e9 if torch.cuda.is_available() else 0.0


def mem_now() -> int:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return 0


class Report:
    def __init__(self, out: Path):
        self.out, self.rows, self.notes = out, [], []
        from metaopt.bench.machine import command_line, machine_line
        self.head = [
            f"Command: `{command_line()}`",
            "",
            "# MLPLOpt step overhead" + (" on the GPU" if torch.cuda.is_available() else ""),
            "",
            f"{machine_line('cuda' if torch.cuda.is_available() else 'cpu')}. "
            f"Model: {N_TENSORS} fp32 tensors of [{SIDE} x {SIDE}] = "
            f"{N_TENSORS * SIDE * SIDE / 1e6:.1f}M params; optimizer step only, random gradients. "
            "Script: `experiments/gpu_learned.py`.",
            "",
            "| optimizer step | ms / step | x fused AdamW | state (GB) | note |",
            "|---|---:|---:|---:|---|",
        ]

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.write()

    def add(self, name, seconds, state_gb, note=""):
        self.rows.append((name, seconds, state_gb, note))
        self.write()

    def write(self):
        ref = self.rows[0][1] if self.rows else None
        lines = list(self.head)
        for name, s, gb, note in self.rows:
            ratio = f"{s / ref:.1f}" if (ref and s == s) else "-"
            ms = f"{s * 1e3:.2f}" if s == s else "-"
            lines.append(f"| {name} | {ms} | {ratio} | {gb:.2f} | {note} |")
        lines += [""] + self.notes
        text = "\n".join(lines) + "\n"
        write_atomic(self.out, text)
        return text


def meta_training_speed(rep: Report, dev, steps: int) -> None:
    """Seconds per PES outer step, μLO_S-sized, on ``dev``."""
    from learned import SingleTask, meta_train
    from metaopt import tasks

    task = tasks.get("mlp_digits", width=128, depth=2, param="mup", base_width=128, device=dev)
    lopt = MLPLOpt(hidden=32, step_mult=0.01, base_fan_in=128)
    family = SingleTask(task, horizon=1000)
    kw = dict(method="pes", truncation=20, num_tasks=8, device=dev, progress=False)
    meta_train(lopt, family, 1, **kw)  # warm-up
    sync()
    t0 = time.perf_counter()
    meta_train(lopt, family, steps, **kw)
    sync()
    per = (time.perf_counter() - t0) / steps
    rep.note(f"Meta-training speed (PES, 8 tasks x 2 particles vmapped, truncation 20, width-128 "
             f"μP mlp_digits, MLPLOpt hidden 32, eager): {per:.2f} s per outer step, so μLO_S's "
             f"5000 outer steps would take {5000 * per / 3600:.1f} h on this device.")


def fused_rows(rep: Report, params, grads, states, info, dev, lopt, theta,
               hiddens=(32, 16), state_gb: float | None = None, cpu_kernels: bool = True) -> None:
    """The fused step (features, MLP and update in registers: on a CPU the C kernels of
    learned/fused_mlp_cpu.py, else Inductor's of learned/fused_mlp.py, or Inductor's on a CPU
    too with ``cpu_kernels=False``) for the same LO (hidden 32) and for hidden 16, checked
    against the eager step on one tensor."""
    from learned import fused_mlp_cpu
    from learned.fused_mlp import fused_rule_step

    c_path = cpu_kernels and fused_mlp_cpu.supports(params[0], grads[0])
    label = ("C kernels, learned/fused_mlp_cpu.py" if c_path
             else "Inductor, learned/fused_mlp.py")
    for hidden in hiddens:
        lo = lopt if hidden == 32 else HIDDEN16
        th = theta if hidden == 32 else {
            k: v.to(dev) for k, v in lo.init_theta(torch.Generator().manual_seed(0)).items()}
        fused = fused_rule_step(lo, th, cpu_kernels=cpu_kernels)
        hp = {"info": info}
        x0, s0 = params[0].clone(), {k: v.clone() for k, v in states[0].items()}
        x1, s1 = params[0].clone(), {k: v.clone() for k, v in states[0].items()}
        t0 = time.perf_counter()
        fused([x1], [grads[0]], [s1], hp, [1])
        sync()
        compile_s = time.perf_counter() - t0
        _eager_step(lo, th, x0, grads[0], s0, info)
        d0, d1 = params[0] - x0, params[0] - x1
        rel = float((d0 - d1).abs().max() / d0.abs().max().clamp_min(1e-30))
        base_mem = mem_now()
        t = timed(lambda: fused(params, grads, states, hp, [1] * len(params)), 5)
        peak = peak_since(base_mem)
        gb = rep.rows[1][2] if state_gb is None else state_gb
        rep.add(f"MLPLOpt fused ({label}), hidden {hidden}", t, gb,
                f"compile {compile_s:.0f} s; max rel. step diff vs eager "
                f"{rel:.1e}; transient peak +{peak:.2f} GB")


def compute_floor_note(rep: Report, lopts) -> None:
    """The MLP's arithmetic floor: its multiply-adds per coordinate
    (:func:`learned.fused_mlp_cpu.mlp_multiply_adds`) at the multiply-add rate of a float32
    ``torch.mm`` (1024^3, same threads) measured now."""
    from learned.fused_mlp_cpu import mlp_multiply_adds

    a = torch.randn(1024, 1024)
    rate = 1024 ** 3 / timed(lambda: torch.mm(a, a), 5)  # multiply-adds per second
    n = N_TENSORS * SIDE * SIDE
    parts = []
    for lo in lopts:
        fmas = mlp_multiply_adds(lo)
        floor = n * fmas / rate
        parts.append(f"hidden {lo.hidden}: {fmas} multiply-adds per coordinate, "
                     f"{floor * 1e3:.1f} ms = {floor / rep.rows[0][1]:.1f}x fused AdamW")
    rep.note(f"Arithmetic floor of the per-coordinate MLP at torch.mm's rate on this machine "
             f"({rate / 1e9:.1f} G multiply-adds/s, float32, {torch.get_num_threads()} "
             f"threads): " + "; ".join(parts) + ". No kernel can step faster than this.")


def _eager_step(lo, theta, x, g, s, info) -> None:
    delta, new = lo.update(theta, g, x, s, 1, info)
    x.sub_(delta)
    for k, v in new.items():
        s[k].copy_(v)


T0 = time.perf_counter()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks the code)")
    p.add_argument("--quick", action="store_true",
                   help="only fused AdamW and the fused hidden-16 step (with state sizes)")
    p.add_argument("--cpu", action="store_true",
                   help="the CPU version: 4 tensors of [1024 x 1024], no meta-training timing")
    a = p.parse_args(argv)
    global N_TENSORS, SIDE
    if a.smoke:
        N_TENSORS, SIDE = 2, 64
    elif a.cpu:
        N_TENSORS, SIDE = 4, 1024
    elif not torch.cuda.is_available():
        print("gpu_learned: CUDA is not available (use --cpu or --smoke)", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out / ("learned_step_cpu.md" if a.cpu else "lo_step.md" if a.quick
                         else "learned.md"))
    dev = torch.device("cpu" if (a.smoke or a.cpu) else "cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    params = [torch.randn(SIDE, SIDE, device=dev, generator=gen) * 0.02 for _ in range(N_TENSORS)]
    grads = [torch.randn(SIDE, SIDE, device=dev, generator=gen) * 1e-3 for _ in range(N_TENSORS)]
    gb = 1e9
    try:
        leaves = [x.clone().requires_grad_(True) for x in params]
        for leaf, g in zip(leaves, grads):
            leaf.grad = g
        adamw = torch.optim.AdamW(leaves, lr=1e-3, fused=True)  # CPU has a fused kernel too
        t = timed(adamw.step, 20)
        state = sum(v.numel() * v.element_size() for s in adamw.state.values()
                    for v in s.values() if torch.is_tensor(v))
        rep.add("AdamW (fused=True)", t, state / gb)
        del adamw, leaves

        info = ParamInfo("w", "hidden", SIDE, SIDE)
        lopt = MLPLOpt(hidden=32, step_mult=0.01, base_fan_in=128)
        theta = {k: v.to(dev) for k, v in lopt.init_theta(torch.Generator().manual_seed(0)).items()}
        states = [lopt.init(x, info) for x in params]
        state = sum(v.numel() * v.element_size() for s in states for v in s.values())
        step_t = torch.ones((), device=dev)
        if a.quick:
            fused_rows(rep, params, grads, states, info, dev, lopt, theta, hiddens=(16,),
                       state_gb=state / gb)
            return 0

        def one(lo, x, g, s):
            delta, new = lo.update(theta, g, x, s, step_t, info)
            x.sub_(delta)
            for k, v in new.items():
                s[k].copy_(v)

        def eager():
            for x, g, s in zip(params, grads, states):
                one(lopt, x, g, s)

        base_mem = mem_now()
        t = timed(eager, 3)
        peak = peak_since(base_mem)
        rep.add("MLPLOpt eager (chunks of 2^18 coords)", t, state / gb,
                f"transient peak +{peak:.2f} GB")

        fused_rows(rep, params, grads, states, info, dev, lopt, theta)
        if dev.type == "cpu":
            fused_rows(rep, params, grads, states, info, dev, lopt, theta, hiddens=(16,),
                       cpu_kernels=False)
            compute_floor_note(rep, (HIDDEN16, lopt))
        whole = MLPLOpt(hidden=32, step_mult=0.01, base_fan_in=128, chunk_elems=SIDE * SIDE)
        compiled_one = torch.compile(lambda x, g, s: one(whole, x, g, s), dynamic=False)
        # agreement on a copy of one tensor
        x0, s0 = params[0].clone(), {k: v.clone() for k, v in states[0].items()}
        x1, s1 = params[0].clone(), {k: v.clone() for k, v in states[0].items()}
        t0 = time.perf_counter()
        compiled_one(x1, grads[0], s1)
        sync()
        compile_s = time.perf_counter() - t0
        one(lopt, x0, grads[0], s0)
        d0, d1 = params[0] - x0, params[0] - x1
        rel = float((d0 - d1).abs().max() / d0.abs().max().clamp_min(1e-30))

        def compiled():
            for x, g, s in zip(params, grads, states):
                compiled_one(x, g, s)

        base_mem = mem_now()
        t = timed(compiled, 5)
        peak = peak_since(base_mem)
        rep.add("MLPLOpt torch.compile per tensor", t, state / gb,
                f"compile {compile_s:.0f} s; max rel. step diff vs eager {rel:.1e}; "
                f"transient peak +{peak:.2f} GB")
        del params, grads, states
        if not a.cpu and time.perf_counter() - T0 < 45:
            meta_training_speed(rep, dev, 2 if a.smoke else 3)
    except KeyboardInterrupt:
        rep.rows.append(("(stopped by the time cap here)", float("nan"), 0.0, ""))
    finally:
        print(rep.write())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
