"""torch.optim's contract for every registered zoo member and the learned optimizer.

A port (written here, from the behaviour they check) of PyTorch's generic optimizer tests,
``test/test_optim.py::TestOptimRenewed`` and the error inputs shared by every optimizer in
``torch/testing/_internal/common_optimizers.py``, driven by one table in the spirit of torch's
``optim_db``: each member's row is its registry entry (:class:`metaopt.zoo.Entry`: sample
hyperparameters, supported dtypes, documented opt-outs); a member without one fails
``test_every_member_has_a_contract_row``. Cases a member opts out of are skipped with the
reason written in its entry; the learned optimizer's opt-outs are listed here
(``LEARNED_OPT_OUT``).

References are independent runs: the same optimizer on contiguous / real / float32 copies,
torch's own Adam/AdamW/SGD, or closed forms.
"""
from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

from metaopt import RuleOptimizer, apply, init_states, zoo

pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph",
                                        "ignore:Full backward hook is firing")

LEARNED = "learned_mlp"
MEMBERS = zoo.names()
SUBJECTS = MEMBERS + [LEARNED]
# cases the learned optimizer opts out of (learned/ is owned by engineer ``learned``)
LEARNED_OPT_OUT = {
    # by design, not failures: the learned optimizer's step size is part of theta
    "tensor_lr": "the learned optimizer has no lr hyperparameter (its step size is learned)",
    "scheduler": "the learned optimizer has no lr hyperparameter (its step size is learned)",
}


# --- building optimizers ------------------------------------------------------------------------

def _sample(name: str) -> dict:
    return {} if name == LEARNED else dict(zoo.entry(name).sample or {})


def _make(name: str, params, **hp) -> torch.optim.Optimizer:
    """The subject over ``params`` with its sample hyperparameters (``hp`` override)."""
    if name == LEARNED:
        import learned

        lopt = learned.MLPLOpt()
        theta = learned.adam_like_theta(lopt, lr=1e-3, generator=torch.Generator().manual_seed(0))
        return learned.LearnedOptimizer(params, lopt, theta, **hp)
    return zoo.create(name, params, **{**_sample(name), **hp})


def _rule(opt):
    return opt.rule


def _needs(opt) -> set:
    rule, hp = _rule(opt), opt.param_groups[0]
    return set().union(*(rule.caps.needs({k: hp[k] for k in rule.hp}, t) for t in range(1, 12)))


def _skip_unless(name: str, case: str) -> None:
    if name == LEARNED:
        if case in LEARNED_OPT_OUT:
            pytest.skip(LEARNED_OPT_OUT[case])
        return
    reason = zoo.entry(name).opt_out.get(case)
    if reason:
        pytest.skip(f"{name} opts out of {case}: {reason}")


def _loss(params) -> torch.Tensor:
    """A smooth non-quadratic loss of any tensors (complex ones through their real view) with
    minimum 0 (Polyak step sizes take the optimal value, 0, as known)."""
    total = 0
    for p in params:
        r = torch.view_as_real(p) if p.is_complex() else p
        r = r.double()
        total = total + 0.5 * (r * r).sum() + 0.1 * (1 - torch.cos(3 * r)).sum() \
            + 0.1 * r.sum() ** 2
    return total


def _step(opt, params, loss_fn=_loss, model=None):
    """One step through a closure; gradients with a graph where the rule needs Hessian-vector
    products, layer statistics where it needs them."""
    needs = _needs(opt)
    stats = zoo.LayerStatistics(model or nn.Sequential()) if needs & {"layer", "layer_grad"} \
        else None

    def closure():
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward(create_graph="hvp" in needs)
        return loss

    kwargs = {"layer_stats": stats} if stats is not None else {}
    opt.step(closure, **kwargs)
    if "hvp" in needs:
        for p in params:
            p.grad = None if p.grad is None else p.grad.detach()


def _params(name, dtype=torch.float64, seed=0, shapes=None):
    if shapes is None:
        matrices = name != LEARNED and zoo.entry(name).matrices_only
        shapes = ((2, 4), (3, 5)) if matrices else ((4,), (3, 5))
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype))
            for s in shapes]


