"""Every example runs in its tiny setting and writes what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import adam_gap

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("[0-9][0-9]_*.py"))
OUTPUTS = {
    "01_solve_and_plot.py": ["01_solve_and_plot.png"],
    "02_build_dataset.py": ["data/manifest.json"],
    "03_train_forecaster.py": ["forecaster/bundle.json", "train/metrics.csv"],
    "04_hybrid_runner.py": ["hybrid.nc", "04_hybrid_engines.png"],
    "05_evaluate_and_compare.py": ["evaluation.nc", "05_skill.png", "05_spectra.png"],
    "06_data_parallel.py": ["06_data_parallel.json"],
    "07_own_data.py": ["own_data/manifest.json", "own_train/metrics.csv"],
    "08_own_solver.py": ["own_solver/manifest.json", "08_own_solver.json"],
}


def test_every_example_is_listed_in_the_readme():
    readme = (REPO / "examples" / "README.md").read_text()
    assert EXAMPLES and all(f"`{name}`" in readme for name in EXAMPLES)
    assert set(EXAMPLES) == set(OUTPUTS)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


def _logged_steps(run_dir: Path) -> list[dict]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [m for m in rows if "loss" in m]


@pytest.mark.integration
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_tiny(name, out):
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), "--tiny", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel in OUTPUTS[name]:
        assert (out / rel).exists() and (out / rel).stat().st_size > 0, rel
    if name == "06_data_parallel.py":
        r = json.loads((out / "06_data_parallel.json").read_text())
        assert r["devices"] == 4 and r["generation_byte_identical"] and r["hybrid_same_engines"]
        # Loss and gradient norm come before Adam: the 4-device all-reduce sums 4 float32
        # partial means in another order than one device's mean, a few ulps (rtol 1e-5).
        one, four = (_logged_steps(out / d) for d in ("dp_train_1", "dp_train_n"))
        for key in ("loss", "grad_norm"):
            np.testing.assert_allclose(
                [m[key] for m in four], [m[key] for m in one], rtol=1e-5, atol=1e-7, err_msg=key
            )
        # One AdamW step: a gradient that is zero up to round-off may flip its update.
        gap = adam_gap(m["lr"] for m in one)
        assert 0 < gap and r["train_step_max_param_difference"] <= gap, (r, gap)
        # Rollouts are per member (no cross-device sum); 1 vs 4 members per program may
        # block differently: float32 round-off of O(1) KS errors, ~100 eps.
        assert r["evaluation_max_rmse_difference"] < 1e-5
