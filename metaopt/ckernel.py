"""One generated C kernel per elementwise update rule: a whole param group's CPU step in one
call, one pass over memory, compiled once per machine.

An elementwise rule's ``update(g, p, state, hp, step)`` is a small expression graph: per
element, a few loads, some arithmetic on them and on scalars, a few stores. Here that graph
is traced (``make_fx`` with fake tensors, so nothing runs and a branch on a hyperparameter's
value is refused) and written as C:

  * the scalar part (hyperparameter arithmetic such as ``1 - beta1^t``, ``lr * wd``) is
    computed once per call, in double, as the Python floats of the per-tensor loop are;
    scalars that depend on a 0-d state entry (NAdam's momentum product) once per tensor;
  * the element part is one loop per tensor that reads ``p, g`` and the state, and writes
    ``p - delta`` and the new state, in the parameters' dtype (float or double), in the
    operations and order of torch's CPU kernels (``lerp`` as torch's vectorised
    ``fma(w', end - start, base)``), vectorised by the C compiler;
  * the elements of all tensors are split evenly among ``torch.get_num_threads()`` OpenMP
    threads, so 1,024 small tensors cost one call, not 1,024 (or a gather into flat buffers
    and a scatter back, as the Inductor path needs).

Per element the kernel moves the byte floor (the inputs read once, the outputs written once),
as torch's fused AdamW kernel does. The library is built by :mod:`metaopt.cbuild` (about
0.3 s with ``cc -O3``; without ``-fopenmp`` or ``-march=native`` where the compiler refuses
them) and cached on disk, so a later process's first step only traces the
rule (tens of ms) and loads it. Only the operations in :data:`EMITTERS` are supported; a rule
using another (or Python control flow on a hyperparameter's value, or a reduction) raises
:class:`Unsupported` at trace time and the optimizer keeps its other paths. The results equal
the rule's own ``update`` up to float rounding (``tests/metaopt/test_ckernel.py``).
"""
from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor
from torch.fx.experimental.proxy_tensor import make_fx

from . import cbuild

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
         "-fopenmp", "-shared", "-fPIC")
#: what to drop, in turn, when a compiler rejects ``FLAGS`` (Apple's clang has no OpenMP; some
#: compilers and CPUs refuse ``-march=native``): a one-thread or generic kernel beats none
FALLBACK_DROPS = ((), ("-fopenmp",), ("-fopenmp", "-march=native"))
DTYPES = {torch.float32: "float", torch.float64: "double"}
_TRACE_NUMEL = 8  # elements of the example tensors a rule is traced on


class Unsupported(Exception):
    """The rule cannot be written as a generated C kernel (an operation outside
    :data:`EMITTERS`, a reduction, Python control flow on a value)."""


# --------------------------------------------------------------------------------------------
# the key of a kernel: what the traced graph depends on


@dataclass(frozen=True)
class Signature:
    """What one kernel is specialised on: the rule's update function, its non-float
    hyperparameters (flags such as ``amsgrad``: part of the graph), where each float
    hyperparameter sits (``("betas", 1)`` is ``hp["betas"][1]``), the state entries (and
    which are 0-d) and the parameters' dtype. ``predict``: ``update`` is a rule's
    ``caps.predict(p, state, hp, step) -> p_hat`` and the kernel moves each parameter to
    ``p_hat`` and writes its old value into the gradient's slot (the backup to restore)."""

    update: Callable
    fixed: tuple
    floats: tuple
    state_keys: tuple
    scalar_state: tuple
    dtype: torch.dtype
    predict: bool = False


def split_hp(hp: Mapping[str, Any]) -> tuple[tuple, tuple, list[float]]:
    """``(fixed, float positions, float values)``: floats and 0-d tensors (also inside tuples)
    are values passed at every call; everything else is fixed in the kernel, and so is a
    float that is exactly 0.0 (rules skip a term in Python when its factor is zero, e.g.
    ``nonzero(momentum)``: the kernel takes the same branch as the rule's update)."""
    fixed, where, values = [], [], []
    for k, v in sorted(hp.items()):
        if isinstance(v, float) and v == 0.0:
            fixed.append((k, v))
        elif _is_value(v):
            where.append((k, None))
            values.append(float(v))
        elif isinstance(v, tuple) and v and all(_is_value(x) for x in v):
            for i, x in enumerate(v):
                where.append((k, i))
                values.append(float(x))
        else:
            fixed.append((k, v))
    return tuple(fixed), tuple(where), values


