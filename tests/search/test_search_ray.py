"""The Ray backend (a local Ray cluster) gives the same search as the local backend."""
import pytest

from search.evolve import run
from search.fitness import FitnessConfig


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_backend_matches_local(tmp_path):
    pytest.importorskip("ray")
    kw = dict(budget=16, seed=2, warm_start="adamw", population=4, tournament=2, batch=4,
              fitness=FitnessConfig(steps=8, lrs=(0.01, 0.1)), progress=False)
    local = run("quadratic", **kw)
    remote = run("quadratic", backend="ray", workers=2, out=str(tmp_path), **kw)
    assert remote.summary["evaluated"] == 16
    assert [h["fitness"] for h in remote.history] == pytest.approx(
        [h["fitness"] for h in local.history], rel=1e-5)
