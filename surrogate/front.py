"""The cost-accuracy front: solver ladder, learned steppers and hybrid on one scale.

On the same initial states and the same fine reference, every stepper (the classical
solver on a ladder of grids, each at its largest stable internal step; every learned
stepper; the hybrid runner's precomputed result) is run at the same batch size and
precision and scored on one common *comparison grid* (by default the coarsest grid among
the steppers; reference and stepper states are both projected onto it by Fourier
truncation, :func:`solvers.resolution.spectral_resample`):

- error against lead: ``nRMSE = ||a - b|| / ||b||`` per sample (over channels and space),
  averaged over samples;
- field (vorticity) correlation against lead, per sample, averaged; and the time until the
  mean correlation drops below 0.95 (Kochkov et al., PNAS 2021), interpolated between
  leads, a lower bound when it never drops within the horizon;
- long-run statistics from a separate long rollout (time mean over its second half): the
  relative error of the energy spectrum over the resolved band and of the mean
  enstrophy, against a reference climatology;
- cost: wall seconds per trajectory per simulated time unit, compile time excluded, best
  of a few repeats of one jitted ``vmap``/``lax.scan`` rollout.

The headline is the **speed-up at matched error** (McGreivy & Hakim 2024: equal accuracy,
strongest classical baseline, same hardware): the solver ladder's cost interpolated on
its Pareto front at the learned stepper's error, divided by the stepper's cost; and the
**break-even**, the up-front cost (data generation plus training) divided by the saving
per simulated time unit.

Pieces, each usable alone: :func:`solver_ladder`, :func:`run_stepper`,
:func:`relative_l2_error`, :func:`field_correlation`, :func:`time_to_correlation`,
:func:`resolved_band`, :func:`spectrum_relative_error`, :func:`long_run_statistics`,
:func:`speedup_at_matched_error`, :func:`speedup_at_matched_time`,
:func:`breakeven_time_units`; :func:`run_front` ties them together into a :class:`Front`,
which writes ``front.json`` and a markdown table; :func:`plot_front` draws the figure.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from solvers.base import check_int
from solvers.resolution import at_resolution, spectral_resample
from solvers.stepper import Stepper, check_compatible, check_stepper

Array = jax.Array
PathLike = str | os.PathLike

#: Kochkov et al. (2021): the time until the vorticity correlation drops below this.
CORRELATION_THRESHOLD = 0.95


# ---- the solver ladder -------------------------------------------------------------------
def solver_ladder(fine_solver: Stepper, grids: Sequence[int | Sequence[int]]) -> list[Any]:
    """The fine solver rebuilt on each grid, each at its largest stable internal step.

    Args:
        fine_solver: a solver with ``config()`` (same physics, ``dt`` and precision are kept).
        grids: points per axis of each rung, an int (square) or one size per axis.

    Returns:
        One solver per grid, in the given order (:func:`solvers.resolution.at_resolution`
        with ``num_substeps=None``: the smallest stable step count).

    Raises:
        ValueError: no grid, or a grid the solver rejects.
    """
    if len(grids) == 0:
        raise ValueError("solver_ladder: grids is empty; give at least one grid")
    return [at_resolution(fine_solver, _points_arg(g)) for g in grids]


def _points_arg(num_points: int | Sequence[int]) -> int | tuple[int, ...]:
    """An int for a square grid: ``at_resolution`` refuses a tuple for a solver configured
    with an int ``num_points``."""
    if isinstance(num_points, int | np.integer):
        return int(num_points)
    sizes = tuple(int(n) for n in num_points)
    return sizes[0] if len(set(sizes)) == 1 else sizes


# ---- running a stepper ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RolloutRun:
    """A timed batched rollout of one stepper.

    Attributes:
        trajectory: ``(B, T+1, C, *grid)`` numpy array, frame 0 the initial states.
        compile_s: seconds to lower and compile (not part of the cost).
        run_s: best wall seconds of one rollout of the whole batch over the repeats.
        run_s_all: wall seconds of every repeat.
        batch_size: ``B``.
        num_steps: ``T`` output intervals.
        dt: the stepper's output interval (time units).
        cost_s_per_trajectory_per_time_unit: ``run_s / (B T dt)`` (seconds of wall time
            per trajectory per simulated time unit).
        program: the compiled rollout, ``program(stepper, states) -> trajectory``, for
            more runs of the same stepper and batch shape (:func:`long_run_frames`).
    """

    trajectory: np.ndarray
    compile_s: float
    run_s: float
    run_s_all: tuple[float, ...]
    batch_size: int
    num_steps: int
    dt: float
    cost_s_per_trajectory_per_time_unit: float
    program: Callable[[Any, Any], Any] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )


@partial(jax.jit, static_argnames=("num_steps",))
def _batched_rollout(stepper: Stepper, states: Array, num_steps: int) -> Array:
    """``(B, C, *grid) -> (B, T+1, C, *grid)``: ``lax.scan`` of the ``vmap``-ed stepper."""

    def body(s, _):
        s = jax.vmap(stepper)(s)
        return s, s

    _, frames = jax.lax.scan(body, states, None, length=num_steps)
    frames = jnp.concatenate([states[None], frames], axis=0)
    return jnp.moveaxis(frames, 0, 1)


def _check_stepper_states(owner: str, stepper: Stepper, states: Any) -> None:
    shape = tuple(stepper.state_shape)
    if np.ndim(states) != len(shape) + 1 or tuple(np.shape(states)[1:]) != shape:
        raise ValueError(
            f"{owner}: initial states have shape {tuple(np.shape(states))}, expected "
            f"(B, *{shape}) = (batch, channels {tuple(stepper.variables)}, *grid)"
        )


# Compiled rollouts by (pytree structure, abstract leaves, num_steps): the reference and a
# rung on its grid, or a second front in one session, share one program. AOT compilation
# does not fill jit's own cache. Small: each entry holds an executable.
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 16


def compile_rollout(
    stepper: Stepper, initial_states: Array | np.ndarray, num_steps: int
) -> tuple[Callable[[Any, Any], Any], float]:
    """Lower and compile the batched rollout of ``num_steps`` intervals (AOT).

    Programs are kept (a few, least recently used dropped) by the structure and the
    shapes and dtypes of ``(stepper, states)``, so a stepper equal up to its array values
    is not compiled twice; the compile time reported is that of the first compilation.

    Returns:
        ``(program, seconds)``: ``program(stepper, states)`` returns ``(B, T+1, C, *grid)``
        for any stepper and states of the same structure, shapes and dtypes.
    """
    _check_stepper_states("compile_rollout", stepper, initial_states)
    num_steps = check_int("compile_rollout", "num_steps", num_steps, 1)
    states = jnp.asarray(initial_states)
    leaves, treedef = jax.tree.flatten((stepper, states))
    try:
        key = (treedef, tuple(jax.typeof(leaf) for leaf in leaves), num_steps)
        hash(key)
    except TypeError:  # unhashable static metadata: compile without caching
        key = None
    if key is not None and key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    t0 = time.perf_counter()
    program = _batched_rollout.lower(stepper, states, num_steps=num_steps).compile()
    entry = (program, time.perf_counter() - t0)
    if key is not None:
        _PROGRAMS[key] = entry
        while len(_PROGRAMS) > _MAX_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    return entry


def run_stepper(
    stepper: Stepper, initial_states: Array | np.ndarray, num_steps: int, *, repeats: int = 3
) -> RolloutRun:
    """Run and time one jitted, batched rollout of a stepper.

    The rollout is one compiled program (``lax.scan`` over ``num_steps`` applications of
    ``jax.vmap(stepper)``, no host synchronisation inside); the stepper is passed as an
    argument, not a closure, so its arrays are not folded into the program. Compilation
    (``jax.jit(...).lower(...).compile()``) is timed apart; the run is timed ``repeats``
    times with ``block_until_ready`` and the best time is kept (the machine may be
    shared: the fastest run is the least disturbed one).

    Args:
        stepper: a pytree stepper ``(C, *grid) -> (C, *grid)`` over ``stepper.dt``.
        initial_states: ``(B, C, *grid)`` on the stepper's grid.
        num_steps: output intervals ``T`` >= 1.
        repeats: timed runs >= 1.

    Returns:
        A :class:`RolloutRun`; its trajectory is that of the last run (all are equal).

    Raises:
        ValueError: wrong state shape, ``num_steps`` or ``repeats`` below 1.
    """
    repeats = check_int("run_stepper", "repeats", repeats, 1)
    program, compile_s = compile_rollout(stepper, initial_states, num_steps)
    states = jnp.asarray(initial_states)
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(program(stepper, states))
        times.append(time.perf_counter() - t0)
    batch = int(states.shape[0])
    dt = float(stepper.dt)
    best = min(times)
    return RolloutRun(
        trajectory=np.asarray(out),
        compile_s=compile_s,
        run_s=best,
        run_s_all=tuple(times),
        batch_size=batch,
        num_steps=int(num_steps),
        dt=dt,
        cost_s_per_trajectory_per_time_unit=best / (batch * int(num_steps) * dt),
        program=program,
    )


@dataclasses.dataclass(frozen=True)
class LongRun:
    """The second half of a long rollout, on the comparison grid.

    Attributes:
        frames: ``(B, L, C, *num_points)``, the frames after intervals
            ``num_steps // 2 + 1 .. num_steps``.
        num_steps: intervals actually run (a whole number of chunks).
        run_s_all: wall seconds of each chunk (each a run of the same compiled program).
        last_states: ``(B, C, *grid)`` the states after ``num_steps`` intervals, on the
            stepper's grid (e.g. spun-up initial states).
    """

    frames: np.ndarray
    num_steps: int
    run_s_all: tuple[float, ...]
    last_states: np.ndarray


def long_run_frames(
    stepper: Stepper,
    initial_states: Array | np.ndarray,
    num_steps: int,
    num_points: Sequence[int],
    *,
    run: RolloutRun | None = None,
    chunk_steps: int = 16,
) -> LongRun:
    """A long rollout as chained runs of one compiled program; its second half, projected.

    The rollout is split into chunks of a compiled batched rollout (that of ``run`` when
    given: no new compilation; else ``chunk_steps`` intervals), each started from the
    last state of the previous one, so only the projected second half is kept in memory.
    ``num_steps`` is rounded up to a whole number of chunks.

    Args:
        stepper: a pytree stepper.
        initial_states: ``(B, C, *grid)`` on the stepper's grid.
        num_steps: output intervals >= 2 of the whole rollout (rounded up).
        num_points: the grid to project onto (the comparison grid).
        run: a :class:`RolloutRun` of the same stepper and batch shape, whose program is
            reused.
        chunk_steps: intervals per chunk when ``run`` is None.

    Returns:
        A :class:`LongRun`.
    """
    _check_stepper_states("long_run_frames", stepper, initial_states)
    num_steps = check_int("long_run_frames", "num_steps", num_steps, 2)
    if run is None or run.program is None:
        chunk = check_int("long_run_frames", "chunk_steps", chunk_steps, 1)
        program, _ = compile_rollout(stepper, initial_states, chunk)
    else:
        program, chunk = run.program, run.num_steps
    num_chunks = -(-num_steps // chunk)
    total = num_chunks * chunk
    start = total // 2
    points = tuple(int(n) for n in num_points)
    state = jnp.asarray(initial_states)
    kept, times = [], []
    for c in range(num_chunks):
        t0 = time.perf_counter()
        traj = jax.block_until_ready(program(stepper, state))
        times.append(time.perf_counter() - t0)
        state = traj[:, -1]
        steps = np.arange(c * chunk, (c + 1) * chunk + 1)  # interval index of each frame
        keep = np.flatnonzero((steps > start) & (steps > c * chunk))
        if keep.size:
            # Project the whole chunk (one shape, one compilation), then keep its part.
            kept.append(np.asarray(spectral_resample(traj, points))[:, keep])
    return LongRun(np.concatenate(kept, axis=1), total, tuple(times), np.asarray(state))


# ---- scores ---------------------------------------------------------------------------------
def _flat_states(owner: str, forecast: Any, truth: Any, state_ndim: int) -> tuple:
    a = np.asarray(forecast, np.float64)
    b = np.asarray(truth, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{owner}: shapes differ, {a.shape} vs {b.shape}")
    state_ndim = check_int(owner, "state_ndim", state_ndim, 1, a.ndim)
    lead = a.shape[: a.ndim - state_ndim]
    return a.reshape(*lead, -1), b.reshape(*lead, -1)


def relative_l2_error(forecast: Any, truth: Any, *, state_ndim: int) -> np.ndarray:
    """``||forecast - truth|| / ||truth||`` per state (the per-sample nRMSE).

    Args:
        forecast: ``(..., *state)``, e.g. ``(B, T+1, C, *grid)``.
        truth: same shape.
        state_ndim: trailing axes forming one state (``1 + spatial dims`` for
            ``(C, *grid)``); the norm runs over all of them.

    Returns:
        Dimensionless float64 ``(...)``: 0 for a perfect forecast, 1 for forecasting zero;
        NaN where the truth is identically zero or the forecast is not finite.
    """
    a, b = _flat_states("relative_l2_error", forecast, truth, state_ndim)
    num = np.linalg.norm(a - b, axis=-1)
    den = np.linalg.norm(b, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def field_correlation(forecast: Any, truth: Any, *, state_ndim: int) -> np.ndarray:
    """Correlation of each forecast state with the truth (Kochkov et al. 2021).

    ``rho = sum a b / sqrt(sum a^2 sum b^2)`` over channels and space, without removing the
    spatial mean (as jax-cfd's ``correlation``; a vorticity field on a periodic box has
    zero mean anyway).

    Args:
        forecast, truth, state_ndim: as in :func:`relative_l2_error`.

    Returns:
        Dimensionless float64 ``(...)`` in ``[-1, 1]``: 1 for identical or positively
        scaled fields; NaN where either field is identically zero or not finite.
    """
    a, b = _flat_states("field_correlation", forecast, truth, state_ndim)
    num = np.sum(a * b, axis=-1)
    den = np.sqrt(np.sum(a * a, axis=-1) * np.sum(b * b, axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def time_to_correlation(
    correlation: Any, lead_times: Any, threshold: float = CORRELATION_THRESHOLD
) -> tuple[float, bool]:
    """Time until a correlation curve first drops below ``threshold``.

    Linear interpolation between the last lead at or above the threshold and the first
    below it; a NaN correlation (a blown-up run) counts as below, at its own lead, and a
    curve below at the first lead gives that lead (the rules of
    :func:`surrogate.metrics.valid_time`, here in float64 numpy).

    Args:
        correlation: ``(L,)`` mean correlation against lead.
        lead_times: ``(L,)`` increasing lead times (time units).
        threshold: the level, 0.95 by default (Kochkov et al. 2021).

    Returns:
        ``(time, censored)``: the crossing time (time units), or, when the curve never
        drops below within the horizon, ``(lead_times[-1], True)``: a lower bound.
    """
    c = np.asarray(correlation, np.float64)
    t = np.asarray(lead_times, np.float64)
    if c.ndim != 1 or c.shape != t.shape or c.size == 0:
        raise ValueError(
            f"time_to_correlation: correlation {c.shape} and lead_times {t.shape} must be "
            "(L,) with L >= 1"
        )
    below = np.flatnonzero(~(c >= threshold))  # NaN counts as below
    if below.size == 0:
        return float(t[-1]), True
    i = int(below[0])
    if i == 0 or not np.isfinite(c[i]):
        return float(t[i]), False
    # c[i-1] >= threshold > c[i]: the straight line between them crosses the level.
    return float(t[i - 1] + (c[i - 1] - threshold) / (c[i - 1] - c[i]) * (t[i] - t[i - 1])), False


def resolved_band(
    num_points: Sequence[int], domain_length: Sequence[float], fraction: float = 2.0 / 3.0
) -> np.ndarray:
    """Isotropic shells fully resolved on a grid: inside its dealiasing (2/3-rule) band.

    Shell ``i`` holds the modes with ``round(|k| / dk) = i``, ``dk = 2 pi / max(L)`` (the
    shells of ``NavierStokes2D.energy_spectrum`` and :func:`surrogate.metrics.power_spectrum`).
    It is resolved when all of its modes, ``|k| < (i + 1/2) dk``, keep every component
    below the cut-off ``fraction * n / 2`` modes of each axis; the mean (shell 0) is left out.

    Args:
        num_points: points per axis.
        domain_length: length per axis (same units as ``2 pi / k``).
        fraction: the dealiasing fraction (2/3).

    Returns:
        Shell indices ``1 .. i_max`` (int array, possibly empty).
    """
    n = np.asarray(num_points, np.float64)
    length = np.asarray(domain_length, np.float64)
    dk = 2 * np.pi / float(length.max())
    cut = float(np.min(fraction * n / 2 * 2 * np.pi / length))
    i_max = int(np.floor(cut / dk - 0.5 + 1e-9))
    return np.arange(1, max(i_max, 0) + 1)


def spectrum_relative_error(spectrum: Any, reference: Any, band: Any) -> tuple[float, float]:
    """Largest and mean ``|E - E_ref| / E_ref`` over the shells of ``band``.

    Args:
        spectrum: ``(K,)`` long-run spectrum of the stepper, per shell.
        reference: ``(K_ref,)`` reference spectrum on the same shells (``K_ref`` may
            differ; only ``band`` is read, and it must lie inside both).
        band: shell indices (:func:`resolved_band`).

    Returns:
        ``(max, mean)`` dimensionless; NaN when the spectrum is not finite.

    Raises:
        ValueError: an empty band, a band beyond either spectrum, or a reference that is
            not positive on the band.
    """
    e = np.asarray(spectrum, np.float64)
    r = np.asarray(reference, np.float64)
    idx = np.asarray(band, np.int64)
    if idx.size == 0:
        raise ValueError("spectrum_relative_error: the band is empty")
    top = int(idx.max())
    if top >= e.shape[-1] or top >= r.shape[-1]:
        raise ValueError(
            f"spectrum_relative_error: band reaches shell {top}, the spectra have "
            f"{e.shape[-1]} and {r.shape[-1]} shells"
        )
    if not np.all(r[idx] > 0):
        raise ValueError("spectrum_relative_error: the reference is not positive on the band")
    rel = np.abs(e[idx] - r[idx]) / r[idx]
    return float(np.max(rel)), float(np.mean(rel))


def relative_error(value: float, reference: float) -> float:
    """``|value - reference| / |reference|`` (NaN for a zero or non-finite reference)."""
    value, reference = float(value), float(reference)
    if reference == 0 or not math.isfinite(reference):
        return float("nan")
    return abs(value - reference) / abs(reference)


def half_mean_square(states: Any, *, state_ndim: int) -> np.ndarray:
    """``mean(x^2) / 2`` per state: the enstrophy of a vorticity state ``(1, *grid)``.

    Args:
        states: ``(..., *state)``.
        state_ndim: trailing axes forming one state.

    Returns:
        float64 ``(...)`` (units of the state squared).
    """
    x = np.asarray(states, np.float64)
    return 0.5 * np.mean(x.reshape(*x.shape[: x.ndim - state_ndim], -1) ** 2, axis=-1)


SpectrumFn = Callable[[Any], tuple[Any, Any]]
EnstrophyFn = Callable[[Any], Any]


def long_run_statistics(
    frames: Any, spectrum_fn: SpectrumFn, enstrophy_fn: EnstrophyFn
) -> dict[str, Any]:
    """Time- and ensemble-mean spectrum and enstrophy of frames on one grid.

    No member is dropped: a member that went non-finite makes the means NaN (a long run
    that blows up has no climate), and is counted.

    Args:
        frames: ``(B, L, C, *grid)``.
        spectrum_fn: ``states (..., C, *grid) -> (k (K,), E (..., K))``, e.g. the
            ``energy_spectrum`` of a solver on that grid.
        enstrophy_fn: ``states (..., C, *grid) -> (...)``.

    Returns:
        ``{"wavenumbers": (K,), "spectrum": (K,), "enstrophy": float,
        "nonfinite_members": int}``.
    """
    x = np.asarray(frames)
    finite = np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)
    k, e = spectrum_fn(jnp.asarray(x))
    e = np.asarray(e, np.float64).reshape(-1, np.shape(k)[-1])
    ens = np.asarray(enstrophy_fn(jnp.asarray(x)), np.float64)
    return {
        "wavenumbers": np.asarray(k, np.float64),
        "spectrum": e.mean(axis=0),
        "enstrophy": float(np.mean(ens)),
        "nonfinite_members": int(np.sum(~finite)),
    }


@jax.jit
def _energy_spectrum(solver: Stepper, states: Array) -> tuple[Array, Array]:
    """``solver.energy_spectrum`` as one compiled program (the solver is an argument)."""
    return solver.energy_spectrum(states)


def comparison_solver(fine_solver: Stepper, comparison_grid: Sequence[int]) -> Any:
    """The fine solver's class on the comparison grid (for its diagnostics, not stepping)."""
    return at_resolution(fine_solver, _points_arg(comparison_grid))


