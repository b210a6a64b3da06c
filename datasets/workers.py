"""Computing one process's pending shards, here or in spawned worker processes.

:func:`run_shards` lists each finished shard in the manifest (rewritten at most once a
second) and advances the progress bar. With several workers each is a spawned process
(never forked after JAX started) that rebuilds the solver from its live class and
``config()`` and computes pending shards ``w, w + W, ...``; the children import their
entry point by module path, ``datasets.workers._worker_main``.
"""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import signal
import time
from typing import Any

import jax

from datasets.manifest import write_manifest
from datasets.provenance import solver_class_path
from datasets.shards import produce_shards, raise_nonfinite
from datasets.simulate import precision_scope
from datasets.storage import normalise
from solvers.allocator import retain_freed_memory
from solvers.stepper import Stepper


def run_shards(
    out: pathlib.Path,
    manifest: dict,
    solver: Stepper,
    pending: list[int],
    batch_size: int,
    workers: int,
    progress: bool,
    mesh: jax.sharding.Mesh | None = None,
) -> None:
    """Compute the ``pending`` shards of ``out`` and list each in ``manifest`` as it lands.

    Args:
        out: the dataset directory (its writer lock held by the caller).
        manifest: the manifest being resumed or started; its ``shards`` list grows and is
            written to ``out`` at most once a second and on the way out, even on error.
        solver: the live solver (rebuilt in workers from its class and ``config()``).
        pending: shard indices still to compute, in order.
        batch_size: trajectories per ``vmap`` chunk.
        workers: processes to spawn (at most one per pending shard); ``<= 1`` computes
            here, on ``mesh`` when given.
        progress: show a progress bar over the trajectories.
        mesh: local devices (axis ``"data"``) each chunk is split over, in this process.

    Raises:
        NonFiniteError: a trajectory blew up and the spec says ``on_nonfinite="raise"``
            (the shards finished before it stay listed).
        RuntimeError: a worker failed (its traceback in the message) or died.
    """
    spec, layout = manifest["spec"], manifest["layout"]
    workers = min(workers, len(pending))
    with _progress_bar(manifest, progress) as bar:
        recorder = _Recorder(out, manifest, bar)
        try:
            if workers <= 1:
                with precision_scope(layout["precision"]):
                    for rec in produce_shards(out, spec, layout, solver, pending, batch_size, mesh):
                        recorder.add(rec)
            else:
                _run_workers(out, manifest, solver, pending, batch_size, workers, recorder)
        finally:
            recorder.flush()


def _progress_bar(manifest: dict, progress: bool):
    from datasets.progress import progress_bar

    done = sum(s["trajectories"][1] - s["trajectories"][0] for s in manifest["shards"])
    return progress_bar(
        total=manifest["spec"]["num_trajectories"],
        initial=done,
        unit="traj",
        desc=f"generate {manifest['solver']}",
        enabled=progress,
    )


class _Recorder:
    """Adds finished shards to the manifest, rewriting it at most every ``interval`` s.

    Each rewrite costs two fsyncs; for cheap solvers that is a visible share of the run.
    A shard finished but not yet listed when the process dies is simply recomputed on
    resume (same bytes), so throttling loses at most ``interval`` seconds of work.
    """

    def __init__(self, out: pathlib.Path, manifest: dict, bar, interval: float = 1.0) -> None:
        self.out, self.manifest, self.bar, self.interval = out, manifest, bar, interval
        self.last = time.monotonic()
        self.dirty = False

    def add(self, record: dict) -> None:
        if "nonfinite" in record:
            self.flush()
            raise_nonfinite(record["nonfinite"])
        self.manifest["shards"].append(record)
        self.dirty = True
        if time.monotonic() - self.last >= self.interval:
            self.flush()
        self.bar.update(record["trajectories"][1] - record["trajectories"][0])

    def flush(self) -> None:
        if self.dirty:
            write_manifest(self.out, self.manifest)
            self.dirty = False
        self.last = time.monotonic()


def _run_workers(out, manifest, solver, pending, batch_size, workers, recorder) -> None:
    """Spawn ``workers`` processes, shards assigned round-robin; record as they finish."""
    import multiprocessing
    import queue as queue_module

    ctx = multiprocessing.get_context("spawn")  # never fork a process that runs JAX
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(
                solver_class_path(solver),  # the live class, never the stored text
                solver.config(),
                manifest["spec"],
                manifest["layout"],
                str(out),
                pending[w::workers],
                batch_size,
                results,
            ),
            name=f"datasets-worker-{w}",
            daemon=True,
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        running = workers
        while running:
            try:
                rec = results.get(timeout=1.0)
            except queue_module.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"worker {dead[0].name} died with exit code {dead[0].exitcode} "
                        "(out of memory?); rerun to resume"
                    ) from None
                continue
            if rec is None:
                running -= 1
            elif "error" in rec:
                raise RuntimeError(f"a worker failed: {rec['error']}\n{rec['traceback']}")
            else:
                recorder.add(rec)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a killed run leaves no orphan writers."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(
    solver_class: str,
    solver_config: dict,
    spec: dict,
    layout: dict,
    out_dir: str,
    shard_ids: list[int],
    batch_size: int,
    results,
) -> None:
    """Entry point of a spawned worker: rebuild the solver, produce its shards.

    Sends plain dicts (records, or ``{"error": ...}``) and finally ``None`` on ``results``;
    exceptions do not cross the process boundary as objects.
    """
    _die_with_parent()
    retain_freed_memory()  # before JAX's threads exist (see solvers.allocator)
    try:
        jax.config.update("jax_enable_x64", layout["precision"] == "float64")
        solver = _import_class(solver_class)(**solver_config)
        if normalise(solver.config()) != spec["solver_config"]:
            raise RuntimeError(
                f"worker rebuilt {solver_class} with config {solver.config()}, which differs "
                f"from {spec['solver_config']}; config() must return the constructor kwargs"
            )
        for rec in produce_shards(
            pathlib.Path(out_dir), spec, layout, solver, shard_ids, batch_size
        ):
            results.put(rec)
            if "nonfinite" in rec:
                break
    except BaseException as e:  # noqa: BLE001 - reported to the parent as text
        import traceback

        results.put({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    finally:
        results.put(None)


def _import_class(path: str) -> type:
    """The class ``"module:QualName"`` of a live solver (spawned workers only).

    Never call this on a path read from a file: see
    :func:`datasets.provenance.rebuild_solver`.
    """
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
