"""Named task families shared by program search (fitness over a family, issue 12) and
learned-optimizer meta-training (issue 13): a *proxy* family to search / meta-train on, and a
*held-out* family to judge on, which shares no data, no architecture and no size with it.

    from metaopt.tasks import families
    for spec in families.get("proxy"):           # [TaskSpec(task, options, horizon), ...]
        task = spec.build(device="cpu")          # one call; train it for spec.horizon steps
    families.names()                             # ["heldout", "proxy"]

**Proxy** (small and fast: 50-200 steps, widths 8-64, batches 16-128; each evaluation well under a
second on one CPU core for the small members, see experiments/results/families.md). Data: only
scikit-learn's handwritten digits (:mod:`.digits_data`: 1437 train / 360 validation 8x8 images)
and the first 200 KB of Python's standard-library *source* (:mod:`.stdlib_text`, charlm's text).

    logreg_digits       logistic regression on the digits                 batch 32 / 128
    mlp_digits          ReLU MLPs of width 16-64, depth 1-3 on the digits
    cnn_digits          2 conv layers of 8 channels on the digits
    autoencoder_digits  MLP autoencoder of the digits (64-32-8-32-64)
    rnn_digits          GRU of width 16 reading the digits row by row
    charlm              1-block transformer, width 32, on standard-library source

**Held-out** (never tune, search or meta-train on these; only meta-validate and report). Data:
other scikit-learn data -- wine, breast_cancer, iris, diabetes and the generated
``make_classification`` / ``make_regression`` tables (:mod:`.tabular_data`) -- and English prose
of Python's documentation topics (``pydoc_data.topics``, :func:`.stdlib_text.pydoc_corpus`), none
of which the proxy family reads. Architectures the proxy family does not use (residual MLPs with
LayerNorm, regression heads, LSTM and causal-convolution language models), 4-8x wider than
the proxy's layers of the same kind (MLPs 32-64 -> 256, recurrent and charlm 16-32 -> 128) and
horizons of 400-1000 steps (4-10x the proxy's typical 100).

    tabular wine, breast_cancer, iris, classification     MLP / residual MLP classifiers
    tabular diabetes, regression                         residual MLP / MLP regressors
    text_lm pydoc                                        LSTM and causal-conv byte LMs

Members are :class:`TaskSpec`: a registered task name, its options and a horizon. Families are
data (the two lists below); :func:`register` adds more (a plugin's or an experiment's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from . import registry
from .base import Task


@dataclass(frozen=True)
class TaskSpec:
    """One member of a family: ``registry.get(task, **options)`` trained for ``horizon`` steps."""

    task: str
    options: Mapping[str, Any] = field(default_factory=dict)
    horizon: int = 100

    @property
    def label(self) -> str:
        """``task(k=v,...)@horizon``, unique within a family."""
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.task}({opts})@{self.horizon}"

    def build(self, device: str | torch.device = "cpu", **extra: Any) -> Task:
        """The task on ``device`` (``extra`` options override, e.g. ``dtype`` or ``seed``); a
        member that fails to build is a one-line ``ValueError`` naming it."""
        try:
            return registry.get(self.task, **{**self.options, "device": device, **extra})
        except ValueError as e:
            raise ValueError(f"task family member {self.label} failed to build: "
                             f"{' '.join(str(e).split())}") from None


def _spec(task: str, horizon: int, **options: Any) -> TaskSpec:
    return TaskSpec(task, options, horizon)


_CHARLM_PROXY = dict(depth=1, heads=2, context=16, corpus_bytes=200_000, eval_windows=32)

PROXY = (
    _spec("logreg_digits", 50, batch_size=32),
    _spec("logreg_digits", 100, batch_size=128, l2=1e-3),
    _spec("mlp_digits", 100, width=32, depth=2, batch_size=64),
    _spec("mlp_digits", 150, width=64, depth=1, batch_size=128),
    _spec("mlp_digits", 200, width=16, depth=3, batch_size=32),
    _spec("cnn_digits", 100, channels=8, batch_size=64),
    _spec("autoencoder_digits", 100, width=32, code=8, batch_size=64),
    _spec("rnn_digits", 100, cell="gru", width=16, batch_size=64),
    _spec("charlm", 150, width=32, batch_size=16, **_CHARLM_PROXY),
)

HELDOUT = (
    _spec("tabular", 600, dataset="wine", arch="resmlp", width=256, depth=2, batch_size=32),
    _spec("tabular", 500, dataset="breast_cancer", arch="mlp", width=256, depth=3,
          batch_size=64),
    _spec("tabular", 400, dataset="iris", arch="mlp", width=256, depth=2, batch_size=16),
    _spec("tabular", 1000, dataset="classification", arch="mlp", width=256, depth=2,
          batch_size=128),
    _spec("tabular", 800, dataset="diabetes", arch="resmlp", width=256, depth=2, batch_size=32),
    _spec("tabular", 600, dataset="regression", arch="resmlp", width=256, depth=1,
          batch_size=64),
    _spec("text_lm", 600, text="pydoc", arch="lstm", width=128, context=24, batch_size=16),
    _spec("text_lm", 500, text="pydoc", arch="conv", width=128, context=32, batch_size=16),
)

_FAMILIES: dict[str, tuple[TaskSpec, ...]] = {"proxy": PROXY, "heldout": HELDOUT}


def names() -> list[str]:
    """Every family name, sorted."""
    return sorted(_FAMILIES)


def check(specs: Sequence[TaskSpec], name: str = "family") -> list[TaskSpec]:
    """``specs`` as a list, checked: non-empty, every member a :class:`TaskSpec` with a known
    task and a horizon >= 1 (one-line ``ValueError`` otherwise). Builds nothing."""
    specs = list(specs)
    if not specs:
        raise ValueError(f"task family {name!r} is empty; give at least one TaskSpec")
    for i, s in enumerate(specs):
        if not isinstance(s, TaskSpec):
            raise ValueError(f"task family {name!r} member {i} is a {type(s).__name__}, not a "
                             "TaskSpec(task, options, horizon)")
        if isinstance(s.horizon, bool) or not isinstance(s.horizon, int) or s.horizon < 1:
            raise ValueError(f"task family {name!r} member {s.label}: horizon must be an "
                             f"integer >= 1, got {s.horizon!r}")
        try:
            registry.factory(s.task)
        except ValueError as e:
            raise ValueError(f"task family {name!r} member {i}: {e}") from None
    return specs


def get(name: str) -> list[TaskSpec]:
    """The members of family ``name`` (a new list); unknown names are a one-line error."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown task family {name!r}; choose one of: {', '.join(names())}")
    return list(_FAMILIES[name])


def register(name: str, specs: Sequence[TaskSpec]) -> None:
    """Add family ``name`` (checked; a name cannot be registered twice)."""
    if name in _FAMILIES:
        raise ValueError(f"task family {name!r} registered twice")
    _FAMILIES[name] = tuple(check(specs, name))


def build(name: str, device: str | torch.device = "cpu",
          **extra: Any) -> list[tuple[TaskSpec, Task]]:
    """Every member of family ``name`` built on ``device``: ``[(spec, task), ...]``."""
    return [(s, s.build(device, **extra)) for s in get(name)]
