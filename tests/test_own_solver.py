"""Bring your own solver through the Python API: clear errors, provenance, and the whole
chain (generate, validate, train, evaluate, hybrid runner) with an exponax stepper."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
from solvers import Grid, from_step
from solvers.base import Solver
from surrogate.hybrid import CoarseSolverCheck, EveryK, HybridRunner, Threshold
from surrogate.hybrid import chunk as chunk_module
from tests.helpers import GRID, advection, sine_init, spec_for_dataset

TINY = {"num_trajectories": 2, "num_frames": 3, "trajectories_per_shard": 2, "progress": False}


class Plain:
    """A solver-shaped object that is not a pytree."""

    name, variables, units, long_names = "plain", ("u",), {"u": "1"}, {"u": "u"}
    grid, dt, precision = GRID, 0.1, "float32"

    def config(self):
        return {}

    def initial_condition(self, key):
        return jnp.zeros((1, 32))

    def advance(self, state):
        return state

    __call__ = advance


class NoDt(Solver):
    """A Solver subclass whose __init__ forgets _dt."""

    name, variables, units, long_names = "no_dt", ("u",), {"u": "1"}, {"u": "u"}
    _static_fields = ("grid", "num_substeps", "precision")

    def __init__(self):
        self._set(grid=GRID, num_substeps=1, precision="float32")

    def config(self):
        return {}

    def initial_condition(self, key):
        return jnp.zeros(self.state_shape)

    def step(self, state):
        return state


class StringLeaf(NoDt):
    """``precision`` listed as a traced leaf by mistake."""

    name = "string_leaf"
    _dynamic_fields = ("_dt", "precision")
    _static_fields = ("grid", "num_substeps")

    def __init__(self):
        self._set(grid=GRID, num_substeps=1, precision="float32", _dt=0.1)


def test_a_plain_object_is_refused_with_the_contract(tmp_path):
    with pytest.raises(
        TypeError, match=r"solver must be a JAX pytree \(e.g. a subclass of solvers"
    ):
        datasets.generate(Plain(), tmp_path / "d", **TINY)
    with pytest.raises(TypeError, match="HybridRunner: solver must be a JAX pytree"):
        HybridRunner(Plain(), advection(), EveryK(2))
    assert not (tmp_path / "d").exists()


def test_a_missing_dt_names_the_attribute_and_the_fix(tmp_path):
    with pytest.raises(TypeError, match=r"no attribute 'dt' \(NoDt.dt: .*self._set\(_dt=dt"):
        datasets.generate(NoDt(), tmp_path / "d", **TINY)
    with pytest.raises(
        TypeError, match=r"solver has no 'dt' attribute \(NoDt.dt: .*_dynamic_fields"
    ):
        HybridRunner(NoDt(), advection(), EveryK(2))
    with pytest.raises(TypeError, match=r"leaf .precision of type str, which jit cannot trace"):
        datasets.generate(StringLeaf(), tmp_path / "d", **TINY)


def test_script_functions_warn_at_generation_and_validate_takes_the_solver(tmp_path, caplog):
    solver = from_step(lambda u: jnp.roll(u, 1, -1), sine_init, variables=("u",), grid=GRID, dt=0.1)
    with caplog.at_level(logging.WARNING, logger="datasets"):
        out = datasets.generate(solver, tmp_path / "d", **TINY)
    assert "step_fn" in caplog.text and "closure or a lambda" in caplog.text
    assert "datasets.validate(path, solver=" in caplog.text
    refused = datasets.validate(out)
    assert not refused.passed
    assert "datasets.validate(path, solver=...)" in str(refused.issues("accuracy")[0])
    report = datasets.validate(out, solver=solver)
    assert report.passed, str(report)
    other = from_step(lambda u: u, sine_init, variables=("u",), grid=GRID, dt=0.2)
    wrong = datasets.validate(out, solver=other)
    assert "is not the recorded one" in str(wrong.issues("accuracy")[0])


def test_importable_step_functions_are_rebuilt_by_validation(tmp_path):
    out = datasets.generate(advection(), tmp_path / "d", **TINY)
    report = datasets.validate(out)  # rebuilt from the recorded function names
    assert report.passed, str(report)
    assert "['mass']" in " ".join(report.checks["accuracy"].notes)


def test_coarse_solver_check_names_what_a_wrapped_solver_lacks():
    with pytest.raises(
        ValueError,
        match=r"cannot build a coarse StepSolver: .*config\(\) has no 'num_points'.*coarse_solver=",
    ):
        HybridRunner(
            advection(), advection(), Threshold("coarse_check", 1.0), [CoarseSolverCheck()]
        )


# ---- a runner solver with int fields (equinox) -----------------------------------------
eqx = pytest.importorskip("equinox")


class IntFields(eqx.Module):
    """Like an exponax stepper: grid size as a Python int, used as a shape."""

    coef: jax.Array
    num_points: int
    dt: float
    variables: tuple
    grid: Grid

    units = property(lambda self: {"u": "1"})
    long_names = property(lambda self: {"u": "u"})
    time_units = "1"
    state_shape = property(lambda self: (1, self.num_points))

    def __call__(self, state):
        return jnp.roll(state.reshape(1, self.num_points), 1, axis=-1) * self.coef


def test_runner_keeps_int_fields_static_and_traces_once():
    def make(c):
        return IntFields(jnp.asarray(c, jnp.float32), 32, 0.1, ("u",), GRID)

    x0 = jnp.asarray(np.random.default_rng(0).standard_normal((2, 1, 32)), jnp.float32)
    runner = HybridRunner(make(1.0), make(0.5), EveryK(2), chunk_size=4)
    res = runner.run(x0, 4)
    # Steps 1 and 3 the surrogate (roll, halve), steps 2 and 4 the solver (roll).
    want = np.roll(np.asarray(x0), 4, axis=-1) * 0.25
    np.testing.assert_array_equal(res.states[:, -1], want)
    traces = chunk_module.TRACE_COUNT["chunk"]
    HybridRunner(make(1.0), make(0.25), EveryK(2), chunk_size=4).run(x0, 4)
    assert chunk_module.TRACE_COUNT["chunk"] == traces  # a new coefficient: no retrace


# ---- the whole chain with an exponax stepper -----------------------------------------------
exponax = pytest.importorskip("exponax")


@pytest.mark.integration
@pytest.mark.standard_promotion  # exponax multiplies float32 arrays by 1j
def test_exponax_solver_generates_trains_evaluates_and_runs_hybrid(tmp_path):
    from solvers import from_exponax
    from surrogate.evaluate import evaluate
    from surrogate.train import TrainConfig, init_forecaster, train

    stepper = exponax.stepper.Advection(1, 1.0, 32, 0.02, velocity=1.0)
    ic = exponax.ic.RandomTruncatedFourierSeries(1, cutoff=3)
    solver = from_exponax(stepper, variables=("u",), ic=ic, units={"u": "K"}, num_substeps=2)
    path = datasets.generate(
        solver,
        tmp_path / "data",
        num_trajectories=8,
        num_frames=6,
        trajectories_per_shard=4,
        batch_size=4,
        splits={"train": 0.5, "val": 0.25, "test": 0.25},
        progress=False,
    )
    assert datasets.validate(path, solver=solver).passed
    info = datasets.dataset_info(path)
    assert info["dt"] == pytest.approx(0.04) and info["grid"]["num_points"] == [32]
    loader = datasets.WindowLoader(path, "train", batch_size=4)
    spec = spec_for_dataset(info)
    cfg = TrainConfig(
        num_steps=3,
        batch_size=4,
        warmup_steps=1,
        log_every=1,
        checkpoint_every=0,
        validate_every=0,
    )
    result = train(
        init_forecaster(spec, loader.statistics), loader, cfg, tmp_path / "train", progress=False
    )
    assert all(np.isfinite(m["loss"]) for m in result.metrics if "loss" in m)
    test = datasets.load_trajectories(path, "test")
    scores = evaluate(
        result.forecaster,
        test,
        statistics=datasets.load_statistics(path),
        solver=solver,
        baselines=("persistence",),
        batch_size=2,
    )
    assert "surrogate" in scores["model"].values
    truth = np.asarray(test)  # (N, T, C, x)
    runner = HybridRunner(solver, result.forecaster, EveryK(2), chunk_size=4)
    res = runner.run(jnp.asarray(truth[:, 0]), 5, reference=truth)
    solver_steps = (np.arange(5) + 1) % 2 == 0
    assert np.all(res.engine[:, solver_steps] == 0) and np.all(res.engine[:, ~solver_steps] == 1)
    assert np.all(np.isfinite(res.states))
