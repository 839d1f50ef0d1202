"""bilevel: hypergradients of an inner training problem and tuners built on them.

* :func:`hypergrad` - implicit differentiation (CG, Neumann, direct), torch.func-composable.
* :func:`unrolled_hypergrad` - reverse mode through K steps of any zoo rule.
* :func:`f2sa` - the fully first-order penalty method of Kwon et al. (ICML 2023).
* :func:`bilevel.online.online_tune` / :func:`bilevel.online.tune_runs` - hypergradient descent
  during training runs of any task (per-tensor lr schedules, weight decays, example weights).
* :func:`bilevel.whole_run.tune_whole_runs` - hypergradient descent over whole training runs
  (reverse mode through every step of each run: exact, memory growing with the run).
* :mod:`bilevel.problems` - ridge, per-feature logistic regression, hyper-cleaning, MLP weight decay.
* :func:`report` - re-render the table and plot of a finished ``metaopt bilevel`` run.
"""
from . import problems
from .reporting import report
from .f2sa import F2SAResult, F2SASchedule, f2sa, penalty_hypergrad
from .implicit import HypergradInfo, NotConvergedError, NotConvergedWarning, hypergrad
from .unrolled import unrolled_hypergrad

__all__ = ["F2SAResult", "F2SASchedule", "HypergradInfo", "NotConvergedError", "NotConvergedWarning", "f2sa", "hypergrad", "penalty_hypergrad",
           "problems", "report", "unrolled_hypergrad"]
