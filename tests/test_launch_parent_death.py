"""``hs-launch`` killed by SIGKILL (no handler runs) takes its processes with it (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Each process records its pid, then sleeps far longer than the test waits.
SLEEPER = (
    "import os, pathlib, sys, time\n"
    "d = pathlib.Path(sys.argv[1])\n"
    "(d / f'pid-{os.environ[\"JAX_PROCESS_ID\"]}.tmp').write_text(str(os.getpid()))\n"
    "os.replace(d / f'pid-{os.environ[\"JAX_PROCESS_ID\"]}.tmp',"
    " d / f'pid-{os.environ[\"JAX_PROCESS_ID\"]}')\n"
    "time.sleep(120)\n"
)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie awaiting its (new) parent's reaping."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_killing_the_launcher_kills_its_processes(tmp_path):
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "surrogate.launch",
            "-n",
            "2",
            "--no-pin",
            "--log-dir",
            str(tmp_path / "logs"),
            "--",
            sys.executable,
            "-c",
            SLEEPER,
            str(tmp_path),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pids: list[int] = []
    try:
        started = _wait_for(lambda: all((tmp_path / f"pid-{i}").exists() for i in (0, 1)), 30.0)
        assert started, "the launcher did not start its two processes within 30 s"
        pids = [int((tmp_path / f"pid-{i}").read_text()) for i in (0, 1)]
        assert all(_alive(p) for p in pids)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=10)
        # The kernel signals the children as the launcher exits: well within 5 s.
        gone = _wait_for(lambda: not any(_alive(p) for p in pids), 5.0)
        assert gone, f"processes still running after the launcher was killed: {pids}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for p in pids:  # old behaviour: orphans left running; do not leak them
            if _alive(p):
                os.kill(p, signal.SIGKILL)
