"""metaopt: discover, learn and tune optimizers.

The core package: the update-rule spine (:mod:`metaopt.rule`, :mod:`metaopt.optimizer`),
the baseline zoo, the task suite, μP utilities and the benchmark harness.
"""
from . import tasks, zoo
from .capabilities import Capabilities
from .optimizer import RuleOptimizer
from .rule import UpdateRule, apply, init_states, unroll

__version__ = "0.1.0"
__all__ = ["Capabilities", "RuleOptimizer", "UpdateRule", "apply", "init_states", "unroll",
           "tasks", "zoo"]
