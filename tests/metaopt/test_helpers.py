"""metaopt.helpers: atomic writes, tree flattening, the low-precision compute dtype, mode Gram
matrices."""
import os

import pytest
import torch

from metaopt import helpers
from metaopt.bench.atomic import write_atomic as old_write_atomic
from metaopt.zoo._sqrt import sqrt0 as old_sqrt0


def test_write_atomic_replaces_whole_files_and_cleans_up_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    helpers.write_atomic(path, "first")
    helpers.write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert oct(path.stat().st_mode & 0o777) == "0o644"

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        helpers.write_atomic(path, "third")
    assert path.read_bytes() == b"second" and os.listdir(tmp_path) == ["out.json"]


def test_old_names_still_work():
    assert old_write_atomic is helpers.write_atomic and old_sqrt0 is helpers.sqrt0


def test_flatten_tree_round_trips_nested_containers():
    tree = {"b": [torch.ones(2), (3, {"z": 1.5, "a": None})], "a": torch.zeros(1)}
    leaves, spec = helpers.flatten_tree(tree)
    assert leaves[0] is tree["a"] and leaves[1] is tree["b"][0] and len(leaves) == 5
    again = helpers.unflatten_tree(leaves, spec)
    assert again.keys() == tree.keys() and isinstance(again["b"][1], tuple)
    assert again["b"][1][1] == {"z": 1.5, "a": None}


def test_compute_dtype():
    got = [helpers.compute_dtype(d) for d in
           (torch.float64, torch.float32, torch.bfloat16, torch.float16)]
    assert got == [torch.float64, torch.float32, torch.float32, torch.float32]


def test_mode_gram_is_the_unfolding_gram_matrix():
    g = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(helpers.mode_gram(g, 1), torch.einsum("aib,ajb->ij", g, g))
    torch.testing.assert_close(helpers.mode_gram(g, 0), torch.einsum("iab,jab->ij", g, g))


@pytest.mark.parametrize("name", ["discovered", "bilevel_real_60s", "a-b_C9"])
def test_file_stems_that_are_safe_pass(name):
    helpers.check_file_stem(name)


@pytest.mark.parametrize("name", ["", "a/b", "../x", "x.md", "na me", "é"])
def test_other_file_stems_are_a_one_line_error(name):
    with pytest.raises(ValueError, match=r"--name .*: use letters, digits, '_' and '-' only"):
        helpers.check_file_stem(name, "--name")
