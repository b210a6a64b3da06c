"""Weather-style evaluation of a stepper (a trained forecaster, or any solver) against truth.

``evaluate`` rolls a stepper out from the initial states of reference trajectories and
scores it, WeatherBench 2 style, in one table beside the baselines a forecaster has to
beat: persistence (the initial state held) and the classical solver itself on a coarser
grid (a "same cost budget" competitor whose measured wall time is recorded beside the
surrogate's). The result is an :class:`xarray.Dataset`:

==================  ===========================================  ==========================
variable            dims                                         meaning
==================  ===========================================  ==========================
rmse                (model, variable, lead_time)                 ``sqrt(mean_n mean_x e^2)``
rmse_per_trajectory (model, trajectory, variable, lead_time)     ``sqrt(mean_x e^2)`` per n
acc_per_trajectory  (model, trajectory, variable, lead_time)     ACC per trajectory
nrmse               (model, variable, lead_time)                 rmse / climatological std
acc                 (model, variable, lead_time)                 anomaly correlation
valid_time          (model, variable)                            lead where acc < threshold
spectrum            (model, variable, lead_time_sel, wavenumber) mean power spectrum
wall_time           (model)                                      rollout seconds, no compile
invariant_drift     (model, invariant, lead_time)                ``mean_n |s(t)-s(0)| / S``
invariant_error     (model, invariant, lead_time)                ``mean_n |s - s_true| / S``
blowup_time         (model)                                      first blow-up, long rollout
blowup_fraction     (model)                                      share of runs that blew up
==================  ===========================================  ==========================

The model ``"truth"`` is a row of every table (its rmse is 0, its acc 1), so the truth's
spectrum and the truth's own invariant drift sit beside the models'. Invariant rows need
``solver`` (its ``diagnostics``); blow-up rows need ``long_rollout_steps``.

The ``trajectory`` coordinate holds the dataset indices of the scored trajectories;
:func:`record_provenance` adds what was scored (dataset path and identity, split, bundle
path and sha256) as attributes. Saved files are CF-1.10 (0 compliance-checker errors).

``evaluate`` is three pieces, each usable alone: :func:`check_evaluation_inputs` (the
checked :class:`EvaluationSettings`), :func:`score_models` (the rollouts, timed, and
their :class:`EvaluationScores`) and :func:`evaluation_dataset` (the table, pure).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from datasets.plumbing import map_rows
from solvers.stepper import Stepper, check_compatible, check_stepper
from surrogate import distributed, metrics

Array = jax.Array

BASELINES = ("persistence", "coarse_solver")
ACC_DEFINITION = (
    "uncentred anomaly correlation (WeatherBench 2): sum_x f'o' / sqrt(sum_x f'^2 sum_x o'^2) "
    "with anomalies against the climatology, per state, averaged over trajectories"
)


# ---- rollouts --------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("num_frames", "steps_per_frame", "mesh"))
def rollout_batch(
    stepper: Stepper,
    initial_states: Array,
    num_frames: int,
    steps_per_frame: int = 1,
    mesh: jax.sharding.Mesh | None = None,
) -> Array:
    """Trajectories of a stepper from a batch of initial states (one jitted, vmapped scan).

    Args:
        stepper: pytree callable ``state -> state`` over its ``dt`` (solver, forecaster).
        initial_states: ``(B, C, *spatial)``.
        num_frames: frames per trajectory, the initial state included (>= 1).
        steps_per_frame: stepper applications between stored frames (>= 1).
        mesh: optional mesh with axis ``"data"`` (:func:`surrogate.distributed.data_mesh`):
            the batch axis of the states and of the result is split over its devices
            (``B`` must divide by their number); each member's rollout is unchanged.

    Returns:
        ``(B, num_frames, C, *spatial)`` with frame ``i`` at time ``i * steps_per_frame * dt``.

    Raises:
        ValueError: ``B`` not divisible by the devices of ``mesh``.
    """

    def rows(stepper, initial_states):
        def advance(s):
            if steps_per_frame == 1:
                return stepper(s)
            return jax.lax.fori_loop(0, steps_per_frame, lambda _, z: stepper(z), s)

        def one(x0):
            def body(s, _):
                s = advance(s)
                return s, s

            _, frames = jax.lax.scan(body, x0, None, length=num_frames - 1)
            return jnp.concatenate([x0[None], frames], axis=0)

        return jax.vmap(one)(initial_states)

    return _over_rows(rows, mesh, stepper, initial_states)


def _over_rows(fn, mesh, stepper, batch, *args):
    """``fn(stepper, batch, *args)``, or with a mesh each device's rows of ``batch``.

    (:func:`datasets.plumbing.map_rows`).
    """
    if mesh is None:
        return fn(stepper, batch, *args)
    from jax.sharding import PartitionSpec as P

    distributed.check_divisible(batch.shape[0], mesh)
    specs = (P(), P(distributed.DATA_AXIS)) + (P(),) * len(args)
    return map_rows(fn, mesh, specs, P(distributed.DATA_AXIS))(stepper, batch, *args)


@partial(jax.jit, static_argnames=("num_steps", "spatial_ndim", "mesh"))
def first_blowup_step(
    stepper: Stepper,
    initial_states: Array,
    reference_amplitude: Array,
    threshold: float,
    num_steps: int,
    spatial_ndim: int,
    mesh: jax.sharding.Mesh | None = None,
) -> Array:
    """First step at which a long rollout blows up, without storing the trajectory.

    The criterion is :func:`surrogate.metrics.exceeds_amplitude` (non-finite, or some
    channel's ``max |u|`` above ``threshold * reference_amplitude``), checked after every
    step inside the scan: a failure is a value carried out, not an exception.

    Args:
        stepper: pytree callable ``state -> state``.
        initial_states: ``(B, C, *spatial)``.
        reference_amplitude: ``(C,)`` amplitude per channel (variable units).
        threshold: amplitude factor (traced, so changing it does not recompile).
        num_steps: stepper applications.
        spatial_ndim: number of spatial axes.
        mesh: optional mesh with axis ``"data"``: the batch is split over its devices.

    Returns:
        ``(B,)`` int: step index ``i >= 1`` (time ``i * dt``) of the first bad state, -1
        if none.
    """

    def rows(stepper, initial_states, reference_amplitude, threshold):
        def one(x0):
            def body(carry, i):
                s, first = carry
                s = stepper(s)
                bad = metrics.exceeds_amplitude(
                    s, reference_amplitude, threshold, spatial_ndim=spatial_ndim
                )
                return (s, jnp.where((first < 0) & bad, i + 1, first)), None

            init = (x0, jnp.asarray(-1, jnp.int32))
            (_, first), _ = jax.lax.scan(body, init, jnp.arange(num_steps, dtype=jnp.int32))
            return first

        return jax.vmap(one)(initial_states)

    return _over_rows(rows, mesh, stepper, initial_states, reference_amplitude, threshold)


# ---- inputs ----------------------------------------------------------------------------
def truth_from_dataset(ds: xr.Dataset, variables: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stack a dataset-convention :class:`xarray.Dataset` into a truth array.

    The dataset holds one data variable per physical variable with dims
    ``(trajectory, time, [y,] x)`` and a ``time`` coordinate.

    Args:
        ds: the dataset (loaded or lazy; it is read into memory).
        variables: physical variables in state (channel) order.

    Returns:
        ``(truth, lead_times)``: ``(N, T, C, *spatial)`` numpy array and ``(T,)`` lead
        times ``time - time[0]`` (the dataset's time units).

    Raises:
        KeyError: a variable is missing (the message lists those present).
        ValueError: a variable lacks the ``trajectory``/``time`` dims, or the variables'
            shapes differ.
    """
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise KeyError(
            f"truth_from_dataset: variables {missing} not in the dataset; it has "
            f"{sorted(map(str, ds.data_vars))}"
        )
    arrays = []
    for v in variables:
        da = ds[v]
        if "trajectory" not in da.dims or "time" not in da.dims:
            raise ValueError(
                f"truth_from_dataset: variable {v!r} has dims {da.dims}; expected "
                "(trajectory, time, [y,] x)"
            )
        arrays.append(np.asarray(da.transpose("trajectory", "time", ...).values))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"truth_from_dataset: variables have different shapes {shapes}")
    if "time" in ds.coords:
        t = np.asarray(ds["time"].values, dtype=np.float64)
        lead_times = t - t[0]
    else:
        dt = float(ds.attrs["dt"]) if "dt" in ds.attrs else math.nan
        lead_times = np.arange(arrays[0].shape[1], dtype=np.float64) * dt
    return np.stack(arrays, axis=2), lead_times


