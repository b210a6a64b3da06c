"""Figures of an evaluation: skill against lead time, spectra, snapshots, animations.

Every function draws on its own :class:`matplotlib.figure.Figure` attached to an Agg
canvas (no pyplot state, no display needed, safe in threads and on clusters), writes one
file and returns its path. Every axis carries a label with units: the variable units come
from the evaluation dataset (``variable_units``) or from the ``units`` argument, ``"1"``
meaning dimensionless (shown as ``[-]``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from matplotlib import animation
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from solvers.grid import Grid

PathLike = str | os.PathLike

_TRUTH_STYLE = {"color": "black", "linewidth": 2.0}


def _figure(nrows: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: PathLike, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _u(units: str) -> str:
    """Axis-label unit suffix; ``"1"`` (CF for dimensionless) reads as ``[-]``."""
    return "[-]" if units == "1" else f"[{units}]"


def _t(value: float, units: str) -> str:
    """A time (or other value) with its unit for titles: ``"20"`` or ``"20 s"``."""
    return f"{value:g}" if units == "1" else f"{value:g} {units}"


def _squared(units: str) -> str:
    return "1" if units == "1" else f"({units})^2"


def _variable_units(ds: xr.Dataset) -> dict[str, str]:
    variables = [str(v) for v in ds["variable"].values]
    if "variable_units" in ds.coords:
        return dict(zip(variables, map(str, ds["variable_units"].values), strict=True))
    return dict.fromkeys(variables, "1")


def _select(ds: xr.Dataset, dim: str, wanted: Sequence[str] | None) -> list[str]:
    have = [str(v) for v in ds[dim].values]
    if wanted is None:
        return have
    missing = [w for w in wanted if w not in have]
    if missing:
        raise ValueError(f"{dim} {missing} not in the evaluation; it has {have}")
    return list(wanted)


def _colors(models: Sequence[str]) -> dict[str, Any]:
    cycle = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(models)}


# ---- skill and spectra -----------------------------------------------------------------
def plot_skill(
    ds: xr.Dataset,
    path: PathLike,
    *,
    variables: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
) -> Path:
    """RMSE and ACC against lead time, one column per variable, one line per model.

    The ACC threshold of the evaluation (``acc_threshold`` attribute, 0.6 by default) is
    drawn as a dashed line and each model's valid time is marked on it. The ``truth`` row
    (zero error) is left out unless named in ``models``.

    Args:
        ds: result of :func:`surrogate.evaluate.evaluate` (or its netCDF, re-read).
        path: PNG file to write.
        variables: variables to show (default all).
        models: models to show (default all but ``truth``).

    Returns:
        The path written.
    """
    variables = _select(ds, "variable", variables)
    models = (
        _select(ds, "model", models)
        if models
        else [str(m) for m in ds["model"].values if str(m) != "truth"]
    )
    units = _variable_units(ds)
    time_units = ds["lead_time"].attrs.get("units", "1")
    threshold = float(ds.attrs.get("acc_threshold", 0.6))
    colors = _colors(models)
    lead = ds["lead_time"].values
    fig, axes = _figure(2, len(variables), (4.2, 3.2))
    for j, v in enumerate(variables):
        ax_rmse, ax_acc = axes[0, j], axes[1, j]
        for m in models:
            sel = {"model": m, "variable": v}
            ax_rmse.plot(lead, ds["rmse"].sel(sel).values, label=m, color=colors[m])
            ax_acc.plot(lead, ds["acc"].sel(sel).values, label=m, color=colors[m])
            vt = float(ds["valid_time"].sel(sel))
            if np.isfinite(vt):
                ax_acc.plot([vt], [threshold], marker="o", color=colors[m], markersize=5)
        ax_acc.axhline(threshold, color="gray", linestyle="--", linewidth=1.0)
        ax_acc.text(
            lead[-1], threshold, f" ACC = {threshold:g}", va="bottom", ha="right", color="gray"
        )
        ax_rmse.set_title(f"{v}")
        ax_rmse.set_ylabel(f"RMSE of {v} {_u(units[v])}")
        ax_acc.set_ylabel(f"ACC of {v} {_u('1')}")
        ax_acc.set_ylim(min(-0.1, np.nanmin(ds["acc"].sel(variable=v).values) - 0.05), 1.05)
        for ax in (ax_rmse, ax_acc):
            ax.set_xlabel(f"lead time {_u(time_units)}")
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4))
    fig.suptitle("Forecast skill against lead time")
    return _save(fig, path)


def plot_spectra(
    ds: xr.Dataset,
    path: PathLike,
    *,
    variables: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
) -> Path:
    """Power spectra (log-log), truth against models, at the stored lead times.

    One row per variable, one column per ``lead_time_sel``; the truth in thick black.
    Zero power (e.g. above a coarse model's cut-off) is not drawn.

    Args:
        ds: result of :func:`surrogate.evaluate.evaluate`.
        path: PNG file to write.
        variables: variables to show (default all).
        models: models to show (default all; ``truth`` is always drawn).

    Returns:
        The path written.
    """
    variables = _select(ds, "variable", variables)
    models = _select(ds, "model", models)
    units = _variable_units(ds)
    k = ds["wavenumber"].values
    k_units = ds["wavenumber"].attrs.get("units", "1")
    time_units = ds["lead_time_sel"].attrs.get("units", "1")
    leads = ds["lead_time_sel"].values
    colors = _colors([m for m in models if m != "truth"])
    fig, axes = _figure(len(variables), len(leads), (3.8, 3.2))
    positive = k > 0
    for i, v in enumerate(variables):
        for j, t in enumerate(leads):
            ax = axes[i, j]
            order = ["truth"] + [m for m in models if m != "truth"]
            for m in order:
                if m not in ds["model"].values:
                    continue
                e = ds["spectrum"].sel(model=m, variable=v).isel(lead_time_sel=j).values
                e = np.where(e > 0, e, np.nan)[positive]
                style = _TRUTH_STYLE if m == "truth" else {"color": colors[m], "linewidth": 1.2}
                ax.loglog(k[positive], e, label=m, **style)
            ax.set_title(f"{v}, lead time {_t(t, time_units)}")
            ax.set_xlabel(f"wavenumber k {_u(k_units)}")
            ax.set_ylabel(f"power of {v} {_u(_squared(units[v]))}")
            ax.grid(alpha=0.3, which="both")
            # Hide the round-off floor (float32 FFTs leave ~1e-15 of the peak).
            peak = np.nanmax(ds["spectrum"].sel(variable=v).isel(lead_time_sel=j).values)
            if np.isfinite(peak) and peak > 0:
                ax.set_ylim(bottom=peak * 1e-12)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5))
    fig.suptitle("Power spectra (sum over wavenumbers = mean square)")
    return _save(fig, path)


# ---- fields ----------------------------------------------------------------------------
class FieldScale(NamedTuple):
    """How a field is coloured: ``cmap`` over ``[vmin, vmax]`` of ``values - offset``.

    ``kind`` is ``"diverging"`` (zero-centred), ``"anomaly"`` (the anomaly from the mean
    ``offset``, on a diverging map centred on zero) or ``"sequential"``.
    """

    kind: str
    cmap: str
    vmin: float
    vmax: float
    offset: float = 0.0

    def label(self, name: str) -> str:
        """``name`` as shown: ``"h"``, or ``"h - 10 (anomaly from mean)"``."""
        if self.kind == "anomaly":
            return f"{name} - {self.offset:.4g} (anomaly from mean)"
        return name


# A range straddling zero counts as symmetric when its smaller side is at least this
# share of the larger one (vorticity, velocity); otherwise zero is not a natural centre.
_SYMMETRY_RATIO = 1.0 / 3.0
# A one-signed field reaching within this share of its extreme to zero (a concentration,
# a power) is drawn from zero on a sequential map.
_TOUCHES_ZERO = 0.05


def field_scale(values: np.ndarray) -> FieldScale:
    """Choose a colour scale for a field from its values (NaN and Inf ignored).

    - zero-centred diverging map (``RdBu_r``, ``+-max|u|``) when the range straddles zero
      roughly symmetrically (the smaller side at least 1/3 of the larger);
    - sequential map (``viridis``) from zero when the field is one-signed and reaches
      (within 5 % of its extreme) zero;
    - otherwise the anomaly from the mean on a zero-centred diverging map: a water
      height of 10 +- 0.1 shows its 0.1 structure instead of one flat colour.

    Args:
        values: any array of the field (e.g. all frames of one variable).

    Returns:
        The :class:`FieldScale`; draw ``values - scale.offset`` with its ``cmap``,
        ``vmin``, ``vmax``.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return FieldScale("diverging", "RdBu_r", -1.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if lo < 0.0 < hi and min(-lo, hi) >= _SYMMETRY_RATIO * max(-lo, hi):
        lim = max(-lo, hi)
        return FieldScale("diverging", "RdBu_r", -lim, lim)
    if lo >= 0.0 and hi > 0.0 and lo <= _TOUCHES_ZERO * hi:
        return FieldScale("sequential", "viridis", 0.0, hi)
    if hi <= 0.0 and lo < 0.0 and -hi <= _TOUCHES_ZERO * -lo:
        return FieldScale("sequential", "viridis", lo, 0.0)
    mean = float(v.mean())
    lim = max(abs(lo - mean), abs(hi - mean)) or 1.0
    return FieldScale("anomaly", "RdBu_r", -lim, lim, mean)


def _meta(state_shape, variables, units):
    num_channels = state_shape[0]
    variables = (
        tuple(variables) if variables is not None else tuple(f"var{c}" for c in range(num_channels))
    )
    if len(variables) != num_channels:
        raise ValueError(
            f"variables {variables} do not match the {num_channels} channels of the states"
        )
    units = dict(units or {})
    return variables, {v: str(units.get(v, "1")) for v in variables}


def _check_pair(truth, forecast, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    truth, forecast = np.asarray(truth), np.asarray(forecast)
    if truth.shape != forecast.shape:
        raise ValueError(
            f"truth {truth.shape} and forecast {forecast.shape} must have the same shape"
        )
    if truth.ndim != 2 + grid.ndim or tuple(truth.shape[2:]) != grid.num_points:
        raise ValueError(
            f"trajectories must be (T, C, *spatial) with spatial {grid.num_points}, got "
            f"{truth.shape}"
        )
    return truth, forecast


def _axis_label(grid: Grid, i: int) -> str:
    return f"{grid.axes[i]} {_u(grid.length_units)}"


def plot_snapshots(
    truth: np.ndarray,
    forecast: np.ndarray,
    grid: Grid,
    path: PathLike,
    *,
    dt: float = 1.0,
    lead_indices: Sequence[int] | None = None,
    variables: Sequence[str] | None = None,
    units: Mapping[str, str] | None = None,
    time_units: str = "1",
    title: str = "truth / forecast / error",
) -> Path:
    """Truth, forecast and error of one trajectory side by side.

    1D grids give space-time (Hovmoeller) diagrams over all frames, one row per variable;
    2D grids give images at ``lead_indices`` (default: first, middle and last frame), one
    row per (variable, lead time). Truth and forecast share a colour scale chosen per
    variable from the truth by :func:`field_scale` (zero-centred diverging, sequential,
    or the anomaly from the mean, said so in the titles); the error (forecast minus
    truth) has a symmetric diverging one.

    Args:
        truth: ``(T, C, *spatial)`` reference trajectory, frame ``i`` at ``i * dt``.
        forecast: same shape.
        grid: the states' grid (coordinates and length units).
        path: PNG file to write.
        dt: time between frames (``time_units``).
        lead_indices: frames shown in 2D.
        variables: channel names (default ``var0, var1, ...``).
        units: units per variable (default ``"1"``).
        time_units: unit of ``dt``.
        title: figure title.

    Returns:
        The path written.
    """
    truth, forecast = _check_pair(truth, forecast, grid)
    variables, units = _meta(truth.shape[1:], variables, units)
    num_frames = truth.shape[0]
    if grid.ndim == 1:
        fig, axes = _figure(len(variables), 3, (4.0, 3.4))
        extent = (0.0, grid.domain_length[0], 0.0, (num_frames - 1) * dt)
        for i, v in enumerate(variables):
            t = truth[:, i]
            scale = field_scale(t)
            _truth_forecast_error(
                fig,
                axes[i],
                t,
                forecast[:, i],
                scale,
                title=v,
                extent=extent,
                labels=(_axis_label(grid, 0), f"time {_u(time_units)}"),
                colour_label=f"{scale.label(v)} {_u(units[v])}",
                error_label=f"error of {v} {_u(units[v])}",
                aspect="auto",
            )
    elif grid.ndim == 2:
        if lead_indices is None:
            lead_indices = sorted({0, (num_frames - 1) // 2, num_frames - 1})
        lead_indices = [int(i) for i in lead_indices]
        if any(not 0 <= i < num_frames for i in lead_indices):
            raise ValueError(f"lead_indices {lead_indices} must lie in [0, {num_frames})")
        rows = [(v, i, n) for i, v in enumerate(variables) for n in lead_indices]
        ly, lx = grid.domain_length
        # Panels sized to the domain's aspect so that images fill their axes (and the
        # colour bars match the images).
        panel_height = float(np.clip(2.6 * ly / lx, 0.8, 6.0)) + 1.1
        fig, axes = _figure(len(rows), 3, (3.8, panel_height))
        scales = {c: field_scale(truth[:, c]) for c in range(len(variables))}  # all times
        for r, (v, c, n) in enumerate(rows):
            _truth_forecast_error(
                fig,
                axes[r],
                truth[n, c],
                forecast[n, c],
                scales[c],
                title=f"{v}, t = {_t(n * dt, time_units)}",
                extent=(0.0, lx, 0.0, ly),
                labels=(_axis_label(grid, 1), _axis_label(grid, 0)),
                colour_label=f"{scales[c].label(v)} {_u(units[v])}",
                error_label=f"error of {v} {_u(units[v])}",
            )
    else:
        raise ValueError(f"plot_snapshots supports 1D and 2D grids, got a {grid.ndim}D grid")
    anomalies = [
        f"{v} as its anomaly from the mean {sc.offset:.4g}"
        for v, sc in zip(
            variables, (field_scale(truth[:, c]) for c in range(len(variables))), strict=True
        )
        if sc.kind == "anomaly"
    ]
    fig.suptitle(title + (f" ({'; '.join(anomalies)})" if anomalies else ""))
    return _save(fig, path)


def _truth_forecast_error(
    fig,
    axes,
    truth,
    forecast,
    scale,
    *,
    title,
    extent,
    labels,
    colour_label,
    error_label,
    aspect=None,
) -> None:
    """One row of three images: truth and forecast on a shared :class:`FieldScale`, and
    their difference on its own symmetric scale; ``labels`` are the (x, y) axis labels."""
    err = forecast - truth
    emax = (
        float(np.nanmax(np.abs(err[np.isfinite(err)]))) if np.isfinite(err).any() else 1.0
    ) or 1.0
    panels = [
        ("truth", truth - scale.offset, scale.cmap, (scale.vmin, scale.vmax)),
        ("forecast", forecast - scale.offset, scale.cmap, (scale.vmin, scale.vmax)),
        ("error", err, "PuOr_r", (-emax, emax)),
    ]
    bar_labels = (colour_label, colour_label, error_label)
    for ax, (name, data, cmap, (lo, hi)), bar_label in zip(axes, panels, bar_labels, strict=True):
        im = ax.imshow(
            data,
            origin="lower",
            aspect=aspect,
            extent=extent,
            cmap=cmap,
            vmin=lo,
            vmax=hi,
            interpolation="nearest",
        )
        ax.set_title(f"{name}: {title}")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        fig.colorbar(im, ax=ax).set_label(bar_label)


def animate_rollout(
    truth: np.ndarray,
    forecast: np.ndarray,
    grid: Grid,
    path: PathLike,
    *,
    dt: float = 1.0,
    variable_index: int = 0,
    variables: Sequence[str] | None = None,
    units: Mapping[str, str] | None = None,
    time_units: str = "1",
    fps: int = 8,
    max_frames: int = 200,
) -> Path:
    """GIF of a rollout against the truth (Pillow writer; Pillow ships with matplotlib).

    1D: truth and forecast as lines over space; 2D: truth and forecast images side by
    side with a shared colour bar. One GIF frame per trajectory frame (at most
    ``max_frames``, evenly strided).

    Args:
        truth: ``(T, C, *spatial)``.
        forecast: same shape.
        grid: the states' grid.
        path: ``.gif`` file to write.
        dt: time between frames (``time_units``).
        variable_index: channel to show.
        variables, units, time_units: metadata for labels.
        fps: frames per second of the GIF (>= 1).
        max_frames: cap on the number of GIF frames (>= 1).

    Returns:
        The path written.
    """
    truth, forecast = _check_pair(truth, forecast, grid)
    variables, units = _meta(truth.shape[1:], variables, units)
    if not 0 <= variable_index < len(variables):
        raise ValueError(f"variable_index must be in [0, {len(variables)}), got {variable_index}")
    if fps < 1 or max_frames < 1:
        raise ValueError(f"fps and max_frames must be >= 1, got {fps} and {max_frames}")
    v = variables[variable_index]
    t_all, f_all = truth[:, variable_index], forecast[:, variable_index]
    stride = max(1, -(-t_all.shape[0] // max_frames))
    frames = list(range(0, t_all.shape[0], stride))
    finite = np.isfinite(t_all)
    scale = field_scale(t_all)
    if grid.ndim == 1:
        fig, axes = _figure(1, 1, (6.0, 3.4))
        ax = axes[0, 0]
        x = grid.coords()[grid.axes[0]]
        (line_t,) = ax.plot(x, t_all[0], label="truth", **_TRUTH_STYLE)
        (line_f,) = ax.plot(x, f_all[0], label="forecast", color="tab:orange")
        lo, hi = (
            (float(t_all[finite].min()), float(t_all[finite].max())) if finite.any() else (-1, 1)
        )
        pad = 0.1 * (hi - lo) or 1.0  # the data's own range: a mean of 10 is not centred on 0
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(_axis_label(grid, 0))
        ax.set_ylabel(f"{v} {_u(units[v])}")
        ax.legend(loc="upper right", fontsize="small")

        def update(n):
            line_t.set_ydata(t_all[n])
            line_f.set_ydata(f_all[n])
            ax.set_title(f"t = {_t(n * dt, time_units)}")
            return line_t, line_f

    elif grid.ndim == 2:
        fig, axes = _figure(1, 2, (3.8, 3.4))
        ly, lx = grid.domain_length
        images = []
        for ax, name, data in zip(axes[0], ("truth", "forecast"), (t_all, f_all), strict=True):
            im = ax.imshow(
                data[0] - scale.offset,
                origin="lower",
                extent=(0.0, lx, 0.0, ly),
                cmap=scale.cmap,
                vmin=scale.vmin,
                vmax=scale.vmax,
            )
            ax.set_xlabel(_axis_label(grid, 1))
            ax.set_ylabel(_axis_label(grid, 0))
            ax.set_title(name)
            images.append(im)
        fig.colorbar(images[0], ax=list(axes[0]), shrink=0.85).set_label(
            f"{scale.label(v)} {_u(units[v])}"
        )

        def update(n):
            images[0].set_data(t_all[n] - scale.offset)
            images[1].set_data(f_all[n] - scale.offset)
            fig.suptitle(f"{scale.label(v)}, t = {_t(n * dt, time_units)}")
            return tuple(images)

    else:
        raise ValueError(f"animate_rollout supports 1D and 2D grids, got a {grid.ndim}D grid")
    anim = animation.FuncAnimation(fig, update, frames=frames, blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=animation.PillowWriter(fps=fps), dpi=80)
    return path


# ---- training --------------------------------------------------------------------------
def plot_training_curves(
    log_records: Sequence[Mapping[str, Any]],
    path: PathLike,
    *,
    rollout_schedule: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Training loss, validation error and learning rate against step, each on its own axes.

    The training loss (MSE in normalised units, log scale when positive) and the
    validation error (rollout nRMSE, or any ``val_loss``) are different quantities, so
    they are not drawn on one axis. The rollout-curriculum switch points (the steps at
    which the rollout length ``k`` changes) are marked on every panel.

    Args:
        log_records: dicts with keys ``step`` and ``loss``, optionally ``val_nrmse`` (or
            ``val_loss``), ``lr`` and ``rollout_k`` (records without a key are skipped
            for that curve, so validation logged every few steps is fine).
        path: PNG file to write.
        rollout_schedule: the curriculum ``[[step, k], ...]`` with absolute steps (as in
            ``train_config.json``); default: the steps at which ``rollout_k`` changes in
            the records.

    Returns:
        The path written.

    Raises:
        ValueError: no record holds both ``step`` and ``loss``.
    """
    fig = _training_figure(log_records, rollout_schedule)
    return _save(fig, path)


def curriculum_switches(
    log_records: Sequence[Mapping[str, Any]],
    rollout_schedule: Sequence[Sequence[int]] | None = None,
) -> list[tuple[float, int]]:
    """``(step, k)`` at which the rollout length changes to ``k`` (the first entry excluded).

    From ``rollout_schedule`` when given, else from consecutive records' ``rollout_k``
    (then at the logged step where the new ``k`` is first seen).
    """
    if rollout_schedule is not None:
        return [(float(st), int(k)) for st, k in list(rollout_schedule)[1:]]
    out, last = [], None
    for r in log_records:
        k = r.get("rollout_k")
        if k is None or "step" not in r:
            continue
        if last is not None and k != last:
            out.append((float(r["step"]), int(k)))
        last = k
    return out


def _training_figure(log_records, rollout_schedule) -> Figure:
    def series(key):
        pts = [
            (float(r["step"]), float(r[key]))
            for r in log_records
            if "step" in r and r.get(key) is not None
        ]
        return np.asarray(pts).reshape(-1, 2)

    loss = series("loss")
    if loss.shape[0] == 0:
        raise ValueError("plot_training_curves: no record holds both 'step' and 'loss'")
    val_key = "val_nrmse" if series("val_nrmse").shape[0] else "val_loss"
    val, lr = series(val_key), series("lr")
    panels = ["loss"] + (["val"] if val.shape[0] else []) + (["lr"] if lr.shape[0] else [])
    fig, axes = _figure(1, len(panels), (4.6, 3.6))
    ax_of = dict(zip(panels, axes[0], strict=True))
    ax = ax_of["loss"]
    ax.plot(loss[:, 0], loss[:, 1], color="tab:blue", label="training loss")
    if np.all(loss[:, 1] > 0):
        ax.set_yscale("log")
    ax.set_ylabel("training loss (MSE, normalised units) [-]")
    ax.set_title("training loss")
    if "val" in ax_of:
        ax = ax_of["val"]
        name = "validation rollout nRMSE" if val_key == "val_nrmse" else "validation loss"
        ax.plot(val[:, 0], val[:, 1], color="tab:orange", marker="o", label=name)
        if np.all(val[:, 1] > 0):
            ax.set_yscale("log")
        ax.set_ylabel(f"{name} [-]")
        ax.set_title(name)
    if "lr" in ax_of:
        ax = ax_of["lr"]
        ax.plot(lr[:, 0], lr[:, 1], color="tab:green", label="learning rate")
        ax.set_ylabel("learning rate [-]")
        ax.set_title("learning-rate schedule")
    switches = curriculum_switches(log_records, rollout_schedule)
    for ax in ax_of.values():
        ax.set_xlabel("optimiser step [-]")
        ax.grid(alpha=0.3, which="both")
        for st, k in switches:
            ax.axvline(st, color="gray", linestyle=":", linewidth=1.0)
            ax.text(
                st,
                1.0,
                f" k={k}",
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="left",
                fontsize=7,
                color="gray",
            )
    if switches:
        fig.suptitle("Training (dotted: rollout-curriculum switch to k steps)")
    return fig


__all__ = [
    "FieldScale",
    "animate_rollout",
    "curriculum_switches",
    "field_scale",
    "plot_skill",
    "plot_snapshots",
    "plot_spectra",
    "plot_training_curves",
]


# ---- hybrid runner figures -----------------------------------------------------------------
ENGINE_NAMES = ("solver", "surrogate", "fallback", "rollback")


def plot_hybrid_runs(
    runs: Mapping[str, Any], dt: float, path: PathLike, *, time_units: str = "1"
) -> Path:
    """RMSE against the pure-solver reference versus time, one line per run.

    Args:
        runs: name -> :class:`surrogate.hybrid.HybridResult` with ``rmse`` filled.
        dt: time between frames.
    """
    runs = {k: r for k, r in runs.items() if r.rmse is not None}
    if not runs:
        raise ValueError("plot_hybrid_runs: no run has RMSE against a reference")
    first = next(iter(runs.values()))
    variables = list(first.rmse)
    fig, axes = _figure(1, len(variables), (5.0, 3.6))
    colors = _colors(list(runs))
    for ax, v in zip(axes[0], variables, strict=True):
        for name, res in runs.items():
            finite = np.isfinite(res.rmse[v])
            count = finite.sum(axis=0)
            total = np.where(finite, res.rmse[v], 0.0).sum(axis=0)
            r = np.where(count > 0, total / np.maximum(count, 1), np.nan)  # mean of finite
            t = np.arange(r.size) * dt
            ax.semilogy(t, np.maximum(r, 1e-12), label=name, color=colors[name])
        ax.set_xlabel(f"time {_u(time_units)}")
        ax.set_ylabel(f"RMSE of {v} {_u(first.units.get(v, '1'))}")
        ax.set_title(f"{v}: error vs pure solver")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def plot_engine_timeline(result: Any, dt: float, path: PathLike, *, time_units: str = "1") -> Path:
    """Which engine advanced each member at each step (rows: members, columns: time)."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    engine = np.asarray(result.engine)
    fig, axes = _figure(1, 1, (8.0, 0.3 * engine.shape[0] + 1.6))
    ax = axes[0][0]
    cmap = ListedColormap(["tab:red", "tab:blue", "black", "tab:orange"])
    norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], cmap.N)
    t = np.arange(engine.shape[1] + 1) * dt
    members = np.arange(engine.shape[0] + 1)
    im = ax.pcolormesh(t, members, engine, cmap=cmap, norm=norm)
    cbar = fig.colorbar(im, ax=ax, ticks=[0, 1, 2, 3])
    cbar.ax.set_yticklabels(list(ENGINE_NAMES))
    ax.set_xlabel(f"time {_u(time_units)}")
    ax.set_ylabel("trajectory [-]")
    ax.set_title(f"engine per step (solver on {100 * result.solver_fraction:.0f}% of steps)")
    return _save(fig, path)


def plot_long_run_spectra(
    wavenumbers: np.ndarray,
    spectra: Mapping[str, np.ndarray],
    variables: Sequence[str],
    path: PathLike,
) -> Path:
    """Long-run mean power spectra of several runs (log-log), per variable."""
    fig, axes = _figure(1, len(variables), (5.0, 3.6))
    colors = _colors(list(spectra))
    k = np.asarray(wavenumbers)
    for i, (ax, v) in enumerate(zip(axes[0], variables, strict=True)):
        for name, s in spectra.items():
            s = np.asarray(s)[i]
            ok = (k > 0) & np.isfinite(s) & (s > 0)
            if ok.any():
                ax.loglog(k[ok], s[ok], label=name, color=colors[name])
        ax.set_xlabel("wavenumber k [1/length]")
        ax.set_ylabel(f"power of {v} [-]")
        ax.set_title(f"{v}: long-run mean spectrum")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def plot_hybrid_tradeoff(
    summary: Mapping[str, Any], variables: Sequence[str], path: PathLike
) -> Path:
    """Accuracy versus speed-up over a threshold sweep, pure solver and surrogate as end points.

    Left: RMSE against the solver at a short lead time; right: the largest relative error
    of the long-run mean spectrum. Each swept threshold has its own colour, named with its
    solver share in one legend beside the panels (labels written next to the points
    overlap as soon as two thresholds give similar speed-ups).

    Args:
        summary: ``hybrid/summary.json`` of :func:`surrogate.pipeline.stage_hybrid`.
        variables: variables to draw (one row each).
        path: PNG file to write.

    Returns:
        The path written.
    """
    return _save(_hybrid_tradeoff_figure(summary, variables), path)


def _hybrid_tradeoff_figure(summary: Mapping[str, Any], variables: Sequence[str]) -> Figure:
    from matplotlib import colormaps

    sweep = summary["sweep"]
    rows = sweep["rows"]
    lead_t = summary["short_lead_steps"] * summary["dt"]
    fig, axes = _figure(len(variables), 2, (5.2, 3.8))
    sp = np.array([r["speedup"] for r in rows], dtype=np.float64)
    frac = np.array([r["solver_fraction"] for r in rows], dtype=np.float64)
    cmap = colormaps["viridis"]
    point_colors = [cmap(x) for x in np.linspace(0.0, 0.9, max(len(rows), 1))]
    sur = summary.get("surrogate", {})
    for row_axes, v in zip(axes, variables, strict=True):
        for ax, key, label in (
            (row_axes[0], "short_lead_rmse", f"RMSE of {v} at t = {lead_t:g} [-]"),
            (
                row_axes[1],
                "long_run_spectrum_max_rel_error",
                f"max rel. error, long-run spectrum of {v} [-]",
            ),
        ):
            err = np.array([r[key][v] for r in rows], dtype=np.float64)
            ax.plot(sp, err, "-", color="0.7", linewidth=1.0, zorder=1)
            for s_, e_, f_, r, c in zip(sp, err, frac, rows, point_colors, strict=False):
                ax.plot(
                    [s_],
                    [e_],
                    "o",
                    color=c,
                    zorder=2,
                    label=f"hybrid, {sweep['indicator']} <= {r['threshold']:.3g} "
                    f"({100 * f_:.0f}% solver)",
                )
            if key == "short_lead_rmse":  # the reference itself: zero error, not drawable on log
                ax.plot([1.0], [0.0], "s", color="tab:red", label="pure solver (reference)")
            if sur.get("speedup") is not None and np.isfinite(sur.get(key, {}).get(v, np.nan)):
                ax.plot(
                    [sur["speedup"]], [sur[key][v]], "^", color="tab:blue", label="pure surrogate"
                )
            ax.set_xscale("log")
            ax.set_xlabel("speed-up over pure solver [-]")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        row_axes[1].set_yscale("log")  # spans orders of magnitude (a drifting surrogate)
        row_axes[0].set_title(f"{v}: short-lead accuracy vs speed")
        row_axes[1].set_title(f"{v}: long-run statistics vs speed")
    seen: dict[str, Any] = {}
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize=7)
    return fig
