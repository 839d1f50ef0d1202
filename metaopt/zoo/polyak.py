"""Polyak step sizes: SPS, PSPS and SANIA. Each takes one step size for the whole model from
the loss and the squared norm of the (preconditioned) gradient over *every* tensor.

``sps``: Stochastic Polyak step size, SPS_max (Loizou, Vaswani, Laradji, Lacoste-Julien,
"Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for Fast Convergence",
AISTATS 2021, arXiv 2002.10542; code: github.com/IssamLaradji/sps, ``sps/sps.py``):

    gamma_t = min( max(f_i(x_t) - fstar, 0) / (c ||g_t||^2 + eps), eta_max )
    x_{t+1} = x_t - lr gamma_t g_t

Defaults (official code): c 0.5, eta_max inf (its ``None``), eps 1e-8, fstar 0. The official
class defaults to ``adapt_flag="smooth_iter"`` (a step size growing by at most
``gamma**(1/n_batches_per_epoch)`` per step, from the SLS paper); this is its ``"constant"``
flag, the paper's SPS_max, which also sets the step to 0 when ``f_i < fstar``.

``psps``: Preconditioned Polyak step size (Abdukhakimov, Xiang, Kamzolov, Takáč, "Stochastic
Gradient Descent with Preconditioned Polyak Step-size", arXiv 2310.02093; code:
github.com/fxrshed/ScaledSPS, ``optimizers.py: PSPS`` and ``utils.py: Hutch``), with a
diagonal preconditioner ``B_t``:

    x_{t+1} = x_t - lr max(f_i(x_t) - fstar, 0) / ||g_t||^2_{B_t^{-1}}  B_t^{-1} g_t,
    ||g||^2_{B^{-1}} = sum_j g_j^2 / B_j

  * ``"none"``: ``B = I`` (SPS with c = 1, no cap, no eps; the official default);
  * ``"hutchinson"``: ``D_t = beta D_{t-1} + (1 - beta) z_t * (H_t z_t)``, ``z_t`` Rademacher,
    ``B_t = max(|D_t|, alpha)`` (OASIS's truncation of the Hutchinson diagonal);
    Hessian-vector products through :class:`~metaopt.optimizer.RuleOptimizer`'s ``"hvp"``
    extra (``loss.backward(create_graph=True)``);
  * ``"adam"``: ``v_t = beta v_{t-1} + (1 - beta) g_t^2``, ``B_t = sqrt(v_t / (1 - beta^t)) + eps``;
  * ``"adagrad"``: ``v_t = v_{t-1} + g_t^2``, ``B_t = sqrt(v_t) + eps``.

Defaults: preconditioner "none", beta 0.999 and alpha 0.1 (the official ``Hutch``), eps 1e-8
(torch.optim.Adam's), fstar 0. The official code starts ``D`` from the mean of 100 Hutchinson
samples at ``x_0``; a rule sees one probe per step, so here ``D_1`` is the first sample
(``D_t`` then follows the EMA). The slack variants (L1/L2) of the paper are not included.

``sania``: SANIA (Abdukhakimov, Xiang, Kamzolov, Gower, Takáč, "SANIA: Polyak-type
Optimization Framework Leads to Scale Invariant Stochastic Algorithms", arXiv 2312.17369;
code: github.com/fxrshed/SANIA, ``SANIA/sania_adagrad_sqr.py``, ``sania_adam_sqr.py``). The
step is the closest point in the ``B_t`` norm on which the quadratic model with curvature
``B_t`` predicts zero loss (interpolation, f* = 0):

    x_{t+1} = argmin_x ||x - x_t||_{B_t}^2
              s.t. f_i(x_t) + <g_t, x - x_t> + 1/2 ||x - x_t||_{B_t}^2 = 0
            = x_t - lr lambda_t B_t^{-1} g_t,
    lambda_t = 1 - sqrt(1 - 2 f_i / ||g_t||^2_{B_t^{-1}})   if 2 f_i < ||g_t||^2_{B_t^{-1}},
               1 (no feasible point: the model's minimizer)  otherwise,

so ``lambda_t <= 1``. The preconditioners drop AdaGrad's and Adam's square root, which makes
the iterates invariant to a diagonal rescaling of the variables (``x = A y``):
AdaGrad-SQR ``B_t = max(sum_{k<=t} g_k^2, eps)``, Adam-SQR ``B_t = max(v_t / (1 - beta^t), eps)``
with ``v_t = beta v_{t-1} + (1 - beta) g_t^2``. Defaults (the official torch classes): lr 1,
eps 0.1, beta 0.999 (their ``betas[1]``; ``betas[0]`` is unused there), preconditioner
"adagrad". ``lambda_t`` is computed as ``2c / (1 + sqrt(1 - 2c))``, ``c = f / ||g||^2``, the
same number without cancellation; a negative loss counts as 0. The official classes take the
norm per param group; here, as in the paper, it spans the whole model.

Common to all three:
  * ``lr`` (default 1, the papers' method) multiplies the step, so schedulers and per-group
    scaling work; every other hyperparameter is read from the tensor's own param group (the
    preconditioner coordinates of a group use that group's beta/alpha/eps), while the sum
    over tensors spans every group.
  * The loss is an input (``needs`` -> ``"loss"``): ``opt.step(closure)``, or
    ``apply(..., loss=loss)``. The whole-model sum arrives as ``total`` (``Capabilities.reduce``).
  * A zero gradient (or zero ``||g||^2_{B^{-1}}``) gives a zero step, without NaN in values or
    in derivatives through the step.
  * No weight decay: the step size is only right for the loss it is given, so put an L2
    term into the loss.
  * Preconditioner state (``hessian``, ``exp_avg_sq`` or ``sum``, as the preconditioner) is
    created by the first update. Low-precision tensors are computed in float32; states
    keep the parameter's dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..helpers import compute_dtype
from ..rule import UpdateRule
from ._scalar import minimum, select
from ._sqrt import sqrt0
from .checks import check_choice, check_min, check_unit
from .registry import member_id, member_rule, register

PSPS_PRECONDITIONERS = ("none", "hutchinson", "adam", "adagrad")
SANIA_PRECONDITIONERS = ("adagrad", "adam")
#: the state each preconditioner keeps (one tensor shaped like the parameter)
STATE_KEY = {"hutchinson": "hessian", "adam": "exp_avg_sq", "adagrad": "sum"}

def safe_ratio(num, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0; the double ``where`` keeps the derivative
    finite at ``den == 0`` (the 0/0 of a zero gradient)."""
    pos = den > 0
    return torch.where(pos, num / torch.where(pos, den, 1), 0)


