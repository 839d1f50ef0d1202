"""The family search on one GPU within a wall-clock budget (issue 12): every arm of
experiments/discover.py at equal budget (set from a timed calibration so the whole script ends
within ``--minutes``), the proxy family trained on the GPU by the batched interpreter, the
held-out scores of each run's pick, and the held-out table (tuned AdamW, SOAP, Lion and the
discoveries, lr tuned on one grid, 3 seeds) trained on the machine's CPU processes.

    python experiments/gpu_search_family.py --out DIR --minutes 8

Defaults for one GPU: the shared proxy/heldout families, batch 32, 5 seeds per arm, the
metaval arm validated once (its top-3 at the end), only the first arm's discovery simplified
(the held-out family's 400-1000-step members make every held-out scoring cost seconds).

Writes DIR/discovered.md (first line: the exact command) and DIR/discovered.json. Works on
CPU too (``--device cpu``, for a smoke test with a tiny budget).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from discover import main  # noqa: E402

if __name__ == "__main__":
    import torch

    cpus = os.cpu_count() or 2
    sys.exit(main(defaults={"device": "cuda" if torch.cuda.is_available() else "cpu",
                            "batch": 32, "population": 32, "seeds": 5, "table_seeds": 3,
                            "validations": 1, "simplify": "first",
                            "workers": max(1, cpus - 2)}))
