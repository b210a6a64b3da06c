"""Dataset files: atomic JSON with named write errors, verified checksums, the writer lock,
and CF netCDF shards (the generic pieces, atomic writes and sha256, are in
:mod:`datasets.plumbing`).

Everything here is about bytes on disk and nothing about solvers. A shard is a netCDF4
(HDF5) file written through xarray holding consecutive trajectories of one dataset:

    <variable>(trajectory, time, [y,] x)     one per physical variable, solver precision
    trajectory(trajectory)                   global trajectory index (int64)
    split(trajectory)                        split of each trajectory ("train", ...), string
    time(time)                               0, dt, ..., (T-1) dt, units = solver time units
    <axis>(<axis>)                           grid coordinates with units and long_name

CF-1.10 (checked with the IOOS compliance-checker in ``tests/test_cf_compliance.py``):
model time is not a calendar time, so ``time`` is a plain coordinate in the solver's own
time units (:func:`time_coordinate_attrs`), and grid axes carry ``axis`` only where the
checker would not read them as longitude/latitude (:func:`spatial_coordinate_attrs`).

Shard bytes are a deterministic function of their content: netCDF-C/HDF5 do not track
object times by default and the global attributes hold no timestamps (those live in the
manifest), so the same trajectories give the same sha256 on every run (tested).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

# The file plumbing lives in datasets.plumbing. sha256_file is called through this
# module's name (tests count the reads), temporary_path stays importable from here.
from datasets.plumbing import TMP_SUFFIX, atomic_path, sha256_file
from datasets.plumbing import temporary_path as temporary_path

SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".nc"
LOCK_NAME = ".lock"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Chunks of about this many bytes: a window of a few consecutive frames of one trajectory
# then touches one or two chunks, and a chunk is read (and decompressed) in about a
# millisecond. Measured in benchmarks/datasets.py ("chunking").
CHUNK_TARGET_BYTES = 1 << 20


class DatasetLockedError(RuntimeError):
    """Another process holds the writer lock of a dataset directory."""


class ShardIntegrityError(ValueError):
    """A shard's bytes differ from the sha256 (or size) its manifest records."""


# ---- write errors that name the file ------------------------------------------------------
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(directory: pathlib.Path) -> int | None:
    """Bytes available to this user on the filesystem of ``directory`` (None: unknown)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


@contextlib.contextmanager
def naming_write_errors(path: pathlib.Path, needed: int = 0) -> Iterator[None]:
    """Re-raise a failed write inside the block as an ``OSError`` naming ``path``.

    The kernel's ENOSPC/EDQUOT (and HDF5's bare ``RuntimeError("NetCDF: HDF error")``
    that a full disk produces under xarray) say neither which file nor why. A failure
    on a filesystem with less than ``needed`` bytes (at least 1 MiB) free is reported
    as a full disk.
    """
    try:
        yield
    except (OSError, RuntimeError) as e:
        if isinstance(e, OSError) and e.filename is not None and e.errno not in _DISK_FULL:
            raise  # already names its file (e.g. permission denied on open)
        free = free_bytes(path.parent)
        full = getattr(e, "errno", None) in _DISK_FULL or (
            free is not None and free < max(needed, 1 << 20)
        )
        if full:
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device while writing {path} "
                f"({free if free is not None else 'unknown'} bytes free): free some space "
                "(or choose another directory) and rerun; finished files are kept",
                str(path),
            ) from e
        code = getattr(e, "errno", None) or errno.EIO
        raise OSError(code, f"writing {path} failed: {type(e).__name__}: {e}", str(path)) from e


# ---- atomic files ------------------------------------------------------------------------
def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.nc``."""
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


