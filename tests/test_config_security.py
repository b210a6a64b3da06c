"""The config is checked whole before any work: every ``_target_`` names trusted code (and
nothing else is imported), the run name stays one directory under ``runs/``, and a
misspelled or out-of-range key anywhere fails at start-up, naming the key."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import solvers
from solvers.config_schema import ConfigError
from surrogate.cli import (
    build_solver,
    check_config,
    check_hybrid_against_solver,
    check_job_dirs,
    check_targets,
    generate_message,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg


@pytest.fixture(scope="module")
def default_config():
    return _compose([])


@pytest.fixture
def config(default_config):
    """The default config with keys changed, as ``+key=value`` on the command line would."""

    def make(**changes):
        cfg = copy.deepcopy(default_config)
        HydraConfig.instance().set_config(cfg)
        for key, value in changes.items():
            OmegaConf.update(cfg, key, value, force_add=True)
        return cfg

    return make


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """An importable module that, if ever imported, writes a marker file."""
    marker = tmp_path / "imported"
    name = f"hs_probe_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n\n"
        "def make(**kwargs):\n    return kwargs\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("solvers.registry._USER_MODULES", [])
    yield name, marker
    sys.modules.pop(name, None)


# Every node with a _target_ in the default config, and nodes that have none (a _target_
# added anywhere is checked as well: Hydra would instantiate it with its parent).
NODES = [
    "solver",
    "model",
    "train",
    "distributed",
    "hybrid.runner",
    "hybrid.runner.policy",
    "hybrid.runner.indicators[0]",
    "hybrid.runner.indicators[3]",
    "data",
    "evaluate",
    "hybrid.sweep",
    "model.inner",
]


@pytest.mark.parametrize("node", NODES)
def test_an_untrusted_target_is_refused_in_every_node_without_importing_it(node, probe, config):
    name, marker = probe
    cfg = config(**{f"{node}._target_": f"{name}.make"})
    with pytest.raises(solvers.UntrustedCodeError) as info:
        check_config(cfg)
    assert f"{node}._target_ = '{name}.make' is outside the trusted modules" in str(info.value)
    assert name not in sys.modules and not marker.exists()


def test_a_stored_run_config_is_checked_before_it_is_built(probe):
    """Benchmarks rebuild solvers and runners from a run directory's config.yaml."""
    name, marker = probe
    stored = OmegaConf.create({"solver": {"_target_": "solvers.Burgers"}, "hybrid": {}})
    assert check_targets(stored) == {"solver": solvers.Burgers}
    stored.hybrid = {"runner": {"indicators": [{"_target_": f"{name}.make"}]}}
    with pytest.raises(solvers.UntrustedCodeError, match=r"hybrid.runner.indicators\[0\]"):
        check_targets(stored)
    assert name not in sys.modules and not marker.exists()
    with pytest.raises(solvers.UntrustedCodeError, match=r"^_target_ = 'os.system'"):
        check_targets(OmegaConf.create({"_target_": "os.system"}))  # the root node too


def test_the_dataset_entry_point_refuses_an_untrusted_solver_target(probe, config, tmp_path):
    from datasets.cli import run

    name, marker = probe
    cfg = config(**{"solver._target_": f"{name}.make", "data.path": str(tmp_path / "d")})
    with pytest.raises(solvers.UntrustedCodeError, match=rf"solver._target_ = '{name}.make'"):
        run(cfg)
    assert name not in sys.modules and not marker.exists()
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("key", "target", "message"),
    [
        ("solver", "builtins.open", "outside the trusted modules"),
        ("solver", "shutil.copyfile", "outside the trusted modules"),
        ("distributed", "os.makedirs", "outside the trusted modules"),
        # reached through a trusted module: its imports are not trusted
        ("solver", "datasets.generation.os.system", "reaches module 'os'"),
        ("solver", "surrogate.cli.Path", "pathlib.Path, defined outside"),
        ("solver", "solvers.registry._REGISTRY", "private name"),
    ],
)
def test_the_reported_targets_are_refused(config, key, target, message):
    with pytest.raises(solvers.UntrustedCodeError) as info:
        check_config(config(**{f"{key}._target_": target}))
    assert f"{key}._target_ = {target!r}" in str(info.value) and message in str(info.value)


def test_a_trusted_user_module_may_be_named(probe, config):
    name, marker = probe
    cfg = config(**{"solver._target_": f"{name}.make"})
    with pytest.raises(solvers.UntrustedCodeError):
        check_config(cfg)
    solvers.trust_module(name)
    assert check_config(cfg)["solver"].__name__ == "make"
    assert marker.exists()
    with pytest.raises(ValueError, match="__main__"):
        solvers.trust_module("__main__")


