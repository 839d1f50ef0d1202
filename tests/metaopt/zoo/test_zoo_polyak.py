"""Polyak step sizes (sps, psps, sania) against literal whole-model transcriptions of their
algorithm boxes, plus the papers' closed forms and the zoo's generic checks.

The references below run on ONE flat float64 vector (every tensor of both param groups
concatenated), so the norms are plainly global; they check the rules' per-tensor ``reduce``
shares and the optimizer's sum over param groups. Group hyperparameters enter per coordinate
(lr scales a group's step; beta/alpha/eps shape its preconditioner coordinates); the loss and
``fstar`` are shared. Polyak steps need the loss, so these members are not in
test_zoo_common.py (its loops feed no loss): the same checks (bf16, state_dict, vmap, grad
through steps, bad input, convergence) are written here with the loss supplied.
"""
import copy
import math

import pytest
import torch

from metaopt import apply, init_states, tasks, zoo
from metaopt.zoo.equivalence import make_problem
from metaopt.zoo.polyak import STATE_KEY

from zoo_support import assert_lr_vmap_equals_loop, rosenbrock_grad  # noqa: I001

# Hessian-vector products differentiate gradients built with create_graph on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")

RTOL = 1e-6  # the step-1 fallback of SANIA amplifies rounding to ~1e-7 in 25 steps
CONFIGS = [("sps", {"eta_max": 2.0}), ("psps", {"preconditioner": "adam"}),
           ("psps", {"preconditioner": "adagrad"}), ("psps", {"preconditioner": "hutchinson"}),
           ("sania", {}), ("sania", {"preconditioner": "adam"})]
IDS = [f"{n}-{h.get('preconditioner', 'default')}" for n, h in CONFIGS]


def _hutchinson(hp) -> bool:
    return hp.get("preconditioner") == "hutchinson"


# --- literal transcriptions over the flat parameter vector ------------------------------------

class FlatSPS:
    """SPS_max (Loizou et al. 2021; official ``adapt_flag="constant"``)."""

    def __init__(self, lr, c, eta_max, eps, fstar):
        self.lr, self.c, self.eta_max, self.eps, self.fstar = lr, c, eta_max, eps, fstar
        self.capped = []

    def step(self, x, f, g, t, u, hu):
        gamma = (f - self.fstar) / (self.c * torch.dot(g, g) + self.eps)
        if f < self.fstar:
            gamma = 0.0
        self.capped.append(bool(gamma > self.eta_max))
        gamma = min(gamma, self.eta_max)
        return x - self.lr * gamma * g


class FlatPSPS:
    """PSPS (Abdukhakimov et al. 2023): x <- x - (f - f*) / <g, B^-1 g> B^-1 g."""

    def __init__(self, lr, kind, beta, alpha, eps, fstar, n):
        self.lr, self.kind, self.beta, self.alpha, self.eps, self.fstar = \
            lr, kind, beta, alpha, eps, fstar
        self.state = torch.zeros(n, dtype=torch.float64)

    def step(self, x, f, g, t, u, hu):
        if self.kind == "hutchinson":
            sample = u * hu
            if t == 1:
                self.state = sample
            else:
                self.state = self.beta * self.state + (1 - self.beta) * sample
            b_inv = 1 / torch.maximum(self.state.abs(), self.alpha)
        elif self.kind == "adam":
            self.state = self.beta * self.state + (1 - self.beta) * g * g
            b_inv = 1 / (torch.sqrt(self.state / (1 - self.beta ** t)) + self.eps)
        else:
            self.state = self.state + g * g
            b_inv = 1 / (torch.sqrt(self.state) + self.eps)
        gamma = (f - self.fstar) / torch.dot(g, b_inv * g)
        return x - self.lr * gamma * b_inv * g


