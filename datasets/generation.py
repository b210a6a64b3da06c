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
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import json
import logging
import math
import os
import pathlib
import platform
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datasets import storage
from datasets.manifest import (
    DEFAULT_SPLITS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STATISTICS_NAME,
    ManifestError,
    check_splits,
    describe_differences,
    read_manifest,
    remove_dataset_files,
    split_ranges,
    stored_trajectories,
    trajectory_splits,
    write_manifest,
)
from datasets.storage import normalise

log = logging.getLogger("datasets")

ON_NONFINITE = ("raise", "skip")
# Keys of the run config that change how a dataset is produced but not its bytes: they
# are left out of the stored config so that, e.g., resuming with more workers still
# resumes. ``path`` is where the data go, not what they are.
RUNTIME_KEYS = ("path", "batch_size", "num_workers", "devices", "progress", "overwrite")


def provenance_config(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The run config as stored in the dataset: without :data:`RUNTIME_KEYS`.

    They are dropped at the top level and inside a ``data`` node (the layout of the
    Hydra configs, ``{"solver": ..., "data": ...}``), so the shards' ``config``
    attribute, hence their bytes, do not depend on the directory, the worker count, the
    batch size or the progress bar.
    """
    if config is None:
        return None
    out = {k: v for k, v in dict(config).items() if k not in RUNTIME_KEYS}
    if isinstance(out.get("data"), Mapping):
        out["data"] = {k: v for k, v in out["data"].items() if k not in RUNTIME_KEYS}
    return out


def package_version() -> str:
    """Installed version of this project (``hybrid-surrogates``)."""
    try:
        from importlib.metadata import version

        return version("hybrid-surrogates")
    except Exception:  # noqa: BLE001 - not installed: fall back to the source tree
        import solvers

        return getattr(solvers, "__version__", "unknown")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produce the shard bytes (recorded, not compared)."""
    import netCDF4
    import xarray

    return {
        "jax": jax.__version__,
        "numpy": np.__version__,
        "xarray": xarray.__version__,
        "netCDF4": netCDF4.__version__,
        "netcdf-c": netCDF4.__netcdf4libversion__,
        "hdf5": netCDF4.__hdf5libversion__,
        "python": platform.python_version(),
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ---- solver metadata ----------------------------------------------------------------
_SOLVER_ATTRS = (
    "name",
    "variables",
    "units",
    "long_names",
    "grid",
    "dt",
    "precision",
    "config",
    "initial_condition",
    "advance",
)


def check_solver(solver: Any) -> None:
    """Raise ``TypeError`` naming the first part of the Solver contract ``solver`` lacks.

    The contract: a JAX pytree (it enters ``jax.jit``) whose leaves are arrays or numbers,
    with ``name``, ``variables``, ``units``, ``long_names``, ``grid``, ``dt``,
    ``precision``, ``config()``, ``initial_condition(key)`` and ``advance(state)``; see
    :class:`solvers.Solver`, or wrap a step function with :func:`solvers.from_step`.
    """
    from solvers.base import check_pytree

    check_pytree("datasets.generate", solver)
    for attr in _SOLVER_ATTRS:
        try:
            getattr(solver, attr)
        except AttributeError as e:
            raise TypeError(
                f"datasets.generate: solver must follow the solvers.Solver contract "
                f"({', '.join(_SOLVER_ATTRS)}); {type(solver).__name__} has no attribute "
                f"{attr!r} ({e})"
            ) from None
    for path, leaf in jax.tree_util.tree_leaves_with_path(solver):
        if not isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float | complex):
            raise TypeError(
                f"datasets.generate: solver {type(solver).__name__} has a pytree leaf "
                f"{jax.tree_util.keystr(path)} of type {type(leaf).__name__}, which jit cannot "
                "trace; keep it static (in _static_fields of a solvers.Solver, or "
                "equinox.field(static=True)), or wrap your step with solvers.from_step"
            )
    missing = [v for v in solver.variables if v not in solver.units or v not in solver.long_names]
    if missing:
        raise TypeError(f"solver {solver.name!r}: no units/long_name for variable(s) {missing}")


def solver_layout(solver: Any, store_num_points: Sequence[int] | None = None) -> dict[str, Any]:
    """The on-disk layout a solver implies (variables, units, grid, dt, precision).

    Args:
        solver: the (fine) solver.
        store_num_points: the stored grid of a coarse-grained dataset, one size per axis
            (default: the solver's own grid). Only ``num_points`` of the grid changes.
    """
    grid = solver.grid.to_dict()
    if store_num_points is not None:
        grid["num_points"] = [int(n) for n in store_num_points]
    return normalise(
        {
            "variables": list(solver.variables),
            "units": {v: solver.units[v] for v in solver.variables},
            "long_names": {v: solver.long_names[v] for v in solver.variables},
            "time_units": getattr(solver, "time_units", "1"),
            "grid": grid,
            "dt": float(solver.dt),
            "precision": str(solver.precision),
            "state_shape": [len(solver.variables), *grid["num_points"]],
        }
    )


# Filters a coarse-grained dataset can record; validation refuses any other name.
COARSE_GRAINING_FILTERS = ("spectral_truncation",)


def coarse_graining_record(
    solver: Any, store_num_points: int | Sequence[int] | None
) -> dict[str, Any] | None:
    """The provenance record of storing ``solver``'s states on a coarser grid.

    Args:
        solver: the (fine) solver; its grid is the fine grid.
        store_num_points: ``None`` (store the solver's own grid: no record), an int (the
            same size on every axis) or one size per axis ``(..., y, x)``, each in
            ``[2, n]`` with ``n`` the solver's size on that axis.

    Returns:
        ``{"filter": "spectral_truncation", "fine_num_points": [...], "num_points":
        [...]}``, or ``None``.

    Raises:
        ValueError: ``store_num_points`` is not such an int or sequence (named, with the
            solver's grid).
    """
    if store_num_points is None:
        return None
    fine = [int(n) for n in solver.grid.num_points]

    def is_int(n: Any) -> bool:
        return isinstance(n, int | np.integer) and not isinstance(n, bool)

    if is_int(store_num_points):
        coarse = [int(store_num_points)] * len(fine)  # type: ignore[arg-type]
    elif isinstance(store_num_points, Sequence) and not isinstance(store_num_points, str):
        coarse = [int(n) if is_int(n) else n for n in store_num_points]
    else:
        coarse = []
    if (
        len(coarse) != len(fine)
        or not all(is_int(c) for c in coarse)
        or not all(2 <= c <= f for c, f in zip(coarse, fine, strict=True))
    ):
        raise ValueError(
            f"store_num_points must be an int or {len(fine)} int(s), each from 2 up to the "
            f"solver's grid {fine} (axes {list(solver.grid.axes)}), got {store_num_points!r}"
        )
    return {"filter": "spectral_truncation", "fine_num_points": fine, "num_points": coarse}


def stored_num_points(spec: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The grid a dataset spec stores frames on: its coarse grid, or ``None`` (the solver's).

    Raises:
        ValueError: the spec's ``coarse_graining`` record is malformed or names a filter
            outside :data:`COARSE_GRAINING_FILTERS` (the stored frames cannot be
            reproduced).
    """
    record = spec.get("coarse_graining")
    if record is None:
        return None
    keys = ("filter", "fine_num_points", "num_points")
    if not isinstance(record, Mapping) or any(k not in record for k in keys):
        raise ValueError(f"coarse_graining must be an object with keys {keys}, got {record!r}")
    if record["filter"] not in COARSE_GRAINING_FILTERS:
        raise ValueError(
            f"coarse_graining.filter = {record['filter']!r} is not a known filter "
            f"{COARSE_GRAINING_FILTERS}: the stored frames cannot be reproduced"
        )
    for key in ("fine_num_points", "num_points"):
        points = record[key]
        if not (
            isinstance(points, list)
            and points
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in points)
        ):
            raise ValueError(f"coarse_graining.{key} = {points!r} is not a list of ints >= 2")
    return tuple(record["num_points"])


def solver_class_path(solver: Any) -> str:
    """``"module:QualName"`` of the solver's class (to rebuild unregistered solvers)."""
    cls = type(solver)
    return f"{cls.__module__}:{cls.__qualname__}"


def _warn_if_not_rebuildable(solver: Any, out: pathlib.Path) -> None:
    """Warn, at generation time, when validation elsewhere will not rebuild this solver.

    Validation rebuilds unregistered solvers from ``solver_class`` only inside trusted
    modules (:func:`solvers.trust_module`), and no other process can import a class
    defined in a script (``__main__``).
    """
    import solvers
    from solvers.registry import is_trusted_module

    cls, name = type(solver), getattr(solver, "name", None)
    path = solver_class_path(solver)
    for problem in getattr(solver, "rebuild_problems", lambda: [])():
        log.warning(
            "%s: %s: the dataset cannot be re-simulated from its provenance (validation "
            "rebuilds the solver); move the function into an importable module and trust it "
            "with solvers.trust_module, or validate with datasets.validate(path, "
            "solver=<this solver>)",
            out,
            problem,
        )
    if cls.__module__ in ("__main__", "__mp_main__"):
        log.warning(
            "%s: solver class %s is defined in a script (module __main__): the dataset "
            "cannot be re-validated in another process (python -m datasets.validate, "
            "hs-validate); move the class into an importable module and trust it with "
            "solvers.trust_module, or register it with solvers.register; in this process, "
            "validate with datasets.validate(path, solver=<this solver>)",
            out,
            path,
        )
    elif name in solvers.available() and solvers.get_solver_class(name) is cls:
        return
    elif not is_trusted_module(cls.__module__):
        log.warning(
            "%s: solver class %s is not in a trusted module: validation will refuse to "
            "rebuild it unless solvers.trust_module(%r) (or solvers.register) is called "
            "first in the validating process",
            out,
            path,
            cls.__module__.split(".")[0],
        )


def rebuild_solver(manifest: Mapping[str, Any], source: str | os.PathLike | None = None) -> Any:
    """Build the solver recorded in a manifest: the registry first, else its class path.

    A manifest is data that may come from someone else, so ``solver_class`` is imported
    only from trusted code (:func:`solvers.resolve_trusted`: the project's packages,
    modules trusted with :func:`solvers.trust_module`, registered classes), and must be a
    :class:`solvers.Solver` subclass unless it lives in a user-trusted module.

    Args:
        manifest: the parsed ``manifest.json``.
        source: the manifest file, for messages (default ``"manifest.json"``).

    Raises:
        solvers.UntrustedCodeError: ``solver_class`` names code outside the trusted
            modules; the message names the file, the key and the value, and nothing
            was imported.
        KeyError / TypeError / ValueError: from :func:`solvers.build_solver` when the name
            is registered but the stored config is not accepted.
    """
    import solvers
    from solvers.base import Solver
    from solvers.registry import UntrustedCodeError, is_project_module, resolve_trusted

    name, config = manifest["solver"], dict(manifest["solver_config"])
    if name in solvers.available():
        return solvers.build_solver(name, **config)
    where = f"{source or MANIFEST_NAME}: key 'solver_class'"
    path = manifest.get("solver_class")
    cls = resolve_trusted(path, where=where)  # type: ignore[arg-type]
    if not isinstance(cls, type) or (
        is_project_module(cls.__module__) and not issubclass(cls, Solver)
    ):
        raise UntrustedCodeError(f"{where} = {path!r} is not a solver class")
    return cls(**config)


def _import_class(path: str) -> type:
    """The class ``"module:QualName"`` of a live solver (spawned workers only).

    Never call this on a path read from a file: see :func:`rebuild_solver`.
    """
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """64-bit JAX inside the block exactly when ``precision == "float64"``.

    Pinning the flag both ways makes the computed bytes independent of the caller's
    global JAX setting (and equal to what spawned workers compute).
    """
    with jax.enable_x64(precision == "float64"):
        yield


# ---- the compiled chunk -----------------------------------------------------------
@functools.partial(
    jax.jit, static_argnames=("num_frames", "spinup_steps", "mesh", "store_num_points")
)
def simulate_batch(
    solver: Any,
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

    if mesh is None:
        return rows(solver, key, indices)
    from jax.sharding import PartitionSpec as P

    return jax.shard_map(
        rows,
        mesh=mesh,
        in_specs=(P(), P(), P("data")),
        out_specs=(P("data"), P("data")),
        check_vma=False,
    )(solver, key, indices)


def _dispatch_shard(
    solver: Any,
    spec: Mapping[str, Any],
    start: int,
    stop: int,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
):
    """Start (asynchronously) all chunks of trajectories ``[start, stop)``.

    With ``mesh`` (axis ``"data"``, dividing ``batch_size``) each chunk's trajectory axis
    is split over its devices: every device runs the same per-trajectory program on its
    rows, so the bytes do not depend on the device count.
    """
    key = jax.random.key(spec["seed"])
    store = stored_num_points(spec)
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec

        rows = NamedSharding(mesh, PartitionSpec("data"))
        key = jax.device_put(key, NamedSharding(mesh, PartitionSpec()))
    chunks = []
    for c0 in range(start, stop, batch_size):
        idx = np.arange(c0, min(c0 + batch_size, stop), dtype=np.int32)
        # Pad to batch_size so every chunk has one shape: one compilation per run.
        padded = np.concatenate([idx, np.full(batch_size - idx.size, idx[-1], np.int32)])
        if mesh is not None:
            padded = jax.device_put(padded, rows)
        out = simulate_batch(
            solver,
            key,
            padded,
            num_frames=spec["num_frames"],
            spinup_steps=spec["spinup_steps"],
            mesh=mesh,
            store_num_points=store,
        )
        chunks.append((idx.size, out))
    return chunks


def _collect(chunks) -> tuple[np.ndarray, np.ndarray]:
    frames = np.concatenate([np.asarray(f)[:n] for n, (f, _) in chunks])
    bad = np.concatenate([np.asarray(b)[:n] for n, (_, b) in chunks])
    return frames, bad


def regenerate_trajectories(
    dataset: str | pathlib.Path | Mapping[str, Any],
    indices: Sequence[int],
    *,
    solver: Any = None,
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
        ValueError: the ``coarse_graining`` record names an unknown filter or is malformed.
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
    batch = len(indices) if batch_size is None else int(batch_size)
    key = jax.random.key(spec["seed"])
    store = stored_num_points(spec)
    out = []
    with precision_scope(manifest["layout"]["precision"]):
        solver = rebuild_solver(manifest) if solver is None else solver
        for c0 in range(0, len(indices), batch):
            idx = np.asarray(indices[c0 : c0 + batch], dtype=np.int32)
            padded = np.concatenate([idx, np.full(batch - idx.size, idx[-1], np.int32)])
            frames, _ = simulate_batch(
                solver,
                key,
                padded,
                num_frames=spec["num_frames"],
                spinup_steps=spec["spinup_steps"],
                store_num_points=store,
            )
            out.append(np.asarray(frames)[: idx.size])
    return np.concatenate(out)


def regenerate_trajectory(
    dataset: str | pathlib.Path | Mapping[str, Any], index: int, *, solver: Any = None
) -> np.ndarray:
    """Recompute trajectory ``index`` alone: ``(num_frames, C, *spatial)``.

    See :func:`regenerate_trajectories`; equal, bit for bit, to the stored frames when
    run on the same software stack.
    """
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise IndexError(f"trajectory index must be an int, got {index!r}")
    return regenerate_trajectories(dataset, [index], solver=solver)[0]


# ---- one shard, anywhere ------------------------------------------------------------
def _shard_attrs(spec: Mapping[str, Any], layout: Mapping[str, Any], index: int) -> dict:
    version = spec["package_version"]
    attrs = {
        "Conventions": "CF-1.10",
        "title": f"{spec['solver']} trajectories ({', '.join(layout['variables'])})",
        "source": f"hybrid-surrogates {version}, solver {spec['solver']!r}",
        "history": (
            f"written by datasets.generate (hybrid-surrogates {version}); creation time and "
            f"command are in {MANIFEST_NAME}, kept out of this file so its bytes are "
            "reproducible"
        ),
        "comment": (
            "trajectory i starts from solver.initial_condition(jax.random.fold_in("
            "jax.random.key(seed), i)) and is advanced spinup_steps intervals dt before "
            "frame 0"
        ),
        "solver": spec["solver"],
        "solver_config": storage.canonical_json(spec["solver_config"]),
        "precision": layout["precision"],
        "dt": float(layout["dt"]),
        "seed": int(spec["seed"]),
        "spinup_steps": int(spec["spinup_steps"]),
        "num_trajectories": int(spec["num_trajectories"]),
        "trajectories_per_shard": int(spec["trajectories_per_shard"]),
        "shard_index": int(index),
        "package_version": version,
    }
    if spec.get("coarse_graining") is not None:
        attrs["comment"] += (
            "; each stored frame is the solver state projected onto the stored grid "
            "(see coarse_graining)"
        )
        attrs["coarse_graining"] = storage.canonical_json(spec["coarse_graining"])
    if spec.get("config") is not None:
        attrs["config"] = storage.canonical_json(spec["config"])
    return attrs


def _finish_shard(
    out_dir: pathlib.Path,
    spec: Mapping[str, Any],
    layout: Mapping[str, Any],
    index: int,
    frames: np.ndarray,
    first_bad: np.ndarray,
) -> dict[str, Any]:
    """Apply the non-finite policy and write shard ``index``; return its manifest record.

    With ``on_nonfinite="raise"`` and a bad trajectory nothing is written and the record
    carries ``"nonfinite"`` (the caller raises; worker processes return plain data).
    """
    tps = spec["trajectories_per_shard"]
    start = index * tps
    stop = min(start + tps, spec["num_trajectories"])
    dt, spin = float(layout["dt"]), spec["spinup_steps"]
    bad = [
        {"trajectory": start + r, "frame": int(k) - spin, "time": (int(k) - spin) * dt}
        for r, k in enumerate(first_bad)
        if k >= 0
    ]
    record: dict[str, Any] = {"index": index, "trajectories": [start, stop], "skipped": bad}
    if bad and spec["on_nonfinite"] == "raise":
        record["nonfinite"] = bad
        return record
    keep = np.asarray([k < 0 for k in first_bad], dtype=bool)
    ids = np.arange(start, stop)[keep]
    record.update(
        storage.write_shard_file(
            out_dir,
            index,
            frames[keep],
            ids,
            layout=layout,
            attrs=_shard_attrs(spec, layout, index),
            compression_level=spec.get("compression_level", 0),
            splits=trajectory_splits(split_ranges(spec["num_trajectories"], spec["splits"]), ids),
        )
    )
    return record


def _raise_nonfinite(bad: list[dict[str, Any]]) -> None:
    from solvers.rollout import NonFiniteError

    first = min(bad, key=lambda b: b["trajectory"])
    detail = (
        f"during spin-up, {-first['frame']} output interval(s) before frame 0"
        if first["frame"] < 0
        else "pass on_nonfinite='skip' to drop such trajectories and record them"
    )
    raise NonFiniteError(first["trajectory"], first["frame"], first["time"], detail)


# ---- producing shards, in this process or in workers -------------------------------------
def _produce(
    out_dir: pathlib.Path,
    spec: Mapping[str, Any],
    layout: Mapping[str, Any],
    solver: Any,
    shard_ids: Sequence[int],
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
) -> Iterator[dict[str, Any]]:
    """Compute and write shards in order, yielding their manifest records.

    Double buffering: shard ``k + 1`` is dispatched (JAX runs it asynchronously) before
    shard ``k`` is fetched, written and checksummed, so writing overlaps computing.
    """
    tps, n = spec["trajectories_per_shard"], spec["num_trajectories"]
    in_flight = None
    for k in [*shard_ids, None]:
        nxt = None
        if k is not None:
            stop = min(k * tps + tps, n)
            nxt = (k, _dispatch_shard(solver, spec, k * tps, stop, batch_size, mesh))
        if in_flight is not None:
            index, chunks = in_flight
            frames, bad = _collect(chunks)
            yield _finish_shard(out_dir, spec, layout, index, frames, bad)
        in_flight = nxt


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a killed run leaves no orphan writers."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(
    solver_class: str,
    solver_config: dict,
    spec: dict,
    layout: dict,
    out_dir: str,
    shard_ids: list[int],
    batch_size: int,
    results,
) -> None:
    """Entry point of a spawned worker: rebuild the solver, produce its shards.

    Sends plain dicts (records, or ``{"error": ...}``) and finally ``None`` on ``results``;
    exceptions do not cross the process boundary as objects.
    """
    _die_with_parent()
    try:
        jax.config.update("jax_enable_x64", layout["precision"] == "float64")
        solver = _import_class(solver_class)(**solver_config)
        if normalise(solver.config()) != spec["solver_config"]:
            raise RuntimeError(
                f"worker rebuilt {solver_class} with config {solver.config()}, which differs "
                f"from {spec['solver_config']}; config() must return the constructor kwargs"
            )
        for rec in _produce(pathlib.Path(out_dir), spec, layout, solver, shard_ids, batch_size):
            results.put(rec)
            if "nonfinite" in rec:
                break
    except BaseException as e:  # noqa: BLE001 - reported to the parent as text
        import traceback

        results.put({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    finally:
        results.put(None)


# ---- the public entry point ----------------------------------------------------------
def generation_spec(
    solver: Any,
    *,
    num_trajectories: int,
    num_frames: int,
    seed: int,
    spinup_steps: int,
    trajectories_per_shard: int,
    splits: Mapping[str, float],
    on_nonfinite: str,
    compression_level: int,
    config: Mapping[str, Any] | None,
    store_num_points: int | Sequence[int] | None = None,
) -> dict[str, Any]:
    """Everything that determines a dataset's bytes, as plain JSON values.

    A coarse-grained dataset's spec also holds its ``coarse_graining`` record
    (:func:`coarse_graining_record`); other specs lack the key, so datasets written
    before it existed still resume.
    """
    spec = normalise(
        {
            "solver": solver.name,
            "solver_config": solver.config(),
            "num_trajectories": num_trajectories,
            "num_frames": num_frames,
            "seed": seed,
            "spinup_steps": spinup_steps,
            "trajectories_per_shard": trajectories_per_shard,
            "splits": dict(splits),
            "on_nonfinite": on_nonfinite,
            "compression_level": compression_level,
            "config": provenance_config(config),
            "package_version": package_version(),
        }
    )
    record = coarse_graining_record(solver, store_num_points)
    if record is not None:
        spec["coarse_graining"] = normalise(record)
    return spec


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an int <= {maximum}, got {value!r}")
    return int(value)


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
    return jax.sharding.Mesh(devs, ("data",))


def _resolve_workers(num_workers: int | str) -> int:
    if num_workers == "auto":
        return os.cpu_count() or 1
    return _check_int("num_workers", num_workers, 1)


def generate(
    solver: Any,
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
            without :data:`RUNTIME_KEYS` (see :func:`provenance_config`).
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
    if jax.process_count() == 1 and not overwrite and _already_complete(out, spec):
        # Nothing to write: no lock, so a complete read-only dataset can be used.
        log.info("dataset %s is already complete", out)
        if progress:
            print(f"dataset {out} is already complete", file=sys.stderr)
        _check_splits_stored(out, read_manifest(out))
        return out
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_count() > 1:
        return _generate_multiprocess(out, spec, layout, solver, overwrite, batch_size, mesh)
    with storage.writer_lock(out):
        storage.remove_stale_temporaries(out)
        manifest = _prepare(out, spec, layout, solver, overwrite)
        num_shards = math.ceil(num_trajectories / tps)
        done = {s["index"] for s in manifest["shards"]}
        pending = [k for k in range(num_shards) if k not in done]
        if not pending and manifest["complete"]:
            log.info("dataset %s is already complete", out)
            if progress:
                print(f"dataset {out} is already complete", file=sys.stderr)
        else:
            _event(manifest, "resumed" if done else "started", batch_size, workers)
            _write_manifest(out, manifest)
            _run(out, manifest, solver, pending, batch_size, workers, progress, mesh)
            manifest["complete"] = True
            _event(manifest, "completed", batch_size, workers)
            _write_manifest(out, manifest)
        _check_splits_stored(out, manifest)
        _ensure_statistics(out, manifest)
    return out


def _already_complete(out: pathlib.Path, spec: dict) -> bool:
    """Whether ``out`` holds, complete and intact, the dataset ``spec`` describes.

    Read-only: no lock is taken and nothing is written. Every shard's sha256 is checked
    (once per process, see :func:`storage.verify_file`); a corrupted shard makes this
    False, so the locked path recomputes it.

    Raises:
        FileExistsError: ``out`` holds a dataset with another spec.
    """
    if not (out / MANIFEST_NAME).is_file():
        return False
    try:
        manifest = read_manifest(out)
    except (OSError, ManifestError):
        return False
    if not manifest["complete"]:
        return False
    _check_resumable(out, manifest, spec)
    for s in manifest["shards"]:
        try:
            storage.verify_file(out / s["file"], s.get("sha256"), s.get("size"))
        except (OSError, ValueError):
            return False
    return not _needs_statistics(out, manifest)


def _check_splits_stored(out: pathlib.Path, manifest: Mapping[str, Any]) -> None:
    """Refuse a dataset whose non-empty split lost every trajectory to ``skip``.

    Raises:
        ValueError: naming the split and how many of its trajectories were skipped.
    """
    stored = set(stored_trajectories(manifest).tolist())
    for name, (lo, hi) in manifest["splits"].items():
        if hi > lo and not any(lo <= i < hi for i in stored):
            raise ValueError(
                f"split {name!r} of {out} holds no trajectories: all {hi - lo} of them "
                f"(trajectories {lo}..{hi - 1}) blew up and were skipped "
                "(on_nonfinite='skip'); use a stabler solver configuration (smaller dt, "
                "more substeps) or more trajectories"
            )


def _needs_statistics(out: pathlib.Path, manifest: Mapping[str, Any]) -> bool:
    train = manifest["splits"].get("train", [0, 0])
    has_train = any(
        s["stored"] and s["trajectories"][0] < train[1] and train[0] < s["trajectories"][1]
        for s in manifest["shards"]
    )
    return has_train and not (out / STATISTICS_NAME).exists()


def _ensure_statistics(out: pathlib.Path, manifest: dict) -> None:
    if _needs_statistics(out, manifest):
        from datasets.statistics import compute_statistics

        compute_statistics(out)


def _records_name(process: int) -> str:
    return f".records-process{process:05d}.json"


def _adopt_finished_shards(out: pathlib.Path, manifest: dict, record_files) -> None:
    """Add to ``manifest`` the shards an interrupted multi-process run finished.

    A record counts when its shard file exists with the recorded size and sha256 (so a
    file from another configuration, or one cut short, is computed again).
    """
    done = {s["index"] for s in manifest["shards"]}
    for path in record_files:
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for r in records:
            if r.get("index") in done or "nonfinite" in r or "file" not in r:
                continue
            shard = out / r["file"]
            if not shard.is_file() or shard.stat().st_size != r.get("size"):
                continue
            if storage.sha256_file(shard) != r.get("sha256"):
                continue
            manifest["shards"].append(r)
            done.add(r["index"])


def _generate_multiprocess(
    out: pathlib.Path,
    spec: dict,
    layout: dict,
    solver: Any,
    overwrite: bool,
    batch_size: int,
    mesh: jax.sharding.Mesh | None,
) -> pathlib.Path:
    """``generate`` under ``jax.distributed``: disjoint shards per process, one manifest.

    Process 0 takes the lock and prepares the manifest; barrier; process ``p`` of ``P``
    computes pending shards ``p, p + P, ...`` on its local devices, writing each shard and
    then its own record list (atomically, after every shard); barrier; process 0 merges
    the records into the manifest and computes the statistics; barrier. Only process 0
    writes the manifest, so there is no race on it.

    A process that dies makes the others fail (``hs-launch`` stops them at once; without
    it JAX does after its heartbeat timeout). Rerunning resumes: process 0 first adopts
    the shards listed in leftover record files whose bytes still match their checksum,
    so only the shards that were never finished are computed again.
    """
    from jax.experimental import multihost_utils

    pid, nproc = jax.process_index(), jax.process_count()
    tag = f"datasets.generate:{out.resolve()}"
    with contextlib.ExitStack() as stack:
        if pid == 0:
            stack.enter_context(storage.writer_lock(out))
            storage.remove_stale_temporaries(out)
            leftover = sorted(out.glob(".records-process*.json"))
            manifest = _prepare(out, spec, layout, solver, overwrite)
            if not manifest["complete"]:
                _adopt_finished_shards(out, manifest, leftover)
                _event(manifest, "resumed" if manifest["shards"] else "started", batch_size, nproc)
            for p in leftover:
                p.unlink(missing_ok=True)
            _write_manifest(out, manifest)
        multihost_utils.sync_global_devices(f"{tag}:prepared")
        manifest = read_manifest(out)
        num_shards = math.ceil(spec["num_trajectories"] / spec["trajectories_per_shard"])
        done = {s["index"] for s in manifest["shards"]}
        pending = [k for k in range(num_shards) if k not in done]
        mine = pending[pid::nproc]
        records: list[dict] = []
        storage.write_json_atomic(out / _records_name(pid), records)
        with precision_scope(layout["precision"]):
            for record in _produce(out, spec, layout, solver, mine, batch_size, mesh):
                records.append(record)
                storage.write_json_atomic(out / _records_name(pid), records)
        multihost_utils.sync_global_devices(f"{tag}:produced")
        if pid == 0 and pending:
            for p in range(nproc):
                path = out / _records_name(p)
                manifest["shards"].extend(storage.read_json(path))
                path.unlink()
            bad = [b for r in manifest["shards"] if "nonfinite" in r for b in r["nonfinite"]]
            manifest["shards"] = [r for r in manifest["shards"] if "nonfinite" not in r]
            if not bad:
                manifest["complete"] = True
                _event(manifest, "completed", batch_size, nproc)
            _write_manifest(out, manifest)
            if bad:
                multihost_utils.sync_global_devices(f"{tag}:finished")
                _raise_nonfinite(bad)
            _ensure_statistics(out, manifest)
        elif pid == 0:
            for p in range(nproc):
                (out / _records_name(p)).unlink(missing_ok=True)
            _ensure_statistics(out, manifest)
        multihost_utils.sync_global_devices(f"{tag}:finished")
    if any("nonfinite" in r for r in records):
        _raise_nonfinite([b for r in records if "nonfinite" in r for b in r["nonfinite"]])
    _check_splits_stored(out, read_manifest(out))
    return out


def _event(manifest: dict, event: str, batch_size: int, workers: int) -> None:
    manifest["history"].append(
        {
            "event": event,
            "time": _now(),
            "argv": list(sys.argv),
            "host": platform.node(),
            "batch_size": batch_size,
            "num_workers": workers,
        }
    )


_write_manifest = write_manifest
_remove_dataset_files = remove_dataset_files


# Spec keys that record provenance without changing the data values: a complete dataset
# that differs only in these is returned as is, an unfinished one resumes with the
# stored values (so its remaining shards get the same bytes).
_PROVENANCE_KEYS = ("config", "package_version")


def _check_resumable(out: pathlib.Path, manifest: dict, spec: dict) -> None:
    """Raise ``FileExistsError`` unless ``manifest`` can be returned or resumed for ``spec``."""
    stored = manifest["spec"]
    data_diff = describe_differences(
        {k: v for k, v in stored.items() if k not in _PROVENANCE_KEYS},
        {k: v for k, v in spec.items() if k not in _PROVENANCE_KEYS},
    )
    if data_diff:
        raise FileExistsError(
            f"{out} holds a dataset generated with a different configuration:\n  "
            + "\n  ".join(data_diff)
            + "\npass overwrite=True to replace it, or choose another out_dir"
        )
    version = stored.get("package_version"), spec.get("package_version")
    if version[0] != version[1] and not manifest["complete"]:
        raise FileExistsError(
            f"{out} holds an unfinished dataset started by hybrid-surrogates {version[0]}; "
            f"this is {version[1]}, whose shards could differ: resume it with {version[0]}, "
            "or pass overwrite=True"
        )
    for line in describe_differences(
        {k: stored.get(k) for k in _PROVENANCE_KEYS}, {k: spec.get(k) for k in _PROVENANCE_KEYS}
    ):
        log.warning("%s: keeping the stored provenance (%s)", out, line)


def _prepare(
    out: pathlib.Path, spec: dict, layout: dict, solver: Any, overwrite: bool
) -> dict[str, Any]:
    """Load the manifest to resume from, or start a new one (under the lock)."""
    manifest = None
    if (out / MANIFEST_NAME).exists():
        try:
            manifest = read_manifest(out)
        except ManifestError as e:
            if not overwrite:
                raise FileExistsError(f"{e}; pass overwrite=True to replace {out}") from None
        if manifest is not None and not overwrite:
            _check_resumable(out, manifest, spec)
        if overwrite:
            manifest = None
            _remove_dataset_files(out)
    else:
        strays = sorted(out.glob(f"{storage.SHARD_PREFIX}*{storage.SHARD_SUFFIX}"))
        if strays and not overwrite:
            raise FileExistsError(
                f"{out} holds shard files ({strays[0].name}, ...) but no {MANIFEST_NAME}: "
                "not a dataset this package can resume; pass overwrite=True to replace them"
            )
        _remove_dataset_files(out)
    if manifest is not None:
        # Keep the shards that are still there, intact; anything else is recomputed.
        kept = []
        for s in manifest["shards"]:
            try:
                storage.verify_file(out / s["file"], s.get("sha256"), s.get("size"))
                kept.append(s)
            except (OSError, ValueError) as e:
                log.warning("%s: recomputing shard %s (%s)", out, s.get("file"), e)
                manifest["complete"] = False
        manifest["shards"] = kept
        return manifest
    _warn_if_not_rebuildable(solver, out)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec,
        "layout": layout,
        "solver": spec["solver"],
        "solver_class": solver_class_path(solver),
        "solver_config": spec["solver_config"],
        **({"coarse_graining": spec["coarse_graining"]} if "coarse_graining" in spec else {}),
        "splits": split_ranges(spec["num_trajectories"], spec["splits"]),
        "shards": [],
        "skipped": [],
        "complete": False,
        "created": _now(),
        "history": [],
        "package_version": spec["package_version"],
        "libraries": library_versions(),
    }


def _progress_bar(manifest: dict, progress: bool):
    from datasets.progress import progress_bar

    done = sum(s["trajectories"][1] - s["trajectories"][0] for s in manifest["shards"])
    return progress_bar(
        total=manifest["spec"]["num_trajectories"],
        initial=done,
        unit="traj",
        desc=f"generate {manifest['solver']}",
        enabled=progress,
    )


class _Recorder:
    """Adds finished shards to the manifest, rewriting it at most every ``interval`` s.

    Each rewrite costs two fsyncs; for cheap solvers that is a visible share of the run.
    A shard finished but not yet listed when the process dies is simply recomputed on
    resume (same bytes), so throttling loses at most ``interval`` seconds of work.
    """

    def __init__(self, out: pathlib.Path, manifest: dict, bar, interval: float = 1.0) -> None:
        self.out, self.manifest, self.bar, self.interval = out, manifest, bar, interval
        self.last = time.monotonic()
        self.dirty = False

    def add(self, record: dict) -> None:
        if "nonfinite" in record:
            self.flush()
            _raise_nonfinite(record["nonfinite"])
        self.manifest["shards"].append(record)
        self.dirty = True
        if time.monotonic() - self.last >= self.interval:
            self.flush()
        self.bar.update(record["trajectories"][1] - record["trajectories"][0])

    def flush(self) -> None:
        if self.dirty:
            _write_manifest(self.out, self.manifest)
            self.dirty = False
        self.last = time.monotonic()


def _run(
    out: pathlib.Path,
    manifest: dict,
    solver: Any,
    pending: list[int],
    batch_size: int,
    workers: int,
    progress: bool,
    mesh: jax.sharding.Mesh | None = None,
) -> None:
    spec, layout = manifest["spec"], manifest["layout"]
    workers = min(workers, len(pending))
    with _progress_bar(manifest, progress) as bar:
        recorder = _Recorder(out, manifest, bar)
        try:
            if workers <= 1:
                with precision_scope(layout["precision"]):
                    for rec in _produce(out, spec, layout, solver, pending, batch_size, mesh):
                        recorder.add(rec)
            else:
                _run_workers(out, manifest, solver, pending, batch_size, workers, recorder)
        finally:
            recorder.flush()


def _run_workers(out, manifest, solver, pending, batch_size, workers, recorder) -> None:
    """Spawn ``workers`` processes, shards assigned round-robin; record as they finish."""
    import multiprocessing
    import queue as queue_module

    ctx = multiprocessing.get_context("spawn")  # never fork a process that runs JAX
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(
                solver_class_path(solver),  # the live class, never the stored text
                solver.config(),
                manifest["spec"],
                manifest["layout"],
                str(out),
                pending[w::workers],
                batch_size,
                results,
            ),
            name=f"datasets-worker-{w}",
            daemon=True,
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        running = workers
        while running:
            try:
                rec = results.get(timeout=1.0)
            except queue_module.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"worker {dead[0].name} died with exit code {dead[0].exitcode} "
                        "(out of memory?); rerun to resume"
                    ) from None
                continue
            if rec is None:
                running -= 1
            elif "error" in rec:
                raise RuntimeError(f"a worker failed: {rec['error']}\n{rec['traceback']}")
            else:
                recorder.add(rec)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
