"""The compiled simulation of a batch of trajectories, and their regeneration.

Trajectory ``i`` of a dataset with seed ``s`` starts from
``solver.initial_condition(fold_in(key(s), i))``, is advanced ``spinup_steps`` output
intervals (discarded) and then recorded for ``num_frames`` frames. :func:`simulate_batch`
computes a ``vmap`` chunk of them in one jitted program (a ``lax.scan`` over time
inside); since each trajectory depends only on ``(solver, seed, i)``,
:func:`regenerate_trajectories` recomputes any of them from a manifest alone.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from datasets.manifest import read_manifest
from datasets.plumbing import DATA_AXIS, map_rows
from datasets.provenance import rebuild_solver, stored_num_points
from solvers.base import is_int
from solvers.stepper import Stepper


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """64-bit JAX inside the block exactly when ``precision == "float64"``.

    Pinning the flag both ways makes the computed bytes independent of the caller's
    global JAX setting (and equal to what spawned workers compute).
    """
    with jax.enable_x64(precision == "float64"):
        yield


def padded_indices(indices: Any, batch_size: int) -> np.ndarray:
    """``indices`` (int32) padded to ``batch_size`` by repeating the last one.

    Every chunk then has one shape, so :func:`simulate_batch` compiles once per run; the
    caller keeps the first ``len(indices)`` rows.
    """
    idx = np.asarray(indices, dtype=np.int32)
    return np.concatenate([idx, np.full(batch_size - idx.size, idx[-1], np.int32)])


@functools.partial(
    jax.jit, static_argnames=("num_frames", "spinup_steps", "mesh", "store_num_points")
)
def simulate_batch(
    solver: Stepper,
    key: jax.Array,
    indices: jax.Array,
    num_frames: int,
    spinup_steps: int,
    mesh: jax.sharding.Mesh | None = None,
    store_num_points: tuple[int, ...] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Spin up and record a batch of trajectories (pure, one compiled program).

    Args:
        solver: a Solver pytree.
        key: the dataset key ``jax.random.key(seed)``.
        indices: ``(B,)`` int trajectory indices; trajectory ``i`` uses
            ``fold_in(key, i)``.
        num_frames: stored frames ``T`` (static).
        spinup_steps: discarded output intervals before frame 0 (static).
        mesh: optional mesh with axis ``"data"`` dividing ``B``: each device runs the
            per-trajectory program on its rows (``jax.shard_map``; plain sharding
            annotations would let XLA all-gather the batch before every FFT).
        store_num_points: the coarse grid the frames are projected onto
            (:func:`solvers.resolution.spectral_resample`, static); ``None`` keeps the
            solver's grid. The fine frames stay on the device; NaN/Inf are detected on
            them, before the projection.

    Returns:
        ``frames (B, T, C, *spatial)`` in the solver precision (``spatial`` the stored
        grid) and ``first_bad (B,)``:
        the index, counted in output intervals from the initial condition, of the first
        state holding a NaN/Inf (``-1`` if none). Index ``k`` is stored frame
        ``k - spinup_steps`` (negative: during spin-up).
    """
    from solvers.resolution import spectral_resample
    from solvers.rollout import first_nonfinite_frame, rollout

    def one(solver, key, i):
        state = solver.initial_condition(jax.random.fold_in(key, i))
        bad = jnp.where(jnp.all(jnp.isfinite(state)), -1, 0)
        if spinup_steps:

            def body(carry, k):
                s, b = carry
                s = solver.advance(s)
                b = jnp.where((b < 0) & ~jnp.all(jnp.isfinite(s)), k, b)
                return (s, b), None

            (state, bad), _ = jax.lax.scan(body, (state, bad), jnp.arange(1, spinup_steps + 1))
        frames = rollout(solver, state, num_frames - 1)
        f = first_nonfinite_frame(frames)
        bad = jnp.where(bad >= 0, bad, jnp.where(f >= 0, f + spinup_steps, -1))
        if store_num_points is not None:
            frames = spectral_resample(frames, store_num_points)
        return frames, bad

    def rows(solver, key, idx):
        return jax.vmap(one, in_axes=(None, None, 0))(solver, key, idx)

    rows_spec = P(DATA_AXIS)
    return map_rows(rows, mesh, (P(), P(), rows_spec), (rows_spec, rows_spec))(solver, key, indices)


def regenerate_trajectories(
    dataset: str | pathlib.Path | Mapping[str, Any],
    indices: Sequence[int],
    *,
    solver: Stepper = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Recompute trajectories of a dataset from its recorded provenance.

    Args:
        dataset: a dataset directory, its ``manifest.json``, or a loaded manifest.
        indices: global trajectory indices in ``[0, num_trajectories)``.
        solver: the solver to use (default: rebuilt from the manifest); a coarse-grained
            dataset's fine solver, whose frames are projected as recorded.
        batch_size: ``vmap`` chunk size (default: all indices in one chunk). Results do
            not depend on it (each trajectory is computed independently).

    Returns:
        ``(len(indices), num_frames, C, *spatial)`` in the stored precision, on the
        stored grid.

    Raises:
        IndexError: an index out of range.
        ValueError: the ``coarse_graining`` record names an unknown filter or is malformed,
            ``indices`` is empty, or ``batch_size`` is not an int >= 1.
    """
    manifest = dataset if isinstance(dataset, Mapping) else read_manifest(dataset)
    spec = manifest["spec"]
    n = spec["num_trajectories"]
    indices = [int(i) for i in indices]
    for i in indices:
        if not 0 <= i < n:
            raise IndexError(f"trajectory index must be in [0, {n}), got {i}")
    if not indices:
        raise ValueError("indices is empty")
    if batch_size is None:
        batch = len(indices)
    else:
        from solvers.base import check_int

        batch = check_int("regenerate_trajectories", "batch_size", batch_size, 1)
    key = jax.random.key(spec["seed"])
    store = stored_num_points(spec)
    out = []
    with precision_scope(manifest["layout"]["precision"]):
        solver = rebuild_solver(manifest) if solver is None else solver
        for c0 in range(0, len(indices), batch):
            idx = indices[c0 : c0 + batch]
            frames, _ = simulate_batch(
                solver,
                key,
                padded_indices(idx, batch),
                num_frames=spec["num_frames"],
                spinup_steps=spec["spinup_steps"],
                store_num_points=store,
            )
            out.append(np.asarray(frames)[: len(idx)])
    return np.concatenate(out)


def regenerate_trajectory(
    dataset: str | pathlib.Path | Mapping[str, Any], index: int, *, solver: Stepper = None
) -> np.ndarray:
    """Recompute trajectory ``index`` alone: ``(num_frames, C, *spatial)``.

    See :func:`regenerate_trajectories`; equal, bit for bit, to the stored frames when
    run on the same software stack.
    """
    if not is_int(index):
        raise IndexError(f"trajectory index must be an int, got {index!r}")
    return regenerate_trajectories(dataset, [index], solver=solver)[0]
