"""The program itself: every preset composes and passes the start-up checks; the tiny
pipeline runs end to end, resumes by skipping finished stages, and bad keys fail early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from surrogate.cli import check_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
HYBRIDS = sorted(p.stem for p in (CONFIGS / "hybrid").glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_checks(experiment):
    cfg = _compose([f"experiment={experiment}"])
    check_config(cfg)
    assert cfg.data.path


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_preset_takes_every_model(experiment):
    # `hs-pipeline experiment=shallow_water model=unet` used to fail on the preset's FNO keys:
    # presets pick a model config and carry no model keys of their own.
    from surrogate.models import MODELS as REGISTRY

    for model in ("unet", "afno", "fno"):
        targets = check_config(_compose([f"experiment={experiment}", f"model={model}"]))
        assert targets["model"] is REGISTRY[model]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_checks(model):
    from surrogate.models import MODELS as REGISTRY

    targets = check_config(_compose([f"model={model}"]))
    assert targets["model"] is REGISTRY[model.split("_")[0]]  # fno_coarse is an FNO


@pytest.mark.parametrize("hybrid", HYBRIDS)
def test_every_hybrid_preset_checks(hybrid):
    from omegaconf import OmegaConf

    from surrogate.hybrid import HybridRunner

    targets = check_config(_compose([f"hybrid={hybrid}"]))
    policy = "threshold" if hybrid == "default" else hybrid
    expected = OmegaConf.load(CONFIGS / "hybrid" / "policy" / f"{policy}.yaml")._target_
    assert targets["hybrid.runner"] is HybridRunner
    assert targets["hybrid.runner.policy"].__name__ == expected.rsplit(".", 1)[-1]


def test_misspelled_key_names_it():
    cfg = _compose(["+model.widht=3"])
    with pytest.raises(ValueError, match=r"model: unknown key 'widht'.*did you mean 'width'"):
        check_config(cfg)
    cfg = _compose(["train.learning_rate=fast"])
    with pytest.raises(
        ValueError, match=r"train: key 'learning_rate' = 'fast' has type str, expected float"
    ):
        check_config(cfg)


def _run(args, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "surrogate",
            "experiment=tiny",
            f"hydra.run.dir={tmp_path / 'run'}",
            f"data.path={tmp_path / 'data'}",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.integration
def test_tiny_pipeline_end_to_end_and_resume(tmp_path):
    proc = _run([], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    for rel in (
        "config.yaml",
        "versions.json",
        "validation.json",
        "forecaster/bundle.json",
        "train/metrics.csv",
        "evaluation.nc",
        "hybrid/run.nc",
        "hybrid/summary.json",
        "figures/skill.png",
        "figures/snapshots.png",
        "figures/rollout.gif",
        "figures/hybrid_tradeoff.png",
        "figures/training.png",
        "report.md",
        "report.html",
    ):
        assert (run / rel).exists() and (run / rel).stat().st_size > 0, rel
    assert json.loads((run / "validation.json").read_text())["ok"]
    summary = json.loads((run / "hybrid" / "summary.json").read_text())
    counts = summary["hybrid"]["engine_counts"]
    assert sum(counts.values()) == summary["num_steps"] * summary["num_trajectories"]
    html = (run / "report.html").read_text()
    assert "figures/skill.png" in html and "Hybrid runner" in html
    # a rerun finds every stage done and only rewrites the report
    bundle_mtime = (run / "forecaster" / "bundle.json").stat().st_mtime
    proc2 = _run([], tmp_path)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    log = proc2.stdout + proc2.stderr
    for msg in (
        "already complete",
        "validate: up to date",
        "train: bundle exists",
        "evaluate: up to date",
        "hybrid: up to date",
    ):
        assert msg in log, msg
    assert (run / "forecaster" / "bundle.json").stat().st_mtime == bundle_mtime
    # a changed training key is refused, naming it, and config.yaml still describes the run
    proc3 = _run(["train.num_steps=14"], tmp_path, timeout=120)
    assert proc3.returncode == 1
    assert "train (forecaster, train): train.num_steps: 20 -> 14" in proc3.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["num_steps"] == 20
    assert (run / "forecaster" / "bundle.json").stat().st_mtime == bundle_mtime
    # on_change=redo retrains, drops the stale evaluation and report, and records the change
    proc4 = _run(["train.num_steps=14", "on_change=redo", "stages=[train]"], tmp_path)
    assert proc4.returncode == 0, proc4.stderr[-3000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["num_steps"] == 14
    training = json.loads((run / "forecaster" / "bundle.json").read_text())
    assert training["spec"]["provenance"]["train_config"]["num_steps"] == 14
    for rel in ("evaluation.nc", "hybrid", "report.md", "report.html"):
        assert not (run / rel).exists(), rel
    stages = json.loads((run / "stages.json").read_text())
    assert stages["train"]["train.num_steps"] == 14 and "evaluate" not in stages


def test_bad_key_fails_at_start_up(tmp_path):
    proc = _run(["+solver.viscosty=0.1"], tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "solver: unknown key 'viscosty'" in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing was generated


def test_hybrid_stage_records_members_that_go_nonfinite(tmp_path):
    """A hybrid run can fail where the solver alone does not; the stage records it (summary,
    log, report) instead of losing its other runs."""
    import datasets
    from surrogate import pipeline
    from surrogate.hybrid import AlwaysSurrogate, HybridRunner
    from surrogate.report import write_report
    from tests.datasets.dataset_helpers import ks_solver
    from tests.helpers import Scaled

    solver = ks_solver()
    data = datasets.generate(
        solver,
        tmp_path / "data",
        num_trajectories=10,
        num_frames=4,
        trajectories_per_shard=5,
        splits={"train": 0.6, "val": 0.2, "test": 0.2},
        progress=False,
    )
    # accepts a NaN surrogate step: every member goes non-finite at the first step
    runner = HybridRunner(
        solver, Scaled(solver, float("nan")), AlwaysSurrogate(), fallback_on_nonfinite=False
    )
    run = tmp_path / "run"
    summary = pipeline.stage_hybrid(
        runner, data, run, num_steps=6, num_trajectories=2, scenarios={"x2": 2.0}
    )
    assert summary["hybrid"]["nonfinite_members"] == 2
    # t0 + 1 * dt in float64: one rounding at most
    assert summary["hybrid"]["first_nonfinite_time"] == pytest.approx(solver.dt, rel=1e-15, abs=0)
    assert summary["scenario_x2"]["hybrid"]["nonfinite_members"] == 2
    assert summary["solver"]["solver_fraction"] == 1.0  # the reference run is intact
    report = write_report(run, data)
    assert "went non-finite in 2 members" in Path(report).with_suffix(".md").read_text()


def test_data_parallel_batches_must_divide_by_the_devices():
    from omegaconf import OmegaConf

    from surrogate.cli import _check_divisible_batches

    cfg = OmegaConf.create({"train": {"batch_size": 6}, "hybrid": {"num_trajectories": 8}})
    _check_divisible_batches(cfg, ["train", "hybrid"], 2)
    with pytest.raises(ValueError, match=r"train.batch_size=6 must be multiples of 4"):
        _check_divisible_batches(cfg, ["train", "hybrid"], 4)
    _check_divisible_batches(cfg, ["evaluate", "hybrid"], 4)  # no training stage
    with pytest.raises(ValueError, match=r"hybrid.num_trajectories=8 must be multiples of 3"):
        _check_divisible_batches(cfg, ["hybrid"], 3)


def test_cli_errors_name_overrides_not_python_keywords():
    from surrogate.cli import cli_message, generate_message

    msg = "train: checkpoint x was written with other settings; pass resume='force' to continue"
    assert cli_message(msg).endswith("pass resume=force to continue")
    assert generate_message("pass overwrite=True to replace it, or choose another out_dir") == (
        "pass data.overwrite=true to replace it, or choose another data.path"
    )


@pytest.mark.parametrize(
    "override, named",
    [
        ("+resum=false", "config: unknown key 'resum'"),
        ("+solver.viscosty=0.1", "solver: unknown key 'viscosty'"),
        ("+data.num_trajectoris=4", "data: unknown key 'num_trajectoris'"),
        ("+model.widht=3", "model: unknown key 'widht'"),
        ("+train.num_step=3", "train: unknown key 'num_step'"),
        ("+evaluate.long_rollout_step=3", "evaluate"),
        ("+front.ladderz=[8]", "front"),
        ("+hybrid.short_lead_stepz=3", "hybrid: unknown key 'short_lead_stepz'"),
        ("+hybrid.sweep.indicatr=x", "hybrid.sweep: unknown key 'indicatr'"),
        ("+hybrid.runner.chunk_sise=4", "hybrid.runner: unknown key 'chunk_sise'"),
        ("+hybrid.runner.policy.threshol=1", "hybrid.runner.policy: unknown key 'threshol'"),
        ("+hybrid.runner.indicators.0.fractoin=1", "hybrid.runner.indicators[0]"),
        ("+distributed.enabeld=true", "distributed"),
        ("on_change=sometimes", "on_change = 'sometimes' must be one of refuse, redo"),
    ],
)
def test_every_config_group_names_a_misspelled_key(override, named):
    # the KS preset runs the hybrid stage, the main job the front stage
    experiment = "kolmogorov_front" if override.startswith("+front") else "ks"
    cfg = _compose([f"experiment={experiment}", override])
    with pytest.raises(ValueError) as e:
        check_config(cfg, list(cfg.stages))
    assert named in str(e.value)
    assert override.lstrip("+").split("=")[0].rsplit(".", 1)[-1] in str(e.value)
