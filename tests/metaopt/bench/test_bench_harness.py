"""The harness end to end on a tiny benchmark: files written, resume, storage URL."""
import json

import pytest

from metaopt import zoo
from metaopt.bench import BenchConfig, run_bench, train_curve
from metaopt.bench import harness
from metaopt import tasks

optuna = pytest.importorskip("optuna")

TINY = dict(tasks=("quadratic",), optimizers=("sgd", "adamw"), seeds=2, steps=12, eval_every=4,
            tune_trials=2)


def _strip_time(rec):
    return {k: v for k, v in rec.items() if k != "time_s"} | {
        "evals": [{k: v for k, v in e.items() if k != "time_s"} for e in rec["evals"]]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run_bench(BenchConfig(out=str(out), **TINY))


def test_writes_curves_table_plots_and_study(tiny):
    out, result = tiny
    records = [json.loads(l) for l in (out / "curves.jsonl").read_text().splitlines()]
    assert sorted((r["optimizer"], r["seed"]) for r in records) == [
        ("adamw", 0), ("adamw", 1), ("sgd", 0), ("sgd", 1)]
    for name in ("curves_quadratic.png", "profile.png", "profile_final_loss.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert "| quadratic | adamw | 2 |" in table and "| quadratic | sgd | 2 |" in table
    assert "torch" in table and "UTC" in table
    url = f"sqlite:///{out}/optuna.sqlite3"
    for opt in ("sgd", "adamw"):
        (study,) = [s for s in optuna.get_all_study_summaries(url) if f"/{opt}/" in s.study_name]
        best = optuna.load_study(study_name=study.study_name, storage=url).best_params["lr"]
        assert study.n_trials == 2
        assert {r["lr"] for r in records if r["optimizer"] == opt} == {best}


def test_records_equal_a_direct_run_with_the_tuned_lr(tiny):
    _, result = tiny
    rec = next(r for r in result.records if r["optimizer"] == "adamw" and r["seed"] == 1)
    direct = train_curve(tasks.get("quadratic"), zoo.rule("adamw", lr=rec["lr"]), 1, 12, 4)
    assert _strip_time({**rec}) == _strip_time({"task": "quadratic", "optimizer": "adamw",
                                                "seed": 1, **direct})


def test_existing_results_need_resume_and_same_settings(tiny):
    out, _ = tiny
    with pytest.raises(ValueError, match="already holds benchmark results"):
        run_bench(BenchConfig(out=str(out), **TINY))
    with pytest.raises(ValueError, match=r"different settings \(steps: 12 -> 13\)"):
        run_bench(BenchConfig(out=str(out), **{**TINY, "steps": 13}, resume=True))


def test_resume_skips_finished_runs(tmp_path, monkeypatch):
    run_bench(BenchConfig(out=str(tmp_path), **TINY))
    path = tmp_path / "curves.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:30])  # killed while writing the third record
    calls = []
    real = harness.train_curve

    def counting(task, rule, seed, steps, every, impl):
        calls.append((rule.name, seed, steps == every))
        return real(task, rule, seed, steps, every, impl)

    monkeypatch.setattr(harness, "train_curve", counting)
    result = run_bench(BenchConfig(out=str(tmp_path), **TINY, resume=True))
    # only the two lost adamw seeds ran again; the finished study ran no new trials
    assert calls == [("adamw", 0, False), ("adamw", 1, False)]
    new_lines = path.read_text().splitlines(keepends=True)
    assert new_lines[:2] == lines[:2] and len(new_lines) == 4
    assert len(result.records) == 4


def test_storage_url_is_honoured(tmp_path):
    db = tmp_path / "elsewhere" / "shared.db"
    db.parent.mkdir()
    out = tmp_path / "out"
    run_bench(BenchConfig(out=str(out), **{**TINY, "optimizers": ("sgd",)},
                          storage=f"sqlite:///{db}"))
    assert db.exists() and not (out / "optuna.sqlite3").exists()
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    assert summary.n_trials == 2 and summary.study_name.startswith("quadratic/sgd/steps=12")


def test_no_tuning_uses_defaults_and_needs_no_storage(tmp_path):
    result = run_bench(BenchConfig(out=str(tmp_path), **{**TINY, "tune_trials": 0}))
    assert {r["lr"] for r in result.records} == {zoo.defaults("sgd")["lr"]}
    assert not (tmp_path / "optuna.sqlite3").exists()


@pytest.mark.parametrize("field,value,match", [
    ("tasks", ("nope",), "unknown task 'nope'; choose from: .*quadratic"),
    ("optimizers", ("nope",), "unknown optimizer 'nope'; choose from: .*adamw"),
    ("seeds", 0, "seeds must be >= 1"),
    ("tune_trials", -1, "tune_trials must be >= 0"),
    ("impl", "jit", "unknown impl 'jit'; choose from: auto, loop"),
    ("impl", "fused", "impl 'fused' is not available for: shampoo"),
])
def test_bad_config_is_a_value_error(tmp_path, field, value, match):
    # shampoo (a matrix member) has no multi-tensor fused path
    base = {**TINY, "optimizers": ("shampoo",)} if field == "impl" else TINY
    with pytest.raises(ValueError, match=match):
        run_bench(BenchConfig(out=str(tmp_path), **{**base, field: value}))
    assert not (tmp_path / "curves.jsonl").exists()
