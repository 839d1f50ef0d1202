"""``RuleOptimizer``: any :class:`~metaopt.rule.UpdateRule` as a ``torch.optim.Optimizer``.

Param groups carry their own hyperparameters, ``state_dict``/``load_state_dict`` round-trip
the rule's state and step count exactly (a resumed run is bit-identical), closures and
``torch.optim.lr_scheduler`` work as with torch's own optimizers.

Implementation paths (``impl=``), all computing the same function:
  * ``"loop"``: the rule's pure ``update`` per tensor, then ``p -= delta``.
  * ``"fused"``: the rule's own in-place multi-tensor kernel (e.g. torch's fused AdamW).
  * ``"compiled"``: ``torch.compile``d steps with hyperparameters and the step count as 0-d
    tensors (LR schedules change values, not graphs). Elementwise rules run on flat 1-D
    buffers: tensors of at least ``FLAT_BIG_NUMEL`` elements in place by one graph for all
    of them (the byte floor: no extra traffic), smaller ones gathered with ``_foreach_copy_`` into chunks whose state is kept
    flat (``opt.state[p][k]`` are views), so many small tensors cost a few kernels, not a
    few per tensor; the scratch stays below one parameter-sized buffer. Other rules compile
    the per-tensor loop of a whole group.
  * ``"auto"`` (default): fused when the rule has it, else compiled for elementwise rules on
    CUDA, else loop.
Steps that need extra inputs (loss, Hessian-vector products) always take the loop.
A rule with ``predict`` (weight prediction) needs ``step(closure)``: the closure runs with the
parameters moved to their predicted points, which are restored before the update.
"""
from __future__ import annotations

import types
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .dtensor import gather, is_sharded, shard_like
from .rule import UpdateRule

