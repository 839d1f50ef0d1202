"""The adapter's fast paths: one function of a param group, computed in fewer kernels.

:class:`metaopt.optimizer.RuleOptimizer` computes every step as the rule's pure ``update``
per tensor (``impl="loop"``). A fast path computes the same function faster and is chosen by
:func:`choose_impl`:

  * ``"fused"``: the rule's own in-place multi-tensor kernel, the capability ``caps.fused``
    (``fused(params, grads, states, hp, steps) -> None``, must equal ``update``; e.g. torch's
    fused AdamW, or a ``torch._foreach_*`` multi-tensor step). A member adds one by passing
    ``caps=Capabilities(fused=...)`` to its :class:`~metaopt.rule.UpdateRule`; nothing else
    changes. The adapter only calls it on a group whose tensors are dense, contiguous, real,
    of one dtype and device (torch's fused kernels write outside a non-contiguous view), and
    never when the step needs extra inputs or checks its update (``skip_nonfinite``).
  * ``"compiled"``: ``torch.compile``d steps with hyperparameters and the step count as 0-d
    tensors (LR schedules change values, not graphs). Elementwise rules run on flat 1-D
    buffers: tensors of at least ``FLAT_BIG_NUMEL`` elements in place (on CUDA by one graph
    for all of them; on CPU through 1-D views, one call each of one graph compiled with a
    dynamic length), smaller ones gathered with
    ``_foreach_copy_`` into chunks whose state is kept flat (``opt.state[p][k]`` are views),
    so many small tensors cost a few kernels, not a few per tensor; the scratch stays below
    one parameter-sized buffer. Other rules (and state not shaped like the parameters, e.g.
    NAdam's scalar momentum product) compile the per-tensor loop of a whole group; on CPU,
    ``"auto"`` takes the fused fallback instead (such a graph over hundreds of tensors takes
    minutes to compile there).
  * ``"c"``: on a CPU, the rule's generated C kernel (:mod:`metaopt.ckernel`): the whole
    group in one call and one pass over memory, split among torch's threads, built once per
    machine and cached on disk. Elementwise rules whose update uses only the operations the
    generator knows; float32/float64 contiguous tensors.
  * ``"auto"`` (default): a fused path where it is the fastest (torch's own fused kernels);
    on a CPU with a C compiler, else the ``"c"`` kernel for elementwise rules; else the
    compiled path for elementwise rules on CUDA and on CPU groups of at least
    ``CPU_COMPILE_MIN_NUMEL`` elements (with a C++ compiler), else a fallback fused path (the
    zoo's ``torch._foreach_*`` sequences), else the loop. On CPU the compiled step is one
    vectorised pass per tensor (:mod:`metaopt.hoist` keeps Inductor from recomputing scalar
    subexpressions such as ``beta^t`` per vector).
"""
from __future__ import annotations

import functools
import os
import shutil
import types
import warnings
from typing import Any, Callable

import torch
from torch import Tensor

from . import cbuild, ckernel
from .hoist import compile_options
from .rule import UpdateRule

IMPLS = ("auto", "loop", "fused", "compiled", "c")


def choose_impl(rule: UpdateRule, impl: str, params: list[Tensor], grads: list[Tensor],
                plain: bool, c_kernel: bool = True) -> str:
    """The path for one group's step: ``impl`` resolved for ``"auto"``, the loop where a fast
    path cannot run. ``plain``: the step needs no extra inputs and no update check.
    ``c_kernel``: whether ``"auto"`` may take the generated C kernel (False once it failed to
    build or refused this group)."""
    if impl == "auto":
        impl = _auto_impl(rule, params, c_kernel)
    if impl != "loop" and not plain:  # extra inputs (loss, hvp) go through the loop
        return "loop"
    if impl == "fused" and not kernel_safe(params, grads):
        return "loop"
    return impl


def _auto_impl(rule: UpdateRule, params: list[Tensor], c_kernel: bool = True) -> str:
    """A fused path that names this device among those where it is the fastest
    (``fused.devices``; torch's own fused kernels name none, so every device), unless it is a
    zoo ``torch._foreach_*`` sequence (``fused.foreach``) and the generated C kernel can run;
    else, on a CPU with a C compiler, the generated C kernel for elementwise rules (unless
    ``c_kernel`` is False: it was refused); else the compiled single-pass step for
    elementwise rules where compiling pays (:func:`compiling_pays`); else a fused path that
    is only a fallback (the zoo's ``torch._foreach_*`` sequences); else the loop."""
    device = params[0].device.type
    fused = rule.caps.fused
    c_here = c_kernel and c_kernel_runs(rule, device)
    if (fused is not None and device in getattr(fused, "devices", (device,))
            and not (c_here and getattr(fused, "foreach", False))):
        return "fused"
    if c_here:
        return "c"
    if rule.caps.elementwise and compiling_pays(params):
        return "compiled"
    return "fused" if fused is not None else "loop"


