"""The end-to-end stages, as plain functions: generate, validate, train, evaluate, hybrid.

Each stage reads what the earlier ones wrote under one run directory (and the dataset
directory), writes its own outputs atomically, and returns early when its output already
exists and is valid, so rerunning a pipeline resumes it. Nothing here imports Hydra: the
entry points in :mod:`surrogate.cli` turn configs into the objects these functions take.

Under ``jax.distributed`` every process calls every stage with the same arguments: the
work is shared (dataset shards, batch rows of training, evaluation and hybrid runs split
over a ``mesh``) and only process 0 writes the run directory's files; the caller puts a
barrier (:func:`surrogate.distributed.barrier`) between stages.

Run directory layout::

    run_dir/
      config.yaml, versions.json     resolved config and package versions
      validation.json                dataset validation report
      train/                         checkpoints/, best/, metrics.jsonl, metrics.csv
      forecaster/                    the trained bundle (best validation checkpoint)
      evaluation.nc                  skill tables (xarray)
      hybrid/                        run.nc, summary.json (threshold sweep, scenarios)
      figures/                       PNG and GIF figures
      report.md, report.html         the report
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import jax
import numpy as np

from surrogate.distributed import is_primary

log = logging.getLogger("surrogate.pipeline")


# ---- helpers ---------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> None:
    """Write a run-directory file atomically (fsynced; parent directories created)."""
    from datasets.plumbing import atomic_write_text

    atomic_write_text(path, text, parents=True, sync_directory=False)


# The distributions whose versions determine a run's results (``versions.json``).
VERSIONED_DISTRIBUTIONS = (
    "hybrid-surrogates",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "xarray",
    "netCDF4",
    "numpy",
)


def versions() -> dict[str, str]:
    """Versions of this package and of the libraries that determine results.

    Returns:
        ``{"python": ..., <each of VERSIONED_DISTRIBUTIONS>: version or "not installed",
        "jax_backend": "cpu" | "gpu" | ...}``, in that order.
    """
    from datasets.plumbing import distribution_versions

    return {
        "python": platform.python_version(),
        **distribution_versions(VERSIONED_DISTRIBUTIONS),
        "jax_backend": jax.default_backend(),
    }


def write_run_metadata(run_dir: Path, resolved_config_yaml: str) -> None:
    """Store the resolved config and the package versions next to what the run produces."""
    if not is_primary():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text(run_dir / "config.yaml", resolved_config_yaml)
    _write_text(run_dir / "versions.json", json.dumps(versions(), indent=2))


# ---- stage: generate -------------------------------------------------------------------
def stage_generate(
    solver, data_dir: Path, data_kwargs: Mapping[str, Any], *, config=None, progress=True
) -> Path:
    """Generate (or resume, or confirm complete) the dataset for ``solver`` in ``data_dir``."""
    import datasets

    t0 = time.perf_counter()
    path = datasets.generate(solver, data_dir, config=config, progress=progress, **data_kwargs)
    log.info("generate: dataset at %s (%.1f s)", path, time.perf_counter() - t0)
    return Path(path)


# ---- stage: validate -------------------------------------------------------------------
def stage_validate(data_dir: Path, run_dir: Path, *, num_resimulate: int = 2) -> dict[str, Any]:
    """Validate the dataset once per version of its files; store the report as JSON.

    The cached report is reused only while ``datasets.dataset_identity`` (the manifest's
    bytes and every shard's recorded sha256, size, mtime and ctime) is unchanged.

    Raises:
        RuntimeError: the dataset fails validation (the report names what failed).
    """
    import datasets

    out = run_dir / "validation.json"
    identity = datasets.dataset_identity(data_dir)
    if out.exists():
        prev = json.loads(out.read_text())
        if prev.get("dataset_identity") == identity and prev.get("ok"):
            log.info("validate: up to date (%s)", out)
            return prev
    t0 = time.perf_counter()
    report = datasets.validate(data_dir, num_resimulate=num_resimulate)
    record = {
        "ok": bool(report.passed),
        "dataset_identity": identity,
        "dataset": str(data_dir),
        "report": str(report),
        "checks": {name: bool(c.passed) for name, c in report.checks.items()},
        "wall_s": time.perf_counter() - t0,
    }
    if is_primary():
        _write_text(out, json.dumps(record, indent=2))
    if not report.passed:
        raise RuntimeError(f"dataset {data_dir} failed validation:\n{report}")
    log.info("validate: passed (%.1f s)", record["wall_s"])
    return record


# ---- stage: train ----------------------------------------------------------------------
def stage_train(
    data_dir: Path,
    run_dir: Path,
    *,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    train_config,
    progress: bool = True,
    provenance: Mapping[str, Any] | None = None,
    mesh=None,
    resume: bool | str = True,
    stepper: str = "forecaster",
):
    """Train a learned stepper on the dataset's train split; write the best one as a bundle.

    ``stepper`` is ``"forecaster"`` (the network alone) or ``"correction"`` (the dataset's
    solver on the dataset's grid, at its largest stable step, plus a network correction,
    trained through the solver: :mod:`surrogate.correction`).

    Returns the loaded forecaster. Skips training when the bundle exists; resumes from the
    checkpoints in ``run_dir/train`` when a previous run was interrupted (``resume`` as in
    :func:`surrogate.train.train`). Holds the run directory's lock throughout.
    """
    from surrogate.train import run_lock

    with run_lock(run_dir, enabled=is_primary()):
        return _stage_train(
            data_dir,
            run_dir,
            model_name=model_name,
            model_kwargs=model_kwargs,
            train_config=train_config,
            progress=progress,
            provenance=provenance,
            mesh=mesh,
            resume=resume,
            stepper=stepper,
        )


STEPPERS = ("forecaster", "correction")


def _stage_train(
    data_dir,
    run_dir,
    *,
    model_name,
    model_kwargs,
    train_config,
    progress,
    provenance,
    mesh,
    resume,
    stepper="forecaster",
):
    import datasets
    from surrogate import correction
    from surrogate.bundle import save_forecaster
    from surrogate.forecaster import ForecasterSpec
    from surrogate.train import init_forecaster, train

    if stepper not in STEPPERS:
        raise ValueError(f"stepper must be one of {STEPPERS}, got {stepper!r}")
    bundle = run_dir / "forecaster"
    info = datasets.dataset_info(data_dir)
    if (bundle / "bundle.json").exists():
        log.info("train: bundle exists (%s)", bundle)
        return correction.load_stepper(bundle, dataset_info={**info, "path": str(data_dir)})
    cfg = train_config
    loader = datasets.WindowLoader(
        data_dir,
        "train",
        batch_size=cfg.batch_size,
        history=cfg.history,
        horizon=cfg.max_rollout,
        seed=cfg.seed,
    )
    val_loader = None
    if cfg.validate_every:
        val_loader = datasets.WindowLoader(
            data_dir,
            "val",
            batch_size=cfg.batch_size,
            history=cfg.history,
            horizon=cfg.val_rollout_steps,
            seed=cfg.seed,
            shuffle=True,
            drop_last=False,
        )
    stats = loader.statistics
    spec = ForecasterSpec.create(
        model_name=model_name,
        model_kwargs=model_kwargs,
        variables=info["variables"],
        units=info.get("units", {}),
        long_names=info.get("long_names") or {},
        time_units=info.get("time_units", "1"),
        grid=info["grid"],
        dt=info["dt"],
        history=cfg.history,
        compute_dtype=cfg.compute_dtype,
        conserved=_conserved_means(info),
        provenance={
            "dataset": str(Path(data_dir).absolute()),
            "solver": info.get("solver"),
            "solver_config": info.get("solver_config"),
            "train_config": cfg.to_dict(),
            **(provenance or {}),
        },
    )
    if stepper == "correction":
        from solvers.grid import Grid
        from surrogate.front_stage import fine_solver_of, stepper_solver

        coarse = stepper_solver(fine_solver_of(data_dir), Grid.from_dict(info["grid"]))
        norm = correction.correction_statistics(coarse, loader)
        forecaster = correction.init_correction(coarse, spec, norm, seed=cfg.seed)
        log.info(
            "train: learned correction on %s (num_substeps=%d); correction std %s vs "
            "one-interval change std %s",
            "x".join(map(str, coarse.grid.num_points)),
            coarse.num_substeps,
            np.asarray(norm.delta_std).round(4).tolist(),
            np.asarray(stats.delta_std).round(4).tolist(),
        )
    else:
        forecaster = init_forecaster(spec, stats, seed=cfg.seed)
    t0 = time.perf_counter()
    result = train(
        forecaster,
        loader,
        cfg,
        run_dir / "train",
        val_loader=val_loader,
        progress=progress,
        mesh=mesh,
        resume=resume,
    )
    log.info("train: %d steps in %.1f s", result.step, time.perf_counter() - t0)
    if is_primary():
        if stepper == "correction":
            correction.save_correction(result.best_forecaster, bundle, overwrite=True)
        else:
            save_forecaster(result.best_forecaster, bundle, overwrite=True)
    return result.best_forecaster


def _conserved_means(info: Mapping[str, Any]) -> tuple[str, ...]:
    """The solver's exactly conserved means, from the dataset's recorded solver name."""
    from solvers import get_solver_class

    try:
        return tuple(get_solver_class(info["solver"]).conserved_means)
    except KeyError:
        return ()


# ---- stage: evaluate -------------------------------------------------------------------
def stage_evaluate(
    forecaster,
    solver,
    data_dir: Path,
    run_dir: Path,
    *,
    num_trajectories: int = 16,
    long_rollout_steps: int | None = None,
    coarsen_factor: int = 2,
    batch_size: int = 16,
    mesh=None,
):
    """Skill of the forecaster against the test split, with persistence and coarse-solver
    baselines; writes ``evaluation.nc`` and figures. Skips when ``evaluation.nc`` is newer
    than the bundle. With a ``mesh`` the rollouts' trajectory axis is split over its
    devices (:func:`surrogate.evaluate.evaluate`)."""
    import datasets
    from datasets.manifest import stored_trajectories
    from surrogate import plots
    from surrogate.evaluate import (
        evaluate,
        load_evaluation,
        record_provenance,
        rollout_batch,
        save_evaluation,
    )

    out = run_dir / "evaluation.nc"
    bundle = run_dir / "forecaster" / "bundle.json"
    figures = run_dir / "figures"
    if out.exists() and (not bundle.exists() or out.stat().st_mtime >= bundle.stat().st_mtime):
        log.info("evaluate: up to date (%s)", out)
        return load_evaluation(out)
    truth = datasets.load_trajectories(data_dir, "test")[:num_trajectories]
    stats = datasets.load_statistics(data_dir)
    t0 = time.perf_counter()
    ds = evaluate(
        forecaster,
        truth,
        statistics=stats,
        solver=solver,
        coarsen_factor=coarsen_factor,
        long_rollout_steps=long_rollout_steps,
        batch_size=batch_size,
        model_name="surrogate",
        mesh=mesh,
        trajectory_ids=stored_trajectories(datasets.read_manifest(data_dir), "test")[
            :num_trajectories
        ],
    )
    # A forecaster handed in directly (not loaded from this run's bundle) records none.
    ds = record_provenance(
        ds, dataset=data_dir, split="test", bundle=bundle.parent if bundle.exists() else None
    )
    if not is_primary():
        return ds
    # evaluation.nc marks the stage complete, so it is written last: a kill while the
    # figures are drawn leaves no evaluation.nc, and the rerun redoes the stage.
    figures.mkdir(parents=True, exist_ok=True)
    plots.plot_skill(ds, figures / "skill.png")
    plots.plot_spectra(ds, figures / "spectra.png")
    forecast = np.asarray(rollout_batch(forecaster, truth[:1, 0], truth.shape[1]))
    grid = solver.grid
    plots.plot_snapshots(
        truth[0],
        forecast[0],
        grid,
        figures / "snapshots.png",
        dt=solver.dt,
        variables=solver.variables,
        units=dict(solver.units),
        time_units=solver.time_units,
    )
    plots.animate_rollout(
        truth[0],
        forecast[0],
        grid,
        figures / "rollout.gif",
        dt=solver.dt,
        variables=solver.variables,
    )
    save_evaluation(ds, out)
    log.info("evaluate: done (%.1f s)", time.perf_counter() - t0)
    return ds


def load_trained(run_dir: Path, data_dir: Path):
    """The bundle written by :func:`stage_train`, checked against the dataset."""
    import datasets
    from surrogate.correction import load_stepper

    bundle = run_dir / "forecaster"
    if not (bundle / "bundle.json").exists():
        raise FileNotFoundError(f"no trained forecaster at {bundle}; run the train stage first")
    info = datasets.dataset_info(data_dir)
    return load_stepper(bundle, dataset_info={**info, "path": str(data_dir)})


# ---- stage: hybrid ---------------------------------------------------------------------
def _mean_spectrum(states: np.ndarray, grid, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum per variable averaged over members and frames ``start:``."""
    from surrogate.metrics import power_spectrum

    frames = np.asarray(states[:, start:])
    finite = np.all(np.isfinite(frames.reshape(frames.shape[0], -1)), axis=1)
    if not finite.any():
        k, _ = power_spectrum(np.zeros(frames.shape[2:], frames.dtype), grid)
        return np.asarray(k), np.full((frames.shape[2], np.asarray(k).size), np.nan)
    k, spec = power_spectrum(frames[finite], grid)
    return np.asarray(k), np.asarray(spec).reshape(-1, *np.asarray(spec).shape[-2:]).mean(axis=0)


def _finite_mean(values) -> float:
    """Mean over the finite entries (NaN when none is: every member went non-finite)."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _nonfinite(res, what: str) -> dict[str, Any]:
    """Members of a hybrid run that went non-finite, logged and summarised."""
    first = res.first_nonfinite_frame()
    bad = np.flatnonzero(first >= 0)
    if not bad.size:
        return {"nonfinite_members": 0, "first_nonfinite_time": None}
    t = float(res.t0 + first[bad].min() * res.dt)
    log.warning(
        "%s: %d of %d members went non-finite (first at t = %g): the solver failed on a "
        "state it was handed; see the CourantNumber indicator",
        what,
        bad.size,
        first.size,
        t,
    )
    return {"nonfinite_members": int(bad.size), "first_nonfinite_time": t}


def _resolved_band(k: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
    """``(C, K)`` bool: the wavenumbers of a reference spectrum worth comparing against.

    "Resolved": inside the 2/3-rule band and above round-off (1e-8 of the peak power).

    Args:
        k: ``(K,)`` wavenumbers of the spectrum (units of ``1 / length``).
        spectrum: ``(C, K)`` mean power per variable.
    """
    k_max = float(np.max(k)) if np.size(k) else 0.0
    return (spectrum > 1e-8 * spectrum.max(axis=-1, keepdims=True)) & (
        np.asarray(k)[None, :] <= (2.0 / 3.0) * k_max
    )


def _hybrid_scores(
    res,
    *,
    solver_run,
    solver_spectrum: np.ndarray,
    resolved: np.ndarray,
    grid,
    variables: list[str],
    lead: int,
    start: int,
) -> dict[str, Any]:
    """A run of the hybrid stage scored against the pure-solver run from the same states.

    For chaotic problems RMSE is meaningful at short leads only, so the long run is
    judged by its statistics: the mean spectrum over frames ``start:``, compared on the
    ``resolved`` band.

    Args:
        res: the :class:`~surrogate.hybrid.HybridResult` to score (``rmse`` filled).
        solver_run: the pure-solver run (the baseline of the speed-up).
        solver_spectrum: ``(C, K)`` its long-run mean spectrum; ``resolved`` its band.
        grid, variables: the state's grid and variable names.
        lead: the short lead step of the RMSE; start: first frame of the long run.

    Returns:
        ``res.summary(baseline=solver_run)`` with the non-finite members,
        ``short_lead_rmse`` and ``long_run_spectrum_max_rel_error`` (per variable) added,
        and ``spectrum``: the run's ``(C, K)`` long-run mean spectrum (not JSON; pop it).
    """
    _, spec = _mean_spectrum(res.states, grid, start)
    rel = np.where(resolved, np.abs(spec / np.where(resolved, solver_spectrum, 1.0) - 1.0), 0.0)
    out = {**res.summary(baseline=solver_run), **_nonfinite(res, "hybrid run")}
    out["short_lead_rmse"] = {v: _finite_mean(res.rmse[v][:, lead]) for v in variables}
    out["long_run_spectrum_max_rel_error"] = {
        v: float(np.nanmax(rel[i])) for i, v in enumerate(variables)
    }
    out["spectrum"] = spec
    return out


def stage_hybrid(
    runner,
    data_dir: Path,
    run_dir: Path,
    *,
    num_steps: int,
    num_trajectories: int,
    sweep_indicator: str | None = None,
    sweep_thresholds=(),
    scenarios: Mapping[str, Any] | None = None,
    short_lead_steps: int = 5,
) -> dict[str, Any]:
    """Hybrid runs against the pure solver and the pure surrogate, and a threshold sweep.

    Writes ``hybrid/run.nc`` (the configured policy's run and log), ``hybrid/summary.json``
    (per run and per swept threshold: solver fraction, wall time, speed-up, RMSE at
    ``short_lead_steps`` and the largest relative error of the long-run mean spectrum over
    the resolved wavenumbers) and figures. Accuracy is measured against the pure-solver
    run from the same initial states (the dataset's test split, continued past its stored
    frames); for chaotic problems RMSE is meaningful at short leads only, the long run is
    judged by its statistics (:func:`_hybrid_scores`). The sweep's runs are those of
    :func:`surrogate.hybrid.sweep_runs`. Skips when ``hybrid/summary.json`` is newer than
    the forecaster bundle.

    Args:
        runner: a configured :class:`surrogate.hybrid.HybridRunner`.
        num_steps: horizon in steps of ``dt`` (long enough for the long-run statistics).
        num_trajectories: number of test initial states.
        sweep_indicator, sweep_thresholds: the threshold sweep (skipped when empty).
        scenarios: extra named runs from modified initial states, e.g.
            ``{"amplitude_x2": 2.0}`` scales the initial anomalies (out of distribution).

    Raises:
        ValueError: ``sweep_indicator`` is not an indicator the policy checks (the message
            names ``hybrid.sweep.indicator``).
    """
    import datasets
    from solvers.rollout import NonFiniteError
    from surrogate import plots
    from surrogate.hybrid import AlwaysSurrogate, sweep_runs

    out_dir = run_dir / "hybrid"
    summary_path = out_dir / "summary.json"
    bundle = run_dir / "forecaster" / "bundle.json"
    if summary_path.exists() and (
        not bundle.exists() or summary_path.stat().st_mtime >= bundle.stat().st_mtime
    ):
        log.info("hybrid: up to date (%s)", summary_path)
        return json.loads(summary_path.read_text())
    if is_primary():
        out_dir.mkdir(parents=True, exist_ok=True)
    truth = datasets.load_trajectories(data_dir, "test")[:num_trajectories]
    x0 = truth[:, 0]
    grid = runner.solver.grid
    variables = list(runner.variables)
    dt = float(runner.solver.dt)
    solver_run = runner.run_solver_only(x0, num_steps)
    reference = solver_run.states
    k, spec_solver = _mean_spectrum(reference, grid, num_steps // 2)
    lead = max(1, min(short_lead_steps, num_steps))
    scores = partial(
        _hybrid_scores,
        solver_run=solver_run,
        solver_spectrum=spec_solver,
        resolved=_resolved_band(k, spec_solver),
        grid=grid,
        variables=variables,
        lead=lead,
        start=num_steps // 2,
    )

    surrogate_run = runner.with_policy(AlwaysSurrogate(), indicators=()).run(
        x0, num_steps, reference=reference, check_finite=False
    )
    # A hybrid run can fail where neither engine fails alone (the solver handed a surrogate
    # state outside its stability region): record such members instead of losing the stage.
    hybrid_run = runner.run(x0, num_steps, reference=reference, check_finite=False)
    if is_primary():
        hybrid_run.to_netcdf(out_dir / "run.nc")
    blowups = surrogate_run.first_nonfinite_frame()
    sur_scores, hyb_scores = scores(surrogate_run), scores(hybrid_run)
    spectra = {
        "solver": spec_solver,
        "surrogate": sur_scores.pop("spectrum"),
        "hybrid": hyb_scores.pop("spectrum"),
    }
    summary: dict[str, Any] = {
        "num_steps": int(num_steps),
        "num_trajectories": int(x0.shape[0]),
        "dt": dt,
        "short_lead_steps": int(lead),
        "solver": solver_run.summary(),
        "surrogate": {
            **sur_scores,
            "blown_up_members": int(np.sum(blowups >= 0)),
            "first_blowup_time": float(np.min(blowups[blowups >= 0]) * dt)
            if np.any(blowups >= 0)
            else None,
        },
        "hybrid": hyb_scores,
        "policy": runner.config().get("policy"),
    }
    runs = {"solver": solver_run, "surrogate": surrogate_run, "hybrid": hybrid_run}
    if sweep_indicator and len(sweep_thresholds):
        try:
            sweep = sweep_runs(
                runner,
                x0,
                num_steps,
                sweep_thresholds,
                indicator_name=sweep_indicator,
                reference=reference,
                check_finite=False,
            )
        except ValueError as e:
            raise ValueError(f"hybrid.sweep.indicator: {e}") from None
        rows = []
        for value, res in sweep:
            row = scores(res)
            row.pop("spectrum")
            rows.append({"threshold": value, **row})
        summary["sweep"] = {"indicator": sweep_indicator, "rows": rows}
    for name, factor in (scenarios or {}).items():
        mean = x0.mean(axis=tuple(range(2, x0.ndim)), keepdims=True)
        xs = mean + float(factor) * (x0 - mean)
        try:
            ref = runner.run_solver_only(xs, num_steps)
        except NonFiniteError as e:  # the scenario is outside what the solver can integrate
            log.warning("hybrid: scenario %s skipped: the solver alone fails (%s)", name, e)
            summary[f"scenario_{name}"] = {"amplitude_factor": float(factor), "skipped": str(e)}
            continue
        sur = runner.with_policy(AlwaysSurrogate(), indicators=()).run(
            xs, num_steps, reference=ref.states, check_finite=False
        )
        hyb = runner.run(xs, num_steps, reference=ref.states, check_finite=False)
        bl = sur.first_nonfinite_frame()
        summary[f"scenario_{name}"] = {
            "amplitude_factor": float(factor),
            "hybrid": {**hyb.summary(baseline=ref), **_nonfinite(hyb, f"scenario {name}: hybrid")},
            "surrogate_blown_up_members": int(np.sum(bl >= 0)),
            "surrogate_final_rmse": {v: _finite_mean(sur.rmse[v][:, -1]) for v in variables},
        }
        runs[f"{name}: hybrid"] = hyb
        runs[f"{name}: surrogate"] = sur
    if not is_primary():
        return summary
    figures = run_dir / "figures"
    plots.plot_hybrid_runs(
        runs, runner.solver.dt, figures / "hybrid_rmse.png", time_units=runner.solver.time_units
    )
    plots.plot_engine_timeline(
        hybrid_run,
        runner.solver.dt,
        figures / "hybrid_engines.png",
        time_units=runner.solver.time_units,
    )
    plots.plot_long_run_spectra(k, spectra, variables, figures / "hybrid_spectra.png")
    if "sweep" in summary:
        plots.plot_hybrid_tradeoff(summary, variables, figures / "hybrid_tradeoff.png")
    _write_text(summary_path, json.dumps(summary, indent=2, default=float))
    log.info(
        "hybrid: solver fraction %.2f, speed-up %.2fx",
        hybrid_run.solver_fraction,
        summary["hybrid"]["speedup"],
    )
    return summary


# ---- stage: report ---------------------------------------------------------------------
def stage_report(
    run_dir: Path, data_dir: Path, *, timings: Mapping[str, float] | None = None
) -> Path:
    """Write ``report.md`` and ``report.html`` from the run directory's contents."""
    from surrogate.report import write_report

    return write_report(run_dir, data_dir, timings=timings)
