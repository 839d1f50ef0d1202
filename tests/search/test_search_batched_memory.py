"""The batched interpreter's memory is bounded: batches split to fit the register budget with
the same numbers, and a program too large for it alone scores worst."""
import math

import pytest

import search.batched as batched
from metaopt import tasks
from search import parse
from search.batched import compile_program, fitness_batched, memory_chunks, register_bytes
from search.fitness import FitnessConfig
from search.warm import ADAMW, SGD

CFG = FitnessConfig(steps=5, lrs=(0.01, 0.1))


def test_split_batches_give_the_same_fitness(monkeypatch):
    task = tasks.get("quadratic", dim=8)
    progs = [parse(ADAMW), parse(SGD), parse(ADAMW.replace("0.9)", "0.5)"))]
    whole = fitness_batched(progs, task, CFG)
    one = register_bytes(1, compile_program(progs[0]).n_slots, CFG, 8, 4)
    assert len(memory_chunks(progs, CFG, 8, 4, one)) == 3
    monkeypatch.setattr(batched, "MEMORY_BYTES", one)
    split = fitness_batched(progs, task, CFG)
    assert [f.value for f in split] == pytest.approx([f.value for f in whole], rel=1e-6)


def test_a_program_over_the_budget_alone_scores_worst(monkeypatch):
    task = tasks.get("quadratic", dim=8)
    big = parse(ADAMW)
    small = parse(SGD)
    budget = register_bytes(1, compile_program(small).n_slots, CFG, 8, 4)
    monkeypatch.setattr(batched, "MEMORY_BYTES", budget)
    fits = fitness_batched([big, small], task, CFG)
    assert fits[0].value == math.inf and math.isfinite(fits[1].value)
