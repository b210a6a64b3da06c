"""Self-contained forecaster bundles: weights (orbax) + one JSON description. No pickle.

Layout of a bundle directory::

    bundle.json   spec (model name and kwargs, variables, units, grid, dt, history,
                  compute dtype, provenance) and normalisation statistics
    weights/      orbax checkpoint of the network parameters (a pure dict of arrays)

The directory is written under a temporary name and renamed, so a crash never leaves
a half-written bundle under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from surrogate.forecaster import Forecaster, ForecasterSpec, Normalization, build_network

BUNDLE_FORMAT = "hybrid-surrogates.forecaster/1"


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


def save_forecaster(
    forecaster: Forecaster, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``forecaster`` as a bundle directory at ``path`` and return it.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """

    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"bundle {path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        weights = jax.tree.map(np.asarray, nnx.to_pure_dict(forecaster.params))
        with _local_checkpointer() as ckpt:
            ckpt.save(tmp / "weights", weights)
            ckpt.wait_until_finished()
        meta = {
            "format": BUNDLE_FORMAT,
            "spec": forecaster.spec.to_dict(),
            "normalization": forecaster.normalization.to_dict(),
        }
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    """

    path = Path(path).absolute()
    meta = read_bundle_metadata(path)
    spec = ForecasterSpec.from_dict(meta["spec"])
    normalization = Normalization.from_dict(meta["normalization"])
    network = build_network(spec, nnx.Rngs(0))
    graphdef, params = nnx.split(network)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.to_pure_dict(params)
    )
    with _local_checkpointer() as ckpt:
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
