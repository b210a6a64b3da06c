"""Data parallelism on JAX's own runtime: one mesh axis ``"data"`` over all devices.

One process per host (or per GPU, or per CPU core group), each seeing its local devices
(GPUs, or CPU devices forced with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``);
processes join through :func:`initialize_from_env` (``jax.distributed``). Arrays whose
leading axis is the batch are split over the ``"data"`` axis (``NamedSharding(mesh,
P("data"))``); parameters and optimizer state are replicated (``P()``).

Batch-parallel computations are written with ``jax.shard_map`` over ``"data"`` (each
device runs the unbatched-per-member program on its rows; the train step averages
gradients with one ``pmean``), not left to XLA's sharding propagation: with sharding
annotations alone XLA's partitioner all-gathers the batch before every FFT (measured in
``simulate_batch`` and in AFNO's train step), so every device computed the whole batch.

On one host, ``hs-launch`` (:mod:`surrogate.launch`) starts the processes of a job with
the environment below; on a cluster, ``srun``. A process that dies ends the job: the
launcher stops the others at once, and without one JAX's coordination service does after
``heartbeat_timeout`` seconds.

Environment read by :func:`initialize_from_env` (either set is enough):

- ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID`` (``0 .. N-1``), optionally ``JAX_LOCAL_DEVICE_IDS`` (``"0,1"``);
- Slurm: inside an ``srun`` step with more than one task (``SLURM_STEP_ID`` and
  ``SLURM_NTASKS > 1``), JAX's cluster auto-detection derives all of the above.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from datasets.plumbing import DATA_AXIS

log = logging.getLogger("surrogate")

ENV_KEYS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def data_mesh(devices: Sequence[Any] | int | None = None) -> Mesh:
    """A one-axis mesh ``("data",)`` over ``devices``.

    Args:
        devices: the devices (default: all global devices, ``jax.devices()``, i.e. the
            local ones unless ``jax.distributed`` is initialised), or an int ``n``: the
            first ``n`` local devices.

    Returns:
        ``Mesh`` with axis ``"data"`` of size ``len(devices)``.

    Raises:
        ValueError: ``n`` outside ``[1, jax.local_device_count()]`` or an empty list.
    """
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        local = jax.local_devices()
        if not 1 <= devices <= len(local):
            raise ValueError(
                f"devices must be in [1, {len(local)}] (the local device count), got {devices}"
            )
        devices = local[: int(devices)]
    devices = list(devices)
    if not devices:
        raise ValueError("devices is empty")
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``"data"``, the other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The whole array on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def check_divisible(batch: int, mesh: Mesh) -> None:
    """Raise ``ValueError`` unless ``batch`` splits evenly over the mesh's ``data`` axis."""
    n = mesh.shape[DATA_AXIS]
    if batch % n:
        raise ValueError(
            f"batch size {batch} is not divisible by the {n} devices of the 'data' mesh axis; "
            f"use a batch size that is a multiple of {n} (or fewer devices)"
        )