def coarse_solver_for(solver: Stepper, coarsen_factor: int) -> Any:
    """The same solver on a grid ``coarsen_factor`` times coarser on every axis.

    :func:`solvers.resolution.coarsened` with the solver's own ``num_substeps``.

    Raises:
        ValueError: ``coarsen_factor`` not an int >= 1, a grid size it does not divide, or a
            coarse configuration the solver rejects (its message is included).
    """
    from solvers.resolution import coarsened

    try:
        return coarsened(solver, coarsen_factor)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"could not build the coarse_solver baseline (coarsen_factor={coarsen_factor}): "
            f"{err}. Pass coarse_solver=... built by hand, or leave 'coarse_solver' out of "
            "baselines"
        ) from err


def describe_stepper(stepper: Stepper, max_chars: int = 2000) -> str:
    """A short text description of a stepper for the result's attributes."""
    config = getattr(stepper, "config", None)
    if callable(config):
        try:
            text = f"{type(stepper).__name__}({config()})"
        except Exception:  # noqa: BLE001 - a description must never break an evaluation
            text = ""
    elif type(stepper).__repr__ is not object.__repr__:
        text = repr(stepper)
    else:
        text = ""
    if not text:
        grid = getattr(stepper, "grid", None)
        shape = getattr(grid, "num_points", None)
        text = (
            f"{type(stepper).__name__}(dt={getattr(stepper, 'dt', None)}, "
            f"variables={getattr(stepper, 'variables', None)}, num_points={shape})"
        )
    return text[:max_chars]


# ---- the evaluation --------------------------------------------------------------------
def evaluate(
    stepper: Stepper,
    truth: np.ndarray | Array | xr.Dataset,
    *,
    statistics: Any = None,
    lead_times: Sequence[float] | np.ndarray | None = None,
    baselines: Sequence[str] = BASELINES,
    solver: Stepper = None,
    coarsen_factor: int = 2,
    coarse_solver: Stepper = None,
    long_rollout_steps: int | None = None,
    batch_size: int = 16,
    model_name: str = "surrogate",
    spectrum_lead_indices: Sequence[int] | None = None,
    acc_threshold: float = 0.6,
    blowup_threshold: float = 10.0,
    centered_acc: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    trajectory_ids: Sequence[int] | np.ndarray | None = None,
) -> xr.Dataset:
    """Score a stepper against reference trajectories, with baselines, as an xarray table.

    Three steps, each usable alone: :func:`check_evaluation_inputs` (the checked
    :class:`EvaluationSettings`), :func:`score_models` (the rollouts and their
    :class:`EvaluationScores`) and :func:`evaluation_dataset` (the table).

    The forecast of every model starts from ``truth[:, 0]`` and is a jitted, vmapped
    ``lax.scan`` rollout over the ``T - 1`` following frames, in batches of
    ``batch_size`` trajectories (the last batch padded, so each model compiles once).
    Wall times cover the rollouts only (compiled ahead of time; resampling excluded).
    With a ``solver`` the ``truth`` row's wall time is the solver's own rollout from the
    same initial states, timed the same way (its frames are discarded; the truth is
    scored as given).

    Metrics (see :mod:`surrogate.metrics`): RMSE and normalised RMSE (by the
    climatological std of each variable), uncentred ACC against the climatology (or
    centred with ``centered_acc``), the lead time at which ACC drops below
    ``acc_threshold``, mean power spectra at a few lead times, and with a ``solver`` the
    drift of its diagnostics along the forecast and their error against the truth's. With
    ``long_rollout_steps`` each stepper model runs that many steps from the same initial
    states and the first blow-up (non-finite, or ``max |u_c|`` above ``blowup_threshold``
    times the truth's largest ``|u_c|``) is recorded.

    Args:
        stepper: pytree callable ``state -> state`` on ``(C, *spatial)`` with ``.dt``,
            ``.variables``, ``.grid`` (a forecaster or a solver).
        truth: ``(N, T, C, *spatial)`` reference trajectories, ``truth[:, 0]`` the initial
            states, frames ``lead_times`` apart; or a dataset-convention
            :class:`xarray.Dataset` (see :func:`truth_from_dataset`).
        statistics: object with numpy fields ``climatology (C, *spatial)``,
            ``state_std (C,)`` and optionally ``variables`` (normalisation statistics of the
            training split); ``None`` computes both from ``truth`` (in-sample).
        lead_times: ``(T,)`` time of each truth frame after the initial one (time units),
            starting at 0 and evenly spaced by a whole multiple ``k >= 1`` of
            ``stepper.dt`` (the stepper then runs ``k`` steps per frame). Default
            ``arange(T) * stepper.dt``, or the dataset's time coordinate.
        baselines: any of ``"persistence"``, ``"coarse_solver"``. The coarse solver needs
            ``solver`` or ``coarse_solver``; without either it is skipped (see the
            ``skipped_baselines`` attribute).
        solver: the classical solver of the truth (same grid, variables, dt); enables
            the coarse baseline and the invariant rows.
        coarsen_factor: grid coarsening of the coarse baseline (int >= 1, dividing every
            grid size).
        coarse_solver: a hand-built coarse baseline (overrides ``coarsen_factor``).
        long_rollout_steps: stepper steps of the stability rollout; ``None`` skips it.
        batch_size: trajectories per compiled rollout (>= 1).
        model_name: row name of ``stepper`` in the ``model`` coordinate.
        spectrum_lead_indices: truth frame indices at which spectra are stored; default
            three frames spread over ``1 .. T-1``.
        acc_threshold: ACC level defining ``valid_time`` (0.6 by custom).
        blowup_threshold: amplitude factor of the blow-up criterion (> 0).
        centered_acc: use the centred ACC instead of the uncentred one.
        mesh: optional mesh with axis ``"data"`` (:func:`surrogate.distributed.data_mesh`):
            every rollout's trajectory axis is split over its devices (``batch_size`` is
            rounded up to a multiple of their number), scores are computed from the
            gathered forecasts. Under ``jax.distributed`` every process calls
            ``evaluate`` with the same arguments and gets the same table.
        trajectory_ids: ``(N,)`` dataset indices of the truth trajectories, stored as the
            ``trajectory`` coordinate of the per-trajectory scores. Default: the
            ``trajectory`` coordinate of a dataset ``truth``, else ``0 .. N-1``.

    Returns:
        The :class:`xarray.Dataset` described in the module docstring, with attributes
        describing every model, the climatology source and the metric definitions.

    Raises:
        ValueError: shapes, variables, grid or dt of ``truth``, ``stepper``, ``solver`` or
            ``statistics`` that disagree; unknown baselines; invalid numeric options.
    """
    settings = check_evaluation_inputs(
        stepper,
        truth,
        statistics=statistics,
        lead_times=lead_times,
        baselines=baselines,
        solver=solver,
        coarsen_factor=coarsen_factor,
        coarse_solver=coarse_solver,
        long_rollout_steps=long_rollout_steps,
        batch_size=batch_size,
        model_name=model_name,
        spectrum_lead_indices=spectrum_lead_indices,
        acc_threshold=acc_threshold,
        blowup_threshold=blowup_threshold,
        centered_acc=centered_acc,
        mesh=mesh,
        trajectory_ids=trajectory_ids,
    )
    return evaluation_dataset(settings, score_models(settings))


