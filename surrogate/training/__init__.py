"""The parts of rollout training, one idea per module; :mod:`surrogate.train` is the API.

- :mod:`~surrogate.training.config`: :class:`TrainConfig`, the hyper-parameters;
- :mod:`~surrogate.training.loss`: :func:`rollout_loss`, the ``k``-step rollout MSE;
- :mod:`~surrogate.training.step`: the optimizer, the jitted (data-parallel) train step
  and the rollout validation;
- :mod:`~surrogate.training.checkpoints`: orbax checkpoints with sha256 sidecars;
- :mod:`~surrogate.training.resume`: which checkpoint a run continues from, and whether
  its settings still hold;
- :mod:`~surrogate.training.metrics_log`: :class:`MetricsLog` (``metrics.jsonl``/``.csv``);
- :mod:`~surrogate.training.lock`: :func:`run_lock`, one training per run directory;
- :mod:`~surrogate.training.loop`: :func:`train`, the loop tying them together.
"""
