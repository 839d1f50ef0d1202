"""Transfer of ``discover.py``'s discoveries to problems with other data and longer horizons.

``discover.py`` searches on ``tiny`` and judges on ``tiny_heldout`` (digits data, 60-80 steps).
This script takes the programs its results file reports (``### label`` + a ``python`` block)
and scores them on members of another family (by default the cheap tabular members of the
shared ``heldout`` family: scikit-learn data sets, width 256, 400-600 steps, i.e. other data,
8-32x wider and 20-30x longer than the search's proxies), with the same references as
``discover.py`` (torch's AdamW and the zoo's SOAP; AdamW programs with the first-moment decay
chosen per task), every optimizer's lr tuned on the same grid, >= 3 seeds.

    OMP_NUM_THREADS=1 python experiments/discover_transfer.py --workers 2 \
        --discovered experiments/results/discovered.md --programs 2 \
        --out experiments/results/discovered_transfer.md
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import discover as D  # noqa: E402

DEFAULT_MEMBERS = "2,1,5"  # iris@400, breast_cancer@500, regression@600 of the heldout family
BETA1 = (0.5, 0.7, 0.9)    # the first-moment decays of the constants-only reference
REFERENCE = "adamw (beta1 tuned)"


def half_decades(lo: float, hi: float) -> tuple[float, ...]:
    """The lrs 10^(k/2) from ``lo`` to ``hi`` (both rounded to the nearest half decade)."""
    a, b = round(2 * math.log10(lo)), round(2 * math.log10(hi))
    return tuple(round(10 ** (k / 2), 10) for k in range(a, b + 1))


def discoveries(md_text: str, limit: int) -> dict[str, str]:
    """The first ``limit`` programs of a ``discover.py`` results file: label -> program text."""
    part = md_text.split("## Discoveries (programs)", 1)
    if len(part) < 2:
        raise ValueError("no '## Discoveries (programs)' section: give a discover.py results file")
    found = re.findall(r"### (.+?)\n\n```python\n(.*?)```", part[1], flags=re.S)
    if not found:
        raise ValueError("the discoveries section holds no program")
    return dict(found[:limit])


def search_families(md_text: str) -> str:
    """How a ``discover.py`` results file's programs were found: its proxy and held-out
    families as that file's setup line names them."""
    proxy = re.search(r"Proxy family `([^`]+)`", md_text)
    held = re.search(r"Held-out family `([^`]+)`", md_text)
    if proxy is None or held is None:
        return "families not named in that file"
    return f"searched on `{proxy.group(1)}`, chosen on `{held.group(1)}`"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--discovered", default="experiments/results/discovered.md")
    p.add_argument("--programs", type=int, default=2, help="how many discoveries (file order)")
    p.add_argument("--family", default="heldout")
    p.add_argument("--members", default=DEFAULT_MEMBERS, help="member indices, comma-separated")
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--lr-max", type=float, default=1e-2)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default="experiments/results/discovered_transfer.md")
    args = p.parse_args(argv)
    from metaopt.bench.machine import command_line, machine_line
    from metaopt.helpers import write_atomic
    from search.warm import adamw_text

    from search.family import family_names

    command = command_line()
    for flag, value in (("--programs", args.programs), ("--seeds", args.seeds),
                        ("--workers", args.workers)):
        if value < 1:
            p.error(f"{flag} {value}: give at least 1")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        p.error(f"--out {args.out}: its folder does not exist")
    if args.family not in family_names():
        p.error(f"--family {args.family!r}: choose from {', '.join(family_names())}")
    specs = D._member_specs(args.family)
    try:
        idx = [int(x) for x in args.members.split(",") if x]
    except ValueError:
        p.error(f"--members {args.members!r}: give member indices, e.g. {DEFAULT_MEMBERS}")
    if not idx or any(not 0 <= i < len(specs) for i in idx):
        p.error(f"--members: indices 0-{len(specs) - 1} of family {args.family!r}")
    if not 0 < args.lr_min <= args.lr_max:
        p.error(f"--lr-min {args.lr_min:g} / --lr-max {args.lr_max:g}: need 0 < lr-min <= lr-max")
    lrs = half_decades(args.lr_min, args.lr_max)
    if len(lrs) < 3:
        p.error("--lr-min/--lr-max: the half-decade grid between them needs at least 3 lrs")
    try:
        with open(args.discovered, encoding="utf-8") as fh:
            text = fh.read()
        found = discoveries(text, args.programs)
    except (OSError, UnicodeDecodeError) as err:
        p.error(f"--discovered {args.discovered}: cannot read it ({err.__class__.__name__}); "
                "give a discover.py results file")
    except ValueError as err:
        p.error(f"--discovered {args.discovered}: {err}")
    members = [(n, {**o, "device": "cpu"}, s) for n, o, s in (specs[i] for i in idx)]
    labels = [f"{n}({','.join(f'{k}={v}' for k, v in o.items() if k != 'device')})@{s}"
              for n, o, s in members]
    variants = {f"{REFERENCE} {b}": ("program", adamw_text(b, 0.01)) for b in BETA1}
    optimizers = {"adamw": ("zoo", "adamw"), "soap": ("zoo", "soap"), **variants,
                  **{label: ("program", text) for label, text in found.items()}}
    n_runs = len(optimizers) * len(members) * len(lrs) * args.seeds
    print(f"{n_runs} training runs on {args.workers} worker(s)", flush=True)
    t0 = time.perf_counter()
    pool = D.table_pool(args.workers)
    jobs = D.submit_table(pool, optimizers, members, lrs, list(range(args.seeds)))
    table, _ = D.collect_table(jobs, len(members), lrs)
    pool.shutdown()
    table = D.merge_variants(table, list(variants), REFERENCE)
    rat = D.ratios(table)
    rows = ["adamw", "soap", REFERENCE, *found]
    lines = [f"Command: `{command}`", "", f"Machine: {machine_line('cpu')}", "",
             f"Programs: the first {len(found)} discoveries of `{args.discovered}` ("
             f"{search_families(text)}). Members {idx} of family `{args.family}`. Each "
             f"optimizer's lr tuned on {', '.join(f'{x:g}' for x in lrs)}; `*` = best lr at a "
             f"grid edge; {args.seeds} seeds (mean final validation loss); {n_runs} runs in "
             f"{(time.perf_counter() - t0) / 60:.1f} min. `{REFERENCE}`: AdamW programs with "
             f"first-moment decay {'/'.join(map(str, BETA1))} (weight decay 0.01), the best per "
             "task.", "", *D.ratio_table(rows, labels, table, rat)]
    met = [lb for lb in found if rat[lb]["geomean"] <= 0.90 and rat[lb]["worst"] <= 1.10]
    lines += ["", "Ratios: final validation loss / AdamW's (torch's AdamW, lr tuned). Target of "
              "issue 12: <= 0.90 geomean, no task above 1.10. "
              f"Met by: {', '.join(met) if met else 'none'}.", ""]
    for label, text in found.items():
        lines += [f"### {label}", "", "```python", text.rstrip(), "```", ""]
    write_atomic(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
