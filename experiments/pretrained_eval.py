"""Stage ``evaluate`` / ``report`` of ``experiments/pretrained.py``: the pretrained μLO on held-out
problems against tuned AdamW and SOAP, and width transfer.

    python experiments/pretrained.py --stage evaluate --device cuda --workers 6 --results DIR
    python experiments/pretrained.py --stage report --results DIR --work WORK \
        --out experiments/results/pretrained.md

Held-out problems (never run during meta-training or meta-validation): new data or new
architectures and objectives, ``EVAL_STEPS`` = 4x the meta-training horizon, 8-16x wider than
the meta-training widths (32-64). Each is an ``nn.Module`` trained by a torch optimizer; the LO
is the user's path, ``learned.load(theta_file, model, lr=...)`` (roles inferred from the module):

* ``gru_markov``: byte-level GRU language model (embedding 64, hidden 512) on a synthetic
  order-2 Markov source (32 symbols), windows of 32, batch 32 (recurrent: new architecture,
  new data);
* ``ae_digits``: MLP autoencoder 64-1024-32-1024-64 (ReLU), squared error, batch 64;
* ``resmlp_synth``: residual MLP (width 512, two pre-LayerNorm blocks) on a synthetic 10-class
  problem (scikit-learn's ``make_classification``, 4096 x 40, 5% label noise), batch 64;
* ``mlp_diabetes``: MLP 10-1024-1024-1 (GELU) regressing scikit-learn's diabetes target
  (standardised), squared error, batch 32;
* ``lstm_pydoc``: byte-level LSTM language model (embedding and hidden 256) on the English
  prose of Python's documentation topics (``pydoc_data``), windows of 32, batch 32.

``ae_digits`` reads the digits, which the meta-training family (an MLP autoencoder of the
digits among its members) also reads: it is shown as a wider/longer transfer problem but left
out of the held-out geometric means (``SAME_DATA``).

Score: the final training loss on the whole training set (GRU: 512 fixed windows), inf when
not finite. Learning rates: AdamW (torch, weight decay 0.01) and SOAP (the zoo's) on
``LR_GRID`` (half decades), the LO's multiplier on ``MULT_GRID`` (half decades around 1);
a grid whose best point (geometric mean over seeds) is at an edge is extended by one point
there, up to twice. Baselines are tuned on the very runs they are scored on; the LO at its
default lr gets no tuning. Width transfer: ``mlp_digits`` (SP) at 32x the meta-training base
width (2048) for the meta-training horizon, μLO (per-layer scales) against its SP twin (the
same theta without per-layer scales) and tuned AdamW.
"""
from __future__ import annotations

import hashlib
import json
import math
import queue
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import learned  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402
from metaopt import tasks, zoo  # noqa: E402

EVAL_STEPS = 400
SEEDS = (0, 1, 2)
LR_GRID = tuple(10 ** (e / 2) for e in range(-8, -1))        # 1e-4 ... 1e-1
MULT_GRID = tuple(10 ** (e / 2) for e in range(-2, 3))       # 0.1 ... 10


# ------------------------------------------------------------------ held-out problems
class Problem:
    """Data on a device, a model builder, a loss and a fixed scoring set."""

    def __init__(self, name, build, loss, x, y, batch, windows=None):
        self.name, self.build, self.loss, self.x, self.y = name, build, loss, x, y
        self.batch, self.windows = batch, windows

    def sample(self, gen):
        if self.windows is not None:  # a sequence: random windows of context + 1
            n = self.x.numel() - self.windows - 1
            idx = torch.randint(n, (self.batch,), generator=gen, device="cpu").to(self.x.device)
            return self._windows(idx)
        idx = torch.randint(len(self.x), (self.batch,), generator=gen, device="cpu")
        idx = idx.to(self.x.device)
        return self.x[idx], self.y[idx] if self.y is not None else self.x[idx]

    def _windows(self, starts):
        ar = torch.arange(self.windows + 1, device=self.x.device)
        seq = self.x[starts[:, None] + ar]
        return seq[:, :-1], seq[:, 1:]

    def score_batch(self):
        if self.windows is not None:
            n = self.x.numel() - self.windows - 1
            return self._windows(torch.linspace(0, n - 1, 512, device=self.x.device).long())
        return self.x, self.y if self.y is not None else self.x


