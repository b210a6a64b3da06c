"""Verification of the Lorenz-96 solver: RK4 order, energy budget, climate, chaos."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import Lorenz96, build_solver, rollout

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "solver" / "lorenz96.yaml"


def attractor_state(key, **kwargs):
    """A float64 state on the F = 8 attractor (30 time units of spin-up from the fixed point)."""
    solver = Lorenz96(precision="float64", initial_perturbation=1.0, **kwargs)
    x0 = solver.initial_condition(key)
    return rollout(solver, x0, 600, include_initial=False)[-1]


def leading_lyapunov(solver, x, key, num_blocks, block):
    """Leading Lyapunov exponent by the tangent-linear method.

    The tangent ``d`` is pushed through ``solver.step`` with ``jax.jvp`` and renormalised
    every ``block`` steps; the exponent is the mean log growth per unit time.
    """
    return _mean_log_growth(solver, x, key, num_blocks, block) / solver.internal_dt


@partial(jax.jit, static_argnames=("num_blocks", "block"))
def _mean_log_growth(solver, x, key, num_blocks, block):
    """Mean log growth of a tangent vector per ``solver.step``."""
    d = jax.random.normal(key, x.shape, x.dtype)
    d = d / jnp.linalg.norm(d)

    def one(carry, _):
        return jax.jvp(solver.step, carry[:1], carry[1:]), None

    def renormalise(carry, _):
        (x, d), _ = jax.lax.scan(one, carry, None, length=block)
        norm = jnp.linalg.norm(d)
        return (x, d / norm), jnp.log(norm)

    _, logs = jax.lax.scan(renormalise, (x, d), None, length=num_blocks)
    return jnp.sum(logs) / (num_blocks * block)


def test_metadata_and_grid():
    solver = Lorenz96(num_sites=12)
    assert solver.variables == ("x",)
    assert solver.state_shape == (1, 12)
    assert solver.grid.axes == ("site",)
    assert solver.grid.long_names == ("site index",)
    np.testing.assert_array_equal(solver.grid.coords()["site"], np.arange(12.0))
    assert build_solver("lorenz96", **solver.config()).config() == solver.config()


def test_tendency_matches_definition(x64):
    solver = Lorenz96(num_sites=6, forcing=3.0, precision="float64")
    x = jnp.arange(1.0, 7.0)[None] ** 2
    xs = np.asarray(x[0])
    expected = [
        (xs[(i + 1) % 6] - xs[(i - 2) % 6]) * xs[(i - 1) % 6] - xs[i] + 3.0 for i in range(6)
    ]
    # Integers below 2^53 combined by + - *: exact in float64.
    np.testing.assert_allclose(solver.tendency(x)[0], expected, rtol=0, atol=0)


def test_rk4_fourth_order_convergence(x64, key):
    x = attractor_state(key)
    reference = Lorenz96(precision="float64", dt=1.0, num_substeps=4000)(x)
    substeps = np.array([25, 50, 100, 200])
    errors = [
        float(
            jnp.max(jnp.abs(Lorenz96(precision="float64", dt=1.0, num_substeps=n)(x) - reference))
        )
        for n in substeps
    ]
    slope = np.polyfit(np.log(1.0 / substeps), np.log(errors), 1)[0]  # error ~ h^slope
    # Classic RK4 is fourth order; the band allows for the pre-asymptotic regime.
    assert 3.6 <= slope <= 4.4, (slope, errors)


def test_advection_conserves_energy_to_round_off(x64, key):
    solver = Lorenz96(precision="float64")
    frames = rollout(solver, attractor_state(key), 50)
    work = frames * solver.advection(frames)
    total = jnp.sum(work, axis=(1, 2))
    scale = jnp.sum(jnp.abs(work), axis=(1, 2))
    # The sum telescopes to zero exactly; round-off of 40 products summed is a few eps.
    np.testing.assert_allclose(total / scale, 0.0, rtol=0, atol=40 * np.finfo(np.float64).eps)


def test_energy_budget_by_finite_differences(x64, key):
    """``dE/dt = -2E + F sum x`` along a trajectory, with a second-order shrinking error."""
    x = attractor_state(key)
    misfit = []
    for dt in (0.01, 0.005):
        solver = Lorenz96(precision="float64", dt=dt, num_substeps=1)
        frames = np.asarray(rollout(solver, x, round(1.0 / dt)))
        energy = 0.5 * np.sum(frames**2, axis=(1, 2))
        de_dt = (energy[2:] - energy[:-2]) / (2 * dt)
        budget = -2 * energy[1:-1] + 8.0 * np.sum(frames[1:-1], axis=(1, 2))
        misfit.append(np.max(np.abs(de_dt - budget)) / np.max(np.abs(budget)))
    # Central differences err by dt^2 |E'''| / 6: measured 1.5e-3 and 3.8e-4 of max|dE/dt|.
    assert misfit[1] < 1e-3, misfit
    # Halving dt divides the central-difference error by 4 (second order), +-25 %.
    assert 3.0 < misfit[0] / misfit[1] < 5.0, misfit


def test_attractor_statistics_f8_n40(x64):
    solver = Lorenz96(precision="float64", initial_perturbation=1.0)
    x0 = solver.initial_condition(jax.random.key(3))
    frames = np.asarray(rollout(solver, x0, 2400))[401:]  # 20 time units spin-up, then 100
    # Literature: mean 2.34, std 3.64. Over 100 time units, 20 seeds measured mean in
    # [2.29, 2.42] and std in [3.61, 3.68]; the bands are about twice that spread.
    assert 2.15 <= frames.mean() <= 2.55
    assert 3.45 <= frames.std() <= 3.85


def test_leading_lyapunov_exponent_fast(x64, key):
    solver = Lorenz96(precision="float64", dt=0.01, num_substeps=1)
    x = attractor_state(key)
    lam = float(leading_lyapunov(solver, x, jax.random.fold_in(key, 1), num_blocks=4000, block=5))
    # About 1.69 for F = 8, N = 40; 200 time units gave [1.64, 1.78] over 10 seeds.
    assert 1.4 <= lam <= 2.0, lam


@pytest.mark.slow
def test_leading_lyapunov_exponent_precise(x64, key):
    solver = Lorenz96(precision="float64", dt=0.01, num_substeps=1)
    x = attractor_state(key)
    lam = float(leading_lyapunov(solver, x, jax.random.fold_in(key, 1), num_blocks=40000, block=5))
    # 2000 time units gave [1.68, 1.70] over 10 seeds.
    assert 1.6 <= lam <= 1.8, lam


def test_chaos_separates_nearby_states(x64, key):
    solver = Lorenz96(precision="float64")
    x = attractor_state(key)
    a = rollout(solver, x, 200, include_initial=False)[-1]
    b = rollout(solver, x + 1e-8, 200, include_initial=False)[-1]
    # 10 time units at lambda ~ 1.7 amplify 1e-8 by e^17 ~ 2e7: the states decorrelate.
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2


def test_diagnostics(x64):
    solver = Lorenz96(num_sites=4, precision="float64")
    d = solver.diagnostics(jnp.array([[1.0, -2.0, 3.0, 0.0]]))
    # Exact small-integer arithmetic.
    np.testing.assert_allclose(d["energy"], 7.0, rtol=0, atol=0)
    np.testing.assert_allclose(d["mean"], 0.5, rtol=0, atol=0)


def test_float32_in_float32_out(key):
    solver = Lorenz96()
    x = solver.initial_condition(key)
    assert x.dtype == jnp.float32
    assert solver(x).dtype == jnp.float32
    assert solver.step(x).dtype == jnp.float32


def test_float64_in_float64_out(x64, key):
    solver = Lorenz96(precision="float64")
    x = solver.initial_condition(key)
    assert x.dtype == jnp.float64 and solver(x).dtype == jnp.float64


def test_traces_once_across_forcing_values(key):
    traces = []

    @jax.jit
    def run(solver, x):
        traces.append(1)
        return solver(x)

    x = Lorenz96().initial_condition(key)
    a = run(Lorenz96(forcing=8.0), x)
    b = run(Lorenz96(forcing=10.0), x)
    assert len(traces) == 1
    assert not np.allclose(a, b)


def test_vmap_matches_loop(key):
    solver = Lorenz96()
    keys = jax.random.split(key, 3)
    x0 = jax.vmap(solver.initial_condition)(keys)
    batched = jax.vmap(solver)(x0)
    looped = jnp.stack([solver(x) for x in x0])
    # Same float32 operations batched or not; XLA may fuse differently, a few ulps.
    np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-6)


def test_unstable_dt_raises_naming_the_limit():
    with pytest.raises(ValueError, match=r"stability limit 0\.12 .*num_substeps >= 2"):
        Lorenz96(dt=0.2, num_substeps=1)
    with pytest.raises(ValueError, match=r"stability limit 0\.06"):
        Lorenz96(forcing=16.0, dt=0.1, num_substeps=1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_sites": 3}, "num_sites"),
        ({"num_sites": 40.0}, "num_sites"),
        ({"dt": 0.0}, "dt"),
        ({"forcing": -1.0}, "forcing"),
        ({"initial_perturbation": float("nan")}, "initial_perturbation"),
        ({"num_substeps": 0}, "num_substeps"),
        ({"precision": "float16"}, "precision"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Lorenz96(**kwargs)


def test_wrong_state_shape_is_reported():
    with pytest.raises(ValueError, match=r"\(1, 40\)"):
        Lorenz96().step(jnp.zeros((40,)))


def test_config_file_builds_the_default_solver():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG)
    solver = instantiate(cfg)
    assert isinstance(solver, Lorenz96)
    assert set(cfg) - {"_target_"} == set(solver.config())
    assert solver.config() == Lorenz96().config()
