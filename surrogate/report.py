"""The run report: Markdown and a self-contained HTML page with the run's figures.

Built from what the stages left in the run directory (no recomputation), so it can be
regenerated at any time: ``hs-report`` or :func:`write_report`.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(x: Any, digits: int = 3) -> str:
    """A table cell: ``-`` for missing, ``> horizon`` for +inf (never reached), else ``.3g``."""
    if x is None:
        return "-"
    if isinstance(x, float | np.floating):
        if not np.isfinite(x):
            return "> horizon" if x > 0 else ("-inf" if x < 0 else "n/a")
        return f"{x:.{digits}g}"
    return str(x)


def _beyond(t: float, horizon: float) -> str | float:
    """A time that may never have been reached (+inf): ``"> horizon"`` with its value."""
    return f"> {horizon:g}" if math.isinf(t) and t > 0 else t


_INLINE_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    """Escape ``text`` for HTML and render Markdown inline code (`` `x` ``) as ``<code>``."""
    return _INLINE_CODE.sub(r"<code>\1</code>", html.escape(text))


# ---- the verdict -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Contender:
    """One stepper's cost and error on the same task, for :func:`verdict`.

    Attributes:
        name: how the sentences name it, e.g. ``"half-resolution solver (16x16)"``.
        cost_s: wall seconds for the common task (compile excluded); ``None`` or NaN:
            not measured.
        error: error against the reference (lower is better, any fixed measure such as
            the mean nRMSE over the horizon); ``None`` or NaN: not measured.
    """

    name: str
    cost_s: float | None = None
    error: float | None = None

    @property
    def has_cost(self) -> bool:
        return self.cost_s is not None and math.isfinite(self.cost_s)

    @property
    def has_error(self) -> bool:
        return self.error is not None and math.isfinite(self.error)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The answer to "is the learned stepper worth using here?".

    Attributes:
        answer: ``"yes"``, ``"no"``, ``"it depends"`` or ``"undetermined"``.
        sentences: the headline first, then one sentence per comparison.
        warnings: plain statements of what makes it not worth it (empty when none).
    """

    answer: str
    sentences: tuple[str, ...]
    warnings: tuple[str, ...]


def _times(a: float, b: float) -> str:
    """``a / b`` as ``"3.2x"``."""
    return f"{a / b:.3g}x" if b > 0 else "infinitely"


