"""The run report: Markdown and a self-contained HTML page with the run's figures.

Built from what the stages left in the run directory (no recomputation), so it can be
regenerated at any time: ``hs-report`` or :func:`write_report`.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float | np.floating):
        if not np.isfinite(x):
            return "inf" if x > 0 else ("-inf" if x < 0 else "n/a")
        return f"{x:.{digits}g}"
    return str(x)


class _Doc:
    """Accumulates sections once, renders to Markdown and HTML."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[tuple[str, Any]] = []

    def h(self, text: str) -> None:
        self.blocks.append(("h", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (header, [[_fmt(c) for c in r] for r in rows])))

    def img(self, path: str, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, b in self.blocks:
            if kind == "h":
                out += [f"## {b}", ""]
            elif kind == "p":
                out += [b, ""]
            elif kind == "pre":
                out += ["```", b, "```", ""]
            elif kind == "img":
                out += [f"![{b[1]}]({b[0]})", f"*{b[1]}*", ""]
            elif kind == "table":
                header, rows = b
                out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(r) + " |" for r in rows]
                out += [""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for kind, b in self.blocks:
            if kind == "h":
                body.append(f"<h2>{e(b)}</h2>")
            elif kind == "p":
                body.append(f"<p>{e(b)}</p>")
            elif kind == "pre":
                body.append(f"<pre>{e(b)}</pre>")
            elif kind == "img":
                body.append(
                    f'<figure><img src="{e(b[0])}" alt="{e(b[1])}"><figcaption>{e(b[1])}</figcaption></figure>'
                )
            elif kind == "table":
                header, rows = b
                body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
                body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
                body.append("</table>")
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "img{max-width:100%}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
            "pre{background:#f7f7f7;padding:8px;overflow-x:auto}figcaption{color:#555;font-size:90%}"
        )
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(self.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
        )


def _front_section(doc: _Doc, run_dir: Path) -> None:
    """The verdict first: speed-up at matched error, lead, error level, break-even."""
    path = run_dir / "front.json"
    if not path.exists():
        return
    from surrogate.front_stage import headline

    front = json.loads(path.read_text())
    doc.h("Verdict: is the learned stepper worth using here?")
    doc.p(headline(front) + ".")
    bound = front.get("bound")
    if bound == "upper":
        doc.p(
            "Its error is above every solver on the ladder: the figure compares it with the "
            "cheapest solver, so it is at most this fast at matched error; a cheaper, coarser "
            "solver could match it."
        )
    elif bound == "lower":
        doc.p(
            "Its error is below that of the solvers it could be matched against: the figure is a "
            "lower bound."
        )
    sp = front.get("speedup_at_matched_error")
    if sp is not None and sp < 1:
        doc.p("Warning: at matched error the solver ladder is faster than the learned stepper.")
    rows = []
    for e in front.get("steppers", []):
        corr_t = e.get("time_to_corr_095")
        censored = e.get("time_to_corr_095_bound") == "lower"
        rows.append(
            [
                e.get("kind"),
                e.get("name"),
                e.get("substeps") if e.get("substeps") is not None else "-",
                1e3 * e["cost_s_per_trajectory_per_time_unit"]
                if e.get("cost_s_per_trajectory_per_time_unit") is not None
                else None,
                e.get("error_at_lead"),
                f"> {_fmt(corr_t)}" if censored else corr_t,
                e.get("spectrum_max_rel_error"),
                e.get("enstrophy_rel_error"),
                e.get("speedup_at_matched_error"),
            ]
        )
    doc.table(
        [
            "kind",
            "stepper",
            "substeps",
            "cost [ms / trajectory / time unit]",
            f"nRMSE at lead {front.get('lead')}",
            "time to corr < 0.95",
            "long-run spectrum max rel. error",
            "enstrophy rel. error",
            "speed-up at matched error",
        ],
        rows,
    )
    doc.p(
        f"Batch {front.get('batch_size')}, compile time excluded, same device; errors against "
        f"the fine reference, both projected onto {front.get('comparison_grid')}. "
        + str(front.get("upfront_cost_note", ""))
    )
    if (run_dir / "figures" / "front.png").exists():
        doc.img("figures/front.png", "Cost-accuracy front: solver ladder and learned stepper")


