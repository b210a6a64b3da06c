"""Verification of the 2D Navier-Stokes (vorticity, Kolmogorov flow) solver.

Exact Taylor-Green decay and laminar Kolmogorov steady state, the nonlinear term against
a hand-computed two-mode flow, ETDRK4 order, mean vorticity to round-off, energy and
enstrophy budgets, spectrum normalisation, dtypes, errors, tracing and the config file.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import simpson

from solvers import NavierStokes2D, build_solver, rollout

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "solver" / "navier_stokes_2d.yaml"

# Unforced, weak-IC settings: the start-up Courant check then allows large steps.
QUIET = dict(forcing_amplitude=0.0, initial_amplitude=0.1, precision="float64")


@jax.jit
def _integrate(solver: NavierStokes2D, w: jax.Array, num_steps: jax.Array) -> jax.Array:
    """``num_steps`` calls of ``advance``; the count is traced, so one compile serves all."""
    return jax.lax.fori_loop(0, num_steps, lambda _, v: solver.advance(v), w)


def _eigenmode(solver: NavierStokes2D, a: float, b: float) -> np.ndarray:
    """``w = cos(a x) cos(b y)`` on the solver grid, ``(1, n_y, n_x)`` float64."""
    y, x = solver.grid.meshgrid()
    return (np.cos(a * x) * np.cos(b * y))[None]


def _fft_equations(jaxpr) -> list:
    """All ``fft`` equations of a jaxpr, descending into sub-jaxprs (pjit, loops)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "fft":
            found.append(eqn)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                found.extend(_fft_equations(inner))
    return found


@pytest.mark.parametrize(
    ("num_points", "domain_length", "a", "b", "drag"),
    [
        (32, 2 * math.pi, 2.0, 2.0, 0.0),  # the classical Taylor-Green vortex
        ((24, 48), (2 * math.pi, 3 * math.pi), 2.0, 1.0, 0.3),  # rectangular, with drag
    ],
)
def test_laplacian_eigenmode_decays_exactly(x64, num_points, domain_length, a, b, drag):
    # w = cos(a x) cos(b y) has w = (a^2 + b^2) psi, so u . grad w = 0 and the solution is
    # w exp(-(nu (a^2 + b^2) + alpha) t); ETDRK4 integrates that linear part exactly.
    viscosity, num_steps = 0.05, 10
    solver = NavierStokes2D(
        num_points, domain_length, viscosity=viscosity, drag=drag, dt=0.3, num_substeps=2, **QUIET
    )
    w0 = 2 * a * _eigenmode(solver, a, b)
    w = np.asarray(_integrate(solver, jnp.asarray(w0), num_steps))
    decay = np.exp(-(viscosity * (a * a + b * b) + drag) * num_steps * solver.dt)
    assert decay < 0.5  # the test would be void if nothing decayed
    # Only FFT round-off acts (N vanishes to ~1e-15 per step, 20 steps); well inside 1e-10.
    np.testing.assert_allclose(w, w0 * decay, rtol=0, atol=1e-12 * np.max(np.abs(w0)))


@pytest.mark.parametrize(("a", "b"), [(2.0, 1.0), (4.0 / 3.0, 2.0)])  # periodic on 3 pi x 2 pi
def test_velocity_of_an_eigenmode_is_exact(x64, a, b):
    # psi = w / (a^2 + b^2): u = psi_y = -b cos(ax) sin(by) / s, v = -psi_x = a sin(ax) cos(by) / s.
    solver = NavierStokes2D((24, 48), (2 * math.pi, 3 * math.pi), dt=0.1, **QUIET)
    y, x = solver.grid.meshgrid()
    s = a * a + b * b
    uv = np.asarray(solver.velocity(jnp.asarray(_eigenmode(solver, a, b))))
    expected = np.stack([-b * np.cos(a * x) * np.sin(b * y), a * np.sin(a * x) * np.cos(b * y)])
    # Spectral differentiation of a resolved mode: exact up to FFT round-off.
    np.testing.assert_allclose(uv, expected / s, rtol=0, atol=1e-14)