def verdict(
    surrogate: Contender,
    *,
    reference: Contender | None = None,
    same_cost: Contender | None = None,
    persistence: Contender | None = None,
    hybrid_speedup: float | None = None,
    blowup_fraction: float | None = None,
    error_label: str = "error",
) -> Verdict:
    """Whether the learned stepper is worth using, from costs and errors alone (pure).

    The learned stepper is compared with the reference solver (cost only: the
    reference defines zero error), with the solver of about the same cost (the coarse
    baseline of the evaluation) on both cost and error, and with persistence on error.
    It is worth using ("yes") when it is faster than the reference and at least as
    cheap and as accurate as the same-cost solver. It is not ("no") when it is slower
    than the reference, dominated by the same-cost solver (no cheaper and no more
    accurate), or no more accurate than persistence. A trade-off against the same-cost
    solver is "it depends"; missing figures give "undetermined".

    Args:
        surrogate: the learned stepper.
        reference: the reference solver (its ``error`` is ignored).
        same_cost: the solver of comparable cost, e.g. the half-resolution solver.
        persistence: the initial state held (its cost is ignored).
        hybrid_speedup: the hybrid runner's speed-up over the solver, if one ran.
        blowup_fraction: share of the learned stepper's long rollouts that blew up.
        error_label: what ``error`` measures, for the sentences.

    Returns:
        The :class:`Verdict`.
    """
    s = surrogate
    sentences: list[str] = []
    warnings: list[str] = []
    problems: list[str] = []
    faster_than_ref: bool | None = None
    dominates_coarse: bool | None = None
    err = f"{s.error:.3g}" if s.has_error else "not measured"

    if reference is not None and reference.has_cost and s.has_cost:
        faster_than_ref = s.cost_s < reference.cost_s
        if faster_than_ref:
            sentences.append(
                f"Against the {reference.name}: {_times(reference.cost_s, s.cost_s)} faster "
                f"({s.cost_s:.3g} s against {reference.cost_s:.3g} s), at {error_label} "
                f"{err} (the reference defines zero error)."
            )
        else:
            msg = (
                f"the learned stepper is slower than the {reference.name} "
                f"({s.cost_s:.3g} s against {reference.cost_s:.3g} s): it saves no time"
            )
            warnings.append(msg)
            problems.append(msg)
    else:
        sentences.append(
            f"The cost of the {reference.name if reference else 'reference solver'} was not "
            "measured (an evaluation without a solver, or one older than its timing): the "
            "speed-up over it is unknown."
        )

    if (
        same_cost is not None
        and same_cost.has_cost
        and same_cost.has_error
        and s.has_cost
        and s.has_error
    ):
        c = same_cost
        cheaper, better = s.cost_s <= c.cost_s, s.error <= c.error
        dominates_coarse = cheaper and better
        if dominates_coarse:
            sentences.append(
                f"Against the {c.name}: cheaper ({s.cost_s:.3g} s against {c.cost_s:.3g} s) "
                f"and more accurate ({error_label} {s.error:.3g} against {c.error:.3g})."
            )
        elif not cheaper and not better:
            strict = s.cost_s > c.cost_s and s.error > c.error
            how = "both slower and less accurate" if strict else "no faster and no more accurate"
            msg = (
                f"the learned stepper is dominated by the {c.name} (it is {how}: "
                f"{s.cost_s:.3g} s against {c.cost_s:.3g} s, {error_label} {s.error:.3g} "
                f"against {c.error:.3g})"
            )
            warnings.append(msg)
            problems.append(msg)
        elif cheaper:
            sentences.append(
                f"Against the {c.name}: {_times(c.cost_s, s.cost_s)} cheaper but less "
                f"accurate ({error_label} {s.error:.3g} against {c.error:.3g}); a cheaper "
                "solver setting might match it."
            )
        else:
            sentences.append(
                f"Against the {c.name}: more accurate ({error_label} {s.error:.3g} against "
                f"{c.error:.3g}) but {_times(s.cost_s, c.cost_s)} as costly."
            )
    else:
        sentences.append("No same-cost solver baseline was measured.")

    if persistence is not None and persistence.has_error and s.has_error:
        if s.error >= persistence.error:
            msg = (
                f"the learned stepper is no more accurate than {persistence.name} "
                f"({error_label} {s.error:.3g} against {persistence.error:.3g})"
            )
            warnings.append(msg)
            problems.append(msg)
        else:
            sentences.append(
                f"It beats {persistence.name} ({error_label} {persistence.error:.3g})."
            )
    if blowup_fraction is not None and math.isfinite(blowup_fraction) and blowup_fraction > 0:
        warnings.append(
            f"{100 * blowup_fraction:.0f}% of the learned stepper's long rollouts blew up"
        )
    if hybrid_speedup is not None and math.isfinite(hybrid_speedup) and hybrid_speedup < 1:
        warnings.append(
            f"the hybrid is slower than the solver (speed-up {hybrid_speedup:.3g}x): it "
            "saves no time"
        )

    if problems:
        answer, head = "no", f"No: {problems[0]}."
    elif faster_than_ref and dominates_coarse:
        answer = "yes"
        head = (
            f"Yes: the learned stepper is {_times(reference.cost_s, s.cost_s)} faster than the "
            f"{reference.name} and beats the {same_cost.name} on both cost and error."
        )
    elif faster_than_ref and dominates_coarse is False:
        answer = "it depends"
        head = (
            f"It depends: {_times(reference.cost_s, s.cost_s)} faster than the "
            f"{reference.name}, but a trade-off against the {same_cost.name} (below)."
        )
    else:
        answer = "undetermined"
        missing = []
        if faster_than_ref is None:
            missing.append("the reference solver's cost")
        if dominates_coarse is None:
            missing.append("a same-cost solver's cost and error")
        head = f"Undetermined: {' and '.join(missing)} not measured."
    return Verdict(answer, (head, *sentences), tuple(warnings))


