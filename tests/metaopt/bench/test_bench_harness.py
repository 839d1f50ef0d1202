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
        if steps > 1:  # one-step runs check that the optimizer can run the task
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


def test_resume_progress_bar_starts_at_the_work_done(tmp_path, monkeypatch):
    run_bench(BenchConfig(out=str(tmp_path), **TINY))
    path = tmp_path / "curves.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]))  # one adamw seed lost
    bars = []
    real = harness.tqdm
    monkeypatch.setattr(harness, "tqdm", lambda **kw: bars.append(kw) or real(**kw))
    run_bench(BenchConfig(out=str(tmp_path), **TINY, resume=True))
    # 2 pairs x (2 tuning trials + 2 seeds) = 8 units; 7 were done
    assert (bars[0]["total"], bars[0]["initial"]) == (8, 7)


def test_interrupted_tuning_resumes_without_repeating_a_learning_rate(tmp_path, monkeypatch):
    cfg = dict(TINY, optimizers=("adamw",), tune_trials=4)
    tried = []
    real = harness.train_curve

    def tuning(stop_after):
        def run(task, rule, seed, steps, every, impl):
            if steps > 1 and steps == every:  # a tuning run
                if len(tried) == stop_after:
                    raise KeyboardInterrupt
                tried.append(rule.hp["lr"])
            return real(task, rule, seed, steps, every, impl)
        return run

    monkeypatch.setattr(harness, "train_curve", tuning(2))
    with pytest.raises(KeyboardInterrupt):
        run_bench(BenchConfig(out=str(tmp_path), **cfg))
    monkeypatch.setattr(harness, "train_curve", tuning(-1))
    run_bench(BenchConfig(out=str(tmp_path), **cfg, resume=True))
    assert len(tried) == 4 and len(set(tried)) == 4
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/optuna.sqlite3")
    study = optuna.load_study(study_name=summary.study_name,
                              storage=f"sqlite:///{tmp_path}/optuna.sqlite3")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 4 + ["FAIL"]


def test_unrunnable_pairs_skip_or_fail_before_writing(tmp_path, capsys):
    cfg = dict(TINY, optimizers=("sgd", "muon"), tune_trials=0)
    with pytest.raises(ValueError, match="optimizer muon cannot run task quadratic: muon: a "
                                         "parameter of shape"):
        run_bench(BenchConfig(out=str(tmp_path / "a"), **cfg))
    assert not (tmp_path / "a").exists()
    result = run_bench(BenchConfig(out=str(tmp_path / "b"), **cfg, skip_unrunnable=True))
    assert {r["optimizer"] for r in result.records} == {"sgd"}
    assert "skipping muon on quadratic" in capsys.readouterr().err
    assert "Skipped: muon on quadratic" in (tmp_path / "b" / "results.md").read_text()


def test_bad_task_option_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        run_bench(BenchConfig(out=str(tmp_path / "a"), **TINY, task_options={"width": 3}))
    assert not (tmp_path / "a").exists()


def test_a_task_object_from_a_user_module_can_be_benchmarked(tmp_path):
    import torch
    import torch.nn.functional as F
    from torch import nn

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long()
    task = tasks.from_module(lambda: nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)),
                             (x, y), F.cross_entropy, batch_size=16, name="mynet")
    result = run_bench(BenchConfig(tasks=(task,), optimizers=("sgd", "adamw"), out=str(tmp_path),
                                   seeds=1, steps=8, tune_trials=2))
    assert {(r["task"], r["optimizer"]) for r in result.records} == {("mynet", "sgd"),
                                                                    ("mynet", "adamw")}
    rec = next(r for r in result.records if r["optimizer"] == "adamw")
    direct = train_curve(task, zoo.rule("adamw", lr=rec["lr"]), 0, 8, rec["eval_every"])
    assert _strip_time(rec) == _strip_time({"task": "mynet", "optimizer": "adamw", "seed": 0,
                                            **direct})
    assert json.loads((tmp_path / "bench_config.json").read_text())["tasks"] == ["mynet"]
    with pytest.raises(ValueError, match="task_options apply to tasks given by name"):
        run_bench(BenchConfig(tasks=(task,), optimizers=("sgd",), out=str(tmp_path / "x"),
                              task_options={"width": 3}))
