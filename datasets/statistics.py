"""Normalisation statistics of a dataset, from its training split only.

Per variable ``c`` over training trajectories ``n``, frames ``t`` and grid points ``x``:

    state_mean[c] = mean_{n,t,x} u[n,t,c,x]          state_std[c]  (population std)
    delta_mean[c] = mean_{n,t,x} (u[n,t+1,c,x] - u[n,t,c,x])      delta_std[c]
    climatology[c, x] = mean_{n,t} u[n,t,c,x]        (for anomaly correlation)

Computed in float64 in one streamed pass, shard by shard (Chan et al.'s pairwise update
of mean and sum of squared deviations, so memory does not grow with the dataset and the
variance does not cancel catastrophically), and stored as ``statistics.nc`` in the dataset
directory, tagged with the dataset fingerprint so stale statistics are refused.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from datasets import storage
from datasets.manifest import (
    STATISTICS_NAME,
    dataset_dir,
    fingerprint,
    read_manifest,
    shard_rows,
    stored_trajectories,
)
from datasets.plumbing import atomic_path


class StaleStatisticsError(ValueError):
    """``statistics.nc`` was computed for another version of the dataset's data."""


@dataclasses.dataclass(frozen=True, eq=False)
class Statistics:
    """Per-variable normalisation statistics (float64 numpy arrays).

    Attributes:
        variables: channel names, length ``C``.
        state_mean, state_std: ``(C,)`` mean and standard deviation of the states.
        delta_mean, delta_std: ``(C,)`` of the one-step changes ``u(t + dt) - u(t)``.
        climatology: ``(C, *spatial)`` mean field over trajectories and time.
        num_trajectories: training trajectories they were computed from.
    """

    variables: tuple[str, ...]
    state_mean: np.ndarray
    state_std: np.ndarray
    delta_mean: np.ndarray
    delta_std: np.ndarray
    climatology: np.ndarray
    num_trajectories: int = 0

    def __post_init__(self) -> None:
        c = len(self.variables)
        object.__setattr__(self, "variables", tuple(str(v) for v in self.variables))
        for name in ("state_mean", "state_std", "delta_mean", "delta_std", "climatology"):
            value = np.array(getattr(self, name), dtype=np.float64)
            value.setflags(write=False)
            object.__setattr__(self, name, value)
            if name != "climatology" and value.shape != (c,):
                raise ValueError(f"Statistics.{name} must have shape ({c},), got {value.shape}")
        if self.climatology.ndim < 2 or self.climatology.shape[0] != c:
            raise ValueError(
                f"Statistics.climatology must have shape ({c}, *spatial), "
                f"got {self.climatology.shape}"
            )

    def __repr__(self) -> str:
        def fmt(a: np.ndarray) -> str:
            return "[" + ", ".join(f"{x:.4g}" for x in a) + "]"

        return (
            f"Statistics(variables={self.variables}, state_mean={fmt(self.state_mean)}, "
            f"state_std={fmt(self.state_std)}, delta_mean={fmt(self.delta_mean)}, "
            f"delta_std={fmt(self.delta_std)}, climatology.shape={self.climatology.shape}, "
            f"num_trajectories={self.num_trajectories})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (for bundling with a trained model; no pickle)."""
        return {
            "variables": list(self.variables),
            "state_mean": self.state_mean.tolist(),
            "state_std": self.state_std.tolist(),
            "delta_mean": self.delta_mean.tolist(),
            "delta_std": self.delta_std.tolist(),
            "climatology": self.climatology.tolist(),
            "num_trajectories": self.num_trajectories,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Statistics:
        """Inverse of :meth:`to_dict`."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


class _Moments:
    """Running count, mean and sum of squared deviations per channel (Chan's update)."""

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, x: np.ndarray) -> None:
        """``x``: ``(n, T, C, *spatial)`` float64."""
        axes = tuple(i for i in range(x.ndim) if i != 2)
        n = x.size // x.shape[2]
        if n == 0:
            return
        mean = x.mean(axis=axes)
        shape = [1] * x.ndim
        shape[2] = -1
        m2 = ((x - mean.reshape(shape)) ** 2).sum(axis=axes)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)


def compute_statistics(
    path: str | pathlib.Path, *, split: str = "train", store: bool = True
) -> Statistics:
    """Compute normalisation statistics from one split (training by default).

    Args:
        path: dataset directory (or its ``manifest.json``).
        split: the split to use; statistics must come from training data only.
        store: also write ``statistics.nc`` into the dataset directory (atomically).

    Returns:
        The :class:`Statistics`.

    Raises:
        ValueError: the split holds no trajectories.
        storage.ShardIntegrityError: a shard's bytes differ from the manifest's record.
        NonFiniteDataError: the split holds NaN/Inf (naming the trajectory and frame).
    """
    from datasets.loading import check_finite, verify_shard

    directory = dataset_dir(path)
    manifest = read_manifest(directory)
    layout = manifest["layout"]
    variables = layout["variables"]
    trajectories = stored_trajectories(manifest, split)
    if trajectories.size == 0:
        raise ValueError(f"split {split!r} of {directory} holds no trajectories")

    def shards() -> Iterator[np.ndarray]:
        at = 0  # shard_rows keeps the (sorted) order of ``trajectories``
        for shard, rows in shard_rows(manifest, trajectories):
            file = verify_shard(directory, shard)
            x = storage.read_frames(file, variables, rows, dtype=np.float64)
            ids = trajectories[at : at + rows.size]
            check_finite(x, ids, None, variables, layout["dt"], str(file))
            at += rows.size
            yield x

    stats = _accumulate(shards(), variables, tuple(layout["state_shape"]))
    if store:
        write_statistics(directory, stats, manifest, split)
    return stats


def _accumulate(
    chunks: Iterable[np.ndarray], variables: Sequence[str], state_shape: tuple[int, ...]
) -> Statistics:
    """The module formulas over chunks ``(n, T, C, *spatial)`` of float64 trajectories."""
    states, deltas = _Moments(len(variables)), _Moments(len(variables))
    clim = np.zeros(state_shape)
    frames = trajectories = 0
    for x in chunks:
        states.add(x)
        deltas.add(np.diff(x, axis=1))
        clim += x.sum(axis=(0, 1))
        frames += x.shape[0] * x.shape[1]
        trajectories += x.shape[0]
    return Statistics(
        variables=tuple(variables),
        state_mean=states.mean,
        state_std=states.std,
        delta_mean=deltas.mean,
        delta_std=deltas.std,
        climatology=clim / frames,
        num_trajectories=int(trajectories),
    )


def statistics_from_arrays(
    data: np.ndarray,
    variables: Sequence[str],
    *,
    chunk_trajectories: int | None = None,
) -> Statistics:
    """Normalisation statistics of in-memory trajectories, as :func:`compute_statistics`.

    Same formulas (module docstring), same float64 streamed accumulation: fed the same
    trajectories in the same chunks (one chunk per shard of a dataset written by
    :func:`datasets.from_arrays` with ``trajectories_per_shard = chunk_trajectories``),
    the result equals :func:`compute_statistics` of that dataset bit for bit; in other
    chunks it agrees to float64 round-off.

    Args:
        data: ``(N, T, C, *spatial)`` trajectories (pass the training split only), any
            real dtype; converted to float64 one chunk at a time.
        variables: the ``C`` channel names.
        chunk_trajectories: trajectories per accumulation chunk (default: all at once);
            bounds the float64 working memory.

    Returns:
        The :class:`Statistics` (``num_trajectories = N``).

    Raises:
        ValueError: ``data`` has fewer than 2 frames, no trajectory, a channel count other
            than ``len(variables)``, or holds NaN/Inf (naming trajectory, variable, frame);
            ``chunk_trajectories`` is not an int >= 1.
    """
    from datasets.loading import check_finite

    data = np.asarray(data)
    variables = tuple(str(v) for v in variables)
    if data.ndim < 4 or data.shape[0] < 1 or data.shape[1] < 2:
        raise ValueError(
            "statistics_from_arrays: data must have shape (num_trajectories >= 1, "
            f"num_frames >= 2, num_variables, *spatial), got {data.shape}"
        )
    if data.shape[2] != len(variables):
        raise ValueError(
            f"statistics_from_arrays: data has {data.shape[2]} variable(s) on axis 2 (shape "
            f"{data.shape}), but variables names {len(variables)}: {list(variables)}"
        )
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"statistics_from_arrays: data must be real numbers, got {data.dtype}")
    n = data.shape[0]
    step = n
    if chunk_trajectories is not None:
        from solvers.base import check_int

        step = check_int("statistics_from_arrays", "chunk_trajectories", chunk_trajectories, 1)

    def chunks() -> Iterator[np.ndarray]:
        for lo in range(0, n, step):
            x = data[lo : lo + step].astype(np.float64)
            ids = np.arange(lo, lo + x.shape[0])
            check_finite(
                x,
                ids,
                None,
                variables,
                1.0,
                "statistics_from_arrays: data",
                "statistics would be NaN: drop or repair that trajectory",
            )
            yield x

    return _accumulate(chunks(), variables, tuple(data.shape[2:]))


