"""Any ``nn.Module`` and data as a functional task: :func:`from_module`.

    task = tasks.from_module(lambda: MyNet(width=64), (x_train, y_train), F.cross_entropy,
                             batch_size=32, val_data=(x_val, y_val))
    params = task.init(task.generator(0))          # a list of tensors, named_parameters order
    loss = task.loss(params, task.sample_batch())  # torch.func.functional_call of the module

The module is a template: its forward runs through ``torch.func.functional_call`` with the
parameters passed as a list of tensors, so the loss can be differentiated with
``torch.func.grad`` and vmapped over a population of stacked parameters (``torch.func.vmap(
task.loss, in_dims=(0, None))``), as every task of :mod:`metaopt.tasks` can.

Data
  ``data`` (and ``val_data``) is a tuple of tensors sharing their first dimension, a
  ``TensorDataset``, or any map-style dataset (``len`` and ``[i]``, e.g. a torchvision dataset),
  whose items -- tuples of tensors / numbers, or single tensors -- are read once and stacked
  into tensors on the task's device (so it must fit in memory). A batch is the tuple of those
  tensors at ``batch_size`` indices drawn uniformly with replacement: ``(*inputs, target)``.
  The model gets ``inputs`` and ``loss_fn(output, target)`` is the loss (a mean over the batch).
  With a single tensor the target is the input itself (an autoencoder).

Initialisation
  ``init(generator)`` draws a seed from ``generator`` and builds a fresh module with
  ``model_fn()`` under that seed (torch's CPU generator forked, so global random state is
  untouched): the parameters are the module's own initialisation, reproducible per generator.
  ``model_fn`` builds on the CPU; the task moves the tensors to its device and dtype.

Modes and buffers
  The loss calls the module in training mode, :meth:`ModuleTask.evaluate` in eval mode.
  Buffers are constants of the template. BatchNorm's running statistics are removed from the
  template, so BatchNorm always normalises with the statistics of the batch it is given (as
  in training mode) and nothing is updated in place; that keeps the task functional and
  vmappable. Recurrent layers (RNN, GRU, LSTM) run as plain tensor ops
  (:mod:`.rnn_functional`), equal to torch's kernels up to rounding, since those have no vmap
  rule. Evaluation therefore uses the statistics of each evaluation chunk
  (``eval_batch_size`` examples), not running averages. Dropout in the loss draws from torch's
  global generator (not reproducible from the task's generator; under ``vmap`` pass
  ``randomness="different"``); use a model without dropout for exact reproducibility.

``evaluate`` reports ``val_loss`` (the mean of ``loss_fn`` over the validation set, in chunks)
and, when the target holds integer class ids and the output has one more (class) dimension,
``accuracy`` of ``output.argmax(-1)``. Without ``val_data`` it evaluates on the training data.

``param_info`` comes from :func:`metaopt.params.infer_param_info` (with ``base_fn``, a
narrower model of the same architecture, the μP base shapes; ``base_param_info`` then holds
the base model's, for :func:`metaopt.mup.lr_multipliers`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..params import ParamInfo, infer_param_info
from .base import Task
from .rnn_functional import make_vmappable


class ModuleTask(Task):
    """A task from an ``nn.Module`` factory, data and a loss (see :func:`from_module`)."""

    def __init__(self, model_fn: Callable[[], nn.Module], data: Any,
                 loss_fn: Callable[[Tensor, Tensor], Tensor], *, batch_size: int,
                 val_data: Any = None, name: str = "module", base_fn=None,
                 param_info: Sequence[ParamInfo] | None = None, eval_batch_size: int = 1024,
                 seed: int = 0, device="cpu", dtype=torch.float32):
        super().__init__(device, dtype)
        if not callable(model_fn):
            raise ValueError(f"from_module: model_fn must be a callable returning an nn.Module, "
                             f"got {type(model_fn).__name__}")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"from_module: {key} must be an integer >= 1, got {value!r}")
        self.name, self.model_fn, self.loss_fn = name, model_fn, loss_fn
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.train_data = to_tensors(data, "data", self.device, dtype)
        self.val_data = (self.train_data if val_data is None
                         else to_tensors(val_data, "val_data", self.device, dtype))
        template = self._build_module(seed)
        self.names = [n for n, _ in template.named_parameters()]
        self.module = _functional_template(template).to(device=self.device, dtype=dtype)
        self._param_info = (list(param_info) if param_info is not None else
                            infer_param_info(template, None if base_fn is None else base_fn()))
        self._base_param_info = (None if base_fn is None else
                                 infer_param_info(base_fn(), base=template))
        if len(self._param_info) != len(self.names):
            raise ValueError(f"from_module: param_info has {len(self._param_info)} entries for "
                             f"{len(self.names)} parameters")
        self._batch_gen = self.generator(seed + 1)

    @property
    def param_info(self) -> list[ParamInfo]:
        return self._param_info

    @property
    def base_param_info(self) -> list[ParamInfo] | None:
        """The base model's shapes when ``base_fn`` was given (μP), else ``None`` (SP)."""
        return self._base_param_info

    def _build_module(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.model_fn()
        if not isinstance(model, nn.Module):
            raise ValueError(f"from_module: model_fn returned a {type(model).__name__}, "
                             "not an nn.Module")
        return model

    def init(self, generator=None) -> list[Tensor]:
        g = generator if generator is not None else self.generator(self.seed)
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))
        model = self._build_module(seed)
        return [p.detach().to(self.device, self.dtype).clone() for p in model.parameters()]

    def forward(self, params: Sequence[Tensor], *inputs: Tensor, training: bool = True):
        """The module's output on ``inputs`` with parameters ``params`` (a list)."""
        self.module.train(training)
        return torch.func.functional_call(self.module, dict(zip(self.names, params)), inputs)

    def _split(self, batch: Sequence[Tensor]) -> tuple[tuple[Tensor, ...], Tensor]:
        batch = tuple(batch)
        return (batch[:-1], batch[-1]) if len(batch) > 1 else (batch, batch[0])

    def loss(self, params, batch) -> Tensor:
        """``loss_fn(model(*inputs), target)`` on ``batch = (*inputs, target)``."""
        inputs, target = self._split(batch)
        return self.loss_fn(self.forward(params, *inputs), target)

    def sample_batch(self, generator=None):
        g = generator if generator is not None else self._batch_gen
        n = len(self.train_data[0])
        idx = torch.randint(n, (self.batch_size,), generator=g, device=self.device)
        return tuple(t[idx] for t in self.train_data)

    def evaluate(self, params) -> dict[str, float]:
        """Mean ``loss_fn`` (and accuracy for class targets) over the validation data."""
        params = [p.detach() for p in params]
        n = len(self.val_data[0])
        total, correct, classes = 0.0, 0.0, True
        with torch.no_grad():
            for start in range(0, n, self.eval_batch_size):
                inputs, target = self._split(t[start:start + self.eval_batch_size]
                                             for t in self.val_data)
                out = self.forward(params, *inputs, training=False)
                total += float(self.loss_fn(out, target)) * len(target)
                classes = classes and _is_classification(out, target)
                if classes:
                    correct += float((out.argmax(-1) == target).to(torch.float64).sum())
        metrics = {"val_loss": total / n}
        if classes:
            metrics["accuracy"] = correct / (n * max(1, target[0].numel()))
        return metrics


