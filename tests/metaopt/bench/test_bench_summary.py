"""Targets, time-to-target and medians of the summary table on records worked out by hand."""
import math

import pytest

from metaopt.bench.summary import (markdown_table, median, steps_to_target, summary_rows,
                                   task_target, time_to_target)


def _rec(opt, seed, vals, diverged=False, lr=0.1, acc=None):
    evals = [{"step": 10 * i, "time_s": 0.5 * i, "val_loss": v,
              **({} if acc is None else {"accuracy": acc})} for i, v in enumerate(vals)]
    return {"task": "t", "optimizer": opt, "seed": seed, "lr": lr, "evals": evals,
            "diverged": diverged, "train_loss": [1.0]}


RECORDS = [
    _rec("a", 0, [4.0, 2.0, 1.0]),
    _rec("a", 1, [4.0, 3.0, 2.0]),
    _rec("a", 2, [4.0, 1.5, 1.2]),
    _rec("b", 0, [4.0, 1.05, 0.9], acc=0.5),
    _rec("b", 1, [4.0, 3.0, None], diverged=True),
    _rec("b", 2, [4.0, 2.0, 1.1], acc=0.7),
]


def test_target_is_best_median_final_times_one_plus_tol():
    by = {"a": RECORDS[:3], "b": RECORDS[3:]}
    # median finals: a -> median(1.0, 2.0, 1.2) = 1.2 ; b -> median(0.9, inf, 1.1) = 1.1
    assert task_target(by, 0.1) == pytest.approx(1.21)
    assert task_target({"a": [_rec("a", 0, [-2.0])]}, 0.5) == -1.0  # best + tol * |best|


def test_steps_and_time_to_target_take_the_first_evaluation_below():
    r = _rec("a", 0, [4.0, 2.0, 1.0])
    assert steps_to_target(r, 2.0) == 10 and time_to_target(r, 2.0) == 0.5
    assert steps_to_target(r, 0.5) == math.inf and time_to_target(r, 0.5) == math.inf
    assert steps_to_target(r, math.inf) == math.inf  # no finite target: nothing is reached


def test_rows_report_medians_over_seeds():
    rows = {r["optimizer"]: r for r in summary_rows(RECORDS, 0.1)}
    target = 1.21
    a, b = rows["a"], rows["b"]
    assert a["seeds"] == 3 and a["final_val_loss"] == 1.2 and a["diverged"] == 0
    # a reaches 1.21 at steps (20, inf, 20) -> median 20
    assert a["steps_to_target"] == 20 and a["time_to_target"] == 1.0
    assert b["final_val_loss"] == 1.1 and b["diverged"] == 1
    # b reaches at steps (10, inf, 20) -> median 20
    assert b["steps_to_target"] == 20 and b["target"] == pytest.approx(target)
    assert b["accuracy"] == 0.6 and math.isnan(a["accuracy"])


def test_median_keeps_inf_as_a_miss():
    assert median([1.0, math.inf, math.inf]) == math.inf
    assert median([1.0, 2.0, math.inf]) == 2.0


def test_markdown_table_has_one_row_per_pair_and_defines_the_target():
    text = markdown_table(summary_rows(RECORDS, 0.1), 0.1)
    lines = [l for l in text.splitlines() if l.startswith("| t |")]
    assert len(lines) == 2
    assert "| 1.2 |" in lines[0] and "| 1.21 |" in lines[0]
    assert "plus 0.1 times its magnitude" in text
