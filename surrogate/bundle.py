"""Self-contained forecaster bundles: weights (orbax) + one JSON description. No pickle.

Layout of a bundle directory::

    bundle.json   spec (model name and kwargs, variables, units, grid, dt, history,
                  compute dtype, provenance), normalisation statistics, and the sha256
                  of every file under ``weights/``
    weights/      orbax checkpoint of the network parameters (a pure dict of arrays)

Loading verifies the checksums and that the stored parameters have exactly the shapes
the spec builds, so a flipped bit or an edited architecture is refused, naming the file
or the parameter.

Writing is atomic. The new bundle is written under a hidden temporary name next to the
final one (``.<name>.new-*``); when overwriting, the old bundle is renamed aside
(``.<name>.old-*``), the new one renamed in, then the old one deleted. A crash at any
point leaves the old or the new bundle, complete, under the final name, except between
the two renames, where the final name is briefly absent: the next load or save renames
the old bundle back. The next save also removes stale temporaries of earlier crashes.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from surrogate.forecaster import Forecaster, ForecasterSpec, Normalization, build_network

BUNDLE_FORMAT = "hybrid-surrogates.forecaster/1"

log = logging.getLogger("surrogate.bundle")


class BundleCorruptedError(ValueError):
    """A file of a bundle does not match the checksum recorded when it was written."""


# ---- integrity helpers (also used by the training checkpoints) --------------------------
def file_checksums(root: Path, *, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Hex sha256 of every file under ``root``, keyed by its POSIX path relative to ``root``.

    Args:
        root: a directory.
        exclude: relative paths to leave out (a checksum file kept inside ``root``).
    """
    from datasets.plumbing import sha256_file

    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in exclude:
            out[rel] = sha256_file(p)
    return out


def checksum_problems(root: Path, recorded: Mapping[str, str]) -> list[str]:
    """Each file of ``recorded`` (relative path -> sha256) missing or changed under ``root``."""
    from datasets.plumbing import sha256_file

    problems = []
    for rel, sha in sorted(recorded.items()):
        p = Path(root) / rel
        if not p.is_file():
            problems.append(f"{p} is missing")
        elif sha256_file(p) != sha:
            problems.append(f"{p} does not match its recorded sha256 (corrupted)")
    return problems


def shape_problems(expected: Any, stored: Any) -> list[str]:
    """Differences between two trees of arrays (or shape-carrying metadata), path by path.

    Args:
        expected: the tree the code builds (arrays or ``ShapeDtypeStruct``).
        stored: the tree a file holds (arrays or orbax ``ArrayMetadata``).

    Returns:
        One line per parameter path missing on either side or with another shape, naming
        both shapes; empty when the trees agree.
    """

    def name(key) -> str:
        return str(getattr(key, "key", getattr(key, "idx", key)))

    def shapes(tree) -> dict[str, tuple[int, ...]]:
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {"/".join(map(name, path)): tuple(leaf.shape) for path, leaf in leaves}

    want, have = shapes(expected), shapes(stored)
    problems = [f"{k}: expected but not stored" for k in sorted(want.keys() - have.keys())]
    problems += [f"{k}: stored but not expected" for k in sorted(have.keys() - want.keys())]
    problems += [
        f"{k}: stored shape {have[k]}, expected {want[k]}"
        for k in sorted(want.keys() & have.keys())
        if have[k] != want[k]
    ]
    return problems


def _local_checkpointer():
    """An orbax checkpointer acting for this process alone.

    A bundle holds host-local numpy weights, is written by one process (process 0 under
    ``jax.distributed``) and read by any; orbax's default would wait at barriers for
    every process of the job.
    """
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}
        )
    )


# ---- atomic replacement ------------------------------------------------------------------
def _temporaries(path: Path, kind: str = "") -> list[Path]:
    """Hidden sibling directories ``.<name>.<kind>*`` of ``path`` left by saves."""
    pattern = f".{glob.escape(path.name)}.{kind}*"
    return sorted(p for p in path.parent.glob(pattern) if p.is_dir())


def _is_complete(bundle: Path) -> bool:
    """Whether ``bundle`` holds a readable ``bundle.json`` whose weights match it."""
    try:
        meta = json.loads((bundle / "bundle.json").read_text())
    except (OSError, ValueError):
        return False
    return not checksum_problems(bundle, meta.get("checksums", {}))


def _repair_interrupted_swap(path: Path) -> None:
    """Put the old bundle back when a save died between its two renames."""
    if path.exists():
        return
    olds = [p for p in _temporaries(path, "old-") if _is_complete(p)]
    if not olds:
        return
    old = max(olds, key=lambda p: p.stat().st_mtime)
    try:
        os.rename(old, path)
    except OSError as e:
        raise FileNotFoundError(
            f"bundle {path} is absent: a save was interrupted while replacing it; the previous "
            f"bundle is intact at {old} but cannot be renamed back ({e})"
        ) from None
    log.warning(
        "bundle %s: a save was interrupted while replacing it; restored the previous one", path
    )