def _is_value(v: Any) -> bool:
    return (isinstance(v, float) and not isinstance(v, bool)) or (
        torch.is_tensor(v) and v.dim() == 0 and v.is_floating_point())


def _rebuilt_hp(fixed: tuple, where: tuple, values) -> dict:
    hp = dict(fixed)
    tuples: dict[str, dict[int, Any]] = {}
    for (k, i), v in zip(where, values):
        if i is None:
            hp[k] = v
        else:
            tuples.setdefault(k, {})[i] = v
    for k, parts in tuples.items():
        hp[k] = tuple(parts[i] for i in range(len(parts)))
    return hp


# --------------------------------------------------------------------------------------------
# tracing


def trace(sig: Signature) -> tuple[torch.fx.GraphModule, tuple]:
    """The rule's update as an aten graph ``(g, p, step, *hp floats, *state) -> (delta,
    *new state)`` and the state keys its outputs write. Raises :class:`Unsupported`."""
    keys, written = sig.state_keys, []

    def fn(g, p, step, *rest):
        values, states = rest[:len(sig.floats)], rest[len(sig.floats):]
        hp = _rebuilt_hp(sig.fixed, sig.floats, values)
        if sig.predict:
            return (sig.update(p, dict(zip(keys, states)), hp, step),)
        delta, new = sig.update(g, p, dict(zip(keys, states)), hp, step)
        unknown = set(new) - set(keys)
        if unknown:
            raise Unsupported(f"the update returns state entries {sorted(unknown)} that "
                              "init did not create")
        written.extend(k for k in keys if k in new)
        return (delta, *[new[k] for k in written])

    n, dt = _TRACE_NUMEL, sig.dtype
    hp_dt = torch.float64 if dt == torch.float64 else torch.float32
    example = [torch.zeros(n, dtype=dt), torch.zeros(n, dtype=dt), torch.ones((), dtype=hp_dt),
               *[torch.ones((), dtype=hp_dt) for _ in sig.floats],
               *[torch.zeros((), dtype=dt) if k in sig.scalar_state else torch.zeros(n, dtype=dt)
                 for k in keys]]
    try:
        gm = make_fx(fn, tracing_mode="fake")(*example)
    except Unsupported:
        raise
    except Exception as err:  # noqa: BLE001 - tracing fails in many ways; all mean "not here"
        raise Unsupported(f"tracing failed: {' '.join(str(err).split())[:200]}") from None
    return gm, tuple(written)


# --------------------------------------------------------------------------------------------
# C emission

def _ctype(dtype: torch.dtype, scalar: bool) -> str:
    if dtype == torch.bool:
        return "int"
    if not dtype.is_floating_point:
        return "long long"
    if scalar:
        return "double"
    if dtype not in DTYPES:
        raise Unsupported(f"dtype {dtype} inside the update")
    return DTYPES[dtype]


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return f"{v}LL"
    if isinstance(v, float):
        if math.isnan(v):
            return "NAN"
        if math.isinf(v):
            return "INFINITY" if v > 0 else "(-INFINITY)"
        return v.hex()
    raise Unsupported(f"constant {v!r}")


def _binary(fmt: str) -> Callable:
    return lambda a, t: fmt.format(*a)


def _alpha(fmt: str) -> Callable:
    """``a op alpha * b`` (``add``/``sub``) with ``alpha`` given or 1."""
    return lambda a, t: fmt.format(a[0], a[1] if len(a) < 3 else f"({a[2]} * {a[1]})")


def _pow_scalar(a: list[str], t: str) -> str:
    x, e = a
    return f"pow({x}, {e})"