class GRULM(nn.Module):
    def __init__(self, vocab=32, emb=64, hidden=512):
        super().__init__()
        self.emb, self.gru = nn.Embedding(vocab, emb), nn.GRU(emb, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x):
        return self.head(self.gru(self.emb(x))[0])


class ResMLP(nn.Module):
    def __init__(self, d_in, width, classes, blocks=2):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width),
                                                  nn.ReLU(), nn.Linear(width, width))
                                    for _ in range(blocks))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(self.norm(h))


def markov_text(n=100_000, vocab=32, seed=0) -> torch.Tensor:
    """A sequence from a random order-2 Markov chain (sparse Dirichlet(0.1) transitions)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # Dirichlet.sample draws from the global generator
    probs = torch.distributions.Dirichlet(torch.full((vocab,), 0.1)).sample((vocab * vocab,))
    u = torch.rand(n, generator=g)
    cdf = probs.cumsum(1)
    seq = [0, 1]
    for i in range(n - 2):
        row = cdf[seq[-2] * vocab + seq[-1]]
        seq.append(min(int(torch.searchsorted(row, u[i])), vocab - 1))
    return torch.tensor(seq)


def _standard(x):
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-8)


def make_problem(name: str, device, width: int = 1024) -> Problem:
    """Problem ``name`` at ``width`` (GRU hidden units, autoencoder and MLP hidden layers;
    the residual MLP at half of it)."""
    import numpy as np
    ce, mse = nn.functional.cross_entropy, nn.functional.mse_loss
    if name == "gru_markov":
        text = markov_text().to(device)

        def loss(model, batch):
            x, y = batch
            return ce(model(x).reshape(-1, 32), y.reshape(-1))
        return Problem(name, lambda: GRULM(hidden=width // 2), loss, text, None, 32, windows=32)
    if name == "ae_digits":
        from metaopt.tasks.digits_data import digits_arrays
        x = torch.as_tensor(digits_arrays()[0], dtype=torch.float32, device=device)

        def build():
            return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 32),
                                 nn.ReLU(), nn.Linear(32, width), nn.ReLU(),
                                 nn.Linear(width, 64))
        return Problem(name, build, lambda m, b: mse(m(b[0]), b[1]), x, None, 64)
    if name == "resmlp_synth":
        from sklearn.datasets import make_classification
        xs, ys = make_classification(n_samples=4096, n_features=40, n_informative=20,
                                     n_classes=10, flip_y=0.05, random_state=0)
        x = _standard(torch.as_tensor(xs, dtype=torch.float32)).to(device)
        y = torch.as_tensor(ys, dtype=torch.long, device=device)
        return Problem(name, lambda: ResMLP(40, width // 2, 10), lambda m, b: ce(m(b[0]), b[1]),
                       x, y, 64)
    if name == "mlp_diabetes":
        from sklearn.datasets import load_diabetes
        xs, ys = load_diabetes(return_X_y=True)
        x = _standard(torch.as_tensor(xs, dtype=torch.float32)).to(device)
        y = _standard(torch.as_tensor(np.asarray(ys), dtype=torch.float32)[:, None]).to(device)

        def build():
            return nn.Sequential(nn.Linear(10, width), nn.GELU(), nn.Linear(width, width),
                                 nn.GELU(), nn.Linear(width, 1))
        return Problem(name, build, lambda m, b: mse(m(b[0]), b[1]), x, y, 32)
    if name == "lstm_pydoc":
        from metaopt.tasks.stdlib_text import pydoc_corpus
        from metaopt.tasks.text_lm import RecurrentLM, next_byte_loss
        train, _ = pydoc_corpus(300_000)
        text = torch.frombuffer(bytearray(train), dtype=torch.uint8).long().to(device)
        return Problem(name, lambda: RecurrentLM("lstm", width // 4),
                       lambda m, b: next_byte_loss(m(b[0]), b[1]), text, None, 32, windows=32)
    raise ValueError(f"unknown held-out problem {name!r}")


PROBLEMS = ("gru_markov", "lstm_pydoc", "resmlp_synth", "mlp_diabetes", "ae_digits")
#: problems on the meta-training family's data (the digits): evaluated and shown, but left out
#: of the held-out geometric means and targets
SAME_DATA = frozenset({"ae_digits"})


# ------------------------------------------------------------------ one run
def make_optimizer(kind: str, model: nn.Module, lr: float, theta_file: str | None):
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    if kind == "soap":
        return zoo.create("soap", model.parameters(), lr=lr)
    if kind == "lo":
        return learned.load(theta_file, model, lr=lr)
    raise ValueError(kind)


def run_problem(problem: Problem, kind: str, lr: float, seed: int, steps: int,
                theta_file: str | None = None) -> float:
    torch.manual_seed(seed)
    model = problem.build().to(problem.x.device)
    opt = make_optimizer(kind, model, lr, theta_file)
    gen = torch.Generator().manual_seed(1000 + seed)
    return train_and_score(opt, lambda: problem.loss(model, problem.sample(gen)),
                           lambda: problem.loss(model, problem.score_batch()), steps)


def train_and_score(opt, batch_loss, final_loss, steps: int) -> float:
    """``steps`` optimizer steps on ``batch_loss()``, then ``final_loss()``; inf as soon as a
    loss is not finite."""
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = batch_loss()
        if not torch.isfinite(loss):
            return float("inf")
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(final_loss())
    return final if math.isfinite(final) else float("inf")


def run_width(kind: str, lr: float, seed: int, device, theta_file: str | None, width: int,
              steps: int) -> float:
    """mlp_digits (SP) at ``width``: AdamW, 'mulo' (the theta file's LO with per-layer scales
    from the task's param_info) or 'splo' (the same theta without per-layer scales)."""
    task = tasks.get("mlp_digits", width=width, depth=2, param="sp", base_width=64,
                     batch_size=32, device=device)
    params = [p.detach().clone().requires_grad_(True) for p in task.init(task.generator(seed))]
    if kind == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    else:
        lopt, theta = learned.load_lopt(theta_file)
        if kind == "splo":
            lopt = learned.MLPLOpt(**{**lopt.config(), "mup": False})
        opt = learned.LearnedOptimizer(params, lopt, theta, lr=lr,
                                       infos=task.param_info if kind == "mulo" else None)
    gen = task.generator(1000 + seed)
    return train_and_score(opt, lambda: task.loss(params, task.sample_batch(gen)),
                           lambda: task.loss(params, (task.x_train, task.y_train)), steps)


def run_job(job: dict, device: str, problems: dict) -> float:
    if job["problem"] == "width":
        return run_width(job["kind"], job["lr"], job["seed"], device, job.get("theta"),
                         job["width"], job["steps"])
    key = (job["problem"], job["pwidth"])
    if key not in problems:
        problems[key] = make_problem(job["problem"], device, job["pwidth"])
    return run_problem(problems[key], job["kind"], job["lr"], job["seed"], job["steps"],
                       job.get("theta"))


def job_key(job: dict) -> str:
    return "|".join(f"{k}={job[k]}" for k in sorted(job))


# ------------------------------------------------------------------ running many jobs
def _worker(device: str, todo, done) -> None:
    torch.set_num_threads(1)
    problems: dict = {}
    while True:
        job = todo.get()
        if job is None:
            return
        t0 = time.perf_counter()
        try:
            value = run_job(job, device, problems)
        except Exception as e:  # noqa: BLE001 - a failed run is recorded, not fatal
            value = f"error: {type(e).__name__}: {e}"
        done.put((job, value, time.perf_counter() - t0))


class Pool:
    """``workers`` processes (spawned once) that run jobs; one worker: in this process."""

    def __init__(self, device: str, workers: int):
        self.device, self.workers, self.problems = device, workers, {}
        self.procs = []
        if workers > 1:
            import torch.multiprocessing as mp
            ctx = mp.get_context("spawn")
            self.todo, self.done = ctx.Queue(), ctx.Queue()
            self.procs = [ctx.Process(target=_worker, args=(device, self.todo, self.done),
                                      daemon=True) for _ in range(workers)]
            for p in self.procs:
                p.start()

    def map(self, jobs: list[dict]):
        """Yield ``(job, value, seconds)`` as jobs finish."""
        if not self.procs:
            for job in jobs:
                t0 = time.perf_counter()
                yield job, run_job(job, self.device, self.problems), time.perf_counter() - t0
            return
        for job in jobs:
            self.todo.put(job)
        for _ in jobs:
            while True:
                try:
                    yield self.done.get(timeout=5)
                    break
                except queue.Empty:
                    if not any(p.is_alive() for p in self.procs):
                        raise RuntimeError("every worker died") from None

    def close(self) -> None:
        for _ in self.procs:
            self.todo.put(None)
        for p in self.procs:
            p.join(timeout=10)


def run_jobs(jobs: list[dict], cache: dict, cache_path: Path, pool: Pool) -> None:
    """Run the jobs not yet in ``cache`` on ``pool``, saving the cache as they finish."""
    jobs = [j for j in jobs if job_key(j) not in cache]
    if not jobs:
        return
    print(f"{len(jobs)} runs on {max(1, pool.workers)} workers", flush=True)
    for n, (job, value, secs) in enumerate(pool.map(jobs)):
        cache[job_key(job)] = [value, secs]
        _save(cache_path, cache)


def _save(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data))