def write_text_atomic(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`datasets.plumbing.atomic_path`).

    The file and its directory are fsynced; a failure is re-raised naming ``path``
    (:func:`naming_write_errors`), and ``path`` keeps its old contents.
    """
    with naming_write_errors(path, len(text)), atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON through :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_json(path: pathlib.Path) -> Any:
    """Parse a JSON file; a malformed one raises ``ValueError`` naming the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8 JSON (the message names the file and the position).
    """
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def remove_stale_temporaries(directory: pathlib.Path) -> list[pathlib.Path]:
    """Delete temporary files left by killed writers (call only while holding the lock)."""
    removed = []
    for p in directory.glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


# Digests of files this process has hashed, by file identity: a file is re-hashed only
# when it may have changed (another inode, size, mtime or ctime; ctime cannot be set back
# by a user, so even a rewrite that restores the mtime is noticed).
_DIGESTS: dict[tuple, str] = {}
_DIGESTS_LOCK = threading.Lock()


def _identity(path: pathlib.Path) -> tuple:
    st = os.stat(path)
    return (
        str(pathlib.Path(path).resolve()),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def cached_sha256(path: pathlib.Path) -> str:
    """sha256 of a file, computed once per process while the file stays unchanged.

    Raises:
        FileNotFoundError: no such file.
    """
    before = _identity(path)
    with _DIGESTS_LOCK:
        digest = _DIGESTS.get(before)
    if digest is not None:
        return digest
    digest = sha256_file(path)
    if _identity(path) == before:  # not modified while being read
        with _DIGESTS_LOCK:
            _DIGESTS[before] = digest
    return digest


def verify_file(
    path: pathlib.Path, sha256: str | None, size: int | None = None, *, recorded_in: str = ""
) -> None:
    """Check that ``path`` holds the bytes a manifest recorded (cached per process).

    The first call per file (and process) reads the whole file; later calls cost a
    ``stat`` while the file is unchanged.

    Raises:
        FileNotFoundError: the file is missing.
        ShardIntegrityError: size or sha256 differ, naming the file and both digests.
    """
    where = f" in {recorded_in}" if recorded_in else ""
    advice = (
        "the file was corrupted or replaced after generation: delete it and rerun the same "
        "generation to recompute it (or regenerate the dataset with overwrite=True)"
    )
    if not path.is_file():
        raise FileNotFoundError(f"shard {path} listed{where} is missing; {advice}")
    if not isinstance(sha256, str):
        raise ShardIntegrityError(f"no sha256 recorded{where} for shard {path}; {advice}")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ShardIntegrityError(
            f"shard {path} has {actual_size} bytes, {size} recorded{where}; {advice}"
        )
    actual = cached_sha256(path)
    if actual != sha256:
        raise ShardIntegrityError(
            f"shard {path} has sha256 {actual}, expected {sha256} (recorded{where}); {advice}"
        )


@contextlib.contextmanager
def writer_lock(directory: pathlib.Path) -> Iterator[pathlib.Path]:
    """Hold an exclusive, non-blocking ``flock`` on ``directory/.lock`` for the block.

    The kernel drops the lock when the holder dies, so a killed run never leaves a stale
    lock behind.

    Raises:
        DatasetLockedError: another process (or another open of the file) holds it.
    """
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DatasetLockedError(
                    f"dataset directory {directory} is being written by another process "
                    f"(lock {path} is held); wait for it to finish or use another out_dir"
                ) from None
            raise
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def normalise(obj: Any) -> Any:
    """Round-trip through JSON (tuples become lists, numpy scalars plain numbers)."""
    return json.loads(json.dumps(obj, default=_json_default, allow_nan=False))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Mapping):  # e.g. an OmegaConf DictConfig
        return dict(obj)
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return list(obj)
    raise TypeError(f"value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


# ---- shards --------------------------------------------------------------------------
def time_block(num_frames: int, frame_bytes: int, target: int = CHUNK_TARGET_BYTES) -> int:
    """Frames per chunk: as many consecutive frames of one trajectory as fit ``target``."""
    return int(max(1, min(num_frames, target // max(frame_bytes, 1))))


def grid_coords(grid: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Coordinate values per axis from a stored ``Grid.to_dict()`` (as ``Grid.coords``)."""
    return {
        axis: np.arange(n, dtype=np.float64) * (length / n)
        for axis, n, length in zip(
            grid["axes"], grid["num_points"], grid["domain_length"], strict=True
        )
    }


# Standard names CF gives Cartesian axes that are not longitude/latitude (canonical unit m).
_PROJECTION_NAMES = {"x": "projection_x_coordinate", "y": "projection_y_coordinate"}


def time_coordinate_attrs(time_units: str, long_name: str = "simulation time") -> dict[str, str]:
    """CF attributes of a model-time coordinate in the solver's own time units.

    CF-1.10 section 4.4 identifies a time coordinate by reference-time units (``"s since
    2000-01-01"``), ``standard_name = "time"`` or ``axis = "T"``, and then requires a
    reference date. Model time has none (it counts from the end of spin-up, and is often
    nondimensional, ``"1"``), so the coordinate is written as a plain coordinate: its
    ``units`` are the solver's ``time_units`` verbatim, with no ``standard_name`` and no
    ``axis``; ``comment`` says why. Readers get floats, not decoded dates.

    Args:
        time_units: the solver's time unit (``"1"`` when nondimensional, ``"s"``, ...).
        long_name: the coordinate's description.

    Returns:
        ``{"units", "long_name", "comment"}``.
    """
    return {
        "units": str(time_units),
        "long_name": long_name,
        "comment": (
            f"model time in the solver's time units ({time_units!r}), not a calendar time: "
            "no reference date, hence no standard_name 'time' or axis 'T' (CF-1.10 4.4)"
        ),
    }