def process_slice(n: int, process_index: int | None = None, process_count: int | None = None):
    """This process's contiguous share ``slice(start, stop)`` of ``n`` items.

    Shares differ in length by at most one and, in process order, tile ``range(n)``.
    """
    i = jax.process_index() if process_index is None else int(process_index)
    p = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= i < p:
        raise ValueError(f"process_index must be in [0, {p}), got {i}")
    return slice(n * i // p, n * (i + 1) // p)


def shard_batch(x: Any, mesh: Mesh) -> Any:
    """Place the global batch ``x`` (a pytree of ``(B, ...)`` arrays) over ``"data"``.

    Every process passes the same global batch (a loader pure in the step gives it for
    free); under several processes each contributes only its own rows
    (:func:`process_slice`) through ``jax.make_array_from_process_local_data``, which
    matches the mesh when its devices are in process order (as :func:`data_mesh` makes).

    Raises:
        ValueError: ``B`` not divisible by the number of devices on ``"data"``.
    """
    sharding = batch_sharding(mesh)

    def place(a):
        a = np.asarray(a) if not isinstance(a, jax.Array) else a
        check_divisible(a.shape[0], mesh)
        if jax.process_count() == 1:
            return jax.device_put(a, sharding)
        return from_process_rows(np.asarray(a[process_slice(a.shape[0])]), a.shape[0], mesh)

    return jax.tree.map(place, x)


def from_process_rows(local: Any, global_batch: int, mesh: Mesh) -> Any:
    """Assemble a batch split over ``"data"`` from each process's own rows.

    ``local`` (a pytree of ``(b_i, ...)`` arrays) holds this process's contiguous share
    :func:`process_slice` of a ``global_batch``-row batch, as read by a loader that reads
    only its share (``WindowLoader.batch(step, part=(process_index, process_count))``).

    Raises:
        ValueError: ``global_batch`` not divisible by the devices on ``"data"``, or a
            leaf whose row count is not this process's share.
    """
    sharding = batch_sharding(mesh)
    check_divisible(global_batch, mesh)
    mine = process_slice(global_batch)

    def place(a):
        a = np.asarray(a)
        if a.shape[0] != mine.stop - mine.start:
            raise ValueError(
                f"from_process_rows: process {jax.process_index()} holds {a.shape[0]} rows; "
                f"its share of {global_batch} is rows {mine.start}..{mine.stop - 1}"
            )
        return jax.make_array_from_process_local_data(sharding, a, (global_batch, *a.shape[1:]))

    return jax.tree.map(place, local)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` whole on every device of ``mesh`` (same value everywhere)."""
    sharding = replicated_sharding(mesh)

    def place(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = place(jax.random.key_data(a))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return jax.device_put(a, sharding)
        if jax.process_count() == 1:
            return jax.device_put(a, sharding)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(place, tree)


def _under_slurm() -> bool:
    return "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize_from_env(
    *,
    enabled: bool | str = "auto",
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> bool:
    """Join a multi-process JAX job (``jax.distributed.initialize``) when asked to.

    Call before any other JAX work. With ``enabled="auto"`` it initialises when explicit
    arguments are given, when ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/
    ``JAX_PROCESS_ID`` are set (explicit arguments win over the environment), or inside
    a multi-task Slurm step (cluster auto-detection); otherwise it does nothing.

    Args:
        enabled: ``"auto"``, ``True`` (initialise, failing if nothing says how), or
            ``False`` (no-op).
        coordinator_address: ``host:port`` of process 0.
        num_processes: processes in the job.
        process_id: this process, in ``[0, num_processes)``.
        initialization_timeout: seconds to wait for all processes (s).
        heartbeat_timeout: seconds without a heartbeat after which a process counts as
            dead; JAX then terminates the survivors (exit status 134) instead of letting
            them wait at the next collective or barrier (s).

    Returns:
        ``True`` when this call (or an earlier one) initialised ``jax.distributed``.
    """
    if enabled is False:
        return False
    if enabled not in ("auto", True):
        raise ValueError(f"enabled must be 'auto', True or False, got {enabled!r}")
    from jax._src import distributed as _dist  # the only way to ask "already initialised?"

    if getattr(_dist.global_state, "client", None) is not None:
        return True
    env = os.environ
    address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    nproc = num_processes if num_processes is not None else env.get("JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else env.get("JAX_PROCESS_ID")
    local_ids = env.get("JAX_LOCAL_DEVICE_IDS")
    explicit = any(v is not None for v in (address, nproc, pid))
    if not explicit and not _under_slurm():
        if enabled is True:
            raise RuntimeError(
                "initialize_from_env(enabled=True): set JAX_COORDINATOR_ADDRESS, "
                "JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run inside `srun`"
            )
        return False
    kwargs: dict[str, Any] = {
        "initialization_timeout": int(initialization_timeout),
        "heartbeat_timeout_seconds": int(heartbeat_timeout),
    }
    if explicit:
        missing = [k for k, v in zip(ENV_KEYS, (address, nproc, pid), strict=True) if v is None]
        if missing and not _under_slurm():
            raise RuntimeError(f"jax.distributed needs all of {ENV_KEYS}; missing {missing}")
        kwargs.update(
            coordinator_address=address,
            num_processes=None if nproc is None else int(nproc),
            process_id=None if pid is None else int(pid),
        )
        if local_ids:
            kwargs["local_device_ids"] = [int(s) for s in local_ids.split(",")]
    jax.distributed.initialize(**kwargs)
    log.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_primary() -> bool:
    """Whether this is process 0 (the one that writes shared files)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """Every leaf of ``tree`` as a whole numpy array on every process.

    Arrays whose shards all live in this process are copied out; a global array spread
    over several processes is gathered first
    (``jax.experimental.multihost_utils.process_allgather``, a collective: every process
    must call this with the same tree).
    """

    def fetch(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(fetch, tree)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op for one process).

    A process that died makes the others fail once JAX's heartbeat timeout
    (``initialize_from_env(heartbeat_timeout=...)``) has passed, rather than wait forever.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


__all__ = [
    "DATA_AXIS",
    "barrier",
    "batch_sharding",
    "check_divisible",
    "data_mesh",
    "from_process_rows",
    "initialize_from_env",
    "is_primary",
    "process_slice",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "to_host",
]
