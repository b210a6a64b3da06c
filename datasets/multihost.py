"""Generation under ``jax.distributed``: disjoint shards per process, one manifest.

Each process computes its share of the pending shards on its local devices and records
them in a file of its own (``.records-processNNNNN.json``); process 0 alone writes the
manifest, between barriers.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib

import jax

from datasets import plumbing, storage
from datasets.manifest import read_manifest, write_manifest
from datasets.resume import (
    check_splits_stored,
    ensure_statistics,
    prepare_manifest,
    record_event,
)
from datasets.shards import produce_shards, raise_nonfinite
from datasets.simulate import precision_scope
from solvers.stepper import Stepper


def generate_multiprocess(
    out: pathlib.Path,
    spec: dict,
    layout: dict,
    solver: Stepper,
    overwrite: bool,
    batch_size: int,
    mesh: jax.sharding.Mesh | None,
) -> pathlib.Path:
    """``generate`` under ``jax.distributed``: disjoint shards per process, one manifest.

    Process 0 takes the lock and prepares the manifest; barrier; process ``p`` of ``P``
    computes pending shards ``p, p + P, ...`` on its local devices, writing each shard and
    then its own record list (atomically, after every shard); barrier; process 0 merges
    the records into the manifest and computes the statistics; barrier. Only process 0
    writes the manifest, so there is no race on it.

    A process that dies makes the others fail (``hs-launch`` stops them at once; without
    it JAX does after its heartbeat timeout). Rerunning resumes: process 0 first adopts
    the shards listed in leftover record files whose bytes still match their checksum,
    so only the shards that were never finished are computed again.

    Args:
        out: the dataset directory (the same path in every process).
        spec: the :func:`datasets.provenance.generation_spec`, equal in every process.
        layout: the :func:`datasets.provenance.solver_layout`.
        solver: the live solver.
        overwrite: replace an existing dataset (process 0 decides).
        batch_size: trajectories per ``vmap`` chunk.
        mesh: this process's local devices (axis ``"data"``), or ``None``.

    Returns:
        ``out``.

    Raises:
        FileExistsError / DatasetLockedError: in process 0, as from ``generate``.
        NonFiniteError: a trajectory blew up with ``on_nonfinite="raise"`` (in process 0
            and in the process that computed it).
        ValueError: ``on_nonfinite="skip"`` left a split without any trajectory.
    """
    from jax.experimental import multihost_utils

    pid, nproc = jax.process_index(), jax.process_count()
    tag = f"datasets.generate:{out.resolve()}"
    with contextlib.ExitStack() as stack:
        if pid == 0:
            stack.enter_context(storage.writer_lock(out))
            storage.remove_stale_temporaries(out)
            leftover = sorted(out.glob(".records-process*.json"))
            manifest = prepare_manifest(out, spec, layout, solver, overwrite)
            if not manifest["complete"]:
                _adopt_finished_shards(out, manifest, leftover)
                record_event(
                    manifest, "resumed" if manifest["shards"] else "started", batch_size, nproc
                )
            for p in leftover:
                p.unlink(missing_ok=True)
            write_manifest(out, manifest)
        multihost_utils.sync_global_devices(f"{tag}:prepared")
        manifest = read_manifest(out)
        num_shards = math.ceil(spec["num_trajectories"] / spec["trajectories_per_shard"])
        done = {s["index"] for s in manifest["shards"]}
        pending = [k for k in range(num_shards) if k not in done]
        mine = pending[pid::nproc]
        records: list[dict] = []
        storage.write_json_atomic(out / _records_name(pid), records)
        with precision_scope(layout["precision"]):
            for record in produce_shards(out, spec, layout, solver, mine, batch_size, mesh):
                records.append(record)
                storage.write_json_atomic(out / _records_name(pid), records)
        multihost_utils.sync_global_devices(f"{tag}:produced")
        if pid == 0 and pending:
            for p in range(nproc):
                path = out / _records_name(p)
                manifest["shards"].extend(storage.read_json(path))
                path.unlink()
            bad = [b for r in manifest["shards"] if "nonfinite" in r for b in r["nonfinite"]]
            manifest["shards"] = [r for r in manifest["shards"] if "nonfinite" not in r]
            if not bad:
                manifest["complete"] = True
                record_event(manifest, "completed", batch_size, nproc)
            write_manifest(out, manifest)
            if bad:
                multihost_utils.sync_global_devices(f"{tag}:finished")
                raise_nonfinite(bad)
            ensure_statistics(out, manifest)
        elif pid == 0:
            for p in range(nproc):
                (out / _records_name(p)).unlink(missing_ok=True)
            ensure_statistics(out, manifest)
        multihost_utils.sync_global_devices(f"{tag}:finished")
    if any("nonfinite" in r for r in records):
        raise_nonfinite([b for r in records if "nonfinite" in r for b in r["nonfinite"]])
    check_splits_stored(out, read_manifest(out))
    return out


def _records_name(process: int) -> str:
    return f".records-process{process:05d}.json"


def _adopt_finished_shards(out: pathlib.Path, manifest: dict, record_files) -> None:
    """Add to ``manifest`` the shards an interrupted multi-process run finished.

    A record counts when its shard file exists with the recorded size and sha256 (so a
    file from another configuration, or one cut short, is computed again).
    """
    done = {s["index"] for s in manifest["shards"]}
    for path in record_files:
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for r in records:
            if r.get("index") in done or "nonfinite" in r or "file" not in r:
                continue
            shard = out / r["file"]
            if not shard.is_file() or shard.stat().st_size != r.get("size"):
                continue
            if plumbing.sha256_file(shard) != r.get("sha256"):
                continue
            manifest["shards"].append(r)
            done.add(r["index"])
