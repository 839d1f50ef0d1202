"""Dead-code removal, structural hashing, numeric fingerprints and abstract execution."""
import random

import pytest
import torch

from search import parse, prune, structural_hash
from search.check import InvalidProgram, check, infer_types
from search.fingerprint import fingerprint
from search.interpret import step
from search.mutate import MUTATIONS, mutate, random_program, valid_child
from search.warm import ADAMW

MOM = "def train(w, g, m, lr):\n    m = interp(g, m, 0.9)\n    update = m * lr\n    return update, m\n"


def test_prune_drops_dead_statements_and_dead_states_keeping_the_function():
    text = """def train(w, g, m, v, u, lr):
    junk = sin(g)
    v = v + g
    u = u * 0.5 + v
    m = interp(g, m, 0.9)
    update = m * lr
    return update, m, v, u
"""
    prog = parse(text)
    p = prune(prog)
    assert p.states == ("m",) and len(p.statements) == 2
    # state u is read by nothing live; v only feeds u -> both dead
    w, state = torch.randn(6), {s: torch.zeros(6) for s in prog.states}
    sp = {"m": torch.zeros(6)}
    for k in range(4):
        g = torch.randn(6)
        u1, state = step(prog, w, g, state, 0.1, k + 1)
        u2, sp = step(p, w, g, sp, 0.1, k + 1)
        torch.testing.assert_close(u1, u2)


def test_state_feeding_a_live_state_is_live():
    text = """def train(w, g, a, b, lr):
    b = b + g
    a = interp(b, a, 0.5)
    update = a * lr
    return update, a, b
"""
    assert prune(parse(text)).states == ("a", "b")


def test_structural_hash_ignores_names_dead_code_and_argument_order_of_commutative_ops():
    a = parse(MOM)
    renamed = parse("def train(w, g, mom, lr):\n    dead = exp(w)\n    mom = interp(g, mom, 0.9)\n"
                    "    upd = lr * mom\n    return upd, mom\n")
    assert structural_hash(a) == structural_hash(renamed)
    changed = parse(MOM.replace("0.9", "0.8"))
    swapped = parse(MOM.replace("interp(g, m, 0.9)", "interp(m, g, 0.9)"))
    assert len({structural_hash(a), structural_hash(changed), structural_hash(swapped)}) == 3


def test_fingerprint_catches_algebraic_duplicates_the_structural_hash_misses():
    a = parse(MOM)
    b = parse("def train(w, g, m, lr):\n    m = 0.9 * m + 0.1 * g\n    update = lr * m\n    return update, m\n")
    assert structural_hash(a) != structural_hash(b)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(parse(MOM.replace("0.9", "0.91")))
    assert fingerprint(a) != fingerprint(parse(MOM.replace("m * lr", "m * lr * 2")))


def test_abstract_execution_types_and_rejections():
    types = infer_types(parse("def train(w, g, lr, t):\n    s = dot(g, w)\n    update = s * g\n"
                              "    n = global_norm(g) + lr\n    return update\n"))
    assert types["s"] == "S" and types["n"] == "S" and types["update"] == "T" and types["lr"] == "S"
    bad = {
        "scalar update": "def train(w, g, lr):\n    update = lr * 2\n    return update\n",
        "reduction of scalar": "def train(w, g, lr):\n    s = global_norm(lr)\n    update = g * s\n    return update\n",
        "no gradient": "def train(w, g, lr):\n    update = w * lr\n    return update\n",
    }
    for why, text in bad.items():
        with pytest.raises(InvalidProgram):
            check(parse(text))
    with pytest.raises(InvalidProgram):  # a deletion can leave a read before assignment
        from search.program import Program
        p = parse(MOM)
        check(Program(p.params, p.statements[1:], p.update))


def test_gradient_reaching_update_only_through_a_state_is_valid():
    check(parse("def train(w, g, m, lr):\n    update = m * lr\n    m = m + g\n    return update, m\n"))


def test_mutations_change_the_program_and_children_are_valid():
    rng = random.Random(0)
    start = parse(ADAMW)
    lengths = {"insert": 0, "delete": 0}
    for kind in MUTATIONS:
        changed = 0
        for _ in range(30):
            child = mutate(start, rng, (kind,))
            changed += child != start
            if kind == "insert":
                assert len(child) == len(start) + 1
            if kind == "delete":
                assert len(child) == len(start) - 1
            if kind == "perturb_constant":
                diff = [i for i, (a, b) in enumerate(zip(child.statements, start.statements)) if a != b]
                assert len(diff) <= 1
        assert changed >= 20, kind
    prog = start
    for _ in range(200):
        raw, pruned, _ = valid_child(prog, rng)
        check(pruned)
        assert parse(raw.to_text()) == raw
        prog = raw


def test_random_programs_are_valid_and_differ():
    rng = random.Random(3)
    progs = [random_program(rng) for _ in range(10)]
    for p in progs:
        check(p)
    assert len({p.to_text() for p in progs}) == 10


def _networkx_live(prog):
    """Reference liveness from the networkx DAG: ancestors of the live outputs, to a fixpoint."""
    import networkx as nx

    from search import dataflow_graph

    g = dataflow_graph(prog)
    outs = {("out", "<update>")}
    while True:
        reach = set().union(*(nx.ancestors(g, o) for o in outs))
        new = outs | {("out", s) for s in prog.states if ("in", s) in reach}
        if new == outs:
            return {i for (kind, i) in reach if kind == "st"}, {s for (_, s) in outs} - {"<update>"}
        outs = new


def test_fast_pruning_equals_networkx_dag_ancestry():
    rng = random.Random(7)
    prog = parse(ADAMW)
    for _ in range(300):
        prog = mutate(prog, rng)
        try:
            infer_types(prog)
        except InvalidProgram:
            continue
        stmts, states = _networkx_live(prog)
        p = prune(prog)
        assert set(p.states) == states
        assert list(p.statements) == [st for i, st in enumerate(prog.statements) if i in stmts]