def write_statistics(
    directory: pathlib.Path, stats: Statistics, manifest: Mapping, split: str = "train"
) -> None:
    """Store ``stats`` as ``statistics.nc`` of a dataset, tagged with its fingerprint.

    Args:
        directory: the dataset directory.
        stats: statistics of ``split`` of the dataset ``manifest`` describes.
        manifest: the dataset's manifest (for the fingerprint and the grid axes).
        split: the split they were computed from (recorded).
    """
    import xarray as xr

    axes = manifest["layout"]["grid"]["axes"]
    # Each row is in its variable's units (variable_units), so the arrays carry no single
    # ``units`` attribute; long_name and comment say so (CF-1.10, 0 checker errors).
    per_var = {"comment": "in the units of each variable (coordinate variable_units)"}
    units = manifest["layout"].get("units", {})
    ds = xr.Dataset(
        {
            "state_mean": (
                "variable",
                stats.state_mean,
                {"long_name": "mean of the state over training frames and space"} | per_var,
            ),
            "state_std": (
                "variable",
                stats.state_std,
                {"long_name": "standard deviation of the state (ddof=0)"} | per_var,
            ),
            "delta_mean": (
                "variable",
                stats.delta_mean,
                {"long_name": "mean of the one-interval change of the state"} | per_var,
            ),
            "delta_std": (
                "variable",
                stats.delta_std,
                {"long_name": "standard deviation of the one-interval change (ddof=0)"} | per_var,
            ),
            "climatology": (
                ("variable", *axes),
                stats.climatology,
                {"long_name": "time and trajectory mean of the state per grid point"} | per_var,
            ),
        },
        coords={
            "variable": np.asarray(stats.variables, dtype=object),
            "variable_units": (
                "variable",
                np.asarray([str(units.get(v, "1")) for v in stats.variables], dtype=object),
                {"long_name": "units of each variable"},
            ),
        },
        attrs={
            "Conventions": "CF-1.10",
            "history": "written by datasets.compute_statistics",
            "title": "normalisation statistics",
            "split": split,
            "num_trajectories": stats.num_trajectories,
            "dataset_fingerprint": fingerprint(manifest),
            "comment": "delta = frame t+1 minus frame t of the same trajectory; std with ddof=0",
        },
    )
    for name in ds.data_vars:
        ds[name].encoding = {"_FillValue": None}
    final = directory / STATISTICS_NAME
    with storage.naming_write_errors(final, int(ds.nbytes)), atomic_path(final) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")