def write_report(
    run_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """Write ``report.md`` and ``report.html`` in ``run_dir``; return the HTML path."""
    import datasets
    from surrogate import plots
    from surrogate.train import MetricsLog

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    figures = run_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    timing_path = run_dir / "timings.json"
    all_timings = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    all_timings.update(timings or {})
    timing_path.write_text(json.dumps(all_timings, indent=2))

    info = datasets.dataset_info(data_dir)
    doc = _Doc(f"Run report: {run_dir.name}")
    _front_section(doc, run_dir)
    doc.p(
        f"Solver `{info.get('solver')}` on grid {tuple(info['grid']['num_points'])} "
        f"(axes {tuple(info['grid']['axes'])}), output interval dt = {info['dt']:g}; "
        f"variables {', '.join(info['variables'])}. Run directory: {run_dir}."
    )

    doc.h("Dataset")
    counts = info.get("num_trajectories") or {}
    rows = [
        [k, v] for k, v in (counts.items() if isinstance(counts, Mapping) else [("all", counts)])
    ]
    doc.table(["split", "trajectories"], rows + [["frames per trajectory", info.get("num_frames")]])
    doc.p(
        f"Dataset directory: {data_dir}. Solver configuration: {json.dumps(info.get('solver_config'))}."
    )
    val_path = run_dir / "validation.json"
    if val_path.exists():
        val = json.loads(val_path.read_text())
        doc.p(f"Validation: {'PASSED' if val['ok'] else 'FAILED'} ({val.get('wall_s', 0):.1f} s).")
        doc.pre(val.get("report", ""))

    records = MetricsLog.read(run_dir / "train")
    if records:
        doc.h("Training")
        plot_records = [
            {
                "step": r["step"],
                "loss": r["loss"],
                "lr": r.get("lr"),
                **({"val_loss": r["val_nrmse"]} if r.get("val_nrmse") is not None else {}),
            }
            for r in records
        ]
        plots.plot_training_curves(plot_records, figures / "training.png")
        last = records[-1]
        shipped = ""
        meta_path = run_dir / "train" / "training.json"
        if meta_path.exists():
            best_step = json.loads(meta_path.read_text()).get("best_step")
            if best_step is not None:
                shipped = f" The shipped model is the one of step {best_step} (best validation)."
        doc.p(
            f"{last['step']} optimizer steps; final training loss {last['loss']:.3g} (MSE in units "
            "of the one-step-change std); validation: normalised RMSE of rollouts." + shipped
        )
        doc.img("figures/training.png", "Training loss and validation rollout error against step")

    ev_path = run_dir / "evaluation.nc"
    if ev_path.exists():
        from surrogate.evaluate import load_evaluation

        ev = load_evaluation(ev_path)
        doc.h("Skill against lead time")
        header = [
            "model",
            "variable",
            "RMSE (last lead)",
            "ACC (last lead)",
            "valid time (ACC > 0.6)",
            "rollout wall time [s]",
        ]
        rows = []
        for m in ev["model"].values:
            if str(m) == "truth":
                continue
            for v in ev["variable"].values:
                sel = {"model": m, "variable": v}
                rows.append(
                    [
                        str(m),
                        str(v),
                        float(ev["rmse"].sel(sel).isel(lead_time=-1)),
                        float(ev["acc"].sel(sel).isel(lead_time=-1)),
                        float(ev["valid_time"].sel(sel)),
                        float(ev["wall_time"].sel(model=m)),
                    ]
                )
        doc.table(header, rows)
        for name, caption in (
            (
                "skill.png",
                "RMSE and anomaly correlation against lead time: surrogate, persistence, coarse solver",
            ),
            ("spectra.png", "Power spectra of forecasts and truth at selected lead times"),
            ("snapshots.png", "Truth / surrogate forecast / error"),
            ("rollout.gif", "Animation of a surrogate rollout beside the truth"),
        ):
            if (figures / name).exists():
                doc.img(f"figures/{name}", caption)

    hy_path = run_dir / "hybrid" / "summary.json"
    if hy_path.exists():
        hy = json.loads(hy_path.read_text())
        doc.h("Hybrid runner")
        lead_t = hy["short_lead_steps"] * hy["dt"]

        def row(name, s):
            return [
                name,
                s.get("solver_fraction"),
                s.get("wall_time"),
                s.get("compile_time"),
                s.get("speedup", 1.0 if name == "pure solver" else None),
                ", ".join(f"{k}={_fmt(v)}" for k, v in (s.get("short_lead_rmse") or {}).items())
                or "0",
                ", ".join(
                    f"{k}={_fmt(v)}"
                    for k, v in (s.get("long_run_spectrum_max_rel_error") or {}).items()
                )
                or "0",
            ]

        header = [
            "run",
            "solver fraction",
            "wall time [s]",
            "compile time [s]",
            "speed-up",
            f"RMSE at t = {lead_t:g}",
            "long-run spectrum max rel. error",
        ]
        rows = [
            row("pure solver", hy["solver"]),
            row("pure surrogate", hy["surrogate"]),
            row("hybrid (configured)", hy["hybrid"]),
        ]
        for r in (hy.get("sweep") or {}).get("rows", []):
            rows.append(row(f"hybrid, {hy['sweep']['indicator']} <= {r['threshold']:g}", r))
        doc.table(header, rows)
        doc.p(
            f"Horizon {hy['num_steps']} steps of dt = {hy['dt']:g} for {hy['num_trajectories']} test trajectories; "
            "accuracy against the pure-solver run from the same initial states. Pure surrogate: "
            f"{hy['surrogate'].get('blown_up_members', 0)} of {hy['num_trajectories']} members blew up "
            f"(first at t = {_fmt(hy['surrogate'].get('first_blowup_time'))}). The long-run spectrum error is the "
            "largest relative deviation of the mean power spectrum over the second half of the run from the "
            "solver's, over the resolved wavenumbers."
        )
        bad = hy["hybrid"].get("nonfinite_members", 0)
        if bad:
            doc.p(
                f"The configured hybrid run went non-finite in {bad} members (first at t = "
                f"{_fmt(hy['hybrid'].get('first_nonfinite_time'))}): the solver failed on a state the "
                "surrogate handed it. A CourantNumber indicator in the policy rolls such steps back."
            )
        for key, val in hy.items():
            if not key.startswith("scenario_"):
                continue
            head = f"Out-of-distribution scenario {key[9:]} (initial anomalies x{val['amplitude_factor']:g})"
            if "skipped" in val:
                doc.p(f"{head}: skipped, the solver alone fails there ({val['skipped']}).")
                continue
            bad = val["hybrid"].get("nonfinite_members", 0)
            doc.p(
                f"{head}: hybrid used the solver on {100 * val['hybrid']['solver_fraction']:.0f}% of "
                f"steps (speed-up {_fmt(val['hybrid'].get('speedup'))})"
                + (f", and went non-finite in {bad} members" if bad else "")
                + f"; pure surrogate blew up in {val['surrogate_blown_up_members']} members, final "
                f"RMSE {val['surrogate_final_rmse']}."
            )
        for name, caption in (
            ("hybrid_tradeoff.png", "Accuracy versus speed-up over the indicator threshold sweep"),
            ("hybrid_rmse.png", "Error against the pure solver over time"),
            ("hybrid_engines.png", "Engine used per step and trajectory"),
            ("hybrid_spectra.png", "Long-run mean spectra"),
        ):
            if (figures / name).exists():
                doc.img(f"figures/{name}", caption)

    if all_timings:
        doc.h("Wall times")
        doc.table(["stage", "wall time [s]"], [[k, v] for k, v in all_timings.items()])
    versions = run_dir / "versions.json"
    if versions.exists():
        doc.h("Versions")
        doc.pre(versions.read_text())

    (run_dir / "report.md").write_text(doc.markdown())
    out = run_dir / "report.html"
    out.write_text(doc.html())
    return out