# ---- blocks and their rendering --------------------------------------------------------
Block = tuple[str, Any]
"""One piece of the report: ``(kind, payload)``, kind ``"h"``, ``"p"``, ``"pre"``,
``"img"`` (payload ``(path, caption)``) or ``"table"`` (payload ``(header, rows)``, cells
already formatted). Sections return lists of blocks; :func:`_markdown` and :func:`_html`
render the same list."""


def _h(text: str) -> Block:
    """A section heading (``##``)."""
    return ("h", text)


def _p(text: str) -> Block:
    """A paragraph; Markdown inline code is rendered as ``<code>`` in HTML."""
    return ("p", text)


def _pre(text: str) -> Block:
    """A preformatted block (a code fence in Markdown)."""
    return ("pre", text)


def _img(path: str, caption: str) -> Block:
    """A figure: ``path`` relative to the run directory, and its caption."""
    return ("img", (path, caption))


def _table(header: list[str], rows: list[list[Any]]) -> Block:
    """A table; every cell is formatted by :func:`_fmt` now, so both renderings agree."""
    return ("table", (header, [[_fmt(c) for c in r] for r in rows]))


def _markdown(title: str, blocks: Sequence[Block]) -> str:
    """The report as Markdown: ``# title``, then every block followed by a blank line."""
    out = [f"# {title}", ""]
    for kind, b in blocks:
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


