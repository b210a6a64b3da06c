"""solvers.retain_freed_memory: freed XLA buffers are reused instead of faulted in again.

Each check runs in its own process: the tuning is global to a process and must come before
JAX's threads allocate.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from solvers.allocator import ENV_SWITCH
from tests.helpers import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
        reason="mallopt tuning exists on glibc only",
    ),
]

# A 64 MiB output per call: above glibc's largest dynamic mmap threshold (32 MiB), so with
# the defaults every call maps fresh zeroed pages (16,384 faults of 4 KiB) and unmaps them.
SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import solvers
    applied = solvers.retain_freed_memory() if sys.argv[1] == "1" else False
    again = solvers.retain_freed_memory() if sys.argv[1] == "1" else False
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: jnp.sin(x) * 2.0)
    x = jnp.ones((16 << 20,), jnp.float32)
    for _ in range(30):  # the heap grows to the working set, then stays
        f(x).block_until_ready()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        f(x).block_until_ready()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 20
    print(json.dumps({"applied": applied, "again": again, "faults": faults}))
    """
)


def _python(*args: str, **env: str) -> object:
    """Run ``python -c args...`` in a fresh process; its last stdout line as JSON."""
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", ENV_SWITCH)}
    proc = subprocess.run(
        [sys.executable, "-c", *args],
        env={**base, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freed_buffers_are_reused_without_page_faults():
    default = _python(SCRIPT, "0")
    tuned = _python(SCRIPT, "1")
    assert tuned["applied"] and tuned["again"]  # idempotent
    # 64 MiB / 4 KiB = 16,384 pages faulted per call with glibc's defaults.
    assert default["faults"] > 8000, default
    # Reused: an occasional growth of the heap at most (measured 0-800 per call).
    assert tuned["faults"] < default["faults"] / 4, (default, tuned)


@pytest.mark.parametrize(
    "env",
    [{"HS_RETAIN_FREED_MEMORY": "0"}, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}],
    ids=["opt-out", "user-tunables"],
)
def test_opt_out_and_the_users_tunables_win(env):
    script = "import solvers, json; print(json.dumps(solvers.retain_freed_memory()))"
    assert _python(script, **env) is False
