"""A batched interpreter: many *different* programs, each over its lr grid and seeds, train
together on one device.

Every candidate instance (program x lr x seed) is one row of a register file
``R[rows, slots, D]`` over the flat parameter vector (D coordinates). Programs are compiled to
straight-line code (one instruction per call: op, destination slot, argument slots); slots
0-3 hold ``w, g, lr, t``, then the states, the constants and one fresh slot per instruction.
At instruction position ``j`` the rows are grouped by their op, and each group runs as one
gather -> op -> scatter over all its rows, so a step costs O(positions x distinct ops) kernel
launches whatever the number of candidates. Gradients of all rows come from one
``vmap(vmap(grad(loss)))`` (seeds outer, each with its own batch; programs and lrs inner, the
seed's batch repeated over them as a view).
Scalars are stored broadcast across the D coordinates, and reductions run along the last axis
(see :mod:`search.functions`), so each row computes exactly what :func:`search.interpret.step`
computes on the flat vector.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from .fitness import WORST, Fitness, FitnessConfig, flat_task, fitness_vmapped, reduce_losses
from .flat import expand_batch, stack_batches
from .functions import FUNCTIONS
from .program import Call, Const, Program, Var

_FIXED = {"w": 0, "g": 1, "lr": 2, "t": 3}


@dataclass
class Compiled:
    """Straight-line code of one program: ``code`` is a list of (op, dst, arg slots);
    ``consts`` maps slot -> value; ``update`` and ``states`` are the final slots."""

    code: list
    consts: dict
    update: int
    states: list
    n_slots: int


def compile_program(prog: Program) -> Compiled:
    """Compile a (pruned, checked) program to register code."""
    n_states = len(prog.states)
    where = dict(_FIXED)
    where.update({s: 4 + i for i, s in enumerate(prog.states)})
    consts, code = {}, []
    nxt = [4 + n_states]

    def fresh():
        nxt[0] += 1
        return nxt[0] - 1

    def emit(e) -> int:
        if isinstance(e, Var):
            return where[e.name]
        if isinstance(e, Const):
            slot = fresh()
            consts[slot] = e.value
            return slot
        assert isinstance(e, Call)
        args = [emit(a) for a in e.args]
        dst = fresh()
        code.append((e.fn, dst, args))
        return dst

    for st in prog.statements:
        where[st.target] = emit(st.expr)
    return Compiled(code, consts, where[prog.update], [where[s] for s in prog.states], nxt[0])


class BatchedMachine:
    """Register machine over ``rows = seeds x programs x lrs`` rows of D coordinates."""

    def __init__(self, programs: list[Program], lrs, n_seeds: int, dim: int, device, dtype):
        self.comp = [compile_program(p) for p in programs]
        self.P, self.L, self.S = len(programs), len(lrs), n_seeds
        self.rows = self.S * self.P * self.L
        self.n_slots = max(c.n_slots for c in self.comp)
        self.n_states = max((len(c.states) for c in self.comp), default=0)
        dev = dict(device=device, dtype=dtype)
        self.R = torch.zeros(self.rows, self.n_slots, dim, **dev)
        prog_of_row = torch.arange(self.rows) // self.L % self.P
        self.R[:, 2, :] = torch.tensor(lrs, **dev).repeat(self.S * self.P)[:, None]
        for p, c in enumerate(self.comp):
            rows = (prog_of_row == p).nonzero().squeeze(1).to(device)
            for slot, value in c.consts.items():
                self.R[rows, slot, :] = value
        self.schedule = self._schedule(prog_of_row, device)
        upd = torch.tensor([c.update for c in self.comp])
        self.update_slot = upd[prog_of_row].to(device)
        final = torch.tensor([[c.states[j] if j < len(c.states) else 4 + j
                               for j in range(self.n_states)] for c in self.comp],
                             dtype=torch.long).reshape(self.P, self.n_states)
        self.final_state_slot = final[prog_of_row].to(device)
        self.arange = torch.arange(self.rows, device=device)

    def _schedule(self, prog_of_row, device) -> list:
        """Per instruction position: [(fn, rows, dst slots, [arg slots])] grouped by op."""
        rows_of = [(prog_of_row == p).nonzero().squeeze(1) for p in range(self.P)]
        depth = max((len(c.code) for c in self.comp), default=0)
        schedule = []
        for j in range(depth):
            groups: dict[str, list[int]] = {}
            for p, c in enumerate(self.comp):
                if j < len(c.code):
                    groups.setdefault(c.code[j][0], []).append(p)
            level = []
            for fn, progs in groups.items():
                n = [len(rows_of[p]) for p in progs]
                rows = torch.cat([rows_of[p] for p in progs])

                def per_row(values):
                    return torch.repeat_interleave(torch.tensor(values), torch.tensor(n))

                dst = per_row([self.comp[p].code[j][1] for p in progs])
                args = [per_row([self.comp[p].code[j][2][k] for p in progs])
                        for k in range(FUNCTIONS[fn].arity)]
                level.append((FUNCTIONS[fn].fn, rows.to(device), dst.to(device),
                              [a.to(device) for a in args]))
            schedule.append(level)
        return schedule

    @torch.no_grad()
    def step(self, w: torch.Tensor, g: torch.Tensor, t: float) -> torch.Tensor:
        """Load ``w, g`` ([rows, D]) and ``t``, run every program once, return the updates and
        write the new states back."""
        R = self.R
        R[:, 0], R[:, 1], R[:, 3] = w, g, t
        for level in self.schedule:
            for fn, rows, dst, args in level:
                R[rows, dst] = fn(*[R[rows, a] for a in args], dim=-1).expand(len(rows), -1)
        upd = R[self.arange, self.update_slot]
        if self.n_states:
            new = R[self.arange[:, None], self.final_state_slot]
            R[:, 4:4 + self.n_states] = new
        return upd


#: Register-file budget of one batched run in bytes (``METAOPT_SEARCH_MEMORY`` overrides it):
#: a batch whose registers (rows x slots x D values) would exceed it is split, and a single
#: program that exceeds it alone scores worst instead of exhausting the machine.
MEMORY_BYTES = int(os.environ.get("METAOPT_SEARCH_MEMORY", str(2 << 30)))


def register_bytes(n_programs: int, n_slots: int, cfg: FitnessConfig, dim: int, itemsize: int) -> int:
    """Bytes of the register file of ``n_programs`` programs with ``n_slots`` slots at most."""
    return len(cfg.seeds) * len(cfg.lrs) * n_programs * n_slots * dim * itemsize


def memory_chunks(programs: list[Program], cfg: FitnessConfig, dim: int, itemsize: int,
                  budget: int) -> list[list[int]]:
    """Program indices in consecutive chunks whose register files fit ``budget`` (a program
    too large on its own forms a chunk by itself; the caller scores it worst)."""
    chunks, cur, widest = [], [], 0
    for i, p in enumerate(programs):
        slots = compile_program(p).n_slots
        w = max(widest, slots)
        if cur and register_bytes(len(cur) + 1, w, cfg, dim, itemsize) > budget:
            chunks.append(cur)
            cur, w = [], slots
        cur.append(i)
        widest = w
    if cur:
        chunks.append(cur)
    return chunks


def fitness_batched(programs: list[Program], task, cfg: FitnessConfig) -> list[Fitness]:
    """Fitness of every program, trained together in batches that fit :data:`MEMORY_BYTES`."""
    if not programs:
        return []
    flat = flat_task(task)
    itemsize = getattr(task, "dtype", torch.float32).itemsize
    out: list[Fitness | None] = [None] * len(programs)
    for chunk in memory_chunks(programs, cfg, flat.dim, itemsize, MEMORY_BYTES):
        slots = compile_program(programs[chunk[0]]).n_slots
        if len(chunk) == 1 and register_bytes(1, slots, cfg, flat.dim, itemsize) > MEMORY_BYTES:
            out[chunk[0]] = Fitness(WORST, None, [], 0.0)
            continue
        for i, f in zip(chunk, _fitness_one_batch([programs[i] for i in chunk], task, flat, cfg)):
            out[i] = f
    return out


def _fitness_one_batch(programs: list[Program], task, flat, cfg: FitnessConfig) -> list[Fitness]:
    """Fitness of every program in one batched run (falls back to one at a time on error)."""
    start = time.perf_counter()
    try:
        losses = _train_batched(programs, flat, cfg, start)
    except (RuntimeError, ValueError, ArithmeticError, IndexError):
        return [fitness_vmapped(p, task, cfg) for p in programs]
    if losses is None:
        return [Fitness(WORST, None, [], time.perf_counter() - start) for _ in programs]
    seconds = (time.perf_counter() - start) / len(programs)
    out = []
    for p in range(len(programs)):
        fit = reduce_losses(losses[p], cfg.lrs)
        fit.seconds = seconds
        out.append(fit)
    return out


def _train_batched(programs, flat, cfg: FitnessConfig, start: float):
    S, P, L = len(cfg.seeds), len(programs), len(cfg.lrs)
    inits = [flat.init(seed) for seed in cfg.seeds]
    theta0 = torch.stack([t for t, _ in inits])
    m = BatchedMachine(programs, cfg.lrs, S, flat.dim, theta0.device, theta0.dtype)
    theta = theta0[:, None, :].repeat(1, P * L, 1)
    grad = torch.func.vmap(torch.func.vmap(torch.func.grad(flat.loss)))
    limit = cfg.time_limit * P
    for k in range(cfg.steps):
        batch = expand_batch(stack_batches([flat.task.sample_batch(gen) for _, gen in inits]), P * L)
        g = grad(theta, batch)
        upd = m.step(theta.reshape(-1, flat.dim), g.reshape(-1, flat.dim), float(k + 1))
        theta = theta - upd.reshape(S, P * L, flat.dim)
        if time.perf_counter() - start > limit:
            return None
    vals = torch.tensor(flat.val_losses(theta.reshape(-1, flat.dim))).reshape(S, P, L)
    return [[[float(vals[s, p, l]) for s in range(S)] for l in range(L)] for p in range(P)]
