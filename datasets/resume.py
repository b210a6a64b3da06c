"""Starting, resuming and finishing a dataset directory: its manifest between runs.

:func:`already_complete` tells, read-only and without the lock, whether a directory
holds the requested dataset complete and intact. Otherwise, under the writer lock,
:func:`prepare_manifest` loads the manifest to resume (keeping the shards whose bytes
still match their sha256) or starts a new one, refusing a directory that holds another
dataset (naming what differs). :func:`record_event` appends to the history;
:func:`check_splits_stored` and :func:`ensure_statistics` finish a run.
"""

from __future__ import annotations

import datetime
import logging
import pathlib
import platform
import sys
from collections.abc import Mapping
from typing import Any

from datasets import storage
from datasets.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STATISTICS_NAME,
    ManifestError,
    describe_differences,
    read_manifest,
    remove_dataset_files,
    split_ranges,
    stored_trajectories,
)
from datasets.provenance import library_versions, solver_class_path, warn_if_not_rebuildable
from solvers.stepper import Stepper

log = logging.getLogger("datasets")


def already_complete(out: pathlib.Path, spec: dict) -> bool:
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


def prepare_manifest(
    out: pathlib.Path, spec: dict, layout: dict, solver: Stepper, overwrite: bool
) -> dict[str, Any]:
    """Load the manifest to resume from, or start a new one (under the writer lock).

    Args:
        out: the dataset directory.
        spec: the requested :func:`datasets.provenance.generation_spec`.
        layout: the requested :func:`datasets.provenance.solver_layout`.
        solver: the live solver (its class path is recorded in a new manifest).
        overwrite: remove whatever dataset files ``out`` holds and start afresh.

    Returns:
        The manifest (not yet written): a stored one keeps only the shards whose size
        and sha256 still match (``complete`` turns False when one was dropped); a new
        one has no shards.

    Raises:
        FileExistsError: without ``overwrite``, ``out`` holds a dataset with another
            spec (what differs is named), an unfinished one from another package
            version, an unreadable manifest, or shard files without a manifest.
    """
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
            remove_dataset_files(out)
    else:
        strays = sorted(out.glob(f"{storage.SHARD_PREFIX}*{storage.SHARD_SUFFIX}"))
        if strays and not overwrite:
            raise FileExistsError(
                f"{out} holds shard files ({strays[0].name}, ...) but no {MANIFEST_NAME}: "
                "not a dataset this package can resume; pass overwrite=True to replace them"
            )
        remove_dataset_files(out)
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
    warn_if_not_rebuildable(solver, out)
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


def record_event(manifest: dict, event: str, batch_size: int, workers: int) -> None:
    """Append ``event`` (``"started"``, ``"resumed"``, ``"completed"``) to the history.

    The entry holds the time, command line and host: kept in the manifest, out of the
    shards, so that their bytes do not depend on them.
    """
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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def check_splits_stored(out: pathlib.Path, manifest: Mapping[str, Any]) -> None:
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


def ensure_statistics(out: pathlib.Path, manifest: Mapping[str, Any]) -> None:
    """Compute ``statistics.nc`` unless present or the stored train split is empty."""
    if _needs_statistics(out, manifest):
        from datasets.statistics import compute_statistics

        compute_statistics(out)
