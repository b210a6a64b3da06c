"""The stepper contract: every solver and learned stepper satisfies it; one compatibility check."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from solvers import (
    AdvectionDiffusion,
    Burgers,
    KuramotoSivashinsky,
    Lorenz96,
    NavierStokes2D,
    ShallowWater2D,
    from_step,
)
from solvers.grid import Grid
from solvers.resolution import Resampled
from solvers.stepper import (
    HasCourantNumber,
    HasDiagnostics,
    Rebuildable,
    Stepper,
    check_compatible,
    check_stepper,
    mismatches,
)
from surrogate.forecaster import ForecasterSpec, Normalization
from surrogate.train import init_forecaster
from tests.helpers import make_spec

SOLVERS = [
    lambda: KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=0.5, num_substeps=2),
    lambda: Burgers(num_points=32, viscosity=0.1, dt=0.1, num_substeps=2),
    lambda: AdvectionDiffusion(num_points=32, dt=0.02),
    lambda: Lorenz96(num_sites=16),
    lambda: NavierStokes2D(num_points=16, dt=0.25, num_substeps=4),
    lambda: ShallowWater2D(num_points=16, dt=0.1, num_substeps=2),
]


def _forecaster(solver, **spec_kw):
    d = {**make_spec(solver, width=4, modes=2).to_dict(), **spec_kw}
    c = len(solver.variables)
    stats = Normalization(*(jnp.ones(c) if i % 2 else jnp.zeros(c) for i in range(4)))
    return init_forecaster(ForecasterSpec.from_dict(d), stats)


@pytest.mark.parametrize("make", SOLVERS)
def test_every_solver_is_a_rebuildable_stepper_with_diagnostics(make):
    solver = make()
    assert isinstance(solver, Stepper) and isinstance(solver, HasDiagnostics)
    assert isinstance(solver, Rebuildable)
    check_stepper("test", solver)
    assert solver.state_shape == (len(solver.variables), *solver.grid.num_points)
    assert mismatches(solver, type(solver)(**solver.config())) == []


def test_learned_and_wrapped_steppers_keep_the_contract():
    ks = SOLVERS[0]()
    f = _forecaster(
        ks, long_names={"u": "velocity"}, time_units="s"
    )  # metadata travels with the spec
    assert isinstance(f, Stepper) and not isinstance(f, Rebuildable)
    assert (f.units, f.long_names, f.time_units) == ({"u": "1"}, {"u": "velocity"}, "s")
    assert isinstance(Resampled(ks, (16,)), Stepper)
    step = from_step(
        lambda u: u,
        lambda key: jnp.zeros((1, 8)),
        variables=("u",),
        dt=1.0,
        grid=Grid((8,), (1.0,), ("x",)),
        units={"u": "1"},
    )
    assert isinstance(step, Stepper)
    assert isinstance(NavierStokes2D(num_points=16, dt=0.25, num_substeps=4), HasCourantNumber)


def test_a_spec_written_before_long_names_were_recorded_still_loads():
    ks = SOLVERS[0]()
    d = _forecaster(ks).spec.to_dict()
    del d["long_names"], d["time_units"]
    spec = ForecasterSpec.from_dict(d)
    assert spec.long_names == {"u": "u"} and spec.time_units == "1"


def test_check_stepper_names_what_is_missing():
    class Half:
        dt, variables = 1.0, ("u",)

        def __call__(self, state):
            return state

    with pytest.raises(
        TypeError, match=r"test: solver Half lacks units, long_names, time_units, grid, state_shape"
    ):
        check_stepper("test", Half(), "solver")


def test_mismatches_on_hand_cases():
    a = {"variables": ("u",), "grid": Grid((32,), (22.0,), ("x",)), "dt": 0.5}
    b = {**a, "grid": Grid((16,), (22.0,), ("x",))}
    assert mismatches(a, b) == ["grid num_points (32,) != (16,)"]
    assert mismatches(a, b, grid="domain") == []  # a ladder rung: same domain, other grid
    c = {"variables": ("v",), "grid": Grid((32,), (11.0,), ("x",)), "dt": 0.25}
    assert mismatches(a, c, b_label="trained ") == [
        "variables ('u',) != trained ('v',)",
        "grid domain_length (22.0,) != trained (11.0,)",
        "dt 0.5 != trained 0.25",
    ]
    # dt through JSON: equal to 1e-9 relative
    assert mismatches(a, {**a, "dt": 0.5 * (1 + 1e-12)}) == []
    with pytest.raises(
        ValueError, match=r"front: learned does not match reference: dt 0.5 != 0.25"
    ):
        check_compatible("front", a, {**a, "dt": 0.25}, names=("learned", "reference"))


def test_forecaster_refuses_a_solver_unlike_its_training_data():
    ks = SOLVERS[0]()
    f = _forecaster(ks)
    f.check_solver(ks)
    other = KuramotoSivashinsky(num_points=64, domain_length=22.0, dt=0.5, num_substeps=2)
    with pytest.raises(ValueError, match=r"grid num_points \(64,\) != trained \(32,\)"):
        f.check_solver(other)
    np.testing.assert_array_equal(f(jnp.zeros((1, 32))).shape, (1, 32))
