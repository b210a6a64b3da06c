"""Bring your own data: trajectories from elsewhere into the project's dataset format.

:func:`from_arrays` takes a numpy (or JAX) array ``(num_trajectories, num_frames,
num_variables, *spatial)``, :func:`from_xarray` an ``xarray.Dataset`` (e.g.
``xr.open_dataset("kdv.nc")``) with a trajectory dimension, a time dimension and spatial
dimensions named like the grid axes. Both write the same directory
:func:`datasets.generate` writes: CF netCDF shards through the one shard writer
(:func:`datasets.storage.write_shard_file`), a ``manifest.json`` with each shard's sha256
and size, and the training-split ``statistics.nc``; so :class:`~datasets.WindowLoader`,
:func:`~datasets.open_dataset`, :func:`~datasets.compute_statistics`,
:func:`~datasets.validate` and :func:`surrogate.train.train` work unchanged.

The provenance says where the data came from and that no solver is known: the manifest's
``solver`` is ``null`` and its ``spec.source`` (also :func:`datasets.dataset_info`'s
``source``) is ``{"kind": "arrays" | "xarray", "function": ..., "description": ...,
"origin": ..., "attrs": ...}``; ``seed`` and ``spinup_steps`` are ``null``. Validation runs
every check that needs no solver and reports the re-simulation as skipped.

Trajectories are stored in the order given, numbered ``0 .. N-1``; splits are contiguous
ranges of that order (as for generated data), so put the trajectories of each split
together, in the order of ``splits``.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import pathlib
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from datasets import plumbing, storage
from datasets.loading import NonFiniteDataError, find_nonfinite
from datasets.manifest import (
    DEFAULT_SPLITS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    check_splits,
    read_manifest,
    remove_dataset_files,
    split_ranges,
    trajectory_splits,
    write_manifest,
)
from datasets.storage import normalise

log = logging.getLogger("datasets")

PRECISIONS = ("float32", "float64")
# Relative deviation from uniform spacing accepted in a coordinate (time or space): float32
# coordinates written as i * d carry ~1e-7 relative error; 1e-5 leaves margin for that and
# flags truly non-uniform axes.
SPACING_RTOL = 1e-5


# ---- argument checks ---------------------------------------------------------------------
def _check_names(owner: str, variables: Any, reserved: Sequence[str]) -> tuple[str, ...]:
    if isinstance(variables, str) or not isinstance(variables, Sequence) or not variables:
        raise ValueError(
            f"{owner}: variables must be a non-empty sequence of names, e.g. ('u',), "
            f"got {variables!r}"
        )
    names = tuple(variables)
    for v in names:
        if not isinstance(v, str) or not v or v.strip() != v or "/" in v:
            raise ValueError(
                f"{owner}: variables must be non-empty strings without '/' or surrounding "
                f"spaces, got {v!r}"
            )
        if v in reserved:
            raise ValueError(
                f"{owner}: variable name {v!r} collides with a dimension of the dataset "
                f"{list(reserved)}; rename it"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}: variables must be unique, got {list(names)}")
    return names


def _check_text_map(
    owner: str, key: str, given: Mapping[str, Any] | None, variables: Sequence[str], hint: str
) -> dict[str, str]:
    """``{variable: non-empty string}`` for every variable, no other keys."""
    if given is None or not isinstance(given, Mapping):
        raise ValueError(
            f"{owner}: {key} must be a mapping variable -> string for {list(variables)} "
            f"({hint}), got {given!r}"
        )
    missing = [v for v in variables if v not in given]
    if missing:
        raise ValueError(
            f"{owner}: {key} has no entry for variable(s) {missing}; give one for each of "
            f"{list(variables)} ({hint})"
        )
    extra = sorted(set(given) - set(variables))
    if extra:
        raise ValueError(f"{owner}: {key} names {extra}, which are not in variables")
    out = {}
    for v in variables:
        if not isinstance(given[v], str) or not given[v].strip():
            raise ValueError(f"{owner}: {key}[{v!r}] must be a non-empty string, got {given[v]!r}")
        out[v] = given[v]
    return out


def _check_dt(owner: str, dt: Any) -> float:
    if (
        isinstance(dt, bool)
        or not isinstance(dt, int | float | np.integer | np.floating)
        or not math.isfinite(dt)
        or dt <= 0
    ):
        raise ValueError(
            f"{owner}: dt (time between stored frames) must be a finite number > 0, got {dt!r}"
        )
    return float(dt)


def _check_grid(owner: str, grid: Any) -> dict[str, Any]:
    """``Grid.to_dict()`` of a :class:`solvers.grid.Grid` or of a dict like it."""
    from solvers.grid import Grid

    if isinstance(grid, Grid):
        return normalise(grid.to_dict())
    if not isinstance(grid, Mapping):
        raise ValueError(
            f"{owner}: grid must be a solvers.grid.Grid or a dict like Grid.to_dict() "
            f"(num_points, domain_length, axes[, length_units, long_names]), got {grid!r}"
        )
    try:
        return normalise(Grid.from_dict(dict(grid)).to_dict())
    except (TypeError, ValueError) as e:
        raise ValueError(f"{owner}: grid {dict(grid)!r} is not a valid grid: {e}") from None


def _precision(owner: str, what: str, dtype: np.dtype) -> str:
    if dtype.name not in PRECISIONS:
        raise ValueError(
            f"{owner}: {what} must be float32 or float64, got {dtype}; convert it first, "
            "e.g. data.astype(np.float32)"
        )
    return dtype.name


def _raise_nonfinite(owner: str, what: str, chunk: np.ndarray, first: int, variables) -> None:
    where = find_nonfinite(chunk)
    if where is not None:
        r, f, c = where
        raise NonFiniteDataError(
            f"{owner}: {what} holds NaN/Inf at trajectory {first + r}, frame {f}, variable "
            f"{variables[c]!r}; drop or repair that trajectory before importing"
        )


# ---- the writer ---------------------------------------------------------------------------
def _layout(variables, units, long_names, time_units, grid, dt, precision) -> dict[str, Any]:
    return normalise(
        {
            "variables": list(variables),
            "units": dict(units),
            "long_names": dict(long_names),
            "time_units": time_units,
            "grid": grid,
            "dt": dt,
            "precision": precision,
            "state_shape": [len(variables), *grid["num_points"]],
        }
    )


def _shard_attrs(spec: Mapping[str, Any], layout: Mapping[str, Any], index: int) -> dict:
    version, source = spec["package_version"], spec["source"]
    origin = source.get("origin") or source.get("description") or "in-memory data"
    return {
        "Conventions": "CF-1.10",
        "title": f"imported trajectories ({', '.join(layout['variables'])})",
        "source": (
            f"imported with datasets.{source['function']} (hybrid-surrogates {version}) from "
            f"{origin}; no solver is known"
        ),
        "history": (
            f"written by datasets.{source['function']} (hybrid-surrogates {version}); "
            f"creation time and command are in {MANIFEST_NAME}, kept out of this file so its "
            "bytes are reproducible"
        ),
        "comment": "trajectories produced outside this package; see provenance_source",
        "provenance_source": plumbing.canonical_json(source),
        "precision": layout["precision"],
        "dt": float(layout["dt"]),
        "num_trajectories": int(spec["num_trajectories"]),
        "trajectories_per_shard": int(spec["trajectories_per_shard"]),
        "shard_index": int(index),
        "package_version": version,
    }


def _write_dataset(
    owner: str,
    path: str | os.PathLike,
    read: Callable[[int, int], np.ndarray],
    *,
    num_trajectories: int,
    num_frames: int,
    layout: dict[str, Any],
    source: dict[str, Any],
    splits: Mapping[str, float] | None,
    trajectories_per_shard: int,
    compression_level: int,
    overwrite: bool,
) -> pathlib.Path:
    """Write shards ``read(lo, hi) -> (hi - lo, T, C, *spatial)``, the manifest, statistics."""
    from datasets.provenance import library_versions, package_version
    from datasets.statistics import compute_statistics
    from solvers.base import check_int

    tps = check_int(owner, "trajectories_per_shard", trajectories_per_shard, 1)
    level = check_int(owner, "compression_level", compression_level, 0, 9)
    try:
        fractions = check_splits(DEFAULT_SPLITS if splits is None else splits)
    except ValueError as e:
        raise ValueError(f"{owner}: {e}") from None
    spec = normalise(
        {
            "solver": None,
            "solver_config": {},
            "source": source,
            "num_trajectories": num_trajectories,
            "num_frames": num_frames,
            "seed": None,
            "spinup_steps": None,
            "trajectories_per_shard": tps,
            "splits": fractions,
            "on_nonfinite": "raise",
            "compression_level": level,
            "config": None,
            "package_version": package_version(),
        }
    )
    ranges = split_ranges(num_trajectories, fractions)
    for name, (lo, hi) in ranges.items():
        if hi == lo and fractions[name] > 0:
            log.warning(
                "%s: split %r gets no trajectory (%g of %d); use more trajectories or "
                "another fraction",
                owner,
                name,
                fractions[name],
                num_trajectories,
            )
    out = pathlib.Path(path)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{owner}: path {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    with storage.writer_lock(out):
        storage.remove_stale_temporaries(out)
        strays = sorted(out.glob(f"{storage.SHARD_PREFIX}*{storage.SHARD_SUFFIX}"))
        if not overwrite and ((out / MANIFEST_NAME).exists() or strays):
            what = MANIFEST_NAME if (out / MANIFEST_NAME).exists() else strays[0].name
            raise FileExistsError(
                f"{owner}: {out} already holds dataset files ({what}); pass overwrite=True "
                "to replace them, or choose another path"
            )
        remove_dataset_files(out)
        shards = []
        try:
            for k, lo in enumerate(range(0, num_trajectories, tps)):
                hi = min(lo + tps, num_trajectories)
                record = {"index": k, "trajectories": [lo, hi], "skipped": []}
                record.update(
                    storage.write_shard_file(
                        out,
                        k,
                        read(lo, hi),
                        np.arange(lo, hi),
                        layout=layout,
                        attrs=_shard_attrs(spec, layout, k),
                        compression_level=level,
                        splits=trajectory_splits(ranges, np.arange(lo, hi)),
                    )
                )
                shards.append(record)
        except BaseException:
            remove_dataset_files(out)  # no half-written dataset (e.g. NaN in a later shard)
            raise
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": spec,
            "layout": layout,
            "solver": None,
            "solver_class": None,
            "solver_config": {},
            "splits": ranges,
            "shards": shards,
            "skipped": [],
            "complete": True,
            "created": now,
            "history": [
                {
                    "event": "imported",
                    "function": f"datasets.{source['function']}",
                    "time": now,
                    "argv": list(sys.argv),
                    "host": platform.node(),
                }
            ],
            "package_version": spec["package_version"],
            "libraries": library_versions(),
        }
        write_manifest(out, manifest)
        train = ranges.get("train", [0, 0])
        if train[1] > train[0]:
            compute_statistics(out)
    read_manifest(out)  # the written manifest passes the reader's checks
    return out


# ---- public entry points ------------------------------------------------------------------
def from_arrays(
    path: str | os.PathLike,
    data: Any,
    *,
    variables: Sequence[str],
    units: Mapping[str, str],
    grid: Any,
    dt: float,
    splits: Mapping[str, float] | None = None,
    long_names: Mapping[str, str] | None = None,
    time_units: str = "1",
    trajectories_per_shard: int = 16,
    compression_level: int = 0,
    overwrite: bool = False,
    source: str | None = None,
) -> pathlib.Path:
    """Write in-memory trajectories as a dataset directory (as :func:`datasets.generate`).

    Frame ``t`` of every trajectory is stored at time ``t * dt``; values are stored
    unchanged, in the array's precision.

    Args:
        path: dataset directory to create (or replace with ``overwrite``).
        data: ``(num_trajectories, num_frames, num_variables, *spatial)`` float32 or
            float64 array (numpy, JAX, anything ``np.asarray`` takes): ``N >= 1``
            trajectories of ``T >= 2`` frames; channel ``c`` is ``variables[c]``; spatial
            axes ordered like ``grid.axes`` (``(..., y, x)``). NaN/Inf are refused.
        variables: the ``C`` variable names, e.g. ``("u",)`` or ``("h", "u", "v")``.
        units: CF unit string per variable, e.g. ``{"u": "m s-1"}`` (``"1"``:
            dimensionless). Every variable needs one.
        grid: a :class:`solvers.grid.Grid` or a dict like ``Grid.to_dict()``
            (``num_points``, ``domain_length``, ``axes``, optional ``length_units``,
            ``long_names``): a uniform periodic grid, point ``j`` at ``j * L / N``; its
            ``num_points`` must equal the spatial shape of ``data``.
        dt: time between consecutive frames, in ``time_units`` (> 0).
        splits: ``{name: fraction}`` summing to 1, assigned as contiguous ranges of
            trajectories in the order given (largest-remainder rounding); default
            ``{"train": 0.8, "val": 0.1, "test": 0.1}``.
        long_names: CF ``long_name`` per variable (default: the variable name).
        time_units: CF unit string of time (default ``"1"``, nondimensional).
        trajectories_per_shard: consecutive trajectories per netCDF shard.
        compression_level: 0 (none) or a zlib level 1-9 with byte shuffling.
        overwrite: replace dataset files already in ``path`` (otherwise refused).
        source: free text recorded as provenance: where the data came from (a code, a
            paper, a file).

    Returns:
        The dataset directory, with ``statistics.nc`` of the ``"train"`` split when it is
        not empty.

    Raises:
        ValueError: a bad argument, naming it, its shape or value and what was expected:
            wrong rank, a variable count that does not match ``variables``, a spatial
            shape that does not match the grid, a non-float dtype, ``dt <= 0``, missing
            units, bad splits.
        NonFiniteDataError: ``data`` holds NaN/Inf (naming trajectory, frame, variable).
        FileExistsError: ``path`` already holds dataset files and ``overwrite`` is False.
        DatasetLockedError: another process is writing to ``path``.
    """
    owner = "from_arrays"
    grid_d = _check_grid(owner, grid)
    axes = tuple(grid_d["axes"])
    names = _check_names(owner, variables, ("trajectory", "time", *axes))
    units_d = _check_text_map(owner, "units", units, names, "CF unit strings; '1' if none")
    long_d = (
        {v: v for v in names}
        if long_names is None
        else _check_text_map(owner, "long_names", long_names, names, "CF long_name strings")
    )
    dt = _check_dt(owner, dt)
    if not isinstance(time_units, str) or not time_units.strip():
        raise ValueError(
            f"{owner}: time_units must be a non-empty CF unit string, got {time_units!r}"
        )
    if source is not None and not isinstance(source, str):
        raise ValueError(f"{owner}: source must be a string (free text) or None, got {source!r}")
    array = np.asarray(data)
    spatial = tuple(grid_d["num_points"])
    expected = f"(num_trajectories, num_frames, {len(names)}, {', '.join(map(str, spatial))})"
    if array.ndim != 3 + len(spatial):
        raise ValueError(
            f"{owner}: data must have rank {3 + len(spatial)}, shape {expected} "
            f"(trajectory, time, variable, *{list(axes)}), got rank {array.ndim}, shape "
            f"{array.shape}"
        )
    if array.shape[2] != len(names):
        raise ValueError(
            f"{owner}: data has {array.shape[2]} variable(s) on axis 2 (shape {array.shape}), "
            f"but variables names {len(names)}: {list(names)}; expected shape {expected}"
        )
    if tuple(array.shape[3:]) != spatial:
        raise ValueError(
            f"{owner}: data has spatial shape {tuple(array.shape[3:])} (shape {array.shape}), "
            f"but the grid has num_points {list(spatial)} on axes {list(axes)}; expected "
            f"shape {expected}"
        )
    if array.shape[0] < 1 or array.shape[1] < 2:
        raise ValueError(
            f"{owner}: data needs at least 1 trajectory and 2 frames (training needs pairs), "
            f"got shape {array.shape}"
        )
    precision = _precision(owner, "data", array.dtype)
    _raise_nonfinite(owner, "data", array, 0, names)
    layout = _layout(names, units_d, long_d, time_units, grid_d, dt, precision)
    record = {
        "kind": "arrays",
        "function": owner,
        "description": source,
        "origin": None,
        "input_shape": list(array.shape),
    }
    return _write_dataset(
        owner,
        path,
        lambda lo, hi: array[lo:hi],
        num_trajectories=int(array.shape[0]),
        num_frames=int(array.shape[1]),
        layout=layout,
        source=record,
        splits=splits,
        trajectories_per_shard=trajectories_per_shard,
        compression_level=compression_level,
        overwrite=overwrite,
    )


def _uniform_spacing(owner: str, what: str, values: np.ndarray) -> float:
    """The constant spacing of a 1D coordinate, refusing non-uniform or decreasing ones."""
    steps = np.diff(values.astype(np.float64))
    if steps.size == 0:
        raise ValueError(f"{owner}: {what} has a single value; its spacing is undefined")
    d = float(steps.mean())
    if not (d > 0 and np.allclose(steps, d, rtol=SPACING_RTOL, atol=0)):
        raise ValueError(
            f"{owner}: {what} is not uniformly increasing (steps from {steps.min():.6g} to "
            f"{steps.max():.6g}); only uniform axes can be stored"
        )
    return d


def from_xarray(
    path: str | os.PathLike,
    ds: Any,
    *,
    variables: Sequence[str] | None = None,
    trajectory_dim: str = "trajectory",
    time_dim: str = "time",
    grid: Any = None,
    dt: float | None = None,
    units: Mapping[str, str] | None = None,
    long_names: Mapping[str, str] | None = None,
    time_units: str | None = None,
    splits: Mapping[str, float] | None = None,
    trajectories_per_shard: int = 16,
    compression_level: int = 0,
    overwrite: bool = False,
    source: str | None = None,
) -> pathlib.Path:
    """Write an ``xarray.Dataset`` of trajectories as a dataset directory.

    Dimensions are taken by name: each variable has dims ``trajectory_dim``,
    ``time_dim`` and the spatial dims (in any order; stored as ``(trajectory, time,
    *grid.axes)``). Metadata come from the Dataset unless given: ``units`` and
    ``long_name`` from each variable's attributes, ``dt`` from a uniform ``time``
    coordinate (numeric, or datetime64 giving seconds), ``time_units`` from its
    ``units`` attribute, and the grid from uniform spatial coordinates (``domain_length =
    num_points * spacing``, ``length_units`` and ``long_name`` from their attributes).
    Shards are read one at a time, so a lazily opened file (``xr.open_dataset(file)``)
    is never loaded whole.

    Args:
        path: dataset directory to create (or replace with ``overwrite``).
        ds: the ``xarray.Dataset``.
        variables: data variables to store, in channel order (default: every data
            variable that has ``trajectory_dim`` and ``time_dim``, in Dataset order).
        trajectory_dim: name of the ensemble dimension (add one to a single trajectory
            with ``ds.expand_dims("trajectory")``).
        time_dim: name of the time dimension.
        grid: a :class:`solvers.grid.Grid` or ``Grid.to_dict()``-like dict whose ``axes``
            name the spatial dims (default: inferred from the spatial coordinates).
        dt: time between frames (default: from the time coordinate; when both are given
            they must agree).
        units, long_names: per-variable overrides of the attributes.
        time_units: CF time unit (default: the time coordinate's ``units``, else ``"s"``
            for datetime64 and ``"1"`` when there is no time coordinate).
        splits, trajectories_per_shard, compression_level, overwrite: as
            :func:`from_arrays`.
        source: free text provenance (default: the file the Dataset was opened from,
            ``ds.encoding["source"]``, when known).

    Returns:
        The dataset directory.

    Raises:
        ValueError: a missing or misnamed dimension, a variable with other dims, a missing
            ``units`` attribute, a non-uniform coordinate, a grid that does not match the
            dims, a ``dt`` that disagrees with the time coordinate (each named), and
            everything :func:`from_arrays` refuses.
        NonFiniteDataError: a variable holds NaN/Inf (naming trajectory, frame, variable).
        FileExistsError, DatasetLockedError: as :func:`from_arrays`.
    """
    import xarray as xr

    owner = "from_xarray"
    if not isinstance(ds, xr.Dataset):
        hint = " (use da.to_dataset(name=...))" if isinstance(ds, xr.DataArray) else ""
        raise ValueError(f"{owner}: ds must be an xarray.Dataset{hint}, got {type(ds).__name__}")
    for name, dim in (("trajectory_dim", trajectory_dim), ("time_dim", time_dim)):
        if dim not in ds.dims:
            extra = (
                "; a single trajectory needs one: ds.expand_dims('trajectory')"
                if name == "trajectory_dim"
                else ""
            )
            raise ValueError(
                f"{owner}: {name} = {dim!r} is not a dimension of ds (dims {dict(ds.sizes)}){extra}"
            )
    if variables is None:
        variables = [
            str(v) for v, da in ds.data_vars.items() if {trajectory_dim, time_dim} <= set(da.dims)
        ]
        if not variables:
            raise ValueError(
                f"{owner}: no data variable of ds has dims {trajectory_dim!r} and "
                f"{time_dim!r} (variables {list(ds.data_vars)})"
            )
    for v in variables:
        if v not in ds.data_vars:
            raise ValueError(f"{owner}: variable {v!r} not in ds (it has {list(ds.data_vars)})")
    first = ds[variables[0]]
    spatial_dims = [d for d in first.dims if d not in (trajectory_dim, time_dim)]
    if grid is not None:
        grid_d = _check_grid(owner, grid)
        if set(grid_d["axes"]) != set(spatial_dims):
            raise ValueError(
                f"{owner}: grid axes {grid_d['axes']} do not name the spatial dims "
                f"{spatial_dims} of variable {variables[0]!r} (dims {first.dims})"
            )
        for axis, n, length in zip(
            grid_d["axes"], grid_d["num_points"], grid_d["domain_length"], strict=True
        ):
            if ds.sizes[axis] != n:
                raise ValueError(
                    f"{owner}: dim {axis!r} has size {ds.sizes[axis]}, grid num_points gives {n}"
                )
            if axis in ds.coords and ds[axis].ndim == 1 and n > 1:
                d = _uniform_spacing(owner, f"coordinate {axis!r}", np.asarray(ds[axis].values))
                if not math.isclose(d, length / n, rel_tol=SPACING_RTOL):
                    raise ValueError(
                        f"{owner}: coordinate {axis!r} has spacing {d:.6g}, the grid "
                        f"domain_length / num_points = {length / n:.6g}"
                    )
    else:
        lengths, lunits, lnames = [], set(), []
        for axis in spatial_dims:
            if axis not in ds.coords or ds[axis].ndim != 1:
                raise ValueError(
                    f"{owner}: spatial dim {axis!r} has no 1D coordinate to infer the grid "
                    "from; pass grid= (a solvers.grid.Grid or a Grid.to_dict()-like dict)"
                )
            n = ds.sizes[axis]
            lengths.append(
                n * _uniform_spacing(owner, f"coordinate {axis!r}", np.asarray(ds[axis].values))
            )
            lunits.add(str(ds[axis].attrs.get("units", "1")))
            lnames.append(str(ds[axis].attrs.get("long_name", f"{axis} coordinate")))
        if len(lunits) > 1:
            raise ValueError(
                f"{owner}: spatial coordinates {spatial_dims} have different units "
                f"{sorted(lunits)}; pass grid= with one length_units"
            )
        grid_d = _check_grid(
            owner,
            {
                "num_points": [ds.sizes[a] for a in spatial_dims],
                "domain_length": lengths,
                "axes": spatial_dims,
                "length_units": lunits.pop() if lunits else "1",
                "long_names": lnames,
            },
        )
    dims = (trajectory_dim, time_dim, *grid_d["axes"])
    for v in variables:
        if set(ds[v].dims) != set(dims):
            raise ValueError(
                f"{owner}: variable {v!r} has dims {ds[v].dims}, expected {dims} (in any order)"
            )
    # Time step and units.
    default_time_units = "1"
    if time_dim in ds.coords:
        t = np.asarray(ds[time_dim].values)
        if np.issubdtype(t.dtype, np.datetime64):
            t = (t - t[0]) / np.timedelta64(1, "s")
            default_time_units = "s"
        elif not np.issubdtype(t.dtype, np.number):
            raise ValueError(f"{owner}: time coordinate {time_dim!r} is not numeric ({t.dtype})")
        default_time_units = str(ds[time_dim].attrs.get("units", default_time_units))
        if t.size > 1:
            coord_dt = _uniform_spacing(owner, f"time coordinate {time_dim!r}", t)
            if dt is None:
                dt = coord_dt
            elif not math.isclose(_check_dt(owner, dt), coord_dt, rel_tol=SPACING_RTOL):
                raise ValueError(
                    f"{owner}: dt = {dt!r} disagrees with the spacing {coord_dt:.6g} of the "
                    f"time coordinate {time_dim!r}"
                )
    if dt is None:
        raise ValueError(
            f"{owner}: dt: ds has no usable time coordinate {time_dim!r} to read the time "
            "step from; pass dt= (time between frames)"
        )
    units = dict(units or {})
    long_names = dict(long_names or {})
    for v in variables:
        if v not in units:
            if "units" not in ds[v].attrs:
                raise ValueError(
                    f"{owner}: variable {v!r} has no 'units' attribute; set "
                    f"ds[{v!r}].attrs['units'] or pass units={{{v!r}: ...}} ('1' if "
                    "dimensionless)"
                )
            units[v] = str(ds[v].attrs["units"])
        long_names.setdefault(v, str(ds[v].attrs.get("long_name", v)))
    dtype = np.result_type(*(ds[v].dtype for v in variables))
    origin = ds.encoding.get("source")
    attrs = {  # the global attributes that are plain text or finite numbers
        str(k): v
        for k, v in ds.attrs.items()
        if isinstance(v, str)
        or (isinstance(v, int | float | np.number) and np.isfinite(v) and not isinstance(v, bool))
    }
    record = {
        "kind": "xarray",
        "function": owner,
        "description": source,
        "origin": str(origin) if origin else None,
        "dims": {"trajectory": trajectory_dim, "time": time_dim},
        "attrs": attrs,
    }
    names = _check_names(owner, list(variables), ("trajectory", "time", *grid_d["axes"]))
    units_d = _check_text_map(owner, "units", units, names, "CF unit strings; '1' if none")
    long_d = _check_text_map(owner, "long_names", long_names, names, "CF long_name strings")
    dt = _check_dt(owner, dt)
    tu = default_time_units if time_units is None else time_units
    if not isinstance(tu, str) or not tu.strip():
        raise ValueError(f"{owner}: time_units must be a non-empty CF unit string, got {tu!r}")
    precision = _precision(owner, f"variables {list(names)} (dtype)", np.dtype(dtype))
    layout = _layout(names, units_d, long_d, tu, grid_d, dt, precision)
    n, num_frames = int(ds.sizes[trajectory_dim]), int(ds.sizes[time_dim])
    if n < 1 or num_frames < 2:
        raise ValueError(
            f"{owner}: ds needs at least 1 trajectory and 2 frames (training needs pairs), "
            f"got {trajectory_dim}={n}, {time_dim}={num_frames}"
        )

    def read(lo: int, hi: int) -> np.ndarray:
        part = ds[list(names)].isel({trajectory_dim: slice(lo, hi)})
        frames = np.stack(
            [np.asarray(part[v].transpose(*dims).values, dtype=dtype) for v in names], axis=2
        )
        _raise_nonfinite(owner, "ds", frames, lo, names)
        return frames

    return _write_dataset(
        owner,
        path,
        read,
        num_trajectories=n,
        num_frames=num_frames,
        layout=layout,
        source=record,
        splits=splits,
        trajectories_per_shard=trajectories_per_shard,
        compression_level=compression_level,
        overwrite=overwrite,
    )


__all__ = ["from_arrays", "from_xarray"]
