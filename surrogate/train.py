"""Rollout training of forecasters with optax, orbax checkpoints and exact resume.

The public API of training; the parts live in :mod:`surrogate.training`, one per module.

The loss is the mean squared error over ``k`` autoregressive steps, each variable in
units of the standard deviation of its one-step change (the scale of what the network
predicts, GraphCast-style, so an untrained network starts near 1 whatever ``dt``)::

    L = 1/k sum_j mean(((F^j(x) - y_j) / sigma_delta)^2)

with backpropagation through all ``k`` steps, or, with ``pushforward``, through the last
step only (the first ``k - 1`` are run without gradient; Brandstetter et al. 2022). ``k``
grows on a curriculum. Optional Gaussian input noise (in units of sigma_state), global
gradient-norm clipping, AdamW with linear warmup and cosine decay, optional bfloat16
compute (parameters stay float32).

Exactness: the batch at step ``s`` is a pure function of ``(seed, s)`` (the loader), the
noise key is ``fold_in(key(seed), s)``, and a checkpoint holds parameters, optimizer state
and step; resuming from a checkpoint replays the identical computation, so N straight
steps and k steps + kill + resume to N give bitwise-identical parameters and losses on CPU,
whatever the point of the kill (between a "best" and a "last" save included).

Integrity: each checkpoint step carries the sha256 of its files, verified before it is
restored (a corrupted step is set aside and the previous one used); a run directory is
locked while it trains; a resume with other settings or another forecaster is refused
unless forced, and a forced change is recorded.

Warnings of all these parts go to the ``"surrogate.train"`` logger.
"""

from __future__ import annotations

from collections.abc import Sequence

from surrogate.training.checkpoints import CheckpointCorruptedError
from surrogate.training.config import TrainConfig
from surrogate.training.lock import LOCK_NAME, RunLockedError, run_lock
from surrogate.training.loop import TrainingDivergedError, TrainResult, init_forecaster, train
from surrogate.training.loss import rollout_loss
from surrogate.training.metrics_log import MetricsLog
from surrogate.training.step import make_optimizer, make_train_step, make_validation

__all__: Sequence[str] = [
    "LOCK_NAME",
    "CheckpointCorruptedError",
    "MetricsLog",
    "RunLockedError",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "init_forecaster",
    "make_optimizer",
    "make_train_step",
    "make_validation",
    "rollout_loss",
    "run_lock",
    "train",
]