def energy_spectrum_fn(solver: Stepper) -> SpectrumFn:
    """The default spectrum of the front: ``solver.energy_spectrum``, compiled once.

    Args:
        solver: a solver on the comparison grid with an ``energy_spectrum`` method
            (:func:`comparison_solver`).

    Returns:
        ``states (..., C, *grid) -> (k (K,), E (..., K))``.
    """
    if not hasattr(solver, "energy_spectrum"):
        raise ValueError(
            f"energy_spectrum_fn: {type(solver).__name__} has no energy_spectrum; pass a "
            "spectrum_fn of your own"
        )
    return partial(_energy_spectrum, solver)


def reference_climate(
    frames: Any,
    fine_solver: Stepper,
    comparison_grid: Sequence[int],
    *,
    spectrum_fn: SpectrumFn | None = None,
    enstrophy_fn: EnstrophyFn | None = None,
) -> dict[str, Any]:
    """The reference climatology :func:`run_front` compares long runs with.

    For frames of the fine solution already projected onto the comparison grid (a
    coarse-grained dataset's frames, or the second half of a spin-up), the time- and
    ensemble-mean spectrum and enstrophy with the same functions as :func:`run_front`'s
    defaults.

    Args:
        frames: ``(B, L, C, *comparison grid)``.
        fine_solver: the reference solver (its class gives the spectrum).
        comparison_grid: points per axis.
        spectrum_fn, enstrophy_fn: as in :func:`run_front` (defaults alike).

    Returns:
        :func:`long_run_statistics` of the frames: pass ``["spectrum"]`` as
        ``reference_spectrum`` and ``["enstrophy"]`` as ``reference_enstrophy``.
    """
    x = np.asarray(frames)
    grid = tuple(int(n) for n in comparison_grid)
    if tuple(x.shape[x.ndim - len(grid) :]) != grid:
        raise ValueError(
            f"reference_climate: frames of shape {x.shape} are not on the comparison grid {grid}"
        )
    if spectrum_fn is None:
        spectrum_fn = energy_spectrum_fn(comparison_solver(fine_solver, grid))
    if enstrophy_fn is None:
        enstrophy_fn = partial(half_mean_square, state_ndim=len(fine_solver.state_shape))
    return long_run_statistics(x, spectrum_fn, enstrophy_fn)


