"""bilevel.tuning: the method runners charge each method its own wall-clock time."""
import time

from bilevel import problems
from bilevel.tuning import RUNNERS

SLEEP = 0.004


def _slow_sampler(problem):
    """``problem.sample`` made 4 ms slower per call; returns the call counter."""
    calls, sample = [0], problem.sample

    def slow(*args, **kwargs):
        calls[0] += 1
        time.sleep(SLEEP)
        return sample(*args, **kwargs)

    problem.sample = slow
    return calls


def test_f2sa_seconds_include_the_work_between_snapshots():
    """F2SA draws a minibatch per inner and outer step; with each draw 4 ms slower, the time
    its trace records must include at least those sleeps (its runner once paused the clock at
    each snapshot and never restarted it, so every F2SA trace read about 0.02 s)."""
    problem = problems.get("hyperclean", n_train=200, n_val=100, seed=0)
    calls = _slow_sampler(problem)
    trace = RUNNERS["f2sa"](problem, budget=60.0, seed=0, max_steps=4)
    assert calls[0] >= 8
    assert trace.seconds[-1] >= 0.9 * SLEEP * calls[0]
    assert trace.seconds == sorted(trace.seconds)