def _train(name, params, steps=3, seed=0, **hp):
    opt = _make(name, params, **hp)
    torch.manual_seed(seed)
    for _ in range(steps):
        _step(opt, params)
    return opt


def _assert_same(a_params, b_params, a_opt=None, b_opt=None, exact=True, **tol):
    check = (lambda x, y: torch.testing.assert_close(x, y, rtol=0, atol=0)) if exact else \
        (lambda x, y: torch.testing.assert_close(x, y, **tol))
    for a, b in zip(a_params, b_params):
        check(a.detach(), b.detach())
        if a_opt is not None:
            sa, sb = a_opt.state[a], b_opt.state[b]
            assert set(sa) == set(sb)
            for k in sa:
                if torch.is_tensor(sa[k]):
                    check(sa[k], sb[k])


# --- the table ----------------------------------------------------------------------------------

def test_every_member_has_a_contract_row():
    missing = [n for n in MEMBERS if zoo.entry(n).sample is None]
    assert not missing, f"members without a contract row (register(..., sample=...)): {missing}"
    for n in MEMBERS:
        e = zoo.entry(n)
        assert set(e.sample) <= set(zoo.defaults(n)), n
        assert all(isinstance(r, str) and len(r) > 10 for r in e.opt_out.values()), n
        assert set(e.opt_out) <= set(CASES), (n, set(e.opt_out) - set(CASES))


# --- construction errors (common_optimizers.get_error_inputs_for_all_optims) ------------------

@pytest.mark.parametrize("name", SUBJECTS)
def test_bare_tensor_is_a_type_error(name):
    _skip_unless(name, "bare_tensor")
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts"):
        _make(name, nn.Parameter(torch.randn(2, 2)))