IMPLS = ("auto", "loop", "fused", "compiled")


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that runs an update rule.

    Args:
      params: parameters or param groups (dicts with their own hyperparameters).
      rule: the update rule; its ``hp`` are the defaults.
      impl: ``"auto" | "loop" | "fused" | "compiled"``.
      **hp: hyperparameters overriding the rule's defaults (checked by the rule).
    """

    def __init__(self, params: Iterable, rule: UpdateRule, impl: str = "auto", **hp: Any):
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
        if impl == "fused" and rule.fused is None:
            raise ValueError(f"{rule.name} has no fused implementation; use impl='loop'")
        self.rule = rule.with_hp(**hp)
        self.impl = impl
        self._compiled: Callable | None = None
        self._flat: dict[int, _FlatLayout] = {}
        self._counters: dict[int, _Counters] = {}
        super().__init__(params, dict(self.rule.hp))

    def add_param_group(self, param_group: dict) -> None:
        unknown = sorted(set(param_group) - set(self.rule.hp) - {"params"} - _TORCH_GROUP_KEYS)
        if unknown:
            raise ValueError(
                f"{self.rule.name}: unknown hyperparameter(s) {unknown}; "
                f"allowed: {sorted(self.rule.hp)}"
            )
        super().add_param_group(param_group)
        self.rule.check(self._hp(self.param_groups[-1]))

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader, except that state keeps its saved dtype: torch casts floating state
        to the parameter's dtype, but rules may keep some (e.g. PSGD's float32 factors of a
        bf16 parameter) in another."""
        super().load_state_dict(state_dict)
        self._flat.clear()  # the loaded state replaces the flat buffers' views
        self._counters.clear()
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params):
            for k, v in state_dict["state"].get(pid, {}).items():
                if torch.is_tensor(v) and k != "step" and v.dtype != self.state[p][k].dtype:
                    self.state[p][k] = v.to(device=p.device, copy=True)

    def _hp(self, group: dict) -> dict:
        return {k: group[k] for k in self.rule.hp}

    def _init_state(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state.update(self.rule.init(self._whole(p.detach())))
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None,
             logits: Tensor | None = None, layer_stats: Any = None) -> Tensor | None:
        """One update of every parameter that has a gradient. Returns the closure's loss.

        ``logits`` (with their autograd graph) are needed only by rules that ask for ``"gnb"``
        (Sophia-G's Gauss-Newton-Bartlett estimate) on the steps they ask for it.
        ``layer_stats`` (a :class:`metaopt.zoo.LayerStatistics` of the model, created before
        the forward pass) is needed only by rules that ask for ``"layer"`` or ``"layer_grad"``
        (AdaFisher, MKOR). A rule with ``predict`` requires ``closure`` (it computes the
        gradients at the predicted weights).
        """
        loss = None
        if self.rule.predict is not None:
            if closure is None:
                raise RuntimeError(
                    f"{self.rule.name} evaluates gradients at predicted weights: call "
                    "step(closure) with a closure that computes them (zero_grad, loss, backward)"
                )
            loss = self._closure_at_predictions(closure)
        elif closure is not None:
            with torch.enable_grad():
                loss = closure()
        jobs = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{self.rule.name} does not support sparse gradients")
            if params:
                step = _next_step(self._init_state(params[0]))
                jobs.append((group, params, set(self.rule.needs(self._hp(group), step))))
        needs = set().union(*(n for _, _, n in jobs)) if jobs else set()
        if closure is None and "loss" in needs:
            raise RuntimeError(
                f"{self.rule.name} needs {sorted(needs)} this step: call step(closure)"
            )
        # every extra input is computed before any parameter moves (an in-place update would
        # invalidate the graph that Hessian-vector products of later groups differentiate)
        exts = _extras([(ps, n) for _, ps, n in jobs], loss, logits, self.rule.name,
                       layer_stats)
        if self.rule.reduce is not None:
            self._add_total(jobs, exts)
        for (group, params, group_needs), ext in zip(jobs, exts):
            self._step_group(group, params, ext, bool(group_needs) or "total" in ext)
        return loss

    def _closure_at_predictions(self, closure: Callable[[], Tensor]) -> Tensor:
        """``closure()`` with every parameter that has state moved in place to
        ``rule.predict(param, state, hp, step)`` and restored afterwards (also when the closure
        raises), so its gradients are taken there while the update moves the original weights.
        Parameters without state yet (step 1) stay where they are."""
        originals = []
        for group in self.param_groups:
            hp = self._hp(group)
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    continue
                predicted = self.rule.predict(p, _rule_state(state), hp, _next_step(state))
                originals.append((p, p.clone()))
                p.copy_(predicted)
        try:
            with torch.enable_grad():
                return closure()
        finally:
            for p, original in originals:
                p.copy_(original)

    def _add_total(self, jobs: list, exts: list[dict]) -> None:
        """``ext["total"]``: the rule's ``reduce`` summed over every tensor of every group,
        before any of them moves."""
        total = 0
        for (group, params, _), ext in zip(jobs, exts):
            hp = self._hp(group)
            for i, p in enumerate(params):
                state = self._init_state(p)
                extra = {k: v[i] for k, v in ext.items()}
                g, w = (gather(p.grad), gather(p)) if self._gathers(p) else (p.grad, p)
                total = total + gather(self.rule.reduce(g, w, _rule_state(state), hp,
                                                        _next_step(state), **extra))
        for (_, params, _), ext in zip(jobs, exts):
            ext["total"] = [total] * len(params)

    def _step_group(self, group: dict, params: list[Tensor], ext: dict, needs: bool) -> None:
        hp = self._hp(group)
        layout = self._flat.get(id(group))
        if layout is not None and not needs and layout.matches(params):
            # the group's last step was a flat step over the same tensors: their states and
            # counters are the layout's, so skip rebuilding per-tensor lists (host time)
            self._flat_step(params, [p.grad for p in params], layout.states, hp,
                            self._counters[id(group)].advance_uniform(), id(group), layout)
            return
        states = [self._init_state(p) for p in params]
        counters = self._counters.get(id(group))
        if counters is None or not counters.matches(states):
            counters = self._counters[id(group)] = _Counters(states)
        steps = counters.advance()
        # under no_grad neither a gradient built with create_graph nor the parameter records
        # a graph, so both are used as they are (no per-tensor detach on the hot path)
        grads = [p.grad for p in params]
        rule_states = [_rule_state(s) for s in states]
        impl = self._choose_impl(params, needs)
        if impl == "compiled" and not all(rule_states):  # state created by the first update
            impl = "loop"
        if impl == "fused":
            self.rule.fused(params, grads, rule_states, hp, steps)
            return
        if impl == "compiled":
            self._compiled_step(params, grads, rule_states, hp, steps, id(group))
            return
        self._flat.pop(id(group), None)  # new state tensors replace the flat views
        for i, (p, g, s, st) in enumerate(zip(params, grads, rule_states, steps)):
            extra = {k: v[i] for k, v in ext.items()}
            if self._gathers(p):  # a sharded tensor for a rule that reads the whole of it
                extra = {k: gather(v) if torch.is_tensor(v) else v for k, v in extra.items()}
                delta, new = self.rule.update(gather(g), gather(p), s, hp, st, **extra)
                delta = shard_like(delta, p)
            else:
                delta, new = self.rule.update(g, p, s, hp, st, **extra)
            p.sub_(delta)
            states[i].update(new)

    def _gathers(self, p: Tensor) -> bool:
        """Whether ``p`` is a shard that this rule updates through the gathered tensor
        (:mod:`metaopt.dtensor`)."""
        return not self.rule.elementwise and is_sharded(p)

    def _whole(self, p: Tensor) -> Tensor:
        return gather(p) if self._gathers(p) else p

    def _choose_impl(self, params: list[Tensor], needs: bool) -> str:
        impl = self.impl
        if any(is_sharded(p) for p in params):  # DTensor shards: the rule's own ops
            return "loop"
        if impl == "auto":
            if self.rule.fused is not None:
                impl = "fused"
            elif self.rule.elementwise and params[0].is_cuda:
                impl = "compiled"
            else:
                impl = "loop"
        if impl == "compiled" and needs:  # extra inputs (loss, hvp) go through the loop
            return "loop"
        return impl

    def _compiled_step(self, params, grads, states, hp, steps, key: int) -> None:
        if self._compiled is None:
            self._compiled = compiled_group_step(self.rule)
        dev, dtype = params[0].device, _hp_dtype(params[0].dtype)
        hp_t = {k: _as_tensor(v, dev, dtype) for k, v in hp.items()}
        # the cautious mask rescales by its mean over each tensor: not elementwise across tensors
        elementwise = self.rule.elementwise and not hp.get("cautious", False)
        layout = self._flat.get(key)
        if layout is not None and not layout.matches(params):
            layout = None
        if elementwise and len(set(steps)) == 1 and (layout or _flattenable(params, states)):
            self._flat_step(params, grads, states, hp, steps[0], key, layout)
            return
        self._flat.pop(key, None)  # a layout is kept only while it is the group's last path
        if len(set(steps)) == 1:
            steps_t = torch.full((), float(steps[0]), device=dev, dtype=dtype)
        else:
            steps_t = torch.tensor([float(s) for s in steps], device=dev, dtype=dtype).unbind()
        self._compiled(self.rule.update, params, grads, states, hp_t, steps_t)

    def _flat_step(self, params, grads, states, hp, step: int, key: int,
                   layout: "_FlatLayout | None") -> None:
        """An elementwise rule over flat buffers: large contiguous tensors in place by one
        compiled graph for all of them, the others gathered into chunks whose state lives in
        flat buffers
        (``opt.state[p][k]`` are views of them), so a group of many small tensors costs a few
        kernels instead of a few per tensor. One layout per param group (``key``), rebuilt
        from the current state when the group's tensors with gradients change."""
        if layout is None:
            layout = self._flat[key] = _FlatLayout(params, states)
            for p, st in zip(params, states):  # re-point the optimizer's state at the views
                self.state[p].update(st)
        dev, dtype = params[0].device, _hp_dtype(params[0].dtype)
        hp_t = {k: _as_tensor(v, dev, dtype) for k, v in hp.items()}
        step_t = torch.full((), float(step), device=dev, dtype=dtype)
        layout.step(self.rule, params, grads, hp_t, step_t)


