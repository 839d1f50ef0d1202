"""``parse(text)``: program text -> :class:`~search.program.Program`, safely.

The text is read with :func:`ast.parse` and walked against a whitelist: one ``def`` whose
arguments are plain names, assignments (``x = expr`` or ``x op= expr``) of names, numbers,
``+ - * /``, unary minus and calls of the function set, and a final ``return``. Anything else
(imports, attributes, subscripts, loops, keywords, unknown names, dunders) is a
:class:`ParseError` with its line and column. Nothing in the text is ever executed.
"""
from __future__ import annotations

import ast

from .functions import CONSTANTS, FUNCTIONS, INPUTS, RESERVED
import math

from .program import MAX_DEPTH, Call, Const, Expr, Program, Statement, Var, size_problem

MAX_CHARS = 100_000
_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}


class ParseError(ValueError):
    """Invalid program text; ``line`` and ``col`` (1-based) locate the problem."""

    def __init__(self, message: str, line: int = 0, col: int = 0):
        self.line, self.col = line, col
        super().__init__(f"line {line}, col {col}: {message}")


def _fail(node, message: str):
    raise ParseError(message, getattr(node, "lineno", 0), getattr(node, "col_offset", -1) + 1)


def parse(text: str) -> Program:
    """Parse program text; raises :class:`ParseError` (a ``ValueError``) on anything outside
    the language."""
    if not isinstance(text, str):
        raise ParseError(f"program text must be a str, got {type(text).__name__}", 1, 1)
    if len(text) > MAX_CHARS:
        raise ParseError(f"program text is longer than {MAX_CHARS} characters", 1, 1)
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as err:
        raise ParseError(f"syntax error: {err.msg}", err.lineno or 0, err.offset or 0) from None
    except (RecursionError, MemoryError, ValueError):
        raise ParseError("program text is nested too deeply or malformed", 1, 1) from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        node = tree.body[1] if len(tree.body) > 1 else (tree.body[0] if tree.body else tree)
        _fail(node, "a program is exactly one 'def train(w, g, ..., lr):' and nothing else")
    depth = _ast_depth(tree.body[0])
    if depth > MAX_DEPTH + 8:
        raise ParseError(f"program is nested {depth} deep (expressions at most {MAX_DEPTH})", 1, 1)
    try:
        prog = _function(tree.body[0])
    except RecursionError:
        raise ParseError("program expression is nested too deeply", 1, 1) from None
    problem = size_problem(prog.statements)
    if problem:
        raise ParseError(f"program too large: {problem}", 1, 1)
    return prog


def _ast_depth(root) -> int:
    """Depth of the syntax tree, without recursion."""
    depth, stack = 0, [(root, 1)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(node))
    return depth


def _function(fn: ast.FunctionDef) -> Program:
    if fn.decorator_list or fn.returns is not None or getattr(fn, "type_params", None):
        _fail(fn, "decorators, annotations and type parameters are not allowed")
    a = fn.args
    if a.posonlyargs or a.vararg or a.kwonlyargs or a.kwarg or a.defaults or a.kw_defaults:
        _fail(fn, "arguments must be plain names (no defaults, *args, **kwargs or keywords)")
    params = []
    for arg in a.args:
        if arg.annotation is not None:
            _fail(arg, "argument annotations are not allowed")
        _check_name(arg, arg.arg)
        params.append(arg.arg)
    for need in ("w", "g", "lr"):
        if need not in params:
            _fail(fn, f"the signature must include the input {need!r} (inputs: w, g, lr, optional t)")
    states = [p for p in params if p not in INPUTS]
    defined = set(params)
    body = list(fn.body)
    if not body or not isinstance(body[-1], ast.Return):
        _fail(body[-1] if body else fn, "the last statement must be 'return update, <state...>'")
    statements = [_statement(node, defined) for node in body[:-1]]
    update = _returns(body[-1], states, defined)
    return Program(tuple(params), tuple(statements), update)


def _check_name(node, name: str) -> None:
    if name.startswith("__") or name.startswith("_"):
        _fail(node, f"name {name!r}: names starting with '_' are not allowed")
    if name in RESERVED:
        _fail(node, f"name {name!r} is a function or constant of the language")


def _statement(node, defined: set) -> Statement:
    if isinstance(node, ast.Assign):
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            _fail(node, "assign to exactly one plain name")
        target, expr = node.targets[0].id, _expr(node.value, defined)
    elif isinstance(node, ast.AugAssign):
        if not isinstance(node.target, ast.Name) or type(node.op) not in _BINOPS:
            _fail(node, "augmented assignment needs a plain name and one of += -= *= /=")
        target = node.target.id
        if target not in defined:
            _fail(node, f"name {target!r} is used before it is assigned")
        expr = Call(_BINOPS[type(node.op)], (Var(target), _expr(node.value, defined)))
    else:
        _fail(node, f"{type(node).__name__} statements are not allowed (only assignments)")
    _check_name(node, target)
    if target in ("w", "g", "lr", "t"):
        _fail(node, f"the input {target!r} cannot be assigned")
    defined.add(target)
    return Statement(target, expr)


def _expr(node, defined: set) -> Expr:
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return Const(CONSTANTS[node.id])
        if node.id not in defined:
            _check_name(node, node.id)
            _fail(node, f"unknown name {node.id!r} (not an input, state or assigned variable)")
        return Var(node.id)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            _fail(node, f"only numeric constants are allowed, got {node.value!r:.40}")
        try:
            value = float(node.value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            _fail(node, "numbers must be finite (at most about 1.8e308)")
        return Const(value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _expr(node.operand, defined)
        if isinstance(node.op, ast.UAdd):
            return inner
        return Const(-inner.value) if isinstance(inner, Const) else Call("neg", (inner,))
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            _fail(node, f"operator {type(node.op).__name__} is not allowed (use + - * / or power())")
        return Call(_BINOPS[type(node.op)], (_expr(node.left, defined), _expr(node.right, defined)))
    if isinstance(node, ast.Call):
        return _call(node, defined)
    _fail(node, f"{type(node).__name__} expressions are not allowed")


def _call(node: ast.Call, defined: set) -> Call:
    if not isinstance(node.func, ast.Name):
        _fail(node, "only calls of the language's functions by name are allowed")
    name = node.func.id
    if name not in FUNCTIONS or FUNCTIONS[name].infix is not None:
        _fail(node, f"unknown function {name!r}; see search.functions.CALLABLE")
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        _fail(node, f"{name}() takes positional arguments only")
    arity = FUNCTIONS[name].arity
    if len(node.args) != arity:
        _fail(node, f"{name}() takes {arity} argument(s), got {len(node.args)}")
    return Call(name, tuple(_expr(a, defined) for a in node.args))


def _returns(node: ast.Return, states: list[str], defined: set) -> str:
    value = node.value
    names = value.elts if isinstance(value, ast.Tuple) else [value]
    if value is None or not names or not all(isinstance(n, ast.Name) for n in names):
        _fail(node, "return plain names: 'return update, <state...>'")
    ids = [n.id for n in names]
    if ids[0] not in defined or ids[0] in INPUTS:
        _fail(node, f"the returned update {ids[0]!r} must be an assigned variable")
    if ids[1:] != states:
        _fail(node, f"return the update then the state variables in signature order: {states}")
    return ids[0]