def c_kernel_runs(rule: UpdateRule, device: str) -> bool:
    """Whether a generated C kernel (:mod:`metaopt.ckernel`) can serve ``rule`` on this
    device type at all: an elementwise rule, a CPU, a C compiler."""
    return rule.caps.elementwise and device == "cpu" and cbuild.available()


#: on CPU, ``"auto"`` compiles a group's step only from this many elements on: a first
#: compile costs seconds (about 0.5-1 s from Inductor's on-disk cache in a later process),
#: which a group this large repays within a few hundred steps.
CPU_COMPILE_MIN_NUMEL = 1 << 20


def compiling_pays(params: list[Tensor]) -> bool:
    """CUDA: always. CPU: a C++ compiler for Inductor is on the path and the group holds at
    least ``CPU_COMPILE_MIN_NUMEL`` elements. Elsewhere: never."""
    device = params[0].device.type
    if device == "cuda":
        return True
    return (device == "cpu" and sum(p.numel() for p in params) >= CPU_COMPILE_MIN_NUMEL
            and _cxx_available())


@functools.lru_cache(maxsize=1)
def _cxx_available() -> bool:
    return shutil.which(os.environ.get("CXX", "c++")) is not None or shutil.which("g++") is not None


def kernel_safe(params: list[Tensor], grads: list[Tensor]) -> bool:
    """Whether a multi-tensor kernel may run on these tensors: dense, contiguous, real, one
    dtype and one device (torch's fused Adam mis-updates a non-contiguous view and writes
    outside it)."""
    p0 = params[0]
    return all(t.is_contiguous() and not t.is_complex() and not t.is_sparse
               and t.dtype == p0.dtype and t.device == p0.device
               for t in (*params, *grads))


