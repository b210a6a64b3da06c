"""Pipeline stage ``front``: the cost-accuracy front of the trained stepper, in a run directory.

The learned stepper lives on the dataset's (coarse) grid; the dataset records the fine
solver it was projected from. This stage draws fresh spun-up initial states on the fine
grid (trajectory indices past the dataset's, so none was trained on), runs the fine
reference, the solver ladder and the learned stepper from them
(:func:`surrogate.front.run_front`), takes the reference long-run spectrum and enstrophy
from the dataset's own frames (the climatology of the projected fine solution), counts
data generation and training as the up-front cost, and writes ``front.json``,
``front.md`` and ``figures/front.png``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from solvers.stepper import Stepper

log = logging.getLogger(__name__)

STAGE_TIMES = "stage_times.json"


def fine_solver_of(data_dir: Path) -> Any:
    """The solver recorded in a dataset's provenance (registered solvers only)."""
    import datasets
    import solvers

    info = datasets.dataset_info(data_dir)
    name = info.get("solver")
    if name not in solvers.available():
        raise ValueError(
            f"front: dataset {data_dir} was made by solver {name!r}, which is not registered"
        )
    return solvers.build_solver(name, **info["solver_config"])


def stepper_solver(solver: Stepper, target: Any) -> Any:
    """``solver`` on a learned stepper's grid (itself when the grids agree).

    ``target`` is a stepper or a :class:`solvers.Grid`.

    A learned stepper trained on a coarse-grained dataset lives on the coarse grid; the
    stages that compare it with "the solver" (evaluation baselines, the hybrid runner)
    take the same solver rebuilt there at its largest stable step.
    """
    from solvers.resolution import at_resolution

    grid = tuple(getattr(target, "grid", target).num_points)
    if tuple(solver.grid.num_points) == grid:
        return solver
    return at_resolution(solver, grid)


def fine_initial_states(
    solver: Stepper, num_trajectories: int, spinup_steps: int, *, seed: int, first_index: int
) -> np.ndarray:
    """Spun-up states ``(B, C, *fine grid)`` from trajectory indices ``first_index + i``.

    Drawn exactly like dataset trajectories (``fold_in(key(seed), index)``, then
    ``spinup_steps`` output intervals), so they come from the same distribution; indices
    past the dataset's keep them out of its splits.
    """
    from datasets.generation import simulate_batch

    indices = jax.numpy.arange(first_index, first_index + num_trajectories)
    frames, bad = simulate_batch(solver, jax.random.key(seed), indices, 1, spinup_steps)
    if np.any(np.asarray(bad) >= 0):
        raise RuntimeError("front: the fine solver blew up while spinning up initial states")
    return np.asarray(frames[:, 0])


def dataset_climatology(data_dir: Path, solver_on_grid: Any, split: str = "train") -> dict:
    """Mean energy spectrum and mean enstrophy of a dataset split (its own grid)."""
    import datasets
    from surrogate.front import half_mean_square

    frames = datasets.load_trajectories(data_dir, split)  # (N, T, C, *grid)
    k, spectra = jax.jit(solver_on_grid.energy_spectrum)(jax.numpy.asarray(frames))
    spectrum = np.asarray(spectra, np.float64).reshape(-1, np.shape(spectra)[-1]).mean(axis=0)
    enstrophy = float(
        np.mean(half_mean_square(np.asarray(frames), state_ndim=len(solver_on_grid.state_shape)))
    )
    return {"wavenumbers": np.asarray(k), "spectrum": spectrum, "enstrophy": enstrophy}


def generation_seconds(manifest: Mapping[str, Any]) -> float:
    """Wall seconds a dataset's generation took, from its manifest's history.

    Sums each ``started`` -> ``completed`` pair; an interrupted run (a ``started`` with no
    ``completed`` before the next ``started``) has no recorded end and is not counted, so
    the figure is a lower bound for a resumed generation.
    """
    from datetime import datetime

    total, start = 0.0, None
    for event in manifest.get("history", []):
        when = datetime.fromisoformat(event["time"])
        if event.get("event") == "started":
            start = when
        elif event.get("event") == "completed" and start is not None:
            total += (when - start).total_seconds()
            start = None
    return total