def test_courant_number_of_a_shear_mode_is_exact(x64):
    # w = A sin(a x): psi = A sin(a x) / a^2, speed |v| = A |cos(a x)| / a, max A / a at
    # x = 0 (a grid point). Courant = (A / a) h / min(dx, dy), h = dt / num_substeps.
    solver = NavierStokes2D((24, 48), (2 * math.pi, 3 * math.pi), dt=0.1, num_substeps=4, **QUIET)
    y, x = solver.grid.meshgrid()
    a, amp = 2.0, 3.0
    w = jnp.asarray((amp * np.sin(a * x) + 0 * y)[None])
    h, dx = 0.1 / 4, min(2 * math.pi / 24, 3 * math.pi / 48)
    expected = amp / a * h / dx
    np.testing.assert_allclose(float(solver.courant_number(w)), expected, rtol=1e-12, atol=0)
    # linear in the amplitude, traced under jit
    got = jax.jit(solver.courant_number)(2 * w)
    np.testing.assert_allclose(float(got), 2 * expected, rtol=1e-12, atol=0)


def test_nonlinear_term_of_a_two_mode_flow(x64):
    # w = sin(x) + cos(2y): psi = sin(x) + cos(2y)/4, u = -sin(2y)/2, v = -cos(x),
    # u w_x + v w_y = -sin(2y) cos(x)/2 + 2 cos(x) sin(2y) = 1.5 cos(x) sin(2y).
    # This pins the signs of u, v and of the advection term, which the exact solutions
    # (where N = 0) and the budgets (invariant under a sign flip) cannot see.
    solver = NavierStokes2D(32, dt=0.1, **QUIET)
    y, x = solver.grid.meshgrid()
    w = jnp.asarray((np.sin(x) + np.cos(2 * y))[None])
    tendency = solver.from_spectral(solver.nonlinear(solver.to_spectral(w)))
    # Resolved product of resolved modes: exact up to FFT round-off.
    np.testing.assert_allclose(
        np.asarray(tendency)[0], -1.5 * np.cos(x) * np.sin(2 * y), rtol=0, atol=1e-13
    )


def test_nonlinear_term_uses_four_inverse_and_one_forward_fft():
    # One inverse transform per field: under vmap XLA:CPU ran a stacked (4, ...) batch of
    # transforms 1.9x slower (benchmarks/solvers.py, ns128 at batch 32).
    solver = NavierStokes2D(16, forcing_wavenumber=2)
    w_hat = solver.to_spectral(solver.initial_condition(jax.random.key(0)))
    ffts = _fft_equations(jax.make_jaxpr(solver.nonlinear)(w_hat).jaxpr)
    assert len(ffts) == 5, ffts
    assert [f.invars[0].aval.shape for f in ffts[:4]] == [(1, 16, 9)] * 4  # u, v, w_x, w_y
    assert ffts[4].invars[0].aval.shape == (1, 16, 16)  # the product


