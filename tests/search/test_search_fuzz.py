"""Fuzzing the program parser (issue 19): grammar-generated programs and mutations of valid
program texts (hostile snippets, huge and deeply nested inputs). Every input either parses or
raises ParseError; every parsed program round-trips through ``to_text()`` and can be checked
and hashed; no input takes over 1 s."""
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from search import ParseError, parse  # noqa: E402
from search.check import InvalidProgram, check  # noqa: E402
from search.functions import CALLABLE, FUNCTIONS  # noqa: E402
from search.graph import structural_hash  # noqa: E402
from search.warm import ADAMW, SGD  # noqa: E402

SETTINGS = settings(max_examples=2600, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
NAMES = ["w", "g", "lr", "t", "m", "v", "a", "b", "update", "pi", "eps", "e", "x_1", "__class__"]

numbers = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.integers(1, 420).map(lambda n: "9" * n),                       # huge integers
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.sampled_from(["1e309", "1e308", "-1e309", "0.0", "-0.0", "5e-324", "1_000", "0x1F", "1j"]),
)


def _call(args_strategy):
    return st.tuples(st.sampled_from(CALLABLE), st.lists(args_strategy, min_size=0, max_size=4)).map(
        lambda fa: f"{fa[0]}({', '.join(fa[1])})")


expressions = st.recursive(
    st.one_of(st.sampled_from(NAMES), numbers),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**", "%"]), inner).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"),
        inner.map(lambda x: f"({x})"), inner.map(lambda x: f"-{x}"), _call(inner)),
    max_leaves=40)


@st.composite
def programs(draw):
    states = draw(st.lists(st.sampled_from(["m", "v"]), unique=True, max_size=2))
    params = ["w", "g"] + states + ["lr"] + (["t"] if draw(st.booleans()) else [])
    lines = [f"def train({', '.join(params)}):"]
    for _ in range(draw(st.integers(0, 8))):
        target = draw(st.sampled_from(["a", "b", "update"] + states))
        op = draw(st.sampled_from(["=", "=", "=", "+=", "*="]))
        lines.append(f"    {target} {op} {draw(expressions)}")
    ret = draw(st.sampled_from([["update"] + states, ["update"], [], ["g"], ["update", "update"]]))
    lines.append(f"    return {', '.join(ret) if ret else '()'}")
    return "\n".join(lines) + "\n"


HOSTILE = ["import os", "__import__('os').system('true')", "w.__class__", "lambda: 0", "[0]",
           "**", "return ()", "9" * 400, "1e999", "(" * 120, ")" * 50, "g + " * 700 + "g",
           "for i in range(3): pass", "yield w", "global w", "\x00", "\t", "async def f(): pass",
           "'s'", "b'x'", "f'{w}'", "w[0]", "w if g else lr", "print(w)", "exec('1')", "\n"]


@st.composite
def mutated(draw):
    base = draw(st.sampled_from([ADAMW, SGD]))
    text = base
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "duplicate", "hostile_line"]))
        if kind == "insert":
            text = text[:i] + draw(st.sampled_from(HOSTILE + list("()+-*/,=:. \n"))) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)):]
        elif kind == "duplicate":
            text = text[:i] + text[i:i + 30] + text[i:]
        else:
            lines = text.split("\n")
            k = draw(st.integers(0, len(lines)))
            lines.insert(k, "    update = " + draw(st.sampled_from(HOSTILE)))
            text = "\n".join(lines)
    return text


def _exercise(text: str) -> None:
    start = time.thread_time()  # this thread's CPU time: neither a shared machine nor torch's
    # worker threads (process_time counts every thread of the process) enter it
    try:
        prog = parse(text)
    except ParseError:
        prog = None
    if prog is not None:
        printed = prog.to_text()
        again = parse(printed)
        assert again == prog, (text, printed)
        assert again.to_text() == printed
        try:
            structural_hash(check(prog))
        except InvalidProgram:
            pass
    assert time.thread_time() - start < 1.0, text[:200]


@pytest.mark.slow
@SETTINGS
@given(programs())
def test_grammar_programs_parse_or_raise_parse_error_and_round_trip(text):
    _exercise(text)


@pytest.mark.slow
@SETTINGS
@given(mutated())
def test_mutated_programs_parse_or_raise_parse_error_and_round_trip(text):
    _exercise(text)


@pytest.mark.parametrize("text", [
    "def train(w, g, lr):\n    return ()\n",
    "def train(w, g, lr):\n    update = " + "9" * 400 + " * g\n    return update\n",
    "def train(w, g, lr):\n    update = 1e309 * g\n    return update\n",
    "def train(w, g, lr):\n    update = " + " + ".join(["g"] * 3000) + "\n    return update\n",
    "def train(w, g, lr):\n" + "    update = g\n" * 500 + "    return update\n",
    "def train(w, g, lr):\n    update = " + "(" * 300 + "g" + ")" * 300 + "\n    return update\n",
])
def test_hostile_inputs_are_parse_errors(text):
    with pytest.raises(ParseError):
        parse(text)


def test_every_function_round_trips_with_extreme_constants():
    for name in CALLABLE:
        args = ", ".join(["g", "1.7976931348623157e+308", "-5e-324"][:FUNCTIONS[name].arity])
        prog = parse(f"def train(w, g, lr):\n    update = {name}({args}) * lr\n    return update\n")
        assert parse(prog.to_text()) == prog