class FlatSANIA:
    """SANIA AdaGrad-SQR / Adam-SQR, as the official torch classes compute the step."""

    def __init__(self, lr, kind, beta, eps, n):
        self.lr, self.kind, self.beta, self.eps = lr, kind, beta, eps
        self.state = torch.zeros(n, dtype=torch.float64)
        self.feasible = []

    def step(self, x, f, g, t, u, hu):
        if self.kind == "adagrad":
            self.state = self.state + g * g
            b = torch.maximum(self.state, self.eps)
        else:
            self.state = self.beta * self.state + (1 - self.beta) * g * g
            b = torch.maximum(self.state / (1 - self.beta ** t), self.eps)
        s = g / b
        grad_norm = torch.dot(g, s)
        step_size = 1.0
        self.feasible.append(bool(2 * f < grad_norm))
        if 2 * f <= grad_norm:
            det = 1 - 2 * f / grad_norm
            if det > 0:
                step_size = 1 - torch.sqrt(det)
        return x - self.lr * step_size * s


# --- side by side -------------------------------------------------------------------------

def _minimum(loss, inits) -> float:
    """The exact minimum of make_problem's separable loss, sum_j h_j(p_j) with
    h(p) = a p^2 / 2 + b p + 0.1 sin(3 p): a = h''(0), b = h'(0) - 0.3 (by autograd at 0);
    each minimizer lies in |p| <= (|b| + 0.3) / a, where a grid finds the best basin and
    Newton steps polish it."""
    zeros = [torch.zeros_like(t).requires_grad_() for grp in inits for t in grp]
    grads = torch.autograd.grad(loss(zeros), zeros, create_graph=True)
    curv = torch.autograd.grad(grads, zeros, [torch.ones_like(z) for z in zeros])
    a = torch.cat([c.reshape(-1) for c in curv]).detach()
    b = torch.cat([g.reshape(-1) for g in grads]).detach() - 0.3
    h = lambda p: 0.5 * a * p * p + b * p + 0.1 * torch.sin(3 * p)
    radius = (b.abs() + 0.3) / a
    grid = radius[:, None] * torch.linspace(-1, 1, 4001, dtype=torch.float64)
    p = grid.gather(1, h(grid.T).T.argmin(1, keepdim=True)).squeeze(1)
    for _ in range(8):
        p = p - (a * p + b + 0.3 * torch.cos(3 * p)) / (a - 0.9 * torch.sin(3 * p))
    return float(h(p).sum())


def _per_coordinate(groups, key, params):
    return torch.cat([torch.full((p.numel(),), float(h[key]), dtype=torch.float64)
                      for h, ps in zip(groups, params) for p in ps])


def _side_by_side(name, groups, make_reference, state_key=None, steps=25, shift=True, scale=1.0):
    """Our optimizer (two param groups, closure) and ``reference.step(x, f, g, t, u, Hu)`` on
    the flat vector, from the same start on make_problem's 1-D/2-D/4-D tensors; the loss is
    shifted by its minimum (so f* = 0) unless ``shift`` is False. Same Rademacher draws:
    the CPU generator is reseeded before each."""
    inits, loss = make_problem(n_groups=len(groups))
    low = _minimum(loss, inits) if shift else 0.0
    params = [[t.clone().requires_grad_() for t in grp] for grp in inits]
    flat_params = [p for ps in params for p in ps]
    hutch = any(_hutchinson(h) for h in groups)
    opt = zoo.create(name, [dict(h, params=ps) for h, ps in zip(groups, params)], impl="loop")
    ref = make_reference(lambda key: _per_coordinate(groups, key, params))
    x = torch.cat([p.detach().reshape(-1) for p in flat_params])

    def split(v):
        out, i = [], 0
        for p in flat_params:
            out.append(v[i:i + p.numel()].view_as(p))
            i += p.numel()
        return out

    def closure():
        opt.zero_grad()
        f = scale * (loss(flat_params) - low)
        f.backward(create_graph=hutch)
        return f

    for t in range(1, steps + 1):
        torch.manual_seed(t)
        opt.step(closure)
        torch.manual_seed(t)
        u = torch.cat([(torch.randint_like(p, 0, 2) * 2 - 1).reshape(-1) for p in flat_params])
        xr = x.clone().requires_grad_()
        f = scale * (loss(split(xr)) - low)
        (g,) = torch.autograd.grad(f, xr, create_graph=True)
        (hu,) = torch.autograd.grad(g, xr, u)
        x = ref.step(x, f.detach(), g.detach(), t, u, hu)
        ours = torch.cat([p.detach().reshape(-1) for p in flat_params])
        torch.testing.assert_close(ours, x, rtol=RTOL, atol=1e-10, msg=f"{name} step {t}")
        if state_key is not None:
            got = torch.cat([opt.state[p][state_key].reshape(-1) for p in flat_params])
            torch.testing.assert_close(got, ref.state, rtol=RTOL, atol=1e-10,
                                       msg=f"{name} state step {t}")
    return ref