def _init(p):
    return {}


def _needs_loss(hp, step):
    return frozenset({"loss"})


def _previous(state: dict, key: str, g: Tensor) -> Tensor:
    """The preconditioner's last state (zeros before the first step), in ``g``'s dtype."""
    old = state.get(key)
    return torch.zeros_like(g) if old is None else old.to(g.dtype)


# --- SPS ----------------------------------------------------------------------------------

def sps_step_size(loss, total: Tensor, hp) -> Tensor:
    """SPS_max: ``min(max(f - fstar, 0) / (c ||g||^2 + eps), eta_max)``."""
    gap = torch.clamp(loss - hp["fstar"], min=0)
    return minimum(safe_ratio(gap, hp["c"] * total + hp["eps"]), hp["eta_max"])


def _sps_reduce(g, p, state, hp, step, **ext):
    g = g.to(compute_dtype(g.dtype))
    return (g * g).sum()


def _sps_update(g, p, state, hp, step, loss, total, **ext):
    g = g.to(compute_dtype(g.dtype))
    return (hp["lr"] * sps_step_size(loss, total, hp) * g).to(p.dtype), {}


def _sps_check(hp):
    check_min(hp, "lr")
    check_min(hp, "c", strict=True)
    check_min(hp, "eta_max", strict=True)
    check_min(hp, "eps")


@register("sps", sample={})
def sps() -> UpdateRule:
    return member_rule(
        _init, _sps_update,
        hp={"lr": 1.0, "c": 0.5, "eta_max": float("inf"), "eps": 1e-8, "fstar": 0.0},
        check=_sps_check,
        caps=Capabilities(needs=_needs_loss, elementwise=False, reduce=_sps_reduce),
    )


# --- PSPS ---------------------------------------------------------------------------------

def psps_diagonal(g: Tensor, state: dict, hp, step, ext: dict) -> tuple[Tensor | None, dict]:
    """``(B_t, new_state)``: PSPS's diagonal preconditioner after seeing ``g`` (``None`` for
    the identity). Pure, so ``reduce`` and ``update`` compute the same ``B_t``."""
    kind = hp["preconditioner"]
    if kind == "none":
        return None, {}
    old = _previous(state, STATE_KEY[kind], g)
    beta = hp["beta"]
    if kind == "hutchinson":
        if "hvp" not in ext:
            raise ValueError(f"{member_id(psps)}: preconditioner='hutchinson' needs the extras hvp "
                             "and u")
        sample = (ext["u"] * ext["hvp"]).to(g.dtype)
        keep = select(step == 1, 0.0, beta)  # D_1 is the first sample
        d = keep * old + (1 - keep) * sample
        return torch.clamp(d.abs(), min=hp["alpha"]), {"hessian": d}
    if kind == "adam":
        v = beta * old + (1 - beta) * g * g
        return sqrt0(v / (1 - beta**step)) + hp["eps"], {"exp_avg_sq": v}
    v = old + g * g
    return sqrt0(v) + hp["eps"], {"sum": v}


