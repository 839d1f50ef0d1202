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
    """Fitness of each program with the chosen evaluator (all give the same numbers); on a
    :class:`search.family.Family` the normalised family fitness."""
    from .family import Family

    if isinstance(task, Family):
        return task.evaluate(programs, cfg, evaluator)
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

    ``address`` (or ``RAY_ADDRESS``) joins a running cluster without passing resources (Ray
    refuses ``num_cpus`` there); otherwise a local Ray starts with ``workers`` CPUs (default
    2). ``workers`` defaults to the cluster's CPUs (its GPUs when the task is on cuda, each
    task then asking for a fraction of one). Ray retries a task whose worker died
    (``max_retries``); a chunk is a pure function of its texts, so a retry recomputes the same
    numbers. Workers only compute: the driver alone writes the store, after ``evaluate``
    returns, so an evaluation finished and committed is never lost."""

    def __init__(self, task, cfg: FitnessConfig, evaluator: str = "batched",
                 workers: int | None = None, address: str | None = None, max_retries: int = 3):
        import os

        if workers is not None and workers < 1:
            raise ValueError(f"workers={workers}: must be >= 1")
        try:
            import ray
        except ImportError:
            raise ValueError("--backend ray needs ray: pip install 'ray[default]'") from None
        self.ray = ray
        address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = not ray.is_initialized()
        if self._started:
            opts = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                if address:
                    _check_reachable(address)
                    ray.init(address=address, **opts)
                else:
                    ray.init(num_cpus=workers or 2, **opts)
            except Exception as err:  # noqa: BLE001 - ray raises many kinds; one line for all
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                where = f"the cluster at {address!r}" if address else "a local Ray"
                raise ValueError(f"--backend ray: cannot start or join {where}: {msg}") from None
        gpu = _on_cuda(task)
        res = ray.cluster_resources()
        self.workers = workers or max(1, int(res.get("GPU" if gpu else "CPU", 1)))
        opts = {"max_retries": max_retries, "retry_exceptions": False}
        if gpu:
            opts["num_gpus"] = min(1.0, max(res.get("GPU", 1), 1) / self.workers)
        self.remote = ray.remote(**opts)(_evaluate_texts)
        self.task_ref = ray.put(task)
        self.cfg, self.evaluator = cfg, evaluator

    def evaluate(self, programs: list[Program]) -> list[Fitness]:
        texts = [p.to_text() for p in programs]
        n = max(1, -(-len(texts) // self.workers))
        chunks = [texts[i:i + n] for i in range(0, len(texts), n)]
        futures = [self.remote.remote(c, self.task_ref, self.cfg, self.evaluator) for c in chunks]
        return [f for chunk in self.ray.get(futures) for f in chunk]

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``host:port`` address must accept a TCP connection (Ray itself retries for minutes);
    ``auto`` and ``ray://`` addresses are left to Ray."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as err:
        raise ConnectionError(f"nothing answers at {address} ({err.__class__.__name__})") from None


def _on_cuda(task) -> bool:
    from .family import Family

    first = task.members[0].task if isinstance(task, Family) else task
    dev = getattr(first, "device", None)
    return getattr(dev, "type", str(dev)) == "cuda"


def make_backend(name: str, task, cfg: FitnessConfig, evaluator: str = "batched",
                 workers: int | None = None, address: str | None = None):
    if name == "local":
        if address:
            raise ValueError("--address joins a Ray cluster; use it with --backend ray")
        return LocalBackend(task, cfg, evaluator)
    if name == "ray":
        return RayBackend(task, cfg, evaluator, workers, address)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
