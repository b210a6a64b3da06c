"""Reading datasets: lazy xarray views, whole splits as arrays, and the window loader.

Training samples are *windows* of one trajectory: ``history`` consecutive input frames
followed by the ``horizon`` frames to predict. With ``T`` frames per trajectory there are
``T - history - horizon + 1`` windows per trajectory, numbered trajectory-major.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import pathlib
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from xarray.backends import BackendArray, CachingFileManager
from xarray.core import indexing

from datasets import plumbing, storage
from datasets.manifest import (
    MANIFEST_NAME,
    dataset_dir,
    read_manifest,
    shard_rows,
    stored_ids,
    stored_trajectories,
    trajectory_splits,
)

# netCDF-C/HDF5 are not thread-safe; every read in this module goes through this lock.
_HDF5_LOCK = threading.Lock()
_MAX_OPEN_FILES = 32


class NonFiniteDataError(ValueError):
    """Stored frames hold NaN or Inf: the data are corrupt, training on them would diverge."""


# ---- integrity: checksums and finite values -------------------------------------------
def verify_shard(directory: pathlib.Path, shard: Mapping[str, Any]) -> pathlib.Path:
    """Check one shard's bytes against the sha256 and size its manifest records.

    The first check of a file in a process reads it whole (about 1 ms per MB); later
    ones cost a ``stat`` while the file is unchanged (:func:`storage.verify_file`).

    Returns:
        The shard's path.

    Raises:
        FileNotFoundError: the shard is missing.
        storage.ShardIntegrityError: it was changed, corrupted or replaced since
            generation (the message names the file and both digests).
    """
    file = directory / shard["file"]
    storage.verify_file(
        file, shard.get("sha256"), shard.get("size"), recorded_in=str(directory / MANIFEST_NAME)
    )
    return file


def dataset_identity(path: str | pathlib.Path) -> str:
    """A digest that changes whenever the data a dataset directory serves may have changed.

    It covers the manifest's bytes (hence every shard's recorded sha256) and, per listed
    shard, the file's size, mtime and ctime (``None`` when missing), so rewriting,
    corrupting or replacing a shard after the fact changes it, even when the mtime is
    restored. No shard is read: cheap enough to key a cache of validation results on.

    Raises:
        FileNotFoundError / ManifestError: as :func:`read_manifest`.
    """
    directory = dataset_dir(path)
    m = read_manifest(directory)
    files = []
    for s in m["shards"]:
        try:
            st = os.stat(directory / s["file"])
            files.append([s["file"], s.get("sha256"), st.st_size, st.st_mtime_ns, st.st_ctime_ns])
        except OSError:
            files.append([s["file"], s.get("sha256"), None])
    manifest_sha = plumbing.sha256_file(directory / MANIFEST_NAME)
    text = plumbing.canonical_json({"manifest_sha256": manifest_sha, "shards": files})
    return hashlib.sha256(text.encode()).hexdigest()


def find_nonfinite(frames: np.ndarray) -> tuple[int, int, int] | None:
    """``(row, frame, channel)`` of the first NaN/Inf in ``frames (n, T, C, *spatial)``.

    Returns:
        ``None`` when every value is finite; else the first offending row, then frame,
        then channel (row-major order).
    """
    if np.isfinite(frames).all():
        return None
    n, t, c = frames.shape[:3]
    bad = ~np.isfinite(frames.reshape(n, t, c, -1)).all(axis=-1)  # (n, T, C)
    r, f, v = (int(a[0]) for a in np.nonzero(bad))
    return r, f, v


def check_finite(
    frames: np.ndarray,
    trajectories: np.ndarray,
    frame_offsets: np.ndarray | None,
    variables: tuple[str, ...] | list[str],
    dt: float,
    source: str,
    advice: str | None = None,
) -> None:
    """Raise naming the first trajectory, variable and frame of ``frames`` holding NaN/Inf.

    Args:
        frames: ``(n, T, C, *spatial)``.
        trajectories: ``(n,)`` global trajectory index of each row.
        frame_offsets: ``(n,)`` stored frame number of each row's first frame (None: 0).
        variables: channel names.
        dt: time between frames (time units of the dataset).
        source: where the frames come from (a shard file, a dataset directory).
        advice: what to do, appended to the message (default: validate and regenerate
            the dataset).

    Raises:
        NonFiniteDataError: naming trajectory, variable, frame and time.
    """
    where = find_nonfinite(frames)
    if where is None:
        return
    r, f, v = where
    frame = f + (0 if frame_offsets is None else int(frame_offsets[r]))
    raise NonFiniteDataError(
        f"{source}: trajectory {int(trajectories[r])} holds NaN/Inf in variable "
        f"{variables[v]!r} at frame {frame} (t = {frame * dt:.6g}); "
        + (
            advice
            or "the stored data are corrupt, so training on them would diverge: validate the "
            "dataset (python -m datasets.validate DIR) and regenerate it"
        )
    )


def dataset_info(path: str | pathlib.Path) -> dict[str, Any]:
    """Metadata of a dataset, from its manifest (no data read).

    Returns:
        ``solver``, ``solver_config``, ``variables``, ``units``, ``long_names``,
        ``time_units``, ``grid`` (``Grid.to_dict()``), ``dt``, ``precision``,
        ``state_shape``, ``num_frames``, ``num_trajectories`` (stored, per split and
        ``"total"``), ``splits`` (index ranges), ``seed``, ``spinup_steps``, ``complete``,
        ``skipped``, ``source`` and ``path``. Data imported with
        :func:`datasets.from_arrays` / :func:`datasets.from_xarray` have ``solver``,
        ``seed`` and ``spinup_steps`` ``None`` and ``source`` describing where they came
        from (``None`` for generated data).
    """
    directory = dataset_dir(path)
    m = read_manifest(directory)
    layout, spec = m["layout"], m["spec"]
    counts = {name: int(stored_trajectories(m, name).size) for name in m["splits"]}
    counts["total"] = int(stored_trajectories(m).size)
    return {
        "path": str(directory),
        "solver": m["solver"],
        "solver_config": dict(m["solver_config"]),
        "variables": tuple(layout["variables"]),
        "units": dict(layout["units"]),
        "long_names": dict(layout["long_names"]),
        "time_units": layout["time_units"],
        "grid": dict(layout["grid"]),
        "dt": float(layout["dt"]),
        "precision": layout["precision"],
        "state_shape": tuple(layout["state_shape"]),
        "num_frames": int(spec["num_frames"]),
        "num_trajectories": counts,
        "splits": {k: tuple(v) for k, v in m["splits"].items()},
        "seed": None if spec.get("seed") is None else int(spec["seed"]),
        "spinup_steps": None if spec.get("spinup_steps") is None else int(spec["spinup_steps"]),
        "source": spec.get("source"),
        "complete": bool(m["complete"]),
        "skipped": list(m.get("skipped", [])),
    }


# ---- lazy xarray view -----------------------------------------------------------------
class _ShardedArray(BackendArray):
    """One variable of all shards as a lazily indexed ``(trajectory, time, *spatial)`` array.

    Implements xarray's backend-array protocol (outer indexing), reading only the
    requested rows of the shards they live in; files are opened through xarray's
    ``CachingFileManager`` (bounded number of open files).
    """

    def __init__(self, managers, offsets: np.ndarray, name: str, shape, dtype) -> None:
        self.managers, self.offsets, self.name = managers, offsets, name
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._read
        )

    def _read(self, key: tuple) -> np.ndarray:
        first, rest = key[0], tuple(key[1:])
        scalar = isinstance(first, int | np.integer)
        rows = np.atleast_1d(np.arange(self.shape[0])[first])
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((rows.size, *_indexed_shape(self.shape[1:], rest)), self.dtype)
        for s in np.unique(shard):
            where = np.flatnonzero(shard == s)
            with _HDF5_LOCK:
                var = self.managers[s].acquire().variables[self.name]
                var.set_auto_maskandscale(False)
                out[where] = _orthogonal_read(var, (rows[where] - self.offsets[s], *rest))
        return out[0] if scalar else out


def _orthogonal_read(var, key: tuple) -> np.ndarray:
    """``var[key]`` with outer indexing, for any (also unsorted, repeated) integer arrays.

    netCDF4 wants increasing integer sequences; read the sorted unique indices and
    reorder afterwards.
    """
    sorted_key, restore = [], []
    for axis, k in enumerate(key):
        if isinstance(k, np.ndarray):
            uniq, inverse = np.unique(k, return_inverse=True)
            sorted_key.append(uniq)
            restore.append((axis, inverse))
        else:
            sorted_key.append(k)
    out = np.asarray(var[tuple(sorted_key)])
    # Integer (scalar) keys drop their axis; shift the axes of later array keys.
    dropped = [i for i, k in enumerate(key) if isinstance(k, int | np.integer)]
    for axis, inverse in restore:
        out = np.take(out, inverse, axis=axis - sum(d < axis for d in dropped))
    return out


def _indexed_shape(shape, key) -> tuple[int, ...]:
    dims = []
    for n, k in zip(shape, key + (slice(None),) * (len(shape) - len(key)), strict=True):
        if isinstance(k, int | np.integer):
            continue
        dims.append(len(range(n)[k]) if isinstance(k, slice) else len(k))
    return tuple(dims)


def open_dataset(path: str | pathlib.Path, split: str | None = None):
    """Open all shards of a dataset lazily as one ``xarray.Dataset`` (no dask needed).

    Args:
        path: dataset directory (or its ``manifest.json``).
        split: keep only the trajectories of this split (e.g. ``"train"``); all if None.

    Returns:
        A Dataset with one variable per physical variable, dims ``(trajectory, time,
        *spatial)``, the shards' CF attributes plus ``created`` from the manifest. Values
        are read on access (``.values``, ``.load()``); close it when done.

    Raises:
        KeyError: unknown split.
    """
    import xarray as xr

    directory = dataset_dir(path)
    m = read_manifest(directory)
    layout = m["layout"]
    if not m["shards"]:
        raise ValueError(f"{directory} holds no finished shards yet")
    recorded_in = str(directory / MANIFEST_NAME)
    managers = [
        CachingFileManager(
            _open_verified,
            str(directory / s["file"]),
            mode="r",
            kwargs={"sha256": s.get("sha256"), "size": s.get("size"), "recorded_in": recorded_in},
        )
        for s in m["shards"]
    ]
    counts = [s["stored"] for s in m["shards"]]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    trajectories = np.concatenate([np.asarray(stored_ids(s), dtype=np.int64) for s in m["shards"]])
    with xr.open_dataset(
        verify_shard(directory, m["shards"][0]), engine="netcdf4", decode_times=False, cache=False
    ) as first:
        # Per-trajectory coordinates (trajectory, split) cover all shards: built below.
        coords = {
            k: first[k].variable.load() for k in first.coords if k not in ("trajectory", "split")
        }
        var_attrs = {v: dict(first[v].attrs) for v in layout["variables"]}
        attrs = dict(first.attrs)
    for k in ("shard_index",):
        attrs.pop(k, None)
    attrs["created"] = m.get("created", "")
    attrs["manifest"] = str(directory / MANIFEST_NAME)
    dims = ("trajectory", "time", *layout["grid"]["axes"])
    shape = (int(sum(counts)), int(m["spec"]["num_frames"]), *layout["grid"]["num_points"])
    data_vars = {
        v: xr.Variable(
            dims,
            indexing.LazilyIndexedArray(
                _ShardedArray(managers, offsets, v, shape, layout["precision"])
            ),
            attrs=var_attrs[v],
        )
        for v in layout["variables"]
    }
    coords["trajectory"] = xr.Variable(
        "trajectory", trajectories, attrs={"long_name": "trajectory index", "units": "1"}
    )
    # The shards' split coordinate, from the manifest's ranges it was written from (shards
    # written before it existed lack it; the manifest is the same for all).
    coords["split"] = xr.Variable(
        "trajectory",
        np.asarray(trajectory_splits(m["splits"], trajectories), dtype=object),
        attrs={"long_name": "dataset split of the trajectory (see manifest.json splits)"},
    )
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    ds.set_close(lambda: [mgr.close() for mgr in managers])
    if split is not None:
        keep = np.isin(trajectories, stored_trajectories(m, split))
        ds = ds.isel(trajectory=np.flatnonzero(keep))
    return ds


def _open_verified(file: str, mode: str = "r", *, sha256, size, recorded_in: str):
    """``netCDF4.Dataset(file)`` after checking its checksum (once per process)."""
    import netCDF4

    storage.verify_file(pathlib.Path(file), sha256, size, recorded_in=recorded_in)
    return netCDF4.Dataset(file, mode=mode)


def load_trajectories(
    path: str | pathlib.Path, split: str | None = None, dtype: str | np.dtype | None = None
) -> np.ndarray:
    """One split as a contiguous array ``(N, T, C, *spatial)`` (trajectory order).

    Each shard read is first checked against its recorded sha256 (once per process) and
    its frames for NaN/Inf.

    Args:
        path: dataset directory.
        split: split name, or None for every stored trajectory.
        dtype: output dtype (default: the stored precision).

    Raises:
        storage.ShardIntegrityError: a shard's bytes differ from the manifest's record.
        NonFiniteDataError: naming the trajectory and frame holding NaN/Inf.
    """
    directory = dataset_dir(path)
    m = read_manifest(directory)
    layout = m["layout"]
    ids = stored_trajectories(m, split)
    dtype = np.dtype(layout["precision"] if dtype is None else dtype)
    out = np.empty((ids.size, m["spec"]["num_frames"], *layout["state_shape"]), dtype)
    at = 0
    for shard, rows in shard_rows(m, ids):
        file = verify_shard(directory, shard)
        with _HDF5_LOCK:
            x = storage.read_frames(file, layout["variables"], rows, dtype=dtype)
        # shard_rows keeps the (sorted) order of ``ids``.
        check_finite(
            x, ids[at : at + x.shape[0]], None, layout["variables"], layout["dt"], str(file)
        )
        out[at : at + x.shape[0]] = x
        at += x.shape[0]
    return out


# ---- the window loaders ------------------------------------------------------------------
def _check_loader_ints(owner: str, **values: tuple[Any, int]) -> None:
    """Raise ``ValueError`` naming the first ``name=(value, minimum)`` that is no such int."""
    from solvers.base import check_int

    for name, (value, low) in values.items():
        check_int(owner, name, value, low)


class _WindowBatches:
    """Window numbering, per-epoch shuffling, batches and prefetching of the window loaders.

    Subclasses set ``batch_size``, ``history``, ``horizon``, ``seed``, ``shuffle``,
    ``drop_last``, ``prefetch``, ``dtype``, ``num_frames``, ``window_length``,
    ``windows_per_trajectory`` and ``_perm_cache``, and implement ``num_trajectories`` and
    ``_gather(rows, t0) -> (n, window_length, C, *spatial)``.
    """

    batch_size: int
    history: int
    horizon: int
    seed: int
    shuffle: bool
    drop_last: bool
    prefetch: int
    window_length: int
    windows_per_trajectory: int
    _perm_cache: collections.OrderedDict[int, np.ndarray]

    @property
    def num_trajectories(self) -> int:
        raise NotImplementedError

    @property
    def num_windows(self) -> int:
        return self.num_trajectories * self.windows_per_trajectory

    @property
    def steps_per_epoch(self) -> int:
        n, b = self.num_windows, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _gather(self, rows: np.ndarray, t0: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ---- batches
    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_windows)
        perm = self._perm_cache.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            self._perm_cache[epoch] = perm
            while len(self._perm_cache) > 2:
                self._perm_cache.popitem(last=False)
        return perm

    def window_indices(self, step: int) -> np.ndarray:
        """Window numbers of batch ``step`` (``trajectory_row * W + t0``)."""
        from solvers.base import check_int

        step = check_int(type(self).__name__, "step", step, 0)
        epoch, within = divmod(step, self.steps_per_epoch)
        b = self.batch_size
        return self._permutation(epoch)[within * b : (within + 1) * b]

    def batch(
        self, step: int, part: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``step``: ``inputs (B, history, C, *spatial)``, ``targets (B, horizon, C,
        *spatial)``, where targets are the frames right after the inputs.

        With ``part=(i, p)`` only the ``i``-th of ``p`` contiguous, near-equal slices of the
        batch's rows (rows ``B*i//p`` to ``B*(i+1)//p``) is read and returned: how each of
        ``p`` data-parallel processes reads just its own share.
        """
        w = self.window_indices(step)
        if part is not None:
            i, p = (int(v) for v in part)
            if not 0 <= i < p:
                raise ValueError(
                    f"{type(self).__name__}: part must be (i, p) with 0 <= i < p, got {part}"
                )
            n = w.size
            w = w[n * i // p : n * (i + 1) // p]
        rows, t0 = np.divmod(w, self.windows_per_trajectory)
        frames = self._gather(rows, t0)
        return frames[:, : self.history], frames[:, self.history :]

    def iterate(
        self, start_step: int = 0, num_steps: int | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(step, inputs, targets)`` from ``start_step`` (forever if ``num_steps`` is
        None), preparing up to ``prefetch`` batches ahead in a background thread."""
        stop = None if num_steps is None else start_step + int(num_steps)
        steps = iter(range(start_step, stop) if stop is not None else _count(start_step))
        if self.prefetch == 0:
            for s in steps:
                yield (s, *self.batch(s))
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        halt = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for s in steps:
                    item = (s, *self.batch(s))
                    while not halt.is_set():
                        with contextlib.suppress(queue.Full):
                            q.put(item, timeout=0.1)
                            break
                    if halt.is_set():
                        return
                q.put(done)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                q.put(e)

        thread = threading.Thread(
            target=produce, name=f"{type(self).__name__}-prefetch", daemon=True
        )
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            halt.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()
            thread.join(timeout=5)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        return self.iterate()

    def __len__(self) -> int:
        return self.steps_per_epoch


class WindowLoader(_WindowBatches):
    """Reproducibly shuffled batches of ``(history -> horizon)`` windows of a dataset split.

    Batch ``step`` is a pure function of ``(seed, step)``: epoch ``e = step //
    steps_per_epoch`` visits all windows in the order of
    ``numpy.random.default_rng([seed, e]).permutation(num_windows)``, so a training run
    resumed at step ``s`` sees exactly the batches it would have seen.

    The split is held in RAM as one contiguous array ``(N, T, C, *spatial)`` of ``dtype``
    when it fits ``memory_budget_bytes``; a batch is then one fancy-indexing gather.
    Larger splits are read per batch from the shards (sorted reads, chunk-aligned).

    Args:
        path: dataset directory.
        split: split name.
        batch_size: windows per batch ``B``.
        history: input frames per window (>= 1).
        horizon: target frames per window (>= 1).
        seed: shuffling seed (>= 0).
        shuffle: permute windows per epoch (else trajectory-major order).
        drop_last: drop a final partial batch of an epoch.
        prefetch: batches prepared ahead by :meth:`iterate`'s background thread (0: none).
        dtype: dtype of the returned arrays (conversion happens once, at load).
        memory_budget_bytes: largest split held in RAM (default 4 GiB).

    Every shard is checked against the sha256 its manifest records the first time this
    process opens it (for an in-memory split: all of them, before the first batch), and
    the frames are checked for NaN/Inf (in memory: once, at load; else: per batch read).

    Raises:
        ValueError: a bad argument (named), or no window fits in the trajectories.
        storage.ShardIntegrityError: a shard was changed, corrupted or replaced.
        NonFiniteDataError: the data hold NaN/Inf (naming the trajectory and frame).
    """

    def __init__(
        self,
        path: str | pathlib.Path,
        split: str = "train",
        *,
        batch_size: int,
        history: int = 1,
        horizon: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        prefetch: int = 2,
        dtype: str | np.dtype = "float32",
        memory_budget_bytes: int = 4 << 30,
    ) -> None:
        _check_loader_ints(
            "WindowLoader",
            batch_size=(batch_size, 1),
            history=(history, 1),
            horizon=(horizon, 1),
            seed=(seed, 0),
            prefetch=(prefetch, 0),
        )
        self.path = dataset_dir(path)
        self._manifest = read_manifest(self.path)
        self.split = split
        self.batch_size, self.history, self.horizon = int(batch_size), int(history), int(horizon)
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.prefetch = int(prefetch)
        self.dtype = np.dtype(dtype)
        layout = self._manifest["layout"]
        self._ids = stored_trajectories(self._manifest, split)
        self.num_frames = int(self._manifest["spec"]["num_frames"])
        self.window_length = self.history + self.horizon
        self.windows_per_trajectory = self.num_frames - self.window_length + 1
        if self.windows_per_trajectory < 1:
            raise ValueError(
                f"WindowLoader: history + horizon = {self.window_length} exceeds the "
                f"{self.num_frames} frames per trajectory of {self.path}"
            )
        if self._ids.size == 0:
            raise ValueError(f"WindowLoader: split {split!r} of {self.path} holds no trajectories")
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"WindowLoader: batch_size {batch_size} exceeds the {self.num_windows} windows "
                f"of split {split!r} with drop_last=True"
            )
        nbytes = self._ids.size * self.num_frames * int(np.prod(layout["state_shape"]))
        self.in_memory = nbytes * self.dtype.itemsize <= memory_budget_bytes
        self._data = load_trajectories(self.path, split, self.dtype) if self.in_memory else None
        self._locate = None if self.in_memory else self._build_locator()
        self._perm_cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._handles: collections.OrderedDict[pathlib.Path, Any] = collections.OrderedDict()
        self._statistics = None

    # ---- metadata
    @property
    def num_trajectories(self) -> int:
        return int(self._ids.size)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self._manifest["layout"]["variables"])

    @property
    def grid(self) -> dict[str, Any]:
        """``Grid.to_dict()`` of the data plus ``coords`` (axis name -> values)."""
        grid = dict(self._manifest["layout"]["grid"])
        grid["coords"] = storage.grid_coords(grid)
        return grid

    @property
    def dt(self) -> float:
        return float(self._manifest["layout"]["dt"])

    @property
    def info(self) -> dict[str, Any]:
        return dataset_info(self.path)

    @property
    def statistics(self):
        """Training-split :class:`~datasets.statistics.Statistics` (loaded, or computed)."""
        if self._statistics is None:
            from datasets.statistics import (
                StaleStatisticsError,
                compute_statistics,
                load_statistics,
            )

            try:
                self._statistics = load_statistics(self.path)
            except (FileNotFoundError, StaleStatisticsError):
                try:
                    self._statistics = compute_statistics(self.path)
                except OSError:  # read-only dataset directory: compute without storing
                    self._statistics = compute_statistics(self.path, store=False)
        return self._statistics

    def trajectories(self) -> np.ndarray:
        """The whole split ``(N, T, C, *spatial)`` of ``dtype`` (for evaluation)."""
        if self._data is not None:
            return self._data
        return load_trajectories(self.path, self.split, self.dtype)

    def _gather(self, rows: np.ndarray, t0: np.ndarray) -> np.ndarray:
        if self._data is not None:
            return self._data[rows[:, None], t0[:, None] + np.arange(self.window_length)]
        return self._read_windows(rows, t0)

    # ---- lazy reads
    def _build_locator(self):
        files, local = [], []
        self._shards = {}
        for shard, rows in shard_rows(self._manifest, self._ids):
            files.extend([self.path / shard["file"]] * rows.size)
            local.extend(rows.tolist())
            self._shards[self.path / shard["file"]] = shard
        return files, np.asarray(local)

    def _read_windows(self, rows: np.ndarray, t0: np.ndarray) -> np.ndarray:
        files, local = self._locate
        layout = self._manifest["layout"]
        out = np.empty((rows.size, self.window_length, *layout["state_shape"]), self.dtype)
        # Sorted reads: consecutive windows of one trajectory share decompressed chunks.
        for i in np.lexsort((t0, rows)):
            window = slice(int(t0[i]), int(t0[i]) + self.window_length)
            with _HDF5_LOCK:
                nc = self._handle(files[rows[i]])
                for c, v in enumerate(layout["variables"]):
                    out[i, :, c] = nc.variables[v][local[rows[i]], window]
        check_finite(
            out,
            self._ids[rows],
            t0,
            layout["variables"],
            layout["dt"],
            f"{self.path} ({self.split})",
        )
        return out

    def _handle(self, file: pathlib.Path):
        """An open netCDF4 handle from a small LRU cache (call under ``_HDF5_LOCK``)."""
        import netCDF4

        nc = self._handles.pop(file, None)
        if nc is None:
            verify_shard(self.path, self._shards[file])
            nc = netCDF4.Dataset(file, "r")
            nc.set_auto_mask(False)
        self._handles[file] = nc
        while len(self._handles) > _MAX_OPEN_FILES:
            self._handles.popitem(last=False)[1].close()
        return nc

    def close(self) -> None:
        """Close the files a lazy loader holds open (in-memory loaders hold none)."""
        with _HDF5_LOCK:
            while self._handles:
                self._handles.popitem()[1].close()


class ArrayLoader(_WindowBatches):
    """:class:`WindowLoader`'s batches from trajectories already in memory.

    The training contract is the window loader's, method for method: batch ``step`` is a
    pure function of ``(seed, step)`` (epoch ``e`` visits the windows in the order of
    ``numpy.random.default_rng([seed, e]).permutation(num_windows)``), windows are
    numbered trajectory-major, and ``batch``, ``window_indices``, ``iterate`` (with
    prefetching), ``statistics``, ``trajectories`` and the metadata attributes behave
    alike. On the same trajectories and arguments both loaders yield identical batches
    (tested), so ``surrogate.train`` takes either.

    Args:
        data: ``(N, T, C, *spatial)`` trajectories (``N`` trajectories of ``T`` frames of
            ``C`` variables; spatial axes ordered ``(..., y, x)``). Pass the training
            trajectories only: :attr:`statistics` are computed from all of them.
        batch_size: windows per batch ``B``.
        history: input frames per window (>= 1).
        horizon: target frames per window (>= 1).
        seed: shuffling seed (>= 0).
        shuffle: permute windows per epoch (else trajectory-major order).
        drop_last: drop a final partial batch of an epoch.
        prefetch: batches prepared ahead by :meth:`iterate`'s background thread (0: none).
        dtype: dtype of the returned arrays (``data`` is converted once, here).
        variables: the ``C`` variable names (default ``("u0", "u1", ...)``).
        dt: time between frames, in the data's time units (``None``: unknown).
        grid: a :class:`solvers.grid.Grid` or its ``to_dict()`` (``None``: unknown); its
            ``num_points`` must equal the spatial shape of ``data``.
        statistics: normalisation statistics to report (default: computed from ``data``
            with :func:`datasets.statistics.statistics_from_arrays`, on first access).

    Raises:
        ValueError: a bad argument (named, with the shape expected), or no window fits.
        NonFiniteDataError: ``data`` holds NaN/Inf (naming the trajectory and frame).
    """

    def __init__(
        self,
        data: np.ndarray,
        *,
        batch_size: int,
        history: int = 1,
        horizon: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        prefetch: int = 2,
        dtype: str | np.dtype = "float32",
        variables: tuple[str, ...] | list[str] | None = None,
        dt: float | None = None,
        grid: Any = None,
        statistics: Any = None,
    ) -> None:
        _check_loader_ints(
            "ArrayLoader",
            batch_size=(batch_size, 1),
            history=(history, 1),
            horizon=(horizon, 1),
            seed=(seed, 0),
            prefetch=(prefetch, 0),
        )
        self.batch_size, self.history, self.horizon = int(batch_size), int(history), int(horizon)
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.prefetch = int(prefetch)
        self.dtype = np.dtype(dtype)
        raw = np.asarray(data)
        if raw.ndim < 4 or not np.issubdtype(raw.dtype, np.number):
            raise ValueError(
                "ArrayLoader: data must be a real array of shape (num_trajectories, "
                f"num_frames, num_variables, *spatial), got shape {raw.shape} and dtype "
                f"{raw.dtype}"
            )
        self._data = np.ascontiguousarray(raw, dtype=self.dtype)
        n, self.num_frames, c = self._data.shape[:3]
        names = tuple(f"u{i}" for i in range(c)) if variables is None else tuple(variables)
        if len(names) != c:
            raise ValueError(
                f"ArrayLoader: variables names {len(names)} variable(s) {list(names)}, but "
                f"data (shape {raw.shape}) has {c} on axis 2"
            )
        self._variables = names
        if dt is not None and not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"ArrayLoader: dt must be a finite number > 0, got {dt!r}")
        self._dt = None if dt is None else float(dt)
        self._grid = None
        if grid is not None:
            grid = grid.to_dict() if hasattr(grid, "to_dict") else dict(grid)
            if tuple(grid.get("num_points", ())) != self._data.shape[3:]:
                raise ValueError(
                    f"ArrayLoader: grid num_points {grid.get('num_points')} differ from the "
                    f"spatial shape {self._data.shape[3:]} of data (shape {raw.shape})"
                )
            self._grid = grid
        self.window_length = self.history + self.horizon
        self.windows_per_trajectory = self.num_frames - self.window_length + 1
        if n == 0:
            raise ValueError(f"ArrayLoader: data holds no trajectories (shape {raw.shape})")
        if self.windows_per_trajectory < 1:
            raise ValueError(
                f"ArrayLoader: history + horizon = {self.window_length} exceeds the "
                f"{self.num_frames} frames per trajectory of data (shape {raw.shape})"
            )
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"ArrayLoader: batch_size {batch_size} exceeds the {self.num_windows} windows "
                "of data with drop_last=True"
            )
        check_finite(
            self._data,
            np.arange(n),
            None,
            names,
            self._dt or 1.0,
            "ArrayLoader: data",
            "training on them would diverge: drop or repair that trajectory",
        )
        self.in_memory = True
        self._perm_cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._statistics = statistics

    @property
    def num_trajectories(self) -> int:
        return int(self._data.shape[0])

    @property
    def variables(self) -> tuple[str, ...]:
        return self._variables

    @property
    def dt(self) -> float | None:
        return self._dt

    @property
    def grid(self) -> dict[str, Any] | None:
        """``Grid.to_dict()`` of the data plus ``coords`` (axis name -> values), or None."""
        if self._grid is None:
            return None
        return {**self._grid, "coords": storage.grid_coords(self._grid)}

    @property
    def statistics(self):
        """:class:`~datasets.statistics.Statistics` of all of ``data`` (or those given)."""
        if self._statistics is None:
            from datasets.statistics import statistics_from_arrays

            self._statistics = statistics_from_arrays(self._data, self._variables)
        return self._statistics

    def trajectories(self) -> np.ndarray:
        """All trajectories ``(N, T, C, *spatial)`` of ``dtype``."""
        return self._data

    def _gather(self, rows: np.ndarray, t0: np.ndarray) -> np.ndarray:
        return self._data[rows[:, None], t0[:, None] + np.arange(self.window_length)]

    def close(self) -> None:
        """Nothing to close (for symmetry with :class:`WindowLoader`)."""


def _count(start: int) -> Iterator[int]:
    while True:
        yield start
        start += 1


__all__ = [
    "ArrayLoader",
    "NonFiniteDataError",
    "WindowLoader",
    "check_finite",
    "find_nonfinite",
    "dataset_identity",
    "dataset_info",
    "load_trajectories",
    "open_dataset",
    "verify_shard",
]
