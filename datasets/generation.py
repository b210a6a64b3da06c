"""Generate ensembles of solver trajectories into sharded, checksummed CF netCDF files.

Trajectory ``i`` of a dataset with seed ``s`` starts from::

    u_i(-spinup_steps * dt) = solver.initial_condition(fold_in(key(s), i))

is advanced ``spinup_steps`` output intervals (discarded) and then stored for
``num_frames`` frames at times ``0, dt, ..., (num_frames - 1) dt``. Each trajectory
depends only on ``(solver, seed, i)``, so any of them can be regenerated alone
(:func:`regenerate_trajectory`) and shards can be computed in any order, in any process.

With ``store_num_points`` the dataset is *coarse-grained*: the solver runs on its own
(fine) grid and each stored frame is its state projected onto a coarser grid of the same
domain by Fourier truncation (:func:`solvers.resolution.spectral_resample`, the L2
projection), inside the compiled chunk. The layout (grid, coordinates, ``state_shape``)
is the coarse grid; the spec records the fine solver and a ``coarse_graining`` record
``{"filter": "spectral_truncation", "fine_num_points": [...], "num_points": [...]}``.

Shard ``k`` holds trajectories ``[k * trajectories_per_shard, (k + 1) *
trajectories_per_shard)``. Shards are computed in ``vmap`` chunks of ``batch_size``
trajectories by one jitted function (a ``lax.scan`` over time inside), written to a
temporary file, fsynced and renamed; ``manifest.json`` (atomically replaced, at most once a
second and at the end) lists the finished shards with their sha256. Killing the process
at any moment and rerunning the same call resumes: listed shards are kept, the rest are
recomputed, and the result is byte-identical to an uninterrupted run.

The pieces live one idea per module: :mod:`datasets.provenance` (spec, layout, versions,
the solver contract and its rebuild), :mod:`datasets.simulate` (the compiled chunk and
regeneration), :mod:`datasets.shards` (computing and writing a shard),
:mod:`datasets.workers` (this process or spawned workers), :mod:`datasets.resume`
(starting, resuming and finishing the manifest) and :mod:`datasets.multihost` (several
processes under ``jax.distributed``). This module holds :func:`generate` and re-exports
the names imported from it elsewhere.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from datasets import storage
from datasets.manifest import DEFAULT_SPLITS, check_splits, read_manifest, write_manifest
from datasets.multihost import generate_multiprocess
from datasets.plumbing import DATA_AXIS
from datasets.provenance import (
    RUNTIME_KEYS,
    check_solver,
    generation_spec,
    library_versions,
    package_version,
    rebuild_solver,
    solver_layout,
    stored_num_points,
)
from datasets.resume import (
    already_complete,
    check_splits_stored,
    ensure_statistics,
    prepare_manifest,
    record_event,
)
from datasets.simulate import (
    precision_scope,
    regenerate_trajectories,
    regenerate_trajectory,
    simulate_batch,
)
from datasets.workers import run_shards
from solvers.stepper import Stepper

__all__ = [
    "ON_NONFINITE",
    "RUNTIME_KEYS",
    "generate",
    "generation_spec",
    "library_versions",
    "package_version",
    "precision_scope",
    "rebuild_solver",
    "regenerate_trajectories",
    "regenerate_trajectory",
    "simulate_batch",
    "solver_layout",
    "stored_num_points",
]

log = logging.getLogger("datasets")


ON_NONFINITE = ("raise", "skip")


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; the message names the bound it crosses.

    :func:`solvers.base.check_int` with the lower bound, the upper one checked apart so
    that the message reads ``seed must be an int >= 0`` or ``compression_level must be an
    int <= 9`` (matched by users and tests) rather than the whole range.
    """
    from solvers.base import check_int

    value = check_int("datasets.generate", name, value, low)
    if high is not None and value > high:
        raise ValueError(f"datasets.generate: {name} must be an int <= {high}, got {value!r}")
    return value