def _rule_state(state: dict) -> dict:
    """A tensor's optimizer state as its rule sees it: everything but the step counter."""
    return {k: v for k, v in state.items() if k != "step"}


def _next_step(state: dict) -> int:
    """The 1-based count of the update about to be made from ``state``."""
    return int(state["step"].item()) + 1


class _Counters:
    """The step counters of one param group's tensors as views of one CPU buffer, so that a
    step advances them all with one op (``opt.state[p]["step"]`` stay 0-d float32 tensors,
    as in torch). Rebuilt when the group's tensors with gradients or their states change."""

    def __init__(self, states: list[dict]):
        self.states = states
        self.buf = torch.stack([s["step"].to(torch.float32) for s in states])
        for i, s in enumerate(states):
            s["step"] = self.buf[i]
        self.views = [s["step"] for s in states]

    def matches(self, states: list[dict]) -> bool:
        return len(states) == len(self.states) and all(
            s is t and s["step"] is v for s, t, v in zip(states, self.states, self.views))

    def advance(self) -> list[int]:
        """Add one to every counter and return the new counts."""
        self.buf += 1
        return [int(v) for v in self.buf.tolist()]

    def advance_uniform(self) -> int:
        """:meth:`advance` for counters known to be equal: the new count."""
        self.buf += 1
        return int(self.buf[0])


