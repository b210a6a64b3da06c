"""The threshold sweep exists once: ``sweep_runs`` reruns the hybrid per threshold,
``sweep_thresholds`` tabulates those runs, and the pipeline's hybrid stage scores them.

The problem is pure advection with a surrogate inflating the variance by 1 % per step, so
the variance-drift indicator ``1.01^n - 1`` crosses a threshold at a known step.
"""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from solvers import AdvectionDiffusion, rollout
from surrogate.hybrid import (
    AlwaysSolver,
    HybridRunner,
    InvariantDrift,
    Threshold,
    sweep_runs,
    sweep_thresholds,
)
from tests.helpers import Scaled

NUM_STEPS = 17
THRESHOLDS = (0.005, 0.05, 0.5)


@pytest.fixture(scope="module")
def advection():
    """Pure advection: the variance is conserved to round-off, so drift is exact."""
    return AdvectionDiffusion(num_points=32, velocity=0.7, diffusivity=0.0, dt=0.05)


@pytest.fixture(scope="module")
def states(advection):
    return jax.vmap(advection.initial_condition)(jax.random.split(jax.random.key(1), 3))


@pytest.fixture(scope="module")
def runner(advection):
    return HybridRunner(
        advection,
        Scaled(advection, math.sqrt(1.01)),
        Threshold("variance_drift", 0.05),
        (InvariantDrift("variance"),),
        chunk_size=7,
    )


def test_sweep_runs_are_the_runs_with_each_threshold(runner, states, monkeypatch):
    calls = []
    run = HybridRunner.run
    monkeypatch.setattr(
        HybridRunner, "run", lambda self, *a, **k: calls.append(1) or run(self, *a, **k)
    )
    sweep = sweep_runs(runner, states, NUM_STEPS, THRESHOLDS, check_finite=False)
    assert calls == []  # nothing runs before the iterator is read
    got = list(sweep)
    assert [t for t, _ in got] == list(THRESHOLDS)
    assert all(type(t) is float for t, _ in got)
    for value, res in got:
        assert list(res.config["policy"]["threshold"]) == [value]
        alone = runner.with_policy(Threshold("variance_drift", value)).run(states, NUM_STEPS)
        assert np.array_equal(res.engine, alone.engine)
        assert np.array_equal(res.states, alone.states)  # same program, same inputs: bitwise
    # 1.01^n - 1 crosses 0.005 at n = 1, 0.05 at n = 5 and 0.5 never within 17 steps.
    rollbacks = [res.engine_counts()["rollback"] for _, res in got]
    assert rollbacks == [3 * 17, 3 * 3, 0]


def test_sweep_runs_keeps_the_other_thresholds(advection, states):
    runner = HybridRunner(
        advection,
        Scaled(advection, math.sqrt(1.01)),
        Threshold(("variance_drift", "mass_drift"), (0.05, 0.25)),
        (InvariantDrift("variance"), InvariantDrift("mass")),
    )
    [(value, res)] = list(sweep_runs(runner, states, 3, [0.5], indicator_name="variance_drift"))
    assert value == 0.5
    assert list(res.config["policy"]["threshold"]) == [0.5, 0.25]


def test_sweep_thresholds_tabulates_the_sweep_runs(runner, states, advection):
    reference = np.asarray(jax.vmap(lambda s: rollout(advection, s, NUM_STEPS))(states))
    ds = sweep_thresholds(runner, states, NUM_STEPS, THRESHOLDS, reference=reference)
    runs = [
        res for _, res in sweep_runs(runner, states, NUM_STEPS, THRESHOLDS, reference=reference)
    ]
    np.testing.assert_array_equal(ds["threshold"], THRESHOLDS)
    np.testing.assert_array_equal(ds["rollbacks"], [r.engine_counts()["rollback"] for r in runs])
    np.testing.assert_array_equal(ds["solver_fraction"], [r.solver_fraction for r in runs])
    np.testing.assert_array_equal(ds["rmse_c"], [np.mean(r.rmse["c"][:, -1]) for r in runs])


@pytest.mark.parametrize(
    ("policy", "indicators", "name", "match"),
    [
        (AlwaysSolver(), (), None, r"sweep_runs: policy AlwaysSolver has no thresholds to sweep"),
        (
            Threshold("variance_drift", 0.05),
            (InvariantDrift("variance"),),
            "mass_drift",
            r"sweep_runs: indicator_name 'mass_drift' is not checked by the policy; "
            r"checked: \('variance_drift',\)",
        ),
        (
            Threshold(("variance_drift", "mass_drift"), (0.05, 0.25)),
            (InvariantDrift("variance"), InvariantDrift("mass")),
            None,
            r"sweep_runs: pass indicator_name, one of \('variance_drift', 'mass_drift'\)",
        ),
    ],
)
def test_sweep_runs_refuses_a_policy_it_cannot_sweep_before_running(
    advection, states, policy, indicators, name, match
):
    runner = HybridRunner(advection, advection, policy, indicators)
    with pytest.raises(ValueError, match=match):
        sweep_runs(runner, states, NUM_STEPS, THRESHOLDS, indicator_name=name)  # not iterated


@pytest.mark.integration  # about 15 s: a dataset, six runs and four figures
def test_hybrid_stage_sweep_rows_are_the_scored_sweep_runs(tmp_path):
    import datasets
    from surrogate import pipeline
    from tests.datasets.dataset_helpers import ks_solver

    solver = ks_solver()
    data = datasets.generate(
        solver,
        tmp_path / "data",
        num_trajectories=10,
        num_frames=4,
        trajectories_per_shard=5,
        splits={"train": 0.6, "val": 0.2, "test": 0.2},
        progress=False,
    )
    runner = HybridRunner(
        solver, Scaled(solver, 1.01), Threshold("energy_drift", 0.05), (InvariantDrift("energy"),)
    )
    kwargs = {"num_steps": 6, "num_trajectories": 2, "sweep_indicator": "energy_drift"}
    summary = pipeline.stage_hybrid(
        runner, data, tmp_path / "run", sweep_thresholds=[0.001, 0.5], **kwargs
    )
    rows = summary["sweep"]["rows"]
    assert summary["sweep"]["indicator"] == "energy_drift"
    assert [r["threshold"] for r in rows] == [0.001, 0.5]
    x0 = datasets.load_trajectories(data, "test")[:2, 0]
    expected = [r.engine_counts() for _, r in sweep_runs(runner, x0, 6, [0.001, 0.5])]
    assert [r["engine_counts"] for r in rows] == expected
    assert expected[0]["rollback"] > expected[1]["rollback"]
    on_disk = json.loads((tmp_path / "run" / "hybrid" / "summary.json").read_text())
    assert on_disk["sweep"]["rows"][0].keys() == rows[0].keys()
    assert {"short_lead_rmse", "long_run_spectrum_max_rel_error", "speedup"} <= rows[0].keys()
    assert (tmp_path / "run" / "figures" / "hybrid_tradeoff.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"hybrid.sweep.indicator: sweep_runs: indicator_name"):
        pipeline.stage_hybrid(
            runner,
            data,
            tmp_path / "bad",
            sweep_thresholds=[0.1],
            **{**kwargs, "sweep_indicator": "energy"},
        )