def value(cache, job) -> float:
    v = cache[job_key(job)][0]
    return v if isinstance(v, float) else float("inf")


def geomean(xs) -> float:
    xs = list(xs)
    if any(not math.isfinite(x) for x in xs):
        return float("inf")
    return math.exp(sum(math.log(max(x, 1e-30)) for x in xs) / len(xs))


def tune(make_job, grid, cache, cache_path, pool, seeds, extend=2):
    """Best point of ``grid`` (geometric mean over seeds), extending the grid by a half
    decade at an edge holding the best, up to ``extend`` times. Returns (best, grid)."""
    grid = list(grid)
    for _ in range(extend + 1):
        run_jobs([make_job(x, s) for x in grid for s in seeds], cache, cache_path, pool)
        scores = {x: geomean(value(cache, make_job(x, s)) for s in seeds) for x in grid}
        best = min(grid, key=lambda x: scores[x])
        if best == grid[0]:
            grid.insert(0, grid[0] / math.sqrt(10))
        elif best == grid[-1]:
            grid.append(grid[-1] * math.sqrt(10))
        else:
            return best, grid
    return best, grid


# ------------------------------------------------------------------ the theta files cached
def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stale_thetas(cache: dict, paths: list[str]) -> list[str]:
    """The theta files whose contents differ from those the cache's runs used (recorded in the
    cache as ``theta_sha256=<path>`` the first time); records the others."""
    stale = []
    for path in paths:
        key, digest = f"theta_sha256={path}", file_digest(path)
        if cache.setdefault(key, digest) != digest:
            stale.append(path)
    return stale


