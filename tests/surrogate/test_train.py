"""Forecaster, bundle and training: overfit, exact resume (also after SIGKILL), NaN stop."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datasets import ArrayLoader
from solvers import KuramotoSivashinsky, rollout
from surrogate.bundle import load_forecaster, save_forecaster
from surrogate.forecaster import ForecasterSpec
from surrogate.train import MetricsLog, TrainingDivergedError, init_forecaster, train
from tests.helpers import make_setup, same_params, small_config

REPO = Path(__file__).resolve().parents[2]


class NanAtLoader(ArrayLoader):
    """The public in-memory loader with a test hook: batch ``nan_at`` has NaN inputs."""

    def __init__(self, trajectories, *, nan_at, **kw):
        super().__init__(trajectories, **kw)
        self.nan_at = nan_at

    def batch(self, step, part=None):
        x, y = super().batch(step, part)
        if self.nan_at is not None and step == self.nan_at:
            x = x * np.nan
        return x, y


@pytest.fixture(scope="module")
def setup():
    return make_setup()


def test_forecaster_is_a_stepper(setup):
    solver, data, spec, stats = setup
    f = init_forecaster(spec, stats, seed=0)
    assert f.dt == solver.dt and f.variables == solver.variables
    u = jnp.asarray(data[0, 0])
    out = f(u)
    assert out.shape == u.shape and out.dtype == u.dtype
    traj = rollout(f, u, 3)
    assert traj.shape == (4, *u.shape)
    # vmap over a batch equals stepping members one by one (same network, same inputs)
    batch = jnp.asarray(data[:3, 0])
    vm = jax.vmap(f)(batch)
    loop = jnp.stack([f(b) for b in batch])
    # batched vs unbatched convolutions/FFTs may reassociate sums: float32 round-off
    np.testing.assert_allclose(vm, loop, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="state has shape"):
        f(jnp.zeros((1, 16)))


def test_tiny_model_overfits_tiny_dataset(setup, tmp_path):
    _, data, spec, stats = setup
    loader = ArrayLoader(data[:2], batch_size=8)
    cfg = small_config(num_steps=200, learning_rate=5e-3, warmup_steps=10, checkpoint_every=0)
    res = train(init_forecaster(spec, stats), loader, cfg, tmp_path, progress=False)
    losses = [r["loss"] for r in res.metrics]
    # the acceptance criterion of the issue: the loss falls by at least 10x
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_bitwise_resume_after_stop(setup, tmp_path):
    _, data, spec, stats = setup
    cfg = small_config()
    straight = train(
        init_forecaster(spec, stats),
        ArrayLoader(data, batch_size=8),
        cfg,
        tmp_path / "a",
        progress=False,
    )
    train(
        init_forecaster(spec, stats),
        ArrayLoader(data, batch_size=8),
        cfg,
        tmp_path / "b",
        progress=False,
        stop_at=10,
    )
    # resume from a *different* initialisation: everything must come from the checkpoint
    resumed = train(
        init_forecaster(spec, stats, seed=99),
        ArrayLoader(data, batch_size=8),
        cfg,
        tmp_path / "b",
        progress=False,
    )
    assert same_params(straight.forecaster.params, resumed.forecaster.params)
    assert [r["loss"] for r in straight.metrics] == [
        r["loss"] for r in MetricsLog.read(tmp_path / "b")
    ]
    # resume=False never silently trains over an existing run
    with pytest.raises(FileExistsError, match="holds checkpoints up to step 20; pass resume=True"):
        train(
            init_forecaster(spec, stats),
            ArrayLoader(data, batch_size=8),
            cfg,
            tmp_path / "b",
            progress=False,
            resume=False,
        )


@pytest.mark.integration
def test_bitwise_resume_after_sigkill(setup, tmp_path):
    """Kill -9 the training process after its step-10 checkpoint, rerun, compare."""
    _, data, spec, stats = setup
    cfg = small_config()
    straight = train(
        init_forecaster(spec, stats),
        ArrayLoader(data, batch_size=8),
        cfg,
        tmp_path / "a",
        progress=False,
    )
    script = textwrap.dedent(
        f"""
        import os, signal
        from datasets import ArrayLoader
        from tests.helpers import make_setup, small_config
        from surrogate.train import init_forecaster, train
        _, data, spec, stats = make_setup()
        def die(step):
            if step == 15:
                os.kill(os.getpid(), signal.SIGKILL)
        train(init_forecaster(spec, stats), ArrayLoader(data, batch_size=8), small_config(), {str(tmp_path / "b")!r},
              progress=False, on_step=die)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    records = MetricsLog.read(tmp_path / "b")
    assert records[-1]["step"] == 15  # the log survived the kill up to the last logged step
    resumed = train(
        init_forecaster(spec, stats, seed=5),
        ArrayLoader(data, batch_size=8),
        cfg,
        tmp_path / "b",
        progress=False,
    )
    assert same_params(straight.forecaster.params, resumed.forecaster.params)
    assert [r["loss"] for r in straight.metrics] == [
        r["loss"] for r in MetricsLog.read(tmp_path / "b")
    ]


def test_nan_loss_stops_and_keeps_good_checkpoint(setup, tmp_path):
    _, data, spec, stats = setup
    cfg = small_config(num_steps=30)
    with pytest.raises(TrainingDivergedError, match="step 17"):
        train(
            init_forecaster(spec, stats),
            NanAtLoader(data, batch_size=8, nan_at=17),
            cfg,
            tmp_path,
            progress=False,
        )
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 10  # nothing written after the bad step
    # the good checkpoint restores to finite parameters and training resumes from it
    res = train(
        init_forecaster(spec, stats), ArrayLoader(data, batch_size=8), cfg, tmp_path, progress=False
    )
    assert res.step == 30
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(res.forecaster.params))