def _lerp(a: list[str], t: str) -> str:
    """torch's vectorised CPU lerp: ``fma(w', end - start, base)``, ``w' = w`` and
    ``base = start`` for ``|w| < 0.5``, else ``w' = w - 1`` and ``base = end``."""
    s, e, w = a
    return (f"(fabs({w}) < ({t})0.5 ? fma({w}, {e} - {s}, {s}) "
            f": fma({w} - ({t})1, {e} - {s}, {e}))")


def _clamp(a: list[str], t: str) -> str:
    """``min(max(x, lo), hi)`` propagating NaN (torch's clamp); ``None`` bounds skipped."""
    x = a[0]
    lo = a[1] if len(a) > 1 else "None"
    hi = a[2] if len(a) > 2 else "None"
    if lo != "None":
        x = f"({x} < {lo} ? {lo} : {x})"
    if hi != "None":
        x = f"({x} > {hi} ? {hi} : {x})"
    return x


_A = torch.ops.aten
#: comparison overloads (``gt.Scalar``, ``gt.Tensor``, ...) and their C operators
_COMPARE = {getattr(getattr(_A, op), kind): sym
            for op, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("eq", "=="),
                            ("ne", "!="))
            for kind in ("Scalar", "Tensor")}
#: aten operation -> C expression of its operands (already cast to the compute type ``t``)
EMITTERS: dict[Any, Callable[[list[str], str], str]] = {
    _A.add.Tensor: _alpha("({0} + {1})"), _A.add.Scalar: _alpha("({0} + {1})"),
    _A.sub.Tensor: _alpha("({0} - {1})"), _A.sub.Scalar: _alpha("({0} - {1})"),
    _A.rsub.Scalar: _alpha("({1} - {0})"), _A.rsub.Tensor: _alpha("({1} - {0})"),
    _A.mul.Tensor: _binary("({0} * {1})"), _A.mul.Scalar: _binary("({0} * {1})"),
    _A.div.Tensor: _binary("({0} / {1})"), _A.div.Scalar: _binary("({0} / {1})"),
    _A.neg.default: _binary("(-{0})"),
    _A.abs.default: _binary("fabs({0})"),
    _A.sqrt.default: _binary("sqrt({0})"),
    _A.rsqrt.default: lambda a, t: f"(({t})1 / sqrt({a[0]}))",
    _A.reciprocal.default: lambda a, t: f"(({t})1 / {a[0]})",
    _A.exp.default: lambda a, t: f"mo_exp_{t}({a[0]})",
    _A.sigmoid.default: lambda a, t: f"(({t})1 / (({t})1 + mo_exp_{t}(-{a[0]})))",
    _A.sign.default: lambda a, t: f"(({t})({a[0]} > 0) - ({t})({a[0]} < 0))",
    _A.pow.Tensor_Scalar: _pow_scalar, _A.pow.Tensor_Tensor: _pow_scalar,
    _A.pow.Scalar: _pow_scalar,
    _A.maximum.default: _binary("(({0} != {0} || {0} > {1}) ? {0} : {1})"),
    _A.minimum.default: _binary("(({0} != {0} || {0} < {1}) ? {0} : {1})"),
    _A.clamp.default: _clamp, _A.clamp.Tensor: _clamp,
    _A.clamp_min.default: _clamp,
    _A.clamp_max.default: lambda a, t: _clamp([a[0], "None", a[1]], t),
    _A.where.self: _binary("({0} ? {1} : {2})"),
    **{op: _binary(f"({{0}} {sym} {{1}})") for op, sym in _COMPARE.items()},
    _A.logical_not.default: _binary("(!{0})"),
    _A.logical_and.default: _binary("({0} && {1})"),
    _A.logical_or.default: _binary("({0} || {1})"),
    _A.lerp.Scalar: _lerp, _A.lerp.Tensor: _lerp,
    _A.addcmul.default: lambda a, t: f"({a[0]} + {a[3] if len(a) > 3 else '1'} * {a[1]} * {a[2]})",
    _A.addcdiv.default: lambda a, t: f"({a[0]} + {a[3] if len(a) > 3 else '1'} * {a[1]} / {a[2]})",
}
#: operations that are their input, cast to the node's dtype
_IDENTITY = {_A.lift_fresh_copy.default, _A.clone.default, _A.alias.default,
             _A.detach.default, _A._to_copy.default, _A.view.default, _A.reshape.default,
             _A._unsafe_view.default, _A.expand.default}
