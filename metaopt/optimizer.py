"""``RuleOptimizer``: any :class:`~metaopt.rule.UpdateRule` as a ``torch.optim.Optimizer``.

It keeps torch.optim's contract (checked for every registered member by
``tests/metaopt/test_contract.py``): param groups with their own hyperparameters, closures,
``torch.optim.lr_scheduler`` with float or 0-d tensor ``lr``, step / state-dict hooks,
``state_dict``/``load_state_dict`` round-tripping the rule's state and step count exactly (a
resumed run is bit-identical) and loading torch's own Adam/AdamW/SGD state dicts into the
members that mirror them, ``copy.deepcopy`` and pickling, named parameters, ``.grad = None``
params skipped. Beyond the rule's hyperparameters every group has the adapter's own options:

  * ``maximize`` (default False): ascend the objective (the rule sees ``-grad``, ``-loss`` and
    ``-H u``), as torch's ``maximize=True``;
  * ``skip_nonfinite`` (default False): a group whose gradients or resulting update (new
    parameters or state) are not all finite, or whose rule cannot continue (a failed matrix
    decomposition), is left untouched this step -- parameters, state and step count -- and
    its ``nonfinite_skips`` counter (in the group, so in ``state_dict``) goes up by one: the
    skip of ``torch.amp.GradScaler``, per group, for every member.

Complex parameters are updated as ``torch.view_as_real`` (as torch's elementwise optimizers
do) by elementwise rules; other rules raise a one-line error. The step itself is computed by
one of the paths of :mod:`metaopt.fastpath` (``impl=``), and extra inputs (loss, Hessian-vector
products, ...) come from the providers of :mod:`metaopt.extras`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .dtensor import gather, is_sharded, shard_like
from .extras import extras
from .fastpath import IMPLS, CompiledPaths, choose_impl
from .rule import UpdateRule, check_hp_types

__all__ = ["ADAPTER_DEFAULTS", "IMPLS", "RuleOptimizer"]

#: the adapter's own per-group options (see the module docstring) and their defaults
ADAPTER_DEFAULTS = {"maximize": False, "skip_nonfinite": False, "nonfinite_skips": 0}
#: group keys torch itself writes (schedulers, named parameters)
_TORCH_GROUP_KEYS = {"initial_lr", "name", "param_names"}


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that runs an update rule.

    Args:
      params: parameters, ``(name, parameter)`` pairs, or param groups (dicts with their own
        hyperparameters).
      rule: the update rule; its ``hp`` are the defaults.
      impl: ``"auto" | "loop" | "fused" | "compiled" | "c"`` (see :mod:`metaopt.fastpath`).
      **hp: hyperparameters overriding the rule's defaults (checked by the rule), and the
        adapter's ``maximize`` / ``skip_nonfinite``.
    """

    def __init__(self, params: Iterable, rule: UpdateRule, impl: str = "auto", **hp: Any):
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
        if impl == "fused" and rule.caps.fused is None:
            raise ValueError(f"{rule.name} has no fused implementation; use impl='loop'")
        if impl == "c" and not rule.caps.elementwise:
            raise ValueError(f"{rule.name} is not elementwise, so it has no generated C "
                             "kernel; use impl='auto' or 'loop'")
        own = {k: hp.pop(k) for k in list(hp) if k in ADAPTER_DEFAULTS}
        self.rule = rule.with_hp(**hp)
        self.impl = impl
        self._reset_caches()
        super().__init__(params, {**self.rule.hp, **ADAPTER_DEFAULTS, **own})

    def _reset_caches(self) -> None:
        self._paths = CompiledPaths(self.rule)
        self._counters: dict[int, _Counters] = {}

    # --- pickling and deepcopy: torch keeps only defaults/state/param_groups -------------
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        public = {k: v for k, v in self.__dict__.items()
                  if not k.startswith("_") and k not in state}
        return {**state, **public}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in ADAPTER_DEFAULTS.items():
                group.setdefault(k, v)
        self._reset_caches()

    # --- param groups ---------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        allowed = set(self.rule.hp) | set(ADAPTER_DEFAULTS) | _TORCH_GROUP_KEYS | {"params"}
        unknown = sorted(set(param_group) - allowed)
        if unknown:
            raise ValueError(
                f"{self.rule.name}: unknown hyperparameter(s) {unknown}; "
                f"allowed: {sorted(set(self.rule.hp) | {'maximize', 'skip_nonfinite'})}"
            )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_hp_types(self.rule.name, {**self.rule.hp, **ADAPTER_DEFAULTS}, group)
        lr = group.get("lr")
        if torch.is_tensor(lr) and lr.numel() != 1:  # as torch (other tensor hp may be batched)
            self.param_groups.pop()
            raise ValueError(f"{self.rule.name}: Tensor lr must be 1-element, "
                             f"got shape {tuple(lr.shape)}")
        try:
            self.rule.validate(self._hp(group))
        except ValueError:
            self.param_groups.pop()
            raise

    def _hp(self, group: dict) -> dict:
        return {k: group[k] for k in self.rule.hp}

    # --- state ----------------------------------------------------------------------------
    def _init_state(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state.update(self.rule.init(self._whole(_real(p.detach()))))
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader (pre-hooks, then floating state cast to the parameter's dtype and
        device, then post-hooks), with three additions: state a rule keeps in another dtype than
        its parameter (PSGD's float32 factors of a bf16 parameter) is cast to the dtype the
        rule's ``init`` gives it instead; a float or missing ``step`` becomes a 0-d float32
        tensor (a present state without one, as torch's SGD writes, counts as one step taken);
        keys the saved groups lack (a torch ``AdamW`` state dict has no ``cautious``) take this
        optimizer's defaults, and state keys the rule's ``init`` has but the saved state lacks
        are initialised."""
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        hooks = self._optimizer_load_state_dict_pre_hooks
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        try:
            super().load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks = hooks
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params):
            saved = state_dict["state"].get(pid)
            if saved:
                self._complete_state(p, saved)
        self._reset_caches()  # the loaded state replaces the flat buffers' views and counters

    def _complete_state(self, p: Tensor, saved: dict) -> None:
        state, template = self.state[p], self.rule.init(self._whole(_real(p.detach())))
        for k, v in saved.items():
            if not torch.is_tensor(v) or k == "step":
                continue
            # indices and codes keep their integer dtype
            want = _state_dtype(template.get(k), v, p.dtype) if v.is_floating_point() else v.dtype
            if state[k].dtype != want:
                state[k] = v.to(device=p.device, dtype=want, copy=True)
        step = state.get("step", 1.0)
        if not torch.is_tensor(step) or step.dtype != torch.float32 or step.dim():
            state["step"] = torch.as_tensor(float(step), dtype=torch.float32).reshape(())
        for k, v in template.items():
            state.setdefault(k, v)

    # --- the step -------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, **inputs: Any) -> Tensor | None:
        """One update of every parameter that has a gradient. Returns the closure's loss.

        ``inputs`` are the extra inputs some rules need on some steps, by name (see
        :mod:`metaopt.extras`): ``logits=`` (with their autograd graph) for ``"gnb"``
        (Sophia-G), ``layer_stats=`` (a :class:`metaopt.zoo.LayerStatistics` of the model,
        created before the forward pass) for ``"layer"`` / ``"layer_grad"`` (AdaFisher,
        MKOR). A rule with ``predict`` requires ``closure`` (it computes the gradients at the
        predicted weights).
        """
        loss = None
        if self.rule.caps.predict is not None:
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
                self._check_param(p)
            if params:
                step = _next_step(self._init_state(params[0]))
                jobs.append((group, params, set(self.rule.caps.needs(self._hp(group), step))))
        needs = set().union(*(n for _, _, n in jobs)) if jobs else set()
        if closure is None and "loss" in needs:
            raise RuntimeError(
                f"{self.rule.name} needs {sorted(needs)} this step: call step(closure)"
            )
        if needs and any(p.is_complex() for _, ps, _ in jobs for p in ps):
            raise RuntimeError(f"{self.rule.name} does not support complex parameters on steps "
                               f"that need {sorted(needs)}")
        # every extra input is computed before any parameter moves (an in-place update would
        # invalidate the graph that Hessian-vector products of later groups differentiate)
        grads = {p: p.grad for _, ps, _ in jobs for p in ps}
        exts = extras([(ps, n) for _, ps, n in jobs],
                      dict(inputs, loss=loss, grads=grads), self.rule.name)
        for (group, _, _), ext in zip(jobs, exts):
            if group["maximize"]:
                for k in ("loss", "hvp"):
                    if k in ext:
                        ext[k] = [-v for v in ext[k]]
        if self.rule.caps.reduce is not None:
            self._add_total(jobs, exts)
        for (group, params, group_needs), ext in zip(jobs, exts):
            self._step_group(group, params, ext, bool(group_needs) or "total" in ext)
        return loss

    def _check_param(self, p: Tensor) -> None:
        if p.grad.is_sparse:
            raise RuntimeError(f"{self.rule.name} does not support sparse gradients")
        if p.is_complex() and not self.rule.caps.elementwise:
            raise RuntimeError(
                f"{self.rule.name} does not support complex parameters (it is not elementwise); "
                "elementwise members update them as torch.view_as_real"
            )

    def _closure_at_predictions(self, closure: Callable[[], Tensor]) -> Tensor:
        """``closure()`` with every parameter that has state moved in place to
        ``rule.caps.predict(param, state, hp, step)`` and restored afterwards (also when the closure
        raises), so its gradients are taken there while the update moves the original weights.
        Parameters without state yet (step 1) stay where they are. Under ``impl="auto"`` or
        ``"c"`` on a CPU a group is predicted by one generated kernel (:mod:`metaopt.ckernel`)
        and restored by one multi-tensor copy."""
        originals, restores = [], []
        for group in self.param_groups:
            hp = self._hp(group)
            params = [p for p in group["params"] if self.state[p]]
            if not params:
                continue
            real = [_real(p) for p in params]
            states = [_rule_state(self.state[p]) for p in params]
            steps = [_next_step(self.state[p]) for p in params]
            backups = (self._paths.c_predict(real, states, hp, steps, id(group))
                       if self.impl in ("auto", "c") else None)
            if backups is not None:
                restores.append((real, backups))
                continue
            for r, st, step in zip(real, states, steps):
                predicted = self.rule.caps.predict(r, st, hp, step)
                originals.append((r, r.clone()))
                r.copy_(predicted)
        try:
            with torch.enable_grad():
                return closure()
        finally:
            for real, backups in restores:
                torch._foreach_copy_(real, backups)
            for r, original in originals:
                r.copy_(original)

    def _add_total(self, jobs: list, exts: list[dict]) -> None:
        """``ext["total"]``: the rule's ``reduce`` summed over every tensor of every group,
        before any of them moves."""
        total = 0
        for (group, params, _), ext in zip(jobs, exts):
            hp = self._hp(group)
            for i, p in enumerate(params):
                state = self._init_state(p)
                extra = {k: v[i] for k, v in ext.items()}
                g, w = _grad(p, group), _real(p)
                if self._gathers(w):
                    g, w = gather(g), gather(w)
                total = total + gather(self.rule.caps.reduce(g, w, _rule_state(state), hp,
                                                        _next_step(state), **extra))
        for (_, params, _), ext in zip(jobs, exts):
            ext["total"] = [total] * len(params)

    def _step_group(self, group: dict, params: list[Tensor], ext: dict, needs: bool) -> None:
        hp = self._hp(group)
        plain = not needs and not group["skip_nonfinite"]
        real = [_real(p) for p in params]
        layout = self._paths.flat.get(id(group))
        if layout is not None and plain and layout.matches(real):
            # the group's last step was a flat step over the same tensors: their states and
            # counters are the layout's, so skip rebuilding per-tensor lists (host time)
            self._paths.flat_step(real, [_grad(p, group) for p in params], layout.states, hp,
                                  self._counters[id(group)].advance_uniform(), id(group),
                                  layout, self.state)
            return
        states = [self._init_state(p) for p in params]
        counters = self._counters.get(id(group))
        if counters is None or not counters.matches(states):
            counters = self._counters[id(group)] = _Counters(states)
        steps = counters.advance()
        # under no_grad neither a gradient built with create_graph nor the parameter records
        # a graph, so both are used as they are (no per-tensor detach on the hot path)
        grads = [_grad(p, group) for p in params]
        rule_states = [_rule_state(s) for s in states]
        impl = ("loop" if is_sharded(real[0])  # DTensor shards: the rule's own ops, per tensor
                else choose_impl(self.rule, self.impl, real, grads, plain,
                                 c_kernel=not self._paths.c_failed))
        if impl == "c":  # under "auto", a group the kernel cannot take goes the other way
            if self._paths.c_step(real, grads, rule_states, hp, steps, id(group),
                                  explicit=self.impl == "c"):
                return
            impl = choose_impl(self.rule, self.impl, real, grads, plain, c_kernel=False)
        if impl == "compiled" and not all(rule_states):  # state created by the first update
            impl = "loop"
        cpu_auto = impl == "compiled" and self.impl == "auto" and real[0].device.type == "cpu"
        if cpu_auto:
            impl = self._paths.cpu_auto_impl(real, grads, rule_states, hp, steps, id(group))
        try:
            if impl == "fused":
                self.rule.caps.fused(real, grads, rule_states, hp, steps)
            elif impl == "compiled" and cpu_auto:
                self._paths.step_or_fall_back(real, grads, rule_states, hp, steps, id(group),
                                              self.state)
            elif impl == "compiled":
                self._paths.step(real, grads, rule_states, hp, steps, id(group), self.state)
            elif group["skip_nonfinite"]:
                self._checked_loop(group, real, grads, rule_states, states, steps, ext, counters)
            else:
                self._paths.flat.pop(id(group), None)  # new state tensors replace flat views
                for i, (p, g, s, st) in enumerate(zip(real, grads, rule_states, steps)):
                    extra = {k: v[i] for k, v in ext.items()}
                    delta, new = self._update_one(p, g, s, hp, st, extra)
                    p.sub_(delta)
                    states[i].update(new)
        except torch.linalg.LinAlgError as err:
            if not group["skip_nonfinite"]:
                reason = str(err).strip().splitlines()[0]
                raise torch.linalg.LinAlgError(  # one line; still a LinAlgError for callers
                    f"{self.rule.name} cannot continue at step {max(steps)}: {reason} "
                    "(non-finite or degenerate statistics; pass skip_nonfinite=True to skip "
                    "such steps, or lower lr)") from None

    def _update_one(self, p: Tensor, g: Tensor, state: dict, hp: dict, step, extra: dict):
        """The rule's ``(delta, new_state)`` for one tensor. A shard of a rule that reads whole
        tensors is updated through the gathered tensor (:mod:`metaopt.dtensor`)."""
        if not self._gathers(p):
            return self.rule.update(g, p, state, hp, step, **extra)
        extra = {k: gather(v) if torch.is_tensor(v) else v for k, v in extra.items()}
        delta, new = self.rule.update(gather(g), gather(p), state, hp, step, **extra)
        return shard_like(delta, p), new

    def _gathers(self, p: Tensor) -> bool:
        """Whether ``p`` is a shard this rule updates through the gathered tensor."""
        return not self.rule.caps.elementwise and is_sharded(p)

    def _whole(self, p: Tensor) -> Tensor:
        return gather(p) if self._gathers(p) else p

    def _checked_loop(self, group, params, grads, rule_states, states, steps, ext,
                      counters) -> None:
        """The loop path with ``skip_nonfinite``: every new parameter and state of the group
        is computed first and written only if all of them (and the gradients) are finite; else
        the group is left as it was and its ``nonfinite_skips`` counts one more."""
        self._paths.flat.pop(id(group), None)
        hp = self._hp(group)
        try:
            finite = _all_finite(grads)
            results = []
            for i, (p, g, s, st) in enumerate(zip(params, grads, rule_states, steps)):
                if not finite:
                    break
                extra = {k: v[i] for k, v in ext.items()}
                delta, new = self._update_one(p, g, s, hp, st, extra)
                results.append((p - delta, new))
                finite = _all_finite([results[-1][0], *new.values()])
        except torch.linalg.LinAlgError:
            finite = False
        if not finite:
            counters.retreat()
            group["nonfinite_skips"] += 1
            return
        for (p, (new_p, new)), state in zip(zip(params, results), states):
            p.copy_(new_p)
            state.update(new)


def _state_dtype(template: Any, saved: Tensor, param: torch.dtype) -> torch.dtype:
    """The dtype a loaded floating state tensor gets: that of the rule's initial state for the
    key; for state a rule creates at its first update, the parameter's (as torch), except that
    0-d state (counters) and float32/float64 statistics of a bf16/fp16 parameter keep theirs."""
    if torch.is_tensor(template):
        return template.dtype
    if saved.dim() == 0:  # a counter or scalar statistic
        return saved.dtype
    low = param in (torch.bfloat16, torch.float16)
    return saved.dtype if low and saved.dtype in (torch.float32, torch.float64) else param


def _real(p: Tensor) -> Tensor:
    """A complex tensor as its real view (``[..., 2]``); others as they are."""
    return torch.view_as_real(p) if p.is_complex() else p


def _grad(p: Tensor, group: dict) -> Tensor:
    """The gradient the rule sees: real view for complex parameters, negated for ``maximize``."""
    g = _real(p.grad)
    return -g if group["maximize"] else g


def _all_finite(tensors) -> bool:
    """Whether every floating element of ``tensors`` is finite (one host sync)."""
    checks = [torch.isfinite(t).all() for t in tensors
              if torch.is_tensor(t) and (t.is_floating_point() or t.is_complex())]
    return bool(torch.stack(checks).all()) if checks else True


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

    def retreat(self) -> None:
        """Undo the last :meth:`advance` (a skipped step)."""
        self.buf -= 1
