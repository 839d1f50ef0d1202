"""The step-timing helper of the adapter benchmark: every candidate computes torch's AdamW."""
import time

from metaopt.bench.step_timing import adamw_factories, time_candidates, timing_table


def test_candidates_agree_with_torch_adamw_and_table_reports_them():
    shapes = [(8, 5), (7,), (3, 2, 2)]
    timings = time_candidates(adamw_factories(compiled=False), shapes, "cpu", warmup=2, repeats=3,
                              reference="torch AdamW for-loop")
    assert [t.name for t in timings] == list(adamw_factories(compiled=False))
    for t in timings:
        assert len(t.times_s) == 3 and t.first_s > 0
        assert t.max_diff < 1e-6, t.name
    table = timing_table(timings, 40 + 7 + 12, 1e10, "torch AdamW fused")
    row = next(l for l in table.splitlines() if l.startswith("| torch AdamW fused |"))
    assert row.split("|")[3].strip() == "1.00"


def test_past_deadline_candidates_are_skipped():
    timings = time_candidates(adamw_factories(compiled=False), [(4,)], "cpu", warmup=1, repeats=2,
                              deadline=time.perf_counter() - 1)
    assert all(t.skipped == "time cap reached" for t in timings)
    assert "skipped (time cap reached)" in timing_table(timings, 4, 1e10, "torch AdamW fused")
