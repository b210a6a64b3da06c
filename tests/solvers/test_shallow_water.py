"""Verification of the rotating shallow-water solver.

Exact steady geostrophic state, linear inertia-gravity waves, ETDRK4 order, mass to
round-off, energy and potential enstrophy drift, dtypes, errors and the config file.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import ShallowWater2D, build_solver, rollout

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "solver" / "shallow_water.yaml"


def inertia_gravity_wave(solver, amplitude, t, mode=(1, 2)):
    """Linear f-plane plane wave ``h = H + a cos(k.x - omega t)`` and its velocity.

    ``omega^2 = f^2 + g H |k|^2``; the velocity is ``(a / (H |k|)) (omega cos(theta) k_hat
    + f sin(theta) z x k_hat)``. ``mode`` is ``(m_y, m_x)`` in cycles across the domain.

    Returns:
        The state ``(3, n_y, n_x)`` (numpy float64) and ``omega``.
    """
    y, x = solver.grid.meshgrid()
    ly, lx = solver.grid.domain_length
    ky, kx = 2 * math.pi * mode[0] / ly, 2 * math.pi * mode[1] / lx
    k = math.hypot(kx, ky)
    f, g, depth = solver.coriolis, solver.gravity, solver.mean_depth
    omega = math.sqrt(f * f + g * depth * k * k)
    theta = kx * x + ky * y - omega * t
    along = amplitude * omega / (depth * k) * np.cos(theta)
    across = amplitude * f / (depth * k) * np.sin(theta)
    state = np.stack(
        [
            depth + amplitude * np.cos(theta),
            along * kx / k - across * ky / k,
            along * ky / k + across * kx / k,
        ]
    )
    return state, omega


def test_metadata_grid_and_registry():
    solver = ShallowWater2D(num_points=(16, 32), domain_length=(math.pi, 2 * math.pi))
    assert solver.variables == ("h", "u", "v")
    assert set(solver.units) == set(solver.long_names) == {"h", "u", "v"}
    assert solver.state_shape == (3, 16, 32)
    assert solver.grid.axes == ("y", "x")
    # domain length over points: the same float64 division, one rounding at most
    np.testing.assert_allclose(
        solver.grid.spacing, (math.pi / 16, 2 * math.pi / 32), rtol=1e-15, atol=0
    )
    rebuilt = build_solver("shallow_water", **solver.config())
    assert rebuilt.config() == solver.config()


def test_geostrophic_jet_is_an_exact_steady_state(x64):
    """``h = H + a cos(k y)``, ``u = (g a k / f) sin(k y)``, ``v = 0``: steady, inviscid."""
    domain = (2 * math.pi, 4 * math.pi)  # non-square, to check the y wavenumbers
    solver = ShallowWater2D(
        num_points=(32, 64),
        domain_length=domain,
        gravity=2.0,
        mean_depth=0.5,
        coriolis=1.5,
        viscosity=0.0,
        dt=0.5,
        num_substeps=5,
        precision="float64",
    )
    y = solver.grid.meshgrid()[0]
    k, a = 2 * math.pi * 3 / domain[0], 0.1
    state = jnp.asarray(
        np.stack([0.5 + a * np.cos(k * y), 2.0 * a * k / 1.5 * np.sin(k * y), 0 * y])
    )
    frames = rollout(solver, state, 40)
    # The tendency cancels analytically; 200 steps of round-off measured 1.2e-15.
    np.testing.assert_allclose(frames, jnp.broadcast_to(state, frames.shape), rtol=0, atol=1e-13)


def test_inertia_gravity_wave_dispersion(x64):
    """Small-amplitude plane waves follow ``omega^2 = f^2 + g H |k|^2``."""
    solver = ShallowWater2D(
        num_points=16, coriolis=2.0, viscosity=0.0, dt=0.1, num_substeps=4, precision="float64"
    )
    num_frames = 40
    times = np.arange(num_frames + 1) * solver.dt
    errors = []
    for amplitude in (1e-3, 1e-4):
        state, omega = inertia_gravity_wave(solver, amplitude, 0.0)
        assert omega == pytest.approx(3.0, rel=1e-15, abs=0)  # f = 2, g H |k|^2 = 5
        frames = np.asarray(rollout(solver, jnp.asarray(state), num_frames))
        exact = np.stack([inertia_gravity_wave(solver, amplitude, t)[0] for t in times])
        errors.append(np.max(np.abs(frames - exact)) / amplitude)
        # Frequency from the phase of the (m_y, m_x) = (1, 2) Fourier mode of h.
        phase = np.unwrap(np.angle(np.fft.fft2(frames[:, 0])[:, 1, 2]))
        measured = -np.polyfit(times, phase, 1)[0]
        # RK4 phase error (omega h)^4 / 120 = 2.6e-7 at omega h = 0.075; the nonlinear
        # frequency shift is O(a^2).
        np.testing.assert_allclose(measured, omega, rtol=2e-6, atol=0)
    # The misfit to the linear solution is the nonlinear correction, O(a) relative to a:
    # measured 5e-3 at a = 1e-3 and 5e-4 at a = 1e-4 (time error below 1e-5).
    assert errors[1] < 2e-3, errors
    assert errors[1] / errors[0] < 0.2, errors


@jax.jit
def integrate(solver, state, num_steps):
    """``num_steps`` internal steps; ``num_steps`` and the solver's ``dt`` are traced, so
    solvers differing only in ``dt`` share one compilation."""
    return jax.lax.fori_loop(0, num_steps, lambda _, s: solver.step(s), state)


def test_etdrk4_fourth_order_in_time(x64):
    """Slope of the error against the step size, with hyperviscosity in the linear part."""
    kw = {"num_points": 16, "viscosity": 1e-3, "initial_max_mode": 4, "precision": "float64"}
    x0 = ShallowWater2D(**kw).initial_condition(jax.random.key(1))
    final_time = 1.0

    def solve(n):
        solver = ShallowWater2D(**kw, dt=final_time / n, num_substeps=1)
        return integrate(solver, x0, n)

    reference = solve(640)
    substeps = np.array([10, 20, 40, 80])
    errors = [float(jnp.max(jnp.abs(solve(int(n)) - reference))) for n in substeps]
    slope = np.polyfit(np.log(1.0 / substeps), np.log(errors), 1)[0]  # error ~ h^slope
    # ETDRK4 is fourth order; the band allows for the pre-asymptotic regime.
    assert 3.6 <= slope <= 4.4, (slope, errors)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_mass_conserved_to_round_off(x64, precision):
    solver = ShallowWater2D(num_points=16, dt=0.25, num_substeps=3, precision=precision)
    x0 = solver.initial_condition(jax.random.key(0))
    frames = rollout(solver, x0, 100)
    assert frames.dtype == jnp.dtype(precision)
    mass = np.mean(np.asarray(frames[:, 0], np.float64), axis=(1, 2))
    eps = np.finfo(precision).eps
    # The flux divergence and the hyperviscosity have no zero mode, so only the FFT
    # round trips (one per output interval) round the mean: measured <= 2 ulp over 100.
    np.testing.assert_allclose(mass, mass[0], rtol=0, atol=20 * eps * solver.mean_depth)


def test_inviscid_energy_and_potential_enstrophy_nearly_conserved(x64):
    solver = ShallowWater2D(
        num_points=32, viscosity=0.0, dt=0.5, num_substeps=10, precision="float64"
    )
    frames = rollout(solver, solver.initial_condition(jax.random.key(2)), 10)
    d = jax.vmap(solver.diagnostics)(frames)
    energy = np.asarray(d["energy"])
    rest_energy = 0.5 * solver.gravity * solver.mean_depth**2  # h = H, u = v = 0
    drift = np.max(np.abs(energy - energy[0])) / (energy[0] - rest_energy)
    # Over 5 time units (100 steps) the Galerkin truncation of the cubic energy and the
    # RK4 error move it by 3e-6 of the energy above rest (measured).
    assert drift < 1e-5, drift
    enstrophy = np.asarray(d["potential_enstrophy"])
    # Measured 1.5e-6 relative over the same run.
    np.testing.assert_allclose(enstrophy, enstrophy[0], rtol=1e-5, atol=0)
    # Circulation over mass: f0 / H exactly, up to the round-off of the means.
    np.testing.assert_allclose(d["mean_potential_vorticity"], 2.0, rtol=1e-13, atol=0)


def test_viscosity_dissipates_energy(x64):
    solver = ShallowWater2D(
        num_points=32, viscosity=1e-3, dt=0.5, num_substeps=10, precision="float64"
    )
    frames = rollout(solver, solver.initial_condition(jax.random.key(2)), 10)
    energy = np.asarray(jax.vmap(solver.diagnostics)(frames)["energy"])
    assert np.all(np.diff(energy) < 0), energy


def test_diagnostics_of_a_known_state(x64):
    """``h = H``, ``u = b sin(y)``, ``v = 0``: ``zeta = -b cos(y)``, all means closed-form."""
    solver = ShallowWater2D(
        num_points=16, gravity=2.0, mean_depth=0.5, coriolis=3.0, precision="float64"
    )
    y = solver.grid.meshgrid()[0]
    b = 0.2
    state = jnp.asarray(np.stack([0.5 + 0 * y, b * np.sin(y), 0 * y]))
    np.testing.assert_allclose(solver.vorticity(state), -b * np.cos(y), rtol=0, atol=1e-14)
    d = solver.diagnostics(state)
    expected = {
        "mass": 0.5,
        "energy": 0.5 * b**2 / 4 + 2.0 * 0.5**2 / 2,
        "potential_enstrophy": (3.0**2 + b**2 / 2) / (2 * 0.5),
        "mean_potential_vorticity": 3.0 / 0.5,
    }
    for name, value in expected.items():
        # Spectral derivatives and grid means of a single mode are exact up to round-off.
        np.testing.assert_allclose(d[name], value, rtol=1e-14, atol=1e-14, err_msg=name)


def test_beta_plane_profile_has_slope_beta(x64):
    solver = ShallowWater2D(num_points=64, coriolis=2.0, beta=0.5, precision="float64")
    f = np.asarray(solver.coriolis_parameter())[:, 0]
    dy = solver.grid.spacing[0]
    # Centred difference of f0 + beta (L/2pi) sin(2 pi y / L) at y = 0: error dy^2/6 = 2e-3.
    np.testing.assert_allclose((f[1] - f[-1]) / (2 * dy), 0.5, rtol=3e-3, atol=0)
    np.testing.assert_allclose(f.mean(), 2.0, rtol=0, atol=1e-14)  # mean is f0 (round-off)


def test_beta_plane_runs_and_conserves_mass(x64):
    solver = ShallowWater2D(num_points=32, beta=0.5, dt=0.25, num_substeps=5, precision="float64")
    x0 = solver.initial_condition(jax.random.key(4))
    frames = rollout(solver, x0, 20)
    mass = np.mean(np.asarray(frames[:, 0]), axis=(1, 2))
    # As for the f-plane: FFT round trips only.
    np.testing.assert_allclose(mass, mass[0], rtol=0, atol=20 * np.finfo(np.float64).eps)
    assert np.all(np.isfinite(frames))
    # The flow is not steady: the periodic beta term drives Rossby-wave dynamics.
    assert float(jnp.max(jnp.abs(frames[-1] - x0))) > 1e-3


def test_initial_condition_is_geostrophically_balanced(x64):
    solver = ShallowWater2D(num_points=32, coriolis=2.0, gravity=1.5, precision="float64")
    state = solver.initial_condition(jax.random.key(5))
    h, u, v = (np.asarray(c) for c in state)
    eta_hat = np.fft.rfft2(h - solver.mean_depth)
    ky, kx = (
        k
        for k in np.meshgrid(np.fft.fftfreq(32, 1 / 32), np.fft.rfftfreq(32, 1 / 32), indexing="ij")
    )
    # f u = -g d_y h and f v = g d_x h, spectrally exact up to round-off.
    np.testing.assert_allclose(np.fft.rfft2(u) * 2.0, -1.5 * 1j * ky * eta_hat, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.fft.rfft2(v) * 2.0, 1.5 * 1j * kx * eta_hat, rtol=0, atol=1e-12)
    # mean depth plus a zero-mean (k = 0 removed) eta: round-off of a 32^2 mean of O(1)
    np.testing.assert_allclose(h.mean(), solver.mean_depth, rtol=0, atol=1e-15)
    # Standard deviation of eta is initial_amplitude in expectation; one 32^2 draw of a
    # field with ~50 modes has a sampling spread of about 10 %.
    np.testing.assert_allclose(np.std(h), solver.initial_amplitude, rtol=0.3, atol=0)


def test_rest_initial_condition_without_rotation():
    solver = ShallowWater2D(num_points=16, coriolis=0.0, initial_velocity="rest")
    state = solver.initial_condition(jax.random.key(0))
    assert np.all(np.asarray(state[1:]) == 0)
    assert np.all(np.isfinite(np.asarray(rollout(solver, state, 2))))


def test_float32_in_float32_out():
    solver = ShallowWater2D(num_points=16)
    state = solver.initial_condition(jax.random.key(0))
    assert state.dtype == jnp.float32
    out, stepped, diagnostics = jax.jit(lambda s, x: (s(x), s.step(x), s.diagnostics(x)))(
        solver, state
    )
    assert out.dtype == stepped.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in diagnostics.values())


def test_traces_once_across_parameter_values():
    traces = []

    @jax.jit
    def run(solver, state):
        traces.append(1)
        return solver(state)

    state = ShallowWater2D(num_points=16).initial_condition(jax.random.key(0))
    a = run(ShallowWater2D(num_points=16, coriolis=2.0, gravity=1.0, viscosity=1e-5), state)
    b = run(ShallowWater2D(num_points=16, coriolis=2.5, gravity=0.9, viscosity=2e-5), state)
    assert len(traces) == 1
    assert not np.allclose(a, b)


def test_vmap_matches_loop():
    solver = ShallowWater2D(num_points=16)
    states = jax.jit(jax.vmap(solver.initial_condition))(jax.random.split(jax.random.key(0), 2))
    advance = jax.jit(lambda s, x: s(x))
    batched = jax.jit(jax.vmap(lambda x: solver(x)))(states)
    looped = jnp.stack([advance(solver, s) for s in states])
    # Same float32 operations batched or not; XLA may order reductions differently.
    np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-6)


def test_unstable_dt_raises_naming_the_limit():
    with pytest.raises(ValueError, match=r"stability limit .*gravity-wave CFL.*num_substeps >= "):
        ShallowWater2D(dt=0.25, num_substeps=1)
    with pytest.raises(
        ValueError,
        match=r"stability limit 0\.098.*inertial limit max\|f\| h <= 2\.0, max\|f\| = 20",
    ):
        ShallowWater2D(num_points=8, initial_max_mode=2, coriolis=20.0, dt=0.15, num_substeps=1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_points": 7}, "num_points"),
        ({"num_points": (16, 15)}, "num_points"),
        ({"num_points": (16, 16, 16)}, "num_points"),
        ({"domain_length": -1.0}, "domain_length"),
        ({"gravity": 0.0}, "gravity"),
        ({"mean_depth": float("inf")}, "mean_depth"),
        ({"coriolis": float("nan")}, "coriolis"),
        ({"beta": "0"}, "beta"),
        ({"viscosity": -1e-3}, "viscosity"),
        ({"viscosity_order": 0}, "viscosity_order"),
        ({"initial_amplitude": 0.5}, "initial_amplitude"),
        ({"initial_max_mode": 30}, "initial_max_mode"),
        ({"initial_velocity": "balanced"}, "initial_velocity"),
        ({"coriolis": 0.0}, "coriolis != 0"),
        ({"num_substeps": 0}, "num_substeps"),
        ({"precision": "bfloat16"}, "precision"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ShallowWater2D(**kwargs)


def test_wrong_state_shape_is_reported():
    with pytest.raises(ValueError, match=r"\(3, 16, 16\)"):
        ShallowWater2D(num_points=16).step(jnp.zeros((2, 16, 16)))


def test_config_file_builds_the_default_solver():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG)
    solver = instantiate(cfg)
    assert isinstance(solver, ShallowWater2D)
    assert set(cfg) - {"_target_"} == set(solver.config())
    assert solver.config() == ShallowWater2D().config()


def test_courant_number_of_a_uniform_flow_is_wave_plus_flow_speed(x64):
    solver = ShallowWater2D(
        num_points=(16, 32),
        domain_length=(math.pi, 2 * math.pi),
        gravity=2.0,
        mean_depth=0.5,
        dt=0.01,
        num_substeps=2,
        precision="float64",
    )
    state = jnp.stack([jnp.full((16, 32), 0.5), jnp.full((16, 32), 0.3), jnp.zeros((16, 32))])
    expected = (math.sqrt(2.0 * 0.5) + 0.3) * (0.01 / 2) / (math.pi / 16)
    np.testing.assert_allclose(float(solver.courant_number(state)), expected, rtol=1e-14, atol=0)