# ---- 1. the checked inputs -------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationSettings:
    """The inputs of :func:`evaluate`, checked and normalised by :func:`check_evaluation_inputs`.

    Attributes:
        stepper: the scored stepper.
        model_name: its row in the ``model`` coordinate.
        variables: ``(C,)`` physical variables in channel order (the stepper's).
        grid: the stepper's grid.
        dt: the stepper's time step (time units).
        truth: ``(N, T, C, *spatial)`` reference trajectories (numpy, the given dtype).
        lead_times: ``(T,)`` float64 lead time of each frame (time units), from 0.
        steps_per_frame: stepper applications between truth frames (>= 1).
        spectrum_indices: frame indices at which spectra are stored.
        trajectory_ids: ``(N,)`` integer dataset index of each truth trajectory.
        batch_size: trajectories per compiled rollout: at most ``N``, a multiple of the
            mesh's devices when there is a mesh.
        models: row name -> ``(kind, stepper)`` in row order, ``kind`` one of
            ``"truth"``, ``"step"``, ``"persistence"``, ``"coarse"`` (stepper ``None`` for
            the truth and persistence).
        solver: the reference solver (diagnostics, timed truth row) or ``None``.
        coarse_solver: the coarse baseline's solver when it is scored, else ``None``.
        skipped_baselines: why requested baselines were left out.
        climatology: ``(C, *spatial)`` float64 climatology (variable units).
        state_std: ``(C,)`` float64 climatological std (variable units), > 0.
        climatology_source: where both came from.
        acc_threshold: ACC level defining ``valid_time``.
        blowup_threshold: amplitude factor of the blow-up criterion (> 0).
        centered_acc: the centred ACC instead of the uncentred one.
        long_rollout_steps: stepper steps of the stability rollout, or ``None``.
        mesh: the mesh the rollouts are split over, or ``None``.
    """

    stepper: Any
    model_name: str
    variables: tuple[str, ...]
    grid: Any
    dt: float
    truth: np.ndarray
    lead_times: np.ndarray
    steps_per_frame: int
    spectrum_indices: tuple[int, ...]
    trajectory_ids: np.ndarray
    batch_size: int
    models: Mapping[str, tuple[str, Any]]
    solver: Any
    coarse_solver: Any
    skipped_baselines: tuple[str, ...]
    climatology: np.ndarray
    state_std: np.ndarray
    climatology_source: str
    acc_threshold: float
    blowup_threshold: float
    centered_acc: bool
    long_rollout_steps: int | None
    mesh: jax.sharding.Mesh | None

    @property
    def model_names(self) -> list[str]:
        """Row names of the ``model`` coordinate, truth first."""
        return list(self.models)