@pytest.mark.parametrize("name", SUBJECTS)
def test_empty_and_duplicate_params(name):
    _skip_unless(name, "empty_duplicate")
    with pytest.raises(ValueError, match="empty parameter list"):
        _make(name, [])
    p = nn.Parameter(torch.randn(2, 2))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        _make(name, [p, p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        _make(name, [{"params": [p]}, {"params": [p]}])


@pytest.mark.parametrize("name", SUBJECTS)
def test_multi_element_tensor_lr_is_rejected(name):
    _skip_unless(name, "tensor_lr")
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        _make(name, _params(name), lr=torch.tensor([1e-3, 1e-3]))


@pytest.mark.parametrize("name", MEMBERS)
def test_string_hyperparameter_is_rejected(name):
    with pytest.raises(ValueError, match="must be a number"):
        _make(name, _params(name), lr="0.1")


@pytest.mark.parametrize("name", SUBJECTS)
def test_named_params(name):
    """(name, param) pairs work as plain params; names land in the state dict."""
    _skip_unless(name, "named_params")
    ps, qs = _params(name), _params(name)
    a = _make(name, [(f"w{i}", p) for i, p in enumerate(ps)])
    b = _make(name, qs)
    torch.manual_seed(0)
    _step(a, ps)
    torch.manual_seed(0)
    _step(b, qs)
    _assert_same(ps, qs, a, b)
    assert a.state_dict()["param_groups"][0]["param_names"] == ["w0", "w1"]


# --- state ----------------------------------------------------------------------------------

def _resume(name, dtype=torch.float64, mutate=None, load_dtype=None):
    """Train 2 steps, save, load into a fresh optimizer (params cast to ``load_dtype``), and
    continue 2 steps; also return a run that loads the same dict without ``mutate``."""
    ps = _params(name, dtype)
    opt = _train(name, ps, 2)
    sd = copy.deepcopy(opt.state_dict())
    runs = []
    for m in (None, mutate):
        qs = [nn.Parameter(p.detach().clone().to(load_dtype or dtype)) for p in ps]
        o = _make(name, qs)
        d = copy.deepcopy(sd)
        if m is not None:
            m(d)
        o.load_state_dict(d)
        torch.manual_seed(1)
        for _ in range(2):
            _step(o, qs)
        runs.append((qs, o))
    return runs


@pytest.mark.parametrize("name", SUBJECTS)
def test_state_dict_resume_is_exact(name):
    _skip_unless(name, "state_dict")
    ps = _params(name)
    full = _make(name, ps)
    torch.manual_seed(0)
    for t in range(4):
        if t == 2:
            torch.manual_seed(1)
        _step(full, ps)
    (qs, o), _ = _resume(name)
    _assert_same(ps, qs, full, o)


@pytest.mark.parametrize("name", SUBJECTS)
def test_state_dict_with_float_step(name):
    """A state dict whose ``step`` values are Python floats (older torch) loads and steps as
    one with tensor steps."""
    _skip_unless(name, "state_dict")

    def floats(sd):
        for s in sd["state"].values():
            s["step"] = float(s["step"])

    (a, oa), (b, ob) = _resume(name, mutate=floats)
    _assert_same(a, b, oa, ob)


@pytest.mark.parametrize("name", SUBJECTS)
def test_state_is_cast_to_the_params_dtype_on_load(name):
    """Saved from float32 params, loaded into float64 ones: steps like a float64 run whose
    state was cast (torch casts floating state to the parameter's dtype)."""
    _skip_unless(name, "state_dict")
    (qs, o), _ = _resume(name, torch.float32, load_dtype=torch.float64)
    fresh = _train(name, _params(name), 1)
    for q, p in zip(qs, fresh.param_groups[0]["params"]):
        assert q.dtype == torch.float64 and torch.isfinite(q).all()
        for k, v in fresh.state[p].items():
            if torch.is_tensor(v) and k in o.state[q]:
                assert o.state[q][k].dtype == v.dtype, k


@pytest.mark.parametrize("name", SUBJECTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_load_state_dict_pre_hook_result_is_used(name, dtype):
    """The state dict a load pre-hook returns is the one loaded (every floating state tensor
    doubled by the hook arrives doubled, in the dtype the optimizer keeps it in)."""
    _skip_unless(name, "state_dict")
    ps = _params(name, dtype)
    opt = _train(name, ps, 2)
    sd = opt.state_dict()

    def double(optimizer, state_dict):
        state_dict = copy.deepcopy(state_dict)
        for s in state_dict["state"].values():
            for k, v in s.items():
                if k != "step" and torch.is_tensor(v) and v.is_floating_point():
                    s[k] = v * 2
        return state_dict

    fresh = _make(name, ps)
    fresh.register_load_state_dict_pre_hook(double)
    fresh.load_state_dict(sd)
    for p in ps:
        for k, v in opt.state[p].items():
            if k != "step" and torch.is_tensor(v) and v.is_floating_point():
                assert fresh.state[p][k].dtype == v.dtype, k
                torch.testing.assert_close(fresh.state[p][k], v * 2)


@pytest.mark.parametrize("name", SUBJECTS)
def test_state_dict_hooks(name):
    ps = _params(name)
    opt = _train(name, ps, 1)
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("pre"))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load_post"))
    sd = opt.state_dict()
    assert sd["extra"] == 1 and calls == ["pre"]
    del sd["extra"]
    opt.load_state_dict(sd)
    assert calls == ["pre", "load_post"]


def _copies_step_like_the_original(name, copy_fn):
    ps = _params(name)
    opt = _train(name, ps, 2)
    dup = copy_fn({"opt": opt, "ps": ps})
    for k in vars(opt):  # every public attribute survives
        if not k.startswith("_"):
            assert k in vars(dup["opt"]), k
    torch.manual_seed(3)
    _step(opt, ps)
    torch.manual_seed(3)
    _step(dup["opt"], dup["ps"])
    _assert_same(ps, dup["ps"], opt, dup["opt"])


@pytest.mark.parametrize("name", SUBJECTS)
def test_deepcopy_steps_like_the_original(name):
    _skip_unless(name, "deepcopy")
    _copies_step_like_the_original(name, copy.deepcopy)


@pytest.mark.parametrize("name", SUBJECTS)
def test_pickle_steps_like_the_original(name):
    _skip_unless(name, "pickle")
    _copies_step_like_the_original(name, lambda x: pickle.loads(pickle.dumps(x)))


# --- what a step does -----------------------------------------------------------------------

@pytest.mark.parametrize("name", SUBJECTS)
def test_non_contiguous_param_is_updated_in_place_only(name):
    """A parameter that is a strided view of a larger tensor moves like a contiguous copy
    and nothing outside the view is written (torch's fused Adam writes outside it)."""
    base = torch.randn(3, 4, 2, dtype=torch.float64)
    view = nn.Parameter(base[..., 0])
    assert not view.is_contiguous()
    other = base[..., 1].clone()
    ref = nn.Parameter(base[..., 0].clone())
    oa, ob = _make(name, [view]), _make(name, [ref])
    for o, p in ((oa, view), (ob, ref)):
        torch.manual_seed(0)
        for _ in range(3):
            _step(o, [p])
    assert torch.equal(base[..., 1], other)
    torch.testing.assert_close(view.detach(), ref.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SUBJECTS)
def test_channels_last_param(name):
    p = nn.Parameter(torch.randn(2, 3, 2, 2).to(memory_format=torch.channels_last))
    q = nn.Parameter(p.detach().contiguous().clone())
    oa, ob = _make(name, [p]), _make(name, [q])
    for o, t in ((oa, p), (ob, q)):
        torch.manual_seed(0)
        for _ in range(3):
            _step(o, [t])
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SUBJECTS)
def test_mixed_dtypes_in_one_group(name):
    """A group holding float32 and float64 tensors steps each like its own optimizer."""
    _skip_unless(name, "independent_tensors")
    mixed = _params(name, torch.float64)
    mixed[1] = nn.Parameter(mixed[1].detach().float())
    alone = [nn.Parameter(p.detach().clone()) for p in mixed]
    om = _make(name, mixed)
    torch.manual_seed(0)
    for _ in range(2):
        _step(om, mixed)
    for p in alone:
        o = _make(name, [p])
        torch.manual_seed(0)
        for _ in range(2):
            _step(o, [p])
    if _rule(om).caps.reduce is None:  # a reduce sums over the tensors stepped together
        _assert_same(mixed, alone, exact=False, rtol=1e-5, atol=1e-6)
    assert all(p.dtype == q.dtype for p, q in zip(mixed, alone))


@pytest.mark.parametrize("name", SUBJECTS)
def test_params_without_grad_are_left_alone(name):
    ps = _params(name)
    frozen = nn.Parameter(torch.randn(3, 2))
    before = frozen.detach().clone()
    opt = _make(name, ps + [frozen])
    for _ in range(2):
        _step(opt, ps)
    assert torch.equal(frozen, before) and not opt.state[frozen]


@pytest.mark.parametrize("name", SUBJECTS)
def test_zero_grad(name):
    ps = _params(name)
    opt = _train(name, ps, 1)
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.zero_grad(set_to_none=False)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in ps)
    opt.zero_grad()
    assert all(p.grad is None for p in ps)


