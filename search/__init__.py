"""Program search: discover optimizer update rules as programs (Chen et al. 2023, "Symbolic
Discovery of Optimization Algorithms").

    prog = search.parse(text)                  # safe: parsed against a whitelist, never run
    prog.to_text()                             # canonical print
    rule = search.to_rule(prog)                # a metaopt UpdateRule
    opt = search.to_optimizer(prog, model.parameters(), lr=1e-4)
    result = search.run("quadratic", budget=200, seed=0, out="runs/q")
    result.best, result.fitness, result.history

Parts: the language (program, parse, functions), its dataflow view (graph: pruning, structural
hash), abstract execution (check), numeric fingerprints, mutations, fitness (serial, vmapped,
batched interpreter), the SQLite store, backends (local, Ray), regularized evolution (evolve),
simplification and the funnel (simplify), and the CLI (``metaopt search``).
"""
from .check import InvalidProgram, check
from .evolve import SearchResult, run
from .fingerprint import fingerprint
from .fitness import FitnessConfig
from .graph import dataflow_graph, prune, structural_hash
from .interpret import to_optimizer, to_rule
from .parse import ParseError, parse
from .program import Program
from .simplify import funnel, simplify
from .warm import warm_start

__all__ = ["FitnessConfig", "InvalidProgram", "ParseError", "Program", "SearchResult", "check",
           "dataflow_graph", "fingerprint", "funnel", "parse", "prune", "run", "simplify",
           "structural_hash", "to_optimizer", "to_rule", "warm_start"]
