"""The benchmark harness: run update rules x tasks x seeds, tune each rule's learning rate with
an equal Optuna budget, record curves, and write a table and plots.

    from metaopt.bench import BenchConfig, run_bench
    result = run_bench(BenchConfig(tasks=("quadratic",), optimizers=("sgd", "adamw"),
                                   out="runs/quad", seeds=3, steps=300, tune_trials=10))
    result.files["table"]       # runs/quad/results.md

The same from the shell:
``metaopt bench --task quadratic --optimizer sgd,adamw --tune-trials 10 --out runs/quad``.
"""
from .harness import BenchConfig, BenchResult, run_bench, write_report
from .run import train_curve

__all__ = ["BenchConfig", "BenchResult", "run_bench", "train_curve", "write_report"]
