"""Stage records: a rerun never leaves config.yaml describing results it did not make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from surrogate.stage_records import (
    RECORDS,
    StaleRunError,
    check_run,
    read_records,
    record_stage,
    stage_settings,
)
from surrogate.train import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def _config(**train):
    return {
        "solver": {"_target_": "solvers.KuramotoSivashinsky", "num_points": 32},
        "data": {"num_trajectories": 8, "progress": True, "num_workers": "auto"},
        "model": {"_target_": "surrogate.models.FNO", "width": 16},
        "train": {"num_steps": 20, "rollout_schedule": [[0, 1], [0.5, 2]], **train},
        "evaluate": {"num_trajectories": 4, "batch_size": 4},
        "hybrid": {"num_steps": 10},
        "stepper": "forecaster",
        "seed": 0,
        "progress": True,
        "name": "x",
    }


def _finish(run, stage, cfg):
    markers = {
        "train": "forecaster/bundle.json",
        "evaluate": "evaluation.nc",
        "validate": "validation.json",
    }
    path = run / markers[stage]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    record_stage(run, stage, cfg)


def test_unchanged_settings_pass_and_speed_keys_are_ignored(tmp_path):
    cfg = _config()
    for stage in ("validate", "train", "evaluate"):
        _finish(tmp_path, stage, cfg)
    assert check_run(tmp_path, cfg) == []
    faster = _config()
    faster["data"] = {**faster["data"], "progress": False, "num_workers": 1}
    faster["evaluate"] = {**faster["evaluate"], "batch_size": 2}
    faster["progress"], faster["name"] = False, "y"
    assert check_run(tmp_path, faster) == []


def test_changed_training_key_is_refused_naming_it(tmp_path):
    cfg = _config()
    for stage in ("train", "evaluate"):
        _finish(tmp_path, stage, cfg)
    with pytest.raises(StaleRunError) as e:
        check_run(tmp_path, _config(num_steps=30))
    msg = str(e.value)
    assert "train (forecaster, train): train.num_steps: 20 -> 30" in msg
    assert "evaluate (evaluation.nc" in msg  # downstream of training, so stale as well
    assert "on_change=redo" in msg and "name=" in msg
    assert (tmp_path / "forecaster" / "bundle.json").exists()  # refusing touches nothing


def test_downstream_only_change_marks_only_that_stage(tmp_path):
    cfg = _config()
    for stage in ("train", "evaluate"):
        _finish(tmp_path, stage, cfg)
    new = _config()
    new["evaluate"] = {**new["evaluate"], "num_trajectories": 8}
    with pytest.raises(StaleRunError, match=r"evaluate .*evaluate.num_trajectories: 4 -> 8") as e:
        check_run(tmp_path, new)
    assert "train (" not in str(e.value)


def test_redo_removes_stale_outputs_and_the_report(tmp_path):
    cfg = _config()
    for stage in ("validate", "train", "evaluate"):
        _finish(tmp_path, stage, cfg)
    (tmp_path / "train").mkdir()
    (tmp_path / "report.md").write_text("old")
    new = _config(num_steps=30)
    assert check_run(tmp_path, new, on_change="redo") == ["train", "evaluate"]
    assert not (tmp_path / "forecaster").exists() and not (tmp_path / "train").exists()
    assert not (tmp_path / "evaluation.nc").exists() and not (tmp_path / "report.md").exists()
    assert (tmp_path / "validation.json").exists()  # does not depend on training
    assert set(read_records(tmp_path)) == {"validate"}
    assert check_run(tmp_path, new) == []  # nothing stale is left


def test_redo_with_resume_force_keeps_the_checkpoints(tmp_path):
    cfg = _config()
    _finish(tmp_path, "train", cfg)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "ckpt").write_text("c")
    check_run(tmp_path, _config(num_steps=30), on_change="redo", keep_checkpoints=True)
    assert (tmp_path / "train" / "ckpt").exists()
    assert not (tmp_path / "forecaster").exists()


def test_run_made_before_records_is_checked_against_its_config_yaml(tmp_path):
    (tmp_path / "forecaster").mkdir()
    (tmp_path / "forecaster" / "bundle.json").write_text("{}")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_config()))
    assert check_run(tmp_path, _config()) == []
    with pytest.raises(StaleRunError, match=r"train.num_steps: 20 -> 30"):
        check_run(tmp_path, _config(num_steps=30))


def test_bad_records_file_and_bad_mode_are_clear_errors(tmp_path):
    (tmp_path / RECORDS).write_text("{not json")
    with pytest.raises(StaleRunError, match=r"stages.json cannot be read"):
        check_run(tmp_path, _config())
    with pytest.raises(ValueError, match=r"on_change must be one of \('refuse', 'redo'\)"):
        check_run(tmp_path, _config(), on_change="maybe")


def test_settings_round_trip_through_json(tmp_path):
    cfg = _config()
    record_stage(tmp_path, "train", cfg)
    stored = json.loads((tmp_path / RECORDS).read_text())["train"]
    assert stored == stage_settings(cfg, "train")
    assert stored["train.rollout_schedule"] == [[0, 1], [0.5, 2]]


def test_relative_curriculum_follows_num_steps():
    sched = [[0, 1], [0.5, 2], [0.75, 4]]
    assert TrainConfig(num_steps=3000, rollout_schedule=sched).rollout_schedule == (
        (0, 1),
        (1500, 2),
        (2250, 4),
    )
    short = TrainConfig(num_steps=500, rollout_schedule=sched)
    assert [short.rollout_at(s) for s in (0, 249, 250, 374, 375, 499)] == [1, 1, 2, 2, 4, 4]
    assert TrainConfig(num_steps=500, rollout_schedule=[[0, 1], [100, 2]]).rollout_at(150) == 2
    with pytest.raises(ValueError, match=r"step 1.5 is neither an integer step nor a fraction"):
        TrainConfig(num_steps=10, rollout_schedule=[[0, 1], [1.5, 2]])
    with pytest.raises(ValueError, match=r"lengths k must be integers, got 2.5"):
        TrainConfig(num_steps=10, rollout_schedule=[[0, 1], [0.5, 2.5]])


def test_default_training_config_runs_its_curriculum_on_a_short_run():
    # The README's `train.num_steps=500` used to train one-step only (switch at 1500).
    cfg = yaml.safe_load((REPO / "configs" / "train" / "default.yaml").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "seed"}
    short = TrainConfig(**{**cfg, "num_steps": 500})
    assert short.rollout_at(499) == short.max_rollout == 4