def load_statistics(path: str | pathlib.Path) -> Statistics:
    """Load ``statistics.nc`` of a dataset, refusing statistics of other data.

    Raises:
        FileNotFoundError: none stored yet (call :func:`compute_statistics`).
        StaleStatisticsError: they were computed for a different version of the dataset.
        ValueError: the file is corrupt: unreadable, NaN/Inf or a negative standard
            deviation, or shapes/variables that do not match the dataset (the message
            names the file and the field).
    """
    import xarray as xr

    directory = dataset_dir(path)
    file = directory / STATISTICS_NAME
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} not found; call datasets.compute_statistics({directory!s})"
        )
    manifest = read_manifest(directory)
    fix = f"delete it, or call datasets.compute_statistics({str(directory)!r}) to recompute"
    try:
        with xr.open_dataset(file, engine="netcdf4") as ds:
            ds = ds.load()
    except Exception as e:  # noqa: BLE001 - netCDF4/xarray raise many types; all mean corrupt
        raise ValueError(f"{file} is unreadable ({type(e).__name__}: {e}); {fix}") from None
    if ds.attrs.get("dataset_fingerprint") != fingerprint(manifest):
        raise StaleStatisticsError(
            f"{file} was computed for different data than {directory} now holds (the dataset "
            "was regenerated); call datasets.compute_statistics to recompute"
        )
    layout = manifest["layout"]
    c = len(layout["variables"])
    expected = {
        "state_mean": (c,),
        "state_std": (c,),
        "delta_mean": (c,),
        "delta_std": (c,),
        "climatology": tuple(layout["state_shape"]),
    }
    fields = {}
    for name, shape in expected.items():
        if name not in ds:
            raise ValueError(f"{file} lacks variable {name!r}; {fix}")
        value = np.asarray(ds[name].values, dtype=np.float64)
        if value.shape != shape:
            raise ValueError(
                f"{file}: {name} has shape {value.shape}, expected {shape} for the "
                f"{c} variable(s) {list(layout['variables'])} of {directory}; {fix}"
            )
        if not np.isfinite(value).all():
            raise ValueError(f"{file}: {name} holds NaN/Inf ({_head(value)}); {fix}")
        if name.endswith("_std") and (value < 0).any():
            raise ValueError(f"{file}: {name} is negative ({_head(value)}); {fix}")
        fields[name] = value
    variables = tuple(str(v) for v in ds["variable"].values) if "variable" in ds.coords else ()
    if variables != tuple(layout["variables"]):
        raise ValueError(
            f"{file} is for variables {list(variables)}, the dataset has "
            f"{list(layout['variables'])}; {fix}"
        )
    return Statistics(
        variables=variables, num_trajectories=int(ds.attrs.get("num_trajectories", 0)), **fields
    )


def _head(a: np.ndarray) -> str:
    flat = np.ravel(a)
    return "[" + ", ".join(f"{x:.4g}" for x in flat[:4]) + (", ...]" if flat.size > 4 else "]")