def check_evaluation_inputs(
    stepper: Stepper,
    truth: np.ndarray | Array | xr.Dataset,
    *,
    statistics: Any = None,
    lead_times: Sequence[float] | np.ndarray | None = None,
    baselines: Sequence[str] = BASELINES,
    solver: Stepper = None,
    coarsen_factor: int = 2,
    coarse_solver: Stepper = None,
    long_rollout_steps: int | None = None,
    batch_size: int = 16,
    model_name: str = "surrogate",
    spectrum_lead_indices: Sequence[int] | None = None,
    acc_threshold: float = 0.6,
    blowup_threshold: float = 10.0,
    centered_acc: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    trajectory_ids: Sequence[int] | np.ndarray | None = None,
) -> EvaluationSettings:
    """Check the arguments of :func:`evaluate` and normalise them; no rollout runs.

    Reads a dataset ``truth`` into memory, derives the lead times and steps per frame,
    builds the coarse baseline from ``solver`` when it is requested and not given, and
    takes the climatology from ``statistics`` or from the truth (in-sample).

    Args:
        stepper: the stepper to score (see :func:`evaluate`).
        truth: ``(N, T, C, *spatial)`` reference trajectories or a dataset-convention
            :class:`xarray.Dataset`.
        statistics, lead_times, baselines, solver, coarsen_factor, coarse_solver,
            long_rollout_steps, batch_size, model_name, spectrum_lead_indices,
            acc_threshold, blowup_threshold, centered_acc, mesh, trajectory_ids: as in
            :func:`evaluate`.

    Returns:
        The :class:`EvaluationSettings`.

    Raises:
        ValueError: each message starts with ``evaluate:`` and names the bad argument
            (``truth``, ``trajectory_ids``, ``batch_size``, ``acc_threshold``,
            ``blowup_threshold``, ``long_rollout_steps``, ``lead_times``,
            ``spectrum_lead_indices``, ``baselines``, ``model_name``, ``solver``,
            ``coarse_solver``, ``statistics``) and what was expected.
        KeyError: a dataset ``truth`` lacks one of the stepper's variables.
    """
    owner = "evaluate"
    variables = tuple(stepper.variables)
    grid = stepper.grid
    nd = grid.ndim
    dt = float(stepper.dt)
    if isinstance(truth, xr.Dataset):
        truth_np, ds_leads = truth_from_dataset(truth, variables)
        if lead_times is None and np.all(np.isfinite(ds_leads)):
            lead_times = ds_leads
        if trajectory_ids is None and "trajectory" in truth.coords:
            trajectory_ids = truth["trajectory"].values
    else:
        truth_np = np.asarray(truth)
    expected = (len(variables), *grid.num_points)
    if truth_np.ndim != 2 + 1 + nd or tuple(truth_np.shape[2:]) != expected:
        raise ValueError(
            f"{owner}: truth must be (N, T, C, *spatial) = (N, T, {', '.join(map(str, expected))})"
            f" for variables {variables} on grid {grid.num_points}; got {truth_np.shape}"
        )
    num_traj, num_frames = truth_np.shape[:2]
    if num_traj < 1 or num_frames < 2:
        raise ValueError(
            f"{owner}: truth needs N >= 1 trajectories and T >= 2 frames, got {truth_np.shape}"
        )
    if trajectory_ids is None:
        trajectory_ids = np.arange(num_traj)
    trajectory_ids = np.asarray(trajectory_ids)
    if trajectory_ids.shape != (num_traj,) or not np.issubdtype(trajectory_ids.dtype, np.integer):
        raise ValueError(
            f"{owner}: trajectory_ids must be {num_traj} integers (one per truth trajectory), "
            f"got {trajectory_ids.dtype} of shape {trajectory_ids.shape}"
        )
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"{owner}: batch_size must be an int >= 1, got {batch_size!r}")
    batch_size = int(min(batch_size, num_traj))
    if mesh is not None:
        batch_size = -(-batch_size // mesh.size) * mesh.size
    if not math.isfinite(acc_threshold):
        raise ValueError(f"{owner}: acc_threshold must be a finite number, got {acc_threshold!r}")
    if not blowup_threshold > 0:
        raise ValueError(f"{owner}: blowup_threshold must be > 0, got {blowup_threshold!r}")
    if long_rollout_steps is not None and (
        not isinstance(long_rollout_steps, int | np.integer) or long_rollout_steps < 1
    ):
        raise ValueError(
            f"{owner}: long_rollout_steps must be None or an int >= 1, got {long_rollout_steps!r}"
        )

    lead, steps_per_frame = _check_lead_times(owner, lead_times, num_frames, dt)
    spec_idx = _spectrum_indices(owner, spectrum_lead_indices, num_frames)

    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"{owner}: unknown baselines {unknown}; choose from {BASELINES}")
    if model_name in ("truth", *BASELINES):
        raise ValueError(f"{owner}: model_name {model_name!r} is reserved; pick another")
    if solver is not None:
        _check_stepper(owner, "solver", solver, variables, grid, dt)
    skipped = []
    if "coarse_solver" in baselines and coarse_solver is None:
        if solver is None:
            skipped.append("coarse_solver (no solver given)")
        else:
            coarse_solver = coarse_solver_for(solver, coarsen_factor)
    if coarse_solver is not None:
        _check_stepper(owner, "coarse_solver", coarse_solver, variables, None, dt)
        if coarse_solver.grid.ndim != nd:
            raise ValueError(f"{owner}: coarse_solver is {coarse_solver.grid.ndim}D, not {nd}D")
    use_coarse = "coarse_solver" in baselines and coarse_solver is not None

    climatology, state_std, clim_source = _climatology(owner, statistics, truth_np, variables)

    models: dict[str, tuple[str, Any]] = {"truth": ("truth", None), model_name: ("step", stepper)}
    if "persistence" in baselines:
        models["persistence"] = ("persistence", None)
    if use_coarse:
        models["coarse_solver"] = ("coarse", coarse_solver)
    return EvaluationSettings(
        stepper=stepper,
        model_name=model_name,
        variables=variables,
        grid=grid,
        dt=dt,
        truth=truth_np,
        lead_times=lead,
        steps_per_frame=steps_per_frame,
        spectrum_indices=spec_idx,
        trajectory_ids=trajectory_ids,
        batch_size=batch_size,
        models=models,
        solver=solver,
        coarse_solver=coarse_solver if use_coarse else None,
        skipped_baselines=tuple(skipped),
        climatology=climatology,
        state_std=state_std,
        climatology_source=clim_source,
        acc_threshold=acc_threshold,
        blowup_threshold=blowup_threshold,
        centered_acc=centered_acc,
        long_rollout_steps=None if long_rollout_steps is None else int(long_rollout_steps),
        mesh=mesh,
    )


def _check_stepper(owner: str, name: str, stepper: Stepper, variables, grid, dt) -> None:
    """``stepper`` has the stepper contract and matches the evaluated data (grid: if given)."""
    check_stepper(owner, stepper, name)
    data = {"variables": variables, "grid": stepper.grid if grid is None else grid, "dt": dt}
    check_compatible(owner, stepper, data, names=(name, "the data"), grid="points")


def _check_lead_times(owner, lead_times, num_frames, dt) -> tuple[np.ndarray, int]:
    """``(T,)`` float64 lead times and the stepper steps per frame they imply."""
    if lead_times is None:
        return np.arange(num_frames, dtype=np.float64) * dt, 1
    lead = np.asarray(lead_times, dtype=np.float64)
    if lead.shape != (num_frames,):
        raise ValueError(
            f"{owner}: lead_times must have shape (T,) = ({num_frames},), got {lead.shape}"
        )
    spacing = np.diff(lead)
    k = spacing[0] / dt
    steps = round(k)
    uniform = np.allclose(spacing, spacing[0], rtol=1e-6, atol=0.0)
    if abs(lead[0]) > 1e-9 * abs(spacing[0]) or not uniform or steps < 1 or abs(k - steps) > 1e-6:
        raise ValueError(
            f"{owner}: lead_times must start at 0 and be evenly spaced by a whole multiple of "
            f"the stepper's dt={dt}; got {lead[:4]}..."
        )
    return lead, int(steps)


def _spectrum_indices(owner, indices, num_frames) -> tuple[int, ...]:
    """Frame indices of the stored spectra: the given ones, or three spread over 1..T-1."""
    if indices is None:
        return tuple(int(i) for i in np.unique(np.rint(np.linspace(1, num_frames - 1, 3))))
    out = tuple(int(i) for i in indices)
    if not out or any(not 0 <= i < num_frames for i in out):
        raise ValueError(
            f"{owner}: spectrum_lead_indices must be frame indices in [0, {num_frames}), got "
            f"{indices!r}"
        )
    return out


