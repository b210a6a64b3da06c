"""Trajectories from steppers, and finite-value checks that raise at the Python boundary."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from solvers.base import check_floating_state, check_int

Array = jax.Array
# rollout takes any pure step function (a solvers.stepper.Stepper is one).
StepFn = Callable[[Array], Array]


class NonFiniteError(FloatingPointError):
    """A trajectory produced NaN or Inf.

    Attributes:
        sample: index of the first bad trajectory in the batch (offset included).
        time: model time of the first non-finite frame of that trajectory.
        frame: index of that frame.
    """

    def __init__(self, sample: int, frame: int, time: float, detail: str = "") -> None:
        self.sample, self.frame, self.time = sample, frame, time
        msg = (
            f"non-finite values (NaN/Inf) in trajectory {sample} at frame {frame} (t = {time:.6g})"
        )
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.detail = detail

    def __reduce__(self):
        # Crosses process boundaries (worker processes) with its fields intact.
        return (type(self), (self.sample, self.frame, self.time, self.detail))


@partial(jax.jit, static_argnames=("num_steps", "include_initial"))
def rollout(stepper: StepFn, state: Array, num_steps: int, include_initial: bool = True) -> Array:
    """Apply ``stepper`` ``num_steps`` times inside one ``lax.scan``.

    Args:
        stepper: a pytree callable ``state -> state`` (a solver, a forecaster).
        state: initial state ``(C, *spatial)``.
        num_steps: number of applications.
        include_initial: prepend the initial state to the output.

    Returns:
        Frames ``(num_steps [+1], C, *spatial)``.

    Raises:
        ValueError: ``num_steps`` is not an int >= 0 (``lax.scan`` would truncate 2.5 to 2
            and fail on a negative count deep inside the compiler).
        TypeError: ``state`` has a non-floating dtype (steppers would truncate it).
    """
    # Both are static (a static argument, a dtype): checked once, while tracing.
    num_steps = check_int("rollout", "num_steps", num_steps, 0, meaning="number of steps")
    check_floating_state("rollout", state)

    def body(s, _):
        s = stepper(s)
        return s, s

    _, frames = jax.lax.scan(body, state, None, length=num_steps)
    if include_initial:
        frames = jnp.concatenate([state[None], frames], axis=0)
    return frames


def first_nonfinite_frame(frames: Array, batched: bool = False) -> Array:
    """Index of the first frame holding a NaN/Inf, or -1 if none (pure, safe inside ``jit``).

    Args:
        frames: ``(T, C, *spatial)``, or ``(B, T, C, *spatial)`` when ``batched``.

    Returns:
        A scalar int array, or one index per sample ``(B,)`` when ``batched``.
    """
    flat = frames.reshape(
        (frames.shape[0], frames.shape[1], -1) if batched else (1, frames.shape[0], -1)
    )
    first = _first_bad(flat)
    return first if batched else first[0]


def check_finite(
    frames: Array | np.ndarray,
    *,
    dt: float,
    batched: bool = False,
    sample_offset: int = 0,
    t0: float = 0.0,
) -> None:
    """Raise :class:`NonFiniteError` if any frame is not finite.

    Args:
        frames: ``(T, C, *spatial)``, or ``(B, T, C, *spatial)`` when ``batched``.
        dt: time between frames.
        batched: whether a leading batch axis is present.
        sample_offset: index of the first sample in the whole ensemble (for the message).
        t0: time of frame 0.
    """
    first = np.atleast_1d(np.asarray(first_nonfinite_frame(jnp.asarray(frames), batched)))
    bad = np.flatnonzero(first >= 0)
    if bad.size:
        b = int(bad[0])
        f = int(first[b])
        raise NonFiniteError(sample_offset + b, f, t0 + f * dt)


def _first_bad(flat: Array) -> Array:
    """``(B, T, P) -> (B,)`` first frame index with a non-finite value, else -1."""
    any_bad = jnp.any(~jnp.isfinite(flat), axis=-1)
    return jnp.where(jnp.any(any_bad, axis=1), jnp.argmax(any_bad, axis=1), -1)