def test_sps_matches_the_flat_transcription():
    """Unshifted loss with fstar its minimum; eta_max binds on some steps, not all."""
    inits, loss = make_problem()
    fstar = _minimum(loss, inits)
    hp = {"c": 0.5, "eta_max": 0.9, "eps": 1e-8, "fstar": fstar}
    groups = [dict(hp, lr=1.0), dict(hp, lr=0.5)]
    ref = _side_by_side("sps", groups, lambda per: FlatSPS(per("lr"), 0.5, 0.9, 1e-8, fstar),
                        shift=False)
    assert any(ref.capped) and not all(ref.capped)


@pytest.mark.parametrize("kind", ["hutchinson", "adam", "adagrad"])
def test_psps_matches_the_flat_transcription(kind):
    groups = [{"preconditioner": kind, "lr": 0.5, "beta": 0.9, "alpha": 0.5, "eps": 1e-3},
              {"preconditioner": kind, "lr": 0.25, "beta": 0.99, "alpha": 2.0, "eps": 1e-1}]
    ref = lambda per: FlatPSPS(per("lr"), kind, per("beta"), per("alpha"), per("eps"), 0.0,
                               len(per("lr")))
    _side_by_side("psps", groups, ref, state_key=STATE_KEY[kind])


@pytest.mark.parametrize("kind", ["adagrad", "adam"])
def test_sania_matches_the_flat_transcription(kind):
    """Both branches of the step (a feasible constraint, and the fallback step 1) occur: the
    loss is scaled by 0.03 (``||g||^2_{B^-1}`` does not change with the scale, f does)."""
    groups = [{"preconditioner": kind, "lr": 1.0, "beta": 0.9, "eps": 1e-2},
              {"preconditioner": kind, "lr": 0.5, "beta": 0.99, "eps": 1.0}]
    ref = _side_by_side("sania", groups, lambda per: FlatSANIA(
        per("lr"), kind, per("beta"), per("eps"), len(per("lr"))),
        state_key={"adagrad": "sum", "adam": "exp_avg_sq"}[kind], scale=0.03)
    assert any(ref.feasible) and not all(ref.feasible)


# --- closed forms ---------------------------------------------------------------------------

def _train(name, groups, inits, loss, steps, create_graph=False):
    """``name`` on copies of ``inits`` (a list per group) with ``loss`` as the closure; the
    final tensors of every group, flattened and concatenated."""
    params = [[t.clone().requires_grad_() for t in grp] for grp in inits]
    flat = [p for ps in params for p in ps]
    opt = zoo.create(name, [dict(h, params=ps) for h, ps in zip(groups, params)])

    def closure():
        opt.zero_grad()
        f = loss(flat)
        f.backward(create_graph=create_graph)
        return f

    for t in range(steps):
        torch.manual_seed(t)
        opt.step(closure)
    return torch.cat([p.detach().reshape(-1) for p in flat])


@pytest.mark.parametrize("c,remaining", [(0.5, 0.0), (1.0, 0.5)])
def test_sps_first_step_on_a_1d_quadratic_is_the_polyak_step(c, remaining):
    """f = a (x - x*)^2 / 2 with f* = 0: gamma = f / (c f'^2) = 1 / (2 c a), so c = 1/2 lands
    exactly on x* (Polyak's step) and c = 1 goes half way."""
    a, x_star, x0 = 3.0, 0.7, 2.0
    x = torch.tensor([x0], dtype=torch.float64, requires_grad=True)
    opt = zoo.create("sps", [x], c=c, eps=0.0)

    def closure():
        opt.zero_grad()
        f = 0.5 * a * ((x - x_star) ** 2).sum()
        f.backward()
        return f

    opt.step(closure)
    assert abs(x.item() - (x_star + remaining * (x0 - x_star))) < 1e-15


