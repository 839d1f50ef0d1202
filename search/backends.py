"""Where candidate programs are trained: ``local`` (this process, batched on its device) or
``ray`` (chunks of candidates fanned out to Ray workers; ray is imported only here, lazily)."""
from __future__ import annotations

from .batched import fitness_batched
from .fitness import Fitness, FitnessConfig, fitness_serial, fitness_vmapped
from .program import Program

BACKENDS = ("local", "ray")
EVALUATORS = ("batched", "vmapped", "serial")


def evaluate_local(programs: list[Program], task, cfg: FitnessConfig,
                   evaluator: str = "batched") -> list[Fitness]:
    """Fitness of each program with the chosen evaluator (all give the same numbers)."""
    if evaluator == "batched":
        return fitness_batched(programs, task, cfg)
    one = fitness_vmapped if evaluator == "vmapped" else fitness_serial
    return [one(p, task, cfg) for p in programs]


def _evaluate_texts(texts: list[str], task, cfg: FitnessConfig, evaluator: str) -> list[Fitness]:
    from .parse import parse

    return evaluate_local([parse(t) for t in texts], task, cfg, evaluator)


class LocalBackend:
    def __init__(self, task, cfg: FitnessConfig, evaluator: str = "batched"):
        if evaluator not in EVALUATORS:
            raise ValueError(f"unknown evaluator {evaluator!r}; choose one of {EVALUATORS}")
        self.task, self.cfg, self.evaluator = task, cfg, evaluator

    def evaluate(self, programs: list[Program]) -> list[Fitness]:
        return evaluate_local(programs, self.task, self.cfg, self.evaluator)

    def close(self) -> None:
        return None


class RayBackend:
    """Candidates split into ``workers`` chunks, each trained (batched) by one Ray task.
    Connects to a running cluster (``RAY_ADDRESS``) or starts a local one."""

    def __init__(self, task, cfg: FitnessConfig, evaluator: str = "batched", workers: int = 2):
        try:
            import ray
        except ImportError:
            raise ValueError("--backend ray needs ray: pip install 'ray[default]'") from None
        self.ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.remote = ray.remote(_evaluate_texts)
        self.task_ref = ray.put(task)
        self.cfg, self.evaluator, self.workers = cfg, evaluator, workers

    def evaluate(self, programs: list[Program]) -> list[Fitness]:
        texts = [p.to_text() for p in programs]
        n = max(1, -(-len(texts) // self.workers))
        chunks = [texts[i:i + n] for i in range(0, len(texts), n)]
        futures = [self.remote.remote(c, self.task_ref, self.cfg, self.evaluator) for c in chunks]
        return [f for chunk in self.ray.get(futures) for f in chunk]

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


def make_backend(name: str, task, cfg: FitnessConfig, evaluator: str = "batched", workers: int = 2):
    if name == "local":
        return LocalBackend(task, cfg, evaluator)
    if name == "ray":
        return RayBackend(task, cfg, evaluator, workers)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
