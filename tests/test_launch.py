"""``hs-launch``: the local jax.distributed launcher (environment, pinning, fail-fast).

These checks start plain Python children (no JAX), so they take seconds; the launcher
driving real ``jax.distributed`` jobs is exercised in ``tests/test_distributed.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surrogate import launch

REPO = Path(__file__).resolve().parents[1]

REPORT = """
import json, os
print(json.dumps({k: os.environ.get(k) for k in
                  ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
                 | {"cores": sorted(os.sched_getaffinity(0))}))
"""


def _launch(args, tmp_path, timeout=60.0):
    return subprocess.run(
        [sys.executable, "-m", "surrogate.launch", "--log-dir", str(tmp_path / "logs"), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_split_cores_gives_disjoint_near_equal_groups():
    assert launch.split_cores(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3, 4]]
    groups = launch.split_cores(3, range(8))
    assert sorted(c for g in groups for c in g) == list(range(8))
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    with pytest.raises(ValueError, match="cannot pin 3 processes to 2 core"):
        launch.split_cores(3, [0, 1])


def test_every_process_gets_the_job_description_and_its_own_cores(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    n = 2 if len(cores) >= 2 else 1
    proc = _launch(["-n", str(n), "--", sys.executable, "-c", REPORT], tmp_path)
    assert proc.returncode == 0, proc.stderr
    seen = [json.loads(proc.stdout.strip().splitlines()[-1])]  # process 0: this terminal
    for i in range(1, n):
        seen.append(json.loads((tmp_path / "logs" / f"process-{i}.log").read_text()))
    assert [s["JAX_PROCESS_ID"] for s in seen] == [str(i) for i in range(n)]
    assert {s["JAX_NUM_PROCESSES"] for s in seen} == {str(n)}
    assert len({s["JAX_COORDINATOR_ADDRESS"] for s in seen}) == 1
    assert seen[0]["JAX_COORDINATOR_ADDRESS"].startswith("localhost:")
    groups = [set(s["cores"]) for s in seen]
    assert set().union(*groups) == set(cores)
    assert sum(map(len, groups)) == len(cores)  # disjoint


def test_a_failing_process_stops_the_others_at_once(tmp_path):
    script = (
        "import os, sys, time\n"
        "if os.environ['JAX_PROCESS_ID'] == '1':\n"
        "    print('process 1 gives up', flush=True); sys.exit(7)\n"
        "time.sleep(120)\n"
    )
    t0 = time.monotonic()
    proc = _launch(["-n", "2", "--no-pin", "--", sys.executable, "-c", script], tmp_path)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 7
    assert elapsed < 30, elapsed  # process 0 would sleep 120 s
    assert "process 1 exited with status 7; stopping the others" in proc.stderr
    assert "process 1 gives up" in proc.stderr  # the end of its log is shown


def test_bad_invocations_are_refused(tmp_path):
    proc = _launch(["-n", "2"], tmp_path)
    assert proc.returncode == 2 and "no command given" in proc.stderr
    proc = _launch(["-n", "two", "--", "true"], tmp_path)
    assert proc.returncode == 2 and "--processes must be an int or 'auto'" in proc.stderr
    with pytest.raises(ValueError, match="num_processes must be an int >= 1"):
        launch.launch(["true"], 0)
