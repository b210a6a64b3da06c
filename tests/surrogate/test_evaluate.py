"""Weather-style evaluation: perfect and degraded steppers, baselines, storage, plots."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from solvers import AdvectionDiffusion, KuramotoSivashinsky
from surrogate import plots
from surrogate.evaluate import (
    EvaluationScores,
    check_evaluation_inputs,
    coarse_solver_for,
    evaluate,
    evaluation_dataset,
    load_evaluation,
    rollout_batch,
    save_evaluation,
    truth_from_dataset,
)
from surrogate.hybrid import pytree_dataclass
from tests.helpers import Damped, StepperMeta, make_truth

NUM_TRAJ, NUM_FRAMES = 5, 21


@pytree_dataclass(data_fields=("solver", "factor"))
class Growing(StepperMeta):
    """Fake unstable surrogate: multiplies the state by ``factor`` every step."""

    solver: object
    factor: float

    def __call__(self, state):
        return state * self.factor


@pytest.fixture(scope="module")
def ks():
    # 32 points on the minimal chaotic box; initial modes <= 4 keep the 16-point coarse
    # solver (initial_max_mode <= 16 // 3) constructible.
    return KuramotoSivashinsky(
        num_points=32, domain_length=22.0, dt=1.0, num_substeps=2, initial_max_mode=4
    )


@pytest.fixture(scope="module")
def ks_truth(ks):
    return make_truth(ks, NUM_TRAJ, NUM_FRAMES, spin_up=40)


@pytest.fixture(scope="module")
def perfect(ks, ks_truth):
    # batch_size 2 with 5 trajectories exercises the padded last batch.
    return evaluate(ks, ks_truth, solver=ks, long_rollout_steps=60, batch_size=2)


# float32 round-off (eps 1.2e-7) grown by the KS Lyapunov exponent (~0.05) over 20 time
# units stays far below 1e-5 of the climatological std.
PERFECT = {"rtol": 0.0, "atol": 1e-5}


def test_the_solver_as_stepper_is_perfect_and_beats_persistence(perfect):
    ds = perfect
    assert list(ds["model"].values) == ["truth", "surrogate", "persistence", "coarse_solver"]
    assert ds["rmse"].dims == ("model", "variable", "lead_time")
    assert ds["spectrum"].dims == ("model", "variable", "lead_time_sel", "wavenumber")
    std = float(ds["climatological_std"].sel(variable="u"))
    rmse = ds["rmse"].sel(model="surrogate", variable="u").values
    np.testing.assert_allclose(rmse / std, 0.0, **PERFECT)
    np.testing.assert_allclose(ds["acc"].sel(model="surrogate").values, 1.0, **PERFECT)
    assert np.isinf(ds["valid_time"].sel(model="surrogate")).all()
    persistence = ds["rmse"].sel(model="persistence", variable="u").values
    assert persistence[0] == 0.0
    assert np.all(rmse[1:] < persistence[1:])
    # The chaotic truth decorrelates from its initial state within the window.
    assert np.isfinite(float(ds["valid_time"].sel(model="persistence", variable="u")))
    np.testing.assert_allclose(ds["nrmse"], ds["rmse"] / std, rtol=1e-12, atol=0)  # same numbers
    # Same spectrum as the truth, to float32 round-off relative to the total power.
    spec = ds["spectrum"].sel(variable="u")
    np.testing.assert_allclose(
        spec.sel(model="surrogate"), spec.sel(model="truth"), rtol=0, atol=1e-5 * std**2
    )


def test_coarse_baseline_wall_times_and_blowup(perfect):
    ds = perfect
    assert list(ds.attrs["coarse_num_points"]) == [16]
    wall = ds["wall_time"]
    assert float(wall.sel(model="surrogate")) > 0 and float(wall.sel(model="coarse_solver")) > 0
    assert float(wall.sel(model="truth")) > 0  # the reference solver, re-run and timed
    # Half resolution (16 points on L = 22 is under-resolved): errors appear and grow.
    coarse = ds["rmse"].sel(model="coarse_solver", variable="u").values
    assert np.all(coarse[1:] > 0) and coarse[-1] > coarse[1]
    assert np.isinf(ds["blowup_time"].sel(model=["surrogate", "persistence"])).all()
    # The 16-point KS may diverge; when it does, it is at a whole step within the run.
    t_coarse = float(ds["blowup_time"].sel(model="coarse_solver"))
    assert np.isinf(t_coarse) or (0 < t_coarse <= 60 and t_coarse % 1.0 == 0)
    np.testing.assert_array_equal(ds["blowup_fraction"].sel(model="surrogate"), 0.0)
    # The solver's diagnostics along its own forecast are the truth's (float32 round-off).
    for name in ("invariant_drift", "invariant_error"):
        assert ds[name].dims == ("model", "invariant", "lead_time")
    np.testing.assert_allclose(
        ds["invariant_error"].sel(model="surrogate", invariant="energy"), 0.0, rtol=0, atol=1e-4
    )
    assert float(ds["invariant_error"].sel(model="persistence", invariant="energy").max()) > 1e-2


def test_damped_surrogate_loses_skill(ks, ks_truth):
    ds = evaluate(Damped(ks, 0.5), ks_truth, baselines=("persistence",), batch_size=5)
    acc = ds["acc"].sel(model="surrogate", variable="u").values
    lead = ds["lead_time"].values
    vt = float(ds["valid_time"].sel(model="surrogate", variable="u"))
    assert np.isfinite(vt) and lead[1] < vt < lead[-1]
    i = int(np.searchsorted(lead, vt))
    assert acc[i - 1] >= 0.6 > acc[i]  # the crossing lies between its neighbours
    assert np.all(np.diff(acc[: i + 1]) < 0)  # decreasing until skill is lost
    assert acc[-1] < 0.6


def test_growing_surrogate_blows_up_when_predicted(ks, ks_truth):
    factor, threshold = 1.5, 10.0
    ds = evaluate(
        Growing(ks, factor),
        ks_truth,
        baselines=(),
        long_rollout_steps=30,
        blowup_threshold=threshold,
        batch_size=5,
    )
    # max|u| after n steps is factor^n max|u0|; blow-up when it passes threshold x the
    # truth's largest |u| (the reference amplitude).
    ref = np.max(np.abs(ks_truth))
    start = np.max(np.abs(ks_truth[:, 0]), axis=(-2, -1))
    steps = np.ceil(np.log(threshold * ref / start) / np.log(factor))
    steps = np.where(start * factor**steps > threshold * ref, steps, steps + 1)
    # a whole number of steps times dt, in float64: one rounding
    np.testing.assert_allclose(
        ds["blowup_time"].sel(model="surrogate"), steps.min() * ks.dt, rtol=0, atol=1e-12
    )
    np.testing.assert_array_equal(ds["blowup_fraction"].sel(model="surrogate"), 1.0)


def test_netcdf_round_trip(perfect, tmp_path):
    path = save_evaluation(perfect, tmp_path / "eval" / "ks.nc")
    back = load_evaluation(path)
    assert set(back.data_vars) == set(perfect.data_vars)
    for name, var in perfect.data_vars.items():
        np.testing.assert_array_equal(back[name].values, var.values, err_msg=name)
        assert back[name].dims == var.dims
        assert back[name].attrs == var.attrs
    for name in ("model", "variable", "invariant", "variable_units"):
        assert list(back[name].values) == list(perfect[name].values)
    np.testing.assert_array_equal(back["lead_time"].values, perfect["lead_time"].values)
    assert back.attrs["description_surrogate"] == perfect.attrs["description_surrogate"]
    assert not list(tmp_path.glob("eval/.*.tmp")) and not list(tmp_path.glob("eval/*.tmp"))


def test_dataset_input_and_statistics(ks, ks_truth):
    truth = ks_truth[:3, :6]
    ds_in = xr.Dataset(
        {"u": (("trajectory", "time", "x"), truth[:, :, 0])},
        coords={"time": np.arange(6) * ks.dt, "x": ks.grid.coords()["x"]},
    )
    array, leads = truth_from_dataset(ds_in, ks.variables)
    np.testing.assert_array_equal(array, truth)
    np.testing.assert_array_equal(leads, np.arange(6) * ks.dt)

    @dataclasses.dataclass
    class Stats:
        climatology: np.ndarray
        state_std: np.ndarray
        variables: tuple

    stats = Stats(np.full((1, 32), 0.1), np.array([2.0]), ("u",))
    a = evaluate(Damped(ks, 0.1), ds_in, statistics=stats, baselines=())
    b = evaluate(Damped(ks, 0.1), truth, statistics=stats, baselines=())
    xr.testing.assert_identical(
        a.drop_attrs().drop_vars("wall_time"), b.drop_attrs().drop_vars("wall_time")
    )
    assert a.attrs["climatology_source"].startswith("statistics")
    np.testing.assert_allclose(a["nrmse"], a["rmse"] / 2.0, rtol=1e-12, atol=0)  # given std
    # ACC against the given climatology, recomputed by hand for the last lead.
    forecast = np.asarray(rollout_batch(Damped(ks, 0.1), jnp.asarray(truth[:, 0]), num_frames=6))
    fa, oa = forecast[:, -1, 0] - 0.1, truth[:, -1, 0] - 0.1
    acc = np.mean(np.sum(fa * oa, -1) / np.sqrt(np.sum(fa**2, -1) * np.sum(oa**2, -1)))
    # float32 forecasts: agreement to float32 round-off of a sum of 32 products.
    np.testing.assert_allclose(
        a["acc"].sel(model="surrogate").values[0, -1], acc, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="statistics are for variables"):
        evaluate(ks, truth, statistics=Stats(stats.climatology, stats.state_std, ("v",)))


@pytest.mark.integration  # heavy (> 5 s): kept out of the default suite's budget
def test_2d_with_frames_several_steps_apart(tmp_path):
    solver = AdvectionDiffusion(
        num_points=(16, 12),
        domain_length=(1.0, 2.0),
        velocity=(0.3, -0.5),
        diffusivity=1e-3,
        dt=0.05,
        initial_length_scale=0.2,
    )
    truth = make_truth(solver, 3, 6, steps_per_frame=2)
    ds = evaluate(
        solver,
        truth,
        solver=solver,
        lead_times=np.arange(6) * 2 * solver.dt,
        long_rollout_steps=10,
    )
    assert ds.attrs["steps_per_frame"] == 2
    assert list(ds.attrs["coarse_num_points"]) == [8, 6]
    std = float(ds["climatological_std"][0])
    # The solver is exact in time: only float32 round-off separates it from the truth.
    np.testing.assert_allclose(ds["rmse"].sel(model="surrogate") / std, 0.0, rtol=0, atol=1e-5)
    assert np.all(ds["rmse"].sel(model="coarse_solver").values[0, 1:] > 0)
    # Parseval for the stored 2D spectra: the power sums to the mean square.
    k_sum = ds["spectrum"].sel(model="truth").sum("wavenumber").values[0]
    idx = np.rint(ds["lead_time_sel"].values / (2 * solver.dt)).astype(int)
    np.testing.assert_allclose(
        k_sum, np.mean(truth[:, idx, 0] ** 2, axis=(0, 2, 3)), rtol=1e-5, atol=0
    )

    # Plots of the 2D case.
    forecast = np.asarray(
        rollout_batch(solver, jnp.asarray(truth[:1, 0]), num_frames=6, steps_per_frame=2)
    )[0]
    written = [
        plots.plot_skill(ds, tmp_path / "skill2d.png"),
        plots.plot_spectra(ds, tmp_path / "spectra2d.png"),
        plots.plot_snapshots(
            truth[0],
            forecast + 0.05,
            solver.grid,
            tmp_path / "snap2d.png",
            dt=2 * solver.dt,
            variables=solver.variables,
            units=solver.units,
        ),
        plots.animate_rollout(
            truth[0],
            forecast,
            solver.grid,
            tmp_path / "roll2d.gif",
            dt=2 * solver.dt,
            variables=solver.variables,
            max_frames=3,
        ),
    ]
    for path in written:
        assert path.exists() and path.stat().st_size > 1000


def test_plots_1d_and_training_curves(ks, ks_truth, perfect, tmp_path):
    forecast = np.asarray(
        rollout_batch(Damped(ks, 0.5), jnp.asarray(ks_truth[:1, 0]), num_frames=NUM_FRAMES)
    )[0]
    records = [{"step": s, "loss": 1.0 / (1 + s), "lr": 1e-3 * min(1, s / 5)} for s in range(20)]
    records += [{"step": s, "val_loss": 1.5 / (1 + s)} for s in range(0, 20, 5)]
    written = [
        plots.plot_skill(perfect, tmp_path / "skill.png"),
        plots.plot_spectra(perfect, tmp_path / "spectra.png"),
        plots.plot_snapshots(
            ks_truth[0],
            forecast,
            ks.grid,
            tmp_path / "hovmoeller.png",
            dt=ks.dt,
            variables=ks.variables,
            units=ks.units,
        ),
        plots.animate_rollout(ks_truth[0], forecast, ks.grid, tmp_path / "roll.gif", max_frames=4),
        plots.plot_training_curves(records, tmp_path / "train.png"),
    ]
    for path in written:
        assert path.exists() and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no record"):
        plots.plot_training_curves([{"step": 1}], tmp_path / "bad.png")


def test_rollout_batch_traces_once_for_new_parameter_values(ks):
    other = KuramotoSivashinsky(**{**ks.config(), "dt": 0.8})
    x0 = jnp.stack([ks.initial_condition(jax.random.key(1))] * 2)
    rollout_batch(ks, x0, num_frames=3)
    size = rollout_batch._cache_size()
    rollout_batch(other, x0, num_frames=3)
    assert rollout_batch._cache_size() == size


def test_bad_arguments_are_named(ks, ks_truth):
    with pytest.raises(ValueError, match=r"truth must be \(N, T, C, \*spatial\)"):
        evaluate(ks, ks_truth[:, :, :, :16])
    with pytest.raises(ValueError, match="lead_times must start at 0"):
        evaluate(ks, ks_truth[:2, :4], lead_times=[0.0, 1.5, 3.0, 4.5])
    with pytest.raises(ValueError, match="unknown baselines"):
        evaluate(ks, ks_truth[:2, :4], baselines=("climatology",))
    with pytest.raises(ValueError, match="does not divide"):
        coarse_solver_for(ks, 3)
    with pytest.raises(ValueError, match="could not build the coarse_solver"):
        coarse_solver_for(ks, 8)  # 4 points: below the solver's minimum of 8
    with pytest.raises(ValueError, match=r"solver does not match the data: dt 0.5 != 1.0"):
        evaluate(ks, ks_truth[:2, :4], solver=KuramotoSivashinsky(**{**ks.config(), "dt": 0.5}))
    with pytest.raises(ValueError, match="blowup_threshold"):
        evaluate(ks, ks_truth[:2, :4], blowup_threshold=0.0)


def test_coarse_start_error_is_the_truncated_truth(perfect, ks_truth):
    # The coarse model starts from the truth truncated to 16 points and refined back: its
    # lead-0 error is the truth's content above mode 8, plus the imaginary part of mode 8
    # (the coarse Nyquist mode holds only a real cosine). Rebuilt here with numpy.
    x0 = ks_truth[:, 0, 0].astype(np.float64)
    x_hat = np.fft.rfft(x0)
    x_hat[:, 9:] = 0.0
    x_hat[:, 8] = x_hat[:, 8].real
    expected = np.sqrt(np.mean((np.fft.irfft(x_hat, n=32) - x0) ** 2))
    rmse0 = float(perfect["rmse"].sel(model="coarse_solver", variable="u").isel(lead_time=0))
    assert expected > 1e-6  # the check is not vacuous: the truth has power up there
    # float32 forecasts against a float64 reference: relative round-off of the error.
    np.testing.assert_allclose(rmse0, expected, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_navier_stokes_2d_solver_as_stepper(tmp_path):
    from solvers.navier_stokes import NavierStokes2D

    solver = NavierStokes2D(num_points=32, dt=0.2, num_substeps=6)
    truth = make_truth(solver, 2, 6, spin_up=10)
    ds = evaluate(solver, truth, solver=solver, long_rollout_steps=20)
    std = float(ds["climatological_std"][0])
    # float32 round-off over 5 steps of a smooth flow stays far below 1e-4 of the std.
    np.testing.assert_allclose(ds["rmse"].sel(model="surrogate") / std, 0.0, rtol=0, atol=1e-4)
    assert list(ds.attrs["coarse_num_points"]) == [16, 16]
    assert np.all(
        ds["rmse"].sel(model="surrogate").values[0, 1:]
        < ds["rmse"].sel(model="persistence").values[0, 1:]
    )
    assert "enstrophy" in list(ds["invariant"].values)
    assert plots.plot_spectra(ds, tmp_path / "ns_spectra.png").stat().st_size > 1000


def test_per_trajectory_scores_and_ids_are_stored(ks, ks_truth, tmp_path):
    ids = np.array([7, 3, 11, 0, 5])
    ds = evaluate(Damped(ks, 0.2), ks_truth, baselines=(), batch_size=2, trajectory_ids=ids)
    back = load_evaluation(save_evaluation(ds, tmp_path / "evaluation.nc"))
    np.testing.assert_array_equal(back["trajectory"].values, ids)
    # Trajectory 11 (row 2) recomputed directly from its own rollout, in float64.
    forecast = np.asarray(rollout_batch(Damped(ks, 0.2), jnp.asarray(ks_truth[2:3, 0]), 21))
    err = forecast[0, :, 0].astype(np.float64) - ks_truth[2, :, 0]
    row = back["rmse_per_trajectory"].sel(model="surrogate", trajectory=11, variable="u")
    # float32 forecasts in one batch vs alone: round-off of the error's square root.
    np.testing.assert_allclose(row.values, np.sqrt(np.mean(err**2, -1)), rtol=1e-5, atol=1e-6)
    # The stored means are the trajectory means (rmse through its square): the batch sums
    # are float32 in the jitted scorer, so agreement is to float32 round-off of a few terms.
    per = back["rmse_per_trajectory"].sel(model="surrogate")
    np.testing.assert_allclose(
        np.sqrt((per**2).mean("trajectory")),
        back["rmse"].sel(model="surrogate"),
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        back["acc_per_trajectory"].mean("trajectory"), back["acc"], rtol=1e-6, atol=1e-7
    )
    with pytest.raises(ValueError, match="trajectory_ids must be 5 integers"):
        evaluate(ks, ks_truth, baselines=(), trajectory_ids=[1, 2])


# ---- the three pieces of evaluate --------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"truth": "one frame"}, r"truth needs N >= 1 trajectories and T >= 2 frames"),
        ({"trajectory_ids": [0.0, 1.0, 2.0, 3.0, 4.0]}, r"trajectory_ids must be 5 integers"),
        ({"batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
        ({"acc_threshold": float("nan")}, r"acc_threshold must be a finite number"),
        ({"blowup_threshold": -1.0}, r"blowup_threshold must be > 0, got -1.0"),
        ({"long_rollout_steps": 0}, r"long_rollout_steps must be None or an int >= 1"),
        ({"lead_times": np.arange(20.0)}, r"lead_times must have shape \(T,\) = \(21,\)"),
        ({"spectrum_lead_indices": [21]}, r"spectrum_lead_indices must be frame indices in"),
        ({"baselines": ("climatology",)}, r"unknown baselines \['climatology'\]"),
        ({"model_name": "truth"}, r"model_name 'truth' is reserved"),
        ({"statistics": object()}, r"statistics has no 'climatology'"),
    ],
)
def test_the_input_check_names_each_bad_argument(ks, ks_truth, kwargs, message):
    kwargs = dict(kwargs)
    truth = ks_truth[:, :1] if kwargs.pop("truth", None) else ks_truth
    with pytest.raises(ValueError, match="^evaluate: " + message):
        check_evaluation_inputs(ks, truth, **kwargs)


def test_the_input_check_normalises_the_settings(ks, ks_truth):
    every_other = ks_truth[:, ::2]  # frames 2 dt apart
    s = check_evaluation_inputs(ks, every_other, lead_times=np.arange(11) * 2.0, batch_size=64)
    assert s.steps_per_frame == 2 and s.batch_size == NUM_TRAJ  # clipped to N
    assert s.model_names == ["truth", "surrogate", "persistence"]
    assert s.skipped_baselines == ("coarse_solver (no solver given)",)
    assert s.coarse_solver is None and s.spectrum_indices == (1, 6, 10)
    np.testing.assert_array_equal(s.trajectory_ids, np.arange(NUM_TRAJ))
    assert s.climatology_source.startswith("truth (in-sample")
    with_solver = check_evaluation_inputs(ks, ks_truth, solver=ks, model_name="net")
    assert with_solver.model_names == ["truth", "net", "persistence", "coarse_solver"]
    assert with_solver.models["coarse_solver"][1] is with_solver.coarse_solver
    assert tuple(with_solver.coarse_solver.grid.num_points) == (16,)
    assert with_solver.skipped_baselines == ()


def test_the_table_is_laid_out_from_the_scores_alone():
    from solvers import ShallowWater2D

    # three variables, so a swapped variable and lead-time axis cannot go unnoticed
    solver = ShallowWater2D(num_points=8, dt=0.1, num_substeps=1, initial_max_mode=2)
    rng = np.random.default_rng(0)
    n, t, c = 2, 4, 3
    truth = rng.standard_normal((n, t, c, 8, 8)).astype(np.float32)
    s = check_evaluation_inputs(
        solver, truth, baselines=("persistence",), long_rollout_steps=3, trajectory_ids=[9, 4]
    )
    m, k, lsel = 3, 5, len(s.spectrum_indices)
    scores = EvaluationScores(
        rmse=rng.random((m, t, c)),
        rmse_per_trajectory=rng.random((m, n, t, c)),
        acc=rng.random((m, t, c)),
        acc_per_trajectory=rng.random((m, n, t, c)),
        valid_time=rng.random((m, c)),
        wavenumbers=np.arange(k, dtype=np.float64),
        spectrum=rng.random((m, lsel, c, k)),
        wall_time=rng.random(m),
        blowup_time=np.array([np.nan, 0.2, np.inf]),
        blowup_fraction=np.array([np.nan, 0.5, 0.0]),
    )
    ds = evaluation_dataset(s, scores)
    for i, model in enumerate(s.model_names):
        for j, v in enumerate(solver.variables):
            sel = {"model": model, "variable": v}
            np.testing.assert_array_equal(ds["rmse"].sel(sel), scores.rmse[i, :, j])
            np.testing.assert_array_equal(ds["acc"].sel(sel), scores.acc[i, :, j])
            np.testing.assert_array_equal(ds["valid_time"].sel(sel), scores.valid_time[i, j])
            np.testing.assert_array_equal(ds["spectrum"].sel(sel), scores.spectrum[i, :, j])
            row = ds["rmse_per_trajectory"].sel(sel | {"trajectory": 4})  # the second one
            np.testing.assert_array_equal(row, scores.rmse_per_trajectory[i, 1, :, j])
            # the same division, so equal bit for bit
            np.testing.assert_array_equal(
                ds["nrmse"].sel(sel), scores.rmse[i, :, j] / s.state_std[j]
            )
    np.testing.assert_array_equal(ds["lead_time_sel"], s.lead_times[list(s.spectrum_indices)])
    np.testing.assert_array_equal(ds["blowup_fraction"], scores.blowup_fraction)
    assert "invariant_drift" not in ds and "invariant" not in ds.coords  # no solver
    assert ds.attrs["num_trajectories"] == n and ds.attrs["skipped_baselines"] == ""
    assert "3-step rollout" in ds["blowup_time"].attrs["long_name"]
    xr.testing.assert_identical(evaluation_dataset(s, scores), ds)  # pure: same table again
