"""Tests of the hybrid runner, its policies, indicators and resampling helpers.

Fake surrogates are built from solvers: ``Scaled`` multiplies a solver step by a factor
(exact for 1, inflating the energy by ``scale^2`` per step otherwise) and ``Trigger`` is
the exact solver except on given states, where it multiplies the step by ``fill`` (NaN
for a non-finite step, a huge factor for a blow-up). Since the runner's solver path is
bitwise a solver rollout, the trigger states are hit exactly at the intended step.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from solvers import AdvectionDiffusion, KuramotoSivashinsky, NonFiniteError, rollout
from surrogate.hybrid import (
    ENGINE_FALLBACK,
    ENGINE_ROLLBACK,
    ENGINE_SOLVER,
    ENGINE_SURROGATE,
    AlwaysSolver,
    AlwaysSurrogate,
    BlockPolicy,
    CoarseSolverCheck,
    EnsembleSpread,
    EveryK,
    HybridResult,
    HybridRunner,
    IndicatorContext,
    InvariantDrift,
    SpectralTail,
    Threshold,
    coarse_solver_like,
    coarsen,
    compare_cost,
    pytree_dataclass,
    refine,
    spectral_resample,
    sweep_thresholds,
    tail_share,
)
from surrogate.hybrid import chunk as chunk_module
from tests.helpers import Scaled, StepperMeta

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "hybrid")


# ---- fake surrogates -------------------------------------------------------------------
@pytree_dataclass(data_fields=("solver", "triggers", "fill"))
class Trigger(StepperMeta):
    """``solver(state)``, times ``fill`` when ``state`` equals one of ``triggers (K, C, ...)``."""

    solver: object
    triggers: object
    fill: float = float("nan")

    def __call__(self, state):
        out = self.solver(state)
        hit = jnp.any(jnp.all((self.triggers == state[None]).reshape(len(self.triggers), -1), -1))
        return jnp.where(hit, out * jnp.asarray(self.fill, out.dtype), out)


@pytree_dataclass(data_fields=("solver",))
class OtherVariables(StepperMeta):
    solver: object

    @property
    def variables(self):
        return ("v",)

    def __call__(self, state):
        return self.solver(state)


def check_log(res: HybridResult, batch: int, num_steps: int) -> None:
    """Every step of every member is logged once; shapes and counts add up."""
    assert res.states.shape[:2] == (batch, num_steps + 1)
    assert res.engine.shape == res.tripped.shape == (batch, num_steps)
    assert set(np.unique(res.engine)) <= {0, 1, 2, 3}
    assert sum(res.engine_counts().values()) == batch * num_steps
    assert int(res.chunk_num_steps.sum()) == num_steps
    assert res.step_wall_time().shape == (num_steps,)
    for values in res.indicator_values.values():
        assert values.shape == (batch, num_steps)
    expected = float(np.mean(res.engine != ENGINE_SURROGATE))
    assert res.solver_fraction == expected


# ---- shared problems -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ks():
    return KuramotoSivashinsky(num_points=64, domain_length=22.0, dt=1.0, num_substeps=4)


@pytest.fixture(scope="module")
def ks_states(ks):
    """Two KS states spun up onto the attractor, ``(2, 1, 64)``."""
    x0 = jax.vmap(ks.initial_condition)(jax.random.split(jax.random.key(0), 2))
    return jax.vmap(lambda s: rollout(ks, s, 100, include_initial=False)[-1])(x0)


@pytest.fixture(scope="module")
def ks_traj(ks, ks_states):
    """Pure solver rollouts of ``ks_states``, ``(2, 15, 1, 64)``."""
    return np.asarray(jax.vmap(lambda s: rollout(ks, s, 14))(ks_states))


@pytest.fixture(scope="module")
def advection():
    """Pure advection: the variance is conserved to round-off, so drift is exact."""
    return AdvectionDiffusion(num_points=32, velocity=0.7, diffusivity=0.0, dt=0.05)


@pytest.fixture(scope="module")
def advection_states(advection):
    return jax.vmap(advection.initial_condition)(jax.random.split(jax.random.key(1), 3))


# ---- engines ---------------------------------------------------------------------------------
def test_always_solver_is_bitwise_a_solver_rollout(ks, ks_states, ks_traj):
    # chunk_size 5 over 14 steps: three chunks, the last one partly skipped.
    runner = HybridRunner(ks, Scaled(ks, 2.0), AlwaysSolver(), chunk_size=5)
    res = runner.run(ks_states, 14)
    check_log(res, 2, 14)
    assert np.array_equal(res.states, ks_traj)
    looped = np.stack([np.asarray(rollout(ks, s, 14)) for s in ks_states])
    assert np.array_equal(res.states, looped)
    assert np.all(res.engine == ENGINE_SOLVER)
    assert res.solver_fraction == 1.0
    assert list(res.chunk_num_steps) == [5, 5, 4]


def test_always_surrogate_is_bitwise_a_surrogate_rollout(ks, ks_states):
    fake = Scaled(ks, 0.99)
    res = HybridRunner(ks, fake, AlwaysSurrogate(), chunk_size=8).run(ks_states, 12)
    check_log(res, 2, 12)
    expected = np.asarray(jax.vmap(lambda s: rollout(fake, s, 12))(ks_states))
    assert np.array_equal(res.states, expected)
    assert np.all(res.engine == ENGINE_SURROGATE)
    assert res.solver_fraction == 0.0


@pytest.mark.parametrize("fill", [float("nan"), 1e8], ids=["nan", "blowup"])
def test_nonfinite_or_blowup_step_falls_back_exactly_there(ks, ks_states, ks_traj, fill):
    k = 4
    fake = Trigger(ks, jnp.asarray(ks_traj[1, k][None]), fill)
    res = HybridRunner(ks, fake, AlwaysSurrogate(), blowup_threshold=1e6).run(ks_states, 14)
    check_log(res, 2, 14)
    expected = np.full((2, 14), ENGINE_SURROGATE)
    expected[1, k] = ENGINE_FALLBACK
    np.testing.assert_array_equal(res.engine, expected)
    assert np.all(np.isfinite(res.states))
    # The fake is exact elsewhere and the fallback step is the solver's.
    assert np.array_equal(res.states, ks_traj)


def test_without_fallback_a_nan_step_raises_with_its_position(ks, ks_states, ks_traj):
    k = 3
    fake = Trigger(ks, jnp.asarray(ks_traj[1, k][None]), float("nan"))
    runner = HybridRunner(ks, fake, AlwaysSurrogate(), fallback_on_nonfinite=False)
    with pytest.raises(NonFiniteError) as info:
        runner.run(ks_states, 6)
    err = info.value
    assert (err.sample, err.frame) == (1, k + 1)
    assert err.time == (k + 1) * ks.dt
    res = err.result
    assert np.all(res.engine == ENGINE_SURROGATE)
    assert np.all(np.isnan(res.states[1, k + 1 :])) and np.all(np.isfinite(res.states[0]))
    assert np.all(res.first_nonfinite_frame() == [-1, k + 1])


def test_drifting_surrogate_trips_the_drift_indicator_on_schedule(advection, advection_states):
    # Variance grows by (1 + eps) per surrogate step and is conserved by the solver, so
    # the drift after n steps since the last solver step is (1 + eps)^n - 1 exactly.
    eps, thr = 0.01, 0.05
    n_trip = math.ceil(math.log1p(thr) / math.log1p(eps))  # 5: drift 0.0406, then 0.0510
    fake = Scaled(advection, math.sqrt(1 + eps))
    policy = Threshold("variance_drift", thr)
    runner = HybridRunner(advection, fake, policy, (InvariantDrift("variance"),), chunk_size=7)
    num_steps = 3 * n_trip + 2
    res = runner.run(advection_states, num_steps)
    check_log(res, 3, num_steps)
    pattern = [ENGINE_SURROGATE] * (n_trip - 1) + [ENGINE_ROLLBACK]
    expected = np.array((pattern * 4)[:num_steps])
    np.testing.assert_array_equal(res.engine, np.broadcast_to(expected, (3, num_steps)))
    np.testing.assert_array_equal(res.tripped, res.engine == ENGINE_ROLLBACK)
    since = np.array(([*range(1, n_trip + 1)] * 4)[:num_steps])
    drift = res.indicator_values["variance_drift"]
    # float32 variance of a 32-point field: relative round-off ~1e-6 per step.
    np.testing.assert_allclose(
        drift, np.broadcast_to((1 + eps) ** since - 1, drift.shape), rtol=1e-4, atol=1e-5
    )
    # Where it tripped the solver took over: those frames are solver steps.
    step = jax.jit(jax.vmap(advection))
    for n in np.flatnonzero(expected == ENGINE_ROLLBACK):
        # Same operation jitted alone vs inside the scan: equal up to float32 round-off.
        np.testing.assert_allclose(
            res.states[:, n + 1], step(res.states[:, n]), rtol=1e-6, atol=1e-6
        )


def test_threshold_sweep_reuses_one_compilation(advection, advection_states):
    fake = Scaled(advection, math.sqrt(1.01))
    runner = HybridRunner(
        advection,
        fake,
        Threshold("variance_drift", 0.05),
        (InvariantDrift("variance"),),
        chunk_size=7,
    )
    first = runner.run(advection_states, 17)
    traces = chunk_module.TRACE_COUNT["chunk"]
    second = runner.with_policy(Threshold("variance_drift", 0.2)).run(advection_states, 17)
    assert chunk_module.TRACE_COUNT["chunk"] == traces
    assert second.compile_time == 0.0  # a cache hit is reported as exactly zero
    assert np.sum(second.engine == ENGINE_ROLLBACK) < np.sum(first.engine == ENGINE_ROLLBACK)


def test_threshold_sweep_gives_the_cost_accuracy_curve(advection, advection_states):
    fake = Scaled(advection, math.sqrt(1.01))
    runner = HybridRunner(
        advection,
        fake,
        Threshold("variance_drift", 0.05),
        (InvariantDrift("variance"),),
        chunk_size=7,
    )
    runner.run(advection_states, 17)  # compile the hybrid program once
    traces = chunk_module.TRACE_COUNT["chunk"]
    reference = np.asarray(jax.vmap(lambda s: rollout(advection, s, 17))(advection_states))
    ds = sweep_thresholds(runner, advection_states, 17, [0.005, 0.05, 0.5], reference=reference)
    # Only the pure-solver baseline may add a trace; the three thresholds share one.
    assert chunk_module.TRACE_COUNT["chunk"] - traces <= 1
    # 1.01^n - 1 crosses 0.005 at n = 1, 0.05 at n = 5 and 0.5 never within 17 steps.
    np.testing.assert_array_equal(ds["rollbacks"], [3 * 17, 3 * 3, 0])
    assert np.all(np.diff(ds["solver_fraction"]) < 0) and np.all(np.diff(ds["rmse_c"]) > 0)
    assert ds["rmse_c"][0] == 0.0  # every step redone by the (exact) solver
    assert ds.attrs["indicator_name"] == "variance_drift"


def test_every_k_runs_the_solver_on_every_kth_step(ks, ks_states, ks_traj):
    fake = Scaled(ks, 0.9)
    runner = HybridRunner(ks, fake, EveryK(3), (InvariantDrift("energy"),), chunk_size=4)
    res = runner.run(ks_states, 10, reference=ks_traj[:, :11])
    check_log(res, 2, 10)
    solver_steps = (np.arange(10) + 1) % 3 == 0
    expected = np.where(solver_steps, ENGINE_SOLVER, ENGINE_SURROGATE)
    np.testing.assert_array_equal(res.engine, np.broadcast_to(expected, (2, 10)))
    drift = res.indicator_values["energy_drift"]
    assert np.all(np.isnan(drift[:, solver_steps])) and np.all(np.isfinite(drift[:, ~solver_steps]))
    # Every frame from the previous one: the solver's step, or 0.9 times it for the fake.
    solver_out = jax.jit(jax.vmap(jax.vmap(ks)))(res.states[:, :-1])
    expected_frames = np.where(solver_steps[None, :, None, None], solver_out, 0.9 * solver_out)
    # One jitted step vs the same step inside the runner's scan: float32 round-off.
    np.testing.assert_allclose(res.states[:, 1:], expected_frames, rtol=1e-5, atol=1e-5)
    assert np.all(res.rmse["u"][:, 0] == 0) and np.all(res.rmse["u"][:, -1] > 0)


def test_result_round_trips_through_netcdf(ks, ks_states, ks_traj, tmp_path):
    runner = HybridRunner(ks, Scaled(ks, 0.9), EveryK(3), (InvariantDrift("energy"),), chunk_size=4)
    res = runner.run(ks_states, 10, reference=ks_traj[:, :11])
    path = tmp_path / "hybrid.nc"
    res.to_netcdf(path)
    with xr.open_dataset(path) as ds:
        assert ds["u"].dims == ("trajectory", "time", "x")
        assert ds["engine"].dims == ("trajectory", "step")
        assert ds["indicator_energy_drift"].dims == ("trajectory", "step")
        assert ds["rmse_u"].dims == ("trajectory", "time")
        assert ds["x"].attrs["units"] == "1" and ds["indicator_energy_drift"].attrs["units"] == "1"
        assert (
            '"EveryK"' in ds.attrs["policy"] and ds.attrs["solver_fraction"] == res.solver_fraction
        )
    back = HybridResult.from_netcdf(path)
    assert np.array_equal(back.states, res.states)
    np.testing.assert_array_equal(back.engine, res.engine)
    np.testing.assert_array_equal(back.tripped, res.tripped)
    np.testing.assert_array_equal(
        back.indicator_values["energy_drift"], res.indicator_values["energy_drift"]
    )
    np.testing.assert_array_equal(back.rmse["u"], res.rmse["u"])
    np.testing.assert_array_equal(back.chunk_wall_time, res.chunk_wall_time)
    assert back.grid == res.grid and back.variables == res.variables and back.dt == res.dt
    assert back.config["policy"] == {"type": "EveryK", "k": 3}
    # a file that is not a hybrid run is named, with what it lacks
    with xr.open_dataset(path) as ds:
        broken = ds.load().drop_vars("engine")
    del broken.attrs["dt"]
    broken.to_netcdf(tmp_path / "broken.nc")
    with pytest.raises(ValueError, match=r"broken.nc is not a hybrid run .*lacks attribute 'dt'"):
        HybridResult.from_netcdf(tmp_path / "broken.nc")
    broken.attrs["dt"] = 1.0
    with pytest.raises(ValueError, match=r"lacks variable 'engine'"):
        HybridResult.from_xarray(broken)


def test_block_policy_rolls_back_a_bad_block(advection, advection_states):
    # 14 steps in blocks of 4: [0-3] [4-7] [8-11] and a final block [12-13].
    traj = np.asarray(jax.vmap(lambda s: rollout(advection, s, 14))(advection_states))
    # Member 0 inflates at step 6 (block 1), member 2 at step 12 (the short final block).
    triggers = jnp.asarray(np.stack([traj[0, 6], traj[2, 12]]))
    policy = BlockPolicy(4, "variance_drift", 0.5)
    for fill, code in [(2.0, ENGINE_ROLLBACK), (float("nan"), ENGINE_FALLBACK)]:
        fake = Trigger(advection, triggers, fill)
        res = HybridRunner(advection, fake, policy, (InvariantDrift("variance"),)).run(
            advection_states, 14
        )
        check_log(res, 3, 14)
        expected = np.full((3, 14), ENGINE_SURROGATE)
        expected[0, 4:8] = code
        expected[2, 12:14] = code
        np.testing.assert_array_equal(res.engine, expected)
        # Indicators are checked once per block, at its last step.
        checked = ~np.isnan(res.indicator_values["variance_drift"][1])
        np.testing.assert_array_equal(checked, np.isin(np.arange(14), [3, 7, 11, 13]))
        # The redone blocks are the solver's: the whole trajectory is the solver's.
        # (The redo is the same scanned solver step as the rollout.)
        np.testing.assert_allclose(res.states, traj, rtol=1e-6, atol=1e-6)


def test_solver_as_surrogate_raises_no_false_alarm_at_default_thresholds(ks, ks_states):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=os.path.abspath(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="default")
    runner = instantiate(cfg.runner, solver=ks, surrogate=ks)
    assert isinstance(runner.policy, Threshold) and len(runner.indicators) == 4
    num_steps = 100
    res = runner.run(ks_states, num_steps)
    check_log(res, 2, num_steps)
    assert not res.tripped.any()
    assert np.all(res.engine == ENGINE_SURROGATE)
    for name, thr in runner.policy.thresholds.items():
        values = res.indicator_values[name]
        assert np.all(np.isfinite(values)) and np.all(values <= thr), name


# ---- indicators --------------------------------------------------------------------------
def _context(state, proposal, *, step=0, member=0, verified=None):
    return IndicatorContext(
        verified=state if verified is None else verified,
        current=state,
        proposal=proposal,
        steps_since_verified=jnp.int32(1),
        step=jnp.int32(step),
        member=jnp.int32(member),
    )


def test_coarse_solver_check_separates_solver_from_bad_surrogate(ks, ks_states):
    coarse = coarse_solver_like(ks)
    assert coarse.grid.num_points == (32,) and coarse.config()["dt"] == ks.dt
    check = CoarseSolverCheck().bind(ks, ks)
    x = ks_states[0]
    good_step = ks(x)
    noise = 0.02 * jnp.std(x) * jax.random.normal(jax.random.key(2), x.shape, x.dtype)
    value = jax.jit(lambda p: check(_context(x, p)))
    good = float(value(good_step))
    # KS on 32 points still resolves L = 22: the coarse step's error is ~1e-3.
    assert good < 5e-3
    assert float(value(good_step * 1.05)) > 10 * good
    assert float(value(good_step + noise)) > 2 * good


def test_spectral_tail_flags_grid_scale_noise(ks, ks_states):
    x = ks_states[0]
    tail = SpectralTail()
    step = ks(x)
    assert float(tail(_context(x, step))) == 1.0  # both tails below min_share: empty
    noisy = step + 0.05 * jnp.std(x) * jax.random.normal(jax.random.key(3), x.shape, x.dtype)
    assert float(tail(_context(x, noisy))) > 10.0
    n = 48
    xs = jnp.arange(n, dtype=jnp.float32) * 2 * jnp.pi / n
    # Mode 1 lies in no tail; mode 15 (> 0.75 * 48 / 3 = 12) only in the tail.
    assert float(tail_share(jnp.cos(xs)[None], 0.25)) < 1e-10  # float32 round-off only
    np.testing.assert_allclose(
        float(tail_share(jnp.cos(15 * xs)[None], 0.25)), 1.0, rtol=1e-6, atol=0
    )  # float32 round-off of an exact share


def test_ensemble_spread_is_reproducible_and_small_for_the_solver(ks, ks_states):
    spread = EnsembleSpread(num_members=3, noise_std=1e-3, key=7).bind(ks, ks)
    x = ks_states[0]
    f = jax.jit(lambda step, member: spread(_context(x, ks(x), step=step, member=member)))
    a, b = float(f(3, 1)), float(f(3, 1))
    assert a == b  # keys come from fold_in(fold_in(key, member), step)
    assert float(f(4, 1)) != a and float(f(3, 0)) != a
    # The solver damps the input noise's small scales: spread below the noise level.
    assert 0 < a < 1e-3


def test_invariant_drift_checks_its_quantity(ks):
    with pytest.raises(ValueError, match="'enstrophy' is not a diagnostic.*energy"):
        InvariantDrift("enstrophy").bind(ks, ks)
    drift = InvariantDrift("mass", relative=False).bind(ks, ks)
    assert drift.name == "mass_drift" and drift.units == "units of diagnostic 'mass'"
    x = jnp.ones((1, 64))
    # float32 means of 64 equal values and their difference: a few ulps of 0.25
    np.testing.assert_allclose(float(drift(_context(x, x + 0.25))), 0.25, rtol=1e-6, atol=0)


# ---- resampling ---------------------------------------------------------------------------
def test_spectral_resampling_round_trips_and_interpolates(x64):
    rng = np.random.default_rng(0)
    u = jnp.asarray(rng.normal(size=(2, 12, 10)))
    # Refining then coarsening is the identity (float64 FFT round-off).
    np.testing.assert_allclose(coarsen(refine(u)), u, rtol=0, atol=1e-13)
    np.testing.assert_allclose(
        spectral_resample(spectral_resample(u, (25, 21)), (12, 10)), u, rtol=0, atol=1e-13
    )
    # A field band-limited below the coarse Nyquist mode survives coarsening exactly,
    # including onto an odd grid, and matches the field sampled on the new grid.
    for n, m in [(16, 8), (16, 9), (9, 16), (8, 17)]:
        kmax = (min(n, m) - 1) // 2
        f = lambda x, kmax=kmax: sum(np.cos(k * x + 0.3 * k) for k in range(kmax + 1))  # noqa: E731
        x_in, x_out = np.arange(n) * 2 * np.pi / n, np.arange(m) * 2 * np.pi / m
        out = spectral_resample(jnp.asarray(f(x_in))[None], m)[0]
        np.testing.assert_allclose(out, f(x_out), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="factor"):
        coarsen(u, 5)


# ---- construction and validation ---------------------------------------------------------
def test_mismatched_steppers_are_refused_with_the_mismatch_named(ks):
    with pytest.raises(ValueError, match="dt 1.0 != surrogate 0.5"):
        HybridRunner(
            ks, KuramotoSivashinsky(num_points=64, domain_length=22.0, dt=0.5), AlwaysSurrogate()
        )
    with pytest.raises(ValueError, match="grid num_points \\(64,\\) != surrogate \\(32,\\)"):
        HybridRunner(
            ks, KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=1.0), AlwaysSurrogate()
        )
    with pytest.raises(ValueError, match="domain_length"):
        HybridRunner(
            ks, KuramotoSivashinsky(num_points=64, domain_length=20.0, dt=1.0), AlwaysSurrogate()
        )
    with pytest.raises(ValueError, match="variables"):
        HybridRunner(ks, OtherVariables(ks), AlwaysSurrogate())
    # a bare function is no stepper: the message says how to wrap one
    with pytest.raises(TypeError, match=r"surrogate must be a JAX pytree .*solvers.from_step"):
        HybridRunner(ks, lambda s: s, AlwaysSurrogate())


def test_bad_policies_and_options_are_refused(ks):
    with pytest.raises(ValueError, match=r"checks indicator\(s\) \['spread'\]"):
        HybridRunner(ks, ks, Threshold("spread", 0.1), (InvariantDrift(),))
    with pytest.raises(ValueError, match="unique"):
        HybridRunner(ks, ks, AlwaysSurrogate(), (InvariantDrift(), InvariantDrift()))
    with pytest.raises(ValueError, match="dispatch"):
        HybridRunner(ks, ks, AlwaysSurrogate(), dispatch="vmap")
    with pytest.raises(ValueError, match="blowup_threshold"):
        HybridRunner(ks, ks, AlwaysSurrogate(), blowup_threshold=0.0)
    with pytest.raises(ValueError, match="same length"):
        Threshold(["a", "b"], [0.1])
    with pytest.raises(ValueError, match="threshold for 'a' must be >= 0"):
        Threshold("a", -1.0)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        EveryK(0)
    with pytest.raises(ValueError, match="block_size"):
        BlockPolicy(0)
    runner = HybridRunner(ks, ks, AlwaysSolver())
    with pytest.raises(ValueError, match=r"initial_states must have shape \(B, \*\(1, 64\)\)"):
        runner.run(jnp.zeros((2, 64)), 3)
    with pytest.raises(ValueError, match="num_steps"):
        runner.run(jnp.zeros((2, 1, 64)), 0)
    with pytest.raises(ValueError, match="reference must have shape"):
        runner.run(jnp.zeros((2, 1, 64)), 3, reference=np.zeros((2, 3, 1, 64)))


def test_every_hybrid_config_composes_into_a_runner(ks):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    expected = {
        "default": Threshold,
        "every_k": EveryK,
        "block": BlockPolicy,
        "always_solver": AlwaysSolver,
        "always_surrogate": AlwaysSurrogate,
    }
    with initialize_config_dir(config_dir=os.path.abspath(CONFIG_DIR), version_base=None):
        for name, policy_type in expected.items():
            cfg = compose(config_name=name)
            runner = instantiate(cfg.runner, solver=ks, surrogate=ks)
            assert type(runner.policy) is policy_type, name
            assert cfg.num_steps >= 1 and cfg.num_trajectories >= 1


# ---- slow: every dispatch mode, cost comparison, 2D -----------------------------------------
@pytree_dataclass(data_fields=("key",))
class RandomTrip:
    """Uniform random value per member and step: trips a threshold 1 - p with probability p."""

    key: object
    name: str = "random_trip"
    units = "1"
    long_name = "uniform random number"

    def __call__(self, context):
        k = jax.random.fold_in(jax.random.fold_in(self.key, context.member), context.step)
        return jax.random.uniform(k, (), context.proposal.dtype)


@pytest.mark.slow
def test_dispatch_modes_agree(ks):
    x0 = jax.vmap(ks.initial_condition)(jax.random.split(jax.random.key(4), 5))
    fake = Scaled(ks, 0.97)
    results = {}
    for mode in ("compact", "member", "batch", "select"):
        runner = HybridRunner(
            ks,
            fake,
            Threshold("random_trip", 0.7),
            (RandomTrip(jax.random.key(5)),),
            dispatch=mode,
            chunk_size=10,
        )
        results[mode] = runner.run(x0, 20)
    ref = results["compact"]
    assert 0.1 < ref.solver_fraction < 0.6  # p = 0.3: mixed sub-batches of every size
    for mode, res in results.items():
        np.testing.assert_array_equal(res.engine, ref.engine, err_msg=mode)
        # Same arithmetic on gathered sub-batches vs the full batch: float32 round-off.
        np.testing.assert_allclose(res.states, ref.states, rtol=1e-5, atol=1e-5, err_msg=mode)


@pytest.mark.slow
def test_compare_cost_reports_both_runs(ks, ks_states):
    runner = HybridRunner(ks, Scaled(ks, 1.0), AlwaysSurrogate())
    report = compare_cost(runner, ks_states, 20)
    assert report["solver_only"].solver_fraction == 1.0 and report["solver_fraction"] == 0.0
    assert report["speedup"] == report["solver_wall_time"] / report["hybrid_wall_time"]
    summary = report["hybrid"].summary(baseline=report["solver_only"])
    assert summary["engine_counts"]["surrogate"] == 2 * 20 and "speedup" in summary


@pytest.mark.slow
def test_navier_stokes_hybrid_falls_back_and_stays_quiet():
    from solvers.navier_stokes import NavierStokes2D

    ns = NavierStokes2D(num_points=32)
    x0 = jax.vmap(ns.initial_condition)(jax.random.split(jax.random.key(6), 2))
    traj = np.asarray(jax.vmap(lambda s: rollout(ns, s, 6))(x0))
    fake = Trigger(ns, jnp.asarray(traj[0, 2][None]), float("nan"))
    indicators = (InvariantDrift("mean_vorticity", relative=False), SpectralTail())
    policy = Threshold(["mean_vorticity_drift", "spectral_tail"], [1e-4, 10.0])
    res = HybridRunner(ns, fake, policy, indicators).run(x0, 6)
    check_log(res, 2, 6)
    expected = np.full((2, 6), ENGINE_SURROGATE)
    expected[0, 2] = ENGINE_FALLBACK
    np.testing.assert_array_equal(res.engine, expected)
    assert np.array_equal(res.states, traj)
    ds = res.to_xarray()
    assert ds["vorticity"].dims == ("trajectory", "time", "y", "x")


# ---- the solver's stability as an indicator --------------------------------------------
def test_courant_indicator_rolls_back_states_the_solver_could_not_integrate():
    from solvers import NavierStokes2D
    from surrogate.hybrid import CourantNumber

    solver = NavierStokes2D(16, dt=0.1, num_substeps=2, forcing_amplitude=0.0, drag=0.0)
    x0 = jax.vmap(solver.initial_condition)(jax.random.split(jax.random.key(0), 2))
    c0 = float(jnp.max(jax.vmap(solver.courant_number)(x0)))
    limit = 2.0 * c0
    fast = Scaled(solver, 1.3)  # speeds the flow up by 30% per step
    sur = HybridRunner(solver, fast, AlwaysSurrogate()).run(x0, 8)
    courant = jax.vmap(jax.vmap(solver.courant_number))(jnp.asarray(sur.states))
    assert float(courant.max()) > 3 * limit  # alone, the surrogate leaves the stable range
    runner = HybridRunner(solver, fast, Threshold("courant", limit), [CourantNumber()])
    res = runner.run(x0, 8)
    courant = np.asarray(jax.vmap(jax.vmap(solver.courant_number))(jnp.asarray(res.states)))
    assert (res.engine == ENGINE_ROLLBACK).any() and (res.engine == ENGINE_SURROGATE).any()
    accepted = res.engine == ENGINE_SURROGATE
    # every state the surrogate was allowed to make is inside the limit (the solver's own
    # steps may move a little past it: that is its dynamics, not a proposal)
    assert courant[:, 1:][accepted].max() <= limit
    # the logged value is the proposal's Courant number, read at every surrogate step
    logged = res.indicator_values["courant"]
    # the same float32 max over the same state, inside the runner's scan and outside it
    np.testing.assert_allclose(logged[accepted], courant[:, 1:][accepted], rtol=1e-5, atol=0)
    assert (logged[res.engine == ENGINE_ROLLBACK] > limit).all()
    with pytest.raises(TypeError, match="KuramotoSivashinsky has no courant_number"):
        HybridRunner(
            KuramotoSivashinsky(), Scaled(KuramotoSivashinsky()), AlwaysSolver(), [CourantNumber()]
        )