class CompiledPaths:
    """The ``"compiled"`` path of one optimizer: its compiled group step and one flat layout
    per param group (``key``), kept while the group's last step took it."""

    def __init__(self, rule: UpdateRule):
        self.rule = rule
        self._compiled: Callable | None = None
        self.flat: dict[int, _FlatLayout] = {}
        self.failed = False  # a CPU compile failed: "auto" stops choosing this path
        self._worked = False
        self.plans: dict[int, ckernel.Plan] = {}  # the "c" path's launch per param group
        self.predict_plans: dict[int, ckernel.Plan] = {}  # the same for caps.predict
        self.c_failed = False  # a C kernel failed to build: "auto" stops choosing "c"

    def c_step(self, params, grads, states, hp, steps, key: int, explicit: bool) -> bool:
        """The generated C kernel's step of one group (:mod:`metaopt.ckernel`), True when it
        ran. Where it cannot run (a group or rule it does not support, a failed build) the
        caller takes another path (False) under ``"auto"``; under an explicit ``impl="c"``
        that is a ``ValueError`` saying why."""
        try:
            plan, values = self._plan(self.plans, key, self.rule.update, params, grads, states,
                                      hp, steps)
            plan.run(grads, values, steps[0])
        except (ckernel.Unsupported, ValueError) as err:
            self.plans.pop(key, None)
            if explicit:
                raise ValueError(f"{self.rule.name}: impl='c' cannot step this group: "
                                 f"{err}") from None
            return False
        except RuntimeError as err:  # the C compiler failed
            if explicit:
                raise
            self._c_build_failed(err)
            return False
        self.flat.pop(key, None)  # the group's state is no longer a flat layout's concern
        return True

    def c_predict(self, params, states, hp, steps, key: int) -> list[Tensor] | None:
        """The rule's ``caps.predict`` by a generated kernel (one pass over the group): the
        parameters moved in place to their predictions, and the buffers holding their values
        to restore; None where the kernel cannot run (then the caller predicts per tensor)."""
        if self.c_failed or not c_kernel_runs(self.rule, params[0].device.type):
            return None
        try:
            plan, values = self._plan(self.predict_plans, key, self.rule.caps.predict, params,
                                      params, states, hp, steps, predict=True)
            return plan.predict(values, steps[0])
        except (ckernel.Unsupported, ValueError):
            self.predict_plans.pop(key, None)
            return None
        except RuntimeError as err:  # the C compiler failed
            self._c_build_failed(err)
            return None

    @staticmethod
    def _plan(plans: dict, key: int, fn, params, grads, states, hp, steps,
              predict: bool = False) -> tuple[ckernel.Plan, list[float]]:
        """The group's kept plan where it still matches, else a new one (kept), and the float
        hyperparameters' values to run it with. Raises :class:`~metaopt.ckernel.Unsupported`
        for a group the kernel refuses, or the build's ``RuntimeError``; either way no plan is
        kept."""
        plan = plans.pop(key, None)
        sig, values = ckernel.signature(fn, hp, states, params[0].dtype, predict)
        if plan is None or not plan.matches(sig, params, states):
            reason = ckernel.refusal(params, grads, states, steps)
            if reason is not None:
                raise ckernel.Unsupported(reason)
            plan = ckernel.Plan(sig, params, states)
        plans[key] = plan
        return plan, values

    def _c_build_failed(self, err: Exception) -> None:
        """Warn once and stop choosing generated kernels in this optimizer."""
        self.c_failed = True
        warnings.warn(f"{self.rule.name}: building the C kernel failed ({str(err)[:200]}); "
                      "using another path from now on", RuntimeWarning, stacklevel=5)

    def step_or_fall_back(self, params, grads, states, hp, steps, key: int, opt_state) -> None:
        """:meth:`step` where ``"auto"`` chose it on a CPU: if the very first compile fails
        (a C++ toolchain that cannot build Inductor's kernels), warn once and take the rule's
        fused path, or its per-tensor update, for this and every later step."""
        try:
            self.step(params, grads, states, hp, steps, key, opt_state)
            self._worked = True
        except Exception as err:  # noqa: BLE001 - compile errors have many types
            if self._worked:
                raise
            self.failed = True
            self.flat.pop(key, None)
            reason = " ".join(str(err).split())[:200]
            warnings.warn(f"{self.rule.name}: compiling the CPU step failed ({reason}); "
                          "using the uncompiled path from now on (impl='fused' or 'loop' "
                          "avoids this attempt)", RuntimeWarning, stacklevel=4)
            _uncompiled_step(self.rule, params, grads, states, hp, steps)

    def step(self, params, grads, states, hp, steps, key: int, opt_state) -> None:
        """One compiled step of a group; ``opt_state`` (the optimizer's ``state``) is
        re-pointed at the flat buffers' views when a layout is built."""
        if self._compiled is None:
            self._compiled = compiled_group_step(self.rule)
        dev, dtype = params[0].device, _hp_dtype(params[0].dtype)
        hp_t = {k: _as_tensor(v, dev, dtype) for k, v in hp.items()}
        if self.flat_applies(params, states, hp, steps, key):
            self.flat_step(params, grads, states, hp, steps[0], key, self._layout(params, key),
                           opt_state)
            return
        self.flat.pop(key, None)  # a layout is kept only while it is the group's last path
        if len(set(steps)) == 1:
            steps_t = torch.full((), float(steps[0]), device=dev, dtype=dtype)
        else:
            steps_t = torch.tensor([float(s) for s in steps], device=dev, dtype=dtype).unbind()
        self._compiled(self.rule.update, params, grads, states, hp_t, steps_t)

    def cpu_auto_impl(self, params, grads, states, hp, steps, key: int) -> str:
        """Where ``"auto"`` chose the compiled path on a CPU: ``"compiled"`` for the flat path
        (unless a compile failed before), else :func:`uncompiled_impl` (a graph over a whole
        group of many tensors compiles for minutes on a CPU)."""
        if not self.failed and self.flat_applies(params, states, hp, steps, key):
            return "compiled"
        return uncompiled_impl(self.rule, params, grads)

    def flat_applies(self, params, states, hp, steps, key: int) -> bool:
        """Whether this group's compiled step runs over flat buffers (one vectorised pass per
        tensor or chunk): an elementwise rule, one step count, every state tensor shaped like
        its parameter. Otherwise the compiled step is one graph over the whole group, whose
        compile time grows with the number of tensors."""
        # the cautious mask rescales by its mean over each tensor: not elementwise across tensors
        elementwise = self.rule.caps.elementwise and not hp.get("cautious", False)
        return elementwise and len(set(steps)) == 1 and (
            self._layout(params, key) is not None or _flattenable(params, states))

    def _layout(self, params, key: int) -> "_FlatLayout | None":
        layout = self.flat.get(key)
        return layout if layout is not None and layout.matches(params) else None

    def flat_step(self, params, grads, states, hp, step: int, key: int,
                  layout: "_FlatLayout | None", opt_state) -> None:
        """An elementwise rule over flat buffers: large contiguous tensors in place by one
        compiled graph for all of them, the others gathered into chunks whose state lives in
        flat buffers (``opt.state[p][k]`` are views of them), so a group of many small tensors
        costs a few kernels instead of a few per tensor. One layout per param group (``key``),
        rebuilt from the current state when the group's tensors with gradients change."""
        if layout is None:
            layout = self.flat[key] = _FlatLayout(params, states)
            for p, st in zip(params, states):  # re-point the optimizer's state at the views
                opt_state[p].update(st)
        dev, dtype = params[0].device, _hp_dtype(params[0].dtype)
        hp_t = {k: _as_tensor(v, dev, dtype) for k, v in hp.items()}
        step_t = torch.full((), float(step), device=dev, dtype=dtype)
        layout.step(self.rule, params, grads, hp_t, step_t)


