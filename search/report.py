"""``search.report(dir)``: the top programs of a search store as a markdown table, and the
progress and meta-validation plots re-rendered from the store (``metaopt report DIR`` calls
it for a search folder)."""
from __future__ import annotations

import math
import os

from metaopt.helpers import write_atomic

from .store import Store, StoreError, store_path


def top_programs(rows: list[dict], top: int) -> list[dict]:
    """The ``top`` best rows with distinct fingerprints, best first (ties: earliest)."""
    from .evolve import rank_key

    seen, out = set(), []
    for r in sorted(rows, key=rank_key):
        if r["fingerprint"] in seen or not math.isfinite(r["fitness"]):
            continue
        seen.add(r["fingerprint"])
        out.append(r)
        if len(out) == top:
            break
    return out


def report(run_dir: str, top: int = 10) -> str:
    """Markdown: the run's key, counts, the ``top`` programs (fitness, tuned lr, statements)
    and the best held-out scores; writes ``report.md``, ``progress.png`` and (with
    meta-validation) ``validation.png`` into ``run_dir``. Returns the markdown."""
    path = store_path(run_dir)
    if not os.path.isfile(path):
        raise StoreError(f"{run_dir!r} holds no search store (search.sqlite); give a metaopt "
                         "search --out folder")
    store = Store(path)
    try:
        rows, validation, key = store.rows(), store.validation(), store.get_meta("run") or {}
    finally:
        store.close()
    from .cli import plot_progress, plot_validation

    history, best = [], math.inf
    for r in rows:
        best = min(best, r["fitness"])
        history.append({"fitness": r["fitness"], "best": best})
    plot_progress(history, os.path.join(run_dir, "progress.png"))
    if validation:
        plot_validation(validation, os.path.join(run_dir, "validation.png"))
    lines = [f"# Search {run_dir}", "", f"Task: {key.get('task', '?')}; seed {key.get('seed', '?')}; "
             f"{len(rows)} programs evaluated ({sum(1 for r in rows if not r['cache_hit'])} trained).",
             "", "| rank | id | fitness | tuned lr | statements | first statement |",
             "|---|---|---|---|---|---|"]
    for i, r in enumerate(top_programs(rows, top), 1):
        body = r["pruned"].splitlines()[1:-1]
        first = body[0].strip() if body else ""
        lr = "-" if r["best_lr"] is None else f"{r['best_lr']:g}"
        lines.append(f"| {i} | {r['id']} | {r['fitness']:.6g} | {lr} | {len(body)} | `{first}` |")
    if validation:
        vbest = min(validation, key=lambda v: (v["score"], v["program"]))
        lines += ["", f"Held-out meta-validation: {len(validation)} scores at "
                  f"{len({v['evaluated'] for v in validation})} points; best program id "
                  f"{vbest['program']} at {vbest['score']:.6g}."]
    md = "\n".join(lines) + "\n"
    write_atomic(os.path.join(run_dir, "report.md"), md)
    return md