def _preconditioned(g: Tensor, b: Tensor | None) -> Tensor:
    """``B^{-1} g`` (a zero where ``B`` is 0, which only an all-zero history gives)."""
    return g if b is None else safe_ratio(g, b)


def _psps_reduce(g, p, state, hp, step, **ext):
    g = g.to(compute_dtype(g.dtype))
    b, _ = psps_diagonal(g, state, hp, step, ext)
    return (g * _preconditioned(g, b)).sum()


def _psps_update(g, p, state, hp, step, loss, total, **ext):
    g = g.to(compute_dtype(g.dtype))
    b, new = psps_diagonal(g, state, hp, step, ext)
    gamma = safe_ratio(torch.clamp(loss - hp["fstar"], min=0), total)
    delta = hp["lr"] * gamma * _preconditioned(g, b)
    return delta.to(p.dtype), {k: v.to(p.dtype) for k, v in new.items()}


def _psps_needs(hp, step):
    if hp["preconditioner"] == "hutchinson":
        return frozenset({"loss", "hvp"})
    return frozenset({"loss"})


def _psps_check(hp):
    check_min(hp, "lr")
    check_choice(hp, "preconditioner", PSPS_PRECONDITIONERS)
    check_unit(hp, "beta")
    check_min(hp, "alpha", strict=True)
    check_min(hp, "eps", strict=True)


@register("psps", sample={})
def psps() -> UpdateRule:
    return member_rule(
        _init, _psps_update,
        hp={"lr": 1.0, "preconditioner": "none", "beta": 0.999, "alpha": 0.1, "eps": 1e-8,
            "fstar": 0.0},
        check=_psps_check,
        caps=Capabilities(needs=_psps_needs, elementwise=False, reduce=_psps_reduce),
    )


# --- SANIA --------------------------------------------------------------------------------

def sania_diagonal(g: Tensor, state: dict, hp, step) -> tuple[Tensor, dict]:
    """``(B_t, new_state)``: AdaGrad-SQR ``max(sum g^2, eps)`` or Adam-SQR
    ``max(v / (1 - beta^t), eps)``, square-root free."""
    key = STATE_KEY[hp["preconditioner"]]
    old = _previous(state, key, g)
    if hp["preconditioner"] == "adagrad":
        v = old + g * g
        return torch.clamp(v, min=hp["eps"]), {key: v}
    beta = hp["beta"]
    v = beta * old + (1 - beta) * g * g
    return torch.clamp(v / (1 - beta**step), min=hp["eps"]), {key: v}


def sania_step_size(loss, total: Tensor) -> Tensor:
    """``lambda = 1 - sqrt(1 - 2c)``, ``c = f / ||g||^2_{B^{-1}}``, when ``2 f < ||g||^2``,
    else 1; written ``2c / (1 + sqrt(1 - 2c))``."""
    f = torch.clamp(loss, min=0)
    c = safe_ratio(f, total)
    feasible = 2 * f < total
    root = sqrt0(torch.clamp(1 - 2 * c, min=0))
    return torch.where(feasible, 2 * c / (1 + root), 1)


def _sania_reduce(g, p, state, hp, step, **ext):
    g = g.to(compute_dtype(g.dtype))
    b, _ = sania_diagonal(g, state, hp, step)
    return (g * g / b).sum()


def _sania_update(g, p, state, hp, step, loss, total, **ext):
    g = g.to(compute_dtype(g.dtype))
    b, new = sania_diagonal(g, state, hp, step)
    delta = hp["lr"] * sania_step_size(loss, total) * g / b
    return delta.to(p.dtype), {k: v.to(p.dtype) for k, v in new.items()}


def _sania_check(hp):
    check_min(hp, "lr")
    check_choice(hp, "preconditioner", SANIA_PRECONDITIONERS)
    check_unit(hp, "beta")
    check_min(hp, "eps", strict=True)


@register("sania", sample={})
def sania() -> UpdateRule:
    return member_rule(
        _init, _sania_update,
        hp={"lr": 1.0, "preconditioner": "adagrad", "beta": 0.999, "eps": 0.1},
        check=_sania_check,
        caps=Capabilities(needs=_needs_loss, elementwise=False, reduce=_sania_reduce),
    )
