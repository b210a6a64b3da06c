"""``hs-launch``: start one command as N processes of one ``jax.distributed`` job on this host.

    hs-launch -n 2 -- hs-pipeline distributed=local data_parallel=true

Each process gets ``JAX_COORDINATOR_ADDRESS=localhost:<port>``, ``JAX_NUM_PROCESSES`` and
its ``JAX_PROCESS_ID``, which :func:`surrogate.distributed.initialize_from_env` turns into
``jax.distributed.initialize``; from there on JAX's runtime does the rest (collectives,
barriers, failure detection). The launcher only starts, watches and stops processes:

- on a CPU host the cores are split between the processes (``os.sched_setaffinity``), so
  each XLA runtime sizes its thread pool to its own cores instead of all processes
  fighting over all of them; this is how a CPU-only machine uses every core for one
  data-parallel job (``--no-pin`` keeps the inherited affinity);
- process 0 keeps the terminal (progress bars, the report path); the others write to
  ``<log_dir>/process-<i>.log``;
- when a process fails, the others are stopped at once (SIGTERM, then SIGKILL) and the
  launcher exits with the failed process's status after printing the end of its log:
  nothing waits for JAX's heartbeat timeout. Work already written stays (dataset shards
  and checkpoints are atomic), so rerunning the same command resumes;
- when the launcher itself dies, even by SIGKILL (no handler runs), the kernel sends
  every process SIGKILL (Linux ``prctl(PR_SET_PDEATHSIG)``, set in the child between fork
  and exec): no orphan keeps its cores or its coordinator port. SIGKILL rather than
  SIGTERM because nobody is left to escalate when a child ignores SIGTERM, and what the
  children wrote is atomic anyway; it is the choice of the dataset generation's own
  workers too. Where ``prctl`` is missing (not Linux) children can outlive a killed
  launcher.

On a cluster, Slurm's ``srun`` plays this role (``distributed=slurm``); see the README.
On a GPU host one process already drives every GPU (``data_parallel=auto``): ``hs-launch``
is for splitting a CPU's cores, or for trying the multi-process path locally.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ENV_ADDRESS = "JAX_COORDINATOR_ADDRESS"
ENV_NUM = "JAX_NUM_PROCESSES"
ENV_ID = "JAX_PROCESS_ID"


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def split_cores(num_processes: int, cores: Sequence[int] | None = None) -> list[list[int]]:
    """Contiguous, near-equal groups of this process's allowed cores, one per process.

    Raises:
        ValueError: fewer cores than processes (pinning would share cores; use
            ``pin=False``).
    """
    cores = sorted(os.sched_getaffinity(0)) if cores is None else list(cores)
    if num_processes > len(cores):
        raise ValueError(
            f"cannot pin {num_processes} processes to {len(cores)} core(s) {cores}; "
            "use fewer processes or --no-pin"
        )
    n = len(cores)
    return [
        cores[n * i // num_processes : n * (i + 1) // num_processes] for i in range(num_processes)
    ]


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux), or ``None``. Looked up in the launcher, before any fork:
    loading a library between fork and exec is not safe."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup(
    prctl: Callable[..., int] | None, parent: int, cores: Sequence[int] | None
) -> Callable[[], None]:
    """The ``preexec_fn`` of each process: die with the launcher, then pin the cores."""

    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
            # The launcher may have died between fork and prctl: then nobody signals us.
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)
        if cores:
            os.sched_setaffinity(0, cores)

    return setup


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def launch(
    command: Sequence[str],
    num_processes: int,
    *,
    port: int | None = None,
    pin: bool = True,
    log_dir: str | os.PathLike = "hs-launch-logs",
    grace_period: float = 10.0,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``command`` as ``num_processes`` processes of one ``jax.distributed`` job.

    Args:
        command: the program and its arguments (run as is in every process).
        num_processes: processes to start (>= 1).
        port: coordinator port on localhost (default: a free one).
        pin: give each process its own share of the allowed cores.
        log_dir: where processes ``1 .. N-1`` write ``process-<i>.log``.
        grace_period: seconds between SIGTERM and SIGKILL when stopping the others (s).
        env: extra environment for every process.

    Returns:
        0 when every process succeeded, else the exit status of the first that failed
        (``128 + signal`` for a killed one).

    Raises:
        ValueError: an empty command, ``num_processes < 1``, or pinning onto fewer cores.
    """
    if not command:
        raise ValueError("hs-launch: no command given (put it after --)")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"hs-launch: num_processes must be an int >= 1, got {num_processes!r}")
    groups = split_cores(num_processes) if pin else [None] * num_processes
    port = free_port() if port is None else int(port)
    log_dir = Path(log_dir)
    if num_processes > 1:
        log_dir.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, **(env or {})}
    procs: list[subprocess.Popen] = []
    logs: list[Path | None] = []
    prctl, parent = _prctl(), os.getpid()
    for i in range(num_processes):
        child_env = {
            **base,
            ENV_ADDRESS: f"localhost:{port}",
            ENV_NUM: str(num_processes),
            ENV_ID: str(i),
        }
        cores = groups[i]
        if i == 0:
            out, path = None, None
        else:
            path = log_dir / f"process-{i}.log"
            out = open(path, "w")  # noqa: SIM115 (closed below, after the process ends)
        logs.append(path)
        procs.append(
            subprocess.Popen(
                list(command),
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                preexec_fn=_child_setup(prctl, parent, cores),
            )
        )
        if out is not None:
            out.close()
        where = f"log {path}" if path else "this terminal"
        print(
            f"hs-launch: process {i}/{num_processes} pid {procs[-1].pid}"
            + (f" cores {cores}" if cores else "")
            + f" ({where})",
            file=sys.stderr,
            flush=True,
        )

    def stop(signum=signal.SIGTERM) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)
        deadline = time.monotonic() + grace_period
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def on_signal(signum, _frame):
        stop(signum)
        sys.exit(128 + signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i = failed[0]
                code = codes[i] if codes[i] > 0 else 128 - codes[i]
                print(
                    f"hs-launch: process {i} exited with status {code}; stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                stop()
                if logs[i] is not None:
                    print(f"--- end of {logs[i]} ---\n{_tail(logs[i])}", file=sys.stderr)
                return code
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``hs-launch``."""
    ap = argparse.ArgumentParser(
        prog="hs-launch",
        description="Run a command as N processes of one jax.distributed job on this host.",
        epilog="example: hs-launch -n 2 -- hs-pipeline distributed=local data_parallel=true",
    )
    ap.add_argument(
        "-n",
        "--processes",
        default="auto",
        help="number of processes, or 'auto': one per allowed core (default)",
    )
    ap.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
    ap.add_argument("--no-pin", action="store_true", help="do not split the cores")
    ap.add_argument("--log-dir", default="hs-launch-logs", help="logs of processes 1..N-1")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args ...]")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.processes == "auto":
        n = len(os.sched_getaffinity(0))
    else:
        try:
            n = int(args.processes)
        except ValueError:
            ap.error(f"--processes must be an int or 'auto', got {args.processes!r}")
    try:
        code = launch(command, n, port=args.port, pin=not args.no_pin, log_dir=args.log_dir)
    except ValueError as e:
        ap.error(str(e))
    sys.exit(code)


if __name__ == "__main__":
    main()
