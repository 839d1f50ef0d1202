"""Checkpoints on disk: every corrupt kind is a one-line error naming the file, a checkpoint
never reads outside its folder, and written files are 0644."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from learned.checkpoint import LATEST, CheckpointError, load_checkpoint, save_checkpoint
from learned.meta_train import meta_train
from learned.sgdm_lopt import SGDMLOpt
from learned.task_family import SingleTask
from metaopt import tasks


def _saved(folder):
    save_checkpoint(folder, 3, {"a": torch.arange(4.0)}, {"config": {}, "history": []})
    return folder / "ckpt-00000003.safetensors"


def test_a_sound_checkpoint_round_trips_with_0644_files(tmp_path):
    _saved(tmp_path)
    tensors, meta = load_checkpoint(tmp_path)
    assert torch.equal(tensors["a"], torch.arange(4.0)) and meta["outer_step"] == 3
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644, p


def _json(folder, obj):
    (folder / LATEST).write_text(json.dumps(obj))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


def _garbage(path):
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{notjson" + bytes(40))


CORRUPTIONS = {
    "latest is a list": (lambda d, f: _json(d, [1, 2]), LATEST),
    "latest is not json": (lambda d, f: (d / LATEST).write_text("{oops"), LATEST),
    "latest is deeply nested": (lambda d, f: (d / LATEST).write_text("[" * 100000), LATEST),
    "tensors outside the folder": (
        lambda d, f: _json(d, {"tensors": "../x.safetensors", "outer_step": 3}), LATEST),
    "tensors absolute path": (
        lambda d, f: _json(d, {"tensors": str(f.resolve()), "outer_step": 3}), LATEST),
    "tensors not a string": (lambda d, f: _json(d, {"tensors": 5, "outer_step": 3}), LATEST),
    "tensors missing": (lambda d, f: _json(d, {"tensors": "ckpt-9.safetensors",
                                                 "outer_step": 3}), LATEST),
    "outer_step not an integer": (
        lambda d, f: _json(d, {"tensors": f.name, "outer_step": "3"}), LATEST),
    "truncated tensor file": (lambda d, f: _truncate(f), "ckpt-00000003.safetensors"),
    "garbage tensor file": (lambda d, f: _garbage(f), "ckpt-00000003.safetensors"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_each_corrupt_checkpoint_is_a_one_line_error_naming_the_file(tmp_path, kind):
    folder = tmp_path / "ckpt"
    corrupt, culprit = CORRUPTIONS[kind]
    corrupt(folder, _saved(folder))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(folder)
    msg = str(e.value)
    assert "\n" not in msg and str(folder / culprit) in msg, msg


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = _saved(tmp_path / "other")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "ckpt-00000003.safetensors").symlink_to(outside)
    _json(folder, {"tensors": "ckpt-00000003.safetensors", "outer_step": 3})
    with pytest.raises(CheckpointError, match="inside"):
        load_checkpoint(folder)


def _fam():
    return SingleTask(tasks.get("quadratic", dim=2), horizon=4)


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("slots"), lambda m: m.update(config=[1]),
    lambda m: m.update(slots=[{"resets": "x"}]), lambda m: m.update(history=None)])
def test_a_wrong_meta_training_checkpoint_is_a_one_line_error(tmp_path, edit):
    meta_train(SGDMLOpt(), _fam(), steps=2, truncation=2, num_tasks=1, checkpoint_dir=tmp_path,
               progress=False)
    meta = json.loads((tmp_path / LATEST).read_text())
    edit(meta)
    _json(tmp_path, meta)
    with pytest.raises(ValueError) as e:
        meta_train(SGDMLOpt(), _fam(), steps=3, truncation=2, num_tasks=1,
                   checkpoint_dir=tmp_path, progress=False)
    assert "\n" not in str(e.value) and str(tmp_path / LATEST) in str(e.value)


def test_a_checkpoint_missing_a_tensor_is_a_one_line_error(tmp_path):
    meta_train(SGDMLOpt(), _fam(), steps=2, truncation=2, num_tasks=1, checkpoint_dir=tmp_path,
               progress=False)
    tensors, meta = load_checkpoint(tmp_path)
    del tensors["gen/perturb"]
    save_checkpoint(tmp_path, 2, tensors, {k: v for k, v in meta.items()
                                           if k not in ("tensors", "outer_step")})
    with pytest.raises(CheckpointError, match="gen/perturb") as e:
        meta_train(SGDMLOpt(), _fam(), steps=3, truncation=2, num_tasks=1,
                   checkpoint_dir=tmp_path, progress=False)
    assert str(tmp_path / LATEST) in str(e.value)


def test_the_l2o_trainer_writes_the_same_checkpoint_format(tmp_path):
    """meta_train_l2o's checkpoint is a learned.checkpoint folder (theta/..., adam/..., JSON
    history), its files 0644, and a corrupt one is the same one-line error."""
    from learned.l2o import MathL2O, meta_train_l2o

    lopt = MathL2O()
    make = lambda i: tasks.get("lasso", m=8, n=16, sparsity=3, instances=4, seed=i)  # noqa: E731
    theta, hist = meta_train_l2o(lopt, make, 2, horizon=4, unroll=2, checkpoint=str(tmp_path),
                                 checkpoint_every=1, progress=False)
    tensors, meta = load_checkpoint(tmp_path)
    assert meta["outer_step"] == 2 and meta["history"] == pytest.approx(hist)
    assert all(torch.equal(tensors[f"theta/{k}"], v) for k, v in theta.items())
    assert any(k.startswith("adam/") for k in tensors)
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o644 for p in tmp_path.iterdir())
    _json(tmp_path, [1])
    with pytest.raises(CheckpointError, match="latest.json"):
        meta_train_l2o(lopt, make, 3, horizon=4, unroll=2, checkpoint=str(tmp_path),
                       progress=False)
