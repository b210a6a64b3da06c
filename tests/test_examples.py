"""Every example runs in its tiny setting and writes what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("[0-9][0-9]_*.py"))
OUTPUTS = {
    "01_solve_and_plot.py": ["01_solve_and_plot.png"],
    "02_build_dataset.py": ["data/manifest.json"],
    "03_train_forecaster.py": ["forecaster/bundle.json", "train/metrics.csv"],
    "04_hybrid_runner.py": ["hybrid.nc", "04_hybrid_engines.png"],
    "05_evaluate_and_compare.py": ["evaluation.nc", "05_skill.png", "05_spectra.png"],
    "06_data_parallel.py": ["06_data_parallel.json"],
}


def test_every_example_is_listed_in_the_readme():
    readme = (REPO / "examples" / "README.md").read_text()
    assert EXAMPLES and all(f"`{name}`" in readme for name in EXAMPLES)
    assert set(EXAMPLES) == set(OUTPUTS)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


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
        import json

        r = json.loads((out / "06_data_parallel.json").read_text())
        assert r["devices"] == 4 and r["generation_byte_identical"] and r["hybrid_same_engines"]
        assert r["train_step_max_param_difference"] < 1e-5  # float32 reduction order only
        assert r["evaluation_max_rmse_difference"] < 1e-5
