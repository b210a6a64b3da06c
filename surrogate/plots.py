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
from typing import Any

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
    row per (variable, lead time). Truth and forecast share a colour scale; the error
    (forecast minus truth) has a symmetric diverging one.

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
            _truth_forecast_error(
                fig,
                axes[i],
                t,
                forecast[:, i],
                float(np.nanmax(np.abs(t))) or 1.0,
                title=v,
                extent=extent,
                labels=(_axis_label(grid, 0), f"time {_u(time_units)}"),
                colour_label=f"{v} {_u(units[v])}",
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
        for r, (v, c, n) in enumerate(rows):
            _truth_forecast_error(
                fig,
                axes[r],
                truth[n, c],
                forecast[n, c],
                float(np.nanmax(np.abs(truth[:, c]))) or 1.0,  # one scale over all times
                title=f"{v}, t = {_t(n * dt, time_units)}",
                extent=(0.0, lx, 0.0, ly),
                labels=(_axis_label(grid, 1), _axis_label(grid, 0)),
                colour_label=f"{v} {_u(units[v])}",
            )
    else:
        raise ValueError(f"plot_snapshots supports 1D and 2D grids, got a {grid.ndim}D grid")
    fig.suptitle(title)
    return _save(fig, path)


def _truth_forecast_error(
    fig, axes, truth, forecast, vmax, *, title, extent, labels, colour_label, aspect=None
) -> None:
    """One row of three images: truth and forecast on a shared ``+-vmax`` scale, and their
    difference on its own symmetric scale; ``labels`` are the (x, y) axis labels."""
    err = forecast - truth
    emax = (float(np.nanmax(np.abs(err))) if np.isfinite(err).any() else 1.0) or 1.0
    panels = [
        ("truth", truth, "RdBu_r", vmax),
        ("forecast", forecast, "RdBu_r", vmax),
        ("error", err, "PuOr_r", emax),
    ]
    for ax, (name, data, cmap, lim) in zip(axes, panels, strict=True):
        im = ax.imshow(
            data,
            origin="lower",
            aspect=aspect,
            extent=extent,
            cmap=cmap,
            vmin=-lim,
            vmax=lim,
            interpolation="nearest",
        )
        ax.set_title(f"{name}: {title}")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        fig.colorbar(im, ax=ax).set_label(colour_label)


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
    vmax = float(np.max(np.abs(t_all[finite]))) if finite.any() else 1.0
    vmax = vmax or 1.0
    if grid.ndim == 1:
        fig, axes = _figure(1, 1, (6.0, 3.4))
        ax = axes[0, 0]
        x = grid.coords()[grid.axes[0]]
        (line_t,) = ax.plot(x, t_all[0], label="truth", **_TRUTH_STYLE)
        (line_f,) = ax.plot(x, f_all[0], label="forecast", color="tab:orange")
        ax.set_ylim(-1.2 * vmax, 1.2 * vmax)
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
                data[0],
                origin="lower",
                extent=(0.0, lx, 0.0, ly),
                cmap="RdBu_r",
                vmin=-vmax,
                vmax=vmax,
            )
            ax.set_xlabel(_axis_label(grid, 1))
            ax.set_ylabel(_axis_label(grid, 0))
            ax.set_title(name)
            images.append(im)
        fig.colorbar(images[0], ax=list(axes[0]), shrink=0.85).set_label(f"{v} {_u(units[v])}")

        def update(n):
            images[0].set_data(t_all[n])
            images[1].set_data(f_all[n])
            fig.suptitle(f"{v}, t = {_t(n * dt, time_units)}")
            return tuple(images)

    else:
        raise ValueError(f"animate_rollout supports 1D and 2D grids, got a {grid.ndim}D grid")
    anim = animation.FuncAnimation(fig, update, frames=frames, blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=animation.PillowWriter(fps=fps), dpi=80)
    return path


# ---- training --------------------------------------------------------------------------
def plot_training_curves(log_records: Sequence[Mapping[str, Any]], path: PathLike) -> Path:
    """Training (and validation) loss against step on a log scale, learning rate beside.

    Args:
        log_records: dicts with keys ``step`` and ``loss``, optionally ``val_loss`` and
            ``lr`` (records without a key are skipped for that curve, so validation
            logged every few steps is fine).
        path: PNG file to write.

    Returns:
        The path written.

    Raises:
        ValueError: no record holds both ``step`` and ``loss``.
    """

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
    val, lr = series("val_loss"), series("lr")
    fig, axes = _figure(1, 2 if lr.shape[0] else 1, (5.0, 3.6))
    ax = axes[0, 0]
    ax.plot(loss[:, 0], loss[:, 1], label="training loss", color="tab:blue")
    if val.shape[0]:
        ax.plot(val[:, 0], val[:, 1], label="validation loss", color="tab:orange", marker="o")
    if np.all(loss[:, 1] > 0) and (val.shape[0] == 0 or np.all(val[:, 1] > 0)):
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step [-]")
    ax.set_ylabel("loss [-] (normalised units)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    ax.set_title("loss")
    if lr.shape[0]:
        ax_lr = axes[0, 1]
        ax_lr.plot(lr[:, 0], lr[:, 1], color="tab:green")
        ax_lr.set_xlabel("optimiser step [-]")
        ax_lr.set_ylabel("learning rate [-]")
        ax_lr.set_title("learning-rate schedule")
        ax_lr.grid(alpha=0.3)
    return _save(fig, path)


__all__ = [
    "animate_rollout",
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
    of the long-run mean spectrum. Points are labelled with threshold and solver share.

    Args:
        summary: ``hybrid/summary.json`` of :func:`surrogate.pipeline.stage_hybrid`.
        variables: variables to draw (one row each).
    """
    sweep = summary["sweep"]
    rows = sweep["rows"]
    lead_t = summary["short_lead_steps"] * summary["dt"]
    fig, axes = _figure(len(variables), 2, (5.2, 3.8))
    sp = np.array([r["speedup"] for r in rows])
    frac = np.array([r["solver_fraction"] for r in rows])
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
            err = np.array([r[key][v] for r in rows])
            ax.plot(sp, err, "o-", color="tab:green", label=f"hybrid ({sweep['indicator']} sweep)")
            for s_, e_, f_, r in zip(sp, err, frac, rows, strict=True):
                ax.annotate(
                    f"{r['threshold']:.2g}: {100 * f_:.0f}% solver",
                    (s_, e_),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
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
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)