def read_stage_times(run_dir: Path) -> dict[str, float]:
    """Cumulative wall seconds per stage over every run in ``run_dir`` (resumes add up)."""
    path = Path(run_dir) / STAGE_TIMES
    if not path.exists():
        return {}
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a JSON object of stage seconds ({err})") from None


def add_stage_time(run_dir: Path, stage: str, seconds: float) -> dict[str, float]:
    """Add ``seconds`` to ``stage`` in ``run_dir/stage_times.json`` (atomic rewrite)."""
    from datasets.plumbing import atomic_write_text

    times = read_stage_times(run_dir)
    times[stage] = times.get(stage, 0.0) + float(seconds)
    text = json.dumps(times, indent=2)
    atomic_write_text(Path(run_dir) / STAGE_TIMES, text, parents=True, sync_directory=False)
    return times


def stage_front(
    stepper: Stepper,
    data_dir: Path,
    run_dir: Path,
    *,
    name: str,
    ladder: Sequence[int],
    num_trajectories: int = 8,
    spinup_steps: int = 20,
    num_leads: int = 16,
    lead: int = 1,
    long_rollout_steps: int = 64,
    seed: int = 0,
    repeats: int = 3,
    hybrid_solver_grid: int | None = None,
    hybrid_every: int = 4,
    floor: bool = True,
    spectral_filter: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the front of ``stepper`` against the dataset's fine solver; write its files.

    Skips when ``front.json`` is newer than the trained bundle.

    Args:
        stepper: the trained learned stepper (on the dataset's grid).
        data_dir: the (coarse-grained) dataset; its provenance names the fine solver.
        run_dir: the run directory (``front.json``, ``front.md``, ``figures/front.png``).
        name: the learned stepper's label (e.g. ``"correction-fno"``).
        ladder: grid sizes of the solver ladder (each at its largest stable step).
        num_trajectories: batch of the timed rollouts (the same for every stepper).
        spinup_steps: fine output intervals from a random state to each initial state.
        num_leads: scored output intervals.
        lead: the lead (output intervals) of the matched-error speed-up.
        long_rollout_steps: intervals of the long runs for spectra (0: skip).
        seed: the dataset's seed (initial states use indices past the dataset's).
        repeats: timed runs per stepper.
        hybrid_solver_grid: with a grid size, the front also runs the hybrid runner: the
            learned stepper on its grid, re-anchored every ``hybrid_every``-th step by the
            fine solver's class on this grid (seen through the stepper's grid,
            :class:`solvers.resolution.Resampled`). ``None``: no hybrid.
        hybrid_every: the hybrid's period ``k`` (:class:`surrogate.hybrid.EveryK`).
        floor: also run the fine solver from the states projected onto the stepper's grid
            (the error floor of any stepper on that grid; one more fine run of
            ``num_leads`` intervals), see :func:`surrogate.front.run_front`.
        spectral_filter: also fit and run the linear closure of
            :mod:`surrogate.spectral_filter` (the dataset grid's solver times a
            least-squares gain per Fourier mode, fitted on the training split in seconds;
            up-front cost: data generation plus the fit) as the learned stepper
            ``"spectral-filter"``: what a network adds is measured against it.
        progress: progress bar.

    Returns:
        The ``front.json`` content.
    """
    import datasets
    from surrogate.front import plot_front, run_front

    out = run_dir / "front.json"
    bundle = run_dir / "forecaster" / "bundle.json"
    if out.exists() and (not bundle.exists() or out.stat().st_mtime >= bundle.stat().st_mtime):
        log.info("front: up to date (%s)", out)
        return json.loads(out.read_text())
    t0 = time.perf_counter()
    fine = fine_solver_of(data_dir)
    manifest = datasets.dataset_info(data_dir)
    counts = manifest.get("num_trajectories", 0)
    first = int(sum(counts.values()) if isinstance(counts, Mapping) else counts)
    x0 = fine_initial_states(fine, num_trajectories, spinup_steps, seed=seed, first_index=first)
    clim = dataset_climatology(data_dir, stepper_solver(fine, stepper))
    times = read_stage_times(run_dir)
    from datasets.manifest import read_manifest

    gen_s = generation_seconds(read_manifest(data_dir))
    upfront = gen_s + times.get("train", 0.0)
    hybrids = None
    if hybrid_solver_grid is not None:
        # The learned steppers' long runs are whole chunks of num_leads intervals.
        long_total = -(-int(long_rollout_steps) // int(num_leads)) * int(num_leads)
        hybrids = lambda x, n: [  # noqa: E731
            hybrid_run(
                fine,
                stepper,
                x,
                n,
                int(hybrid_solver_grid),
                int(hybrid_every),
                long_rollout_steps=long_total if long_rollout_steps else 0,
            )
        ]
    learned = {name: stepper}
    upfront_s = {name: upfront}
    filter_info = None
    if spectral_filter:
        learned[FILTER_NAME], filter_info, upfront_s[FILTER_NAME] = fit_dataset_filter(
            fine, data_dir
        )
        log.info(
            "front: spectral filter fitted on %d training pairs in %.1f s (one-interval nRMSE "
            "on them %.3g, the solver's %.3g)",
            filter_info["pairs"],
            filter_info["fit_s"],
            filter_info["train_nrmse_filter"],
            filter_info["train_nrmse_solver"],
        )
    front = run_front(
        fine,
        list(ladder),
        learned,
        x0,
        int(num_leads),
        int(lead),
        clim["spectrum"],
        upfront_cost_s={k: v for k, v in upfront_s.items() if v > 0} or None,
        long_rollout_steps=int(long_rollout_steps),
        progress=progress,
        reference_enstrophy=clim["enstrophy"],
        repeats=int(repeats),
        hybrid=hybrids,
        floor=bool(floor),
    )
    from datasets.plumbing import atomic_write_text

    data = front.to_json_dict()
    data["upfront_cost_note"] = (
        "up-front cost: data generation (the manifest's history) + training (the run's "
        f"stage_times.json) = {gen_s:.1f} + {times.get('train', 0.0):.1f} s"
    )
    if filter_info is not None:
        data["spectral_filter"] = {"name": FILTER_NAME, **filter_info}
        data["network_vs_filter"] = network_vs_filter(data, name)
    data["wall_s"] = time.perf_counter() - t0
    atomic_write_text(
        run_dir / "front.md", front.table_markdown(), parents=True, sync_directory=False
    )
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    plot_front(front, run_dir / "figures" / "front.png")
    # front.json marks the stage complete: written last, once.
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    atomic_write_text(out, text, parents=True, sync_directory=False)
    log.info("front: %s (%.1f s)", headline(data), data["wall_s"])
    for extra in (floor_sentence(data), filter_sentence(data)):
        if extra:
            log.info("front: %s", extra)
    return data


def hybrid_run(
    fine: Any,
    stepper: Stepper,
    x0_fine: Any,
    num_steps: int,
    solver_grid: int,
    every: int,
    *,
    long_rollout_steps: int = 0,
):
    """The hybrid runner on the front's states: ``stepper`` re-anchored by a finer solver.

    Args:
        fine: the dataset's fine solver (its class is rebuilt on ``solver_grid``).
        stepper: the learned stepper, on its own grid.
        x0_fine: ``(B, C, *fine grid)`` initial states.
        num_steps: scored output intervals.
        solver_grid: grid size of the re-anchoring solver.
        every: the solver takes one step in ``every`` (:class:`surrogate.hybrid.EveryK`).
        long_rollout_steps: with ``>= 2``, also a long run of this many intervals whose
            second half (intervals ``> long_rollout_steps // 2``, as
            :func:`surrogate.front.long_run_frames` keeps them) scores the long-run
            spectrum and enstrophy; ``0``: not scored.

    Returns a :class:`surrogate.front.Precomputed` whose cost is the runner's wall time of
    a second run (the first compiles), per trajectory per time unit.
    """
    from solvers.resolution import Resampled, at_resolution, spectral_resample
    from surrogate.front import Precomputed
    from surrogate.hybrid import EveryK, HybridRunner

    grid = tuple(stepper.grid.num_points)
    solver = Resampled(at_resolution(fine, solver_grid), grid)
    runner = HybridRunner(solver, stepper, EveryK(k=every))
    x0 = spectral_resample(jax.numpy.asarray(x0_fine), grid)
    runner.run(x0, num_steps)  # compiles
    res = runner.run(x0, num_steps)
    batch = int(x0.shape[0])
    cost = float(res.wall_time) / (batch * num_steps * float(stepper.dt))
    long = None
    if long_rollout_steps >= 2:
        states = np.asarray(runner.run(x0, int(long_rollout_steps)).states)
        long = states[:, int(long_rollout_steps) // 2 + 1 :]
    name = f"hybrid: {solver_grid}x{solver_grid} solver on 1 step in {every}"
    return Precomputed(name, np.asarray(res.states), cost, long_run_frames=long)


def headline(front: Mapping[str, Any]) -> str:
    """One sentence: the speed-up at matched error, the lead, the error and the break-even."""
    s = front.get("speedup_at_matched_error")
    if s is None:
        return f"no speed-up at matched error could be computed for {front.get('stepper')}"
    bound = front.get("bound")
    rel = {"lower": ">= ", "upper": "<= "}.get(bound, "")
    be = front.get("breakeven_time_units")
    be_txt = (
        "never (no saving)"
        if be is None
        else f"{be:.3g} simulated time units (summed over trajectories)"
    )
    return (
        f"{front.get('stepper')}: {rel}{s:.3g}x faster than the solver ladder at matched "
        f"error {front.get('matched_error', float('nan')):.3g} (nRMSE) at lead "
        f"{front.get('lead')} (batch {front.get('batch_size')}); break-even after {be_txt}"
    )


FILTER_NAME = "spectral-filter"


def fit_dataset_filter(fine: Stepper, data_dir: Path) -> tuple[Any, dict[str, Any], float]:
    """The linear closure fitted on a dataset's training split, on the dataset's grid.

    Args:
        fine: the dataset's fine solver (its class is rebuilt on the dataset's grid at
            its largest stable step, :func:`stepper_solver`).
        data_dir: the (coarse-grained) dataset.

    Returns:
        ``(filter, info, upfront_s)``: the :class:`surrogate.spectral_filter.SpectralFilter`,
        the fit's figures (:func:`surrogate.spectral_filter.fit_spectral_filter`), and its
        up-front seconds: the dataset's generation time plus the fit.
    """
    import datasets
    from solvers.grid import Grid
    from surrogate.spectral_filter import fit_spectral_filter

    info = datasets.dataset_info(data_dir)
    coarse = stepper_solver(fine, Grid.from_dict(info["grid"]))
    filt, fit = fit_spectral_filter(coarse, datasets.load_trajectories(data_dir, "train"))
    return filt, fit, generation_seconds(datasets.read_manifest(data_dir)) + fit["fit_s"]


def network_vs_filter(front: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The trained stepper against the fitted linear closure, from ``front.json``'s entries.

    Returns:
        ``{"stepper", "error", "filter_error", "cost", "filter_cost",
        "speedup_at_matched_error", "filter_speedup_at_matched_error"}`` at the front's
        lead, or None when either entry is missing.
    """
    entries = {s["name"]: s for s in front.get("steppers", [])}
    net, filt = entries.get(name), entries.get(FILTER_NAME)
    if net is None or filt is None:
        return None
    return {
        "stepper": name,
        "error": net.get("error_at_lead"),
        "filter_error": filt.get("error_at_lead"),
        "cost": net.get("cost_s_per_trajectory_per_time_unit"),
        "filter_cost": filt.get("cost_s_per_trajectory_per_time_unit"),
        "speedup_at_matched_error": net.get("speedup_at_matched_error"),
        "filter_speedup_at_matched_error": filt.get("speedup_at_matched_error"),
    }


