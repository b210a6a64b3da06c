"""Every registered solver, and ``rollout``, refuse states they would silently truncate
(int, bool, complex) and step counts ``lax.scan`` would mangle (2.5, -1, True)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from solvers import build_solver, rollout

SMALL = 16  # points per axis: the checks are static, the grid size is irrelevant


def _small(name: str) -> solvers.Solver:
    """A registered solver on a small grid (the grid keyword differs between solvers)."""
    cls = solvers.get_solver_class(name)
    if "num_points" in inspect.signature(cls.__init__).parameters:
        return build_solver(name, num_points=SMALL)
    return build_solver(name)


@pytest.fixture(params=solvers.available())
def solver(request):
    return _small(request.param)


def _entry_points(solver):
    cls = type(solver)
    return {
        "step": lambda s: solver.step(s),
        "advance": lambda s: solver.advance(s),
        "jit(advance)": lambda s: jax.jit(cls.advance)(solver, s),
        "vmap(advance)": lambda s: jax.vmap(solver.advance)(s[None]),
        "rollout": lambda s: rollout(solver, s, 3),
    }


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64"])
def test_every_solver_refuses_a_non_floating_state(solver, dtype):
    state = jnp.ones(solver.state_shape, dtype)
    for where, call in _entry_points(solver).items():
        with pytest.raises(TypeError, match=rf"state has dtype {dtype}, expected a real floating"):
            call(state)
        # The message names the conversion that fixes it, except for rollout's generic check.
        if where != "rollout":
            with pytest.raises(TypeError, match=rf"astype\('{solver.precision}'\)"):
                call(state)


def test_every_solver_still_steps_its_own_dtype(solver):
    state = solver.initial_condition(jax.random.key(0))
    frames = rollout(solver, state, 1)
    assert frames.dtype == state.dtype == solver.dtype
    assert frames.shape == (2, *solver.state_shape)


def test_rollout_refuses_a_non_floating_state_for_any_stepper():
    identity = jax.tree_util.Partial(lambda s: s)
    with pytest.raises(TypeError, match=r"rollout: state has dtype int32"):
        rollout(identity, jnp.arange(4, dtype=jnp.int32), 2)
    assert rollout(identity, jnp.zeros(4), 2).shape == (3, 4)


@pytest.mark.parametrize("num_steps", [2.5, -1, True, np.float32(3.0), "2"])
def test_rollout_refuses_a_bad_step_count(num_steps):
    solver = _small("kuramoto_sivashinsky")
    u0 = solver.initial_condition(jax.random.key(0))
    with pytest.raises(ValueError, match=r"rollout: num_steps must be an int >= 0"):
        rollout(solver, u0, num_steps)


def test_rollout_accepts_zero_and_numpy_integer_step_counts():
    solver = _small("kuramoto_sivashinsky")
    u0 = solver.initial_condition(jax.random.key(0))
    assert rollout(solver, u0, 0).shape == (1, *solver.state_shape)
    assert rollout(solver, u0, 0, include_initial=False).shape == (0, *solver.state_shape)
    np.testing.assert_array_equal(rollout(solver, u0, np.int64(2)), rollout(solver, u0, 2))
