"""The hybrid runner with a real trained-shape Forecaster (not a fake) in the surrogate seat."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
from solvers import KuramotoSivashinsky, rollout
from surrogate.forecaster import ForecasterSpec
from surrogate.hybrid import (
    AlwaysSolver,
    AlwaysSurrogate,
    EveryK,
    HybridRunner,
    InvariantDrift,
    Threshold,
)
from surrogate.train import init_forecaster


@pytest.fixture(scope="module")
def pair():
    solver = KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=0.5, num_substeps=2)
    keys = jax.random.split(jax.random.key(3), 4)
    u0 = jax.vmap(solver.initial_condition)(keys)
    data = np.asarray(jax.vmap(lambda u: rollout(solver, u, 8))(u0))
    spec = ForecasterSpec.create(
        model_name="fno",
        model_kwargs={"width": 8, "modes": 4, "num_layers": 1},
        variables=solver.variables,
        units=dict(solver.units),
        grid=solver.grid.to_dict(),
        dt=solver.dt,
    )
    stats = datasets.statistics_from_arrays(data, solver.variables)
    return solver, init_forecaster(spec, stats, seed=0), jnp.asarray(data[:, 0])


def test_always_surrogate_is_the_forecaster_rollout(pair):
    solver, forecaster, x0 = pair
    res = HybridRunner(solver, forecaster, AlwaysSurrogate(), indicators=()).run(x0, 5)
    expected = jax.vmap(lambda u: rollout(forecaster, u, 5))(x0)
    assert res.states.dtype == np.float32 and res.states.shape == (4, 6, 1, 32)
    assert np.all(res.engine == 1)
    # The runner's chunk program and a plain scan apply the same network: float32 round-off
    # of reassociated sums, amplified little over 5 steps of an untrained (near-identity) net.
    np.testing.assert_allclose(res.states, expected, rtol=1e-5, atol=1e-5)


def test_always_solver_ignores_the_forecaster(pair):
    solver, forecaster, x0 = pair
    res = HybridRunner(solver, forecaster, AlwaysSolver(), indicators=()).run(x0, 4)
    expected = jax.vmap(lambda u: rollout(solver, u, 4))(x0)
    assert np.all(res.engine == 0)
    np.testing.assert_allclose(res.states, expected, rtol=1e-5, atol=1e-5)


def test_every_k_and_threshold_run_with_a_forecaster(pair):
    solver, forecaster, x0 = pair
    res = HybridRunner(solver, forecaster, EveryK(k=2), indicators=()).run(x0, 6)
    assert np.all(res.engine[:, 1::2] == 0) and np.all(res.engine[:, 0::2] == 1)
    # A mass-drift threshold of 0 rejects any surrogate step that moves the mean at all;
    # an infinite one accepts every step.
    mass = InvariantDrift(quantity="mass", relative=False)
    strict = HybridRunner(solver, forecaster, Threshold("mass_drift", 0.0), indicators=(mass,))
    loose = HybridRunner(solver, forecaster, Threshold("mass_drift", np.inf), indicators=(mass,))
    a, b = strict.run(x0, 4), loose.run(x0, 4)
    assert np.all(np.isin(b.engine, (1,)))
    drift = a.indicator_values["mass_drift"]
    assert np.all((a.engine == 1) == (drift <= 0.0))
    assert np.isfinite(a.states).all() and np.isfinite(b.states).all()