def compiled_group_step(rule: UpdateRule) -> Callable:
    """``_inplace_group_step`` under ``torch.compile``: one graph for a whole param group (the
    path of non-elementwise rules). Hyperparameters and steps are 0-d tensors, so schedules
    change values, not graphs."""
    return _compiled_copy(_inplace_group_step, rule, dynamic=False)


#: tensors with at least this many elements are updated in place through 1-D views; smaller
#: ones are gathered into flat chunks (at most ``FLAT_CHUNK_NUMEL`` elements each).
FLAT_BIG_NUMEL = 1 << 22
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
        _COMPILED[key] = torch.compile(copy, dynamic=dynamic)
    return _COMPILED[key]


def _flattenable(params, states) -> bool:
    """Same dtype and device, every state tensor shaped like its parameter."""
    p0 = params[0]
    return all(p.dtype == p0.dtype and p.device == p0.device for p in params) and all(
        torch.is_tensor(v) and v.shape == p.shape and v.dtype == p.dtype
        for p, st in zip(params, states) for v in st.values())


class _FlatLayout:
    """How one param group is laid out for :meth:`RuleOptimizer._flat_step`.

    ``big``: indices of large contiguous tensors (updated in place by one compiled graph).
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
                    if p.numel() >= FLAT_BIG_NUMEL and p.is_contiguous()]
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
        if self.big:  # one graph for all of them: one call, one guard check per step
            compiled_group_step(rule)(update, [params[i] for i in self.big],
                                      [grads[i] for i in self.big],
                                      [self.states[i] for i in self.big], hp, step)
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


def _inplace_group_step(update, params, grads, states, hp, steps) -> None:
    """Every tensor of a group: ``p -= delta`` and the state written back in place. ``steps``
    is one 0-d tensor shared by all tensors, or one per tensor."""
    per_tensor = isinstance(steps, (list, tuple))
    for i, (p, g, s) in enumerate(zip(params, grads, states)):
        delta, new = update(g, p, s, hp, steps[i] if per_tensor else steps)
        p.sub_(delta)
        for k, v in new.items():
            s[k].copy_(v)


def _extras(jobs: list[tuple[list[Tensor], set]], loss: Tensor | None,
            logits: Tensor | None, name: str, layer_stats: Any = None) -> list[dict]:
    """Extra inputs each group's rule asked for, as lists aligned with the group's params:
      * ``"loss"``: the closure's loss;
      * ``"hvp"``: Hessian-vector products ``H u`` with Rademacher probes ``u`` (Hutchinson),
        one ``autograd.grad`` over every group's gradients (built with
        ``backward(create_graph=True)``), probes drawn group by group, tensor by tensor;
      * ``"gnb"``: Sophia-G's Gauss-Newton-Bartlett estimate ``B * g_hat**2`` with
        ``g_hat = grad (1/B) sum_b CE(logits_b, y_b)``, ``y_b ~ softmax(logits_b)``, over the
        ``B`` rows of ``logits`` (Liu et al. 2023, Algorithm 2);
      * ``"layer"`` / ``"layer_grad"``: ``layer_in`` and ``layer_grad_out`` / ``layer_grad``
        of each tensor's layer from ``layer_stats.extras`` (``None`` for a tensor that no
        captured layer owns; see :mod:`metaopt.zoo.layer_stats`).
    """
    exts: list[dict] = [{} for _ in jobs]
    layer_jobs = [i for i, (_, n) in enumerate(jobs) if n & {"layer", "layer_grad"}]
    if layer_jobs and layer_stats is None:
        raise RuntimeError(
            f"{name} needs per-layer statistics: create stats = metaopt.zoo.LayerStatistics("
            "model) before the forward pass and call step(layer_stats=stats)"
        )
    for i in layer_jobs:
        exts[i].update(layer_stats.extras(*jobs[i]))
    if any("loss" in n for _, n in jobs):
        for ext, (ps, n) in zip(exts, jobs):
            if "loss" in n:
                ext["loss"] = [loss.detach()] * len(ps)
    hvp_jobs = [i for i, (_, n) in enumerate(jobs) if "hvp" in n]
    if hvp_jobs:
        params = [p for i in hvp_jobs for p in jobs[i][0]]
        if any(p.grad.grad_fn is None for p in params):
            raise RuntimeError(
                f"{name} needs Hessian-vector products: compute gradients with "
                "loss.backward(create_graph=True)"
            )
        us = [torch.randint_like(p, 0, 2) * 2 - 1 for p in params]
        with torch.enable_grad():
            hvps = torch.autograd.grad([p.grad for p in params], params, us)
        _scatter(exts, jobs, hvp_jobs, {"hvp": [h.detach() for h in hvps], "u": us})
    gnb_jobs = [i for i, (_, n) in enumerate(jobs) if "gnb" in n]
    if gnb_jobs:
        params = [p for i in gnb_jobs for p in jobs[i][0]]
        _scatter(exts, jobs, gnb_jobs, {"gnb": _gnb(params, logits, name)})
    return exts


def _gnb(params: list[Tensor], logits: Tensor | None, name: str) -> list[Tensor]:
    if logits is None or logits.grad_fn is None:
        raise RuntimeError(
            f"{name} needs the model's logits this step: call step(closure, logits=logits) "
            "with logits that still have their graph (backward(retain_graph=True))"
        )
    with torch.enable_grad():
        flat = logits.reshape(-1, logits.shape[-1])
        labels = torch.distributions.Categorical(logits=flat.detach()).sample()
        sampled = torch.nn.functional.cross_entropy(flat, labels)
        ghat = torch.autograd.grad(sampled, params, allow_unused=True)
    b = flat.shape[0]
    return [torch.zeros_like(p) if g is None else b * g * g for p, g in zip(params, ghat)]


def _scatter(exts, jobs, which, values: dict) -> None:
    start = 0
    for i in which:
        n = len(jobs[i][0])
        for k, v in values.items():
            exts[i][k] = v[start:start + n]
        start += n


_TORCH_GROUP_KEYS = {"initial_lr", "name"}