def _html(title: str, blocks: Sequence[Block]) -> str:
    """The report as one self-contained HTML page (inline style, figures linked)."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for kind, b in blocks:
        if kind == "h":
            body.append(f"<h2>{_inline_html(b)}</h2>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(b)}</p>")
        elif kind == "pre":
            body.append(f"<pre>{e(b)}</pre>")
        elif kind == "img":
            body.append(
                f'<figure><img src="{e(b[0])}" alt="{e(b[1])}"><figcaption>{_inline_html(b[1])}</figcaption></figure>'
            )
        elif kind == "table":
            header, rows = b
            body.append(
                "<table><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in header) + "</tr>"
            )
            body += [
                "<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in rows
            ]
            body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "img{max-width:100%}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "pre{background:#f7f7f7;padding:8px;overflow-x:auto}figcaption{color:#555;font-size:90%}"
        "code{background:#f3f3f3;padding:0 3px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )


def _figure_blocks(figures: Path, entries: Sequence[tuple[str, str]]) -> list[Block]:
    """A figure block for each ``(file name, caption)`` whose file exists in ``figures``."""
    return [
        _img(f"figures/{name}", caption) for name, caption in entries if (figures / name).exists()
    ]


# ---- the verdict sections --------------------------------------------------------------
_VERDICT_HEADING = "Verdict: is the learned stepper worth using here?"


def _verdict_section(
    front: Mapping[str, Any] | None,
    ev: Any,
    hy: Mapping[str, Any] | None,
    figures: Path,
) -> list[Block]:
    """The report's opening: from the front stage when it ran, else from the evaluation.

    Args:
        front: ``front.json`` of the run, or ``None``.
        ev: the evaluation table (``evaluation.nc``), or ``None``.
        hy: the hybrid summary (``hybrid/summary.json``), or ``None``.
        figures: the run's figure directory.

    Returns:
        The blocks; without either source, a heading and a "not available" paragraph.
    """
    if front is not None:
        return _front_section(front, figures)
    if ev is not None:
        return _evaluation_verdict_section(ev, hy)
    return [
        _h(_VERDICT_HEADING),
        _p("Not available: run the `evaluate` stage (or `front`) for the costs and errors."),
    ]


def _front_section(front: Mapping[str, Any], figures: Path) -> list[Block]:
    """The verdict first: speed-up at matched error, lead, error level, break-even."""
    from surrogate.front_stage import filter_sentence, floor_sentence, headline

    blocks = [_h(_VERDICT_HEADING), _p(headline(front) + ".")]
    for extra in (filter_sentence(front), floor_sentence(front)):
        if extra:
            blocks.append(_p(extra + "."))
    bound = front.get("bound")
    if bound == "upper":
        blocks.append(
            _p(
                "Its error is above every solver on the ladder: the figure compares it with the "
                "cheapest solver, so it is at most this fast at matched error; a cheaper, coarser "
                "solver could match it."
            )
        )
    elif bound == "lower":
        blocks.append(
            _p(
                "Its error is below that of the solvers it could be matched against: the figure "
                "is a lower bound."
            )
        )
    sp = front.get("speedup_at_matched_error")
    if sp is not None and sp < 1:
        blocks.append(
            _p("Warning: at matched error the solver ladder is faster than the learned stepper.")
        )
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
    header = [
        "kind",
        "stepper",
        "substeps",
        "cost [ms / trajectory / time unit]",
        f"nRMSE at lead {front.get('lead')}",
        "time to corr < 0.95",
        "long-run spectrum max rel. error",
        "enstrophy rel. error",
        "speed-up at matched error",
    ]
    blocks.append(_table(header, rows))
    blocks.append(
        _p(
            f"Batch {front.get('batch_size')}, compile time excluded, same device; errors "
            f"against the fine reference, both projected onto {front.get('comparison_grid')}. "
            + str(front.get("upfront_cost_note", ""))
        )
    )
    return blocks + _figure_blocks(
        figures, [("front.png", "Cost-accuracy front: solver ladder and learned stepper")]
    )


def _grid_name(points: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in points)


def _solver_names(ev) -> tuple[str, str]:
    """Names of the reference solver and of the coarse baseline, with their grids."""
    fine = [int(n) for n in np.atleast_1d(ev.attrs.get("grid_num_points", []))]
    coarse = [int(n) for n in np.atleast_1d(ev.attrs.get("coarse_num_points", []))]
    ref = f"reference solver ({_grid_name(fine)})" if fine else "reference solver"
    if not fine or not coarse:
        return ref, "coarse solver"
    factor = fine[0] / coarse[0]
    word = {2.0: "half", 4.0: "quarter"}.get(factor, f"1/{factor:g}")
    return ref, f"{word}-resolution solver ({_grid_name(coarse)})"


def _mean_nrmse(ev, model: str) -> float:
    """nRMSE of ``model`` averaged over variables and lead times after the first."""
    return float(ev["nrmse"].sel(model=model).isel(lead_time=slice(1, None)).mean())


def evaluation_verdict(ev, hybrid_summary: Mapping[str, Any] | None = None) -> Verdict:
    """:func:`verdict` from an evaluation table (``evaluation.nc``) and the hybrid summary.

    Costs are the rollout wall times of the evaluation (same trajectories, same horizon,
    compile excluded); the error is the nRMSE averaged over variables and lead times.
    """
    models = [str(m) for m in ev["model"].values]
    ref_name, coarse_name = _solver_names(ev)
    learned = str(ev.attrs.get("stepper_model", "surrogate"))

    def contender(model: str, name: str) -> Contender | None:
        if model not in models:
            return None
        cost = float(ev["wall_time"].sel(model=model))
        return Contender(name, cost, _mean_nrmse(ev, model))

    blowup = None
    if "blowup_fraction" in ev and learned in models:
        blowup = float(ev["blowup_fraction"].sel(model=learned))
    hybrid_speedup = None
    if hybrid_summary is not None:
        hybrid_speedup = (hybrid_summary.get("hybrid") or {}).get("speedup")
    return verdict(
        contender(learned, "learned stepper"),
        reference=Contender(ref_name, float(ev["wall_time"].sel(model="truth")), 0.0)
        if "truth" in models
        else None,
        same_cost=contender("coarse_solver", coarse_name),
        persistence=contender("persistence", "persistence"),
        hybrid_speedup=hybrid_speedup,
        blowup_fraction=blowup,
        error_label="mean nRMSE",
    )


def _evaluation_verdict_section(ev, hy: Mapping[str, Any] | None) -> list[Block]:
    """The verdict of runs without a front stage, from ``evaluation.nc``: the answer, the
    warnings, one sentence per comparison, and a cost and error table per model."""
    v = evaluation_verdict(ev, hy)
    blocks = [_h(_VERDICT_HEADING), _p(v.sentences[0])]
    blocks += [_p(f"Warning: {w}.") for w in v.warnings]
    blocks += [_p(sentence) for sentence in v.sentences[1:]]
    ref_name, coarse_name = _solver_names(ev)
    learned = str(ev.attrs.get("stepper_model", "surrogate"))
    names = {
        "truth": ref_name,
        learned: f"learned stepper ({learned})",
        "coarse_solver": coarse_name,
        "persistence": "persistence",
    }
    horizon = float(ev["lead_time"].values[-1])
    ref_cost = float(ev["wall_time"].sel(model="truth"))
    rows = []
    for m in ev["model"].values:
        m = str(m)
        cost = float(ev["wall_time"].sel(model=m))
        valid = float(ev["valid_time"].sel(model=m).min())
        rows.append(
            [
                names.get(m, m),
                cost,
                ref_cost / cost if np.isfinite(ref_cost) and cost > 0 else None,
                _mean_nrmse(ev, m),
                _beyond(valid, horizon),
            ]
        )
    header = [
        "stepper",
        "cost: rollout wall time [s]",
        "speed-up over the reference",
        f"mean nRMSE over lead times 0-{horizon:g}",
        f"valid time (ACC > {float(ev.attrs.get('acc_threshold', 0.6)):g}), worst variable",
    ]
    blocks.append(_table(header, rows))
    blocks.append(
        _p(
            f"Costs: rollouts of the same {ev.attrs.get('num_trajectories')} test trajectories "
            f"over lead times up to {horizon:g} (batch {ev.attrs.get('batch_size')}), compile "
            "excluded, same device; the reference is the solver re-run from the same initial "
            "states. Errors against the reference trajectories."
        )
    )
    return blocks


# ---- the other sections ----------------------------------------------------------------
def _setup_section(info: Mapping[str, Any], run_dir: Path) -> list[Block]:
    """One paragraph: solver, grid, output interval, variables and the run directory.

    Args:
        info: :func:`datasets.dataset_info` of the run's dataset.
        run_dir: the run directory.
    """
    return [
        _p(
            f"Solver `{info.get('solver')}` on grid {tuple(info['grid']['num_points'])} "
            f"(axes {tuple(info['grid']['axes'])}), output interval dt = {info['dt']:g}; "
            f"variables {', '.join(info['variables'])}. Run directory: {run_dir}."
        )
    ]


def _dataset_section(
    info: Mapping[str, Any], data_dir: Path, validation: Mapping[str, Any] | None
) -> list[Block]:
    """Trajectories per split, frames, the solver configuration and the validation report.

    Args:
        info: :func:`datasets.dataset_info` of the run's dataset.
        data_dir: the dataset directory.
        validation: ``validation.json`` of the run (needs ``ok``), or ``None``.
    """
    counts = info.get("num_trajectories") or {}
    rows = [
        [k, v] for k, v in (counts.items() if isinstance(counts, Mapping) else [("all", counts)])
    ]
    blocks = [
        _h("Dataset"),
        _table(
            ["split", "trajectories"], rows + [["frames per trajectory", info.get("num_frames")]]
        ),
        _p(
            f"Dataset directory: {data_dir}. Solver configuration: "
            f"{json.dumps(info.get('solver_config'))}."
        ),
    ]
    if validation is not None:
        val = validation
        blocks.append(
            _p(f"Validation: {'PASSED' if val['ok'] else 'FAILED'} ({val.get('wall_s', 0):.1f} s).")
        )
        blocks.append(_pre(val.get("report", "")))
    return blocks


def _training_section(records: Sequence[Mapping[str, Any]], best_step: int | None) -> list[Block]:
    """Optimizer steps, final loss, the shipped step and the training-curve figure.

    Args:
        records: the training metrics log (each with ``step``; the last with ``loss``);
            empty: no section.
        best_step: the step of the shipped (best validation) model, or ``None``.
    """
    if not records:
        return []
    last = records[-1]
    shipped = ""
    if best_step is not None:
        shipped = f" The shipped model is the one of step {best_step} (best validation)."
    return [
        _h("Training"),
        _p(
            f"{last['step']} optimizer steps; final training loss {last['loss']:.3g} (MSE in "
            "units of the one-step-change std); validation: normalised RMSE of rollouts." + shipped
        ),
        _img(
            "figures/training.png",
            "Training loss, validation rollout nRMSE and learning rate against step, on "
            "separate axes; dotted lines: rollout-curriculum switches",
        ),
    ]


_SKILL_FIGURES = (
    (
        "skill.png",
        "RMSE and anomaly correlation against lead time: surrogate, persistence, coarse solver",
    ),
    ("spectra.png", "Power spectra of forecasts and truth at selected lead times"),
    ("snapshots.png", "Truth / surrogate forecast / error"),
    ("rollout.gif", "Animation of a surrogate rollout beside the truth"),
)


def _skill_section(ev: Any, figures: Path) -> list[Block]:
    """RMSE and ACC at the last lead, valid time and wall time per model and variable.

    Args:
        ev: the evaluation table (``evaluation.nc``), or ``None`` (no section).
        figures: the run's figure directory (the skill figures that exist are shown).
    """
    if ev is None:
        return []
    horizon = float(ev["lead_time"].values[-1])
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
        name = "reference solver (truth)" if str(m) == "truth" else str(m)
        for v in ev["variable"].values:
            sel = {"model": m, "variable": v}
            rows.append(
                [
                    name,
                    str(v),
                    float(ev["rmse"].sel(sel).isel(lead_time=-1)),
                    float(ev["acc"].sel(sel).isel(lead_time=-1)),
                    _beyond(float(ev["valid_time"].sel(sel)), horizon),
                    float(ev["wall_time"].sel(model=m)),
                ]
            )
    return [
        _h("Skill against lead time"),
        _table(header, rows),
        _p(
            f'Last lead = {horizon:g}; a valid time "> {horizon:g}" means the ACC never '
            "dropped below the threshold within the horizon."
        ),
        *_figure_blocks(figures, _SKILL_FIGURES),
    ]


_HYBRID_FIGURES = (
    ("hybrid_tradeoff.png", "Accuracy versus speed-up over the indicator threshold sweep"),
    ("hybrid_rmse.png", "Error against the pure solver over time"),
    ("hybrid_engines.png", "Engine used per step and trajectory"),
    ("hybrid_spectra.png", "Long-run mean spectra"),
)


def _hybrid_row(name: str, s: Mapping[str, Any]) -> list[Any]:
    """A row of the hybrid table: one run's solver fraction, times, speed-up and errors."""
    return [
        name,
        s.get("solver_fraction"),
        s.get("wall_time"),
        s.get("compile_time"),
        s.get("speedup", 1.0 if name == "pure solver" else None),
        ", ".join(f"{k}={_fmt(v)}" for k, v in (s.get("short_lead_rmse") or {}).items()) or "0",
        ", ".join(
            f"{k}={_fmt(v)}" for k, v in (s.get("long_run_spectrum_max_rel_error") or {}).items()
        )
        or "0",
    ]


