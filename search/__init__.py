"""Program search: discover optimizer update rules as programs (Chen et al. 2023, "Symbolic
Discovery of Optimization Algorithms").

    prog = search.parse(text)                  # safe: parsed against a whitelist, never run
    prog.to_text()                             # canonical print
    rule = search.to_rule(prog)                # a metaopt UpdateRule
    opt = search.to_optimizer(prog, model.parameters(), lr=1e-4)
    result = search.run("quadratic", budget=200, seed=0, out="runs/q")
    result.best, result.fitness, result.history
    result = search.run(family="proxy", heldout="heldout", validate_every=200, budget=2000)
    found = search.load("runs/q"); opt = found.optimizer(model.parameters())
    search.export("runs/q")    # runs/q/export/optimizer.py: a standalone torch optimizer
    search.report("runs/q")    # top programs, plots re-rendered

Parts: the language (program, parse, functions), its dataflow view (graph: pruning, structural
hash), abstract execution (check), numeric fingerprints, mutations, fitness (serial, vmapped,
batched interpreter), the SQLite store, backends (local, Ray), regularized evolution (evolve),
task families (family), simplification and the funnel (simplify), load/export (export),
reports (report), and the CLI (``metaopt search``).
"""
from .check import InvalidProgram, check
from .evolve import SearchResult, run
from .export import Found, export, load
from .family import Family, family_names
from .fingerprint import fingerprint
from .fitness import FitnessConfig
from .graph import dataflow_graph, prune, structural_hash
from .interpret import to_optimizer, to_rule
from .parse import ParseError, parse
from .program import Program
from .report import report
from .simplify import funnel, simplify
from .warm import warm_start

__all__ = ["Family", "FitnessConfig", "Found", "InvalidProgram", "ParseError", "Program",
           "SearchResult", "check", "dataflow_graph", "export", "family_names", "fingerprint",
           "funnel", "load", "parse", "prune", "report", "run", "simplify", "structural_hash",
           "to_optimizer", "to_rule", "warm_start"]
