"""Dolan-Moré performance profiles against a hand-worked example."""
import math

import pytest

from metaopt.bench.profile import performance_ratios, profile

INF = math.inf


def test_ratios_and_profile_match_the_definition():
    # three problems, three solvers; C never solves p2, nobody solves p3
    costs = {"p1": {"A": 10.0, "B": 20.0, "C": 40.0},
             "p2": {"A": 30.0, "B": 15.0, "C": INF},
             "p3": {"A": INF, "B": INF, "C": INF}}
    r = performance_ratios(costs)
    assert r == {"A": [1.0, 2.0, INF], "B": [2.0, 1.0, INF], "C": [4.0, INF, INF]}
    taus = [1.0, 1.5, 2.0, 4.0, 1e9]
    assert profile(r["A"], taus) == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert profile(r["C"], taus) == pytest.approx([0, 0, 0, 1 / 3, 1 / 3])


def test_ties_all_count_as_best():
    r = performance_ratios({"p": {"A": 5.0, "B": 5.0}})
    assert profile(r["A"], [1.0]) == profile(r["B"], [1.0]) == [1.0]


@pytest.mark.parametrize("costs", [
    {"p": {"A": 1.0}, "q": {"A": 1.0, "B": 2.0}},   # a solver missing on one problem
    {"p": {"A": 0.0, "B": 1.0}},                    # a non-positive cost
    {"p": {"A": math.nan, "B": 1.0}},
])
def test_bad_costs_are_rejected(costs):
    with pytest.raises(ValueError):
        performance_ratios(costs)
