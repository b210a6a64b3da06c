"""Computing and writing shards, in whatever process: one idea, used by every runner.

Shard ``k`` holds trajectories ``[k * trajectories_per_shard, (k + 1) *
trajectories_per_shard)``, computed in ``vmap`` chunks of ``batch_size`` by
:func:`datasets.simulate.simulate_batch` and written (temporary file, fsync, rename) by
:func:`datasets.storage.write_shard_file`. :func:`produce_shards` yields each shard's
manifest record as it is written; this process, a spawned worker and each process under
``jax.distributed`` all call it, so the bytes do not depend on who computed a shard.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from datasets import plumbing, storage
from datasets.manifest import MANIFEST_NAME, split_ranges, trajectory_splits
from datasets.provenance import stored_num_points
from datasets.simulate import padded_indices, simulate_batch
from solvers.stepper import Stepper


def produce_shards(
    out_dir: pathlib.Path,
    spec: Mapping[str, Any],
    layout: Mapping[str, Any],
    solver: Stepper,
    shard_ids: Sequence[int],
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
) -> Iterator[dict[str, Any]]:
    """Compute and write shards in order, yielding their manifest records.

    Double buffering: shard ``k + 1`` is dispatched (JAX runs it asynchronously) before
    shard ``k`` is fetched, written and checksummed, so writing overlaps computing.
    Memory holds at most two shards.

    Args:
        out_dir: the dataset directory the shard files go to.
        spec: the dataset's :func:`datasets.provenance.generation_spec`.
        layout: its :func:`datasets.provenance.solver_layout` (the stored grid).
        solver: the (fine) solver; run under the caller's
            :func:`datasets.simulate.precision_scope`.
        shard_ids: shard indices to compute, in this order.
        batch_size: trajectories per ``vmap`` chunk (a multiple of the mesh size).
        mesh: local devices (axis ``"data"``) each chunk is split over, or ``None``.

    Yields:
        Each shard's manifest record (``index``, ``trajectories``, ``skipped``, and the
        file's name, size and sha256), or, with ``on_nonfinite="raise"`` and a
        trajectory that blew up, a record with ``"nonfinite"`` and no file written: the
        caller raises (:func:`raise_nonfinite`).
    """
    tps, n = spec["trajectories_per_shard"], spec["num_trajectories"]
    in_flight = None
    for k in [*shard_ids, None]:
        nxt = None
        if k is not None:
            stop = min(k * tps + tps, n)
            nxt = (k, _dispatch_shard(solver, spec, k * tps, stop, batch_size, mesh))
        if in_flight is not None:
            index, chunks = in_flight
            frames, bad = _collect(chunks)
            yield _finish_shard(out_dir, spec, layout, index, frames, bad)
        in_flight = nxt


def _dispatch_shard(
    solver: Stepper,
    spec: Mapping[str, Any],
    start: int,
    stop: int,
    batch_size: int,
    mesh: jax.sharding.Mesh | None = None,
):
    """Start (asynchronously) all chunks of trajectories ``[start, stop)``.

    With ``mesh`` (axis ``"data"``, dividing ``batch_size``) each chunk's trajectory axis
    is split over its devices: every device runs the same per-trajectory program on its
    rows, so the bytes do not depend on the device count.
    """
    key = jax.random.key(spec["seed"])
    store = stored_num_points(spec)
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec

        rows = NamedSharding(mesh, PartitionSpec("data"))
        key = jax.device_put(key, NamedSharding(mesh, PartitionSpec()))
    chunks = []
    for c0 in range(start, stop, batch_size):
        idx = np.arange(c0, min(c0 + batch_size, stop), dtype=np.int32)
        padded = padded_indices(idx, batch_size)
        if mesh is not None:
            padded = jax.device_put(padded, rows)
        out = simulate_batch(
            solver,
            key,
            padded,
            num_frames=spec["num_frames"],
            spinup_steps=spec["spinup_steps"],
            mesh=mesh,
            store_num_points=store,
        )
        chunks.append((idx.size, out))
    return chunks


def _collect(chunks) -> tuple[np.ndarray, np.ndarray]:
    frames = np.concatenate([np.asarray(f)[:n] for n, (f, _) in chunks])
    bad = np.concatenate([np.asarray(b)[:n] for n, (_, b) in chunks])
    return frames, bad


def _finish_shard(
    out_dir: pathlib.Path,
    spec: Mapping[str, Any],
    layout: Mapping[str, Any],
    index: int,
    frames: np.ndarray,
    first_bad: np.ndarray,
) -> dict[str, Any]:
    """Apply the non-finite policy and write shard ``index``; return its manifest record.

    With ``on_nonfinite="raise"`` and a bad trajectory nothing is written and the record
    carries ``"nonfinite"`` (the caller raises; worker processes return plain data).
    """
    tps = spec["trajectories_per_shard"]
    start = index * tps
    stop = min(start + tps, spec["num_trajectories"])
    dt, spin = float(layout["dt"]), spec["spinup_steps"]
    bad = [
        {"trajectory": start + r, "frame": int(k) - spin, "time": (int(k) - spin) * dt}
        for r, k in enumerate(first_bad)
        if k >= 0
    ]
    record: dict[str, Any] = {"index": index, "trajectories": [start, stop], "skipped": bad}
    if bad and spec["on_nonfinite"] == "raise":
        record["nonfinite"] = bad
        return record
    keep = np.asarray([k < 0 for k in first_bad], dtype=bool)
    ids = np.arange(start, stop)[keep]
    record.update(
        storage.write_shard_file(
            out_dir,
            index,
            frames[keep],
            ids,
            layout=layout,
            attrs=shard_attrs(spec, layout, index),
            compression_level=spec.get("compression_level", 0),
            splits=trajectory_splits(split_ranges(spec["num_trajectories"], spec["splits"]), ids),
        )
    )
    return record


def shard_attrs(spec: Mapping[str, Any], layout: Mapping[str, Any], index: int) -> dict:
    """The global attributes of shard ``index`` (CF metadata and the provenance of ``spec``).

    Nothing time- or host-dependent, so a shard's bytes follow from its data and spec.
    """
    version = spec["package_version"]
    attrs = {
        "Conventions": "CF-1.10",
        "title": f"{spec['solver']} trajectories ({', '.join(layout['variables'])})",
        "source": f"hybrid-surrogates {version}, solver {spec['solver']!r}",
        "history": (
            f"written by datasets.generate (hybrid-surrogates {version}); creation time and "
            f"command are in {MANIFEST_NAME}, kept out of this file so its bytes are "
            "reproducible"
        ),
        "comment": (
            "trajectory i starts from solver.initial_condition(jax.random.fold_in("
            "jax.random.key(seed), i)) and is advanced spinup_steps intervals dt before "
            "frame 0"
        ),
        "solver": spec["solver"],
        "solver_config": plumbing.canonical_json(spec["solver_config"]),
        "precision": layout["precision"],
        "dt": float(layout["dt"]),
        "seed": int(spec["seed"]),
        "spinup_steps": int(spec["spinup_steps"]),
        "num_trajectories": int(spec["num_trajectories"]),
        "trajectories_per_shard": int(spec["trajectories_per_shard"]),
        "shard_index": int(index),
        "package_version": version,
    }
    if spec.get("coarse_graining") is not None:
        attrs["comment"] += (
            "; each stored frame is the solver state projected onto the stored grid "
            "(see coarse_graining)"
        )
        attrs["coarse_graining"] = plumbing.canonical_json(spec["coarse_graining"])
    if spec.get("config") is not None:
        attrs["config"] = plumbing.canonical_json(spec["config"])
    return attrs


def raise_nonfinite(bad: list[dict[str, Any]]) -> None:
    """Raise :class:`solvers.NonFiniteError` for the lowest trajectory in ``bad``.

    Args:
        bad: ``{"trajectory", "frame", "time"}`` records of a shard record's
            ``"nonfinite"`` list; ``frame < 0`` means during spin-up.
    """
    from solvers.rollout import NonFiniteError

    first = min(bad, key=lambda b: b["trajectory"])
    detail = (
        f"during spin-up, {-first['frame']} output interval(s) before frame 0"
        if first["frame"] < 0
        else "pass on_nonfinite='skip' to drop such trajectories and record them"
    )
    raise NonFiniteError(first["trajectory"], first["frame"], first["time"], detail)
