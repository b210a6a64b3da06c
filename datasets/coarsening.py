"""One fine simulation, several coarse grids: derive a coarse-grained dataset from a stored one.

:func:`datasets.generate` with ``store_num_points`` runs the solver on its fine grid and
stores every frame projected onto one coarse grid. :func:`coarse_grain` projects a finished
dataset (the fine one, or one coarse-grained onto a finer grid than the target) onto a
further grid, without simulating again::

    datasets.generate(solver_128, "data/k64", store_num_points=64, ...)   # simulates once
    datasets.coarse_grain("data/k64", "data/k48", 48)                    # projections only
    datasets.coarse_grain("data/k64", "data/k32", 32)

Spectral truncation composes: the modes a 32^2 grid keeps lie strictly inside the 64^2
band, so ``128 -> 64 -> 32`` keeps the same Fourier coefficients as ``128 -> 32``. The
derived dataset therefore has the spec :func:`datasets.generate` would record for the target
grid (the fine solver, ``coarse_graining = {"filter": "spectral_truncation",
"fine_num_points": [...], "num_points": [...]}``); its frames equal a direct generation's
to float round-off (the projection runs outside the simulation's compiled program), and
:func:`datasets.validate` re-simulates sampled trajectories on the fine grid and compares
them after projection, as for any coarse-grained dataset. Where it came from (directory and
manifest fingerprint of the source) is recorded in the manifest's ``derived_from`` and in its
history. Like generation it is atomic per shard and resumable: killed and rerun, it keeps
the finished shards and writes the rest.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from datasets import storage
from datasets.manifest import (
    dataset_dir,
    fingerprint,
    read_manifest,
    split_ranges,
    stored_ids,
    trajectory_splits,
    write_manifest,
)
from datasets.provenance import (
    coarse_graining_record,
    rebuild_solver,
    solver_layout,
    stored_num_points,
)
from datasets.resume import (
    check_splits_stored,
    ensure_statistics,
    prepare_manifest,
    record_event,
)
from datasets.shards import shard_attrs
from datasets.simulate import precision_scope
from solvers.resolution import spectral_resample

log = logging.getLogger("datasets")


def coarse_grain(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_points: int | Sequence[int],
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> pathlib.Path:
    """Store a finished dataset's frames projected onto a coarser grid, as a new dataset.

    Args:
        source: a complete dataset directory (or its ``manifest.json``) written by
            :func:`datasets.generate`: on the solver's grid, or coarse-grained onto a grid at
            least as fine as ``num_points`` on every axis.
        out_dir: the new dataset's directory (created if needed; resumed if it holds an
            unfinished derivation of the same spec).
        num_points: the target grid: an int (every axis) or one size per axis ``(..., y, x)``,
            coarser than the source's stored grid on at least one axis.
        overwrite: replace a different dataset in ``out_dir``.
        progress: show a progress bar over the shards.

    Returns:
        ``out_dir``, a complete dataset with statistics, loadable and validatable like a
        generated one.

    Raises:
        FileNotFoundError: ``source`` holds no dataset.
        ValueError: ``source`` is unfinished, was imported without a solver (no fine grid
            to record), or ``num_points`` is not a coarsening of its stored grid (named).
        FileExistsError: ``out_dir`` holds another dataset and ``overwrite`` is False, or
            is ``source`` itself.
    """
    from datasets.progress import progress_bar

    src = dataset_dir(source)
    m = read_manifest(src)
    owner = "datasets.coarse_grain"
    if not m["complete"]:
        raise ValueError(f"{owner}: {src} is unfinished; complete its generation first")
    if m.get("solver") is None:
        raise ValueError(
            f"{owner}: {src} was imported without a solver (datasets.from_arrays), so there "
            "is no fine grid to record or re-simulate; coarse-grain the arrays before importing"
        )
    out = pathlib.Path(out_dir)
    if out.resolve() == src.resolve():
        raise FileExistsError(f"{owner}: out_dir is the source dataset {src}; choose another")
    precision = m["layout"]["precision"]
    with precision_scope(precision):
        solver = rebuild_solver(m, src / "manifest.json")
        record = coarse_graining_record(solver, num_points)
        current = list(stored_num_points(m["spec"]) or solver.grid.num_points)
        target = record["num_points"] if record else list(solver.grid.num_points)
        if any(t > c for t, c in zip(target, current, strict=True)) or target == current:
            raise ValueError(
                f"{owner}: num_points {target} is not a coarsening of {src}'s stored grid "
                f"{current} (every axis at most, one axis fewer points)"
            )
        spec = {k: v for k, v in m["spec"].items() if k != "coarse_graining"}
        spec["coarse_graining"] = storage.normalise(record)
        layout = solver_layout(solver, tuple(target))
        out.mkdir(parents=True, exist_ok=True)
        with storage.writer_lock(out):
            storage.remove_stale_temporaries(out)
            manifest = prepare_manifest(out, spec, layout, solver, overwrite)
            manifest["derived_from"] = {
                "path": str(src.resolve()),
                "fingerprint": fingerprint(m),
                "num_points": current,
            }
            done = {s["index"] for s in manifest["shards"]}
            pending = [s for s in m["shards"] if s["index"] not in done]
            if pending:
                record_event(manifest, "resumed" if done else "started", 0, 1)
                manifest["history"][-1]["derived_from"] = manifest["derived_from"]
                write_manifest(out, manifest)
                bar = progress_bar(
                    total=len(m["shards"]),
                    initial=len(done),
                    unit="shard",
                    desc=f"coarse-grain {_grid(current)} -> {_grid(target)}",
                    enabled=progress,
                )
                try:
                    for shard in pending:
                        manifest["shards"].append(_project_shard(src, out, m, spec, layout, shard))
                        write_manifest(out, manifest)
                        bar.update(1)
                finally:
                    bar.close()
                manifest["shards"].sort(key=lambda s: s["index"])
                manifest["complete"] = True
                record_event(manifest, "completed", 0, 1)
                write_manifest(out, manifest)
            elif progress:
                print(f"dataset {out} is already complete", file=sys.stderr)
            check_splits_stored(out, manifest)
            ensure_statistics(out, manifest)
    log.info("coarse-grained %s onto %s in %s", src, target, out)
    return out


def _grid(points: Sequence[int]) -> str:
    return "x".join(str(n) for n in points)


def _project_shard(
    src: pathlib.Path,
    out: pathlib.Path,
    m: dict[str, Any],
    spec: dict[str, Any],
    layout: dict[str, Any],
    shard: dict[str, Any],
) -> dict[str, Any]:
    """Read one source shard, project its frames, write it under ``out``; its record."""
    record = {k: shard[k] for k in ("index", "trajectories")}
    record["skipped"] = list(shard.get("skipped", []))
    ids = np.asarray(stored_ids(shard), dtype=np.int64)
    storage.verify_file(src / shard["file"], shard.get("sha256"), shard.get("size"))
    frames = storage.read_frames(src / shard["file"], m["layout"]["variables"])
    coarse = np.asarray(spectral_resample(jnp.asarray(frames), tuple(layout["grid"]["num_points"])))
    record.update(
        storage.write_shard_file(
            out,
            shard["index"],
            coarse,
            ids,
            layout=layout,
            attrs=shard_attrs(spec, layout, shard["index"]),
            compression_level=spec.get("compression_level", 0),
            splits=trajectory_splits(split_ranges(spec["num_trajectories"], spec["splits"]), ids),
        )
    )
    return record