# ------------------------------------------------------------------ the stages
def evaluate_stage(work: Path, a) -> int:
    """Run every measurement (cached in ``a.results/eval.json``) for ``a.theta`` and the
    snapshots ``a.snapshots``."""
    absent = [str(f) for f in (a.theta, *a.snapshots) if not Path(f).is_file()]
    if absent:
        print(f"error: no theta file at {', '.join(absent)}", file=sys.stderr)
        return 2
    out = Path(a.results)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "eval.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    device, workers = a.device, a.workers
    steps, pw = a.eval_steps, a.eval_width
    lo_grid = tuple(float(x) for x in a.lo_grid.split(","))
    seeds = SEEDS[:a.seeds]
    problems = [p for p in a.problems.split(",") if p]  # "": width transfer only
    theta = str(a.theta)
    stale = stale_thetas(cache, [theta, *map(str, a.snapshots)])
    if stale:
        print(f"error: {cache_path} holds runs of other contents at {', '.join(stale)} (a theta "
              f"file changed since); use a new --results folder", file=sys.stderr)
        return 2
    t0 = time.time()
    meta = {"device": device, "torch": torch.__version__, "seeds": list(seeds),
            "steps": steps, "problems": problems, "theta": theta, "width": a.width,
            "pwidth": pw, "soap": a.soap,
            "width_size": a.width_size, "width_steps": a.width_steps,
            "snapshots": list(a.snapshots), "seconds": None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
            "argv": sys.argv[1:]}
    (out / "eval_meta.json").write_text(json.dumps(meta, indent=1))  # also when cut short
    pool = Pool(device, workers)
    run = dict(cache=cache, cache_path=cache_path, pool=pool, seeds=seeds)
    # the LO's default-lr runs first, then the grids, then the snapshots
    run_jobs([dict(problem=p, kind="lo", lr=1.0, seed=s, steps=steps, theta=theta, pwidth=pw)
              for p in problems for s in seeds], cache, cache_path, pool)
    for p in problems:
        kinds = (("adamw", LR_GRID), ("lo", lo_grid)) + ((("soap", LR_GRID),) if a.soap else ())
        for kind, grid in kinds:
            best, _ = tune(lambda x, s, p=p, kind=kind: dict(
                problem=p, kind=kind, lr=x, seed=s, steps=steps, pwidth=pw,
                **({"theta": theta} if kind == "lo" else {})), grid, **run)
            print(f"{p} {kind}: best lr {best:.3g} ({time.time() - t0:.0f} s)", flush=True)
    run_jobs([dict(problem=p, kind="lo", lr=1.0, seed=s, steps=steps, theta=th, pwidth=pw)
              for th in a.snapshots for p in problems for s in seeds], cache, cache_path, pool)
    if a.width:
        wide = dict(problem="width", width=a.width_size, steps=a.width_steps)
        tune(lambda x, s: dict(wide, kind="adamw", lr=x, seed=s), LR_GRID, **run)
        run_jobs([dict(wide, kind=k, lr=1.0, seed=s, theta=theta)
                  for k in ("mulo", "splo") for s in seeds], cache, cache_path, pool)
        print(f"width transfer done ({time.time() - t0:.0f} s)", flush=True)
    pool.close()
    meta["seconds"] = time.time() - t0
    (out / "eval_meta.json").write_text(json.dumps(meta, indent=1))
    print(f"evaluation done in {time.time() - t0:.0f} s", flush=True)
    return 0


