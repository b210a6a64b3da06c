"""Training checkpoints: resume after a kill at every checkpoint boundary, checksums with
fallback, the run directory lock, changed settings on resume, the shipped best step."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from datasets import ArrayLoader
from surrogate.forecaster import ForecasterSpec
from surrogate.pipeline import stage_train
from surrogate.train import (
    CheckpointCorruptedError,
    MetricsLog,
    RunLockedError,
    init_forecaster,
    run_lock,
    train,
)
from surrogate.training.checkpoints import Checkpoints
from tests.helpers import make_setup, same_params, small_config


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Every ``train`` call jits its step anew (~5 s to compile on 2 busy cores); the
    persistent cache makes the ~20 calls of this module compile once."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    keys = {
        "jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax_cache")),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
    }
    old = {k: getattr(jax.config, k) for k in keys}
    for k, v in keys.items():
        jax.config.update(k, v)
    cc.reset_cache()
    yield
    for k, v in old.items():
        jax.config.update(k, v)
    cc.reset_cache()


@pytest.fixture(scope="module")
def setup():
    """A tiny KS dataset (4 trajectories of 16 frames), a tiny FNO spec, its statistics."""
    _, data, spec, stats = make_setup(num_traj=4, num_frames=16, width=8, modes=4)
    return data, spec, stats


def config(**kw):
    # num_steps, learning rate and warmup enter the compiled step: keep them fixed so the
    # compilation cache serves every test
    base = dict(num_steps=15, val_rollout_steps=2, val_batches=1, keep_checkpoints=2)
    return small_config(**{**base, **kw})


def run(setup, run_dir, cfg, *, seed=0, spec=None, **kw):
    data, spec0, stats = setup
    val = (
        ArrayLoader(data, batch_size=8, horizon=cfg.val_rollout_steps)
        if cfg.validate_every
        else None
    )
    f = init_forecaster(spec or spec0, stats, seed=seed)
    loader = ArrayLoader(data, batch_size=8)
    return train(f, loader, cfg, run_dir, val_loader=val, progress=False, **kw)


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def largest_file(root: Path) -> Path:
    return max((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


class Crash(Exception):
    """An injected crash."""


# Each checkpoint write goes through these steps; a crash is injected before each call.
CRASH_POINTS = ("_commit", "_write_sidecar", "_delete")


def _hook(monkeypatch, on_call):
    for name in CRASH_POINTS:
        real = getattr(Checkpoints, name)

        def wrapped(self, manager, step, *args, _real=real, _name=name, **kwargs):
            on_call((_name, Path(manager.directory).name, step))
            return _real(self, manager, step, *args, **kwargs)

        monkeypatch.setattr(Checkpoints, name, wrapped)


@pytest.mark.integration  # heavy (> 5 s): kept out of the default suite's budget
def test_kill_at_every_checkpoint_boundary_resumes_bitwise(setup, tmp_path, monkeypatch):
    """Crash before every orbax commit, checksum sidecar and pruning deletion of a run with
    "best" and "last" checkpoints interleaved (the best ahead of the last included), then
    rerun the same command until it completes: parameters, best model, best step and
    metrics equal the uninterrupted run's bit for bit. Nothing a crash handler could tidy
    runs on disk here, so each crash leaves what a SIGKILL at that point leaves."""
    cfg = config(validate_every=5, checkpoint_every=10, keep_checkpoints=1)
    points = []
    _hook(monkeypatch, points.append)
    straight = run(setup, tmp_path / "straight", cfg)
    monkeypatch.undo()
    kinds = {(name, where) for name, where, _ in points}
    assert {("_commit", "best"), ("_commit", "checkpoints"), ("_delete", "best")} <= kinds

    crashed = []

    def crash(point):
        if point in points and point not in crashed:
            crashed.append(point)
            raise Crash(point)

    _hook(monkeypatch, crash)
    for _ in range(len(points) + 1):
        try:
            resumed = run(setup, tmp_path / "killed", cfg)
            break
        except Crash:
            continue
    monkeypatch.undo()
    # one crash at each point (a resumed run prunes "best" later than a straight one)
    assert sorted(crashed) == sorted(points) and len(set(points)) == len(points)
    assert same_params(straight.forecaster.params, resumed.forecaster.params)
    assert same_params(straight.best_forecaster.params, resumed.best_forecaster.params)
    assert resumed.best_step == straight.best_step
    keys = ("step", "loss", "val_nrmse")
    assert [[r[k] for k in keys] for r in MetricsLog.read(tmp_path / "killed")] == [
        [r[k] for k in keys] for r in straight.metrics
    ]


def test_corrupted_checkpoint_falls_back_to_the_previous_one(setup, tmp_path, caplog):
    cfg = config(checkpoint_every=5, keep_checkpoints=2)
    straight = run(setup, tmp_path / "straight", cfg)
    d = tmp_path / "run"
    run(setup, d, cfg)
    assert json.loads((d / "checkpoints" / "15" / "sha256.json").read_text())["sha256"]
    target = largest_file(d / "checkpoints" / "15" / "state")
    flip_bit(target)
    with caplog.at_level(logging.WARNING, logger="surrogate.train"):
        again = run(setup, d, cfg)
    assert re.search(
        rf"checkpoint {re.escape(str(d / 'checkpoints' / '15'))} is corrupted \(.*"
        rf"{re.escape(str(target))}.*resuming from step 10",
        caplog.text,
    ), caplog.text
    assert (d / "corrupted" / "checkpoints-15").is_dir()  # kept for inspection
    assert same_params(straight.forecaster.params, again.forecaster.params)
    # nothing intact: a clear error naming each checkpoint, and nothing is moved
    for step in (10, 15):
        flip_bit(largest_file(d / "checkpoints" / str(step) / "state"))
    with pytest.raises(CheckpointCorruptedError, match=r"no intact checkpoint.*step 15: .*step 10"):
        run(setup, d, cfg)
    assert sorted(p.name for p in (d / "checkpoints").iterdir() if p.name.isdigit()) == [
        "10",
        "15",
    ]


def test_malformed_checkpoint_metadata_names_the_file(setup, tmp_path):
    d = tmp_path / "run"
    run(setup, d, config(), stop_at=10)
    step_dir = d / "checkpoints" / "10"
    meta = step_dir / "meta" / "metadata"
    assert meta.is_file()
    meta.write_text('{"step": 10, ')
    (step_dir / "sha256.json").unlink()  # as written before checksums: only JSON can tell
    with pytest.raises(CheckpointCorruptedError, match=re.escape(f"{meta}: invalid")):
        run(setup, d, config())


LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_second_training_in_a_run_directory_is_refused(setup, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(d / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = rf"{re.escape(str(d))} is in use by process {holder.pid}"
        with pytest.raises(RunLockedError, match=refused):
            run(setup, d, config(), stop_at=0)
        # the pipeline's train stage holds the run directory before it looks at anything
        with pytest.raises(RunLockedError, match=refused):
            stage_train(
                tmp_path / "no-data", d, model_name="fno", model_kwargs={}, train_config=config()
            )
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock file (its pid still inside) is taken over
    with run_lock(d):  # re-entrant in one process (a pipeline holding it calls train)
        res = run(setup, d, config(), stop_at=0)
        assert (d / ".lock").read_text().strip() == str(os.getpid())
    assert res.step == 0


def test_resume_with_changed_settings_is_refused_unless_forced(setup, tmp_path):
    _, spec, _ = setup
    d = tmp_path / "run"
    run(setup, d, config(), stop_at=10)
    where = re.escape(str(d / "checkpoints" / "10"))
    changed = config(learning_rate=1e-2)
    with pytest.raises(ValueError, match=rf"{where} \(step 10\).*learning_rate 0\.003 -> 0\.01"):
        run(setup, d, changed, stop_at=10)
    res = run(setup, d, changed, stop_at=10, resume="force")
    record = {"step": 10, "changes": {"learning_rate": [0.003, 0.01]}}
    assert res.config_changes == [record]
    assert json.loads((d / "training.json").read_text())["config_changes"] == [record]
    assert res.forecaster.spec.provenance["training"]["config_changes"] == [record]
    # another architecture: the checkpoint and the differing keys are named ...
    other = ForecasterSpec.from_dict(
        {**spec.to_dict(), "model_kwargs": {**spec.model_kwargs, "modes": 3}}
    )
    with pytest.raises(ValueError, match=rf"{where} .*spec\.model_kwargs\.modes 4 -> 3"):
        run(setup, d, config(), spec=other, stop_at=10)
    # ... and forced, each parameter that cannot be restored, with both shapes
    with pytest.raises(
        ValueError,
        match=r"does not fit .*params/spectral/0/weight: stored shape \(4, 2, 8, 8\), "
        r"expected \(3, 2, 8, 8\)",
    ):
        run(setup, d, config(), spec=other, stop_at=10, resume="force")


def test_final_step_is_validated_and_the_shipped_step_recorded(setup, tmp_path):
    cfg = config(validate_every=10, checkpoint_every=0)  # validations at 10 and 15 (final)
    res = run(setup, tmp_path, cfg)
    vals = {r["step"]: r["val_nrmse"] for r in res.metrics if r["val_nrmse"] is not None}
    assert sorted(vals) == [10, 15]
    assert res.best_step == min(vals, key=vals.get)
    assert json.loads((tmp_path / "training.json").read_text())["best_step"] == res.best_step
    assert res.best_forecaster.spec.provenance["training"]["best_step"] == res.best_step


def test_curriculum_beyond_num_steps_warns(setup, tmp_path, caplog):
    cfg = config(rollout_schedule=[[0, 1], [10, 2], [40, 4]])
    with caplog.at_level(logging.WARNING, logger="surrogate.train"):
        run(setup, tmp_path, cfg, stop_at=0)
    assert "rollout_schedule entries [[40, 4]] start at or after num_steps=15" in caplog.text
    assert "k=[1, 2] only" in caplog.text
