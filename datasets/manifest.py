"""The dataset manifest: one JSON file that names the shards and holds the provenance.

``manifest.json`` is the single source of truth of a dataset directory. Its keys:

- ``format``, ``format_version``: ``"hybrid-surrogates-dataset"``, ``1``.
- ``spec``: every input that determines the shard bytes (solver name and config, counts,
  seed, spin-up, shard size, split fractions, non-finite policy, stored run config,
  package version). A rerun resumes only when its spec is equal.
- ``layout``: ``variables``, ``units``, ``long_names``, ``time_units``, ``grid``
  (``Grid.to_dict()``), ``dt``, ``precision``, ``state_shape``.
- ``solver``, ``solver_class`` (``"module:QualName"``), ``solver_config``.
- ``splits``: ``{name: [start, stop)}`` contiguous trajectory index ranges.
- ``shards``: finished shards, each ``{"index", "file", "trajectories": [start, stop],
  "stored", "skipped", "sha256", "size"}``; ``skipped`` lists the trajectories dropped
  for non-finite values (``{"trajectory", "frame", "time"}``).
- ``complete``, ``created``, ``history`` (timestamped events), ``libraries``.

Timestamps live here and only here, so the shard files stay byte-deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from datasets import storage
from datasets.plumbing import canonical_json

MANIFEST_NAME = "manifest.json"
STATISTICS_NAME = "statistics.nc"
FORMAT = "hybrid-surrogates-dataset"
FORMAT_VERSION = 1
DEFAULT_SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


class ManifestError(ValueError):
    """A dataset directory has no readable, well-formed manifest."""


def dataset_dir(path: str | pathlib.Path) -> pathlib.Path:
    """The dataset directory of ``path`` (a directory or its ``manifest.json``)."""
    p = pathlib.Path(path)
    return p.parent if p.name == MANIFEST_NAME else p


def read_manifest(path: str | pathlib.Path) -> dict[str, Any]:
    """Load and minimally check ``manifest.json`` of a dataset directory.

    Raises:
        FileNotFoundError: no such directory or no manifest in it.
        NotADirectoryError: ``path`` is a file (e.g. a ``.nc``), not a dataset directory;
            the message points to :func:`datasets.from_xarray`.
        ManifestError: the manifest is not JSON or not a dataset manifest.
    """
    directory = dataset_dir(path)
    file = directory / MANIFEST_NAME
    if directory.is_file():
        raise NotADirectoryError(
            f"{directory} is a file, but a dataset directory (written by datasets.generate, "
            "datasets.from_arrays or datasets.from_xarray) was expected; to train on "
            "trajectories stored in a netCDF/HDF5 file, convert it once: "
            f"datasets.from_xarray(OUT_DIR, xr.open_dataset({str(directory)!r}), ...) "
            "and pass OUT_DIR here"
        )
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset directory {directory} does not exist")
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} not found: {directory} is not a dataset directory (or its generation "
            "never started)"
        )
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{file} is not a {FORMAT!r} manifest (key 'format' missing/wrong)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{file}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this package reads {FORMAT_VERSION})"
        )
    missing = [
        k
        for k in ("spec", "layout", "splits", "shards", "solver", "solver_config")
        if k not in manifest
    ]
    if missing:
        raise ManifestError(f"{file} lacks key(s) {missing}")
    check_shard_files(manifest["shards"], file)
    return manifest


def check_shard_files(shards: Any, file: str | pathlib.Path = MANIFEST_NAME) -> None:
    """Refuse shard records whose ``file`` could lead outside the dataset directory.

    A manifest may come from someone else; readers join ``file`` to the dataset
    directory, so it must be a plain file name there: not absolute, no ``..``, no
    sub-directory.

    Args:
        shards: the manifest's ``shards`` list.
        file: the manifest file, for messages.

    Raises:
        ManifestError: naming the file and the entry.
    """
    if not isinstance(shards, list):
        raise ManifestError(f"{file}: key 'shards' must be a list, got {type(shards).__name__}")
    for i, shard in enumerate(shards):
        if not isinstance(shard, Mapping):
            raise ManifestError(f"{file}: shards[{i}] must be an object, got {shard!r}")
        name = shard.get("file")
        if (
            not isinstance(name, str)
            or name in ("", ".", "..")
            or any(c in name for c in "/\\\0")
            or pathlib.PureWindowsPath(name).drive
        ):
            raise ManifestError(
                f"{file}: shards[{i}].file = {name!r} is not a file name inside the dataset "
                "directory (absolute paths, '..' and sub-directories are refused)"
            )


def check_splits(splits: Mapping[str, float]) -> dict[str, float]:
    """Validate split fractions: names are non-empty strings, values >= 0 summing to 1.

    Raises:
        ValueError: naming the bad split.
    """
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError(f"splits must be a non-empty mapping name -> fraction, got {splits!r}")
    out = {}
    for name, frac in splits.items():
        if not isinstance(name, str) or not name or name.strip() != name:
            raise ValueError(f"splits: names must be non-empty strings, got {name!r}")
        if not isinstance(frac, int | float) or not math.isfinite(frac) or frac < 0:
            raise ValueError(f"splits: fraction of {name!r} must be a number >= 0, got {frac!r}")
        out[name] = float(frac)
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"splits: fractions must sum to 1, got {total} from {out}")
    return out


def split_ranges(num_trajectories: int, splits: Mapping[str, float]) -> dict[str, list[int]]:
    """Contiguous ``[start, stop)`` trajectory ranges per split, in the given order.

    Counts are ``fraction * num_trajectories`` rounded by largest remainder, so they sum
    to ``num_trajectories``. Trajectories are i.i.d. draws, so contiguous ranges are as
    random an assignment as a shuffled one and simpler to read.
    """
    fracs = check_splits(splits)
    exact = [f * num_trajectories for f in fracs.values()]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: num_trajectories - sum(counts)]:
        counts[i] += 1
    out, start = {}, 0
    for name, count in zip(fracs, counts, strict=True):
        out[name] = [start, start + count]
        start += count
    return out


def trajectory_splits(splits: Mapping[str, Any], trajectories: Any) -> list[str]:
    """The split name of each global trajectory index, from ``{name: [start, stop)}`` ranges.

    Args:
        splits: the manifest's ``splits`` (as :func:`split_ranges` returns).
        trajectories: ``(n,)`` global trajectory indices.

    Returns:
        ``n`` split names, in the order of ``trajectories``.

    Raises:
        ValueError: an index lies in no split's range (naming it and the ranges).
    """
    out = []
    for i in np.asarray(trajectories, dtype=np.int64).reshape(-1):
        names = [name for name, (lo, hi) in splits.items() if lo <= i < hi]
        if not names:
            raise ValueError(f"trajectory {int(i)} lies in no split range of {dict(splits)}")
        out.append(names[0])
    return out


def stored_ids(shard: Mapping[str, Any]) -> list[int]:
    """Global indices of the trajectories a shard stores, in its row order.

    Args:
        shard: a shard record of ``manifest["shards"]`` (``trajectories: [start, stop)``
            and the optional ``skipped`` list of trajectories dropped for NaN/Inf).

    Returns:
        ``start .. stop - 1`` without the skipped ones: row ``r`` of the shard file holds
        trajectory ``stored_ids(shard)[r]``.
    """
    start, stop = shard["trajectories"]
    skipped = {s["trajectory"] for s in shard.get("skipped", [])}
    return [i for i in range(start, stop) if i not in skipped]


def stored_trajectories(manifest: Mapping[str, Any], split: str | None = None) -> np.ndarray:
    """Sorted global indices of the trajectories present in finished shards (of a split).

    Raises:
        KeyError: unknown split name (the message lists the known ones).
    """
    present = [i for shard in manifest["shards"] for i in stored_ids(shard)]
    present = np.asarray(sorted(present), dtype=np.int64)
    if split is None:
        return present
    if split not in manifest["splits"]:
        raise KeyError(f"unknown split {split!r}; this dataset has {list(manifest['splits'])}")
    lo, hi = manifest["splits"][split]
    return present[(present >= lo) & (present < hi)]


def shard_rows(
    manifest: Mapping[str, Any], trajectories: np.ndarray
) -> list[tuple[dict, np.ndarray]]:
    """Group global trajectory indices by shard: ``[(shard_record, local_rows), ...]``.

    Local rows index the shard's ``trajectory`` dimension (skipped trajectories are not
    stored, so rows shift past them).
    """
    wanted = set(int(i) for i in trajectories)
    out = []
    for shard in manifest["shards"]:
        rows = [r for r, i in enumerate(stored_ids(shard)) if i in wanted]
        if rows:
            out.append((shard, np.asarray(rows, dtype=np.int64)))
    return out


def fingerprint(manifest: Mapping[str, Any]) -> str:
    """sha256 over the spec and the shard checksums: changes whenever the data can."""
    shards = [(s["file"], s["sha256"]) for s in manifest["shards"]]
    return hashlib.sha256(canonical_json([manifest["spec"], shards]).encode()).hexdigest()


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (for readable differences between specs)."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def describe_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Lines ``key: stored X, requested Y`` for every differing (dotted) key."""
    a, b = flatten(stored), flatten(requested)
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            lines.append(
                f"{k}: stored {a.get(k, '<absent>')!r}, requested {b.get(k, '<absent>')!r}"
            )
    return lines


def write_manifest(directory: pathlib.Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically: shards sorted by index, ``skipped`` gathered.

    Args:
        directory: the dataset directory.
        manifest: the manifest; its ``shards`` are sorted in place and its ``skipped``
            list rebuilt from the shard records.
    """
    manifest["shards"].sort(key=lambda s: s["index"])
    manifest["skipped"] = [b for s in manifest["shards"] for b in s.get("skipped", [])]
    storage.write_json_atomic(pathlib.Path(directory) / MANIFEST_NAME, manifest)


def remove_dataset_files(directory: pathlib.Path) -> None:
    """Delete only the files this package writes (shards, manifest, statistics)."""
    directory = pathlib.Path(directory)
    for p in directory.glob(f"{storage.SHARD_PREFIX}*{storage.SHARD_SUFFIX}"):
        p.unlink()
    for name in (MANIFEST_NAME, STATISTICS_NAME):
        (directory / name).unlink(missing_ok=True)