@pytest.mark.parametrize(
    ("num_points", "domain_length"), [(32, 2 * math.pi), ((24, 48), (2 * math.pi, 4 * math.pi))]
)
def test_laminar_kolmogorov_flow_is_steady(x64, num_points, domain_length):
    # u = U sin(k_f y), w = -U k_f cos(k_f y), U = A / (nu k_f^2 + alpha) balances the forcing
    # -A k_f cos(k_f y) exactly (N = 0). nu = 0.5 makes it linearly stable (Re = U / (nu k_f)
    # = 0.95, below the drag-free critical sqrt(2)), so round-off cannot grow either.
    amplitude, viscosity, drag, mode = 2.0, 0.5, 0.1, 2
    solver = NavierStokes2D(
        num_points,
        domain_length,
        viscosity=viscosity,
        drag=drag,
        forcing_amplitude=amplitude,
        forcing_wavenumber=mode,
        dt=0.5,
        num_substeps=2,
        initial_amplitude=0.1,
        precision="float64",
    )
    k_f = 2 * math.pi * mode / solver.grid.domain_length[0]
    speed = amplitude / (viscosity * k_f**2 + drag)
    # Same formula, same float64 operations: equal to the last bit or two.
    assert solver.laminar_velocity() == pytest.approx(speed, rel=1e-15, abs=0)
    y, x = solver.grid.meshgrid()
    w_laminar = (-speed * k_f * np.cos(k_f * y))[None]
    # The forcing alone: N(0) = f = -A k_f cos(k_f y) (pins the documented convention).
    forcing = solver.from_spectral(solver.nonlinear(jnp.zeros_like(solver.to_spectral(w_laminar))))
    np.testing.assert_allclose(
        np.asarray(forcing)[0], -amplitude * k_f * np.cos(k_f * y), rtol=0, atol=1e-13
    )
    w = np.asarray(_integrate(solver, jnp.asarray(w_laminar), 20))
    # Exact fixed point of the scheme: round-off only, 40 steps.
    np.testing.assert_allclose(w, w_laminar, rtol=0, atol=1e-12 * np.max(np.abs(w_laminar)))
    uv = np.asarray(solver.velocity(jnp.asarray(w)))
    np.testing.assert_allclose(uv[0], speed * np.sin(k_f * y), rtol=0, atol=1e-12 * speed)
    np.testing.assert_allclose(uv[1], 0.0, rtol=0, atol=1e-12 * speed)
    # From rest the flow relaxes onto it as exp(-(nu k_f^2 + alpha) t) <= exp(-21) = 8e-10
    # after 10 time units (k_f >= 2 here), plus round-off.
    w_from_rest = np.asarray(_integrate(solver, jnp.zeros_like(jnp.asarray(w_laminar)), 20))
    np.testing.assert_allclose(
        w_from_rest, w_laminar, rtol=0, atol=1e-8 * np.max(np.abs(w_laminar))
    )


def test_etdrk4_is_fourth_order_in_time(x64):
    # A random low-mode flow with forcing, viscosity and drag over t = 1 (it changes by
    # more than its own size); self-convergence: e(h) = |w_h - w_{h/2}| for four h.
    # Measured errors 6e-3 .. 1e-6, far above round-off; local slopes 4.04 .. 4.07.
    total_time = 1.0
    kwargs = dict(
        viscosity=0.01,
        drag=0.1,
        forcing_amplitude=0.5,
        initial_amplitude=2.0,
        initial_peak_wavenumber=2.0,
        num_substeps=1,
        precision="float64",
    )
    steps = np.array([16, 32, 64, 128, 256])
    w0 = NavierStokes2D(32, dt=total_time / steps[0], **kwargs).initial_condition(jax.random.key(3))
    runs = [
        np.asarray(_integrate(NavierStokes2D(32, dt=total_time / n, **kwargs), w0, int(n)))
        for n in steps
    ]
    assert np.max(np.abs(runs[-1] - np.asarray(w0))) > np.max(np.abs(np.asarray(w0)))
    errors = np.array([np.max(np.abs(a - b)) for a, b in zip(runs[:-1], runs[1:], strict=True)])
    slope = -np.polyfit(np.log(steps[:-1]), np.log(errors), 1)[0]
    assert 3.6 <= slope <= 4.4, (slope, errors)