@pytest.mark.integration  # heavy (> 5 s): kept out of the default suite's budget
def test_rollout_curriculum_pushforward_noise_bf16(setup, tmp_path):
    _, data, spec, stats = setup
    cfg = small_config(
        num_steps=10,
        rollout_schedule=[[0, 1], [5, 3]],
        pushforward=True,
        input_noise_std=0.01,
        checkpoint_every=0,
    )
    assert [cfg.rollout_at(s) for s in (0, 4, 5, 9)] == [1, 1, 3, 3]
    res = train(
        init_forecaster(spec, stats),
        ArrayLoader(data, batch_size=8, horizon=3),
        cfg,
        tmp_path / "fp",
        progress=False,
    )
    assert [r["rollout_k"] for r in res.metrics] == [1, 3]
    assert all(np.isfinite(r["loss"]) for r in res.metrics)
    bf16_spec = ForecasterSpec.from_dict({**spec.to_dict(), "compute_dtype": "bfloat16"})
    res16 = train(
        init_forecaster(bf16_spec, stats),
        ArrayLoader(data, batch_size=8),
        small_config(num_steps=10, checkpoint_every=0),
        tmp_path / "bf",
        progress=False,
    )
    leaves = jax.tree.leaves(res16.forecaster.params)
    assert all(x.dtype == jnp.float32 for x in leaves)  # parameters stay float32
    out = res16.forecaster(jnp.asarray(data[0, 0]))
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


def test_bundle_round_trip_and_refusal(setup, tmp_path):
    solver, data, spec, stats = setup
    f = init_forecaster(spec, stats, seed=3)
    path = save_forecaster(f, tmp_path / "bundle")
    meta = json.loads((path / "bundle.json").read_text())
    assert meta["spec"]["variables"] == ["u"] and meta["spec"]["dt"] == solver.dt
    g = load_forecaster(path, solver=solver)
    u = jnp.asarray(data[:2, 0])
    np.testing.assert_array_equal(np.asarray(jax.vmap(f)(u)), np.asarray(jax.vmap(g)(u)))
    with pytest.raises(FileExistsError):
        save_forecaster(f, path)
    other_grid = KuramotoSivashinsky(num_points=64, domain_length=22.0, dt=0.5, num_substeps=2)
    with pytest.raises(ValueError, match="num_points"):
        load_forecaster(path, solver=other_grid)
    other_dt = KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=0.25, num_substeps=1)
    with pytest.raises(ValueError, match="dt 0.25 != trained 0.5"):
        load_forecaster(path, solver=other_dt)
    with pytest.raises(FileNotFoundError, match="not a forecaster bundle"):
        load_forecaster(tmp_path)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"rollout_schedule": [[5, 1]]}, "start at step 0"),
        ({"checkpoint_every": 7}, "multiple of log_every"),
        ({"compute_dtype": "float16"}, "compute_dtype"),
        ({"learning_rate": -1.0}, "learning_rate"),
    ],
)
def test_train_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        small_config(**kw)


def test_conserved_mean_is_kept_exactly(setup):
    solver, data, spec, stats = setup
    assert solver.conserved_means == ("u",)
    cons = ForecasterSpec.from_dict({**spec.to_dict(), "conserved": ["u"]})
    f = init_forecaster(cons, stats, seed=1)
    free = init_forecaster(spec, stats, seed=1)
    u = jnp.asarray(data[:4, 0])
    traj = jax.vmap(lambda x: rollout(f, x, 20))(u)
    drift = jnp.abs(traj.mean(axis=(-1, -2)) - u.mean(axis=(-1, -2))[:, None])
    # float32 sums over 32 points, 20 steps: a few ulp of the field's scale (~1)
    assert float(drift.max()) < 5e-6
    free_drift = jnp.abs(jax.vmap(free)(u).mean(axis=(-1, -2)) - u.mean(axis=(-1, -2)))
    assert float(free_drift.max()) > 1e-4  # an unconstrained network does not conserve it
    with pytest.raises(ValueError, match="conserved variables"):
        ForecasterSpec.from_dict({**spec.to_dict(), "conserved": ["h"]})


def test_forecaster_history_window():
    solver, data, spec, stats = make_setup(history=2)
    f = init_forecaster(spec, stats)
    frames = jnp.asarray(data[:2, :2])
    out = f.advance_windows(frames)
    assert out.shape == (2, *data.shape[2:])
    with pytest.warns(DeprecationWarning, match="step_batch is deprecated; use advance_windows"):
        np.testing.assert_array_equal(f.step_batch(frames), out)
    with pytest.raises(ValueError, match="history=2"):
        f(jnp.asarray(data[0, 0]))


def test_train_module_is_the_facade_of_the_training_parts():
    """``surrogate.train`` re-exports each public name from the module that defines it."""
    import surrogate.train as facade
    from surrogate.training import checkpoints, config, lock, loop, loss, metrics_log, step

    expected = {
        "CheckpointCorruptedError": checkpoints.CheckpointCorruptedError,
        "LOCK_NAME": lock.LOCK_NAME,
        "MetricsLog": metrics_log.MetricsLog,
        "RunLockedError": lock.RunLockedError,
        "TrainConfig": config.TrainConfig,
        "TrainResult": loop.TrainResult,
        "TrainingDivergedError": loop.TrainingDivergedError,
        "init_forecaster": loop.init_forecaster,
        "make_optimizer": step.make_optimizer,
        "make_train_step": step.make_train_step,
        "make_validation": step.make_validation,
        "rollout_loss": loss.rollout_loss,
        "run_lock": lock.run_lock,
        "train": loop.train,
    }
    assert sorted(facade.__all__) == sorted(expected)
    for name, obj in expected.items():
        assert getattr(facade, name) is obj, name