def compiled_group_step(rule: UpdateRule) -> Callable:
    """``_inplace_group_step`` under ``torch.compile``: one graph for a whole param group (the
    path of non-elementwise rules). Hyperparameters and steps are 0-d tensors, so schedules
    change values, not graphs."""
    return _compiled_copy(_inplace_group_step, rule, dynamic=False)


#: tensors with at least this many elements are updated in place through 1-D views; smaller
#: ones are gathered into flat chunks (at most ``FLAT_CHUNK_NUMEL`` elements each).
FLAT_BIG_NUMEL = 1 << 18
FLAT_CHUNK_NUMEL = 1 << 24
_COMPILED: dict[tuple, Callable] = {}


def _flat_update(update, p, g, state, hp, step) -> None:
    """``p -= delta`` and the state written back, on 1-D tensors of any length."""
    delta, new = update(g, p, state, hp, step)
    p.sub_(delta)
    for k, v in new.items():
        state[k].copy_(v)


def flat_update(rule: UpdateRule) -> Callable:
    """:func:`_flat_update` for ``rule``, compiled once with a dynamic length."""
    return _compiled_copy(_flat_update, rule, dynamic=True)


def _compiled_copy(fn: Callable, rule: UpdateRule, dynamic: bool) -> Callable:
    """``torch.compile`` of a copy of ``fn`` with its own code object per rule: dynamo keeps
    its graphs (and its recompilation limit) per code object, so rules sharing one ``fn``
    would evict each other's graphs and fall back to eager after a few members."""
    key = (fn, rule.update, dynamic)
    if key not in _COMPILED:
        code = fn.__code__.replace(co_name=f"{fn.__name__}__{rule.name}")
        copy = types.FunctionType(code, fn.__globals__, code.co_name)
        _COMPILED[key] = torch.compile(copy, dynamic=dynamic, options=compile_options())
    return _COMPILED[key]


def _flattenable(params, states) -> bool:
    """Same dtype and device, every state tensor shaped like its parameter."""
    p0 = params[0]
    return all(p.dtype == p0.dtype and p.device == p0.device for p in params) and all(
        torch.is_tensor(v) and v.shape == p.shape and v.dtype == p.dtype
        for p, st in zip(params, states) for v in st.values())


