"""A stage is complete only when all its outputs are; normalisation shapes are checked."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import datasets
from solvers import KuramotoSivashinsky
from surrogate import pipeline, plots
from surrogate.forecaster import ForecasterSpec, Normalization
from surrogate.train import init_forecaster


def _spec(solver):
    return ForecasterSpec.create(
        model_name="fno",
        model_kwargs={"width": 4, "modes": 2, "num_layers": 1},
        variables=solver.variables,
        units=solver.units,
        grid=solver.grid.to_dict(),
        dt=solver.dt,
    )


def test_a_wrong_length_normalisation_is_refused_naming_the_field():
    solver = KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=1.0, num_substeps=4)

    class Stats:
        state_mean = np.zeros(1)
        state_std = np.ones(3)  # three entries for one variable
        delta_mean = np.zeros(1)
        delta_std = np.ones(1)

    with pytest.raises(ValueError, match=r"state_std has shape \(3,\), expected \(1,\)"):
        init_forecaster(_spec(solver), Stats)
    assert Normalization.from_statistics(Stats).state_std.shape == (3,)  # caught at build


@pytest.mark.integration  # heavy (> 5 s): kept out of the default suite's budget
def test_a_kill_while_drawing_leaves_evaluate_incomplete(tmp_path, monkeypatch):
    solver = KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=1.0, num_substeps=4)
    data = datasets.generate(
        solver,
        tmp_path / "data",
        num_trajectories=4,
        num_frames=5,
        spinup_steps=1,
        trajectories_per_shard=4,
        splits={"train": 0.5, "test": 0.5},
        num_workers=1,
        progress=False,
    )
    stats = datasets.load_statistics(data)
    forecaster = init_forecaster(_spec(solver), stats)
    run = tmp_path / "run"
    run.mkdir()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while drawing the animation")

    monkeypatch.setattr(plots, "animate_rollout", killed)
    kwargs = dict(num_trajectories=1, long_rollout_steps=4, batch_size=1, coarsen_factor=2)
    with pytest.raises(KeyboardInterrupt):
        pipeline.stage_evaluate(forecaster, solver, data, run, **kwargs)
    assert not (run / "evaluation.nc").exists()  # the rerun will not call it up to date
    monkeypatch.undo()
    ds = pipeline.stage_evaluate(forecaster, solver, data, run, **kwargs)
    assert (run / "evaluation.nc").exists() and (run / "figures" / "rollout.gif").exists()
    assert np.all(np.isfinite(np.asarray(ds["rmse"].sel(model="surrogate"))))
    assert jnp.asarray(ds["rmse"]).ndim >= 1
