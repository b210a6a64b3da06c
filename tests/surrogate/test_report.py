"""The run report: a verdict first, honest figures and tables, cumulative stage times."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from surrogate import plots
from surrogate.report import Contender, verdict, write_report

REF = Contender("reference solver (32)", cost_s=10.0, error=0.0)
HALF = Contender("half-resolution solver (16)", cost_s=1.0, error=0.3)
PERSIST = Contender("persistence", cost_s=0.0, error=1.0)


# ---- the verdict, from fakes with known costs and errors --------------------------------
def test_verdict_yes_when_faster_than_the_reference_and_better_than_the_same_cost_solver():
    v = verdict(
        Contender("learned stepper", 0.5, 0.2),
        reference=REF,
        same_cost=HALF,
        persistence=PERSIST,
        error_label="nRMSE",
    )
    assert v.answer == "yes"
    assert v.warnings == ()
    assert v.sentences[0] == (
        "Yes: the learned stepper is 20x faster than the reference solver (32) and beats the "
        "half-resolution solver (16) on both cost and error."
    )
    assert "cheaper (0.5 s against 1 s) and more accurate (nRMSE 0.2 against 0.3)" in " ".join(
        v.sentences
    )


def test_verdict_no_when_dominated_by_the_half_resolution_solver():
    v = verdict(Contender("learned stepper", 2.0, 0.5), reference=REF, same_cost=HALF)
    assert v.answer == "no"
    assert v.warnings == (
        "the learned stepper is dominated by the half-resolution solver (16) (it is both "
        "slower and less accurate: 2 s against 1 s, error 0.5 against 0.3)",
    )
    assert v.sentences[0] == f"No: {v.warnings[0]}."


def test_verdict_no_when_slower_than_the_reference_or_worse_than_persistence():
    slow = verdict(Contender("learned stepper", 12.0, 0.1), reference=REF, same_cost=HALF)
    assert slow.answer == "no"
    assert slow.sentences[0].startswith(
        "No: the learned stepper is slower than the reference solver (32) (12 s against 10 s)"
    )
    poor = verdict(
        Contender("learned stepper", 0.5, 1.2), reference=REF, same_cost=None, persistence=PERSIST
    )
    assert poor.answer == "no"
    assert "no more accurate than persistence (error 1.2 against 1)" in poor.sentences[0]


def test_verdict_trade_off_depends_and_missing_figures_are_undetermined():
    dep = verdict(Contender("learned stepper", 2.0, 0.1), reference=REF, same_cost=HALF)
    assert dep.answer == "it depends"
    assert "more accurate (error 0.1 against 0.3) but 2x as costly" in dep.sentences[2]
    unknown = verdict(
        Contender("learned stepper", 0.5, 0.2),
        reference=Contender("reference solver", float("nan"), 0.0),
        same_cost=HALF,
    )
    assert unknown.answer == "undetermined"
    assert unknown.sentences[0] == "Undetermined: the reference solver's cost not measured."


def test_verdict_warns_about_a_slow_hybrid_and_blow_ups():
    v = verdict(
        Contender("learned stepper", 0.5, 0.2),
        reference=REF,
        same_cost=HALF,
        hybrid_speedup=0.8,
        blowup_fraction=0.25,
    )
    assert "the hybrid is slower than the solver (speed-up 0.8x): it saves no time" in v.warnings
    assert "25% of the learned stepper's long rollouts blew up" in v.warnings


# ---- the reference solver's cost is measured --------------------------------------------
def test_evaluate_times_the_reference_solver():
    from surrogate.evaluate import evaluate
    from tests.datasets.dataset_helpers import ks_solver

    ks = ks_solver()
    # any smooth states do: only the cost of the reference rollout is checked here
    x = np.linspace(0.0, 22.0, 32, endpoint=False, dtype=np.float32)
    truth = np.broadcast_to(np.cos(2 * np.pi * x / 22.0), (2, 3, 1, 32)).copy()
    ds = evaluate(ks, truth, solver=ks, baselines=("persistence",), batch_size=2)
    wall = float(ds["wall_time"].sel(model="truth"))
    assert np.isfinite(wall) and wall > 0  # it was NaN: the reference was never timed
    assert "truth: the solver re-run" in ds["wall_time"].attrs["long_name"]


# ---- the whole report --------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import datasets
    from tests.datasets.dataset_helpers import GENERATE, ks_solver

    return datasets.generate(ks_solver(), tmp_path_factory.mktemp("data") / "ks", **GENERATE)


def fake_evaluation(horizon_frames: int = 4, dt: float = 0.5) -> xr.Dataset:
    """An evaluation table with known costs and errors: the surrogate is dominated by the
    half-resolution solver; its valid time is never reached (inf)."""
    models = ["truth", "surrogate", "persistence", "coarse_solver"]
    lead = np.arange(horizon_frames) * dt
    nrmse = {"truth": 0.0, "surrogate": 0.6, "persistence": 1.2, "coarse_solver": 0.4}
    wall = {"truth": 3.0, "surrogate": 0.2, "persistence": 0.0, "coarse_solver": 0.1}
    err = np.array([[[0.0] + [nrmse[m]] * (horizon_frames - 1)] for m in models])
    return xr.Dataset(
        {
            "rmse": (("model", "variable", "lead_time"), err),
            "nrmse": (("model", "variable", "lead_time"), err),
            "acc": (("model", "variable", "lead_time"), 1.0 - err / 2),
            "valid_time": (("model", "variable"), np.array([[np.inf], [np.inf], [0.5], [1.0]])),
            "wall_time": (("model",), np.array([wall[m] for m in models])),
        },
        coords={"model": models, "variable": ["u"], "lead_time": lead},
        attrs={
            "stepper_model": "surrogate",
            "grid_num_points": [32],
            "coarse_num_points": [16],
            "num_trajectories": 2,
            "batch_size": 2,
            "acc_threshold": 0.6,
        },
    )


def test_report_opens_with_the_verdict_and_shows_honest_figures(dataset, tmp_path):
    from surrogate.evaluate import save_evaluation

    run = tmp_path / "run"
    run.mkdir()
    save_evaluation(fake_evaluation(), run / "evaluation.nc")
    (run / "hybrid").mkdir()
    hy = {
        "num_steps": 8,
        "num_trajectories": 2,
        "dt": 0.5,
        "short_lead_steps": 2,
        "solver": {"solver_fraction": 1.0, "wall_time": 1.0},
        "surrogate": {"solver_fraction": 0.0, "speedup": 5.0, "blown_up_members": 0},
        "hybrid": {"solver_fraction": 0.5, "speedup": 0.7},
    }
    (run / "hybrid" / "summary.json").write_text(json.dumps(hy))
    # generation was resumed in this invocation: it found the data and took 7 ms
    (run / "stage_times.json").write_text(json.dumps({"generate": 100.0, "train": 50.0}))
    html_path = write_report(run, dataset, timings={"generate": 0.007})

    md = (run / "report.md").read_text()
    lines = md.splitlines()
    assert lines[2] == "## Verdict: is the learned stepper worth using here?"
    assert lines[4] == (
        "No: the learned stepper is dominated by the half-resolution solver (16) (it is both "
        "slower and less accurate: 0.2 s against 0.1 s, mean nRMSE 0.6 against 0.4)."
    )
    assert "Warning: the hybrid is slower than the solver (speed-up 0.7x)" in md
    # the reference solver's own cost, and its speed-up column
    assert "| reference solver (32) | 3 | 1 | 0 | > 1.5 |" in md
    assert "| learned stepper (surrogate) | 0.2 | 15 | 0.6 | > 1.5 |" in md
    assert "| reference solver (truth) | u | 0 | 1 | > 1.5 | 3 |" in md
    # never-reached times read "> horizon", never "inf"
    assert not re.search(r"\binf\b", md)
    assert "no member blew up within the horizon (t > 4)" in md
    # cumulative stage times, beside this invocation's
    assert "| generate | 100 | 0.007 |" in md
    assert "| train | 50 | - |" in md

    page = Path(html_path).read_text()
    outside_pre = re.sub(r"<pre>.*?</pre>", "", page, flags=re.DOTALL)
    assert "`" not in outside_pre
    assert "<code>ks</code>" in page or "<code>kuramoto_sivashinsky</code>" in page


def test_report_draws_training_with_the_curriculum(dataset, tmp_path):
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    records = [
        {"step": s, "loss": 1.0 / s, "lr": 1e-3, "rollout_k": 1 if s < 30 else 2}
        for s in range(10, 60, 10)
    ]
    records[-1]["val_nrmse"] = 0.5
    (run / "train" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (run / "train" / "train_config.json").write_text(
        json.dumps({"rollout_schedule": [[0, 1], [25, 2]]})
    )
    write_report(run, dataset)
    assert (run / "figures" / "training.png").stat().st_size > 1000
    assert "rollout-curriculum switches" in (run / "report.md").read_text()


# ---- the sections ----------------------------------------------------------------------
def test_sections_of_stages_that_did_not_run_are_left_out(tmp_path):
    from surrogate import report

    for blocks in (
        report._training_section([], None),
        report._skill_section(None, tmp_path),
        report._hybrid_section(None, tmp_path),
        report._wall_times_section({}, {}, {}),
        report._versions_section(None),
    ):
        assert blocks == []
    blocks = report._verdict_section(None, None, None, tmp_path)
    assert [kind for kind, _ in blocks] == ["h", "p"]
    assert blocks[1][1].startswith("Not available: run the `evaluate` stage")


def test_hybrid_section_reports_failures_sweeps_and_scenarios(tmp_path):
    from surrogate import report

    hy = {
        "num_steps": 8,
        "num_trajectories": 4,
        "dt": 0.5,
        "short_lead_steps": 2,
        "solver": {"solver_fraction": 1.0, "wall_time": 2.0},
        "surrogate": {"solver_fraction": 0.0, "blown_up_members": 3, "first_blowup_time": 2.5},
        "hybrid": {
            "solver_fraction": 0.25,
            "speedup": 2.0,
            "nonfinite_members": 1,
            "first_nonfinite_time": 3.0,
            "short_lead_rmse": {"u": 0.125},
        },
        "sweep": {"indicator": "drift", "rows": [{"threshold": 0.1, "solver_fraction": 0.5}]},
        "scenario_amplitude_x3": {"amplitude_factor": 3.0, "skipped": "the solver blew up"},
        "scenario_amplitude_x2": {
            "amplitude_factor": 2.0,
            "hybrid": {"solver_fraction": 0.5, "speedup": 1.5, "nonfinite_members": 2},
            "surrogate_blown_up_members": 1,
            "surrogate_final_rmse": 0.75,
        },
    }
    (tmp_path / "hybrid_rmse.png").write_bytes(b"png")  # the only figure present
    blocks = report._hybrid_section(hy, tmp_path)
    md = report._markdown("t", blocks)
    assert "| RMSE at t = 1 |" in md  # short_lead_steps * dt
    assert "| pure solver | 1 | 2 | - | 1 | 0 | 0 |" in md  # the solver is the unit speed-up
    assert "| hybrid (configured) | 0.25 | - | - | 2 | u=0.125 | 0 |" in md
    assert "| hybrid, drift <= 0.1 | 0.5 | - | - | - | 0 | 0 |" in md
    assert "Pure surrogate: 3 of 4 members blew up (first at t = 2.5)." in md
    assert "went non-finite in 1 members (first at t = 3)" in md
    assert (
        "Out-of-distribution scenario amplitude_x3 (initial anomalies x3): skipped, the solver "
        "alone fails there (the solver blew up)." in md
    )
    assert (
        "Out-of-distribution scenario amplitude_x2 (initial anomalies x2): hybrid used the "
        "solver on 50% of steps (speed-up 1.5), and went non-finite in 2 members; pure "
        "surrogate blew up in 1 members, final RMSE 0.75." in md
    )
    assert [b for kind, b in blocks if kind == "img"] == [
        ("figures/hybrid_rmse.png", "Error against the pure solver over time")
    ]


def test_wall_times_prefer_the_cumulative_record():
    from surrogate import report

    blocks = report._wall_times_section(
        {"train": 50.0}, {"generate": 2.0, "train": 9.0}, {"generate": 0.5}
    )
    _, (header, rows) = blocks[1]
    assert header[0] == "stage"
    # stages of stage_times.json first; timings.json fills in the others
    assert rows == [["train", "50", "-"], ["generate", "2", "0.5"]]


# ---- figures ---------------------------------------------------------------------------
def test_training_curves_on_separate_axes_with_curriculum_switches():
    records = [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "rollout_k": 1} for s in range(1, 40)]
    records += [{"step": s, "val_nrmse": 0.5 + 1 / s} for s in (10, 20, 30)]
    fig = plots._training_figure(records, [[0, 1], [20, 2], [30, 4]])
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert set(axes) == {"training loss", "validation rollout nRMSE", "learning-rate schedule"}

    def curves(title):  # the data lines of a panel (the switch markers are dotted)
        return {ln.get_label(): ln for ln in axes[title].lines if ln.get_linestyle() != ":"}

    # validation is a different quantity: on its own axes, not on the training-loss axes
    assert list(curves("training loss")) == ["training loss"]
    val = curves("validation rollout nRMSE")["validation rollout nRMSE"]
    np.testing.assert_array_equal(val.get_xdata(), [10, 20, 30])
    for ax in axes.values():  # switch lines at steps 20 and 30, labelled with the new k
        xs = sorted(ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == ":")
        assert xs == [20.0, 30.0]
        assert sorted(t.get_text() for t in ax.texts) == [" k=2", " k=4"]
    # without a schedule, the switches come from the records' rollout_k
    assert plots.curriculum_switches(
        [{"step": 10, "rollout_k": 1}, {"step": 20, "rollout_k": 1}, {"step": 30, "rollout_k": 3}]
    ) == [(30.0, 3)]


def test_field_scale_follows_the_data():
    y, x = np.meshgrid(np.linspace(0, 6, 16), np.linspace(0, 6, 16), indexing="ij")
    height = 10.0 + 0.1 * np.sin(x) * np.cos(y)
    s = plots.field_scale(height)
    assert s.kind == "anomaly" and s.cmap == "RdBu_r"
    # mean of the field; the anomaly range is symmetric about zero
    assert s.offset == pytest.approx(float(height.mean()), rel=1e-12, abs=0)
    assert s.vmin == -s.vmax and 0.09 < s.vmax < 0.11
    assert s.label("h") == f"h - {s.offset:.4g} (anomaly from mean)"
    vort = np.sin(x) * np.cos(y)
    assert plots.field_scale(vort)[:2] == ("diverging", "RdBu_r")
    assert plots.field_scale(vort**2)[:4] == ("sequential", "viridis", 0.0, float(np.max(vort**2)))
    assert plots.field_scale(np.full(3, np.nan)).kind == "diverging"


def test_snapshots_of_a_height_field_are_drawn_as_anomalies(tmp_path, monkeypatch):
    from solvers.grid import Grid

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi=110: drawn.append(fig) or path)
    grid = Grid(num_points=(8, 8), domain_length=(1.0, 1.0), axes=("y", "x"))
    h = 10.0 + 0.1 * np.random.default_rng(0).standard_normal((3, 1, 8, 8))
    plots.plot_snapshots(h, h + 0.01, grid, tmp_path / "h.png", variables=("h",), lead_indices=[0])
    (fig,) = drawn
    mean = float(h.mean())
    assert fig.get_suptitle().endswith(f"(h as its anomaly from the mean {mean:.4g})")
    truth_image = fig.axes[0].images[0]
    # the anomaly is drawn, on a range symmetric about zero (not +-10.3 around zero)
    np.testing.assert_allclose(truth_image.get_array(), h[0, 0] - mean, rtol=0, atol=1e-12)
    lo, hi = truth_image.get_clim()
    assert lo == -hi and hi == pytest.approx(np.abs(h - mean).max(), rel=1e-12, abs=0)
    assert truth_image.get_cmap().name == "RdBu_r"


def _overlaps(fig) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()
    texts = []
    for ax in fig.axes:
        texts += [t for t in ax.texts if t.get_text()]
    for legend in fig.legends:
        texts += legend.get_texts()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def test_tradeoff_labels_do_not_overlap():
    rows = [
        {
            "threshold": th,
            "speedup": 2.0 + 0.01 * i,  # nearly the same point: labels beside them collide
            "solver_fraction": 0.3,
            "short_lead_rmse": {"u": 0.1 + 0.001 * i},
            "long_run_spectrum_max_rel_error": {"u": 0.2},
        }
        for i, th in enumerate((0.01, 0.02, 0.05, 0.1))
    ]
    summary = {
        "sweep": {"indicator": "drift", "rows": rows},
        "short_lead_steps": 2,
        "dt": 0.5,
        "surrogate": {
            "speedup": 5.0,
            "short_lead_rmse": {"u": 0.5},
            "long_run_spectrum_max_rel_error": {"u": 1.0},
        },
    }
    fig = plots._hybrid_tradeoff_figure(summary, ["u"])
    fig.canvas.draw()
    assert _overlaps(fig) == []
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    for th in (0.01, 0.02, 0.05, 0.1):
        assert f"hybrid, drift <= {th:.3g} (30% solver)" in labels


def test_rollout_gif_of_a_height_field_keeps_its_range(tmp_path, monkeypatch):
    from solvers.grid import Grid

    figures = []
    original = plots.animation.FuncAnimation

    def record(fig, *args, **kwargs):
        figures.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(plots.animation, "FuncAnimation", record)
    grid = Grid(num_points=(16,), domain_length=(1.0,), axes=("x",))
    h = 10.0 + 0.1 * np.sin(np.linspace(0, 6, 16))[None, None].repeat(2, axis=0)
    plots.animate_rollout(h, h, grid, tmp_path / "h.gif", max_frames=2)
    lo, hi = figures[0].axes[0].get_ylim()
    # the data's own range with a 10 % margin, not +-1.2 max|h| (where 10 +- 0.1 is flat)
    span = h.max() - h.min()
    assert lo == pytest.approx(h.min() - 0.1 * span, rel=1e-9, abs=0)
    assert hi == pytest.approx(h.max() + 0.1 * span, rel=1e-9, abs=0)