def _hybrid_section(hy: Mapping[str, Any] | None, figures: Path) -> list[Block]:
    """Pure solver, pure surrogate, the configured hybrid and the threshold sweep; blow-ups,
    non-finite members and the out-of-distribution scenarios.

    Args:
        hy: the hybrid summary (``hybrid/summary.json``), or ``None`` (no section).
        figures: the run's figure directory (the hybrid figures that exist are shown).
    """
    if hy is None:
        return []
    lead_t = hy["short_lead_steps"] * hy["dt"]
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
        _hybrid_row("pure solver", hy["solver"]),
        _hybrid_row("pure surrogate", hy["surrogate"]),
        _hybrid_row("hybrid (configured)", hy["hybrid"]),
    ]
    for r in (hy.get("sweep") or {}).get("rows", []):
        rows.append(_hybrid_row(f"hybrid, {hy['sweep']['indicator']} <= {r['threshold']:g}", r))
    blocks = [_h("Hybrid runner"), _table(header, rows)]
    n = hy["num_trajectories"]
    blocks.append(
        _p(
            f"Horizon {hy['num_steps']} steps of dt = {hy['dt']:g} for {n} test trajectories; "
            "accuracy against the pure-solver run from the same initial states. Pure surrogate: "
            + (
                f"{hy['surrogate']['blown_up_members']} of {n} members blew "
                f"up (first at t = {_fmt(hy['surrogate'].get('first_blowup_time'))}). "
                if hy["surrogate"].get("blown_up_members", 0)
                else f"no member blew up within the horizon (t > {hy['num_steps'] * hy['dt']:g}). "
            )
            + "The long-run spectrum error is the largest relative deviation of the mean power "
            "spectrum over the second half of the run from the solver's, over the resolved "
            "wavenumbers."
        )
    )
    bad = hy["hybrid"].get("nonfinite_members", 0)
    if bad:
        blocks.append(
            _p(
                f"The configured hybrid run went non-finite in {bad} members (first at t = "
                f"{_fmt(hy['hybrid'].get('first_nonfinite_time'))}): the solver failed on a state "
                "the surrogate handed it. A CourantNumber indicator in the policy rolls such "
                "steps back."
            )
        )
    blocks += _scenario_blocks(hy)
    return blocks + _figure_blocks(figures, _HYBRID_FIGURES)