def _climatology(owner, statistics, truth_np, variables):
    """Climatology ``(C, *spatial)`` and std ``(C,)`` from statistics or from the truth."""
    spatial = truth_np.shape[3:]
    if statistics is None:
        t = truth_np.astype(np.float64)
        clim = t.mean(axis=(0, 1))
        std = t.std(axis=(0, 1, *range(3, t.ndim)))
        source = "truth (in-sample: computed from the evaluated trajectories)"
    else:
        for field in ("climatology", "state_std"):
            if getattr(statistics, field, None) is None:
                raise ValueError(f"{owner}: statistics has no {field!r}")
        stat_vars = getattr(statistics, "variables", None)
        if stat_vars is not None and tuple(stat_vars) != tuple(variables):
            raise ValueError(
                f"{owner}: statistics are for variables {tuple(stat_vars)}, expected {variables}"
            )
        clim = np.asarray(statistics.climatology, np.float64)
        std = np.asarray(statistics.state_std, np.float64).reshape(-1)
        if clim.shape != (len(variables), *spatial):
            raise ValueError(
                f"{owner}: statistics.climatology has shape {clim.shape}, expected "
                f"{(len(variables), *spatial)}"
            )
        source = "statistics (given)"
    if std.shape != (len(variables),) or not np.all(std > 0):
        raise ValueError(
            f"{owner}: the climatological std must be (C,) = ({len(variables)},) and > 0, got {std}"
        )
    return clim, std, source


# ---- 2. the scores ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationScores:
    """What :func:`score_models` measured, float64 numpy, models in the settings' row order.

    ``M`` models, ``N`` trajectories, ``T`` lead times, ``C`` variables, ``L`` spectrum
    lead times, ``K`` wavenumber shells, ``I`` invariants.

    Attributes:
        rmse: ``(M, T, C)`` ``sqrt(mean_n mean_x e^2)`` (variable units).
        rmse_per_trajectory: ``(M, N, T, C)`` ``sqrt(mean_x e^2)`` (variable units).
        acc: ``(M, T, C)`` anomaly correlation, mean over trajectories.
        acc_per_trajectory: ``(M, N, T, C)`` anomaly correlation per trajectory.
        valid_time: ``(M, C)`` lead time at which the ACC drops below the threshold
            (time units; inf: never).
        wavenumbers: ``(K,)`` shell centres of the spectra (angular, 1 / length units).
        spectrum: ``(M, L, C, K)`` mean power per shell (squared variable units).
        wall_time: ``(M,)`` rollout seconds, compilation excluded (truth: NaN without a
            solver).
        invariants: names of the solver's diagnostics; empty without a solver or when it
            reports none (the three invariant arrays are then ``None``).
        invariant_drift: ``(M, I, T)`` ``mean_n |s(t) - s(0)| / scale``.
        invariant_error: ``(M, I, T)`` ``mean_n |s(t) - s_truth(t)| / scale``.
        invariant_scale: ``(I,)`` RMS over trajectories of the truth's initial value (1 if
            zero), in each diagnostic's units.
        blowup_time: ``(M,)`` earliest blow-up over trajectories (time units; inf: none,
            NaN: not run); ``None`` without ``long_rollout_steps``.
        blowup_fraction: ``(M,)`` share of long rollouts that blew up; ``None`` likewise.
    """

    rmse: np.ndarray
    rmse_per_trajectory: np.ndarray
    acc: np.ndarray
    acc_per_trajectory: np.ndarray
    valid_time: np.ndarray
    wavenumbers: np.ndarray
    spectrum: np.ndarray
    wall_time: np.ndarray
    invariants: tuple[str, ...] = ()
    invariant_drift: np.ndarray | None = None
    invariant_error: np.ndarray | None = None
    invariant_scale: np.ndarray | None = None
    blowup_time: np.ndarray | None = None
    blowup_fraction: np.ndarray | None = None


def score_models(settings: EvaluationSettings) -> EvaluationScores:
    """Roll every model out from the truth's initial states and score it (the timed part).

    Each model's rollout is compiled once ahead of time and run on batches of
    ``settings.batch_size`` trajectories (the last one padded with weight-0 rows), split
    over ``settings.mesh`` when there is one; scores are accumulated on the host in
    float64. With ``settings.long_rollout_steps`` every stepper model also runs the
    stability rollout. Not pure only in the wall times it measures: every other number
    is a function of the settings.

    Args:
        settings: from :func:`check_evaluation_inputs`.

    Returns:
        The :class:`EvaluationScores`.
    """
    s = settings
    names = s.model_names
    num_traj = s.truth.shape[0]
    sums = _rollout_scores(s)
    rmse = np.stack([np.sqrt(sums["mse_sum"][m] / num_traj) for m in names])  # (M, T, C)
    rmse_rows = np.stack([np.sqrt(np.concatenate(sums["mse_traj"][m])) for m in names])
    acc_rows = np.stack([np.concatenate(sums["acc_traj"][m]) for m in names])
    acc = np.stack([sums["acc_sum"][m] / num_traj for m in names])
    spectrum = np.stack([sums["spec_sum"][m] / num_traj for m in names])  # (M, L, C, K)
    valid = np.asarray(
        metrics.valid_time(
            jnp.asarray(np.moveaxis(acc, 1, 2)),
            jnp.asarray(s.lead_times),
            threshold=s.acc_threshold,
        ),
        np.float64,
    )  # (M, C)
    invariants: dict[str, Any] = {}
    diag_series = sums["diag_series"]
    if s.solver is not None and diag_series["truth"][0]:  # a solver may report no diagnostics
        invariants = _invariant_scores(diag_series, names)
    blowup: dict[str, Any] = {}
    if s.long_rollout_steps is not None:
        blowup = _blowup_scores(s)
    return EvaluationScores(
        rmse=rmse,
        rmse_per_trajectory=rmse_rows,
        acc=acc,
        acc_per_trajectory=acc_rows,
        valid_time=valid,
        wavenumbers=sums["wavenumbers"],
        spectrum=spectrum,
        wall_time=np.array([sums["wall"][m] for m in names]),
        **invariants,
        **blowup,
    )