def _resolve_devices(devices: int | str, workers: int) -> int:
    """Local devices one in-process generation shards its chunks over (1: no sharding)."""
    local = jax.local_device_count()
    if devices == "auto":
        n = local
    else:
        n = _check_int("devices", devices, 1, local)
    # Spawned workers each own a whole process; sharding inside them is not attempted.
    return 1 if workers > 1 else n


def _device_mesh(num_devices: int) -> jax.sharding.Mesh | None:
    if num_devices <= 1:
        return None
    devs = np.asarray(jax.local_devices()[:num_devices], dtype=object)
    return jax.sharding.Mesh(devs, (DATA_AXIS,))


def _resolve_workers(num_workers: int | str) -> int:
    if num_workers == "auto":
        return os.cpu_count() or 1
    return _check_int("num_workers", num_workers, 1)


def generate(
    solver: Stepper,
    out_dir: str | os.PathLike,
    *,
    num_trajectories: int,
    num_frames: int,
    seed: int = 0,
    spinup_steps: int = 0,
    trajectories_per_shard: int = 16,
    batch_size: int = 16,
    splits: Mapping[str, float] | None = None,
    num_workers: int | str = 1,
    devices: int | str = "auto",
    on_nonfinite: str = "raise",
    compression_level: int = 0,
    overwrite: bool = False,
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    store_num_points: int | Sequence[int] | None = None,
) -> pathlib.Path:
    """Generate (or resume, or confirm) a sharded trajectory dataset in ``out_dir``.

    Trajectory ``i`` starts from ``solver.initial_condition(fold_in(key(seed), i))``, runs
    ``spinup_steps`` output intervals unrecorded, then ``num_frames`` frames
    ``(T, C, *spatial)`` are stored at times ``0, dt, ..., (T - 1) dt`` (time units of the
    solver). Memory holds at most two shards, whatever ``num_trajectories``.

    Args:
        solver: a :class:`solvers.Solver` (or any object with its metadata contract).
        out_dir: dataset directory, created if needed.
        num_trajectories: ensemble size (>= 1).
        num_frames: stored frames per trajectory (>= 2: training needs pairs).
        seed: dataset seed in ``[0, 2**31)``.
        spinup_steps: discarded output intervals before frame 0 (>= 0), to reach the
            attractor.
        trajectories_per_shard: consecutive trajectories per netCDF file.
        batch_size: trajectories per ``vmap`` chunk (changes speed and memory, not bytes).
        splits: ``{name: fraction}`` summing to 1, assigned as contiguous trajectory
            ranges in order; default ``{"train": 0.8, "val": 0.1, "test": 0.1}``.
        num_workers: processes computing shards (``"auto"``: one per CPU core). Workers
            are spawned (never forked after JAX started); the solver is rebuilt in them
            from its class and ``config()``.
        devices: local devices each ``vmap`` chunk is split over, along the trajectory
            axis (``"auto"``: all of ``jax.local_devices()``; an int: the first that
            many). ``batch_size`` is rounded up to a multiple of it. The bytes do not
            depend on it. Ignored (one device each) with ``num_workers > 1``. Under
            ``jax.distributed`` with several processes, every process calls ``generate``
            with the same arguments, computes a disjoint subset of the shards on its own
            devices, and process 0 writes the manifest after a barrier.
        on_nonfinite: ``"raise"`` a :class:`solvers.NonFiniteError` naming the trajectory
            and time, or ``"skip"`` the trajectory and record it in the manifest.
        compression_level: 0 (default: none) or zlib level 1-9 with byte shuffling.
            Measured on chaotic float32 fields: level 1 saves ~17 % of the bytes but
            costs ~60 % of the Kuramoto-Sivashinsky solver time, so it is opt-in.
        overwrite: replace an existing dataset in ``out_dir`` (otherwise a dataset with
            a different spec is refused, naming what differs). A complete, intact
            dataset with the same spec is returned without taking the writer lock or
            writing anything (so it may be read-only); a corrupted shard is recomputed.
        config: the resolved run configuration, stored as provenance (JSON values),
            without :data:`RUNTIME_KEYS` (see :func:`datasets.provenance.provenance_config`).
        progress: show a tqdm bar (trajectories/s, ETA).
        store_num_points: store a coarse-grained dataset: ``None`` (default) stores the
            solver's grid; an int (every axis) or one size per axis ``(..., y, x)``, each
            at most the solver's, stores every frame projected onto that grid by Fourier
            truncation (:func:`solvers.resolution.spectral_resample`). The solver still
            runs on its own grid (NaN/Inf are detected there); the stored grid,
            coordinates and ``state_shape`` are the coarse ones, and the spec, manifest
            and shard attributes record ``coarse_graining = {"filter":
            "spectral_truncation", "fine_num_points": [...], "num_points": [...]}``.

    Returns:
        The dataset directory.

    Raises:
        ValueError: a bad argument (named), or ``on_nonfinite="skip"`` left a split
            without any trajectory (named).
        FileExistsError: ``out_dir`` holds a different dataset and ``overwrite`` is False.
        DatasetLockedError: another process is writing to ``out_dir``.
        NonFiniteError: a trajectory blew up and ``on_nonfinite="raise"``.
    """
    check_solver(solver)
    num_trajectories = _check_int("num_trajectories", num_trajectories, 1)
    num_frames = _check_int("num_frames", num_frames, 2)
    seed = _check_int("seed", seed, 0, 2**31 - 1)
    spinup_steps = _check_int("spinup_steps", spinup_steps, 0)
    tps = _check_int("trajectories_per_shard", trajectories_per_shard, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    workers = _resolve_workers(num_workers)
    mesh = _device_mesh(_resolve_devices(devices, workers))
    if mesh is not None:
        batch_size = -(-batch_size // mesh.size) * mesh.size
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}, got {on_nonfinite!r}")
    compression_level = _check_int("compression_level", compression_level, 0, 9)
    splits = check_splits(DEFAULT_SPLITS if splits is None else splits)
    spec = generation_spec(
        solver,
        num_trajectories=num_trajectories,
        num_frames=num_frames,
        seed=seed,
        spinup_steps=spinup_steps,
        trajectories_per_shard=tps,
        splits=splits,
        on_nonfinite=on_nonfinite,
        compression_level=compression_level,
        config=config,
        store_num_points=store_num_points,
    )
    layout = solver_layout(solver, stored_num_points(spec))
    out = pathlib.Path(out_dir)
    if jax.process_count() == 1 and not overwrite and already_complete(out, spec):
        # Nothing to write: no lock, so a complete read-only dataset can be used.
        log.info("dataset %s is already complete", out)
        if progress:
            print(f"dataset {out} is already complete", file=sys.stderr)
        check_splits_stored(out, read_manifest(out))
        return out
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_count() > 1:
        return generate_multiprocess(out, spec, layout, solver, overwrite, batch_size, mesh)
    with storage.writer_lock(out):
        storage.remove_stale_temporaries(out)
        manifest = prepare_manifest(out, spec, layout, solver, overwrite)
        num_shards = math.ceil(num_trajectories / tps)
        done = {s["index"] for s in manifest["shards"]}
        pending = [k for k in range(num_shards) if k not in done]
        if not pending and manifest["complete"]:
            log.info("dataset %s is already complete", out)
            if progress:
                print(f"dataset {out} is already complete", file=sys.stderr)
        else:
            record_event(manifest, "resumed" if done else "started", batch_size, workers)
            write_manifest(out, manifest)
            run_shards(out, manifest, solver, pending, batch_size, workers, progress, mesh)
            manifest["complete"] = True
            record_event(manifest, "completed", batch_size, workers)
            write_manifest(out, manifest)
        check_splits_stored(out, manifest)
        ensure_statistics(out, manifest)
    return out