def test_psps_with_the_identity_is_sps_with_c_one_and_no_cap():
    inits, loss = make_problem()
    low = _minimum(loss, inits)
    shifted = lambda ps: loss(ps) - low
    sps_hp = {"c": 1.0, "eta_max": math.inf, "eps": 0.0}
    a = _train("psps", [{"preconditioner": "none"}, {"preconditioner": "none", "lr": 0.5}],
               inits, shifted, 20)
    b = _train("sps", [sps_hp, dict(sps_hp, lr=0.5)], inits, shifted, 20)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_psps_with_the_exact_hessian_diagonal_halves_the_error():
    """On f = sum h (x - x*)^2 / 2 (diagonal, h >= alpha, f* = 0) every Hutchinson sample
    z * (H z) = h exactly, so B = H and gamma = f / <g, H^-1 g> = 1/2: each step halves
    x - x*, in both groups."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(4,), (2, 3)]
    hs = [0.2 + torch.rand(s, generator=gen, dtype=torch.float64) for s in shapes]
    stars = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    inits = [[torch.randn(s, generator=gen, dtype=torch.float64)] for s in shapes]
    loss = lambda ps: sum(0.5 * (h * (p - s) ** 2).sum() for p, h, s in zip(ps, hs, stars))
    hp = {"preconditioner": "hutchinson", "alpha": 0.1, "beta": 0.9}
    x = _train("psps", [hp, hp], inits, loss, 6, create_graph=True)
    x0 = torch.cat([t.reshape(-1) for grp in inits for t in grp])
    star = torch.cat([s.reshape(-1) for s in stars])
    torch.testing.assert_close(x - star, (x0 - star) / 2**6, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("scale,feasible", [(0.03, True), (3.0, False)])
def test_sania_step_solves_the_papers_subproblem(scale, feasible):
    """First AdaGrad-SQR step, B = max(g^2, eps): when 2 f < ||g||^2_{B^-1} the step d solves
    f + <g, d> + d'Bd / 2 = 0 along -B^-1 g with the root nearer x (lambda <= 1); otherwise it
    is the quadratic model's minimizer d = -B^-1 g."""
    inits, loss = make_problem()
    low = _minimum(loss, inits)
    eps = 1e-2
    params = [t.clone().requires_grad_() for grp in inits for t in grp]
    f = scale * (loss(params) - low)
    grads = torch.autograd.grad(f, params)
    g = torch.cat([x.reshape(-1) for x in grads])
    b = torch.clamp(g * g, min=eps)
    x0 = torch.cat([p.detach().reshape(-1) for p in params])
    x1 = _train("sania", [{"eps": eps}, {"eps": eps}], inits,
                lambda ps: scale * (loss(ps) - low), 1)
    d = x1 - x0
    lam = -torch.dot(d, g) / torch.dot(g, g / b)
    torch.testing.assert_close(d, -lam * g / b, rtol=1e-12, atol=1e-15)
    assert bool(2 * f < torch.dot(g, g / b)) == feasible
    if feasible:
        residual = f + torch.dot(g, d) + 0.5 * torch.dot(d, b * d)
        assert abs(residual.item()) < 1e-10 * f.item() and 0 < lam.item() < 1
    else:
        assert lam.item() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("name,hp,invariant", [
    ("sania", {"preconditioner": "adagrad"}, True), ("sania", {"preconditioner": "adam"}, True),
    ("psps", {"preconditioner": "adagrad"}, False)])