def spatial_coordinate_attrs(axis: str, long_name: str, length_units: str) -> dict[str, str]:
    """CF attributes of a grid coordinate ``x``/``y``/... of a periodic Cartesian box.

    The compliance checker reads any coordinate with ``axis = "X"`` (``"Y"``) as a
    longitude (latitude) unless its ``standard_name`` is ``projection_x_coordinate``
    (``projection_y_coordinate``), whose canonical unit is the metre. So a grid in a
    physical length unit gets that standard name and ``axis``; a nondimensional grid
    (``length_units = "1"``) gets neither and stays a plain coordinate.

    Args:
        axis: the grid axis name (``"x"``, ``"y"``, ...).
        long_name: the coordinate's description.
        length_units: the grid's length unit (``"1"`` when nondimensional).

    Returns:
        ``{"units", "long_name"}`` plus ``standard_name`` and ``axis`` where they apply.
    """
    attrs = {"units": str(length_units), "long_name": long_name}
    if axis in _PROJECTION_NAMES and str(length_units) not in ("1", ""):
        attrs |= {"standard_name": _PROJECTION_NAMES[axis], "axis": axis.upper()}
    return attrs


def shard_dataset(
    frames: np.ndarray,
    trajectories: np.ndarray,
    *,
    layout: Mapping[str, Any],
    attrs: Mapping[str, Any],
    compression_level: int = 0,
    splits: Sequence[str] | None = None,
):
    """Build the CF ``xarray.Dataset`` of one shard.

    Args:
        frames: ``(n, T, C, *spatial)`` trajectories in the solver precision.
        trajectories: ``(n,)`` global trajectory indices.
        layout: ``variables``, ``units``, ``long_names``, ``time_units``, ``grid``
            (``Grid.to_dict()``), ``dt`` and ``precision`` of the dataset.
        attrs: global attributes (strings and numbers, no timestamps).
        compression_level: 0 (none) or a zlib level 1-9, with byte shuffling.
        splits: ``(n,)`` split name of each trajectory, stored as the string coordinate
            ``split``; omitted when ``None``.

    Returns:
        The dataset, with per-variable ``encoding`` (dtype, compression, chunks of
        consecutive frames of one trajectory, no fill value) set for :func:`write_shard`.
    """
    import xarray as xr

    variables = list(layout["variables"])
    grid = layout["grid"]
    axes = tuple(grid["axes"])
    n, num_frames = frames.shape[:2]
    expected = (len(variables), *grid["num_points"])
    if tuple(frames.shape[2:]) != expected:
        raise ValueError(f"frames have state shape {frames.shape[2:]}, expected {expected}")
    dtype = np.dtype(layout["precision"])
    frame_bytes = int(np.prod(grid["num_points"])) * dtype.itemsize
    chunks = (1, time_block(num_frames, frame_bytes), *grid["num_points"])
    dims = ("trajectory", "time", *axes)
    data_vars = {}
    encoding: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(variables):
        data_vars[name] = xr.Variable(
            dims,
            np.ascontiguousarray(frames[:, :, c], dtype=dtype),
            attrs={"units": layout["units"][name], "long_name": layout["long_names"][name]},
        )
        encoding[name] = {"dtype": dtype, "_FillValue": None}
        if n:
            encoding[name]["chunksizes"] = chunks
        if compression_level:
            encoding[name].update(zlib=True, complevel=compression_level, shuffle=True)
    coords = {
        "trajectory": xr.Variable(
            "trajectory",
            np.asarray(trajectories, dtype=np.int64),
            attrs={"long_name": "trajectory index", "units": "1"},
        ),
        "time": xr.Variable(
            "time",
            np.arange(num_frames, dtype=np.float64) * float(layout["dt"]),
            attrs=time_coordinate_attrs(layout["time_units"], "time since the end of spin-up"),
        ),
    }
    if splits is not None:
        splits = [str(name) for name in splits]
        if len(splits) != n:
            raise ValueError(f"splits has {len(splits)} names for {n} trajectories")
        coords["split"] = xr.Variable(
            "trajectory",
            np.asarray(splits, dtype=object),
            attrs={"long_name": "dataset split of the trajectory (see manifest.json splits)"},
        )
    for axis, long_name, values in zip(
        axes, grid["long_names"], grid_coords(grid).values(), strict=True
    ):
        coords[axis] = xr.Variable(
            axis, values, attrs=spatial_coordinate_attrs(axis, long_name, grid["length_units"])
        )
    for name in coords:
        encoding[name] = {} if name == "split" else {"_FillValue": None}
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))
    for name, enc in encoding.items():
        ds[name].encoding = enc
    return ds