def _scenario_blocks(hy: Mapping[str, Any]) -> list[Block]:
    """One paragraph per out-of-distribution scenario (``scenario_*`` keys of the summary)."""
    blocks = []
    for key, val in hy.items():
        if not key.startswith("scenario_"):
            continue
        head = (
            f"Out-of-distribution scenario {key[9:]} (initial anomalies "
            f"x{val['amplitude_factor']:g})"
        )
        if "skipped" in val:
            blocks.append(_p(f"{head}: skipped, the solver alone fails there ({val['skipped']})."))
            continue
        bad = val["hybrid"].get("nonfinite_members", 0)
        blocks.append(
            _p(
                f"{head}: hybrid used the solver on {100 * val['hybrid']['solver_fraction']:.0f}% "
                f"of steps (speed-up {_fmt(val['hybrid'].get('speedup'))})"
                + (f", and went non-finite in {bad} members" if bad else "")
                + f"; pure surrogate blew up in {val['surrogate_blown_up_members']} members, final "
                f"RMSE {val['surrogate_final_rmse']}."
            )
        )
    return blocks


def _wall_times_section(
    cumulative: Mapping[str, float],
    all_timings: Mapping[str, float],
    timings: Mapping[str, float],
) -> list[Block]:
    """Seconds per stage, summed over every invocation and for this one.

    Args:
        cumulative: stage -> seconds over all runs (``stage_times.json``).
        all_timings: stage -> seconds of ``timings.json`` (this run's included), the
            fallback for stages missing from ``cumulative``.
        timings: stage -> seconds of the invocation writing the report.

    Returns:
        No blocks when no stage was timed.
    """
    stages = list(dict.fromkeys([*cumulative, *all_timings]))
    if not stages:
        return []
    return [
        _h("Wall times"),
        _table(
            ["stage", "wall time over all runs [s]", "this run [s]"],
            [[k, cumulative.get(k, all_timings.get(k)), timings.get(k)] for k in stages],
        ),
        _p(
            "Over all runs: summed over every invocation in this run directory "
            "(stage_times.json), so a resumed stage shows its whole cost; this run: the "
            "invocation that wrote the report (a stage found up to date takes next to nothing)."
        ),
    ]