def test_sania_iterates_are_invariant_to_a_diagonal_rescaling(name, hp, invariant):
    """SANIA's claim: on g(y) = f(A y), A diagonal (factors 0.1 to 10 here), from y_0 =
    A^-1 x_0, the iterates satisfy A y_t = x_t (the square-root-free preconditioners scale as
    A^2, the gradient as A). PSPS with AdaGrad's square root is not invariant (the contrast
    shows the check can fail). eps is tiny so the floor never binds."""
    inits, loss = make_problem()
    low = _minimum(loss, inits)
    gen = torch.Generator().manual_seed(5)
    scales = [[torch.exp(2.3 * (2 * torch.rand(t.shape, generator=gen, dtype=torch.float64) - 1))
               for t in grp] for grp in inits]
    flat_scales = [s for grp in scales for s in grp]
    f_x = lambda ps: 0.03 * (loss(ps) - low)
    f_y = lambda ps: f_x([a * p for a, p in zip(flat_scales, ps)])
    y_inits = [[t / a for t, a in zip(grp, sgrp)] for grp, sgrp in zip(inits, scales)]
    groups = [dict(hp, eps=1e-30), dict(hp, eps=1e-30, lr=0.5)]
    x = _train(name, groups, inits, f_x, 20)
    y = _train(name, groups, y_inits, f_y, 20)
    a = torch.cat([s.reshape(-1) for s in flat_scales])
    if invariant:
        torch.testing.assert_close(a * y, x, rtol=1e-9, atol=1e-12)
    else:
        assert (a * y - x).abs().max() > 1e-2


# --- the zoo's generic checks, with the loss supplied ------------------------------------

SHAPES = [(5,), (3, 4), (2, 3, 2, 2)]