# ------------------------------------------------------------------ the report
def _snapshot_compute(theta_file: str, work: Path) -> tuple[str, int | None, float | None]:
    """(label, outer steps, meta-training seconds) of a snapshot ``.../theta_<N>.safetensors``
    from the ``meta.json`` beside it (or in ``work``, where the files were copied)."""
    path = Path(theta_file)
    log_path = path.parent / "meta.json"
    if not log_path.exists():
        log_path = work / "meta.json"
    stem = path.stem
    steps = int(stem.split("_")[-1]) if stem.split("_")[-1].isdigit() else None
    if steps is None or not log_path.exists():
        return str(path), steps, None
    return f"{path.parent.name}/{path.name}", steps, _seconds_at(log_path, steps)


def _seconds_at(log_path: Path, steps: int) -> float | None:
    """Meta-training seconds at outer step ``steps`` in a meta-training log (``meta.json``)."""
    return {int(v[0]): v[2] for v in json.loads(log_path.read_text())["val"]}.get(steps)


def _fmt(x: float) -> str:
    return "inf" if not math.isfinite(x) else (f"{x:.4g}" if x >= 1e-3 else f"{x:.2e}")


def report_stage(work: Path, a) -> int:
    out_dir = Path(a.results)
    cache = json.loads((out_dir / "eval.json").read_text())
    meta = json.loads((out_dir / "eval_meta.json").read_text())
    seeds, steps, theta, pw = meta["seeds"], meta["steps"], meta["theta"], meta["pwidth"]
    lines = [f"`{a.command}`" if a.command else "", ""]
    took = "cut short" if meta["seconds"] is None else f"{meta['seconds']:.0f} s"
    lines += [f"Evaluation: {meta['gpu'] or meta['device']}, torch {meta['torch']}, "
              f"{meta['date']}, {took} (`python experiments/pretrained.py "
              f"{' '.join(meta['argv'])}`). Theta evaluated: `{theta}`.", ""]
    grid_runs = {}

    def scores(problem, kind, lr, th=None, **extra):
        job = dict(problem=problem, kind=kind, lr=lr, seed=0, **extra)
        if th is not None:
            job["theta"] = th
        vals = []
        for sd in seeds:
            job["seed"] = sd
            k = job_key(job)
            if k not in cache:
                return None
            vals.append(value(cache, job))
        return geomean(vals)

    def best_of(problem, kind, grid, th=None, **extra):
        found = {}
        for x in _grid_points(cache, problem, kind, th, extra):
            v = scores(problem, kind, x, th, **extra)
            if v is not None:
                found[x] = v
        if not found:
            return None, None, []
        best = min(found, key=found.get)
        return best, found[best], sorted(found)

    rows, ratios_default, ratios_tuned, ratios_soap = [], [], [], []
    for p in meta["problems"]:
        aw_lr, aw, aw_grid = best_of(p, "adamw", LR_GRID, steps=steps, pwidth=pw)
        so_lr, so, _ = best_of(p, "soap", LR_GRID, steps=steps, pwidth=pw)
        lo_m, lo_t, lo_grid = best_of(p, "lo", MULT_GRID, theta, steps=steps, pwidth=pw)
        lo_d = scores(p, "lo", 1.0, theta, steps=steps, pwidth=pw)
        if so is None:  # SOAP not run (--no-soap) or cut short
            so_lr, so = float("nan"), float("nan")
        if None in (aw, lo_t, lo_d):
            rows.append(f"| {p} | incomplete (evaluation cut short) | | | | | | |")
            continue
        grid_runs[p] = (aw_grid, lo_grid)
        r_d, r_t = lo_d / aw, lo_t / aw
        if p not in SAME_DATA:
            ratios_default.append(r_d), ratios_tuned.append(r_t), ratios_soap.append(so / aw)
        edge = " (edge!)" if aw_lr in (aw_grid[0], aw_grid[-1]) else ""
        soap = f"{_fmt(so)} ({so_lr:.2g})" if math.isfinite(so_lr) else "not run"
        label = f"{p} (digits: not held out)" if p in SAME_DATA else p
        rows.append(f"| {label} | {_fmt(aw)} ({aw_lr:.2g}{edge}) | {soap} | "
                    f"{_fmt(lo_d)} | {_fmt(lo_t)} (x{lo_m:.2g}) | {r_d:.3f} | {r_t:.3f} | "
                    f"{so / aw:.3f} |")
    if not ratios_default:
        ratios_default = ratios_tuned = ratios_soap = [float("nan")]
    gm = [geomean(r) for r in (ratios_default, ratios_tuned, ratios_soap)]
    lines += [f"## Held-out problems ({steps} steps = {steps // 100}x the meta-training horizon, "
              f"width {pw} = {pw // 64}-{pw // 32}x the meta-training widths, {len(seeds)} seeds)",
              "",
              "Cells: final training loss, geometric mean over seeds (tuned lr; for the LO its "
              "multiplier). Ratios to tuned AdamW. Geometric means and targets over the "
              "held-out problems only.", "",
              "| problem | AdamW tuned | SOAP tuned | μLO default lr | μLO tuned lr | "
              "default / AdamW | tuned / AdamW | SOAP / AdamW |",
              "|---|---:|---:|---:|---:|---:|---:|---:|", *rows,
              f"| **geomean** | | | | | **{gm[0]:.3f}** | **{gm[1]:.3f}** | {gm[2]:.3f} |",
              f"| worst | | | | | {max(ratios_default):.3f} | {max(ratios_tuned):.3f} | "
              f"{max(ratios_soap):.3f} |", ""]
    lines += ["Grids (half decades, extended at an edge holding the best): "
              + "; ".join(f"{p}: AdamW {g[0][0]:.2g}..{g[0][-1]:.2g}, LO x{g[1][0]:.2g}.."
                          f"x{g[1][-1]:.2g}" for p, g in grid_runs.items()), ""]
    targets = [("default lr <= 1.00x tuned AdamW (geomean)", gm[0] <= 1.0),
               ("tuned lr <= 0.90x (geomean)", gm[1] <= 0.9),
               ("no problem > 1.10x (tuned lr)", max(ratios_tuned) <= 1.1)]
    lines += ["Targets: " + "; ".join(f"{t}: {'met' if ok else 'NOT met'}"
                                      for t, ok in targets), ""]
    # quality vs meta-training compute
    snaps = [theta, *meta["snapshots"]]
    held_out = [p for p in meta["problems"] if p not in SAME_DATA]
    snap_rows = []
    for th in snaps:
        label, n, secs = _snapshot_compute(th, work)
        if th == theta and a.theta_steps is not None:
            n, secs = a.theta_steps, _seconds_at(work / "meta.json", a.theta_steps)
        rs = []
        for p in held_out:
            _, aw, _ = best_of(p, "adamw", LR_GRID, steps=steps, pwidth=pw)
            d = scores(p, "lo", 1.0, th, steps=steps, pwidth=pw)
            if d is not None and aw is not None:
                rs.append(d / aw)
        if not rs or len(rs) < len(held_out):  # none: a width-transfer-only evaluation
            continue
        snap_rows.append(f"| {label} | {n if n is not None else ''} | "
                         f"{'' if secs is None else f'{secs:.0f}'} | {geomean(rs):.3f} | "
                         f"{max(rs):.3f} | " + " | ".join(f"{r:.3f}" for r in rs) + " |")
    lines += ["## Quality vs meta-training compute (default lr)", "",
              "| theta | outer steps | meta-training s | geomean / AdamW | worst | "
              + " | ".join(held_out) + " |",
              "|---|---:|---:|---:|---:|" + "---:|" * len(held_out), *snap_rows, ""]
    if meta.get("width"):
        w = dict(width=meta["width_size"], steps=meta["width_steps"])
        aw_lr, aw, aw_grid = best_of("width", "adamw", LR_GRID, **w)
        mu = scores("width", "mulo", 1.0, theta, **w)
        sp = scores("width", "splo", 1.0, theta, **w)
        if None in (aw, mu, sp):
            lines += ["## Width transfer: incomplete (evaluation cut short)", ""]
            mu = sp = aw = None
    if meta.get("width") and aw is not None:
        lines += [f"## Width transfer: mlp_digits at width {w['width']} "
                  f"({w['width'] // 64}x the base 64), "
                  f"{w['steps']} steps, {len(seeds)} seeds", "",
                  "| AdamW tuned | μLO default | SP twin default (no per-layer scales) | "
                  "μLO / AdamW | SP twin / AdamW |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {_fmt(aw)} ({aw_lr:.2g}) | {_fmt(mu)} | {_fmt(sp)} | {mu / aw:.3f} | "
                  f"{sp / aw:.3f} |", ""]
    text = "\n".join(lines)
    Path(a.out).write_text(text + "\n") if a.out != "-" else None
    print(text)
    return 0


def _grid_points(cache, problem, kind, theta, extra) -> list[float]:
    """Every lr at which (problem, kind[, theta], extra) was run."""
    found = set()
    for key in cache:
        parts = dict(kv.split("=", 1) for kv in key.split("|"))
        if parts.get("problem") != problem or parts.get("kind") != kind:
            continue
        if theta is not None and parts.get("theta") != str(theta):
            continue
        if any(parts.get(k) != str(v) for k, v in extra.items()):
            continue
        found.add(float(parts["lr"]))
    return sorted(found)
