"""Bring your own solver: solvers.from_step and solvers.from_exponax, alone (fast)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from solvers import StepSolver, from_exponax, from_step, rollout
from tests import helpers
from tests.datasets.dataset_helpers import hashed_uniform
from tests.helpers import DT, GRID, MODES, NUM_POINTS, VELOCITY, advect_step, advection, sine_init

solvers.trust_module(__name__)  # as a user's module would be: lambdas are still refused


# Linear advection u_t + c u_x = 0 (tests.helpers.advection): a spectral shift is exact.
def exact(amplitudes: np.ndarray, t: float) -> np.ndarray:
    """The exact solution from sine_init's amplitudes at time t (float64 numpy)."""
    x = GRID.coords()["x"]
    u = sum(a * np.sin(m * (x - VELOCITY * t)) for a, m in zip(amplitudes, MODES, strict=True))
    return u[None]


def test_from_step_matches_the_exact_solution_under_jit_and_vmap():
    solver = advection()
    keys = jnp.stack([jax.random.fold_in(jax.random.key(3), i) for i in range(3)])
    u0 = jax.vmap(solver.initial_condition)(keys)
    traj = jax.jit(jax.vmap(lambda u: rollout(solver, u, 10)))(u0)
    assert traj.shape == (3, 11, 1, NUM_POINTS) and traj.dtype == jnp.float32
    amplitudes = np.asarray(jax.vmap(lambda k: hashed_uniform(k, (len(MODES),)))(keys), float)
    for b in range(3):
        want = np.stack([exact(amplitudes[b], n * DT) for n in range(11)])
        # float32 FFT round trip per step, amplitudes <= 3: ~1e-6 per step over 10 steps.
        np.testing.assert_allclose(traj[b], want, rtol=0, atol=2e-5)
    # jit of the solver as an argument equals the eager call; vmap equals a loop.
    eager = solver(u0[0])
    np.testing.assert_array_equal(jax.jit(lambda s, u: s(u))(solver, u0[0]), eager)
    np.testing.assert_array_equal(jax.vmap(solver)(u0)[0], eager)
    assert solver.diagnostics(u0[0])["mass"].shape == ()


def test_from_step_metadata_and_substeps():
    solver = advection(num_substeps=2, dt=2 * DT)
    assert solver.dt == 2 * DT and solver.internal_dt == DT
    assert solver.state_shape == (1, NUM_POINTS) and solver.variables == ("u",)
    assert solver.units == {"u": "m s-1"} and solver.long_names == {"u": "advected field"}
    u = solver.initial_condition(jax.random.key(0))
    # fori_loop (compiled) against two eager calls: fusion may differ by an ulp.
    np.testing.assert_allclose(solver.advance(u), advect_step(advect_step(u)), rtol=0, atol=1e-6)
    assert solver.grid is GRID and solver.time_units == "s" and solver.name == "own_advection"


def test_config_rebuilds_the_same_solver_from_function_names():
    solver = advection()
    cfg = solver.config()
    where = helpers.__name__  # the module that defines them
    assert cfg["step_fn"] == f"{where}:advect_step" and cfg["init_fn"] == f"{where}:sine_init"
    assert solver.rebuild_problems() == []
    again = StepSolver(**cfg)
    assert again.config() == cfg
    u = solver.initial_condition(jax.random.key(1))
    np.testing.assert_array_equal(again.initial_condition(jax.random.key(1)), u)
    np.testing.assert_array_equal(again(u), solver(u))


def test_closures_are_recorded_but_flagged_as_not_rebuildable():
    scale = 0.5
    solver = from_step(lambda u: u * scale, sine_init, variables=("u",), grid=GRID, dt=DT)
    problems = solver.rebuild_problems()
    assert len(problems) == 1 and "closure or a lambda" in problems[0]
    with pytest.raises(solvers.UntrustedCodeError, match="step_fn"):
        StepSolver(**solver.config())


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        (
            {"init_fn": lambda key: jnp.zeros((NUM_POINTS,))},
            ValueError,
            r"init_fn\(key\) returned shape \(32,\), expected state_shape \(1, 32\) = "
            r"\(len\(variables\), \*grid.shape\)",
        ),
        (
            {"step_fn": lambda u: u[..., ::2]},
            ValueError,
            r"step_fn\(state\) returned shape \(1, 16\) .* must preserve",
        ),
        ({"step_fn": 3.0}, TypeError, "step_fn must be callable"),
        ({"units": {"v": "1"}}, ValueError, r"units must have exactly the keys \['u'\]"),
        ({"name": "burgers"}, ValueError, "'burgers' is a registered solver"),
        ({"dt": -1.0}, ValueError, "dt must be a finite number > 0"),
        ({"variables": "u"}, TypeError, "variables must be a sequence"),
    ],
)
def test_from_step_names_what_is_wrong(kw, error, match):
    args = {"step_fn": advect_step, "init_fn": sine_init, "variables": ("u",), "grid": GRID}
    args = {**args, "dt": DT, **kw}
    with pytest.raises(error, match=match):
        from_step(args.pop("step_fn"), args.pop("init_fn"), **args)


# ---- exponax -----------------------------------------------------------------------------
exponax = pytest.importorskip("exponax")


@pytest.mark.standard_promotion  # exponax multiplies float32 arrays by 1j
def test_from_exponax_reads_grid_and_dt_and_steps_like_the_stepper():
    stepper = exponax.stepper.Diffusion(1, 3.0, 32, 0.05, diffusivity=0.1)
    ic = exponax.ic.RandomTruncatedFourierSeries(1, cutoff=4)
    solver = from_exponax(stepper, variables=("c",), ic=ic, num_substeps=2, length_units="m")
    assert solver.grid.num_points == (32,) and solver.grid.domain_length == (3.0,)
    assert solver.grid.length_units == "m" and solver.dt == pytest.approx(0.1)
    assert solver.name == "exponax_diffusion" and solver.state_shape == (1, 32)
    # exponax's grid is ours: point j at j L / N.
    np.testing.assert_allclose(
        solver.grid.coords()["x"], np.asarray(exponax.make_grid(1, 3.0, 32))[0], rtol=0, atol=1e-6
    )
    u0 = solver.initial_condition(jax.random.key(0))
    np.testing.assert_array_equal(u0, ic(32, key=jax.random.key(0)))
    # The grid size stays a static Python int, so the solver is a jit argument.
    out = jax.jit(lambda s, u: s.advance(u))(solver, u0)
    np.testing.assert_allclose(out, stepper(stepper(u0)), rtol=1e-6, atol=1e-6)
    assert solver.config()["step_fn"].startswith("<exponax.stepper")
    assert "callable object" in solver.rebuild_problems()[0]
    with pytest.raises(ValueError, match="cannot be rebuilt from its name"):
        StepSolver(**solver.config())


@pytest.mark.standard_promotion  # exponax multiplies float32 arrays by 1j
def test_from_exponax_refuses_what_is_not_a_stepper():
    with pytest.raises(TypeError, match="not an exponax stepper: it lacks"):
        from_exponax(advect_step, variables=("u",), ic=sine_init)
    stepper = exponax.stepper.Diffusion(1, 3.0, 32, 0.05)
    with pytest.raises(ValueError, match=r"must name the stepper's 1 channel"):
        from_exponax(stepper, variables=("u", "v"), ic=sine_init)