#: operations that are a constant (the second argument, or 0/1) shaped like their input
_FILLS = {_A.zeros_like.default: 0.0, _A.ones_like.default: 1.0, _A.full_like.default: None,
          _A.scalar_tensor.default: None}


@dataclass
class _Value:
    name: str          # C variable or literal
    ctype: str         # its C type
    kind: str          # "call" (once per call), "tensor" (once per tensor), "elem", "const"
    dtype: torch.dtype


#: keyword arguments of the emitted operations: their position among the operands
_KWARG_POSITION = {"alpha": 2, "value": 3, "min": 1, "max": 2}
#: keyword arguments that do not change an identity or a fill
_IGNORED_KWARGS = {"dtype", "device", "layout", "pin_memory", "memory_format", "non_blocking",
                   "requires_grad"}


class _Emitter:
    """Walks the traced graph once, sorting each value into the per-call scalars, the
    per-tensor scalars (they read a 0-d state entry) and the per-element loop, as C."""

    def __init__(self, gm: torch.fx.GraphModule, sig: Signature, written: tuple):
        self.gm, self.sig, self.written = gm, sig, written
        self.t = DTYPES[sig.dtype]
        self.call: list[str] = []
        self.tensor: list[tuple[str, str, str]] = []  # (name, C type, expression)
        self.elem: list[str] = []
        self.values: dict[torch.fx.Node, _Value] = {}

    def run(self) -> str:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        roles = ["g", "p", "step", *[("hp", i) for i in range(len(self.sig.floats))],
                 *[("state", i) for i in range(len(self.sig.state_keys))]]
        for node, role in zip(placeholders, roles):
            self.values[node] = self._input(role)
        for node in self.gm.graph.nodes:
            if node.op == "get_attr":
                self.values[node] = self._constant(getattr(self.gm, node.target))
            elif node.op == "call_function":
                self.values[node] = self._op(node)
            elif node.op == "output":
                return self._source(node.args[0])
        raise Unsupported("the traced graph has no output")

    def _input(self, role) -> _Value:
        dt = self.sig.dtype
        if role in ("g", "p"):
            return _Value(f"{role}_", self.t, "elem", dt)
        if role == "step":
            return _Value("step", "double", "call", torch.float64)
        what, i = role
        if what == "hp":
            return _Value(f"h{i}", "double", "call", torch.float64)
        if self.sig.state_keys[i] in self.sig.scalar_state:
            return _Value(f"((double)Z{i}[t][0])", "double", "tensor", dt)
        return _Value(f"x{i}_", self.t, "elem", dt)

    @staticmethod
    def _constant(value: Any) -> _Value:
        """A Python number, or a one-element constant tensor of the graph, as a C literal."""
        if torch.is_tensor(value):
            if value.numel() != 1:
                raise Unsupported("a constant tensor with more than one element")
            value = value.item()
        return _Value(_literal(value), "double" if isinstance(value, float) else "long long",
                      "const", torch.float64)

    def _operands(self, node: torch.fx.Node) -> list:
        args = [self._arg(a) for a in node.args]
        for k, v in node.kwargs.items():
            if k in _KWARG_POSITION and v is not None:
                pos = _KWARG_POSITION[k]
                args += [None] * (pos + 1 - len(args))
                args[pos] = self._arg(v)
            elif k not in _IGNORED_KWARGS and not (k == "rounding_mode" and v is None) \
                    and v is not None:
                raise Unsupported(f"{node.target} with {k}={v!r}")
        return args

    def _op(self, node: torch.fx.Node) -> _Value:
        val, target = node.meta.get("val"), node.target
        if not torch.is_tensor(val):
            raise Unsupported(f"{target} does not return a tensor")
        scalar = val.dim() == 0
        if not scalar and val.shape != (_TRACE_NUMEL,):
            raise Unsupported(f"{target} makes shape {tuple(val.shape)}: not elementwise")
        args = self._operands(node)
        kinds = {a.kind for a in args if isinstance(a, _Value)}
        if scalar and "elem" in kinds:
            raise Unsupported(f"{target} reduces over elements")
        kind = "elem" if not scalar else ("tensor" if "tensor" in kinds else "call")
        ctype = _ctype(val.dtype, scalar)
        if target in _IDENTITY:
            expr = self._cast(args[0], ctype)
        elif target in _FILLS:
            fill = _FILLS[target]
            value = _literal(fill) if fill is not None else self._cast(
                args[1 if target is _A.full_like.default else 0], ctype)
            expr, kind = f"(({ctype}){value})", ("call" if scalar else "elem")
        elif target in EMITTERS:
            compute = self._compute_type(target, args, ctype, scalar)
            operands = [self._cast(a, compute) for a in args]
            if target is _A.where.self:  # the condition stays a truth value
                operands[0] = self._cast(args[0], "int")
            expr = EMITTERS[target](operands, compute)
            expr = f"(({ctype}){expr})"
        else:
            raise Unsupported(f"operation {target}")
        return self._bind(expr, ctype, kind, val.dtype)

    def _arg(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return self.values[a]
        if isinstance(a, (bool, int, float)):
            return self._constant(a)
        if a is None or isinstance(a, (torch.dtype, torch.device, torch.layout,
                                       torch.memory_format, list, tuple)):
            return None  # dtype and shape arguments of casts and fills
        raise Unsupported(f"argument {a!r}")

    def _compute_type(self, target, args, out: str, scalar: bool) -> str:
        """The C type an operation computes in: its result's, except for comparisons (their
        element inputs' widest float dtype; double for scalars)."""
        if target not in _COMPARE:
            return out
        if scalar:
            return "double"
        floats = [a.dtype for a in args if isinstance(a, _Value) and a.kind == "elem"
                  and a.dtype.is_floating_point]
        if floats:
            return "double" if torch.float64 in floats else "float"
        return "double"

    @staticmethod
    def _cast(a: Any, ctype: str) -> str:
        if a is None:
            return "None"
        return a.name if a.ctype == ctype else f"(({ctype}){a.name})"

    def _bind(self, expr: str, ctype: str, kind: str, dtype) -> _Value:
        name = f"v{len(self.call) + len(self.tensor) + len(self.elem)}"
        if kind in ("call", "const"):
            self.call.append(f"  const {ctype} {name} = {expr};")
            kind = "call"
        elif kind == "tensor":
            self.tensor.append((name, ctype, expr))
        else:
            self.elem.append(f"        const {ctype} {name} = {expr};")
        return _Value(name, ctype, kind, dtype)

    def _value_after_loop(self, v: _Value) -> str:
        """``v`` in the loop that writes 0-d state after the elements: per-tensor scalars
        are read back from their slots."""
        if v.kind == "tensor":
            return f"ts[t * NTS + {[n for n, _, _ in self.tensor].index(v.name)}]"
        if v.kind == "elem":
            raise Unsupported("a 0-d state entry becomes element-wise")
        return v.name

    def _source(self, outputs) -> str:
        outs = [self._arg(o) for o in outputs]
        if any(not isinstance(o, _Value) for o in outs):
            raise Unsupported("an output that is not a tensor")
        delta, new = outs[0], dict(zip(self.written, outs[1:]))
        keys, t = self.sig.state_keys, self.t
        elem_keys = [i for i, k in enumerate(keys) if k not in self.sig.scalar_state]
        scal_keys = [i for i, k in enumerate(keys) if k in self.sig.scalar_state]
        first = (["        G[i] = p_;", f"        P[i] = {self._cast(delta, t)};"]
                 if self.sig.predict else [f"        P[i] = p_ - {self._cast(delta, t)};"])
        stores = first + [  # an entry returned unchanged is not written back
            f"        X{keys.index(k)}[i] = {self._cast(v, t)};"
            for k, v in new.items()
            if k not in self.sig.scalar_state and v.name != f"x{keys.index(k)}_"]
        z_writes = [f"    Z{keys.index(k)}[t][0] = (T){self._value_after_loop(v)};"
                    for k, v in new.items() if k in self.sig.scalar_state]
        args = ["int64_t nt", "const int64_t* off", "T** PP", "T** GG",
                *[f"T** XX{i}" for i in elem_keys], *[f"T** Z{i}" for i in scal_keys],
                "const double* hp", "double step", "double* ts", "int nthreads"]
        lines = [
            _PRELUDE.replace("@T@", t), f"#define NTS {max(len(self.tensor), 1)}",
            f"void mo_step({', '.join(args)}) {{",
            *[f"  const double h{i} = hp[{i}];" for i in range(len(self.sig.floats))],
            *self.call,
            *(["  for (int64_t t = 0; t < nt; ++t) {  /* per-tensor scalars, before any write */",
               *[f"    const {c} {n} = {e}; ts[t * NTS + {j}] = (double){n};"
                 for j, (n, c, e) in enumerate(self.tensor)], "  }"] if self.tensor else []),
            "  const int64_t total = off[nt];",
            "  #pragma omp parallel num_threads(nthreads) if(nthreads > 1 && total >= 65536)",
            "  {",
            "    const int64_t nth = omp_get_num_threads(), tid = omp_get_thread_num();",
            "    const int64_t lo = total * tid / nth, hi = total * (tid + 1) / nth;",
            "    int64_t t = 0;",
            "    while (t < nt && off[t + 1] <= lo) ++t;",
            "    for (; t < nt && off[t] < hi; ++t) {",
            "      const int64_t a = (lo > off[t] ? lo : off[t]) - off[t];",
            "      const int64_t b = (hi < off[t + 1] ? hi : off[t + 1]) - off[t];",
            *[f"      const {c} {n} = ({c})ts[t * NTS + {j}];"
              for j, (n, c, _) in enumerate(self.tensor)],
            "      T* restrict P = PP[t];",
            f"      {'' if self.sig.predict else 'const '}T* restrict G = GG[t];",
            *[f"      T* restrict X{i} = XX{i}[t];" for i in elem_keys],
            "      #pragma omp simd",
            "      for (int64_t i = a; i < b; ++i) {",
            *([] if self.sig.predict else ["        const T g_ = G[i];"]),
            "        const T p_ = P[i];",
            *[f"        const T x{i}_ = X{i}[i];" for i in elem_keys],
            *self.elem, *stores,
            "      }", "    }", "  }",
            *(["  for (int64_t t = 0; t < nt; ++t) {  /* 0-d state, after every element */",
               *z_writes, "  }"] if z_writes else []), "}"]
        return "\n".join(lines) + "\n"


_PRELUDE = r"""#include <tgmath.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
#endif
typedef @T@ T;

/* exp(x) without a library call, so the loop vectorises: x = n ln2 + r, |r| <= ln2/2,
   e^r by a degree-6 polynomial (Cephes' expf coefficients, relative error ~1e-7),
   2^n written into the exponent bits of two factors; inf above the largest float's log, 0 below the
   smallest normal float's (no subnormal results), NaN for NaN. */
static inline float mo_exp_float(float x0) {
  float x = x0 > 88.72283935546875f ? 88.72283935546875f : x0;
  x = x < -87.33654022216797f ? -87.33654022216797f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* rint */
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float y = 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * r * r + r + 1.0f;
  const int32_t k = (int32_t)n, h = k >> 1;  /* 2^n as 2^h 2^(n-h): n reaches 128 */
  union { float f; int32_t i; } s1, s2;
  s1.i = (h + 127) << 23;
  s2.i = (k - h + 127) << 23;
  y = y * s1.f * s2.f;
  y = x0 > 88.72283935546875f ? INFINITY : y;
  return x0 < -87.33654022216797f ? 0.0f : y;
}
static inline double mo_exp_double(double x) { return exp(x); }
"""


def _emit(sig: Signature) -> tuple[str, int]:
    """``sig``'s C source and how many per-tensor scalars it keeps (raises
    :class:`Unsupported`)."""
    gm, written = trace(sig)
    emitter = _Emitter(gm, sig, written)
    return emitter.run(), len(emitter.tensor)


def source(sig: Signature) -> str:
    """The C source of ``sig``'s kernel (raises :class:`Unsupported`)."""
    return _emit(sig)[0]


# --------------------------------------------------------------------------------------------
# building and launching

_P = ctypes.c_void_p
#: signatures whose rule cannot be written as a kernel, with the reason (traced once)
_REFUSED: dict[Signature, str] = {}


@dataclass(frozen=True)
class Kernel:
    """A loaded kernel: the C function and how many per-tensor scalars it keeps."""

    fn: Any
    n_tensor_scalars: int
    library: Any


def _load(source: str):
    """The library of ``source``, built with :data:`FLAGS`, else with the flags of
    :data:`FALLBACK_DROPS` dropped in turn; the first error when none builds."""
    first = None
    for drop in FALLBACK_DROPS:
        try:
            return cbuild.load(source, tuple(f for f in FLAGS if f not in drop), "zoo_step",
                               "metaopt.ckernel")
        except RuntimeError as err:
            first = first or err
    raise first


@functools.lru_cache(maxsize=256)
def _build(sig: Signature) -> Kernel:
    text, n_tensor_scalars = _emit(sig)
    lib = _load(text)
    fn = lib.mo_step
    n_elem = len(sig.state_keys) - len(sig.scalar_state)
    fn.argtypes = ([ctypes.c_int64, _P, _P, _P] + [_P] * n_elem + [_P] * len(sig.scalar_state)
                   + [_P, ctypes.c_double, _P, ctypes.c_int])
    fn.restype = None
    return Kernel(fn, n_tensor_scalars, lib)


def kernel(sig: Signature) -> Kernel:
    """``sig``'s compiled kernel (traced, written, built or loaded from the disk cache, once
    per process). Raises :class:`Unsupported` (remembered: a refused rule is traced once), or
    ``RuntimeError`` when the C compiler fails."""
    if sig in _REFUSED:
        raise Unsupported(_REFUSED[sig])
    try:
        return _build(sig)
    except Unsupported as err:
        _REFUSED[sig] = str(err)
        raise


def signature(update: Callable, hp: Mapping[str, Any], states: list[dict],
              dtype: torch.dtype, predict: bool = False) -> tuple[Signature, list[float]]:
    """The kernel key for one group and its float hyperparameters' values. Raises
    :class:`Unsupported` for a fixed hyperparameter that cannot be part of a key (a list)."""
    fixed, where, values = split_hp(hp)
    first = states[0]
    keys = tuple(first)
    scalar = tuple(k for k in keys if first[k].dim() == 0)
    sig = Signature(update, fixed, where, keys, scalar, dtype, predict)
    try:
        hash(sig)
    except TypeError:
        raise Unsupported("a hyperparameter that is neither a number nor hashable") from None
    return sig, values


def refusal(params: list[Tensor], grads: list[Tensor], states: list[dict], steps) -> str | None:
    """Why a group cannot take a generated kernel's step, or None when it can: it must be on
    the CPU, float32/float64 throughout, dense and contiguous, at one step count, with the
    same state keys on every tensor, each entry shaped like its parameter (or 0-d), and a C
    compiler must be here."""
    p0 = params[0]
    if p0.device.type != "cpu":
        return f"tensors on {p0.device.type}, not the CPU"
    if p0.dtype not in DTYPES:
        return f"dtype {p0.dtype}, not float32 or float64"
    if len(set(steps)) != 1:
        return "tensors at different step counts"
    keys = list(states[0])
    for p, g, st in zip(params, grads, states):
        if _is_subclass(p) or _is_subclass(g):
            return "a tensor subclass (e.g. a DTensor shard): its storage is not its elements"
        if (p.dtype != p0.dtype or g.dtype != p0.dtype or g.is_sparse or p.device != p0.device
                or g.device != p0.device or g.shape != p.shape):
            return "parameters and gradients of mixed dtypes, devices or layouts"
        if not (p.is_contiguous() and g.is_contiguous()):
            return "a non-contiguous parameter or gradient"
        if list(st) != keys or not all(
                torch.is_tensor(v) and not _is_subclass(v) and v.dtype == p0.dtype
                and v.is_contiguous()
                and (v.shape == p.shape or v.dim() == 0) for v in st.values()):
            return "state entries not shaped like their parameters"
    if not cbuild.available():
        return "no C compiler (set $CC)"
    return None


def _is_subclass(t: Tensor) -> bool:
    """A tensor subclass that dispatches its own operations (DTensor, FakeTensor, ...): its
    ``numel`` and ``data_ptr`` do not describe one dense buffer the kernel may write."""
    return type(t).__torch_dispatch__ is not Tensor.__torch_dispatch__


def _pointers(tensors) -> ctypes.Array:
    ptrs = [t.data_ptr() for t in tensors]
    return (ctypes.c_void_p * len(ptrs))(*ptrs)


class Plan:
    """One param group's launch of its kernel, kept between steps: the kernel, the element
    offsets of its tensors and the checks of :func:`refusal` done once. :meth:`matches` says
    whether the group still has the same tensors, state entries and kernel key (``sig``, from
    :func:`signature`, computed once per step by the caller with the hyperparameters' values);
    pointers are read at every step (a parameter's storage can be swapped through
    ``p.data``)."""

    def __init__(self, sig: Signature, params: list[Tensor], states: list[dict]):
        self.sig = sig
        self.kernel = kernel(sig)
        self.params = list(params)
        self.entries = {k: [st[k] for st in states] for k in sig.state_keys}
        self.sizes = [p.numel() for p in params]
        self.off = torch.tensor([0, *self.sizes], dtype=torch.int64).cumsum_(0)
        self.elem = [k for k in sig.state_keys if k not in sig.scalar_state]
        self.ts = torch.empty(max(len(params) * self.kernel.n_tensor_scalars, 1),
                              dtype=torch.float64)
        self.backups: list[Tensor] | None = None  # a predict plan's values to restore

    def matches(self, sig: Signature, params: list[Tensor], states: list[dict]) -> bool:
        """Same kernel key, same tensors, the same state tensors under the same keys."""
        keys = self.sig.state_keys
        return (sig == self.sig and len(params) == len(self.params)
                and all(a is b for a, b in zip(params, self.params))
                and all(len(st) == len(keys) for st in states)
                and all(all(st.get(k) is x for st, x in zip(states, self.entries[k]))
                        for k in keys))

    def run(self, grads: list[Tensor], values: list[float], step_count: int) -> None:
        """One step in place with the float hyperparameters ``values`` (:func:`signature`'s).
        Raises ``ValueError`` (nothing written) for a gradient that is not a dense contiguous
        tensor shaped and typed like its parameter."""
        dtype = self.params[0].dtype
        for p, g, n in zip(self.params, grads, self.sizes):
            if (g.dtype != dtype or g.is_sparse or not g.is_contiguous() or g.numel() != n
                    or g.device.type != "cpu" or p.numel() != n or not p.is_contiguous()):
                raise ValueError("a gradient or parameter changed layout since the kernel's "
                                 "plan was made")
        hp_buf = (ctypes.c_double * max(len(values), 1))(*values)
        self.kernel.fn(len(self.params), self.off.data_ptr(), _pointers(self.params),
                       _pointers(grads),
                       *[_pointers(self.entries[k]) for k in self.elem],
                       *[_pointers(self.entries[k]) for k in self.sig.scalar_state],
                       hp_buf, float(step_count), self.ts.data_ptr(),
                       cbuild.threads(torch.get_num_threads()))

    def predict(self, values: list[float], step_count: int) -> list[Tensor]:
        """A ``predict`` plan's step: every parameter moved in place to its prediction; the
        returned buffers (kept by the plan) hold the values to restore."""
        if self.backups is None:
            self.backups = [torch.empty_like(p) for p in self.params]
        self.run(self.backups, values, step_count)
        return self.backups


def step(update: Callable, params: list[Tensor], grads: list[Tensor], states: list[dict],
         hp: Mapping[str, Any], step_count: int) -> None:
    """One step of the group in place by its generated kernel (the group must pass
    :func:`refusal`). Raises :class:`Unsupported` or ``RuntimeError`` (build) before any
    tensor is written."""
    sig, values = signature(update, hp, states, params[0].dtype)
    Plan(sig, params, states).run(grads, values, step_count)
