"""Train a Fourier-neural-operator forecaster on the dataset ("AI transforms HPC").

One-step then multi-step rollout training with AdamW, warmup + cosine schedule, orbax
checkpoints (interrupt it and run it again: it resumes exactly), then a rollout of the trained
forecaster beside the solver.

    python examples/03_train_forecaster.py [--out outputs/examples] [--tiny]
"""

from __future__ import annotations

import numpy as np
from _setup import dataset, forecaster, parse

import datasets
from solvers import rollout
from surrogate.train import MetricsLog


def main(argv=None) -> None:
    args = parse(__doc__.splitlines()[0], argv)
    f = forecaster(args)
    records = MetricsLog.read(args.out / "train")
    if records:
        print(
            f"training loss: {records[0]['loss']:.3g} (step {records[0]['step']}) -> {records[-1]['loss']:.3g} (step {records[-1]['step']})"
        )
    truth = datasets.load_trajectories(dataset(args), "test")[0]
    forecast = np.asarray(rollout(f, truth[0], truth.shape[0] - 1))
    err = np.sqrt(np.mean((forecast - truth) ** 2, axis=(1, 2)))
    print(
        f"forecaster {f}: RMSE vs solver at lead 1, 5, {truth.shape[0] - 1}: {err[1]:.3g}, {err[min(5, err.size - 1)]:.3g}, {err[-1]:.3g}"
    )


if __name__ == "__main__":
    main()