# ---- matched-error speed-up and break-even -------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MatchedSpeedup:
    """The speed-up of a stepper over the solver ladder at equal error.

    Attributes:
        speedup: matched solver cost / stepper cost (None when undefined).
        matched_solver_cost: the ladder's cost at the stepper's error (seconds per
            trajectory per time unit), interpolated on its Pareto front, or the cost of the
            end rung used when the error lies outside the front.
        stepper_cost: the stepper's cost (same units).
        error: the stepper's error that was matched.
        bound: ``None`` (interpolated), ``"lower"`` (the stepper is more accurate than the
            best rung: the true matched speed-up is at least ``speedup``) or ``"upper"``
            (less accurate than the cheapest rung: at most ``speedup``).
        cheaper_rung: name of the rung at or above the stepper's error (less accurate,
            cheaper), or None.
        costlier_rung: name of the rung at or below the stepper's error, or None.
        front: names of the ladder's non-dominated rungs, cheapest first.
        note: why the speed-up is undefined, or a remark on the bound.
    """

    speedup: float | None
    matched_solver_cost: float | None
    stepper_cost: float
    error: float
    bound: str | None = None
    cheaper_rung: str | None = None
    costlier_rung: str | None = None
    front: tuple[str, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values of every field (non-finite floats as None)."""
        return _json_safe(dataclasses.asdict(self))


def pareto_front(costs: Sequence[float], errors: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, cost increasing and error strictly decreasing.

    Points with a non-finite or non-positive cost, or a non-finite or negative error, are
    left out. Among equal costs the smaller error is kept.

    Returns:
        Indices into ``costs``/``errors``, cheapest first.
    """
    c = np.asarray(costs, np.float64)
    e = np.asarray(errors, np.float64)
    if c.shape != e.shape or c.ndim != 1:
        raise ValueError(f"pareto_front: costs {c.shape} and errors {e.shape} must be (N,)")
    ok = np.flatnonzero(np.isfinite(c) & (c > 0) & np.isfinite(e) & (e >= 0))
    order = sorted(ok, key=lambda i: (c[i], e[i]))
    front: list[int] = []
    for i in order:
        if not front or e[i] < e[front[-1]]:
            front.append(int(i))
    return front


def speedup_at_matched_error(
    ladder_cost: Sequence[float],
    ladder_error: Sequence[float],
    cost: float,
    error: float,
    *,
    names: Sequence[str] | None = None,
) -> MatchedSpeedup:
    """Speed-up of a stepper over the solver ladder at the stepper's own error.

    The ladder's Pareto front (:func:`pareto_front`: dominated rungs dropped) gives
    ``log(cost)`` as a piecewise-linear function of ``log(error)``; its value at the
    stepper's error is the matched solver cost, divided by the stepper's cost. There is no
    extrapolation: a stepper more accurate than the best rung is compared with that rung
    (``bound="lower"``: the true speed-up is at least this), one less accurate than the
    cheapest rung with the cheapest rung (``bound="upper"``: at most this). A rung of
    exactly zero error (the reference's own grid on the ladder) is not interpolated
    towards: between it and the next cheaper rung the result is that cheaper rung's cost
    with ``bound="lower"``.

    Args:
        ladder_cost: ``(N,)`` cost per rung (seconds per trajectory per time unit).
        ladder_error: ``(N,)`` error per rung (dimensionless, >= 0).
        cost: the stepper's cost (same units).
        error: the stepper's error at the same lead.
        names: rung names for the result (default: the indices as strings).

    Returns:
        A :class:`MatchedSpeedup`; ``speedup`` is None when the stepper's error or cost is
        not finite and positive (a blown-up stepper has no matched cost).

    Raises:
        ValueError: no rung has a finite positive cost and a finite error, or the lengths
            differ.
    """
    c = np.asarray(ladder_cost, np.float64)
    e = np.asarray(ladder_error, np.float64)
    names = [str(i) for i in range(c.size)] if names is None else [str(n) for n in names]
    if len(names) != c.size:
        raise ValueError(f"speedup_at_matched_error: {len(names)} names for {c.size} rungs")
    front = pareto_front(c, e)
    if not front:
        raise ValueError(
            "speedup_at_matched_error: no rung has a finite positive cost and a finite error"
        )
    front_names = tuple(names[i] for i in front)
    cost, error = float(cost), float(error)
    base = {"stepper_cost": cost, "error": error, "front": front_names}
    if not (math.isfinite(error) and error >= 0):
        return MatchedSpeedup(None, None, note="the stepper's error is not finite", **base)
    if not (math.isfinite(cost) and cost > 0):
        return MatchedSpeedup(None, None, note="the stepper's cost is not positive", **base)
    fc, fe = c[front], e[front]
    if error < fe[-1]:
        j = front[-1]
        return MatchedSpeedup(
            c[j] / cost,
            float(c[j]),
            bound="lower",
            costlier_rung=None,
            cheaper_rung=names[j],
            note="more accurate than every rung: compared with the most accurate one",
            **base,
        )
    if error > fe[0]:
        j = front[0]
        return MatchedSpeedup(
            c[j] / cost,
            float(c[j]),
            bound="upper",
            costlier_rung=names[j],
            cheaper_rung=None,
            note="less accurate than every rung: compared with the cheapest one",
            **base,
        )
    # fe is strictly decreasing: find k with fe[k] >= error >= fe[k + 1].
    k = int(np.flatnonzero(fe >= error)[-1])
    if fe[k] == error or k == len(front) - 1:
        matched = float(fc[k])
        lo = hi = names[front[k]]
    elif fe[k + 1] == 0:
        # No log-interpolation towards an exact rung (the reference's own grid): the
        # matched cost lies between the two, so the cheaper one gives a lower bound.
        return MatchedSpeedup(
            fc[k] / cost,
            float(fc[k]),
            bound="lower",
            cheaper_rung=names[front[k]],
            costlier_rung=names[front[k + 1]],
            note=f"rung {names[front[k + 1]]} has zero error: compared with {names[front[k]]}",
            **base,
        )
    else:
        le = np.log([fe[k], fe[k + 1], error])
        w = (le[2] - le[0]) / (le[1] - le[0])
        matched = float(np.exp((1 - w) * np.log(fc[k]) + w * np.log(fc[k + 1])))
        lo, hi = names[front[k]], names[front[k + 1]]
    return MatchedSpeedup(matched / cost, matched, cheaper_rung=lo, costlier_rung=hi, **base)


def speedup_at_matched_time(
    ladder_cost: Sequence[float],
    ladder_time: Sequence[float],
    ladder_censored: Sequence[bool],
    cost: float,
    time_: float,
    censored: bool,
    *,
    names: Sequence[str] | None = None,
) -> MatchedSpeedup:
    """Speed-up at a matched time to 0.95 correlation (longer is better).

    :func:`speedup_at_matched_error` on ``error = 1 / time`` (``log`` of one is minus the
    ``log`` of the other, so the interpolation is the same in ``log(time)``).

    A rung whose time is censored (its correlation never dropped within the horizon) is
    entered at the horizon, a lower bound of its true time; when such a rung is the
    costlier bracket the matched cost is overestimated, so the speed-up becomes an upper
    bound (``bound="upper"``). The result is undefined (None) when the stepper's own time
    is censored: run longer leads.

    Args:
        ladder_cost, cost: as in :func:`speedup_at_matched_error`.
        ladder_time: ``(N,)`` time to 0.95 correlation per rung (time units).
        ladder_censored: ``(N,)`` whether each rung's time is a lower bound.
        time_: the stepper's time; ``censored``: whether it is a lower bound.
        names: rung names.
    """
    t = np.asarray(ladder_time, np.float64)
    with np.errstate(divide="ignore"):
        err = np.where(t > 0, 1.0 / np.where(t > 0, t, 1.0), np.inf)
    stepper_err = 1.0 / time_ if time_ > 0 else math.inf
    if censored:
        return MatchedSpeedup(
            None,
            None,
            stepper_cost=float(cost),
            error=stepper_err,
            note="the stepper's correlation stays above the threshold over the horizon",
        )
    res = speedup_at_matched_error(ladder_cost, err, cost, stepper_err, names=names)
    names = [str(i) for i in range(t.size)] if names is None else [str(n) for n in names]
    censored_names = {n for n, cz in zip(names, ladder_censored, strict=True) if cz}
    if res.speedup is not None and res.costlier_rung in censored_names and res.bound is None:
        res = dataclasses.replace(
            res,
            bound="upper",
            note=f"rung {res.costlier_rung}'s time is a lower bound (never dropped)",
        )
    return res


def gap_closed(same_grid_errors: Sequence[float], error: float, floor_error: float) -> float | None:
    """The fraction of the gap between a solver and the error floor a stepper closes.

    ``(e_solver - e) / (e_solver - e_floor)`` with ``e_solver`` the error of the ladder
    rung on the stepper's grid: 0 means no better than that solver, 1 means at the floor
    (the fine solver's dynamics from the same coarse state), negative means worse than
    the solver.

    Args:
        same_grid_errors: errors of the ladder rungs on the stepper's grid (the first
            counts); empty when the ladder has no rung there.
        error: the stepper's error.
        floor_error: the floor's error.

    Returns:
        The fraction, or None without a rung on the grid, a non-finite error or a rung
        that is not above the floor.
    """
    if not same_grid_errors:
        return None
    top = float(same_grid_errors[0])
    values = (top, float(error), float(floor_error))
    if not all(math.isfinite(v) for v in values) or top <= floor_error:
        return None
    return (top - error) / (top - floor_error)


def breakeven_time_units(
    upfront_cost_s: float, solver_cost_per_time_unit: float, stepper_cost_per_time_unit: float
) -> float | None:
    """Simulated time after which a learned stepper has paid for itself.

    ``upfront_cost_s / (solver_cost_per_time_unit - stepper_cost_per_time_unit)``.

    Args:
        upfront_cost_s: wall seconds spent before the stepper could run: data generation
            plus training (and anything else it needed), on the same hardware.
        solver_cost_per_time_unit: wall seconds the matched solver needs per trajectory
            per simulated time unit.
        stepper_cost_per_time_unit: the same for the stepper.

    Returns:
        Simulated time units, summed over trajectories (``1000`` = one trajectory of 1000
        time units, or 100 trajectories of 10, at the batch size the costs were measured
        at), after which the wall time saved equals the up-front cost; ``None`` ("never")
        when the stepper saves nothing (not cheaper, or a cost is not finite).

    Raises:
        ValueError: a negative or non-finite up-front cost.
    """
    upfront = float(upfront_cost_s)
    if not (math.isfinite(upfront) and upfront >= 0):
        raise ValueError(
            f"breakeven_time_units: upfront_cost_s must be finite >= 0, got {upfront_cost_s!r}"
        )
    saving = float(solver_cost_per_time_unit) - float(stepper_cost_per_time_unit)
    if not math.isfinite(saving) or saving <= 0:
        return None
    return upfront / saving


# ---- the front ------------------------------------------------------------------------------
KINDS = ("reference", "solver", "learned", "hybrid")


@dataclasses.dataclass(frozen=True)
class Precomputed:
    """A stepper run elsewhere (the hybrid runner), entered into the front as it is.

    Attributes:
        name: label.
        trajectory: ``(B, T+1, C, *grid)`` from the front's initial states (projected onto
            its grid), with the front's ``B`` and ``T``.
        cost: seconds per trajectory per simulated time unit, measured like
            :func:`run_stepper` (compile excluded, same batch and device).
        compile_s: compile seconds, if known.
        long_run_frames: ``(B, L, C, *grid)`` frames of the second half of a long run, for
            the long-run statistics (None: not scored).
        kind: ``"hybrid"`` (default) or ``"learned"``.
    """

    name: str
    trajectory: Any
    cost: float
    compile_s: float | None = None
    long_run_frames: Any = None
    kind: str = "hybrid"


@dataclasses.dataclass(frozen=True)
class FrontEntry:
    """One stepper on the front (units: cost in seconds per trajectory per time unit).

    Attributes:
        kind: ``"reference"`` (the fine solver), ``"solver"`` (a ladder rung),
            ``"learned"``, ``"hybrid"`` or ``"floor"`` (the fine solver started from the
            states projected onto the comparison grid, see :func:`run_front`).
        name: label (``"solver 64x64"`` for rungs).
        grid: points per axis.
        substeps: internal steps per output interval (solvers), else None.
        batch_size: trajectories per timed batch.
        cost: ``cost_s_per_trajectory_per_time_unit``.
        compile_s: compile seconds (None when unknown).
        run_s: best wall seconds of one batched rollout of ``T`` intervals (None for
            precomputed runs), over the repeats, the chunks of the long run and the
            interleaved timing rounds.
        timed_runs: how many runs ``run_s`` is the best of.
        error: ``(T+1,)`` mean nRMSE per lead (lead 0 first).
        correlation: ``(T+1,)`` mean correlation per lead.
        time_to_corr: time until the mean correlation drops below the threshold.
        time_to_corr_censored: True when it never did (``time_to_corr`` is a lower bound).
        spectrum_max_rel_error, spectrum_mean_rel_error: long-run energy spectrum over
            the resolved band (None when not scored).
        enstrophy_rel_error: long-run mean enstrophy (None when not scored).
        long_run_spectrum: ``(K,)`` the long-run spectrum (None when not scored).
        long_run_nonfinite_members: members that went non-finite in the long run.
        nonfinite_members: members with a non-finite frame in the scored rollout.
        speedup: matched at the front's lead (learned and hybrid), else None.
        speedup_corr: matched on the time to the correlation threshold, else None.
        upfront_cost_s: data generation + training seconds, if given.
        breakeven_time_units: see :func:`breakeven_time_units` (None: never or unknown).
        ceiling: with a floor entry (learned and hybrid): the speed-up at matched error that
            a stepper with this cost and the floor's error would get, else None.
        gap_closed: with a floor entry and a ladder rung on this stepper's grid: the
            fraction of that rung's error above the floor this stepper removes, see
            :func:`gap_closed`.
        ceiling_corr: like ``ceiling`` on the time to 0.95 correlation (the floor's time at
            this stepper's cost), else None.
        free_ceiling, free_ceiling_corr: like ``ceiling`` and ``ceiling_corr`` at the cost
            of the ladder rung on this stepper's grid alone: what a perfect network that
            costs nothing, on top of that solver, would give (the bound of the
            approach on this grid and hardware), else None.
    """

    kind: str
    name: str
    grid: tuple[int, ...]
    substeps: int | None
    batch_size: int
    cost: float
    compile_s: float | None
    run_s: float | None
    timed_runs: int | None
    error: np.ndarray
    correlation: np.ndarray
    time_to_corr: float
    time_to_corr_censored: bool
    spectrum_max_rel_error: float | None = None
    spectrum_mean_rel_error: float | None = None
    enstrophy_rel_error: float | None = None
    long_run_spectrum: np.ndarray | None = None
    long_run_nonfinite_members: int | None = None
    nonfinite_members: int = 0
    speedup: MatchedSpeedup | None = None
    speedup_corr: MatchedSpeedup | None = None
    upfront_cost_s: float | None = None
    breakeven_time_units: float | None = None
    ceiling: MatchedSpeedup | None = None
    gap_closed: float | None = None
    ceiling_corr: MatchedSpeedup | None = None
    free_ceiling: MatchedSpeedup | None = None
    free_ceiling_corr: MatchedSpeedup | None = None

    @property
    def breakeven_bound(self) -> str | None:
        """``"lower"``/``"upper"`` when the matched cost is a bound (the reverse of the
        speed-up's: a speed-up of at most x means a saving of at most so much)."""
        if self.breakeven_time_units is None or self.speedup is None:
            return None
        return {"upper": "lower", "lower": "upper"}.get(self.speedup.bound or "")

    def error_at(self, lead: int) -> float:
        """Mean nRMSE after ``lead`` output intervals."""
        return float(self.error[lead])

    def to_dict(self, lead: int | None = None) -> dict[str, Any]:
        """This entry's line of ``front.json`` (with ``error_at_lead`` when ``lead`` is given)."""
        d = {
            "kind": self.kind,
            "name": self.name,
            "grid": list(self.grid),
            "substeps": self.substeps,
            "batch_size": self.batch_size,
            "cost_s_per_trajectory_per_time_unit": self.cost,
            "compile_s": self.compile_s,
            "run_s": self.run_s,
            "timed_runs": self.timed_runs,
        }
        if lead is not None:
            d["error_at_lead"] = self.error_at(lead)
        d.update(
            {
                "error": np.asarray(self.error).tolist(),
                "correlation": np.asarray(self.correlation).tolist(),
                "time_to_corr_095": self.time_to_corr,
                "time_to_corr_095_bound": "lower" if self.time_to_corr_censored else None,
                "spectrum_max_rel_error": self.spectrum_max_rel_error,
                "spectrum_mean_rel_error": self.spectrum_mean_rel_error,
                "enstrophy_rel_error": self.enstrophy_rel_error,
                "long_run_nonfinite_members": self.long_run_nonfinite_members,
                "nonfinite_members": self.nonfinite_members,
                "speedup_at_matched_error": None if self.speedup is None else self.speedup.speedup,
                "matched": None if self.speedup is None else self.speedup.to_dict(),
                "speedup_at_matched_corr_time": None
                if self.speedup_corr is None
                else self.speedup_corr.speedup,
                "matched_corr_time": None
                if self.speedup_corr is None
                else self.speedup_corr.to_dict(),
                "upfront_cost_s": self.upfront_cost_s,
                "breakeven_time_units": self.breakeven_time_units,
                "breakeven_bound": self.breakeven_bound,
                "ceiling_speedup_at_matched_error": None
                if self.ceiling is None
                else self.ceiling.speedup,
                "ceiling": None if self.ceiling is None else self.ceiling.to_dict(),
                "gap_closed": self.gap_closed,
                "ceiling_speedup_at_matched_corr_time": _speedup(self.ceiling_corr),
                "free_ceiling_speedup_at_matched_error": _speedup(self.free_ceiling),
                "free_ceiling_speedup_at_matched_corr_time": _speedup(self.free_ceiling_corr),
                "long_run_spectrum": None
                if self.long_run_spectrum is None
                else np.asarray(self.long_run_spectrum).tolist(),
            }
        )
        return _json_safe(d)


@dataclasses.dataclass(frozen=True)
class Front:
    """The result of :func:`run_front`.

    Attributes:
        entries: every stepper, the fine reference first, then the ladder, learned and
            hybrid steppers in the order they were given.
        lead: the lead (output intervals) at which errors are matched.
        dt: output interval (time units).
        num_leads: leads scored ``T``.
        batch_size: trajectories per batch, the same for every stepper.
        comparison_grid: the grid everything is scored on.
        band: the resolved shells of the spectrum errors.
        wavenumbers: ``(K,)`` shell wavenumbers of the comparison grid.
        reference_spectrum: ``(K_ref,)`` the reference climatology's spectrum.
        reference_enstrophy: its mean enstrophy (None when not given).
        long_rollout_steps: output intervals of the long runs, rounded up to a multiple of
            ``num_leads`` (0: not run).
        threshold: the correlation threshold (0.95).
        time_units: units of time.
    """

    entries: tuple[FrontEntry, ...]
    lead: int
    dt: float
    num_leads: int
    batch_size: int
    comparison_grid: tuple[int, ...]
    band: np.ndarray
    wavenumbers: np.ndarray | None
    reference_spectrum: np.ndarray | None
    reference_enstrophy: float | None
    long_rollout_steps: int
    threshold: float = CORRELATION_THRESHOLD
    time_units: str = "1"

    @property
    def lead_times(self) -> np.ndarray:
        """``(T+1,)`` times of the scored frames, 0 first."""
        return np.arange(self.num_leads + 1) * self.dt

    def by_kind(self, *kinds: str) -> list[FrontEntry]:
        """The entries of the given kinds, in front order."""
        return [e for e in self.entries if e.kind in kinds]

    def best(self) -> FrontEntry | None:
        """The learned stepper (else the hybrid) with the largest matched speed-up."""
        for kinds in (("learned",), ("hybrid",)):
            cands = [
                e
                for e in self.by_kind(*kinds)
                if e.speedup is not None and e.speedup.speedup is not None
            ]
            if cands:
                return max(cands, key=lambda e: e.speedup.speedup)
        return None

    def floor(self) -> FrontEntry | None:
        """The floor entry (see :func:`run_front`), or None when it was not run."""
        floors = self.by_kind("floor")
        return floors[0] if floors else None

    def to_json_dict(self) -> dict[str, Any]:
        """``front.json``: the headline of the best learned stepper, then every stepper.

        Top-level keys: ``speedup_at_matched_error``, ``bound`` (None, ``"lower"`` or
        ``"upper"``), ``lead`` (output intervals), ``lead_time`` (time units),
        ``matched_error`` (the best stepper's nRMSE at the lead),
        ``matched_solver_cost``, ``breakeven_time_units``, ``stepper`` (its name; None
        without a learned stepper), ``floor_error`` and ``floor_stepper`` (None without a
        floor), the best stepper's ``ceiling_speedup_at_matched_error`` (``ceiling_bound``),
        ``gap_closed``, ``ceiling_speedup_at_matched_corr_time`` and the free-network
        ceilings ``free_ceiling_speedup_at_matched_error`` / ``..._corr_time`` (see
        :class:`FrontEntry`), then the setting and ``steppers`` (one dict per entry,
        see :meth:`FrontEntry.to_dict`). Costs are seconds per trajectory per time unit.
        """
        best = self.best()
        sp = best.speedup if best is not None else None
        floor = self.floor()
        d: dict[str, Any] = {
            "speedup_at_matched_error": None if sp is None else sp.speedup,
            "bound": None if sp is None else sp.bound,
            "lead": self.lead,
            "lead_time": self.lead * self.dt,
            "matched_error": None if best is None else best.error_at(self.lead),
            "matched_solver_cost": None if sp is None else sp.matched_solver_cost,
            "breakeven_time_units": None if best is None else best.breakeven_time_units,
            "breakeven_bound": None if best is None else best.breakeven_bound,
            "stepper": None if best is None else best.name,
            "stepper_kind": None if best is None else best.kind,
            "speedup_at_matched_corr_time": None
            if best is None or best.speedup_corr is None
            else best.speedup_corr.speedup,
            "floor_error": None if floor is None else floor.error_at(self.lead),
            "floor_stepper": None if floor is None else floor.name,
            "ceiling_speedup_at_matched_error": None
            if best is None or best.ceiling is None
            else best.ceiling.speedup,
            "ceiling_bound": None if best is None or best.ceiling is None else best.ceiling.bound,
            "gap_closed": None if best is None else best.gap_closed,
            "ceiling_speedup_at_matched_corr_time": None
            if best is None
            else _speedup(best.ceiling_corr),
            "free_ceiling_speedup_at_matched_error": None
            if best is None
            else _speedup(best.free_ceiling),
            "free_ceiling_speedup_at_matched_corr_time": None
            if best is None
            else _speedup(best.free_ceiling_corr),
            "error_metric": "nRMSE = ||a - b|| / ||b|| per sample, mean over samples",
            "cost_units": "wall seconds per trajectory per simulated time unit",
            "breakeven_units": "simulated time units, summed over trajectories",
            "dt": self.dt,
            "time_units": self.time_units,
            "num_leads": self.num_leads,
            "batch_size": self.batch_size,
            "comparison_grid": list(self.comparison_grid),
            "correlation_threshold": self.threshold,
            "long_rollout_steps": self.long_rollout_steps,
            "spectrum_band_shells": np.asarray(self.band).tolist(),
            "wavenumbers": None if self.wavenumbers is None else self.wavenumbers.tolist(),
            "reference_spectrum": None
            if self.reference_spectrum is None
            else np.asarray(self.reference_spectrum).tolist(),
            "reference_enstrophy": self.reference_enstrophy,
            "steppers": [e.to_dict(self.lead) for e in self.entries],
        }
        return _json_safe(d)

    def write_json(self, path: PathLike) -> Path:
        """Write :meth:`to_json_dict` atomically (temporary file, then ``os.replace``)."""
        from datasets.plumbing import atomic_write_text

        text = json.dumps(self.to_json_dict(), indent=1, allow_nan=False) + "\n"
        return atomic_write_text(path, text, parents=True, sync_directory=False)

    def table_markdown(self) -> str:
        """The front as a markdown table (one row per stepper), for the report."""
        lead_t = self.lead * self.dt
        head = (
            f"| kind | stepper | grid | substeps | cost [ms / traj / time unit] | "
            f"nRMSE at t = {lead_t:g} | t(corr < {self.threshold:g}) | "
            "spectrum rel. err. max / mean | enstrophy rel. err. | speed-up at matched error |"
        )
        rows = [head, "|" + "---|" * 10]
        for e in self.entries:
            t95 = ("≥ " if e.time_to_corr_censored else "") + f"{e.time_to_corr:.3g}"
            spec = (
                "–"
                if e.spectrum_max_rel_error is None
                else f"{_fmt(e.spectrum_max_rel_error)} / {_fmt(e.spectrum_mean_rel_error)}"
            )
            sp = "–"
            if e.speedup is not None:
                sign = {"lower": "≥ ", "upper": "≤ "}.get(e.speedup.bound or "", "")
                sp = "n/a" if e.speedup.speedup is None else f"{sign}{e.speedup.speedup:.3g}x"
            rows.append(
                f"| {e.kind} | {e.name} | {'x'.join(map(str, e.grid))} | "
                f"{'–' if e.substeps is None else e.substeps} | {1e3 * e.cost:.3g} | "
                f"{_fmt(e.error_at(self.lead))} | {t95} | {spec} | "
                f"{_fmt(e.enstrophy_rel_error)} | {sp} |"
            )
        return "\n".join(rows)


def _speedup(m: MatchedSpeedup | None) -> float | None:
    return None if m is None else m.speedup


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–" if x is None else str(x)
    return f"{x:.3g}"


def _json_safe(x: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, non-finite floats to None."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def _grid_name(num_points: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in num_points)


def default_comparison_grid(grids: Iterable[Sequence[int]]) -> tuple[int, ...]:
    """The coarsest grid (fewest points; ties: the first) among ``grids``."""
    grids = [tuple(int(n) for n in g) for g in grids]
    if not grids:
        raise ValueError("default_comparison_grid: no grid")
    return min(grids, key=lambda g: int(np.prod(g)))


def _check_compatible(owner: str, name: str, stepper: Stepper, fine: Any) -> None:
    """Same variables, ``dt`` and domain as the reference (grids may differ)."""
    check_stepper(owner, stepper, f"stepper {name!r}")
    check_compatible(
        owner, stepper, fine, names=(f"stepper {name!r}", "the reference"), grid="domain"
    )


def _as_precomputed(item: Any) -> Precomputed:
    if isinstance(item, Precomputed):
        return item
    if isinstance(item, Sequence) and len(item) in (3, 4):
        return Precomputed(*item)
    raise ValueError(
        "run_front: a hybrid result must be a Precomputed or a (name, trajectory, cost[, "
        f"compile_s]) tuple, got {type(item).__name__}"
    )


def run_front(
    fine_solver: Stepper,
    ladder_grids: Sequence[int | Sequence[int]],
    learned: Mapping[str, Any],
    initial_states_fine: Any,
    num_leads: int,
    lead: int,
    reference_spectrum: Any | None,
    upfront_cost_s: Mapping[str, float] | None = None,
    long_rollout_steps: int = 0,
    hybrid: Sequence[Any] | Callable[[Any, int], Iterable[Any]] | None = None,
    progress: bool = True,
    *,
    reference_enstrophy: float | None = None,
    comparison_grid: Sequence[int] | None = None,
    repeats: int = 3,
    spectrum_fn: SpectrumFn | None = None,
    enstrophy_fn: EnstrophyFn | None = None,
    floor: bool = False,
    timing_rounds: int | None = None,
) -> Front:
    """Run the solver ladder, the learned steppers and the hybrid; score them; match costs.

    Every stepper starts from ``initial_states_fine`` projected onto its grid, runs
    ``num_leads`` output intervals at batch ``B`` (timed by :func:`run_stepper`) and is
    scored against the fine solver's trajectory from the same states, both projected onto
    the comparison grid. With ``long_rollout_steps > 0`` each stepper also runs that long
    and its spectrum and enstrophy, averaged over the second half, are compared with the
    reference climatology. Learned and hybrid steppers get the speed-up at matched error at
    ``lead`` against the ladder (not the fine reference) and, when defined, at matched time
    to 0.95 correlation; with an up-front cost, the break-even against the matched cost.

    Args:
        fine_solver: the reference solver (its grid defines the initial states).
        ladder_grids: grids of the solver ladder (:func:`solver_ladder`).
        learned: name -> learned stepper (same ``dt``, variables and domain as the solver).
        initial_states_fine: ``(B, C, *fine grid)``, e.g. spun-up states.
        num_leads: output intervals ``T`` >= 1 of the scored rollouts.
        lead: the lead (output intervals, ``1 <= lead <= T``) of the matched error.
        reference_spectrum: ``(K_ref,)`` long-run spectrum of the reference per shell of
            the comparison grid (``k_i = i dk``), the climatology of the projected fine
            solution, computed with ``spectrum_fn``; ``None`` computes it (and the
            enstrophy) from a long run of the fine solver (``long_rollout_steps`` fine
            intervals: expensive on a fine grid).
        upfront_cost_s: name -> data generation plus training wall seconds (break-even).
        long_rollout_steps: intervals of the long runs (>= 2; rounded up to a multiple of
            ``num_leads``: they chain the scored rollout's program), 0 to skip the long-run
            statistics.
        hybrid: precomputed results (:class:`Precomputed` or ``(name, trajectory, cost)``
            tuples), or a callable ``(initial_states_fine, num_leads) -> iterable`` of them.
        progress: show a tqdm bar.
        reference_enstrophy: mean enstrophy of the reference climatology (None: no
            enstrophy error unless ``reference_spectrum`` is None).
        comparison_grid: points per axis (default: the coarsest grid among the steppers).
        repeats: timed runs per stepper (the fine reference runs once); the chunks of the
            long run and the ``timing_rounds`` count as further timed runs.
        spectrum_fn: ``states (..., C, *comparison grid) -> (k, E (..., K))``; default the
            fine solver's class rebuilt on the comparison grid, its ``energy_spectrum``.
        enstrophy_fn: ``states -> (...)``; default :func:`half_mean_square`.
        floor: also run the fine solver from the initial states *projected onto the
            comparison grid* (entry kind ``"floor"``): the error a stepper that sees only
            the coarse state reaches with the fine solver's dynamics. Learned and hybrid
            steppers then get the ladder's speed-up at that error for their own cost (the
            ``ceiling``: what a stepper at the floor with their cost would give) and the
            fraction of the gap from the ladder rung on their grid to the floor they
            close (``gap_closed``).
        timing_rounds: after every stepper has run, this many more timed runs of each
            (ladder and learned steppers), interleaved round by round, so that a
            disturbance of the machine meets every stepper alike rather than the one that
            happened to run then (default: ``repeats``; 0: none).

    Returns:
        The :class:`Front`.

    Raises:
        ValueError: bad shapes or counts, a learned stepper unlike the reference, a hybrid
            trajectory of another batch size or length, or no way to compute spectra.
    """
    from datasets.progress import progress_bar

    owner = "run_front"
    x0 = jnp.asarray(initial_states_fine)
    _check_stepper_states(owner, fine_solver, x0)
    batch = int(x0.shape[0])
    num_leads = check_int(owner, "num_leads", num_leads, 1)
    lead = check_int(owner, "lead", lead, 1, num_leads, "at most num_leads")
    if long_rollout_steps != 0 and long_rollout_steps < 2:
        raise ValueError(f"{owner}: long_rollout_steps must be 0 or >= 2, got {long_rollout_steps}")
    if reference_spectrum is None and long_rollout_steps == 0:
        raise ValueError(
            f"{owner}: reference_spectrum=None needs long_rollout_steps >= 2 (the reference "
            "climatology comes from a long fine run)"
        )
    for name, st in learned.items():
        _check_compatible(owner, name, st, fine_solver)

    ladder = solver_ladder(fine_solver, ladder_grids)
    hybrids = hybrid(x0, int(num_leads)) if callable(hybrid) else (hybrid or ())
    hybrids = [_as_precomputed(h) for h in hybrids]
    upfront_cost_s = dict(upfront_cost_s or {})
    unknown = set(upfront_cost_s) - set(learned) - {h.name for h in hybrids}
    if unknown:
        raise ValueError(
            f"{owner}: upfront_cost_s names {sorted(unknown)} are neither learned nor hybrid"
        )
    state_ndim = len(fine_solver.state_shape)
    for h in hybrids:
        if h.kind not in ("hybrid", "learned"):
            raise ValueError(f"{owner}: precomputed {h.name!r} has kind {h.kind!r}")
        shape = np.shape(h.trajectory)
        if len(shape) != state_ndim + 2 or shape[:3] != (batch, num_leads + 1, x0.shape[1]):
            raise ValueError(
                f"{owner}: hybrid {h.name!r} trajectory has shape {shape}, expected "
                f"({batch}, {num_leads + 1}, {x0.shape[1]}, *grid)"
            )
    grids = [tuple(s.grid.num_points) for s in ladder]
    grids += [tuple(s.grid.num_points) for s in learned.values()]
    grids += [tuple(np.shape(h.trajectory)[3:]) for h in hybrids]
    grid_c = (
        default_comparison_grid(grids)
        if comparison_grid is None
        else tuple(int(n) for n in np.broadcast_to(comparison_grid, (state_ndim - 1,)))
    )
    solver_c = comparison_solver(fine_solver, grid_c)
    if spectrum_fn is None:
        spectrum_fn = energy_spectrum_fn(solver_c)
    if enstrophy_fn is None:
        enstrophy_fn = partial(half_mean_square, state_ndim=state_ndim)
    band = resolved_band(grid_c, solver_c.grid.domain_length)
    if band.size == 0:
        raise ValueError(f"{owner}: the comparison grid {grid_c} resolves no spectrum shell")
    if reference_spectrum is not None and np.shape(reference_spectrum)[-1] <= band[-1]:
        raise ValueError(
            f"{owner}: reference_spectrum has {np.shape(reference_spectrum)[-1]} shells, the "
            f"resolved band of the comparison grid {grid_c} reaches shell {band[-1]}"
        )
    dt = float(fine_solver.dt)
    lead_times = np.arange(num_leads + 1) * dt

    tasks: list[tuple[str, str, Any]] = [
        ("reference", f"reference {_grid_name(fine_solver.grid.num_points)}", fine_solver)
    ]
    tasks += [("solver", f"solver {_grid_name(s.grid.num_points)}", s) for s in ladder]
    tasks += [("learned", name, st) for name, st in learned.items()]
    if floor:
        tasks.append(
            (
                "floor",
                f"floor: {_grid_name(fine_solver.grid.num_points)} solver from the "
                f"{_grid_name(grid_c)} state",
                fine_solver,
            )
        )
    long_steps = int(long_rollout_steps)
    long_total = long_steps
    bar = progress_bar(total=len(tasks), desc="front", unit="stepper", enabled=progress)
    runs: list[dict[str, Any]] = []
    try:
        for kind, name, st in tasks:
            bar.set_postfix_str(name)
            fine_only = kind in ("reference", "floor")
            xs = x0 if kind != "floor" else spectral_resample(x0, grid_c)
            xs = spectral_resample(xs, tuple(st.grid.num_points))
            run = run_stepper(st, xs, int(num_leads), repeats=1 if fine_only else repeats)
            long = None
            times = list(run.run_s_all)
            # Long runs give every stepper's climate; the fine solver runs one only when it
            # must provide the reference climate itself (the floor never does).
            needs_long = not fine_only or (kind == "reference" and reference_spectrum is None)
            if long_steps and needs_long:
                lr = long_run_frames(st, xs, long_steps, grid_c, run=run)
                long, long_total = lr.frames, lr.num_steps
                # The chunks run the same program on the same batch: more timing samples.
                times += lr.run_s_all
            runs.append(
                {
                    "kind": kind,
                    "name": name,
                    "grid": tuple(st.grid.num_points),
                    "substeps": getattr(st, "num_substeps", None)
                    if kind in ("reference", "solver", "floor")
                    else None,
                    "traj": run.trajectory,
                    "times": times,
                    "timing": None if fine_only else (run.program, st, xs),
                    "dt": float(st.dt),
                    "compile_s": run.compile_s,
                    "long": long,
                }
            )
            bar.update(1)
    finally:
        bar.close()
    rounds = repeats if timing_rounds is None else timing_rounds
    rounds = check_int(owner, "timing_rounds", rounds, 0)
    for _ in range(rounds):
        for r in runs:
            if r["timing"] is not None:
                program, st, xs = r["timing"]
                t0 = time.perf_counter()
                jax.block_until_ready(program(st, xs))
                r["times"].append(time.perf_counter() - t0)
    for r in runs:
        times = r.pop("times")
        r.pop("timing")
        r.update(
            cost=min(times) / (batch * int(num_leads) * r.pop("dt")),
            run_s=min(times),
            timed_runs=len(times),
        )
    for h in hybrids:
        runs.append(
            {
                "kind": h.kind,
                "name": h.name,
                "grid": tuple(np.shape(h.trajectory)[3:]),
                "substeps": None,
                "traj": np.asarray(h.trajectory),
                "cost": float(h.cost),
                "compile_s": h.compile_s,
                "run_s": None,
                "timed_runs": None,
                "long": None
                if h.long_run_frames is None
                else np.asarray(spectral_resample(jnp.asarray(h.long_run_frames), grid_c)),
            }
        )

    ref_c = np.asarray(spectral_resample(jnp.asarray(runs[0]["traj"]), grid_c))
    wavenumbers = None
    if reference_spectrum is None:
        stats = long_run_statistics(runs[0]["long"], spectrum_fn, enstrophy_fn)
        reference_spectrum, wavenumbers = stats["spectrum"], stats["wavenumbers"]
        reference_enstrophy = stats["enstrophy"]
    reference_spectrum = np.asarray(reference_spectrum, np.float64)

    entries: list[FrontEntry] = []
    for r in runs:
        traj_c = np.asarray(spectral_resample(jnp.asarray(r["traj"]), grid_c))
        err = relative_l2_error(traj_c, ref_c, state_ndim=state_ndim)
        corr = field_correlation(traj_c, ref_c, state_ndim=state_ndim)
        err_mean, corr_mean = err.mean(axis=0), corr.mean(axis=0)
        t_corr, censored = time_to_correlation(corr_mean, lead_times)
        finite = np.isfinite(r["traj"].reshape(batch, -1)).all(axis=1)
        spec_max = spec_mean = ens_err = spec = nonfinite_long = None
        if r["long"] is not None:
            stats = long_run_statistics(r["long"], spectrum_fn, enstrophy_fn)
            spec = stats["spectrum"]
            wavenumbers = stats["wavenumbers"] if wavenumbers is None else wavenumbers
            nonfinite_long = stats["nonfinite_members"]
            if np.all(np.isfinite(spec)):
                spec_max, spec_mean = spectrum_relative_error(spec, reference_spectrum, band)
            else:
                spec_max = spec_mean = float("nan")
            if reference_enstrophy is not None:
                ens_err = relative_error(stats["enstrophy"], reference_enstrophy)
        entries.append(
            FrontEntry(
                kind=r["kind"],
                name=r["name"],
                grid=r["grid"],
                substeps=r["substeps"],
                batch_size=batch,
                cost=float(r["cost"]),
                compile_s=r["compile_s"],
                run_s=r["run_s"],
                timed_runs=r["timed_runs"],
                error=err_mean,
                correlation=corr_mean,
                time_to_corr=t_corr,
                time_to_corr_censored=censored,
                spectrum_max_rel_error=spec_max,
                spectrum_mean_rel_error=spec_mean,
                enstrophy_rel_error=ens_err,
                long_run_spectrum=spec,
                long_run_nonfinite_members=nonfinite_long,
                nonfinite_members=int(np.sum(~finite)),
            )
        )

    rungs = [e for e in entries if e.kind == "solver"]
    names = [e.name for e in rungs]
    r_cost = [e.cost for e in rungs]
    r_err = [e.error_at(lead) for e in rungs]
    r_time = [e.time_to_corr for e in rungs]
    r_cens = [e.time_to_corr_censored for e in rungs]
    floors = [e for e in entries if e.kind == "floor"]
    # Against the ladder: at an error (lead ``lead``), or at a time to 0.95 correlation.
    match_error = partial(speedup_at_matched_error, r_cost, r_err, names=names)
    match_time = partial(speedup_at_matched_time, r_cost, r_time, r_cens, names=names)
    for i, e in enumerate(entries):
        if e.kind not in ("learned", "hybrid"):
            continue
        sp = match_error(e.cost, e.error_at(lead))
        sp_t = match_time(e.cost, e.time_to_corr, e.time_to_corr_censored)
        ceiling = gap = ceiling_t = free = free_t = None
        if floors:
            fl = floors[0]
            floor_err, floor_t = fl.error_at(lead), (fl.time_to_corr, fl.time_to_corr_censored)
            same_grid = [r for r in rungs if r.grid == e.grid]
            ceiling = match_error(e.cost, floor_err)
            ceiling_t = match_time(e.cost, *floor_t)
            gap = gap_closed([r.error_at(lead) for r in same_grid], e.error_at(lead), floor_err)
            if same_grid:  # a free network on top of this grid's solver
                free = match_error(same_grid[0].cost, floor_err)
                free_t = match_time(same_grid[0].cost, *floor_t)
        upfront = upfront_cost_s.get(e.name)
        be = None
        if upfront is not None and sp.matched_solver_cost is not None:
            be = breakeven_time_units(upfront, sp.matched_solver_cost, e.cost)
        entries[i] = dataclasses.replace(
            e,
            speedup=sp,
            speedup_corr=sp_t,
            upfront_cost_s=upfront,
            breakeven_time_units=be,
            ceiling=ceiling,
            gap_closed=gap,
            ceiling_corr=ceiling_t,
            free_ceiling=free,
            free_ceiling_corr=free_t,
        )

    return Front(
        entries=tuple(entries),
        lead=int(lead),
        dt=dt,
        num_leads=int(num_leads),
        batch_size=batch,
        comparison_grid=tuple(grid_c),
        band=band,
        wavenumbers=None if wavenumbers is None else np.asarray(wavenumbers),
        reference_spectrum=reference_spectrum,
        reference_enstrophy=None if reference_enstrophy is None else float(reference_enstrophy),
        long_rollout_steps=long_total,
        time_units=getattr(fine_solver, "time_units", "1"),
    )


# ---- the figure -------------------------------------------------------------------------------
_LEARNED_MARKERS = ("^", "s", "D", "v", "P", "X", "h", "<", ">")
# Label offsets tried in turn (points from the marker): right, below, left, above, farther.
_LABEL_OFFSETS = (
    (6, 4),
    (6, -11),
    (-6, 4),
    (-6, -11),
    (0, 10),
    (0, -17),
    (12, 14),
    (12, -22),
    (-12, 14),
    (-12, -22),
    (18, -4),
    (-18, -4),
    (0, 24),
    (0, -30),
)


def _place_labels(fig, ax, items: Sequence[tuple[float, float, str, Any]]) -> None:
    """Annotate points without overlaps: each label takes the first offset that is free.

    ``items``: ``(x, y, text, color)`` in data coordinates. Labels are placed greedily;
    when no offset is free the one overlapping least is used.
    """
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData
    occupied = []
    for x, y, _, _ in items:  # the markers themselves
        px, py = to_px.transform((x, y))
        occupied.append((px - 4, py - 4, px + 4, py + 4))

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return max(w, 0) * max(h, 0)

    axes_box = ax.get_window_extent(renderer)
    for x, y, text, color in items:
        best = None
        for dx, dy in _LABEL_OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            ann = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                color=color,
                ha=ha,
                va="bottom",
            )
            bb = ann.get_window_extent(renderer)
            box = (bb.x0, bb.y0, bb.x1, bb.y1)
            cost = sum(overlap(box, o) for o in occupied)
            # Leaving the axes counts like an overlap with their outside.
            cost += bb.width * bb.height - overlap(box, tuple(axes_box.extents))
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box)
            else:
                ann.remove()
            if cost == 0:
                break
        occupied.append(best[2])


