"""Task-family fitness: normalisation against tuned AdamW, ties, held-out meta-validation, the
funnel, bad families, and resume of a family search after SIGKILL."""
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from metaopt import tasks
from search.backends import evaluate_local
from search.evolve import run
from search.family import Family, combine, normalised
from search.fitness import Fitness, FitnessConfig
from search.parse import parse
from search.warm import ADAMW, BASELINES, SGD, adamw_text

CFG = FitnessConfig(steps=10, lrs=(0.01, 0.1))
TINY = [("logreg_digits", {"batch_size": 16}, 8), ("mlp_digits", {"width": 8, "depth": 1, "batch_size": 16}, 6)]
MOMENTUM = """def train(w, g, m, lr):
    m = interp(g, m, 0.9)
    update = m * lr
    return update, m
"""


def test_normalised_is_the_log_loss_ratio_and_family_score_its_mean():
    assert normalised(0.5, 2.0) == pytest.approx(math.log(0.25))
    assert normalised(math.inf, 1.0) == math.inf
    fits = [Fitness(0.5, 0.1), Fitness(3.0, 0.01)]
    fam = combine(fits, [1.0, 2.0])
    assert fam.value == pytest.approx((math.log(0.5) + math.log(1.5)) / 2)
    assert fam.task_lrs == [0.1, 0.01]
    assert combine([Fitness(0.5, 0.1), Fitness(math.inf, None)], [1.0, 2.0]).value == math.inf


def test_family_fitness_equals_per_task_fitness_over_tuned_adamw():
    fam = Family.build(TINY)
    progs = [parse(SGD), parse(MOMENTUM)]
    got = fam.evaluate(progs, CFG)
    for p, fit in zip(progs, got):
        ref = []
        for m in fam.members:
            cfg = FitnessConfig(steps=m.steps, lrs=CFG.lrs)
            own = evaluate_local([p], m.task, cfg, "serial")[0].value
            base = evaluate_local([parse(ADAMW)], m.task, cfg, "serial")[0].value
            ref.append(math.log(own / base))
        assert fit.value == pytest.approx(sum(ref) / len(ref), rel=1e-4, abs=1e-6)
    assert fam.evaluate([parse(ADAMW)], CFG)[0].value == pytest.approx(0.0, abs=1e-9)


def test_adamw_text_writes_the_constants_and_keeps_the_default_program():
    assert adamw_text() == ADAMW
    assert "interp(g, m, 0.5)" in adamw_text(0.5) and "w * 0.01" in adamw_text(0.5)
    no_wd = adamw_text(0.7, 0.0)
    assert "w *" not in no_wd and "interp(g, m, 0.7)" in no_wd
    assert len(set(BASELINES["adamw_tuned"])) == 6
    for text in BASELINES["adamw_tuned"]:
        parse(text)  # every variant is a valid program


def test_constants_tuned_baseline_is_the_best_variant_per_member():
    """``baseline="adamw_tuned"``: each member's baseline is the lowest tuned loss over the
    AdamW variants (evaluated one by one here), never above plain tuned AdamW's, and a
    variant's family score against it is >= 0 (it cannot beat the best of itself)."""
    fam = Family.build(TINY, baseline="adamw_tuned")
    plain = Family.build(TINY)
    fam.prepare(CFG)
    plain.prepare(CFG)
    for i, m in enumerate(fam.members):
        cfg = fam.member_cfg(CFG, i)
        each = [evaluate_local([parse(t)], m.task, cfg, "serial")[0].value
                for t in BASELINES["adamw_tuned"]]
        assert fam.baselines[i] == pytest.approx(min(each), rel=1e-4, abs=1e-6)
        assert fam.baseline_texts[i] == BASELINES["adamw_tuned"][each.index(min(each))]
        assert fam.baselines[i] <= plain.baselines[i] * (1 + 1e-6)
    scores = fam.evaluate([parse(t) for t in BASELINES["adamw_tuned"]], CFG)
    assert min(f.value for f in scores) >= -1e-9
    assert fam.scaled(2).baseline == "adamw_tuned"