def _is_classification(out: Tensor, target: Tensor) -> bool:
    return (not target.dtype.is_floating_point and not target.dtype == torch.bool
            and out.dim() == target.dim() + 1 and out.shape[:-1] == target.shape)


def _functional_template(model: nn.Module) -> nn.Module:
    """``model`` with BatchNorm's running statistics removed (batch statistics always) and its
    recurrent layers computed in vmappable tensor ops (:mod:`.rnn_functional`)."""
    make_vmappable(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                m.register_buffer(buf, None)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def to_tensors(data: Any, what: str, device, dtype) -> tuple[Tensor, ...]:
    """``data`` as a tuple of tensors on ``device`` (floating ones in ``dtype``) sharing their
    first dimension; see the module docstring for what ``data`` may be."""
    if isinstance(data, torch.utils.data.TensorDataset):
        tensors = tuple(data.tensors)
    elif isinstance(data, Tensor):
        tensors = (data,)
    elif isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        tensors = tuple(data)
    elif (hasattr(data, "__len__") and hasattr(data, "__getitem__")
          and not isinstance(data, (str, bytes, dict))):
        tensors = _stack_dataset(data, what)
    else:
        raise ValueError(f"from_module: {what} must be tensors, a TensorDataset or a map-style "
                         f"dataset, got {type(data).__name__}")
    sizes = {len(t) if t.dim() else 0 for t in tensors}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"from_module: {what}'s tensors must share a non-empty first dimension, "
                         f"got shapes {[tuple(t.shape) for t in tensors]}")
    return tuple(t.detach().to(device, dtype if t.dtype.is_floating_point else t.dtype)
                 for t in tensors)


def _stack_dataset(dataset, what: str) -> tuple[Tensor, ...]:
    n = len(dataset)
    if n == 0:
        raise ValueError(f"from_module: {what} is empty")
    items = [dataset[i] for i in range(n)]
    single = not isinstance(items[0], (tuple, list))
    columns = zip(*([it] if single else it for it in items))
    try:
        return tuple(torch.stack([torch.as_tensor(v) for v in col]) for col in columns)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"from_module: cannot stack {what}'s items into tensors "
                         f"({str(e).splitlines()[0]})") from None


def from_module(model_fn: Callable[[], nn.Module], data: Any,
                loss_fn: Callable[[Tensor, Tensor], Tensor], *, batch_size: int,
                val_data: Any = None, **options: Any) -> ModuleTask:
    """A functional :class:`~metaopt.tasks.Task` training ``model_fn()`` on ``data``.

    Args:
      model_fn: zero-argument callable building the ``nn.Module`` on the CPU (each
        :meth:`ModuleTask.init` calls it under a seed drawn from its generator).
      data: training data: tensors ``(*inputs, target)``, a ``TensorDataset`` or a map-style
        dataset.
      loss_fn: ``loss_fn(output, target) -> scalar`` (e.g. ``F.cross_entropy``).
      batch_size: examples per training batch (drawn with replacement).
      val_data: validation data like ``data`` (default: the training data).
      options: ``name``, ``base_fn`` (a narrower model for μP base shapes), ``param_info``
        (overrides inference), ``eval_batch_size``, ``seed``, ``device``, ``dtype``.
    """
    return ModuleTask(model_fn, data, loss_fn, batch_size=batch_size, val_data=val_data,
                      **options)