def test_unforced_budgets_mean_vorticity_and_monotone_energy_decay(x64):
    # d E / dt = -2 nu Z - 2 alpha E and d Z / dt = -2 nu P - 2 alpha Z hold only if the
    # dealiased advection conserves E and Z exactly; integrated with Simpson's rule.
    viscosity, drag, dt = 0.01, 0.05, 0.025
    solver = NavierStokes2D(
        32,
        viscosity=viscosity,
        drag=drag,
        forcing_amplitude=0.0,
        dt=dt,
        num_substeps=1,
        initial_amplitude=2.0,
        initial_peak_wavenumber=2.0,
        precision="float64",
    )
    frames = rollout(solver, solver.initial_condition(jax.random.key(1)), 40)
    d = {k: np.asarray(v) for k, v in jax.vmap(solver.diagnostics)(frames).items()}
    energy, enstrophy, palinstrophy = d["kinetic_energy"], d["enstrophy"], d["palinstrophy"]
    t = np.arange(energy.size) * dt
    # The k = 0 mode sees a zero nonlinear term (exactly, by the antisymmetry of u . grad)
    # and starts at zero: only round-off of the 160 FFT round trips.
    np.testing.assert_allclose(d["mean_vorticity"], 0.0, rtol=0, atol=1e-14)
    assert np.all(np.diff(energy) < 0) and np.all(np.diff(enstrophy) < 0)
    rate_e = simpson(-2 * viscosity * enstrophy - 2 * drag * energy, x=t)
    rate_z = simpson(-2 * viscosity * palinstrophy - 2 * drag * enstrophy, x=t)
    # ETDRK4 and Simpson errors, both O(dt^4): measured 6e-7 (E) and 1e-5 (Z) relative
    # to the change; an error in the advection or the diagnostics shows at 1e-2 and up.
    np.testing.assert_allclose(energy[-1] - energy[0], rate_e, rtol=1e-5, atol=0)
    np.testing.assert_allclose(enstrophy[-1] - enstrophy[0], rate_z, rtol=1e-4, atol=0)
    assert np.max(d["max_vorticity"]) == pytest.approx(np.max(np.abs(frames)), rel=0, abs=0)