def test_unknown_baseline_is_a_one_line_error(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown baseline 'best'"):
        run(family=TINY, budget=4, out=str(out), progress=False, baseline="best")
    with pytest.raises(ValueError, match="give family="):
        run(task="logreg_digits", budget=4, out=str(out), progress=False,
            baseline="adamw_tuned")
    assert not out.exists()
    proc = subprocess.run([sys.executable, "-m", "metaopt", "search", "--task", "logreg_digits",
                           "--baseline", "adamw_tuned", "--budget", "4", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "--baseline normalises a --family" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and not out.exists()


class _Scaled(tasks.get("logreg_digits").__class__):
    """logreg_digits whose reported validation loss is 1000x larger (training unchanged)."""

    def evaluate(self, params):
        out = super().evaluate(params)
        return {**out, "val_loss": 1000.0 * out["val_loss"]}


def test_normalisation_removes_a_task_s_loss_scale():
    plain = Family.build([("logreg_digits", {"batch_size": 16}, 8)])
    scaled = Family.build([(_Scaled(batch_size=16), {}, 8)])
    progs = [parse(SGD), parse(MOMENTUM)]
    a = [f.value for f in plain.evaluate(progs, CFG, "serial")]
    b = [f.value for f in scaled.evaluate(progs, CFG, "serial")]
    assert scaled.baselines[0] == pytest.approx(1000 * plain.baselines[0], rel=1e-5)
    assert b == pytest.approx(a, rel=1e-4, abs=1e-6)


class _Flat(tasks.get("logreg_digits").__class__):
    """Every program ties: the validation loss ignores the parameters."""

    def evaluate(self, params):
        return {"val_loss": 1.0}


def test_ties_are_broken_by_evaluation_order_and_counted(tmp_path):
    kw = dict(budget=12, seed=0, population=4, tournament=2, batch=4, fitness=CFG,
              progress=False)
    a = run(family=[(_Flat(batch_size=8), {}, 4)], out=str(tmp_path / "a"), **kw)
    b = run(family=[(_Flat(batch_size=8), {}, 4)], **kw)
    from search.store import Store

    rows = Store(os.path.join(tmp_path, "a", "search.sqlite")).rows()
    finite = [r for r in rows if math.isfinite(r["fitness"])]
    assert all(r["fitness"] == 0.0 for r in finite)
    assert a.summary["best_id"] == finite[0]["id"]  # the earliest evaluated wins
    assert a.summary["ties_at_best"] == len({r["fingerprint"] for r in finite}) > 1
    assert a.best.to_text() == b.best.to_text() and a.summary["ties_at_best"] == b.summary["ties_at_best"]


def test_heldout_meta_validation_is_stored_per_generation_and_picks_by_heldout(tmp_path):
    res = run(family=TINY, heldout=TINY[:1], budget=16, batch=4, population=4, tournament=2,
              fitness=CFG, validate_every=4, validate_top=2, out=str(tmp_path), progress=False)
    val = res.validation
    assert sorted({v["evaluated"] for v in val}) == [5, 9, 13, 16]
    assert all(len([v for v in val if v["evaluated"] == e]) <= 2 for e in (5, 9, 13, 16))
    best = min(val, key=lambda v: (v["score"], v["program"]))
    assert res.summary["best_validated_id"] == best["program"]
    held = Family.build(TINY[:1])
    again = held.evaluate([res.validated], CFG)[0].value
    assert again == pytest.approx(best["score"], rel=1e-4, abs=1e-6)
    stages = res.funnel
    assert stages and stages[0]["labels"][0].endswith("@16")  # the proxy family at 2x steps
    for a, b in zip(stages, stages[1:]):  # only programs beating tuned AdamW advance
        assert {p["text"] for p in b["programs"]} == {p["text"] for p in a["programs"] if p["score"] < 0}


@pytest.mark.parametrize("family, message", [
    ("nope", "unknown family 'nope'"),
    ([], "is empty"),
    ([("mlp_digits", {"width": -3}, 5)], "failed to build"),
    ([("mlp_digits", {"colour": 1}, 5)], "failed to build"),
    ([("mlp_digits", {}, 0)], "steps >= 1"),
])
def test_bad_families_are_one_line_errors_and_create_nothing(tmp_path, family, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message) as err:
        run(family=family, budget=4, out=str(out), progress=False)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_cli_bad_family_exits_2_in_one_line(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "metaopt", "search", "--family", "nope",
                           "--budget", "4", "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown family 'nope'" in proc.stderr
    assert not out.exists()


def _cli(out, resume=False):
    args = [sys.executable, "-m", "metaopt", "search", "--family", "tiny", "--heldout", "tiny",
            "--validate-every", "8", "--budget", "40", "--batch", "4", "--population", "8",
            "--steps", "10", "--simplify-tol", "-1", "--out", str(out), "--no-progress",
            "--device", "cpu", "--seed", "3"]
    return args + (["--resume"] if resume else [])


@pytest.mark.slow
def test_family_search_resumes_after_sigkill(tmp_path):
    from search.store import Store

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db = killed / "search.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            n = Store(str(db)).count() if db.exists() else 0
        except Exception:  # noqa: BLE001 - mid-creation
            n = 0
        if n >= 12:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Store(str(db)).count()
    assert 0 < partial < 40
    assert subprocess.run(_cli(killed, resume=True), env=env, capture_output=True).returncode == 0
    straight = tmp_path / "straight"
    assert subprocess.run(_cli(straight), env=env, capture_output=True).returncode == 0
    a, b = Store(str(killed / "search.sqlite")), Store(str(straight / "search.sqlite"))
    strip = [("text", "fitness", "best_lr", "task_lrs", "parent", "cache_hit")]
    ra = [tuple(r[k] for k in strip[0]) for r in a.rows()]
    rb = [tuple(r[k] for k in strip[0]) for r in b.rows()]
    assert len(ra) == 40 and ra == rb
    va = [(v["evaluated"], v["program"], v["score"]) for v in a.validation()]
    assert va == [(v["evaluated"], v["program"], v["score"]) for v in b.validation()]
    assert (killed / "best.txt").read_text() == (straight / "best.txt").read_text()


def test_batched_equals_serial_on_an_mse_module_task():
    """A from_module task with an MSE loss (a vmap rule that fails on a target shared by the
    rows) trains the same in the batched interpreter as one at a time."""
    task = tasks.get("tabular", dataset="diabetes", arch="resmlp", width=8, depth=1, batch_size=8)
    progs = [parse(ADAMW), parse(SGD)]
    cfg = FitnessConfig(steps=4, lrs=(0.01, 0.1))
    batched = evaluate_local(progs, task, cfg, "batched")
    serial = evaluate_local(progs, task, cfg, "serial")
    assert all(math.isfinite(f.value) for f in serial)
    assert [f.value for f in batched] == pytest.approx([f.value for f in serial], rel=1e-4)
