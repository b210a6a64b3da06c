"""Every benchmark script starts: its command line parses, and the project's packages it
imports (now or later, e.g. through Hydra's ``instantiate``) are the project's.
``python benchmarks/x.py`` puts ``benchmarks/`` first on ``sys.path``, where
``solvers.py`` and ``datasets.py`` would shadow the packages of the same names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))

CHECK = """
import runpy, sys
script = sys.argv[1]
sys.path.insert(0, {bench!r})  # what `python benchmarks/<script>` does
sys.argv = [script, "--help"]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
import datasets, solvers
for m in (datasets, solvers):
    assert m.__file__.endswith(m.__name__ + "/__init__.py"), m.__file__
"""


def test_every_benchmark_is_covered():
    assert {"hybrid.py", "scaling.py", "solvers.py", "datasets.py"} <= set(SCRIPTS)


@pytest.mark.integration
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_parses_help_and_sees_the_project_packages(script):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK.format(bench=str(BENCH)), str(BENCH / script)],
        cwd="/",  # imports must not depend on the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage:" in proc.stdout
