"""Hydra entry point: ``python -m datasets.cli [solver=...] [data=...] [data.key=value ...]``.

Builds ``cfg.solver`` with ``hydra.utils.instantiate`` and calls :func:`datasets.generate`
with the ``data`` node: ``data.path`` is the dataset directory, every other key is a
keyword argument of ``generate``. The resolved ``solver`` and ``data`` nodes (without the
keys that do not change the data: path, batch size, workers, progress, overwrite) are
stored in the dataset as provenance. The only module of the package that imports Hydra.

Examples::

    python -m datasets.cli                                   # default KS dataset
    python -m datasets.cli solver=navier_stokes_2d data.num_trajectories=64
    python -m datasets.cli data=tiny data.path=/tmp/ks-tiny
"""

from __future__ import annotations

import pathlib
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf


def run(cfg: DictConfig) -> pathlib.Path:
    """Generate the dataset a composed config describes; return its directory.

    Raises:
        solvers.config_schema.ConfigError: a misspelled or mistyped ``data`` key.
        solvers.UntrustedCodeError: ``solver._target_`` outside the trusted code
            (:func:`solvers.trust_module`); nothing was imported for it.
    """
    import jax

    from datasets.generation import generate
    from datasets.provenance import RUNTIME_KEYS
    from solvers.config_schema import check_kwargs
    from solvers.registry import resolve_trusted

    data: dict[str, Any] = OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[assignment]
    solver_node: dict[str, Any] = OmegaConf.to_container(cfg.solver, resolve=True)  # type: ignore[assignment]
    if "path" not in data:
        raise ValueError("data: key 'path' (the dataset directory) is missing")
    path = pathlib.Path(hydra.utils.to_absolute_path(str(data.pop("path"))))
    check_kwargs(generate, data, where="data", runtime=("solver", "out_dir", "config"))
    # Only this project's or trusted code is ever built from a config (refused unimported).
    resolve_trusted(solver_node.get("_target_"), where="solver._target_")
    # Float64 solvers need 64-bit JAX before they are built.
    jax.config.update("jax_enable_x64", solver_node.get("precision") == "float64")
    solver = hydra.utils.instantiate(cfg.solver, _convert_="all")  # plain lists, not ListConfig
    provenance = {
        "solver": solver_node,
        "data": {k: v for k, v in data.items() if k not in RUNTIME_KEYS},
    }
    out = generate(solver, path, **data, config=provenance)
    print(f"dataset ready: {out}")
    return out


@hydra.main(version_base=None, config_path="../configs", config_name="config")
def generate(cfg: DictConfig) -> None:
    """Hydra main: see the module docstring."""
    from solvers.allocator import retain_freed_memory

    retain_freed_memory()  # before JAX's threads exist (see solvers.allocator)
    run(cfg)


if __name__ == "__main__":
    generate()
