"""The JSON-lines curve store survives a crash mid-write and reports finished runs."""
import json

from metaopt.bench.records import CurveStore, record_key


def _rec(seed):
    return {"task": "quadratic", "optimizer": "sgd", "seed": seed, "train_loss": [1.0, 0.5]}


def test_append_then_load_round_trips(tmp_path):
    store = CurveStore(tmp_path / "c.jsonl")
    for s in range(3):
        store.append(_rec(s))
    assert CurveStore(tmp_path / "c.jsonl").load() == [_rec(0), _rec(1), _rec(2)]
    assert store.keys() == {("quadratic", "sgd", s) for s in range(3)}
    assert record_key(_rec(7)) == ("quadratic", "sgd", 7)


def test_partial_last_line_is_dropped_on_open(tmp_path):
    path = tmp_path / "c.jsonl"
    whole = json.dumps(_rec(0)) + "\n"
    path.write_text(whole + json.dumps(_rec(1))[:20])  # killed in the middle of a write
    store = CurveStore(path)
    assert store.load() == [_rec(0)]
    assert path.read_text() == whole
    store.append(_rec(1))
    assert [r["seed"] for r in store.load()] == [0, 1]


def test_missing_file_is_empty(tmp_path):
    store = CurveStore(tmp_path / "none.jsonl")
    assert store.load() == [] and store.keys() == set()


def test_non_finite_values_are_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError):
        CurveStore(tmp_path / "c.jsonl").append({**_rec(0), "x": float("inf")})
