"""AdvectionDiffusion against exact Fourier-mode solutions; invariants; argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import AdvectionDiffusion, build_solver, rollout


def _mode(solver: AdvectionDiffusion, modes: tuple[int, ...], t: float) -> np.ndarray:
    """Exact solution ``exp(-D |k|^2 t) cos(k . (x - a t))`` for the mode ``k = 2 pi m / L``."""
    grid = solver.grid
    k = [2 * np.pi * m / length for m, length in zip(modes, grid.domain_length, strict=True)]
    phase = sum(
        ki * (xi - a * t) for ki, xi, a in zip(k, grid.meshgrid(), solver.velocity, strict=True)
    )
    k2 = sum(ki**2 for ki in k)
    return (np.exp(-solver.diffusivity * k2 * t) * np.cos(phase))[None]


CASES = [
    # (num_points, domain_length, velocity, modes)
    (32, 2.0, 0.7, (3,)),
    ((16, 24), (1.0, 1.5), (-0.4, 1.3), (2, 5)),
]


@pytest.mark.parametrize(
    ("num_points", "domain_length", "velocity", "modes"), CASES, ids=["1d", "2d"]
)
def test_fourier_mode_is_exact_in_float64(x64, num_points, domain_length, velocity, modes):
    solver = AdvectionDiffusion(
        num_points=num_points,
        domain_length=domain_length,
        velocity=velocity,
        diffusivity=1e-3,
        dt=0.3,
        num_substeps=2,
        precision="float64",
    )
    n = 10
    frames = rollout(solver, jnp.asarray(_mode(solver, modes, 0.0)), n)
    assert frames.dtype == jnp.float64
    for i in range(n + 1):
        # Exact in time; only round-off of 2 FFTs and 2 * i products of O(1) numbers.
        np.testing.assert_allclose(
            frames[i], _mode(solver, modes, i * solver.dt), rtol=0, atol=1e-12
        )


@pytest.mark.parametrize(
    ("num_points", "domain_length", "velocity", "modes"), CASES, ids=["1d", "2d"]
)
def test_fourier_mode_in_float32_to_dtype_tolerance(num_points, domain_length, velocity, modes):
    solver = AdvectionDiffusion(
        num_points=num_points,
        domain_length=domain_length,
        velocity=velocity,
        diffusivity=1e-3,
        dt=0.3,
        num_substeps=2,
    )
    n = 10
    u0 = jnp.asarray(_mode(solver, modes, 0.0), jnp.float32)
    out = rollout(solver, u0, n)[-1]
    assert out.dtype == jnp.float32
    eps = float(jnp.finfo(jnp.float32).eps)
    # Each of the n * num_substeps products by a float32 exp(hL) adds ~eps relative error
    # (coefficient rounding plus the product); the FFT pair adds ~log2(size) eps. Factor 2
    # margin; the mode's amplitude is <= 1.
    num_products = n * solver.num_substeps
    tol = 2 * eps * (num_products + np.log2(np.prod(solver.grid.num_points)))
    np.testing.assert_allclose(out, _mode(solver, modes, n * solver.dt), rtol=0, atol=tol)


@pytest.mark.parametrize("num_points", [48, (16, 20)], ids=["1d", "2d"])
def test_mass_is_conserved_to_round_off_and_variance_decays(x64, num_points):
    velocity = 0.9 if isinstance(num_points, int) else (0.5, -1.1)
    solver = AdvectionDiffusion(
        num_points=num_points,
        velocity=velocity,
        diffusivity=2e-3,
        initial_mean=0.8,
        precision="float64",
    )
    frames = rollout(solver, solver.initial_condition(jax.random.key(1)), 20)
    diags = jax.vmap(solver.diagnostics)(frames)
    # The k = 0 mode is multiplied by exp(0) = 1 exactly: mass changes only by the
    # round-off of re-summing O(1) values.
    np.testing.assert_allclose(diags["mass"], 0.8, rtol=0, atol=1e-14)
    assert np.all(np.diff(np.asarray(diags["variance"])) < 0)


def test_pure_advection_translates_exactly_by_whole_cells(x64):
    # a * dt = 3 cells: the state is rolled by 3 grid points, to round-off.
    solver = AdvectionDiffusion(
        num_points=40,
        domain_length=1.0,
        velocity=3 / 40 / 0.1,
        diffusivity=0.0,
        dt=0.1,
        precision="float64",
    )
    c0 = solver.initial_condition(jax.random.key(2))
    np.testing.assert_allclose(solver.advance(c0), jnp.roll(c0, 3, axis=-1), rtol=0, atol=1e-13)


def test_substeps_do_not_change_the_exact_answer(x64):
    kw = dict(num_points=(12, 16), velocity=(0.3, 0.2), dt=0.5, precision="float64")
    one = AdvectionDiffusion(**kw, num_substeps=1)
    many = AdvectionDiffusion(**kw, num_substeps=7)
    c0 = one.initial_condition(jax.random.key(0))
    # Both are exact; products of 7 exponentials differ from one by a few ulps.
    np.testing.assert_allclose(many.advance(c0), one.advance(c0), rtol=0, atol=1e-13)


def test_initial_condition_statistics_and_metadata():
    solver = AdvectionDiffusion(num_points=(32, 32), velocity=(0.0, 1.0), initial_mean=2.0)
    c = jax.vmap(solver.initial_condition)(jax.random.split(jax.random.key(0), 64))
    assert c.shape == (64, 1, 32, 32) and c.dtype == jnp.float32
    # Mean added to a zero-mean field: exact up to float32 round-off of O(2) values.
    np.testing.assert_allclose(c.mean(axis=(-2, -1)), 2.0, rtol=0, atol=1e-5)
    assert solver.grid.axes == ("y", "x")
    assert solver.variables == ("c",) and solver.long_names["c"] == "tracer concentration"
    assert AdvectionDiffusion().grid.axes == ("x",)


def test_config_round_trips_and_registry_builds():
    solver = build_solver(
        "advection_diffusion", num_points=[16, 8], domain_length=2.0, velocity=[1.0, -2.0]
    )
    assert solver.grid.domain_length == (2.0, 2.0)
    assert AdvectionDiffusion(**solver.config()).config() == solver.config()
    one_d = AdvectionDiffusion(num_points=16)
    assert AdvectionDiffusion(**one_d.config()).config() == one_d.config()


def test_zero_velocity_does_not_change_the_trace():
    traces = []

    @jax.jit
    def run(s, c):
        traces.append(1)
        return s.advance(c)

    moving = AdvectionDiffusion(num_points=16, velocity=1.0)
    still = AdvectionDiffusion(num_points=16, velocity=0.0, diffusivity=0.1)
    c0 = moving.initial_condition(jax.random.key(0))
    run(moving, c0)
    run(still, c0)
    assert len(traces) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_points=3), "num_points"),
        (dict(num_points=(8, 8, 8)), "num_points"),
        (dict(num_points=(8, 8), velocity=1.0), "velocity"),
        (dict(num_points=(8, 8), velocity=(1.0, 2.0, 3.0)), "velocity"),
        (dict(num_points=(8, 8), velocity=(1.0, 2.0), domain_length=(1.0, -1.0)), "domain_length"),
        (dict(velocity=float("nan")), "velocity"),
        (dict(diffusivity=-1.0), "diffusivity"),
        (dict(dt=0.0), "dt"),
        (dict(num_substeps=0), "num_substeps"),
        (dict(initial_length_scale=-0.1), "initial_length_scale"),
        (dict(precision="float16"), "precision"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdvectionDiffusion(**kwargs)
