"""What a generated dataset records about how it was made, and rebuilding its solver.

- the *spec* (:func:`generation_spec`): everything that determines the bytes, as plain
  JSON values, including the run config without :data:`RUNTIME_KEYS`
  (:func:`provenance_config`) and this package's version (:func:`package_version`);
- the *layout* (:func:`solver_layout`): variables, units, grid, ``dt``, precision;
- a coarse-grained dataset's ``coarse_graining`` record (:func:`coarse_graining_record`,
  read back by :func:`stored_num_points`);
- the solver: its contract is checked before anything is written (:func:`check_solver`),
  its class recorded (:func:`solver_class_path`) and rebuilt from a manifest only from
  trusted code (:func:`rebuild_solver`); :func:`warn_if_not_rebuildable` says at
  generation time when that rebuild will fail elsewhere;
- the versions of the libraries that write the bytes (:func:`library_versions`).
"""

from __future__ import annotations

import logging
import os
import pathlib
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from datasets.manifest import MANIFEST_NAME
from datasets.plumbing import distribution_versions, package_version
from datasets.storage import normalise
from solvers.base import is_int
from solvers.stepper import Stepper

log = logging.getLogger("datasets")


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


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produce the shard bytes (recorded, not compared).

    Returns:
        ``{"jax", "numpy", "xarray", "netCDF4"}`` as installed
        (:func:`datasets.plumbing.distribution_versions`), the C libraries ``netcdf-c``
        and ``hdf5`` that netCDF4 links, and ``python``, in that order.
    """
    import netCDF4

    return {
        **distribution_versions(("jax", "numpy", "xarray", "netCDF4")),
        "netcdf-c": netCDF4.__netcdf4libversion__,
        "hdf5": netCDF4.__hdf5libversion__,
        "python": platform.python_version(),
    }


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


def check_solver(solver: Stepper) -> None:
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


def solver_layout(solver: Stepper, store_num_points: Sequence[int] | None = None) -> dict[str, Any]:
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
    solver: Stepper, store_num_points: int | Sequence[int] | None
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
        if not (isinstance(points, list) and points and all(is_int(n) and n >= 2 for n in points)):
            raise ValueError(f"coarse_graining.{key} = {points!r} is not a list of ints >= 2")
    return tuple(record["num_points"])


def generation_spec(
    solver: Stepper,
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


def solver_class_path(solver: Stepper) -> str:
    """``"module:QualName"`` of the solver's class (to rebuild unregistered solvers)."""
    cls = type(solver)
    return f"{cls.__module__}:{cls.__qualname__}"


def warn_if_not_rebuildable(solver: Stepper, out: pathlib.Path) -> None:
    """Warn, at generation time, when validation elsewhere will not rebuild this solver.

    Validation rebuilds unregistered solvers from ``solver_class`` only inside trusted
    modules (:func:`solvers.trust_module`), and no other process can import a class
    defined in a script (``__main__``): the mirror of :func:`rebuild_solver`.

    Args:
        solver: the live solver a new dataset is generated with.
        out: the dataset directory, named in the warnings (logger ``"datasets"``).
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