def save_forecaster(
    forecaster: Forecaster, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``forecaster`` as a bundle directory at ``path`` and return it.

    Atomic (see the module docstring): whatever the point of a crash, ``path`` then holds
    the old or the new bundle, never a partial one. One writer per bundle at a time.

    Args:
        forecaster: the forecaster to store.
        path: the bundle directory.
        overwrite: replace an existing bundle at ``path``.

    Returns:
        The absolute bundle path.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """

    from datasets.plumbing import canonical_json

    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    _repair_interrupted_swap(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"bundle {path} exists; pass overwrite=True to replace it")
    for stale in _temporaries(path):  # left by saves that crashed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    aside = None
    try:
        weights = jax.tree.map(np.asarray, nnx.to_pure_dict(forecaster.params))
        with _local_checkpointer() as ckpt:
            ckpt.save(tmp / "weights", weights)
            ckpt.wait_until_finished()
        meta = {
            "format": BUNDLE_FORMAT,
            "spec": forecaster.spec.to_dict(),
            "normalization": forecaster.normalization.to_dict(),
            "checksums": {f"weights/{k}": v for k, v in file_checksums(tmp / "weights").items()},
        }
        # Not atomic by itself: the whole directory is renamed into place below.
        (tmp / "bundle.json").write_text(canonical_json(meta, indent=2, allow_nan=True))
        if path.exists():
            aside = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:12]}")
            os.rename(path, aside)
        os.rename(tmp, path)
    except BaseException:
        if aside is not None and not path.exists():
            try:
                os.rename(aside, path)
            except OSError:
                pass  # the next load or save renames it back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if aside is not None:
        try:
            shutil.rmtree(aside)
        except OSError as e:  # the new bundle is in place; the next save retries
            log.warning("bundle %s: could not remove the replaced bundle %s (%s)", path, aside, e)
    return path


def read_bundle_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON description of a bundle (no weights loaded).

    Raises:
        FileNotFoundError: no ``bundle.json`` in ``path``.
        ValueError: not a bundle of this format.
    """
    path = Path(path)
    meta_path = path / "bundle.json"
    if not meta_path.is_file():
        _repair_interrupted_swap(path.absolute())
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a forecaster bundle (no bundle.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: invalid JSON ({e})") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    return meta


def load_forecaster(path: str | os.PathLike, *, solver=None, dataset_info=None) -> Forecaster:
    """Load a bundle written by :func:`save_forecaster`.

    Args:
        path: bundle directory.
        solver: if given, refuse (``ValueError``) unless grid, ``dt`` and variables match.
        dataset_info: likewise against a dataset description (``datasets.dataset_info``).

    Returns:
        The forecaster, parameters restored exactly.

    Raises:
        FileNotFoundError: ``path`` is not a bundle.
        BundleCorruptedError: a weights file is missing or differs from its recorded
            sha256 (bundles written before checksums were recorded are not checked).
        ValueError: the stored parameters do not have the shapes the spec builds (each
            parameter path named with both shapes), or the solver/dataset does not match.
    """

    path = Path(path).absolute()
    meta = read_bundle_metadata(path)
    problems = checksum_problems(path, meta.get("checksums", {}))
    if problems:
        raise BundleCorruptedError(
            f"bundle {path} is corrupted: " + "; ".join(problems) + "; save it again from "
            "its training checkpoint"
        )
    spec = ForecasterSpec.from_dict(meta["spec"])
    normalization = Normalization.from_dict(meta["normalization"])
    network = build_network(spec, nnx.Rngs(0))
    graphdef, params = nnx.split(network)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.to_pure_dict(params)
    )
    with _local_checkpointer() as ckpt:
        # orbax restores the stored shapes whatever the target says: compare first
        stored = ckpt.metadata(path / "weights").item_metadata.tree
        problems = shape_problems(abstract, stored)
        if problems:
            raise ValueError(
                f"bundle {path}: the weights do not match the spec in bundle.json (expected "
                f"from model {spec.model_name!r} {spec.model_kwargs}): " + "; ".join(problems)
            )
        restored = ckpt.restore(path / "weights", abstract)
    nnx.replace_by_pure_dict(params, restored)
    forecaster = Forecaster(spec, graphdef, params, normalization)
    if solver is not None:
        forecaster.check_solver(solver)
    if dataset_info is not None:
        forecaster.check_compatible(
            variables=dataset_info["variables"],
            grid=dataset_info["grid"],
            dt=dataset_info["dt"],
            source=f"dataset {dataset_info.get('path', '')}".strip(),
        )
    return forecaster
