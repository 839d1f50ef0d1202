"""Math-L2O: Liu, Chen, Chen, Yin & Chen (2023), "Towards Constituting Mathematical Structures
for Learning to Optimize" (ICML; arXiv 2305.18577; reference code xhchrn/MS4L2O).

For ``min_x F(x) = f(x) + r(x)`` with ``f`` L-smooth and ``r = lam ||.||_1`` a coordinatewise
LSTM on ``[grad f(x), x]`` produces, per coordinate, a preconditioner P, a mixing weight B, a
momentum A and two biases B1, B2, which enter a proximal-gradient template (paper eqs. 18-19):

    a       = 0.9999 / L
    prox_in = B (x - P a grad f(x)) + (1 - B) (z - P a grad f(z)) + B1
    z+      = prox_{P a r}(prox_in)            (soft-threshold at lam P a)
    x+      = z+ + A (z+ - z) + B2

``z`` (the last prox output, state) starts at ``x_0``. A term left out of ``terms`` takes its
neutral value (P = 1, B = 1, A = 0, B1 = B2 = 0); with all of them neutral this is exactly ISTA.
The default ``terms=("p", "a")`` is the paper's L2O-PA, its recommended model; ``"b"`` also
needs ``grad f(z)``, which the functional runner (:mod:`learned.l2o.run`) supplies as the extra
input ``grad_z`` (the torch-optimizer path cannot, so it refuses ``"b"``).

Head activations follow MS4L2O's LASSO config: ``2 sigmoid`` for P, B and A (so each starts near
1; P < 2 allows steps up to 2/L), identity for B1 and B2; ``"unit_sigmoid"`` (range (0, 1))
caps the step at a = 0.9999/L. Network: LSTM 2x20 -> ReLU(Linear 20x20) -> one linear head per term;
its inputs are detached (``detach_inputs``, MS4L2O's default), while the update keeps ``grad f``
differentiable, as in MS4L2O.

How the problem reaches the model: ``update(..., l1=lam, lipschitz=L)`` keyword inputs, or the
rule's hyperparameters ``l1`` and ``lipschitz`` (``lopt.rule(theta).with_hp(l1=.., lipschitz=..)``
or ``RuleOptimizer(params, rule, l1=.., lipschitz=..)``); ``lipschitz`` may be a tensor that
broadcasts against the parameter (one L per problem instance). ``grad`` must be the gradient of
the smooth part ``f`` only.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from metaopt.capabilities import Capabilities
from metaopt.rule import UpdateRule
from metaopt.zoo.checks import check_min

from ..base import LOpt, Theta, as_param_info
from .lstm import init_linear, init_lstm, linear, lstm, lstm_state
from .prox import soft_threshold

TERMS = ("p", "b", "a", "b1", "b2")
NEUTRAL = {"p": 1.0, "b": 1.0, "a": 0.0, "b1": 0.0, "b2": 0.0}
ACTIVATIONS = {
    "eye": lambda t: t,
    "sigmoid": lambda t: 2.0 * torch.sigmoid(t),
    "unit_sigmoid": torch.sigmoid,
    "softplus": torch.nn.functional.softplus,
    "exp": torch.exp,
}
DEFAULT_ACTIVATION = {"p": "sigmoid", "b": "sigmoid", "a": "sigmoid", "b1": "eye", "b2": "eye"}
STEP_FRACTION = 0.9999


class MathL2O(LOpt):
    """The math-structured L2O model (see module docstring)."""

    name = "math_l2o"
    uses_prox = True
    #: state entries that hold an iterate (the last prox output z): a restart from a point x
    #: sets them to x (:class:`learned.l2o.safeguard.Safeguarded`)
    iterate_state = ("z",)

    def __init__(self, terms: tuple[str, ...] = ("p", "a"), hidden: int = 20, layers: int = 2,
                 activations: Mapping[str, str] | None = None, detach_inputs: bool = True):
        bad = sorted(set(terms) - set(TERMS))
        if bad or len(set(terms)) != len(terms):
            raise ValueError(f"MathL2O: invalid terms {tuple(terms)}; choose distinct ones of {TERMS}")
        acts = {**DEFAULT_ACTIVATION, **(activations or {})}
        wrong = {k: v for k, v in acts.items() if k not in TERMS or v not in ACTIVATIONS}
        if wrong:
            raise ValueError(f"MathL2O: invalid activations {wrong}; terms {TERMS}, "
                             f"activations {sorted(ACTIVATIONS)}")
        if hidden < 1 or layers < 1:
            raise ValueError(f"MathL2O: need hidden >= 1 and layers >= 1, got {hidden}, {layers}")
        self.terms = tuple(t for t in TERMS if t in terms)
        self.hidden, self.layers, self.activations = hidden, layers, acts
        self.detach_inputs = detach_inputs

    @property
    def needs_grad_z(self) -> bool:
        """Whether ``update`` needs ``grad_z = grad f(z)`` (the B term)."""
        return "b" in self.terms

    def init_theta(self, generator: torch.Generator | None = None) -> Theta:
        return {**init_lstm("lstm", 2, self.hidden, self.layers, generator),
                **init_linear("mid", self.hidden, self.hidden, generator),
                **init_linear("heads", self.hidden, max(len(self.terms), 1), generator)}

    def init(self, param: Tensor, info=None) -> dict[str, Tensor]:
        return {**lstm_state(param.shape, self.hidden, self.layers, param),
                "z": param.detach().clone()}

    def coefficients(self, theta: Theta, grad: Tensor, param: Tensor,
                     state: Mapping[str, Tensor]) -> tuple[dict[str, Any], Tensor, Tensor]:
        """P, B, A, B1, B2 per coordinate (neutral constants for unused terms), new ``h, c``."""
        feats = torch.stack([grad, param], dim=-1)
        feats = feats.detach() if self.detach_inputs else feats
        out, h, c = lstm(theta, "lstm", feats, state["h"], state["c"])
        heads = linear(theta, "heads", torch.relu(linear(theta, "mid", out)))
        coef: dict[str, Any] = dict(NEUTRAL)
        for i, term in enumerate(self.terms):
            coef[term] = ACTIVATIONS[self.activations[term]](heads[..., i])
        return coef, h, c

    def update(self, theta: Theta, grad: Tensor, param: Tensor, state: Mapping[str, Tensor],
               step, info=None, *, l1=None, lipschitz=None, grad_z: Tensor | None = None,
               **ext: Any) -> tuple[Tensor, dict[str, Tensor]]:
        if l1 is None or lipschitz is None:
            raise ValueError("MathL2O needs the problem's L1 weight and Lipschitz constant: "
                             "pass l1= and lipschitz= (or set the rule's hyperparameters)")
        if "b" in self.terms and grad_z is None:
            raise ValueError("MathL2O with term 'b' needs grad_z (grad f at z); use "
                             "learned.l2o.run, or leave 'b' out of terms")
        coef, h, c = self.coefficients(theta, grad, param, state)
        z = state["z"]
        step_size = coef["p"] * (STEP_FRACTION / lipschitz)
        prox_in = param - step_size * grad
        if "b" in self.terms:
            prox_in = coef["b"] * prox_in + (1 - coef["b"]) * (z - step_size * grad_z)
        z_new = soft_threshold(prox_in + coef["b1"], l1 * step_size)
        x_new = z_new + coef["a"] * (z_new - z) + coef["b2"]
        return param - x_new, {"h": h, "c": c, "z": z_new}

    def rule(self, theta: Theta, infos=None) -> UpdateRule:
        """This model with ``theta`` bound; hyperparameters ``l1`` (lam >= 0) and ``lipschitz``
        (L > 0) describe the problem (see the module docstring)."""

        def init(p):
            return self.init(p, None)

        def update(g, p, s, hp, step, **ext):
            return self.update(theta, g, p, s, step, as_param_info(hp.get("info")), l1=hp["l1"],
                               lipschitz=hp["lipschitz"], **ext)

        def check(hp):
            if hp["l1"] is None or hp["lipschitz"] is None:
                raise ValueError(f"{self.name}: set the problem's l1 (lam >= 0) and lipschitz "
                                 "(L > 0) hyperparameters")
            check_min(hp, "l1", name=self.name)
            check_min(hp, "lipschitz", strict=True, name=self.name)

        return UpdateRule(self.name, init, update, check=check,
                          caps=Capabilities(elementwise=False),
                          hp={"info": None, "l1": None, "lipschitz": None})