def write_shard(ds, final: pathlib.Path) -> tuple[str, int]:
    """Write a shard dataset atomically; return ``(sha256, size_in_bytes)``."""
    # The next manifest write syncs the directory.
    with (
        naming_write_errors(final, int(ds.nbytes)),
        atomic_path(final, sync_directory=False) as tmp,
    ):
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        digest, size = sha256_file(tmp), tmp.stat().st_size
    return digest, size


def write_shard_file(
    out_dir: pathlib.Path,
    index: int,
    frames: np.ndarray,
    trajectories: np.ndarray,
    *,
    layout: Mapping[str, Any],
    attrs: Mapping[str, Any],
    compression_level: int = 0,
    splits: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build and atomically write shard ``index`` of a dataset; return its record fields.

    The one shard writer of the package (:func:`datasets.generate` and
    :func:`datasets.from_arrays` both call it).

    Args:
        out_dir: the dataset directory.
        index: shard number (the file is :func:`shard_name` ``(index)``).
        frames: ``(n, T, C, *spatial)`` trajectories to store.
        trajectories: ``(n,)`` their global trajectory indices.
        layout, attrs, compression_level, splits: as :func:`shard_dataset`.

    Returns:
        ``{"file", "stored", "sha256", "size"}`` for the shard's manifest record.
    """
    ds = shard_dataset(
        frames,
        trajectories,
        layout=layout,
        attrs=attrs,
        compression_level=compression_level,
        splits=splits,
    )
    name = shard_name(index)
    digest, size = write_shard(ds, pathlib.Path(out_dir) / name)
    return {"file": name, "stored": int(len(trajectories)), "sha256": digest, "size": size}


def read_frames(
    path: pathlib.Path,
    variables: Sequence[str],
    rows: np.ndarray | slice | None = None,
    frames: slice | None = None,
    dtype: np.dtype | str | None = None,
) -> np.ndarray:
    """Read ``(n, T, C, *spatial)`` from a shard with netCDF4 (no xarray overhead).

    Args:
        path: shard file.
        variables: variable names in channel order.
        rows: local trajectory rows (sorted int array or slice); all when ``None``.
        frames: time slice; all when ``None``.
        dtype: output dtype (default: as stored).
    """
    import netCDF4

    rows = slice(None) if rows is None else rows
    frames = slice(None) if frames is None else frames
    with netCDF4.Dataset(path, "r") as nc:
        nc.set_auto_mask(False)
        parts = [np.asarray(nc.variables[v][rows, frames]) for v in variables]
    out = np.stack(parts, axis=2)
    return out if dtype is None else out.astype(dtype, copy=False)


def open_hdf5_check(path: pathlib.Path) -> str | None:
    """Cheap sanity check before handing a file to HDF5: ``None`` if plausible, else why not.

    Catches files that are not HDF5 at all (an HTML error page saved as ``.nc``) and
    truncated files (size below the end-of-file address the HDF5 superblock records),
    which HDF5 itself reports only through a deep error stack.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(96)
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    if not head.startswith(HDF5_SIGNATURE):
        return f"not a netCDF4/HDF5 file (first bytes {head[:16]!r})"
    eof = _superblock_eof(head)
    if eof is not None and size < eof:
        return f"truncated: {size} bytes on disk, the HDF5 superblock records {eof}"
    return None


def _superblock_eof(head: bytes) -> int | None:
    """End-of-file address from an HDF5 superblock at offset 0 (versions 0-3)."""
    if len(head) < 9:
        return None
    version = head[8]
    if version in (2, 3):
        o = head[9]
        start = 12 + 2 * o  # signature, version, sizes, flags, base and extension addresses
    elif version in (0, 1):
        o = head[13]
        start = 24 + (4 if version == 1 else 0) + 2 * o  # base, free-space addresses
    else:
        return None
    if o not in (2, 4, 8) or len(head) < start + o:
        return None
    return int.from_bytes(head[start : start + o], "little")
