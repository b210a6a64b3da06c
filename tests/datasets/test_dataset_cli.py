"""The Hydra entry point and the data configs."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

import datasets
from datasets.provenance import RUNTIME_KEYS
from solvers.config_schema import ConfigError, check_kwargs

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA_CONFIGS = sorted((REPO / "configs" / "data").glob("*.yaml"))
TINY_KS = [
    "experiment=ks",  # the default preset (the Kolmogorov front) sets data keys of its own
    "solver=kuramoto_sivashinsky",
    "solver.num_points=32",
    "solver.domain_length=22.0",
    "solver.dt=0.5",
    "solver.num_substeps=2",
]


@pytest.mark.parametrize("file", DATA_CONFIGS, ids=lambda p: p.name)
def test_data_configs_are_generate_arguments(file):
    node = OmegaConf.to_container(OmegaConf.load(file))
    node.pop("defaults", None)
    path = node.pop("path", None)
    assert path is not None or file.name != "default.yaml"
    check_kwargs(datasets.generate, node, where=file.name, runtime=("solver", "out_dir", "config"))


def test_misspelled_data_key_is_named():
    with pytest.raises(
        ConfigError, match="unknown key 'num_trajectory'.*did you mean 'num_trajectories'"
    ):
        check_kwargs(datasets.generate, {"num_trajectory": 3}, where="data")


def _cli(tmp_path: pathlib.Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "datasets.cli",
            *TINY_KS,
            "data=tiny",
            f"data.path={tmp_path / 'ks'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "~model",  # the entry point needs only solver and data
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.integration
def test_hydra_entry_point_generates_with_provenance(tmp_path):
    proc = _cli(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "ks"
    assert f"dataset ready: {out}" in proc.stdout
    info = datasets.dataset_info(out)
    assert info["num_trajectories"]["total"] == 4 and info["num_frames"] == 6
    assert info["solver_config"]["num_points"] == 32
    config = datasets.read_manifest(out)["spec"]["config"]
    assert config["solver"]["_target_"] == "solvers.KuramotoSivashinsky"
    assert config["data"]["num_frames"] == 6
    assert not set(RUNTIME_KEYS) & set(config["data"])  # runtime keys leave the bytes alone
    ds = datasets.open_dataset(out)
    try:
        assert json.loads(ds.attrs["config"]) == config
    finally:
        ds.close()
    # A misspelled key fails at start-up, naming it.
    bad = _cli(tmp_path, "+data.num_trajectory=3")
    assert bad.returncode != 0 and "unknown key 'num_trajectory'" in bad.stderr