@pytest.mark.parametrize("name", SUBJECTS)
def test_step_hooks(name):
    ps = _params(name)
    opt = _make(name, ps)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    _step(opt, ps)
    _step(opt, ps)
    assert calls == ["pre", "post", "pre", "post"]


@pytest.mark.parametrize("name", SUBJECTS)
def test_add_param_group(name):
    """A group added mid-run gets its own lr and steps like a fresh optimizer over it."""
    _skip_unless(name, "add_param_group")
    _skip_unless(name, "independent_tensors")
    ps, extra = _params(name), _params(name, seed=1, shapes=((2, 3),))
    opt = _train(name, ps, 1)
    hp = {"lr": opt.param_groups[0]["lr"] * 0.5} if "lr" in opt.param_groups[0] else {}
    opt.add_param_group({"params": extra, **hp})
    ref = [nn.Parameter(p.detach().clone()) for p in extra]
    o_ref = _make(name, ref, **hp)
    torch.manual_seed(0)
    _step(opt, ps + extra)
    torch.manual_seed(0)
    _step(o_ref, ref)
    if _rule(opt).caps.reduce is None:
        _assert_same(extra, ref, exact=False, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        opt.add_param_group({"params": [nn.Parameter(torch.randn(2))], "no_such_key": 1.0})


@pytest.mark.parametrize("name", SUBJECTS)
def test_maximize_is_minimizing_the_negation(name):
    _skip_unless(name, "maximize")
    ps, qs = _params(name), _params(name)
    oa, ob = _make(name, ps, maximize=True), _make(name, qs)
    for _ in range(3):
        torch.manual_seed(0)
        _step(oa, ps, loss_fn=lambda t: -_loss(t))
        torch.manual_seed(0)
        _step(ob, qs)
    _assert_same(ps, qs, exact=False, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SUBJECTS)
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_lr_scheduler(name, tensor_lr):
    """StepLR halving the lr every step (float or 0-d tensor lr) equals setting it by hand."""
    _skip_unless(name, "scheduler")
    lr0 = _make(name, _params(name)).param_groups[0]["lr"]
    ps, qs = _params(name), _params(name)
    oa = _make(name, ps, lr=torch.tensor(float(lr0), dtype=torch.float64) if tensor_lr else lr0)
    ob = _make(name, qs, lr=lr0)
    sched = torch.optim.lr_scheduler.StepLR(oa, step_size=1, gamma=0.5)
    for t in range(3):
        torch.manual_seed(t)
        _step(oa, ps)
        sched.step()
        torch.manual_seed(t)
        _step(ob, qs)
        for g in ob.param_groups:
            g["lr"] = lr0 * 0.5 ** (t + 1)
    assert float(oa.param_groups[0]["lr"]) == pytest.approx(lr0 * 0.5 ** 3)
    _assert_same(ps, qs, exact=False, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", SUBJECTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(name, dtype):
    """bf16/fp16 params stay in their dtype and finite, their state stays in their dtype or a
    wider one, and the steps go downhill (the loss drops, as it does in float32)."""
    _skip_unless(name, "low_precision")
    if name == LEARNED and dtype == torch.float16:
        _skip_unless(name, "float16")
    if name != LEARNED and dtype not in zoo.entry(name).dtypes:
        _skip_unless(name, str(dtype).replace("torch.", ""))
        raise AssertionError(f"{name} leaves out {dtype} without an opt_out reason")
    # small weights, so that steps of the default lr are visible in 8 (bf16) or 11 bits
    ps = _params(name, dtype)
    for p in ps:
        p.data.mul_(0.05)
    start = float(_loss(ps))
    opt = _make(name, ps)
    torch.manual_seed(0)
    for _ in range(5):
        _step(opt, ps)
    for p in ps:
        assert p.dtype == dtype and torch.isfinite(p).all()
        for k, v in opt.state[p].items():
            if torch.is_tensor(v) and v.dim() and v.is_floating_point():
                assert v.dtype in (dtype, torch.float32, torch.float64), (k, v.dtype)
    assert float(_loss(ps)) < start


@pytest.mark.parametrize("name", SUBJECTS)
def test_complex_params(name):
    """Elementwise members update a complex parameter as its view_as_real; the others refuse
    it in one line."""
    _skip_unless(name, "complex")
    g = torch.Generator().manual_seed(0)
    c = nn.Parameter(torch.randn(3, 2, dtype=torch.complex128, generator=g))
    r = nn.Parameter(torch.view_as_real(c.detach()).clone())
    oc = _make(name, [c])
    if not _rule(oc).caps.elementwise:
        with pytest.raises(RuntimeError, match="does not support complex parameters"):
            _step(oc, [c])
        return
    orr = _make(name, [r])
    for _ in range(3):
        torch.manual_seed(0)
        _step(oc, [c])
        torch.manual_seed(0)
        _step(orr, [r])
    torch.testing.assert_close(torch.view_as_real(c.detach()), r.detach(), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("name", MEMBERS)
def test_differentiable_through_apply(name):
    """d loss(after 2 functional steps) / d lr equals a central finite difference (float64)."""
    _skip_unless(name, "differentiable")
    rule = zoo.rule(name, **_sample(name))
    if rule.caps.needs(rule.hp, 1) or rule.caps.predict is not None or rule.caps.reduce is not None:
        pytest.skip(f"{name} takes extra inputs (loss, Hessian products, predictions); "
                    "its hypergradient is covered by its own tests")
    p0 = [p.detach() for p in _params(name, shapes=((3,), (2, 3)))]
    lr0 = float(rule.hp["lr"]) if "lr" in rule.hp else None
    if lr0 is None:
        pytest.skip(f"{name} has no lr")

    def run(lr):
        torch.manual_seed(0)  # members with random probes draw the same ones every run
        ps, st = list(p0), init_states(rule, p0)
        for t in (1, 2):
            gs = torch.autograd.grad(_loss(ps), ps, create_graph=True) if lr.requires_grad \
                else torch.autograd.grad(_loss([p.requires_grad_() for p in ps]), ps)
            ps, st = apply(rule, ps, list(gs), st, t, {"lr": lr})
            if not lr.requires_grad:
                ps = [p.detach() for p in ps]
        return _loss(ps)

    lr = torch.tensor(lr0, dtype=torch.float64, requires_grad=True)
    p0 = [p.requires_grad_() for p in p0]
    (grad,) = torch.autograd.grad(run(lr), lr)
    h = lr0 * 1e-4
    p0 = [p.detach() for p in p0]
    fd = (run(torch.tensor(lr0 + h, dtype=torch.float64))
          - run(torch.tensor(lr0 - h, dtype=torch.float64))) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("name", SUBJECTS)
def test_skip_nonfinite(name):
    """With skip_nonfinite, a step with a non-finite gradient leaves the group untouched and
    counts it; the run then continues exactly as if that step had not happened."""
    _skip_unless(name, "skip_nonfinite")
    ps, qs = _params(name), _params(name)
    oa, ob = _make(name, ps, skip_nonfinite=True), _make(name, qs)
    torch.manual_seed(0)
    _step(oa, ps)
    torch.manual_seed(0)
    _step(ob, qs)
    before = [p.detach().clone() for p in ps]
    state = copy.deepcopy([oa.state[p] for p in ps])

    def poisoned(t):
        return _loss(t) + float("inf") * t[0].sum()
    torch.manual_seed(5)
    _step(oa, ps, loss_fn=poisoned)
    assert oa.param_groups[0]["nonfinite_skips"] == 1
    for p, b, s in zip(ps, before, state):
        assert torch.equal(p, b)
        for k, v in s.items():
            if torch.is_tensor(v):
                assert torch.equal(oa.state[p][k], v), k
    torch.manual_seed(1)
    _step(oa, ps)
    torch.manual_seed(1)
    _step(ob, qs)  # the reference may take a fused kernel: equal to rounding
    _assert_same(ps, qs, oa, ob, exact=False, rtol=1e-12, atol=1e-15)


CASES = {"float16", "bfloat16", "independent_tensors", "bare_tensor", "empty_duplicate", "tensor_lr", "named_params", "state_dict",
         "deepcopy", "pickle", "add_param_group", "maximize", "scheduler", "low_precision",
         "complex", "differentiable", "skip_nonfinite"}


# --- torch's own optimizers' state dicts ---------------------------------------------------------

MIRRORS = [("adam", torch.optim.Adam, {"weight_decay": 0.01}),
           ("adamw", torch.optim.AdamW, {"weight_decay": 0.01}),
           ("amsgrad", lambda ps, **hp: torch.optim.Adam(ps, amsgrad=True, **hp), {}),
           ("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True})]


@pytest.mark.parametrize("name,cls,hp", MIRRORS, ids=[m[0] for m in MIRRORS])
def test_torch_state_dict_loads_into_the_mirror_and_back(name, cls, hp):
    """A torch optimizer's state dict continues in our member exactly as in torch, and ours
    continues in torch's."""
    for src, dst in (("torch", "ours"), ("ours", "torch")):
        ps = _params(name)
        make = {"torch": lambda q: cls(q, **hp), "ours": lambda q: zoo.create(name, q, **hp)}
        first = make[src](ps)
        for _ in range(2):
            _step_plain(first, ps)
        qs = [nn.Parameter(p.detach().clone()) for p in ps]
        second = make[dst](qs)
        second.load_state_dict(copy.deepcopy(first.state_dict()))
        for _ in range(2):
            _step_plain(first, ps)
            _step_plain(second, qs)
        _assert_same(ps, qs, exact=False, rtol=1e-12, atol=1e-14)


def _step_plain(opt, ps):
    opt.zero_grad()
    _loss(ps).backward()
    opt.step()


# --- regressions from issue 15 -------------------------------------------------------------------

def test_default_adam_leaves_the_rest_of_a_strided_base_alone():
    base = torch.randn(4, 3, 2)
    p = nn.Parameter(base[..., 0])
    other = base[..., 1].clone()
    p.grad = torch.ones_like(p)
    zoo.create("adam", [p]).step()
    assert torch.equal(base[..., 1], other)


def test_torch_adamw_state_dict_loads_into_adamw():
    p = nn.Parameter(torch.randn(3))
    t = torch.optim.AdamW([p])
    p.grad = torch.ones(3)
    t.step()
    opt = zoo.create("adamw", [p])
    opt.load_state_dict(t.state_dict())
    assert opt.param_groups[0]["cautious"] is False
    opt.step()


def test_sophia_with_a_gradient_that_does_not_depend_on_the_params():
    """A bias under .sum() has a constant gradient (no graph): its Hessian block is 0."""
    w, b = nn.Parameter(torch.randn(2, 3)), nn.Parameter(torch.randn(2))
    opt = zoo.create("sophia", [w, b], lr=0.01)
    x = torch.randn(5, 3)
    ((x @ w.T) ** 2).sum().add(b.sum()).backward(create_graph=True)
    torch.manual_seed(0)
    opt.step()
    assert torch.equal(opt.state[b]["hessian"], torch.zeros(2))
    assert opt.state[w]["hessian"].abs().sum() > 0


def test_sophia_on_conv_batchnorm():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(12, 2))
    opt = zoo.create("sophia", model.parameters(), lr=0.01)
    x = torch.randn(4, 2, 4, 4)
    loss = model(x).square().mean()
    loss.backward(create_graph=True)
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sophia_without_create_graph_says_so():
    lin = nn.Linear(3, 2)
    opt = zoo.create("sophia", lin.parameters())
    lin(torch.randn(4, 3)).square().sum().backward()
    with pytest.raises(RuntimeError, match="create_graph=True"):
        opt.step()


def test_linalg_failure_is_one_line():
    """A member whose decomposition fails on non-finite statistics says so in one line (and
    skip_nonfinite skips the step instead)."""
    p = nn.Parameter(torch.randn(4, 4))
    opt = zoo.create("shampoo", [p], precondition_frequency=1)
    p.grad = torch.full_like(p, float("nan"))
    with pytest.raises(RuntimeError) as err:
        opt.step()
    assert "\n" not in str(err.value) and str(err.value).startswith("shampoo cannot continue")
    skipping = zoo.create("shampoo", [p], precondition_frequency=1, skip_nonfinite=True)
    before = p.detach().clone()
    skipping.step()
    assert torch.equal(p, before) and skipping.param_groups[0]["nonfinite_skips"] == 1


def test_zoo_create_conveniences():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    opt = zoo.create("adamw", model, decay_groups=True, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert [p.dim() for p in decay["params"]] == [2, 2]
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert decay["param_names"] == ["0.weight", "2.weight"]
    with pytest.raises(TypeError, match="a string"):
        zoo.create(123, model.parameters())
    rule = zoo.rule("adam", lr=0.1)
    assert zoo.create(rule, model.parameters()).param_groups[0]["lr"] == 0.1
    cls = zoo.get("adamw")
    assert issubclass(cls, torch.optim.Optimizer)
    ps, qs = _params("adamw"), _params("adamw")
    oa, ob = cls(ps, lr=0.01), torch.optim.AdamW(qs, lr=0.01)
    for _ in range(3):
        _step_plain(oa, ps)
        _step_plain(ob, qs)
    _assert_same(ps, qs, exact=False, rtol=1e-12, atol=1e-14)
    again = pickle.loads(pickle.dumps(oa))
    assert type(again) is cls and again.rule.name == "adamw"
    with pytest.raises(ValueError, match="lr='0.1': must be a number"):
        zoo.create("adam", model.parameters(), lr="0.1")