def _draws(solver: NavierStokes2D, seed: int, num: int) -> jax.Array:
    """``num`` initial conditions ``(num, 1, n_y, n_x)`` from ``fold_in(key(seed), i)``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(num))
    return jax.jit(jax.vmap(solver.initial_condition))(keys)


def test_energy_spectrum_sums_to_kinetic_energy(x64):
    solver = NavierStokes2D((24, 48), (2 * math.pi, 4 * math.pi), dt=0.01, precision="float64")
    w = _draws(solver, 2, 3)

    @jax.jit
    def measure(solver, w):
        # batched input (3, 1, 24, 48), one of its samples, and a pure eigenmode
        mode = jnp.asarray(_eigenmode(solver, 2.0, 1.0))
        return (
            solver.energy_spectrum(w),
            solver.energy_spectrum(w[1])[1],
            solver.energy_spectrum(mode)[1],
            solver.diagnostics(w)["kinetic_energy"],
        )

    (k, spectrum), single, mode, energy = measure(solver, w)
    # Parseval: equal up to summation round-off.
    np.testing.assert_allclose(np.sum(spectrum, axis=-1), energy, rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.diff(k), 0.5, rtol=1e-14, atol=0)  # dk = 2 pi / L_x
    # Same arithmetic batched or not: round-off only.
    np.testing.assert_allclose(single, spectrum[1], rtol=1e-13, atol=0)
    # One Laplacian eigenmode (|k| = sqrt(5) = 4.47 dk) puts all its energy in shell 4.
    assert int(np.argmax(mode)) == 4
    # Other shells hold FFT round-off squared only.
    np.testing.assert_allclose(np.delete(mode, 4), 0.0, rtol=0, atol=1e-24 * float(mode[4]))


def test_initial_condition_statistics(x64):
    solver = NavierStokes2D(64, dt=0.01, precision="float64")
    w = _draws(solver, 0, 16)
    assert w.shape == (16, 1, 64, 64)
    key3 = jax.random.fold_in(jax.random.key(0), 3)
    np.testing.assert_array_equal(w[3], solver.initial_condition(key3))  # reproducible

    @jax.jit
    def measure(solver, w):
        speed = jnp.linalg.norm(solver.velocity(w), axis=-3)
        pooled = (jnp.sqrt(jnp.mean(w**2)), jnp.sqrt(jnp.mean(speed**2)), jnp.max(speed))
        return jnp.mean(w, axis=(-2, -1)), pooled, solver.energy_spectrum(w)

    mean, (pooled_w, pooled_speed, max_speed), (k, spectrum) = measure(solver, w)
    np.testing.assert_allclose(mean, 0.0, rtol=0, atol=1e-13)  # k = 0 is zeroed: round-off
    # 16 draws with a per-draw rms spread of ~17%: the pooled rms has ~4% standard error,
    # 15% is about 3.5 sigma.
    np.testing.assert_allclose(pooled_w, solver.initial_amplitude, rtol=0.15, atol=0)
    np.testing.assert_allclose(pooled_speed, solver.initial_rms_speed(), rtol=0.15, atol=0)
    # The Courant check's a-priori bound covers the peak speed (measured max ~3.1 x rms).
    assert float(max_speed) < solver.velocity_bound()
    # The shell enstrophy spectrum k^2 E(k) peaks at initial_peak_wavenumber = 4.
    assert float(k[np.argmax(np.mean(spectrum, axis=0) * k**2)]) == 4.0


@pytest.mark.parametrize("enable_x64", [False, True])
def test_float32_in_float32_out(enable_x64):
    # float32 must hold with 64-bit JAX switched on too (no stray float64 promotion).
    with jax.enable_x64(enable_x64):
        solver = NavierStokes2D(16, forcing_wavenumber=2, dt=0.2)

        @jax.jit
        def run(solver, key):
            w = solver.initial_condition(key)
            out = solver.advance(w)
            return (
                w,
                out,
                solver.velocity(out),
                solver.diagnostics(out),
                solver.energy_spectrum(out),
            )

        w, out, uv, diagnostics, (k, spectrum) = run(solver, jax.random.key(0))
    assert w.dtype == out.dtype == uv.dtype == jnp.float32
    assert out.shape == (1, 16, 16) and uv.shape == (2, 16, 16)
    assert bool(jnp.all(jnp.isfinite(out)))
    assert all(v.dtype == jnp.float32 for v in diagnostics.values())
    assert k.dtype == jnp.float32 and spectrum.dtype == jnp.float32


def test_vmap_matches_a_loop(x64):
    solver = NavierStokes2D(32, forcing_wavenumber=2, dt=0.2, precision="float64")
    w = _draws(solver, 4, 3)
    advance = jax.jit(lambda solver, w: solver.advance(w))
    batched = jax.jit(jax.vmap(advance, in_axes=(None, 0)))(solver, w)
    looped = jnp.stack([advance(solver, wi) for wi in w])
    # Same arithmetic, batched FFT plans may sum in another order: round-off only.
    np.testing.assert_allclose(batched, looped, rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(w))))


def test_traces_once_across_physical_parameters():
    traces = []

    @jax.jit
    def run(solver, w):
        traces.append(1)
        return solver.advance(w)

    a = NavierStokes2D(16, forcing_wavenumber=2, viscosity=1e-3, drag=0.1)
    b = NavierStokes2D(16, forcing_wavenumber=2, viscosity=2e-3, drag=0.2, forcing_amplitude=0.5)
    w = a.initial_condition(jax.random.key(0))
    wa, wb = run(a, w), run(b, w)
    assert len(traces) == 1
    assert float(jnp.max(jnp.abs(wa - wb))) > 1e-3  # the parameters did reach the kernel


def test_unstable_step_is_refused_with_the_limit():
    # Default 64^2 flow: limit 1.5 dx / U_laminar = 1.5 (2 pi / 64) / 8.62 = 0.01708.
    with pytest.raises(ValueError, match=r"stability limit 0\.01708.*num_substeps >= 12"):
        NavierStokes2D(64, dt=0.2, num_substeps=11)
    NavierStokes2D(64, dt=0.2, num_substeps=12)
    # A strong initial condition raises the bound: 4 x its expected rms speed.
    strong = NavierStokes2D(64, dt=0.002, num_substeps=1, initial_amplitude=50.0)
    # The bound is computed as exactly this product.
    assert strong.velocity_bound() == 4 * strong.initial_rms_speed()
    with pytest.raises(ValueError, match="rms speed of the initial condition"):
        NavierStokes2D(64, dt=0.2, num_substeps=12, initial_amplitude=50.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(num_points=4), "num_points"),
        (dict(num_points=(32, 32, 32)), "num_points"),
        (dict(num_points=32.0), "num_points"),
        (dict(domain_length=-1.0), "domain_length"),
        (dict(viscosity=-1e-3), "viscosity"),
        (dict(drag=float("nan")), "drag"),
        (dict(forcing_amplitude=-1.0), "forcing_amplitude"),
        (dict(forcing_wavenumber=22), "forcing_wavenumber"),
        (dict(forcing_wavenumber=0), "forcing_wavenumber"),
        (dict(viscosity=0.0, drag=0.0), "without dissipation"),
        (dict(dt=0.0), "dt"),
        (dict(num_substeps=0), "num_substeps"),
        (dict(initial_amplitude=0.0), "initial_amplitude"),
        (dict(initial_peak_wavenumber=-4.0), "initial_peak_wavenumber"),
        (dict(precision="float16"), "precision"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        NavierStokes2D(**kwargs)


def test_wrong_state_shape_is_reported():
    solver = NavierStokes2D(16, forcing_wavenumber=2)
    with pytest.raises(ValueError, match=r"\(1, 16, 16\)"):
        solver.step(jnp.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match=r"\(1, 16, 16\)"):
        solver.energy_spectrum(jnp.zeros((1, 16, 8)))


def test_metadata_registry_and_config_round_trip():
    solver = build_solver("navier_stokes_2d", num_points=(16, 32), forcing_wavenumber=2)
    assert isinstance(solver, NavierStokes2D)
    assert solver.variables == ("vorticity",) and solver.units == {"vorticity": "1"}
    assert solver.long_names["vorticity"] == "relative vorticity"
    assert solver.grid.axes == ("y", "x") and solver.state_shape == (1, 16, 32)
    assert NavierStokes2D(**solver.config()).config() == solver.config()


def test_config_file_builds_the_default_solver():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG)
    solver = instantiate(cfg)
    assert isinstance(solver, NavierStokes2D)
    assert set(cfg) - {"_target_"} == set(solver.config())
    assert solver.config() == NavierStokes2D().config()
    out = solver.advance(solver.initial_condition(jax.random.key(0)))
    assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.slow
def test_turbulent_flow_at_the_courant_limit_stays_finite():
    # 128^2 default physics at the smallest num_substeps the check allows (h = 0.00833,
    # measured blow-up from h = 0.0175): 60 time units of turbulence stay finite and
    # turbulent (rms speed ~1.4, below the laminar 8.6).
    solver = NavierStokes2D(128, dt=0.2, num_substeps=24)
    with pytest.raises(ValueError, match="num_substeps >= 24"):
        NavierStokes2D(128, dt=0.2, num_substeps=23)
    frames = rollout(solver, solver.initial_condition(jax.random.key(7)), 300)
    assert bool(jnp.all(jnp.isfinite(frames)))
    energy = np.asarray(jax.vmap(solver.diagnostics)(frames[100:])["kinetic_energy"])
    laminar_energy = solver.laminar_velocity() ** 2 / 4  # mean of (U sin(k_f y))^2 / 2
    assert 0.3 < energy.mean() < 0.2 * laminar_energy  # measured ~1.0 vs 18.6
    assert energy.std() > 0.01 * energy.mean()  # not laminar: it fluctuates
