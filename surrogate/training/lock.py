"""The run directory lock: one training (or pipeline) at a time in a run directory."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class RunLockedError(RuntimeError):
    """Another process holds the lock of a run directory."""


LOCK_NAME = ".lock"
_held_locks: dict[Path, int] = {}  # run directories this process holds, with depth


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, *, enabled: bool = True) -> Iterator[Path]:
    """Hold an exclusive, non-blocking ``flock`` on ``run_dir/.lock`` for the block.

    The lock file records the holder's pid for the message of the process refused. The
    kernel drops the lock when its holder dies, so the lock file of a killed run is taken
    over, never stale. Re-entrant within a process (a pipeline holding its run directory
    may call stages that take the same lock).

    Args:
        run_dir: the directory to lock (created if needed).
        enabled: ``False`` makes this a no-op (processes other than 0 of a job, which
            share process 0's run directory).

    Yields:
        The path of the lock file.

    Raises:
        RunLockedError: another process holds the lock; names the directory and the pid.
    """
    run_dir = Path(run_dir).absolute()
    if not enabled:
        yield run_dir / LOCK_NAME
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    path = run_dir / LOCK_NAME
    if key in _held_locks:
        _held_locks[key] += 1
        try:
            yield path
        finally:
            _held_locks[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = path.read_text().strip() or "unknown"
            raise RunLockedError(
                f"run directory {run_dir} is in use by process {holder} (lock {path} is "
                "held); wait for that run to finish or use another run directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held_locks[key] = 1
        try:
            yield path
        finally:
            del _held_locks[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