def _versions_section(versions: str | None) -> list[Block]:
    """The package versions the run recorded (``versions.json`` as text), if any."""
    if versions is None:
        return []
    return [_h("Versions"), _pre(versions)]


# ---- the report ------------------------------------------------------------------------
def write_report(
    run_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """Write ``report.md`` and ``report.html`` in ``run_dir`` from what the stages left there.

    Sections, in order: the verdict (front stage, else evaluation), the setup, the
    dataset and its validation, training, skill against lead time, the hybrid runner,
    wall times and versions; each is left out when its stage did not run.

    Args:
        run_dir: the run directory (read, and written: ``timings.json``,
            ``figures/training.png``, the two reports).
        data_dir: the run's dataset directory.
        timings: stage -> seconds of this invocation, merged into ``timings.json``.

    Returns:
        The path of ``report.html``.

    Raises:
        FileNotFoundError: ``data_dir`` holds no dataset.
    """
    from datasets.plumbing import atomic_write_text
    from surrogate import plots
    from surrogate.front_stage import read_stage_times

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    figures = run_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    all_timings = _record_timings(run_dir, timings)
    info = _dataset_info(data_dir)
    ev = _read_evaluation(run_dir)
    hy = _read_json(run_dir / "hybrid" / "summary.json")
    records, schedule, best_step = _read_training(run_dir)
    if records:
        plots.plot_training_curves(records, figures / "training.png", rollout_schedule=schedule)
    versions = run_dir / "versions.json"
    blocks = [
        *_verdict_section(_read_json(run_dir / "front.json"), ev, hy, figures),
        *_setup_section(info, run_dir),
        *_dataset_section(info, data_dir, _read_json(run_dir / "validation.json")),
        *_training_section(records, best_step),
        *_skill_section(ev, figures),
        *_hybrid_section(hy, figures),
        *_wall_times_section(read_stage_times(run_dir), all_timings, timings or {}),
        *_versions_section(versions.read_text() if versions.exists() else None),
    ]
    title = f"Run report: {run_dir.name}"
    atomic_write_text(run_dir / "report.md", _markdown(title, blocks), sync_directory=False)
    out = run_dir / "report.html"
    atomic_write_text(out, _html(title, blocks), sync_directory=False)
    return out


def _dataset_info(data_dir: Path) -> dict[str, Any]:
    """:func:`datasets.dataset_info` (imported here: the report module stays light)."""
    import datasets

    return datasets.dataset_info(data_dir)


def _read_json(path: Path) -> Any:
    """The parsed JSON file, or ``None`` when it does not exist."""
    return json.loads(path.read_text()) if path.exists() else None


def _record_timings(run_dir: Path, timings: Mapping[str, float] | None) -> dict[str, float]:
    """Merge ``timings`` into ``run_dir/timings.json`` (rewritten) and return the merge."""
    from datasets.plumbing import atomic_write_text

    timing_path = run_dir / "timings.json"
    all_timings = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    all_timings.update(timings or {})
    atomic_write_text(timing_path, json.dumps(all_timings, indent=2), sync_directory=False)
    return all_timings


def _read_evaluation(run_dir: Path) -> Any:
    """``run_dir/evaluation.nc`` loaded into memory, or ``None``."""
    path = run_dir / "evaluation.nc"
    if not path.exists():
        return None
    from surrogate.evaluate import load_evaluation

    return load_evaluation(path)


def _read_training(run_dir: Path) -> tuple[list[dict[str, Any]], Any, int | None]:
    """The training log, its rollout schedule and the shipped step, from ``run_dir/train``.

    Returns:
        ``(records, rollout_schedule, best_step)``; the last two are ``None`` when missing
        (and are only read when there are records).
    """
    from surrogate.train import MetricsLog

    records = MetricsLog.read(run_dir / "train")
    schedule = best_step = None
    if records:
        config_path = run_dir / "train" / "train_config.json"
        if config_path.exists():  # absolute switch steps, as training used them
            schedule = json.loads(config_path.read_text()).get("rollout_schedule")
        meta_path = run_dir / "train" / "training.json"
        if meta_path.exists():
            best_step = json.loads(meta_path.read_text()).get("best_step")
    return records, schedule, best_step