@pytest.mark.parametrize("name", ["../../escaped_run", "a/b", "a\\b", "..", ".", "", " "])
def test_a_run_name_must_be_one_path_component(config, name):
    with pytest.raises(ConfigError, match=r"^name: .* is not a run name"):
        check_config(config(name=name))


def test_hydra_never_creates_an_escaping_run_directory(tmp_path):
    """The one subprocess: Hydra makes the run directory before the entry point runs."""
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "surrogate", "experiment=tiny", "name=../../escaped_run"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "name: '../../escaped_run' is not a run name" in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]


def test_multirun_job_directories_stay_in_the_sweep_directory():
    check_job_dirs(["model=fno,unet", "data.path=../data/x", "name=../../a"])
    with pytest.raises(ConfigError, match=r"name=\.\./\.\./\.\./x: multirun job directories"):
        check_job_dirs(["model=fno", "name=a,../../../x"])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sed", 1, r"config: unknown key 'sed' .*did you mean 'seed'"),
        ("hybrid.num_step", 3, r"hybrid: unknown key 'num_step' .*did you mean 'num_steps'"),
        (
            "hybrid.sweep.indicatr",
            "x",
            r"hybrid.sweep: unknown key 'indicatr' .*did you mean 'indicator'",
        ),
        (
            "evaluate.num_trajectory",
            3,
            r"evaluate: unknown key 'num_trajectory' .*did you mean 'num_trajectories'",
        ),
        ("hybrid.compare_cost", True, r"hybrid: unknown key 'compare_cost'"),
        ("hybrid.num_steps", 0, r"hybrid.num_steps = 0 must be an int >= 1"),
        ("hybrid.num_trajectories", 0, r"hybrid.num_trajectories = 0 must be an int >= 1"),
        ("evaluate.num_trajectories", 0, r"evaluate.num_trajectories = 0 must be an int >= 1"),
        ("evaluate.batch_size", -1, r"evaluate.batch_size = -1 must be an int >= 1"),
        ("hybrid.sweep.thresholds", "fast", r"hybrid.sweep: key 'thresholds' = 'fast'"),
        ("hybrid.sweep.indicator", "nope", r"hybrid.sweep.indicator = 'nope' is not checked"),
        ("stages", ["train", "evalute"], r"stages: unknown stage\(s\) \['evalute'\]"),
        ("data_parallel", "maybe", r"data_parallel = 'maybe' must be true, false or auto"),
        ("distributed.enabeld", True, r"distributed: unknown key 'enabeld'"),
        ("train.history", 2, r"train.history = 2: the evaluate and front stage"),
    ],
)
def test_bad_keys_fail_at_start_up_naming_them(config, key, value, message):
    with pytest.raises(ConfigError, match=message):
        check_config(config(**{key: value}))


def test_history_is_refused_only_when_a_stage_cannot_use_it(config):
    cfg = config(**{"train.history": 2})
    check_config(cfg, ["generate", "validate", "train"])
    with pytest.raises(ConfigError, match="hybrid stage"):
        check_config(cfg, ["train", "hybrid"])


def test_the_documented_solver_swap_builds():
    """`hs-pipeline solver=navier_stokes_2d model=unet`: no KS key leaks from the default
    preset, and the hybrid runner's indicators fit the vorticity solver."""
    cfg = _compose(["solver=navier_stokes_2d", "model=unet"])
    targets = check_config(cfg)
    assert targets["solver"] is solvers.NavierStokes2D
    assert "initial_max_mode" not in cfg.solver
    check_hybrid_against_solver(cfg, build_solver(cfg))


@pytest.mark.parametrize("solver", sorted(p.stem for p in (CONFIGS / "solver").glob("*.yaml")))
def test_every_solver_choice_gets_only_its_own_keys(solver):
    cfg = _compose([f"solver={solver}"])
    check_config(cfg)
    expected = OmegaConf.load(CONFIGS / "solver" / f"{solver}.yaml")
    assert OmegaConf.to_container(cfg.solver) == OmegaConf.to_container(expected)


def test_indicators_that_do_not_fit_the_solver_fail_at_start_up():
    cfg = _compose(["solver=lorenz96"])  # the default indicators need KS's `mass`
    with pytest.raises(ValueError, match=r"hybrid.runner does not fit .*'mass'"):
        check_hybrid_against_solver(cfg, build_solver(cfg))


def test_generate_messages_name_the_command_line_overrides(tmp_path):
    import datasets
    from tests.datasets.dataset_helpers import GENERATE, ks_solver

    (tmp_path / "shard-00000.nc").write_bytes(b"stray")
    with pytest.raises(FileExistsError) as info:
        datasets.generate(ks_solver(), tmp_path, **GENERATE)
    message = generate_message(str(info.value))
    assert "data.overwrite=true" in message and "overwrite=True" not in message