def plot_front(front: Front, path: PathLike) -> Path:
    """Cost against error at the front's lead, and correlation against lead.

    Left: cost per trajectory per time unit (log x) against nRMSE at the stated lead
    (log y); the solver ladder as a line with each rung labelled by its grid, each learned
    stepper and the hybrid as its own marker, labelled with its matched speed-up; the error
    floor (when run) as a dashed horizontal line; the fine
    reference's cost as a vertical dotted line (its error is zero). Right: mean
    correlation against lead time, the 0.95 threshold dashed.

    Args:
        front: a :class:`Front`.
        path: PNG file to write.

    Returns:
        The path written.
    """
    from surrogate.plots import _colors, _figure, _save, _u

    fig, axes = _figure(1, 2, (5.4, 4.2))
    ax, ax_c = axes[0]
    lead_t = front.lead * front.dt
    tu = front.time_units
    rungs = sorted(front.by_kind("solver"), key=lambda e: e.cost)
    others = front.by_kind("learned", "hybrid")
    colors = _colors([e.name for e in others])
    labels: list[tuple[float, float, str, Any]] = []

    def drawable(e: FrontEntry) -> bool:
        v = e.error_at(front.lead)
        return math.isfinite(v) and v > 0 and e.cost > 0

    pts = [e for e in rungs if drawable(e)]
    if pts:
        ax.plot(
            [e.cost for e in pts],
            [e.error_at(front.lead) for e in pts],
            "o-",
            color="black",
            label="solver ladder",
        )
        for e in pts:
            labels.append((e.cost, e.error_at(front.lead), _grid_name(e.grid), "black"))
    for e in rungs:
        if e.error_at(front.lead) == 0 and e.cost > 0:  # the reference's own grid: error 0
            ax.plot(
                [e.cost],
                [0.0],
                "v",
                color="black",
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
            ax.annotate(
                f"{_grid_name(e.grid)} (error 0)",
                (e.cost, 0.0),
                xycoords=ax.get_xaxis_transform(),
                xytext=(0, 6),
                textcoords="offset points",
                fontsize=7,
                ha="center",
            )
    for j, e in enumerate(others):
        if not drawable(e):
            continue
        marker = "*" if e.kind == "hybrid" else _LEARNED_MARKERS[j % len(_LEARNED_MARKERS)]
        v = e.error_at(front.lead)
        ax.plot(
            [e.cost], [v], marker, color=colors[e.name], markersize=9, label=f"{e.name} ({e.kind})"
        )
        text = e.name
        sp = e.speedup
        if sp is not None and sp.speedup is not None:
            sign = {"lower": "≥", "upper": "≤"}.get(sp.bound or "", "")
            text += f" {sign}{sp.speedup:.3g}x"
            # The matched solver cost at the same error: a dotted segment to the ladder.
            ax.plot(
                [e.cost, sp.matched_solver_cost],
                [v, v],
                ":",
                color=colors[e.name],
                linewidth=1.0,
            )
        labels.append((e.cost, v, text, colors[e.name]))
    for e in front.by_kind("floor"):
        v = e.error_at(front.lead)
        if math.isfinite(v) and v > 0:
            ax.axhline(v, color="tab:green", linestyle="--", linewidth=1.0, label=e.name)
    for e in front.by_kind("reference"):
        ax.axvline(e.cost, color="gray", linestyle=":", linewidth=1.0)
        ax.text(
            e.cost,
            0.02,
            f" reference {_grid_name(e.grid)}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            fontsize=7,
            color="gray",
            va="bottom",
            ha="right",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cost per trajectory per time unit [s]")
    ax.set_ylabel(f"nRMSE at lead t = {lead_t:g} {_u('1')}")
    ax.set_title(
        f"cost-accuracy front (batch {front.batch_size}, on {_grid_name(front.comparison_grid)})"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.12, y=0.15)  # room for the labels of the end points
    handles, names = ax.get_legend_handles_labels()
    if handles:  # below the figure: inside the axes it would hide points
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4), fontsize=7)

    t = front.lead_times
    shade = np.linspace(0.25, 0.75, max(len(rungs), 1))
    for g, e in zip(shade, sorted(rungs, key=lambda e: np.prod(e.grid)), strict=False):
        ax_c.plot(
            t, e.correlation, color=str(g), linewidth=1.2, label=f"solver {_grid_name(e.grid)}"
        )
    for e in others:
        ax_c.plot(t, e.correlation, color=colors[e.name], linewidth=1.6, label=e.name)
    for e in front.by_kind("floor"):
        ax_c.plot(t, e.correlation, "--", color="tab:green", linewidth=1.2, label="floor")
    ax_c.axhline(front.threshold, color="gray", linestyle="--", linewidth=1.0)
    ax_c.text(
        t[-1], front.threshold, f" {front.threshold:g}", va="bottom", ha="right", color="gray"
    )
    ax_c.set_xlabel(f"lead time {_u(tu)}")
    ax_c.set_ylabel(f"correlation with the reference {_u('1')}")
    ax_c.set_title("correlation against lead")
    ax_c.grid(alpha=0.3)
    low = [np.nanmin(e.correlation) for e in front.entries if np.isfinite(e.correlation).any()]
    ax_c.set_ylim(min([0.5, *low]) - 0.02, 1.01)
    ax_c.legend(fontsize=7, loc="lower left")

    # Fix the layout first so the label placement sees the final axes geometry.
    fig.canvas.draw()
    fig.set_layout_engine("none")
    _place_labels(fig, ax, labels)
    return _save(fig, path)


__all__ = [
    "CORRELATION_THRESHOLD",
    "Front",
    "FrontEntry",
    "gap_closed",
    "LongRun",
    "MatchedSpeedup",
    "Precomputed",
    "RolloutRun",
    "breakeven_time_units",
    "comparison_solver",
    "default_comparison_grid",
    "energy_spectrum_fn",
    "field_correlation",
    "half_mean_square",
    "long_run_frames",
    "long_run_statistics",
    "pareto_front",
    "plot_front",
    "relative_error",
    "reference_climate",
    "relative_l2_error",
    "resolved_band",
    "run_front",
    "run_stepper",
    "solver_ladder",
    "spectrum_relative_error",
    "speedup_at_matched_error",
    "speedup_at_matched_time",
    "time_to_correlation",
]