def _rollout_scores(s: EvaluationSettings) -> dict[str, Any]:
    """The batch loop: per-model sums, per-trajectory rows, diagnostics and wall times.

    Returns a dict of per-model accumulators: ``mse_sum``, ``acc_sum`` ``(T, C)``,
    ``spec_sum`` ``(L, C, K)``, ``mse_traj``, ``acc_traj`` (lists of ``(n, T, C)`` per
    batch), ``diag_series`` (lists of dicts of ``(n, T)`` per batch), ``wall`` (seconds),
    and ``wavenumbers`` ``(K,)``.
    """
    truth_np, mesh, grid = s.truth, s.mesh, s.grid
    num_traj, num_frames = truth_np.shape[:2]
    names = s.model_names

    # Accumulators (float64 on the host).
    wavenumbers = metrics.spectrum_wavenumbers(grid)
    shape_tc = (num_frames, len(s.variables))
    mse_sum = {m: np.zeros(shape_tc) for m in names}
    acc_sum = {m: np.zeros(shape_tc) for m in names}
    mse_traj: dict[str, list[np.ndarray]] = {m: [] for m in names}  # (n, T, C) per batch
    acc_traj: dict[str, list[np.ndarray]] = {m: [] for m in names}
    shape_spec = (len(s.spectrum_indices), len(s.variables), wavenumbers.size)
    spec_sum = {m: np.zeros(shape_spec) for m in names}
    diag_series: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in names}
    wall = {m: 0.0 for m in names}
    wall["truth"] = 0.0 if s.solver is not None else math.nan

    dtype = jnp.asarray(truth_np[:1, 0]).dtype
    clim = jnp.asarray(s.climatology, dtype)
    compiled: dict[str, Any] = {}
    placed: dict[str, Any] = {}

    def compile_rollout(m: str, model: Any, init: Array) -> None:
        if m not in compiled:
            placed[m] = model if mesh is None else distributed.replicate(model, mesh)
            compiled[m] = rollout_batch.lower(
                placed[m],
                init,
                num_frames=num_frames,
                steps_per_frame=s.steps_per_frame,
                mesh=mesh,
            ).compile()

    for start, stop in _batches(num_traj, s.batch_size):
        truth_b, weights = _padded(truth_np[start:stop], s.batch_size)
        truth_j = jnp.asarray(truth_b, dtype)
        x0 = truth_j[:, 0]
        if mesh is not None:  # the rollouts' initial states, split over the devices
            x0_run = distributed.shard_batch(np.asarray(truth_b[:, 0], dtype), mesh)
        else:
            x0_run = x0
        w = jnp.asarray(weights, dtype)
        for m, (kind, model) in s.models.items():
            if kind == "truth":
                fc = truth_j
                if s.solver is not None:  # the reference's own cost, timed like the others
                    compile_rollout(m, s.solver, x0_run)
                    _, seconds = _timed(compiled[m], placed[m], x0_run)
                    wall[m] += seconds
            elif kind == "persistence":
                fc = jnp.broadcast_to(x0[:, None], truth_j.shape)
            else:
                init = x0_run if kind == "step" else _resample_jit(x0_run, model.grid.num_points)
                compile_rollout(m, model, init)
                fc, seconds = _timed(compiled[m], placed[m], init)
                wall[m] += seconds
                if kind == "coarse":
                    fc = _resample_jit(fc, grid.num_points)
                if mesh is not None:
                    fc = jnp.asarray(distributed.to_host(fc), dtype)
            mse, acc, spec, mse_rows, acc_rows = _score_batch(
                fc,
                truth_j,
                clim,
                w,
                grid=grid,
                spectrum_indices=s.spectrum_indices,
                centered=s.centered_acc,
            )
            mse_sum[m] += np.asarray(mse, np.float64)
            acc_sum[m] += np.asarray(acc, np.float64)
            spec_sum[m] += np.asarray(spec, np.float64)
            mse_traj[m].append(np.asarray(mse_rows, np.float64)[: stop - start])
            acc_traj[m].append(np.asarray(acc_rows, np.float64)[: stop - start])
            if s.solver is not None:
                diags = _diagnostics_batch(s.solver, fc)
                n_real = stop - start
                diag_series[m].append(
                    {k: np.asarray(v, np.float64)[:n_real] for k, v in diags.items()}
                )
    return {
        "mse_sum": mse_sum,
        "acc_sum": acc_sum,
        "spec_sum": spec_sum,
        "mse_traj": mse_traj,
        "acc_traj": acc_traj,
        "diag_series": diag_series,
        "wall": wall,
        "wavenumbers": wavenumbers,
    }


@partial(jax.jit, static_argnames=("grid", "spectrum_indices", "centered"))
def _score_batch(forecast, truth, climatology, weights, *, grid, spectrum_indices, centered):
    """Weighted sums over the batch of per-state skill (padding rows have weight 0).

    Returns ``(mse_sum (T, C), acc_sum (T, C), spectrum_sum (L, C, K), mse (B, T, C),
    acc (B, T, C))``: the weighted sums and the per-row values they sum.
    """
    nd = grid.ndim
    w = weights.reshape((-1,) + (1,) * 2)

    def wsum(x):  # weight-0 rows must not spread their (possibly NaN) values
        return jnp.sum(jnp.where(w > 0, w * x, 0), axis=0)

    mse = metrics.mean_squared_error(forecast, truth, spatial_ndim=nd)
    acc = metrics.anomaly_correlation(
        forecast, truth, climatology, spatial_ndim=nd, centered=centered
    )
    _, spec = metrics.power_spectrum(forecast[:, jnp.asarray(spectrum_indices)], grid)
    w_spec = weights.reshape((-1,) + (1,) * 3)
    spec_sum = jnp.sum(jnp.where(w_spec > 0, w_spec * spec, 0), axis=0)
    return wsum(mse), wsum(acc), spec_sum, mse, acc


@jax.jit
def _diagnostics_batch(solver, frames):
    """``solver.diagnostics`` over ``(B, T, C, *spatial)`` -> dict of ``(B, T)``."""
    return jax.vmap(jax.vmap(solver.diagnostics))(frames)


@partial(jax.jit, static_argnames=("num_points",))
def _resample_jit(field, num_points):
    """:func:`surrogate.metrics.resample` of ``(..., *spatial)`` onto ``num_points``."""
    return metrics.resample(field, num_points)


def _batches(num: int, batch_size: int):
    """``(start, stop)`` of consecutive batches of at most ``batch_size`` of ``num`` rows."""
    for start in range(0, num, batch_size):
        yield start, min(start + batch_size, num)


