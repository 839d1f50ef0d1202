"""Meta-training across processes (torchrun, gloo): the same theta as one process, bit for bit
(with the same vmap batches: ``tasks_per_vmap``), and a checkpoint written by one number of
ranks resumes with another."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import meta_train_ranks
from meta_train_ranks import run_job

pytestmark = pytest.mark.slow
SCRIPT = meta_train_ranks.__file__


def _torchrun(nproc: int, jobs: list[dict], tmp: Path) -> None:
    spec = tmp / f"jobs-{nproc}.json"
    spec.write_text(json.dumps(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={nproc}", SCRIPT, str(spec)], check=True, env=env,
                   timeout=600)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


def test_two_ranks_equal_one_process_and_resume_with_another_rank_count(tmp_path):
    jobs = [dict(setup="quad64", method="pes", steps=3, ckpt=str(tmp_path / "q2"),
                 tasks_per_vmap=2),  # ranks hold chunks {0,1},{4} and {2,3}
            dict(setup="mlp", method="tbptt", steps=2),  # default: ranks hold {0,1,2}, {3,4}
            dict(setup="choice", method="es", steps=3)]  # not vmappable: one by one
    alone_kw = {"quad64": {}, "mlp": {"tasks_per_vmap": 3}, "choice": {}}
    for j in jobs:
        j["out"] = str(tmp_path / f"{j['setup']}-2.safetensors")
    # a 1-process checkpoint at step 3, resumed below by 3 ranks
    q = dict(setup="quad64", method="pes", tasks_per_vmap=2)
    run_job(dict(q, steps=3, ckpt=str(tmp_path / "q1")))
    _torchrun(2, jobs, tmp_path)
    _torchrun(3, [dict(q, steps=5, ckpt=str(tmp_path / "q1"),
                       out=str(tmp_path / "q1-resumed.safetensors"))], tmp_path)
    for j in jobs:
        alone = run_job({**{k: v for k, v in j.items() if k != "ckpt"}, **alone_kw[j["setup"]]})
        assert _equal(alone, load_file(j["out"])), j["setup"]
        assert not _equal(alone, run_job({**j, "ckpt": None, "steps": 1})), j["setup"]
    straight = run_job(dict(q, steps=5))
    two_to_one = run_job(dict(q, steps=5, ckpt=str(tmp_path / "q2")))
    assert _equal(straight, two_to_one)                                  # 2 ranks -> 1
    assert _equal(straight, load_file(tmp_path / "q1-resumed.safetensors"))  # 1 -> 3 ranks
    assert sorted(p.name for p in (tmp_path / "q2").iterdir()) == [
        "ckpt-00000005.safetensors", "latest.json"]


def test_one_process_gathers_its_own_rows_in_slot_order():
    """Without a process group (:data:`learned.distributed.LOCAL`) every slot is local:
    ``gather_rows`` returns the rows it was given, by slot, as a group of one rank would."""
    from learned.distributed import LOCAL

    rows = {2: torch.tensor([3.0]), 0: torch.tensor([1.0, 5.0]), 1: torch.tensor([-2.0])}
    owners = LOCAL.owners(3, chunk=1)
    assert owners == [0, 0, 0]
    got = LOCAL.gather_rows(rows, owners)
    assert [r.tolist() for r in got] == [[1.0, 5.0], [-2.0], [3.0]]
