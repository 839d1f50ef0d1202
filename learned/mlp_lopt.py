"""``MLPLOpt``: a per-coordinate MLP learned optimizer (small_fc_lopt style), under μP or SP.

For every coordinate of a tensor, a small MLP (``layers`` ReLU layers of ``hidden`` units, shared
by all coordinates and tensors) maps the normalised features of :mod:`learned.features` to two
outputs, and the step is

    delta = direction * exp(magnitude * exp_mult) * step_mult * s(info),    p <- p - delta

(learned_optimization's ``MLPLOpt`` / ``AdafacMLPLOpt`` output rule; Metz et al. 2022). The
per-tensor inputs (time features; with ``scale_features``, log gradient and parameter scales)
enter the first layer as a bias, so they cost nothing per coordinate.

With ``adam_scale`` the Adam feature ``u`` (Adam's bias-corrected direction) is normalised over
the tensor like the others, ``u / r`` with ``r = sqrt(mean(u^2) + 1e-16)``, and the step is
multiplied by ``r``:

    delta = direction * exp(magnitude * exp_mult) * step_mult * s(info) * r.

Every input is then O(1) and scale-free, and the step's size per tensor follows Adam's own
(which shrinks as the gradient noise grows against ``v``'s long memory): without it the MLP's
corrections have a fixed RMS per coordinate for the whole run, which in a long run kicks the
model out of a minimum it has reached (measured in ``experiments/results/learned.md``). The
Adam warm start stays exact: ``(lr / step_mult) (u / r) * step_mult * r = lr u``.

``s(info)`` is μLO's per-layer scale (Thérien et al., "μLO: Compute-Efficient Meta-Generalization
of Learned Optimizers", arXiv 2406.00153; ``mup_adafac_mlp_lopt.py``): the LO's output is O(1)
per coordinate like Adam's, so μP prescribes Adam's rule (Tensor Programs V, Table 8):
``s = base_fan_in / fan_in`` for hidden weights and 1 for input weights, output weights and
biases. μLO's code uses ``base_fan_in = 1``; passing the meta-training width makes ``s = 1`` at
that width, so the LO is there the same as its SP twin. With ``mup=False`` (the SP-LO), ``s = 1``
everywhere. Tasks should match: μP parametrization (``mlp_digits(param="mup")``) for the μLO.

With ``scale_features=True`` and a suitable ``theta`` the LO is exactly SGD (see
:func:`sgd_theta`), which pins down the features, the MLP and the output rule end to end; with
``adam_feature=True`` and :func:`adam_like_theta` it is exactly Adam (μAdam under μP), the warm
start meta-training improves on.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from metaopt.tasks import ParamInfo

from .base import LOpt, Theta
from .orthogonal import is_orthogonalized, orthogonal_step
from .features import (FEATURES, N_FEATURES, SCALE_FEATURES, TAUS, adam_direction, adam_rms,
                       feature_chunks, feature_normalizer, init_state, tensor_features,
                       update_state)


class MLPLOpt(LOpt):
    """Per-coordinate MLP learned optimizer.

    Args:
      hidden: units per hidden layer (μLO: 32).
      layers: hidden layers (2).
      exp_mult, step_mult: the output rule's constants (learned_optimization: 1e-3 both; μLO
        uses step_mult 0.01).
      mup: scale hidden-weight steps by ``base_fan_in / fan_in`` (μLO) or not (SP-LO).
      readout_scale: with ``mup``, scale output-weight steps by ``base_fan_in / fan_in`` too:
        μP's Adam learning rate for a readout *without* the ``base / width`` output multiplier
        (Tensor Programs V, Table 3), i.e. for ordinary (SP-initialised) ``nn.Module``s; off
        for μP-parametrised tasks, whose readout multiplier already scales it.
      base_fan_in: see the module docstring.
      scale_features: also feed the log RMS of the gradient and the parameter (off by default:
        they make the output depend on the gradient's scale, against μP; needed for SGD).
      adam_feature: also feed Adam's bias-corrected direction, not normalised
        (:func:`learned.features.adam_direction`; the last row of ``theta["w0"]``), so that
        :func:`adam_like_theta` is exactly Adam.
      adam_scale: normalise the Adam feature and scale the step by its per-tensor RMS (see the
        module docstring); needs ``adam_feature``.
      taus: time scales of the per-tensor time features ``tanh(t / tau - 1)``. Features with
        ``tau`` well below the meta-training horizon saturate within it, so they stay in
        distribution on longer runs; larger ``tau`` tell the LO more about time but go out of
        distribution beyond the horizon.
      orthogonalize: replace the step of every hidden matrix by its Newton-Schulz
        orthogonalization, ``step_mult * ortho_gain * max(1, R/C)^{1/2} NS5(D)``
        (:mod:`learned.orthogonal`; Celo2, Muon); other tensors keep the per-coordinate step.
      ortho_gain: the orthogonalized step relative to ``step_mult`` (Muon's lr 0.01-0.02 at
        ``step_mult`` 0.01).
      chunk_elems: coordinates per feature block (bounds the feature memory per tensor).
    """

    def __init__(self, hidden: int = 32, layers: int = 2, exp_mult: float = 1e-3,
                 step_mult: float = 1e-3, mup: bool = True, base_fan_in: int = 1,
                 scale_features: bool = False, adam_feature: bool = False,
                 adam_scale: bool = False, taus: tuple[float, ...] = TAUS,
                 readout_scale: bool = False, orthogonalize: bool = False,
                 ortho_gain: float = 1.0, chunk_elems: int = 1 << 18):
        for name, v in (("hidden", hidden), ("layers", layers), ("base_fan_in", base_fan_in),
                        ("chunk_elems", chunk_elems)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MLPLOpt: {name} must be an integer >= 1, got {v!r}")
        for name, v in (("exp_mult", exp_mult), ("step_mult", step_mult),
                        ("ortho_gain", ortho_gain)):
            if not (isinstance(v, (int, float)) and 0 < v < math.inf):
                raise ValueError(f"MLPLOpt: {name} must be a positive number, got {v!r}")
        self.hidden, self.layers = hidden, layers
        self.exp_mult, self.step_mult = float(exp_mult), float(step_mult)
        self.mup, self.base_fan_in, self.chunk_elems = bool(mup), base_fan_in, chunk_elems
        if not taus or not all(isinstance(t, (int, float)) and 0 < t < math.inf for t in taus):
            raise ValueError(f"MLPLOpt: taus must be positive numbers, got {taus!r}")
        if adam_scale and not adam_feature:
            raise ValueError("MLPLOpt: adam_scale=True needs adam_feature=True (it scales the "
                             "step by the Adam feature's RMS)")
        self.scale_features, self.adam_feature = bool(scale_features), bool(adam_feature)
        self.adam_scale, self.readout_scale = bool(adam_scale), bool(readout_scale)
        self.orthogonalize, self.ortho_gain = bool(orthogonalize), float(ortho_gain)
        self.taus = tuple(float(t) for t in taus)
        self.n_features = N_FEATURES + self.adam_feature
        self.n_tensor_features = len(self.taus) + (len(SCALE_FEATURES) if scale_features else 0)
        self.name = "mu_mlp_lopt" if self.mup else "mlp_lopt"

    def config(self) -> dict[str, Any]:
        """The constructor arguments (saved next to theta)."""
        return {"hidden": self.hidden, "layers": self.layers, "exp_mult": self.exp_mult,
                "step_mult": self.step_mult, "mup": self.mup, "base_fan_in": self.base_fan_in,
                "scale_features": self.scale_features, "adam_feature": self.adam_feature,
                "adam_scale": self.adam_scale, "taus": list(self.taus),
                "readout_scale": self.readout_scale,
                **({"orthogonalize": True, "ortho_gain": self.ortho_gain}
                   if self.orthogonalize else {})}

    def init_theta(self, generator: torch.Generator | None = None) -> Theta:
        """Weights ~ N(0, 1/fan_in) (haiku's Linear default, truncation aside), biases 0."""
        def w(fan_in, fan_out):
            return torch.randn(fan_in, fan_out, generator=generator) / math.sqrt(fan_in)

        h = self.hidden
        n = self.n_features
        first = w(n + self.n_tensor_features, h)
        theta = {"w0": first[:n].clone(), "wt": first[n:].clone(),
                 "b0": torch.zeros(h)}
        for i in range(1, self.layers):
            theta[f"w{i}"], theta[f"b{i}"] = w(h, h), torch.zeros(h)
        theta["w_out"], theta["b_out"] = w(h, 2), torch.zeros(2)
        return theta

    def init(self, param: Tensor, info: ParamInfo | None = None) -> dict[str, Tensor]:
        return init_state(param)

    def scale(self, info: ParamInfo | None) -> float:
        """μLO's per-layer step scale ``s(info)``."""
        scaled = ("hidden", "output") if self.readout_scale else ("hidden",)
        if self.mup and info is not None and info.role in scaled:
            return self.base_fan_in / info.fan_in
        return 1.0

    def update(self, theta: Theta, grad: Tensor, param: Tensor, state, step, info=None, **ext):
        theta = {k: v.to(grad.dtype) for k, v in theta.items()}
        new = update_state(grad, state)
        norm = feature_normalizer(grad, param, new, self.chunk_elems)
        tf = tensor_features(grad, param, step, self.scale_features, self.taus)
        bias0 = theta["b0"] + tf @ theta["wt"]
        blocks = [blk * norm for blk in feature_chunks(grad, param, new, self.chunk_elems)]
        mult = self.step_mult * self.scale(info)
        if self.adam_feature:
            adam = adam_direction(new, step)
            if self.adam_scale:
                rms = adam_rms(adam)
                adam, mult = adam / rms, mult * rms
            adam = adam.reshape(-1, 1).split([len(b) for b in blocks])
            blocks = [torch.cat([b, a], 1) for b, a in zip(blocks, adam)]
        out = torch.cat([self._mlp(theta, x, bias0) for x in blocks])
        delta = out[:, 0] * torch.exp(out[:, 1] * self.exp_mult) * mult
        delta = delta.reshape(param.shape)
        if self.orthogonalized(info, param):
            delta = self.orthogonal_delta(delta)
        return delta, new

    def orthogonalized(self, info: ParamInfo | None, param: Tensor) -> bool:
        """Whether ``param``'s step is orthogonalized (:mod:`learned.orthogonal`)."""
        return self.orthogonalize and is_orthogonalized(info, param.shape)

    def orthogonal_delta(self, d: Tensor) -> Tensor:
        """A hidden matrix's per-coordinate step ``d`` orthogonalized at this LO's step size
        ``step_mult * ortho_gain`` (:func:`learned.orthogonal.orthogonal_step`)."""
        return orthogonal_step(d, self.step_mult * self.ortho_gain)

    def fused_rule(self, theta: Theta):
        """The fused step of :mod:`learned.fused_mlp` (``LearnedOptimizer(impl="fused")``)."""
        from .fused_mlp import fused_rule_step
        return fused_rule_step(self, theta)

    def _mlp(self, theta: Theta, x: Tensor, bias0: Tensor) -> Tensor:
        h = torch.relu(x @ theta["w0"] + bias0)
        for i in range(1, self.layers):
            h = torch.relu(h @ theta[f"w{i}"] + theta[f"b{i}"])
        return h @ theta["w_out"] + theta["b_out"]


def sgd_theta(lopt: MLPLOpt, lr: float) -> Theta:
    """A theta that makes ``lopt`` exactly SGD with learning rate ``lr`` (times ``s(info)``).

    Hidden units 0, 1 carry ``relu(+-g_hat)`` (``g_hat = g / rms``) and units 2, 3 carry
    ``relu(+-log rms)`` from the per-tensor input, through identity layers; then
    ``direction = (lr / step_mult) g_hat`` and ``magnitude = log(rms) / exp_mult``, so
    ``delta = lr * g_hat * rms = lr * g`` (``rms = sqrt(mean(g^2) + 1e-5)``, the normaliser of g).
    """
    if lopt.hidden < 4 or not lopt.scale_features:
        raise ValueError("sgd_theta needs an MLPLOpt with hidden >= 4 and scale_features=True")
    theta = {k: torch.zeros_like(v) for k, v in lopt.init_theta(torch.Generator()).items()}
    g_index, log_g = 0, len(lopt.taus) + SCALE_FEATURES.index("log_rms_g")
    theta["w0"][g_index, 0], theta["w0"][g_index, 1] = 1.0, -1.0
    theta["wt"][log_g, 2], theta["wt"][log_g, 3] = 1.0, -1.0
    for i in range(1, lopt.layers):
        theta[f"w{i}"][:4, :4] = torch.eye(4)
    theta["w_out"][0, 0], theta["w_out"][1, 0] = lr / lopt.step_mult, -lr / lopt.step_mult
    theta["w_out"][2, 1], theta["w_out"][3, 1] = 1 / lopt.exp_mult, -1 / lopt.exp_mult
    return theta


def adam_like_theta(lopt: MLPLOpt, lr: float, generator: torch.Generator | None = None,
                    noise: float = 0.01) -> Theta:
    """A starting theta whose LO is Adam with learning rate ``lr`` (times ``s(info)``).

    Hidden units 0, 1 carry ``relu(+-u)`` through identity layers and ``direction =
    (lr / step_mult) u``, where ``u`` is Adam's bias-corrected direction when
    ``lopt.adam_feature`` (then, with ``noise=0``, the LO *is* ``zoo.rule("adam", lr=lr)`` with
    μLO's per-layer scale, i.e. μAdam under μP, with or without ``adam_scale``) and otherwise the per-tensor normalised feature
    ``m_1 / sqrt(v)`` (no bias correction; a fixed step RMS of ``lr`` per tensor, so it needs a
    smaller ``lr`` than Adam). Every other weight is ``lopt.init_theta``'s, with the output layer
    scaled by ``noise``: small random corrections that meta-training can grow."""
    if lopt.hidden < 2:
        raise ValueError(f"adam_like_theta needs hidden >= 2, got {lopt.hidden}")
    theta = lopt.init_theta(generator)
    u = N_FEATURES if lopt.adam_feature else FEATURES.index("m1*a")
    for key in ("w0", "wt"):
        theta[key][:, :2] = 0.0
    theta["w0"][u, 0], theta["w0"][u, 1] = 1.0, -1.0
    for i in range(1, lopt.layers):
        theta[f"w{i}"][:, :2] = 0.0
        theta[f"w{i}"][0, 0] = theta[f"w{i}"][1, 1] = 1.0
    theta["w_out"] = theta["w_out"] * noise
    theta["w_out"][:2] = torch.tensor([[lr / lopt.step_mult, 0.0], [-lr / lopt.step_mult, 0.0]])
    return theta
