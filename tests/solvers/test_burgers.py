"""Burgers against the Cole-Hopf exact solution; fourth-order convergence; invariants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import Burgers, rollout

# Cole-Hopf: u = -2 nu phi_x / phi with phi = 1 + A exp(-nu k^2 t) cos(k x) solving the heat
# equation. A = 0.7 makes max u / (nu k) ~ 2 (genuinely nonlinear); the analytic profile's
# Fourier coefficients decay like 0.41^m, so the 2/3-rule band of N = 96 (modes <= 31)
# holds it to ~1e-13 (N = 64 leaves a measured 1e-9 spatial error at early times).
NU, A, K = 0.2, 0.7, 1.0
N = 96


def cole_hopf(x: np.ndarray, t: float) -> np.ndarray:
    e = A * np.exp(-NU * K**2 * t)
    return 2 * NU * K * e * np.sin(K * x) / (1 + e * np.cos(K * x))


def _x() -> np.ndarray:
    return np.arange(N) * 2 * np.pi / N


@jax.jit
def _integrate(solver: Burgers, u: jax.Array, num_steps: jax.Array) -> jax.Array:
    """``num_steps`` calls of ``advance``; the count is traced, so one compile serves all."""
    return jax.lax.fori_loop(0, num_steps, lambda _, v: solver.advance(v), u)


def _error_after(total_time: float, num_steps: int) -> float:
    solver = Burgers(
        num_points=N,
        viscosity=NU,
        dt=total_time / num_steps,
        num_substeps=1,
        initial_amplitude=0.4,  # bounds max |u0| = 0.392 (for the start-up stability check)
        precision="float64",
    )
    u = _integrate(solver, jnp.asarray(cole_hopf(_x(), 0.0))[None], num_steps)
    return float(np.max(np.abs(np.asarray(u[0]) - cole_hopf(_x(), total_time))))


def test_matches_cole_hopf_solution(x64):
    solver = Burgers(
        num_points=N,
        viscosity=NU,
        dt=0.25,
        num_substeps=16,
        initial_amplitude=0.4,  # bounds max |u0| = 0.392 (for the start-up stability check)
        precision="float64",
    )
    frames = rollout(solver, jnp.asarray(cole_hopf(_x(), 0.0))[None], 8)
    for i, frame in enumerate(frames):
        # h = 1/64: measured error <= 3.6e-10 over t <= 2, temporal (it falls 16x when h
        # halves); spatial error ~1e-13.
        np.testing.assert_allclose(frame[0], cole_hopf(_x(), 0.25 * i), rtol=0, atol=1e-9)


def test_fourth_order_in_time(x64):
    total_time = 2.0
    # h = 1/8 .. 1/64 (Courant number <= 0.77); errors measured 5e-8 .. 1.3e-11.
    steps = np.array([16, 32, 64, 128])
    errors = np.array([_error_after(total_time, int(n)) for n in steps])
    # The spatial (and round-off) error, measured with 16x the finest step count (temporal
    # part 16^4 times smaller), must sit far below the temporal errors being fitted.
    spatial = _error_after(total_time, 16 * steps[-1])
    assert spatial < 1e-2 * errors[-1], (spatial, errors)
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 3.6 <= slope <= 4.4, (slope, errors)


def test_mass_conserved_energy_and_maximum_decay(x64):
    # Resolved regime (front width 2 nu / U ~ 0.2 spans 2 cells) so no Gibbs overshoot.
    solver = Burgers(num_points=64, viscosity=0.1, dt=0.1, num_substeps=2, precision="float64")
    u0 = solver.initial_condition(jax.random.key(3)) + 0.25
    frames = rollout(solver, u0, 40)
    d = jax.vmap(solver.diagnostics)(frames)
    # The k = 0 mode has L = 0 and N = 0 exactly: only FFT round-off of O(1) values.
    np.testing.assert_allclose(d["mass"], float(d["mass"][0]), rtol=0, atol=1e-14)
    assert np.all(np.diff(np.asarray(d["energy"])) < 0)  # dissipation, nonlinearity conserves
    # Maximum principle; the tolerance allows interpolation between grid points (the
    # discrete max of a band-limited field can exceed the previous discrete max slightly).
    assert np.all(np.diff(np.asarray(d["max_abs"])) < 1e-3)
    assert float(d["max_abs"][-1]) < float(d["max_abs"][0])


def test_initial_condition_distribution(x64):
    solver = Burgers(num_points=64, initial_amplitude=1.7, initial_max_mode=5, precision="float64")
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(16))
    u = np.asarray(jax.vmap(solver.initial_condition)(keys))[:, 0]
    # Rescaled so max |u| is the amplitude: exact up to one rounding.
    np.testing.assert_allclose(np.abs(u).max(axis=-1), 1.7, rtol=1e-15, atol=0)
    np.testing.assert_allclose(u.mean(axis=-1), 0.0, rtol=0, atol=1e-15)  # round-off
    u_hat = np.abs(np.fft.rfft(u, axis=-1))
    assert np.max(u_hat[:, 6:]) < 1e-12  # band-limited to modes 1..5 (FFT round-off)
    assert not np.allclose(u[0], u[1])


def test_stability_limit_is_the_courant_number():
    dx = 2 * math.pi / 64
    # Courant number amplitude * h / dx = 1 exactly is accepted ...
    Burgers(num_points=64, dt=2 * dx, num_substeps=2, initial_amplitude=1.0)
    # ... and just above it is refused with the limit and the needed substeps in the message.
    with pytest.raises(ValueError, match=r"stability limit 0\.0972 .*Courant.*<= 1\.0.*>= 3"):
        Burgers(num_points=64, dt=2 * dx, num_substeps=2, initial_amplitude=1.01)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_points=63), "num_points"),
        (dict(viscosity=0.0), "viscosity"),
        (dict(domain_length=-1.0), "domain_length"),
        (dict(initial_max_mode=100), "initial_max_mode"),
        (dict(initial_amplitude=float("inf")), "initial_amplitude"),
        (dict(num_substeps=1.5), "num_substeps"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Burgers(**kwargs)


def test_config_round_trip():
    solver = Burgers(num_points=32, viscosity=0.05, dt=0.1, num_substeps=4)
    assert Burgers(**solver.config()).config() == solver.config()
    assert solver.variables == ("u",) and solver.grid.axes == ("x",)


def test_courant_number_is_max_speed_times_step_over_dx(x64):
    # u = A sin(x) on 32 points of [0, 2 pi): the peak x = pi/2 is grid point 8.
    solver = Burgers(num_points=32, viscosity=0.1, dt=0.1, num_substeps=4, precision="float64")
    x = np.arange(32) * 2 * math.pi / 32
    u = jnp.asarray((-2.5 * np.sin(x))[None])
    expected = 2.5 * (0.1 / 4) / (2 * math.pi / 32)
    np.testing.assert_allclose(float(solver.courant_number(u)), expected, rtol=1e-14, atol=0)