def _padded(x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the leading axis to ``batch_size`` by repeating row 0; weights mark real rows."""
    n = x.shape[0]
    weights = np.zeros(batch_size)
    weights[:n] = 1.0
    if n == batch_size:
        return x, weights
    pad = np.repeat(x[:1], batch_size - n, axis=0)
    return np.concatenate([x, pad], axis=0), weights


def _timed(compiled, *args) -> tuple[Array, float]:
    """``compiled(*args)`` and the seconds it took, waiting for the result."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - t0


def _invariant_scores(diag_series, names) -> dict[str, Any]:
    """Drift of each diagnostic along the forecast, and its error against the truth's (pure).

    Returns the invariant fields of :class:`EvaluationScores`.
    """
    series = {
        m: {k: np.concatenate([b[k] for b in diag_series[m]], axis=0) for k in diag_series[m][0]}
        for m in names
    }
    invariants = list(series["truth"])
    truth_s = series["truth"]
    drift, error, scales = [], [], []
    for k in invariants:
        scale = float(np.sqrt(np.mean(truth_s[k][:, 0] ** 2)))
        scale = scale if scale > 0 else 1.0
        scales.append(scale)
        drift.append(
            [
                np.mean(
                    np.abs(np.asarray(metrics.invariant_drift(series[m][k], scale=scale))), 0
                ).astype(np.float64)
                for m in names
            ]
        )
        error.append([np.mean(np.abs(series[m][k] - truth_s[k]), axis=0) / scale for m in names])
    return {
        "invariants": tuple(invariants),
        "invariant_drift": np.moveaxis(np.asarray(drift), 0, 1),
        "invariant_error": np.moveaxis(np.asarray(error), 0, 1),
        "invariant_scale": np.asarray(scales),
    }


def _blowup_scores(s: EvaluationSettings) -> dict[str, Any]:
    """Blow-up time (earliest over trajectories) and fraction of runs that blew up.

    Returns the blow-up fields of :class:`EvaluationScores`.
    """
    truth_np, mesh, batch_size = s.truth, s.mesh, s.batch_size
    dtype = jnp.asarray(truth_np[:1, 0]).dtype
    num_steps, threshold = s.long_rollout_steps, float(s.blowup_threshold)
    nd = s.grid.ndim
    reference = np.max(np.abs(truth_np), axis=(0, 1, *range(3, truth_np.ndim)))
    ref = jnp.asarray(reference, dtype)
    if mesh is not None:
        ref = distributed.replicate(ref, mesh)
    num_traj = truth_np.shape[0]
    times, fractions = [], []
    for kind, model in s.models.values():
        if kind == "truth":
            times.append(math.nan)
            fractions.append(math.nan)
            continue
        if kind == "persistence":
            times.append(math.inf)
            fractions.append(0.0)
            continue
        first = []
        if mesh is not None:
            model = distributed.replicate(model, mesh)
        for start, stop in _batches(num_traj, batch_size):
            x0_np, _ = _padded(truth_np[start:stop, 0], batch_size)
            if mesh is None:
                x0 = jnp.asarray(x0_np, dtype)
            else:
                x0 = distributed.shard_batch(np.asarray(x0_np, dtype), mesh)
            if kind == "coarse":
                x0 = _resample_jit(x0, model.grid.num_points)
            steps = first_blowup_step(
                model, x0, ref, threshold, num_steps=num_steps, spatial_ndim=nd, mesh=mesh
            )
            first.append(distributed.to_host(steps)[: stop - start])
        first_all = np.concatenate(first)
        bad = first_all >= 0
        times.append(float(first_all[bad].min() * s.dt) if bad.any() else math.inf)
        fractions.append(float(bad.mean()))
    return {"blowup_time": np.asarray(times), "blowup_fraction": np.asarray(fractions)}


# ---- 3. the table ----------------------------------------------------------------------
def evaluation_dataset(settings: EvaluationSettings, scores: EvaluationScores) -> xr.Dataset:
    """The evaluation table: the scores with coordinates, CF metadata and attributes (pure).

    Score arrays are laid out ``(model, [trajectory,] variable, lead_time)``; every
    variable and coordinate carries ``units`` and ``long_name``, or, where the physical
    variables have different units, a ``comment`` pointing at ``variable_units``.

    Args:
        settings: from :func:`check_evaluation_inputs`.
        scores: from :func:`score_models` on the same settings.

    Returns:
        The :class:`xarray.Dataset` of :func:`evaluate` (see the module docstring).

    Raises:
        ValueError: ``scores`` whose shapes do not fit ``settings`` (raised by xarray,
            naming the conflicting dimension).
    """
    s, sc = settings, scores
    names, variables, lead = s.model_names, s.variables, s.lead_times
    stepper, grid = s.stepper, s.grid
    time_units, units, long_names = stepper.time_units, stepper.units, stepper.long_names
    length_units = getattr(grid, "length_units", "1")
    k_units = "1" if length_units == "1" else f"{length_units}-1"
    var_units = [str(units.get(v, "1")) for v in variables]
    # One CF ``units`` where every variable shares it; else the per-variable units are in
    # the coordinate variable_units and the attribute is left out (no UDUNITS string).
    same = len(set(var_units)) == 1
    per_var = {"units": var_units[0]} if same else {"comment": "units: see variable_units"}
    u2 = "1" if var_units[0] == "1" else f"({var_units[0]})^2"
    per_var_sq = {"units": u2} if same else {"comment": "units: squared units of variable_units"}

    coords = {
        "model": np.array(names, dtype=object),
        "variable": np.array(variables, dtype=object),
        "lead_time": ("lead_time", lead, {"units": time_units, "long_name": "forecast lead time"}),
        "lead_time_sel": (
            "lead_time_sel",
            lead[list(s.spectrum_indices)],
            {"units": time_units, "long_name": "lead times at which spectra are stored"},
        ),
        "wavenumber": (
            "wavenumber",
            sc.wavenumbers,
            {"units": k_units, "long_name": "angular wavenumber (shell centre)"},
        ),
        "variable_units": ("variable", np.array(var_units, dtype=object)),
        "variable_long_name": (
            "variable",
            np.array([str(long_names.get(v, v)) for v in variables], dtype=object),
        ),
        "trajectory": (
            "trajectory",
            s.trajectory_ids.astype(np.int64),
            {"long_name": "index of the scored truth trajectory in its dataset", "units": "1"},
        ),
    }
    data_vars: dict[str, Any] = {
        "rmse": (
            ("model", "variable", "lead_time"),
            np.moveaxis(sc.rmse, 1, 2),
            {"long_name": "root-mean-square error"} | per_var,
        ),
        "rmse_per_trajectory": (
            ("model", "trajectory", "variable", "lead_time"),
            np.moveaxis(sc.rmse_per_trajectory, 2, 3),
            {
                "long_name": "root-mean-square error of each trajectory (spatial mean); "
                "rmse = sqrt(mean over trajectories of its square)",
            }
            | per_var,
        ),
        "acc_per_trajectory": (
            ("model", "trajectory", "variable", "lead_time"),
            np.moveaxis(sc.acc_per_trajectory, 2, 3),
            {
                "units": "1",
                "long_name": "anomaly correlation of each trajectory; acc = its mean",
            },
        ),
        "nrmse": (
            ("model", "variable", "lead_time"),
            np.moveaxis(sc.rmse, 1, 2) / s.state_std[None, :, None],
            {"units": "1", "long_name": "RMSE / climatological standard deviation"},
        ),
        "acc": (
            ("model", "variable", "lead_time"),
            np.moveaxis(sc.acc, 1, 2),
            {"units": "1", "long_name": "anomaly correlation coefficient"},
        ),
        "valid_time": (
            ("model", "variable"),
            sc.valid_time,
            {
                "units": time_units,
                "long_name": f"lead time at which ACC drops below {s.acc_threshold} (inf: never)",
            },
        ),
        "spectrum": (
            ("model", "variable", "lead_time_sel", "wavenumber"),
            np.moveaxis(sc.spectrum, 1, 2),
            {"long_name": "power per wavenumber shell, sum over shells = mean square"} | per_var_sq,
        ),
        "wall_time": (
            ("model",),
            sc.wall_time,
            {
                "units": "s",
                "long_name": "rollout wall time, compilation excluded (truth: the solver "
                "re-run from the same initial states; NaN without a solver)",
            },
        ),
        "climatological_std": (
            ("variable",),
            s.state_std,
            {"long_name": "climatological standard deviation"} | per_var,
        ),
    }
    if sc.invariants:
        data_vars.update(_invariant_variables(sc))
    if sc.blowup_time is not None:
        data_vars.update(
            _blowup_variables(sc, s.long_rollout_steps, float(s.blowup_threshold), time_units)
        )
    return xr.Dataset(data_vars, coords=coords, attrs=_evaluation_attrs(s))


def _invariant_variables(sc: EvaluationScores) -> dict[str, Any]:
    """The ``invariant_*`` variables and the ``invariant`` coordinate, with metadata."""
    dims = ("model", "invariant", "lead_time")
    return {
        "invariant_drift": (
            dims,
            sc.invariant_drift,
            {
                "units": "1",
                "long_name": "mean_n |s(t) - s(0)| / invariant_scale (the solver's diagnostics)",
            },
        ),
        "invariant_error": (
            dims,
            sc.invariant_error,
            {"units": "1", "long_name": "mean_n |s(t) - s_truth(t)| / invariant_scale"},
        ),
        "invariant_scale": (
            ("invariant",),
            sc.invariant_scale,
            {
                "long_name": "RMS over trajectories of the truth's initial value (1 if zero)",
                "comment": "in the units of each diagnostic",
            },
        ),
        "invariant": np.array(list(sc.invariants), dtype=object),
    }


def _blowup_variables(
    sc: EvaluationScores, num_steps: int, threshold: float, time_units: str
) -> dict[str, Any]:
    """The ``blowup_*`` variables, with metadata naming the rollout length and criterion."""
    return {
        "blowup_time": (
            ("model",),
            sc.blowup_time,
            {
                "units": time_units,
                "long_name": f"earliest blow-up over trajectories in a {num_steps}-step rollout "
                f"(non-finite or max|u| > {threshold} x the truth's max|u|); inf: none, "
                "nan: not run",
            },
        ),
        "blowup_fraction": (
            ("model",),
            sc.blowup_fraction,
            {"units": "1", "long_name": "fraction of long rollouts that blew up"},
        ),
    }


def _evaluation_attrs(s: EvaluationSettings) -> dict[str, Any]:
    """Global attributes: conventions, settings, metric definitions, model descriptions."""
    grid = s.grid
    attrs = {
        "Conventions": "CF-1.10",
        "history": "written by surrogate.evaluate.evaluate",
        "title": "surrogate evaluation",
        "stepper_model": s.model_name,
        "dt": s.dt,
        "steps_per_frame": s.steps_per_frame,
        "num_trajectories": s.truth.shape[0],
        "batch_size": s.batch_size,
        "climatology_source": s.climatology_source,
        "acc_definition": ACC_DEFINITION.replace("uncentred", "centred")
        if s.centered_acc
        else ACC_DEFINITION,
        "acc_threshold": float(s.acc_threshold),
        "rmse_definition": "sqrt of the spatial mean squared error averaged over trajectories",
        "blowup_threshold": float(s.blowup_threshold),
        "skipped_baselines": ", ".join(s.skipped_baselines),
        "grid_num_points": list(grid.num_points),
        "grid_domain_length": list(grid.domain_length),
        "grid_axes": ", ".join(grid.axes),
        "time_units": s.stepper.time_units,
    }
    for m, (_, model) in s.models.items():
        if model is not None:
            attrs[f"description_{m}"] = describe_stepper(model)
    if s.coarse_solver is not None:
        attrs["coarse_num_points"] = list(s.coarse_solver.grid.num_points)
    if s.solver is not None:
        attrs["description_solver"] = describe_stepper(s.solver)
    return attrs


# ---- storage ---------------------------------------------------------------------------
def record_provenance(
    ds: xr.Dataset,
    *,
    dataset: str | os.PathLike | None = None,
    split: str | None = None,
    bundle: str | os.PathLike | None = None,
) -> xr.Dataset:
    """Record what an evaluation scored, as global attributes of a copy of ``ds``.

    Attributes: ``dataset_path`` and ``dataset_identity``
    (:func:`datasets.dataset_identity`: changes whenever the dataset's data may have),
    ``dataset_split``, ``bundle_path`` and ``bundle_sha256`` (sha256 of the bundle's
    ``bundle.json``, which itself records the sha256 of every weight file). The scored
    trajectories are the ``trajectory`` coordinate (``evaluate(trajectory_ids=...)``).

    Args:
        ds: an evaluation from :func:`evaluate`.
        dataset: the dataset directory the truth came from (skipped when ``None``).
        split: the split the truth came from.
        bundle: the forecaster bundle directory that was scored.

    Returns:
        ``ds`` with the attributes added.

    Raises:
        FileNotFoundError: ``dataset`` has no manifest, or ``bundle`` no ``bundle.json``.
    """
    from datasets.plumbing import sha256_file

    attrs: dict[str, Any] = {}
    if dataset is not None:
        from datasets import dataset_identity

        attrs["dataset_path"] = str(Path(dataset).absolute())
        attrs["dataset_identity"] = dataset_identity(dataset)
    if split is not None:
        attrs["dataset_split"] = str(split)
    if bundle is not None:
        meta = Path(bundle) / "bundle.json"
        if not meta.is_file():
            raise FileNotFoundError(f"record_provenance: {bundle} has no bundle.json")
        attrs["bundle_path"] = str(Path(bundle).absolute())
        attrs["bundle_sha256"] = sha256_file(meta)
    return ds.assign_attrs(attrs)


def save_evaluation(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write an evaluation to netCDF atomically (temporary file, then rename).

    Coordinate variables are written without ``_FillValue`` (CF-1.10 section 2.5.1).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    for name in ds.coords:
        if ds[name].dtype.kind == "f":
            ds[name].encoding["_FillValue"] = None
    from datasets.plumbing import atomic_path

    with atomic_path(path, fsync=False, sync_directory=False) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return path


def load_evaluation(path: str | os.PathLike) -> xr.Dataset:
    """Read an evaluation written by :func:`save_evaluation` fully into memory."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


def summary_table(ds: xr.Dataset, lead_index: int = -1) -> str:
    """A plain-text table of RMSE, ACC, valid time and wall time per model and variable."""
    lines = [f"{'model':<16}{'variable':<10}{'rmse':>12}{'acc':>9}{'valid_time':>12}{'wall_s':>10}"]
    lead = float(ds["lead_time"].values[lead_index])
    for m in ds["model"].values:
        for v in ds["variable"].values:
            sel = dict(model=m, variable=v)
            lines.append(
                f"{m!s:<16}{v!s:<10}"
                f"{float(ds['rmse'].sel(sel).isel(lead_time=lead_index)):>12.4g}"
                f"{float(ds['acc'].sel(sel).isel(lead_time=lead_index)):>9.3f}"
                f"{float(ds['valid_time'].sel(sel)):>12.4g}"
                f"{float(ds['wall_time'].sel(model=m)):>10.3g}"
            )
    return f"skill at lead time {lead:g}\n" + "\n".join(lines)


__all__ = [
    "BASELINES",
    "EvaluationScores",
    "EvaluationSettings",
    "check_evaluation_inputs",
    "coarse_solver_for",
    "describe_stepper",
    "evaluate",
    "evaluation_dataset",
    "first_blowup_step",
    "load_evaluation",
    "rollout_batch",
    "record_provenance",
    "save_evaluation",
    "score_models",
    "summary_table",
    "truth_from_dataset",
]
