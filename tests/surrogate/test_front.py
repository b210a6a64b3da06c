"""The cost-accuracy front: matched-error speed-up, break-even, scores, and a tiny run."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import NavierStokes2D, spectral
from solvers.resolution import at_resolution, spectral_resample
from surrogate import front as fr
from tests.helpers import StepperMeta

# float64 arithmetic on hand-made numbers: only round-off of a few operations.
EXACT = {"rtol": 1e-12, "atol": 1e-12}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Scale(StepperMeta):
    """A fake learned stepper: multiplies the state by ``factor`` over each interval."""

    solver: Any
    factor: float = 1.0

    def __call__(self, state):
        return state * jnp.asarray(self.factor, state.dtype)


# ---- matched-error interpolation ------------------------------------------------------------
# A hand-made ladder: error falls by 4 per doubling of cost; rung "d" (cost 3, error 0.5) is
# dominated by "b" (cost 2, error 0.25); "nan" blew up. Given out of cost order.
LADDER = {
    "c": (4.0, 0.0625),
    "a": (1.0, 1.0),
    "d": (3.0, 0.5),
    "e": (8.0, 0.01),
    "b": (2.0, 0.25),
    "nan": (5.0, float("nan")),
}
NAMES = list(LADDER)
COSTS = [LADDER[n][0] for n in NAMES]
ERRORS = [LADDER[n][1] for n in NAMES]


def test_pareto_front_drops_dominated_and_nonfinite_rungs():
    front = fr.pareto_front(COSTS, ERRORS)
    assert [NAMES[i] for i in front] == ["a", "b", "c", "e"]


def test_matched_error_interpolates_log_cost_in_log_error():
    # error 0.125 is the geometric mean of b's 0.25 and c's 0.0625: halfway in log error,
    # so the matched cost is the geometric mean of 2 and 4.
    res = fr.speedup_at_matched_error(COSTS, ERRORS, 0.1, 0.125, names=NAMES)
    np.testing.assert_allclose(res.matched_solver_cost, math.sqrt(8.0), **EXACT)
    np.testing.assert_allclose(res.speedup, math.sqrt(8.0) / 0.1, **EXACT)
    assert (res.cheaper_rung, res.costlier_rung, res.bound) == ("b", "c", None)
    assert res.front == ("a", "b", "c", "e")
    # A quarter of the way from c to e in log error.
    err = 0.0625 * (0.01 / 0.0625) ** 0.25
    res = fr.speedup_at_matched_error(COSTS, ERRORS, 1.0, err, names=NAMES)
    np.testing.assert_allclose(res.matched_solver_cost, 4.0 * 2.0**0.25, **EXACT)
    # On a rung exactly: its cost.
    res = fr.speedup_at_matched_error(COSTS, ERRORS, 0.5, 0.25, names=NAMES)
    np.testing.assert_allclose(res.speedup, 4.0, **EXACT)
    assert res.bound is None


def test_matched_error_ignores_a_dominated_rung():
    # Between a (1.0) and b (0.25); the dominated d (cost 3, error 0.5) would raise it.
    res = fr.speedup_at_matched_error(COSTS, ERRORS, 1.0, 0.5, names=NAMES)
    np.testing.assert_allclose(res.matched_solver_cost, math.sqrt(2.0), **EXACT)
    assert (res.cheaper_rung, res.costlier_rung) == ("a", "b")


def test_matched_error_outside_the_front_is_a_bound_not_an_extrapolation():
    better = fr.speedup_at_matched_error(COSTS, ERRORS, 0.1, 0.001, names=NAMES)
    assert better.bound == "lower"  # more accurate than the best rung: at least this
    np.testing.assert_allclose(better.speedup, 8.0 / 0.1, **EXACT)
    assert better.cheaper_rung == "e" and better.costlier_rung is None
    worse = fr.speedup_at_matched_error(COSTS, ERRORS, 0.1, 2.0, names=NAMES)
    assert worse.bound == "upper"  # less accurate than the cheapest rung: at most this
    np.testing.assert_allclose(worse.speedup, 1.0 / 0.1, **EXACT)
    assert worse.costlier_rung == "a" and worse.cheaper_rung is None


def test_matched_error_does_not_interpolate_towards_a_zero_error_rung():
    # The reference's own grid on the ladder: error 0 at cost 16.
    res = fr.speedup_at_matched_error([*COSTS, 16.0], [*ERRORS, 0.0], 0.1, 0.005)
    assert res.bound == "lower" and (res.cheaper_rung, res.costlier_rung) == ("3", "6")
    np.testing.assert_allclose(res.speedup, 8.0 / 0.1, **EXACT)
    res = fr.speedup_at_matched_error([*COSTS, 16.0], [*ERRORS, 0.0], 0.1, 0.0)
    np.testing.assert_allclose(res.speedup, 16.0 / 0.1, **EXACT)
    assert res.bound is None


def test_matched_error_undefined_for_a_blown_up_stepper_and_refuses_an_empty_ladder():
    res = fr.speedup_at_matched_error(COSTS, ERRORS, 0.1, float("nan"))
    assert res.speedup is None and res.matched_solver_cost is None and res.note
    with pytest.raises(ValueError, match="no rung"):
        fr.speedup_at_matched_error([1.0], [float("nan")], 0.1, 0.1)


def test_fake_learned_stepper_with_known_error_and_cost_gives_known_speedup():
    # The Kolmogorov ladder (cost per output interval dt = 0.5, error at lead 8).
    dt = 0.5
    per_interval = np.array([1.7, 6.4, 15.0, 48.0, 119.0]) * 1e-3
    error = np.array([1.06, 0.77, 0.46, 0.21, 0.085])
    cost = per_interval / dt
    # A stepper as accurate as the 96^2 rung at 2 ms per interval: 48 / 2 = 24x.
    res = fr.speedup_at_matched_error(cost, error, 2e-3 / dt, 0.21)
    np.testing.assert_allclose(res.speedup, 24.0, **EXACT)
    # Halfway between 64^2 and 96^2 in log error: the geometric mean of their costs.
    res = fr.speedup_at_matched_error(cost, error, 2e-3 / dt, math.sqrt(0.46 * 0.21))
    np.testing.assert_allclose(res.speedup, math.sqrt(15.0 * 48.0) / 2.0, **EXACT)
    # Its break-even after an hour of data generation and training.
    assert fr.breakeven_time_units(3600.0, res.matched_solver_cost, 2e-3 / dt) == pytest.approx(
        3600.0 / (math.sqrt(15.0 * 48.0) * 1e-3 / dt - 2e-3 / dt), rel=1e-12
    )


def test_matched_correlation_time():
    costs, times, censored = [1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [False, False, True]
    # log-linear between (2, 2) and (4, 4) at time 3: cost 3; rung 4's time is a lower
    # bound, so the speed-up is an upper bound.
    res = fr.speedup_at_matched_time(costs, times, censored, 0.5, 3.0, False)
    np.testing.assert_allclose(res.speedup, 6.0, **EXACT)
    assert res.bound == "upper"
    res = fr.speedup_at_matched_time(costs, times, [False] * 3, 0.5, 1.5, False)
    np.testing.assert_allclose(res.speedup, 1.5 / 0.5, **EXACT)
    assert res.bound is None
    assert fr.speedup_at_matched_time(costs, times, censored, 0.5, 4.0, True).speedup is None


# ---- break-even ---------------------------------------------------------------------------------
def test_breakeven_on_hand_numbers():
    # One hour up front, 0.1 s -> 0.01 s per trajectory per time unit: 3600 / 0.09.
    np.testing.assert_allclose(fr.breakeven_time_units(3600.0, 0.1, 0.01), 40000.0, **EXACT)
    assert fr.breakeven_time_units(0.0, 0.1, 0.01) == 0.0
    assert fr.breakeven_time_units(10.0, 0.1, 0.1) is None  # no saving: never
    assert fr.breakeven_time_units(10.0, 0.1, 0.2) is None
    assert fr.breakeven_time_units(10.0, float("nan"), 0.2) is None
    with pytest.raises(ValueError, match="upfront_cost_s"):
        fr.breakeven_time_units(-1.0, 0.1, 0.01)


# ---- scores -------------------------------------------------------------------------------------
def _fields():
    x = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    a = np.sin(x)[None, :, None] * np.cos(2 * x)[None, None, :]  # (1, 16, 16)
    b = np.cos(x)[None, :, None] * np.cos(2 * x)[None, None, :]  # orthogonal to a
    return a, b


def test_relative_error_and_correlation_on_exact_cases():
    a, b = _fields()
    batch = np.stack([a, 2 * a, -a, b])  # (4, 1, 16, 16) against a each
    truth = np.stack([a] * 4)
    err = fr.relative_l2_error(batch, truth, state_ndim=3)
    corr = fr.field_correlation(batch, truth, state_ndim=3)
    # identical; scaled by 2 (error 1, correlation 1); sign flip; orthogonal field.
    np.testing.assert_allclose(err, [0.0, 1.0, 2.0, math.sqrt(2.0)], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(corr, [1.0, 1.0, -1.0, 0.0], rtol=1e-12, atol=1e-14)
    zero = np.zeros_like(a)
    assert np.isnan(fr.relative_l2_error(a, zero, state_ndim=3))
    assert np.isnan(fr.field_correlation(zero, a, state_ndim=3))
    with pytest.raises(ValueError, match="shapes differ"):
        fr.relative_l2_error(a, a[..., :8], state_ndim=3)


def test_time_to_correlation_interpolates_and_censors():
    t = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    time_, censored = fr.time_to_correlation([1.0, 0.99, 0.97, 0.93, 0.9], t)
    np.testing.assert_allclose(time_, 1.0 + (0.97 - 0.95) / (0.97 - 0.93) * 0.5, **EXACT)
    assert not censored
    assert fr.time_to_correlation([1.0, 0.99, 0.98, 0.97, 0.96], t) == (2.0, True)
    # A blown-up lead counts as lost there.
    assert fr.time_to_correlation([1.0, 0.99, float("nan"), 0.97, 0.96], t) == (1.0, False)


def test_resolved_band_stays_inside_the_dealiased_modes():
    for n, top in ((16, 4), (32, 10), (48, 15), (64, 20)):
        band = fr.resolved_band((n, n), (2 * np.pi, 2 * np.pi))
        np.testing.assert_array_equal(band, np.arange(1, top + 1))
        ky, kx = spectral.wavenumbers((n, n), (2 * np.pi, 2 * np.pi))
        shell = np.rint(np.sqrt(ky**2 + kx**2)).astype(int)
        kept = spectral.dealiasing_mask((n, n))
        assert kept[np.isin(shell, band)].all()


def test_spectrum_relative_error_on_hand_numbers():
    ref = np.array([0.0, 1.0, 2.0, 4.0, 8.0])
    spec = np.array([5.0, 1.5, 2.0, 3.0, 100.0])
    mx, mean = fr.spectrum_relative_error(spec, ref, [1, 2, 3])
    np.testing.assert_allclose([mx, mean], [0.5, 0.25], **EXACT)
    with pytest.raises(ValueError, match="band reaches"):
        fr.spectrum_relative_error(spec, ref[:3], [1, 2, 3])
    np.testing.assert_allclose(fr.relative_error(11.0, 10.0), 0.1, **EXACT)


# ---- running steppers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_fine():
    base = NavierStokes2D(num_points=32, dt=0.5, num_substeps=30)
    fine = at_resolution(base, 32)  # its largest stable step, like the ladder's rungs
    x0 = jax.vmap(fine.initial_condition)(jax.random.split(jax.random.key(0), 2))
    return fine, x0


def test_run_stepper_and_long_run_chunks_on_an_exact_stepper(tiny_fine):
    fine, x0 = tiny_fine
    half = Scale(at_resolution(fine, 16), 0.5)
    x = np.asarray(spectral_resample(x0, (16, 16)))
    run = fr.run_stepper(half, x, 3, repeats=2)
    assert run.trajectory.shape == (2, 4, 1, 16, 16) and len(run.run_s_all) == 2
    powers = 0.5 ** np.arange(4)
    np.testing.assert_allclose(run.trajectory, powers[None, :, None, None, None] * x[:, None])
    assert run.cost_s_per_trajectory_per_time_unit == run.run_s / (2 * 3 * 0.5)
    # 5 intervals in chunks of 3 -> 6 run; the second half is after intervals 4, 5, 6.
    long = fr.long_run_frames(half, x, 5, (8, 8), run=run)
    assert long.num_steps == 6 and long.frames.shape == (2, 3, 1, 8, 8)
    coarse = np.asarray(spectral_resample(jnp.asarray(x), (8, 8)))
    expected = (0.5 ** np.arange(4, 7))[None, :, None, None, None] * coarse[:, None]
    np.testing.assert_allclose(long.frames, expected, rtol=1e-6, atol=1e-6)


def test_a_rollout_is_compiled_once_for_steppers_differing_in_values(tiny_fine):
    fine, _ = tiny_fine
    solver = at_resolution(fine, 16)
    x = jnp.ones((2, 1, 16, 16), jnp.float32)
    p1, c1 = fr.compile_rollout(Scale(solver, 0.5), x, 2)
    p2, c2 = fr.compile_rollout(Scale(solver, 0.25), x, 2)
    assert p1 is p2 and c1 == c2
    # The factor is an argument of the program, not a constant folded into it.
    np.testing.assert_array_equal(np.asarray(p2(Scale(solver, 0.25), x))[:, 2], 0.0625)


# The reference's own grid as a ladder rung runs the same program on the same states: equal
# to round-off (float32 FFTs, compiled separately).
ROUND_OFF = 1e-5


def test_tiny_front_end_to_end_and_front_json_round_trip(tiny_fine, tmp_path):
    fine, x0 = tiny_fine
    known = 0.1

    def hybrid(states, num_leads):
        # A "hybrid" whose trajectory is the reference scaled by 1 + known: nRMSE = known.
        ref = fr.run_stepper(fine, states, num_leads, repeats=1).trajectory
        return [fr.Precomputed("scaled reference", ref * (1 + known), cost=1e-4)]

    front = fr.run_front(
        fine,
        [16, 24, 32],
        {"persistence": Scale(at_resolution(fine, 24), 1.0)},
        x0,
        num_leads=3,
        lead=2,
        reference_spectrum=None,
        upfront_cost_s={"persistence": 5.0},
        long_rollout_steps=4,
        hybrid=hybrid,
        progress=False,
        repeats=1,
        floor=True,
    )
    by_name = {e.name: e for e in front.entries}
    floor_name = "floor: 32x32 solver from the 16x16 state"
    assert list(by_name) == [
        "reference 32x32",
        "solver 16x16",
        "solver 24x24",
        "solver 32x32",
        "persistence",
        floor_name,
        "scaled reference",
    ]
    assert front.comparison_grid == (16, 16) and front.batch_size == 2
    # Timed runs: each stepper once (repeats=1), plus the two chunks of 3 intervals of its
    # long run (the reference too: it gives the climatology here; the floor has none),
    # plus, for all but the fine runs, one interleaved round (timing_rounds = repeats).
    assert by_name["reference 32x32"].timed_runs == 3 and by_name[floor_name].timed_runs == 1
    assert [by_name[n].timed_runs for n in ("solver 16x16", "persistence")] == [4, 4]
    assert front.long_rollout_steps == 6  # rounded up to whole rollouts of 3
    rung = by_name["solver 32x32"]
    assert rung.substeps == fine.num_substeps
    np.testing.assert_allclose(rung.error, 0.0, rtol=0, atol=ROUND_OFF)
    np.testing.assert_allclose(rung.correlation, 1.0, rtol=0, atol=ROUND_OFF)
    assert rung.time_to_corr_censored
    np.testing.assert_allclose(by_name["reference 32x32"].spectrum_max_rel_error, 0.0, atol=1e-12)
    coarse = by_name["solver 16x16"]
    assert coarse.error[0] == 0 and np.all(np.isfinite(coarse.error)) and coarse.error[2] > 0
    assert np.isfinite(coarse.spectrum_max_rel_error) and np.isfinite(coarse.enstrophy_rel_error)
    scaled = by_name["scaled reference"]
    np.testing.assert_allclose(scaled.error, known, rtol=1e-5, atol=0)
    # The speed-ups are the core function on the front's own (wall-clock) rung table.
    rungs = front.by_kind("solver")
    for e in (scaled, by_name["persistence"]):
        expected = fr.speedup_at_matched_error(
            [r.cost for r in rungs],
            [r.error_at(2) for r in rungs],
            e.cost,
            e.error_at(2),
            names=[r.name for r in rungs],
        )
        assert e.speedup == expected
    p = by_name["persistence"]
    assert p.breakeven_time_units == fr.breakeven_time_units(
        5.0, p.speedup.matched_solver_cost, p.cost
    )
    # The floor: the fine solver from the states truncated to the comparison grid, scored
    # like everything else (same compiled program as the reference, other initial states).
    floor = by_name[floor_name]
    truncated = spectral_resample(spectral_resample(x0, (16, 16)), (32, 32))
    by_hand = fr.run_stepper(fine, truncated, 3, repeats=1).trajectory
    ref_c = spectral_resample(fr.run_stepper(fine, x0, 3, repeats=1).trajectory, (16, 16))
    np.testing.assert_allclose(
        floor.error,
        fr.relative_l2_error(spectral_resample(by_hand, (16, 16)), ref_c, state_ndim=3).mean(0),
        rtol=1e-6,
        atol=0,
    )
    assert floor.error[0] == pytest.approx(0.0, abs=ROUND_OFF) and floor.error[2] > ROUND_OFF
    assert floor.substeps == fine.num_substeps and floor.spectrum_max_rel_error is None
    for e in (scaled, p):
        assert e.ceiling == fr.speedup_at_matched_error(
            [r.cost for r in rungs],
            [r.error_at(2) for r in rungs],
            e.cost,
            floor.error_at(2),
            names=[r.name for r in rungs],
        )
    times = dict(
        ladder_cost=[r.cost for r in rungs],
        ladder_time=[r.time_to_corr for r in rungs],
        ladder_censored=[r.time_to_corr_censored for r in rungs],
        time_=floor.time_to_corr,
        censored=floor.time_to_corr_censored,
        names=[r.name for r in rungs],
    )
    assert p.ceiling_corr == fr.speedup_at_matched_time(cost=p.cost, **times)
    # The free-network ceilings: the floor's error and time at the cost of the rung on the
    # stepper's grid (persistence runs on 24x24).
    own = by_name["solver 24x24"].cost
    assert p.free_ceiling == fr.speedup_at_matched_error(
        [r.cost for r in rungs],
        [r.error_at(2) for r in rungs],
        own,
        floor.error_at(2),
        names=[r.name for r in rungs],
    )
    assert p.free_ceiling_corr == fr.speedup_at_matched_time(cost=own, **times)
    assert scaled.gap_closed is None  # the rung on its grid (32x32, the fine one) is exact
    assert p.gap_closed == fr.gap_closed(
        [by_name["solver 24x24"].error_at(2)], p.error_at(2), floor.error_at(2)
    )

    path = front.write_json(tmp_path / "front.json")
    d = json.loads(path.read_text())
    for key in ("speedup_at_matched_error", "lead", "matched_error", "breakeven_time_units"):
        assert key in d
    assert d["stepper"] == "persistence" and d["lead"] == 2
    assert d["speedup_at_matched_error"] == pytest.approx(p.speedup.speedup, rel=1e-12)
    assert d["matched_error"] == pytest.approx(p.error_at(2), rel=1e-12)
    assert [s["name"] for s in d["steppers"]] == list(by_name)
    assert d["steppers"][3]["time_to_corr_095_bound"] == "lower"
    assert d["floor_error"] == pytest.approx(floor.error_at(2), rel=1e-12)
    assert d["floor_stepper"] == floor_name and d["gap_closed"] == p.gap_closed
    assert d["ceiling_speedup_at_matched_error"] == p.ceiling.speedup
    assert d["ceiling_speedup_at_matched_corr_time"] == p.ceiling_corr.speedup
    assert d["free_ceiling_speedup_at_matched_error"] == p.free_ceiling.speedup
    assert not list(tmp_path.glob(".*.tmp"))
    table = front.table_markdown()
    assert table.count("\n") == len(front.entries) + 1 and "persistence" in table
    png = fr.plot_front(front, tmp_path / "front.png")
    assert png.stat().st_size > 0


def test_gap_closed_against_hand_computed_fractions():
    assert fr.gap_closed([0.4], 0.3, 0.1) == pytest.approx(1 / 3, rel=1e-12)
    assert fr.gap_closed([0.4, 9.0], 0.1, 0.1) == 1.0  # the first rung on the grid counts
    assert fr.gap_closed([0.4], 0.5, 0.1) == pytest.approx(-1 / 3, rel=1e-12)  # worse
    assert fr.gap_closed([], 0.3, 0.1) is None  # no rung on the stepper's grid
    assert fr.gap_closed([0.1], 0.05, 0.2) is None  # the rung is below the floor
    assert fr.gap_closed([0.4], float("nan"), 0.1) is None


def test_floor_sentence_states_floor_gap_and_ceiling():
    from surrogate.front_stage import floor_sentence

    base = {"lead": 1, "comparison_grid": [32, 32], "floor_stepper": "floor: fine"}
    assert floor_sentence({**base, "floor_error": None}) is None
    text = floor_sentence(
        {
            **base,
            "floor_error": 0.073,
            "stepper": "corr",
            "gap_closed": 0.23,
            "ceiling_speedup_at_matched_error": 9.6,
            "ceiling_bound": None,
        }
    )
    assert text == (
        "Error floor at lead 1: 0.073 (floor: fine, what exact dynamics reach from the 32x32 "
        "state alone); corr closes 23% of the gap between the 32x32 solver and the floor; a "
        "stepper at the floor with its cost would be 9.6x faster than the solver ladder"
    )
    text = floor_sentence(
        {
            **base,
            "floor_error": 0.073,
            "stepper": "corr",
            "steppers": [{"name": "corr", "grid": [48, 48]}],
            "ceiling_speedup_at_matched_error": 9.6,
            "ceiling_speedup_at_matched_corr_time": 12.5,
            "free_ceiling_speedup_at_matched_error": 11.0,
            "free_ceiling_speedup_at_matched_corr_time": 18.0,
        }
    )
    assert text.endswith(
        "9.6x faster than the solver ladder (12.5x on the time to 0.95 correlation); even a "
        "perfect network that cost nothing, on top of the 48x48 solver, would give 11x (18x "
        "on the time to 0.95 correlation)"
    )


def test_run_front_refuses_bad_inputs_before_running_anything(tiny_fine):
    fine, x0 = tiny_fine
    other = at_resolution(NavierStokes2D(**{**fine.config(), "dt": 0.25}), 16)
    with pytest.raises(ValueError, match="dt 0.25"):
        fr.run_front(fine, [16], {"x": other}, x0, 2, 1, np.ones(8), progress=False)
    # The 16^2 band reaches shell 4: a reference spectrum needs at least 5 shells.
    with pytest.raises(ValueError, match="reaches shell 4"):
        fr.run_front(fine, [16], {}, x0, 2, 1, np.ones(4), progress=False)
    with pytest.raises(ValueError, match="lead must be"):
        fr.run_front(fine, [16], {}, x0, 2, 3, np.ones(8), progress=False)
    with pytest.raises(ValueError, match="neither learned nor hybrid"):
        fr.run_front(fine, [16], {}, x0, 2, 1, np.ones(8), {"y": 1.0}, progress=False)