def _params(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def _loss(params):
    """sum p^2 / 2 + sin p + 1 >= 0.6 per coordinate; gradient p + cos p, Hessian 1 - sin p."""
    return sum((0.5 * p.double() ** 2 + torch.sin(p.double()) + 1).sum() for p in params)


def _train_params(opt, params, steps, create_graph):
    def closure():
        opt.zero_grad()
        f = _loss(params)
        f.backward(create_graph=create_graph)
        return f

    for _ in range(steps):
        opt.step(closure)


def _probes(params):
    """Fixed Rademacher-like probes (alternating signs)."""
    return [1 - 2 * (torch.arange(p.numel()).reshape(p.shape) % 2).to(p.dtype) for p in params]


def _extras(params, hutchinson):
    """The functional path's extras for ``_loss``: the loss, and H u with its probe u."""
    ext = {"loss": _loss(params)}
    if hutchinson:
        us = _probes(params)
        ext.update(u=us, hvp=[(1 - torch.sin(p)) * u for p, u in zip(params, us)])
    return ext


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_bf16_parameters_and_state_stay_bf16(name, hp):
    params = [p.requires_grad_() for p in _params(torch.bfloat16)]
    opt = zoo.create(name, params, **hp)
    torch.manual_seed(0)
    _train_params(opt, params, 3, _hutchinson(hp))
    for p in params:
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
        for k, v in opt.state[p].items():
            if k != "step":
                assert v.dtype == torch.bfloat16, (k, v.dtype)
    rule = zoo.rule(name, **hp)
    ps = [p.detach() for p in params]
    new, _ = apply(rule, ps, [torch.ones_like(p) for p in ps], init_states(rule, ps), 1,
                   **_extras(ps, _hutchinson(hp)))
    assert all(q.dtype == torch.bfloat16 for q in new)


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_state_dict_round_trip_is_exact(name, hp):
    hutch = _hutchinson(hp)
    a = [p.requires_grad_() for p in _params()]
    opt_a = zoo.create(name, a, **hp)
    torch.manual_seed(0)
    _train_params(opt_a, a, 4, hutch)
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_b = zoo.create(name, b, **hp)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for opt, ps in ((opt_a, a), (opt_b, b)):
        torch.manual_seed(1)
        _train_params(opt, ps, 4, hutch)
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def _functional_run(rule, lr, params, states, steps, hutchinson):
    for t in range(1, 4):
        grads = [p + torch.cos(p) for p in params]  # gradient of _loss
        params, states = apply(rule, params, grads, states, steps[t - 1], {"lr": lr},
                               **_extras(params, hutchinson))
    return params


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_tensor_step_and_hp_under_vmap_equal_float_path(name, hp):
    rule = zoo.rule(name, **hp)
    lrs = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    p0 = _params()
    s0 = init_states(rule, p0)
    run = lambda lr, ps, ss, steps: _functional_run(rule, lr, ps, ss, steps, _hutchinson(hp))
    assert_lr_vmap_equals_loop(run, lrs, p0, s0)


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_grad_through_steps_matches_finite_differences(name, hp):
    """d(loss after 3 steps)/d(lr) by torch.func.grad against float64 central differences."""
    rule = zoo.rule(name, **hp)
    p0 = _params(seed=1)
    s0 = init_states(rule, p0)
    final_loss = lambda lr: _loss(_functional_run(rule, lr, p0, s0, [1, 2, 3], _hutchinson(hp)))
    lr = torch.tensor(0.5, dtype=torch.float64)
    got = torch.func.grad(final_loss)(lr)
    h = 1e-6
    fd = (final_loss(lr + h) - final_loss(lr - h)) / (2 * h)
    torch.testing.assert_close(got, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name,hp", CONFIGS + [("sps", {"eps": 0.0})],
                         ids=IDS + ["sps-eps0"])
def test_zero_gradient_is_a_zero_step_with_finite_derivatives(name, hp):
    """At the minimizer of a quadratic f = f* = 0 and g = 0 (the 0/0 of every Polyak step):
    nothing moves, and derivatives through 3 steps are finite (here 0 for lr)."""
    rule = zoo.rule(name, **hp)
    stars = _params(seed=2)
    quad = lambda ps: sum((0.5 * (p - s) ** 2).sum() for p, s in zip(ps, stars))

    def final(lr, x0):
        ps, states = list(x0), init_states(rule, x0)
        for t in range(1, 4):
            ext = {"loss": quad(ps)}
            if _hutchinson(hp):
                ext.update(u=_probes(ps), hvp=_probes(ps))
            ps, states = apply(rule, ps, [p - s for p, s in zip(ps, stars)], states, t,
                               {"lr": lr}, **ext)
        return ps

    lr = torch.tensor(1.0, dtype=torch.float64)
    for p, s in zip(final(lr, stars), stars):
        assert torch.equal(p, s)
    glr, gx = torch.func.grad(lambda lr, x0: sum(p.sum() for p in final(lr, x0)),
                              argnums=(0, 1))(lr, stars)
    assert torch.isfinite(glr) and glr == 0
    assert all(torch.isfinite(g).all() for g in gx)


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_unrolled_gradient_is_finite_with_a_dead_coordinate(name, hp):
    """A column that never gets a gradient (AdaGrad/Adam sums stay exactly 0 there)."""
    rule = zoo.rule(name, **hp)
    loss = lambda x: ((x[:, 0] - 2.0) ** 2).sum()
    hessian_diag = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)

    def final(lr, x):
        state = init_states(rule, [x])
        for t in range(1, 5):
            f, g = loss(x), torch.func.grad(loss)(x)
            ext = {"loss": f}
            if _hutchinson(hp):
                u = _probes([x])[0]
                ext.update(u=[u], hvp=[hessian_diag * u])
            (x,), state = apply(rule, [x], [g], state, t, {"lr": lr}, **ext)
        return x.sum()

    x0 = torch.tensor([[1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    glr, gx = torch.func.grad(final, argnums=(0, 1))(torch.tensor(0.5, dtype=torch.float64), x0)
    assert torch.isfinite(glr) and torch.isfinite(gx).all()


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_step_without_a_closure_is_refused(name, hp):
    p = torch.zeros(2, requires_grad=True)
    opt = zoo.create(name, [p], **hp)
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match=rf"{name} needs .*'loss'.*call step\(closure\)"):
        opt.step()


@pytest.mark.parametrize("name", ["sps", "psps", "sania"])
def test_bad_hyperparameters_are_rejected(name):
    with pytest.raises(ValueError, match=rf"^{name}: invalid lr=-0.1: must be >= 0"):
        zoo.rule(name, lr=-0.1)
    with pytest.raises(ValueError, match="invalid lr"):
        zoo.create(name, [{"params": [torch.zeros(2, requires_grad=True)], "lr": -1.0}])
    p = torch.zeros(4, requires_grad=True)
    opt = zoo.create(name, [p])
    p.grad = torch.zeros(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step(lambda: torch.zeros(()))


def test_psps_hutchinson_without_the_hvp_is_refused_by_name():
    rule = zoo.rule("psps", preconditioner="hutchinson")
    x = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^psps: preconditioner='hutchinson' needs the extras "
                                         r"hvp and u$"):
        apply(rule, [x], [x], init_states(rule, [x]), 1, loss=torch.tensor(1.0))


@pytest.mark.parametrize("name,hp,match", [
    ("sps", {"c": 0.0}, r"sps: invalid c=0.0: must be > 0"),
    ("sps", {"eta_max": -1.0}, r"sps: invalid eta_max=-1.0: must be > 0"),
    ("psps", {"preconditioner": "newton"}, r"psps: invalid preconditioner='newton': must be one"),
    ("psps", {"beta": 1.0}, r"psps: invalid beta=1.0: must be in \[0, 1\)"),
    ("psps", {"alpha": 0.0}, r"psps: invalid alpha=0.0: must be > 0"),
    ("sania", {"preconditioner": "hutchinson"}, r"sania: invalid preconditioner='hutchinson'"),
    ("sania", {"eps": 0.0}, r"sania: invalid eps=0.0: must be > 0")])
def test_member_specific_bad_hyperparameters_are_rejected(name, hp, match):
    with pytest.raises(ValueError, match=match):
        zoo.rule(name, **hp)


# --- convergence (f* = 0), the loss supplied -------------------------------------------------

def _run_functional(rule, x, loss, grad, hvp, steps):
    """``steps`` steps of ``rule`` on one tensor with its loss, gradient and (for
    Hutchinson) ``hvp(x, u)`` with Rademacher probes from the default generator."""
    torch.manual_seed(0)
    state = init_states(rule, [x])
    for t in range(1, steps + 1):
        ext = {"loss": loss(x)}
        if rule.hp.get("preconditioner") == "hutchinson":
            u = torch.randint_like(x, 0, 2) * 2 - 1
            ext.update(u=[u], hvp=[hvp(x, u)])
        (x,), state = apply(rule, [x], [grad(x)], state, t, **ext)
    return x


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_converges_on_quadratic(name, hp):
    task = tasks.get("quadratic", dim=16, cond=10.0, dtype=torch.float64)
    x0, batch = task.init()[0], task.sample_batch()
    loss = lambda x: task.loss([x], batch)
    grad = lambda x: task.h * (x - task.x_star)
    torch.testing.assert_close(grad(x0), torch.func.grad(loss)(x0))
    x = _run_functional(zoo.rule(name, **hp), x0, loss, grad, lambda x, u: task.h * u, 500)
    assert loss(x) < 1e-3 * loss(x0)


def _rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def _rosenbrock_hvp(x, u):
    a, b = x[0], x[1]
    return torch.stack([(2 - 400 * (b - 3 * a * a)) * u[0] - 400 * a * u[1],
                        -400 * a * u[0] + 200 * u[1]])


@pytest.mark.slow
@pytest.mark.parametrize("name,hp,steps", [
    ("sps", {}, 3000), ("psps", {"preconditioner": "hutchinson"}, 3000),
    ("psps", {"preconditioner": "adam"}, 1000), ("psps", {"preconditioner": "adagrad"}, 1000),
    ("sania", {"preconditioner": "adam"}, 2000), ("sania", {"lr": 0.5}, 10_000)])
def test_converges_on_rosenbrock(name, hp, steps):
    """From (0, 0) to (1, 1) within 3e-2 (f* = 0). SANIA AdaGrad-SQR at lr 1 stalls in the
    valley (its B^-1 g shrinks as the squared gradients pile up); at lr 0.5 it gets there."""
    x = _run_functional(zoo.rule(name, **hp), torch.zeros(2, dtype=torch.float64), _rosenbrock,
                        rosenbrock_grad, _rosenbrock_hvp, steps)
    torch.testing.assert_close(x, torch.ones(2, dtype=torch.float64), rtol=3e-2, atol=3e-2)
