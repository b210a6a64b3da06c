"""The hyper-parameters of a training run (:class:`TrainConfig`, the ``train`` config node)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`~surrogate.train.train` (each field is a config-node keyword).

    Attributes:
        num_steps: optimizer steps in total.
        batch_size: windows per step (taken from the loader; recorded for provenance).
        learning_rate: peak learning rate after warmup.
        end_learning_rate_factor: final learning rate as a fraction of the peak.
        warmup_steps: linear warmup length.
        weight_decay: AdamW decoupled weight decay.
        grad_clip_norm: global gradient-norm clip (``0`` disables).
        rollout_schedule: curriculum as ``[[step, k], ...]``: from ``step`` on, train
            on ``k``-step rollouts. Must start at step 0. A ``step`` given as a float
            strictly between 0 and 1 is a fraction of ``num_steps`` (``[[0, 1], [0.5, 2]]``:
            two-step rollouts for the second half), so the curriculum follows a changed
            ``num_steps``; integers are absolute steps. Stored resolved to absolute steps.
        pushforward: gradient through the last rollout step only.
        input_noise_std: Gaussian noise added to inputs, in units of the state std.
        compute_dtype: ``"float32"`` or ``"bfloat16"``.
        log_every: steps between metric records (and host syncs).
        checkpoint_every: steps between checkpoints (a multiple of ``log_every``).
        validate_every: steps between rollout validations (a multiple of ``log_every``;
            ``0`` disables).
        val_rollout_steps: rollout length of the validation.
        val_batches: number of validation batches.
        keep_checkpoints: how many recent checkpoints to keep.
        history: input frames per forecast (the forecaster's history).
        seed: seeds parameter init, batch order and noise.

    Raises:
        ValueError: a field out of its range, naming the field and the value given.
    """

    num_steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    end_learning_rate_factor: float = 0.01
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip_norm: float = 1.0
    rollout_schedule: tuple[tuple[int | float, int], ...] = ((0, 1),)
    pushforward: bool = False
    input_noise_std: float = 0.0
    compute_dtype: str = "float32"
    log_every: int = 10
    checkpoint_every: int = 200
    validate_every: int = 200
    val_rollout_steps: int = 10
    val_batches: int = 4
    keep_checkpoints: int = 2
    history: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        sched = tuple(
            (_schedule_step(s, self.num_steps), _schedule_k(k)) for s, k in self.rollout_schedule
        )
        object.__setattr__(self, "rollout_schedule", sched)
        for name in (
            "num_steps",
            "batch_size",
            "log_every",
            "keep_checkpoints",
            "val_batches",
            "history",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"TrainConfig: learning_rate must be > 0, got {self.learning_rate}")
        if not sched or sched[0][0] != 0:
            raise ValueError(
                f"TrainConfig: rollout_schedule must start at step 0, got {list(sched)}"
            )
        if any(k < 1 for _, k in sched) or any(
            b[0] <= a[0] for a, b in zip(sched, sched[1:], strict=False)
        ):
            raise ValueError(
                "TrainConfig: rollout_schedule needs increasing steps and k >= 1, "
                f"got {list(sched)}"
            )
        for name in ("checkpoint_every", "validate_every"):
            v = int(getattr(self, name))
            if v < 0 or (v and v % self.log_every):
                raise ValueError(
                    f"TrainConfig: {name}={v} must be 0 or a multiple of log_every={self.log_every}"
                )
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(
                f"TrainConfig: compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}"
            )
        if self.input_noise_std < 0 or self.grad_clip_norm < 0 or self.warmup_steps < 0:
            raise ValueError(
                "TrainConfig: input_noise_std, grad_clip_norm, warmup_steps must be >= 0"
            )

    @property
    def max_rollout(self) -> int:
        """The longest rollout ``k`` of the curriculum (the targets a loader must supply)."""
        return max(k for _, k in self.rollout_schedule)

    def rollout_at(self, step: int) -> int:
        """Curriculum: the rollout length ``k`` used at optimizer step ``step``.

        Args:
            step: a 0-based optimizer step.

        Returns:
            ``k`` of the last schedule entry starting at or before ``step``.
        """
        k = self.rollout_schedule[0][1]
        for s, kk in self.rollout_schedule:
            if step >= s:
                k = kk
        return k

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values (the schedule as a list of ``[step, k]``).

        Returns:
            ``{field: value}``; ``TrainConfig(**cfg.to_dict()) == cfg``.
        """
        d = dataclasses.asdict(self)
        d["rollout_schedule"] = [list(x) for x in self.rollout_schedule]
        return d


def _schedule_step(step: Any, num_steps: int) -> int:
    """A curriculum switch point: an absolute step, or a fraction of ``num_steps`` in (0, 1)."""
    if isinstance(step, bool) or not isinstance(step, int | float | np.integer | np.floating):
        raise ValueError(
            f"TrainConfig: rollout_schedule steps must be integers or fractions in (0, 1), "
            f"got {step!r}"
        )
    if isinstance(step, float | np.floating) and not float(step).is_integer():
        if not 0.0 < step < 1.0:
            raise ValueError(
                f"TrainConfig: rollout_schedule step {step!r} is neither an integer step nor a "
                "fraction of num_steps in (0, 1)"
            )
        return round(float(step) * int(num_steps))
    return int(step)


def _schedule_k(k: Any) -> int:
    """A curriculum rollout length: an integer (or an integral float from a config)."""
    if (
        isinstance(k, bool)
        or not isinstance(k, int | np.integer)
        and not (isinstance(k, float) and k.is_integer())
    ):
        raise ValueError(f"TrainConfig: rollout_schedule lengths k must be integers, got {k!r}")
    return int(k)
