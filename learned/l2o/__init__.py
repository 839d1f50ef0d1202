"""L2O structures behind the learned-optimizer interface (:class:`learned.base.LOpt`):

* :class:`L2ODM`: Andrychowicz et al. (2016), coordinatewise LSTM on LogAndSign gradients;
* :class:`RNNProp`: Lv et al. (2017), LSTM on Adam-normalised gradients;
* :class:`MathL2O`: Liu et al. (2023), LSTM-generated P, B, A, B1, B2 around a proximal-gradient
  step,

with their problems (``metaopt.tasks`` ``lasso`` and ``sparse_logreg``), the ISTA / FISTA
baselines, Math-L2O's relative-error metric, a runner and a TBPTT meta-trainer;
:class:`Safeguarded` wraps any of them so that it is never worse than ISTA / FISTA, and
:mod:`.ood` adds out-of-distribution problems.
"""
from .dm import L2ODM
from .math_l2o import MathL2O
from .metric import relative_error  # noqa: F401
from .prox import soft_threshold  # noqa: F401
from .rnnprop import RNNProp
from .safeguard import Safeguarded
from .run import l2o_objectives, l2o_step, rule_objectives  # noqa: F401
from .solvers import fista, ista, optimal_value  # noqa: F401
from .train import meta_train_l2o

# re-exported by ``learned``; the solvers, metric and runner stay under ``learned.l2o``
__all__ = ["L2ODM", "RNNProp", "MathL2O", "Safeguarded", "meta_train_l2o"]