class _FlatLayout:
    """How one param group is laid out for :meth:`RuleOptimizer._flat_step`.

    ``big``: indices of large contiguous tensors (updated in place: one compiled graph for all
    of them on CUDA, one call of the compiled flat graph each on CPU).
    ``chunks``: lists of indices of the others; each chunk owns one flat buffer per state key
    (the group's state tensors become views of it) and shares two scratch buffers (parameters
    and gradients gathered by ``_foreach_copy_``) with the other chunks. The scratch is at
    most ``FLAT_CHUNK_NUMEL`` and about half the small tensors' size, so the extra memory
    stays below one parameter-sized buffer.
    """

    def __init__(self, params, states):
        self.ids = [id(p) for p in params]
        self.states = states
        self.big = [i for i, p in enumerate(params)
                    if p.numel() >= FLAT_BIG_NUMEL and p.is_contiguous()
                    and all(v.is_contiguous() for v in states[i].values())]
        small = [i for i in range(len(params)) if i not in set(self.big)]
        total = sum(params[i].numel() for i in small)
        cap = min(FLAT_CHUNK_NUMEL, max(1, -(-total // 2)))
        self.chunks: list[list[int]] = []
        for i in small:
            if not self.chunks or sum(params[j].numel() for j in self.chunks[-1]) + \
                    params[i].numel() > cap:
                self.chunks.append([])
            self.chunks[-1].append(i)
        longest = max((sum(params[j].numel() for j in c) for c in self.chunks), default=0)
        p0 = params[0]
        self.scratch_p = torch.empty(longest, dtype=p0.dtype, device=p0.device)
        self.scratch_g = torch.empty_like(self.scratch_p)
        self.state_bufs = [self._flatten_state(c, params, states) for c in self.chunks]
        self.sizes = [sum(params[i].numel() for i in c) for c in self.chunks]
        self.views = [(_views(self.scratch_p, [params[i] for i in c]),
                       _views(self.scratch_g, [params[i] for i in c])) for c in self.chunks]

    def matches(self, params) -> bool:
        return list(map(id, params)) == self.ids

    @staticmethod
    def _flatten_state(chunk, params, states) -> dict:
        keys = list(states[chunk[0]])
        n = sum(params[i].numel() for i in chunk)
        bufs = {k: torch.empty(n, dtype=params[chunk[0]].dtype, device=params[0].device)
                for k in keys}
        for k, buf in bufs.items():
            views = _views(buf, [params[i] for i in chunk])
            for i, v in zip(chunk, views):
                v.copy_(states[i][k])
                states[i][k] = v
        return bufs

    def step(self, rule, params, grads, hp, step) -> None:
        fn, update = flat_update(rule), rule.update
        if self.big and params[0].device.type != "cpu":  # one graph for all of them: one
            # call, one guard check per step (CUDA: host time per call matters most)
            compiled_group_step(rule)(update, [params[i] for i in self.big],
                                      [grads[i] for i in self.big],
                                      [self.states[i] for i in self.big], hp, step)
        elif self.big:  # CPU: in place through 1-D views, one call of one graph per tensor
            # (a graph over many tensors compiles for minutes on a CPU)
            for i in self.big:
                fn(update, params[i].view(-1), grads[i].reshape(-1),
                   {k: v.view(-1) for k, v in self.states[i].items()}, hp, step)
        for chunk, n, bufs, (pv, gv) in zip(self.chunks, self.sizes, self.state_bufs, self.views):
            ps = [params[i] for i in chunk]
            torch._foreach_copy_(pv, ps)
            torch._foreach_copy_(gv, [grads[i] for i in chunk])
            fn(update, self.scratch_p[:n], self.scratch_g[:n], bufs, hp, step)
            torch._foreach_copy_(ps, pv)


def _views(buf: Tensor, like: list[Tensor]) -> list[Tensor]:
    """Consecutive views of the flat ``buf`` shaped like the tensors in ``like``."""
    out, offset = [], 0
    for t in like:
        out.append(buf[offset:offset + t.numel()].view(t.shape))
        offset += t.numel()
    return out


def _hp_dtype(param_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if param_dtype == torch.float64 else torch.float32


def _as_tensor(v: Any, device, dtype) -> Any:
    """Float hyperparameters (also inside tuples like ``betas``) as 0-d tensors; the rest as is."""
    if isinstance(v, float):
        return torch.tensor(v, device=device, dtype=dtype)
    if isinstance(v, tuple) and all(isinstance(x, float) for x in v):
        return tuple(torch.tensor(x, device=device, dtype=dtype) for x in v)
    return v


def uncompiled_impl(rule: UpdateRule, params: list[Tensor], grads: list[Tensor]) -> str:
    """The path where a CPU step is not compiled: the rule's fused path where it may run
    (:func:`kernel_safe`), else the loop."""
    return "fused" if rule.caps.fused is not None and kernel_safe(params, grads) else "loop"


def _uncompiled_step(rule: UpdateRule, params, grads, states, hp, steps) -> None:
    """:func:`uncompiled_impl`'s path, in place (the loop as the rule's update per tensor)."""
    if uncompiled_impl(rule, params, grads) == "fused":
        rule.caps.fused(params, grads, states, hp, steps)
    else:
        _inplace_group_step(rule.update, params, grads, states, hp, steps)


def _inplace_group_step(update, params, grads, states, hp, steps) -> None:
    """Every tensor of a group: ``p -= delta`` and the state written back in place. ``steps``
    is one 0-d tensor shared by all tensors, or one per tensor."""
    per_tensor = isinstance(steps, (list, tuple))
    for i, (p, g, s) in enumerate(zip(params, grads, states)):
        delta, new = update(g, p, s, hp, steps[i] if per_tensor else steps)
        p.sub_(delta)
        for k, v in new.items():
            s[k].copy_(v)

