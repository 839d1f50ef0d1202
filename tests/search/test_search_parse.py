"""The program language: parsing, canonical printing, round trips and the security whitelist."""

import pytest

import search
from search import ParseError, parse
from search.functions import CALLABLE, CONSTANTS, FUNCTIONS
from search.warm import ADAMW  # the paper's AdamW program, as the search's warm start


def test_canonical_text_round_trips():
    prog = parse(ADAMW)
    assert prog.to_text() == ADAMW
    assert parse(prog.to_text()) == prog


def test_messy_text_prints_canonically_and_round_trips():
    messy = "def f(w,g,m,lr,t):\n  m=-g+(m*0.5)\n  update=(m-(g-w))/ (2*t)\n  update*=lr\n  return update,m\n"
    prog = parse(messy)
    text = prog.to_text()
    assert text.splitlines()[1:] == [
        "    m = neg(g) + m * 0.5",
        "    update = (m - (g - w)) / (2.0 * t)",
        "    update = update * lr",
        "    return update, m",
    ]
    assert parse(text) == prog and parse(text).to_text() == text


def test_negative_constants_and_named_constants_round_trip():
    prog = parse("def train(w, g, lr):\n    update = g * -0.5 - pi * e + eps\n    return update\n")
    assert parse(prog.to_text()) == prog
    assert "pi" in prog.to_text() and "(-0.5)" in prog.to_text()


def test_function_set_has_the_papers_size_and_every_function_parses():
    # 45 functions in the Lion paper, counting 3 nullary constants: ours are the constants
    # pi, e, eps, + - * / max min, interp, clip, power, 4 tree-level and 30 unary (46)
    assert len(FUNCTIONS) + len(CONSTANTS) == 46
    assert {"global_norm", "clip_by_global_norm", "dot", "cosine_sim", "interp"} <= set(FUNCTIONS)
    for name in CALLABLE:
        args = ", ".join(["g"] * FUNCTIONS[name].arity)
        prog = parse(f"def train(w, g, lr):\n    update = {name}({args})\n    return update\n")
        assert parse(prog.to_text()) == prog


def test_states_are_the_non_input_arguments_in_order():
    prog = parse("def train(w, g, a, lr, b, t):\n    update = g * lr\n    return update, a, b\n")
    assert prog.states == ("a", "b") and prog.uses_t


@pytest.mark.parametrize("body, where", [
    ("import os", (1, 1)),
    ("def train(w, g, lr):\n    import os\n    update = g\n    return update", (2, 5)),
    ("def train(w, g, lr):\n    update = g.sum()\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = g[0]\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    for i in g:\n        update = g\n    return update", (2, 5)),
    ("def train(w, g, lr):\n    while g:\n        update = g\n    return update", (2, 5)),
    ("def train(w, g, lr):\n    update = open('x')\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = __import__('os')\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    __x = g\n    update = g\n    return update", (2, 5)),
    ("def train(w, g, lr):\n    update = g ** 2\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = sign(g, 1)\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = sign(x=g)\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = lambda: g\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = 'abc'\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = zz + g\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = g +\n    return update", (2, 0)),
    ("def train(w, g, lr):\n    update = g\n    return update, w", (3, 5)),
    ("def train(w, g, m, lr):\n    update = g\n    return update", (3, 5)),
    ("def train(w, lr):\n    update = w\n    return update", (1, 1)),
    ("def train(w, g, lr):\n    g = w\n    update = g\n    return update", (2, 5)),
    ("@dec\ndef train(w, g, lr):\n    update = g\n    return update", (2, 1)),
    ("def train(w, g, lr=1):\n    update = g\n    return update", (1, 1)),
    ("def train(w, g, lr):\n    update = g\n    return update\nx = 1", (4, 1)),
    ("def train(w, g, lr):\n    update = [g]\n    return update", (2, 14)),
    ("def train(w, g, lr):\n    update = g if lr else w\n    return update", (2, 14)),
])
def test_everything_outside_the_whitelist_is_a_parse_error_with_position(body, where):
    with pytest.raises(ParseError) as err:
        parse(body)
    assert isinstance(err.value, ValueError)
    line, col = where
    assert err.value.line == line
    if col:
        assert err.value.col == col
    assert str(err.value).startswith(f"line {line}, col ")
    assert "\n" not in str(err.value)


def test_nothing_in_the_text_ever_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = (f"def train(w, g, lr):\n    update = open({str(marker)!r}, 'w')\n    return update\n")
    with pytest.raises(ParseError):
        parse(evil)
    side = f"open({str(marker)!r}, 'w')\ndef train(w, g, lr):\n    update = g\n    return update\n"
    with pytest.raises(ParseError):
        parse(side)
    assert not marker.exists()


def test_huge_or_deep_input_is_a_parse_error_not_a_crash():
    with pytest.raises(ParseError):
        parse("x" * 200_000)
    deep = "def train(w, g, lr):\n    update = " + "(" * 5000 + "g" + ")" * 5000 + "\n    return update\n"
    with pytest.raises(ParseError):
        parse(deep)
    with pytest.raises(ParseError):
        parse(b"def train(w, g, lr): pass")


def test_graph_is_a_networkx_dag():
    import networkx as nx

    g = search.dataflow_graph(parse(ADAMW))
    assert nx.is_directed_acyclic_graph(g)
    assert g.has_edge(("in", "g"), ("st", 0))
    prog = parse(ADAMW)
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    assert kinds.count("statement") == len(prog.statements)
    outputs = {n for n, d in g.nodes(data=True) if d["kind"] == "output"}
    assert outputs == {("out", "<update>")} | {("out", s) for s in prog.states}
