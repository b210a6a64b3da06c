"""The main job's chain in miniature: coarse-grained data, a learned correction, its front."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from surrogate.front_stage import add_stage_time, headline, read_stage_times

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("speedup_at_matched_error", "lead", "matched_error", "breakeven_time_units", "stepper")


def test_headline_states_speedup_lead_error_and_breakeven():
    front = {
        "stepper": "correction-fno",
        "speedup_at_matched_error": 3.0,
        "bound": None,
        "matched_error": 0.25,
        "lead": 2,
        "batch_size": 8,
        "breakeven_time_units": 1200.0,
    }
    text = headline(front)
    for part in ("correction-fno", "3x", "0.25", "lead 2", "batch 8", "1.2e+03"):
        assert part in text, (part, text)
    assert "<= 3x" in headline({**front, "bound": "upper"})
    assert "never" in headline({**front, "breakeven_time_units": None})


def test_stage_times_add_up_over_resumes(tmp_path):
    add_stage_time(tmp_path, "train", 10.0)
    add_stage_time(tmp_path, "train", 2.5)
    add_stage_time(tmp_path, "generate", 1.0)
    assert read_stage_times(tmp_path) == {"train": 12.5, "generate": 1.0}
    (tmp_path / "stage_times.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="stage_times.json"):
        read_stage_times(tmp_path)


@pytest.mark.integration
def test_tiny_front_pipeline_writes_front_json_and_a_verdict(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "surrogate",
        "experiment=tiny_front",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.path={tmp_path / 'data'}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    front = json.loads((run / "front.json").read_text())
    for key in REQUIRED:
        assert key in front, key
    # The headline is the learned stepper with the larger speed-up: the trained correction
    # or the fitted linear closure it is measured against.
    assert front["stepper"] in ("correction-fno", "spectral-filter")
    names = [s["name"] for s in front["steppers"]]
    kinds = [s["kind"] for s in front["steppers"]]
    assert kinds == ["reference", "solver", "solver", "learned", "learned", "floor", "hybrid"]
    assert names[3:5] == ["correction-fno", "spectral-filter"]
    versus = front["network_vs_filter"]
    assert versus["stepper"] == "correction-fno"
    assert versus["filter_error"] == front["steppers"][4]["error_at_lead"]
    assert front["spectral_filter"]["pairs"] > 0 and front["spectral_filter"]["fit_s"] > 0
    # The floor: the fine solver from the 16^2 states, scored on 16^2; every learned stepper
    # is placed against it.
    floor = front["steppers"][5]
    # why: frame 0 is the 16^2 state refined to 32^2 and projected back; four float32 FFTs
    # of round-off (~1e-7 relative each) separate it from the reference's projection.
    assert floor["error"][0] < 1e-5 and front["floor_error"] == floor["error_at_lead"]
    assert front["ceiling_speedup_at_matched_error"] is not None
    ref = front["steppers"][0]
    # why: the reference scored against itself; nRMSE is exactly 0 up to float32 round-off.
    assert max(ref["error"]) < 1e-6
    # The hybrid's long run is scored like every other stepper's.
    hyb = front["steppers"][-1]
    assert hyb["spectrum_max_rel_error"] is not None and hyb["enstrophy_rel_error"] is not None
    assert (run / "figures" / "front.png").stat().st_size > 0
    report = (run / "report.md").read_text()
    first = report.split("\n## ", 2)[1]
    assert first.startswith("Verdict") and "faster than the solver ladder" in first
    assert "Error floor at lead" in first and "Against the linear closure" in first
    times = json.loads((run / "stage_times.json").read_text())
    assert times["generate"] > 0 and times["train"] > 0
    assert "data generation" in front["upfront_cost_note"]
    # The bundle is a learned correction: it reloads with its coarse solver.
    from surrogate.correction import LearnedCorrection, load_stepper

    assert isinstance(load_stepper(run / "forecaster"), LearnedCorrection)


def test_generation_seconds_sum_completed_runs_only():
    from surrogate.front_stage import generation_seconds

    history = [
        {"event": "started", "time": "2026-01-01T00:00:00+00:00"},
        {"event": "started", "time": "2026-01-01T01:00:00+00:00"},  # the first was killed
        {"event": "completed", "time": "2026-01-01T01:02:00+00:00"},
        {"event": "started", "time": "2026-01-01T02:00:00+00:00"},
        {"event": "completed", "time": "2026-01-01T02:00:30+00:00"},
    ]
    assert generation_seconds({"history": history}) == 150.0
    assert generation_seconds({}) == 0.0