def filter_sentence(front: Mapping[str, Any]) -> str | None:
    """Whether the network beats the fitted linear closure (None when it was not run)."""
    c = front.get("network_vs_filter")
    if not c or None in (c["error"], c["filter_error"], c["cost"], c["filter_cost"]):
        return None
    better = c["error"] < c["filter_error"]
    cheaper = c["cost"] < c["filter_cost"]
    verdict = (
        "the network adds accuracy the linear closure lacks"
        if better
        else "the network does not beat a linear filter fitted by least squares"
    )
    return (
        f"Against the linear closure ({FILTER_NAME}: the same coarse solver times a fitted "
        f"gain per Fourier mode): {c['stepper']} nRMSE {c['error']:.3g} vs {c['filter_error']:.3g}"
        f" at {1e3 * c['cost']:.3g} vs {1e3 * c['filter_cost']:.3g} ms per time unit "
        f"({'cheaper' if cheaper else 'costlier'}): {verdict}"
    )


def floor_sentence(front: Mapping[str, Any]) -> str | None:
    """How far the best stepper is from the error floor, and what reaching it would give.

    Returns:
        One sentence from ``front.json``'s ``floor_error``, ``gap_closed`` and
        ``ceiling_speedup_at_matched_error``, or None when the front ran no floor.
    """
    floor = front.get("floor_error")
    if floor is None:
        return None
    from surrogate.front import _grid_name

    grid = _grid_name(front.get("comparison_grid", []))
    text = (
        f"Error floor at lead {front.get('lead')}: {floor:.3g} ({front.get('floor_stepper')}, "
        f"what exact dynamics reach from the {grid} state alone)"
    )
    gap, ceiling = front.get("gap_closed"), front.get("ceiling_speedup_at_matched_error")
    if front.get("stepper") is not None and gap is not None:
        text += (
            f"; {front['stepper']} closes {100 * gap:.0f}% of the gap between the {grid} "
            "solver and the floor"
        )
    if front.get("stepper") is not None and ceiling is not None:
        rel = {"lower": ">= ", "upper": "<= "}.get(front.get("ceiling_bound"), "")
        text += (
            f"; a stepper at the floor with its cost would be {rel}{ceiling:.3g}x faster than "
            "the solver ladder"
        )
        ceiling_t = front.get("ceiling_speedup_at_matched_corr_time")
        if ceiling_t is not None:
            text += f" ({ceiling_t:.3g}x on the time to 0.95 correlation)"
    free, free_t = (
        front.get(f"free_ceiling_speedup_at_matched_{m}") for m in ("error", "corr_time")
    )
    if front.get("stepper") is not None and free is not None:
        own = [s["grid"] for s in front.get("steppers", []) if s.get("name") == front["stepper"]]
        text += (
            f"; even a perfect network that cost nothing, on top of the "
            f"{_grid_name(own[0]) if own else grid} solver, would "
            f"give {free:.3g}x"
            + ("" if free_t is None else f" ({free_t:.3g}x on the time to 0.95 correlation)")
        )
    return text


__all__ = [
    "add_stage_time",
    "dataset_climatology",
    "fine_initial_states",
    "fine_solver_of",
    "filter_sentence",
    "fit_dataset_filter",
    "floor_sentence",
    "network_vs_filter",
    "headline",
    "read_stage_times",
    "stage_front",
    "stepper_solver",
]
