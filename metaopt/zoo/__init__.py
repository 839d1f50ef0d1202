"""The baseline zoo: hand-written update rules from the field's papers, one file per family.

    zoo.names()                                        # every member's id
    zoo.create("adamw", model.parameters(), lr=1e-3)   # a torch.optim.Optimizer
    zoo.rule("lion", lr=1e-4)                          # the same rule as an UpdateRule
    zoo.defaults("adam")                               # the official code's defaults
    zoo.get("adamw")(params, lr=1e-3)                  # a torch.optim-style class
    stats = zoo.LayerStatistics(model)                 # per-layer inputs/output gradients
    opt = zoo.create("mkor", model.parameters()); ...; opt.step(layer_stats=stats)

Every module in this package registers its members on import.
"""
from .._autoload import import_submodules
from .layer_stats import LayerStatistics, needs_layer_statistics
from .registry import Entry, create, decay_param_groups, defaults, entry, get, names, register, rule

import_submodules(__name__, __path__)

__all__ = ["Entry", "LayerStatistics", "create", "decay_param_groups", "defaults", "entry", "get",
           "names", "needs_layer_statistics", "register", "rule"]
