"""Cost-accuracy front on 2D Kolmogorov flow: solver ladder, learned steppers, matched speed-up.

Runs :func:`surrogate.front.run_front` on the default Kolmogorov problem
(``solvers.NavierStokes2D`` defaults: nu = 1e-3, drag 0.1, k_f = 4, 2 pi box; output
interval ``--dt`` 0.5; float32) and prints one JSON line per stepper: cost per trajectory
per time unit (compile excluded, best of ``--repeats`` runs, batch ``--batch``), nRMSE at
``--lead``, time to 0.95 correlation, long-run spectrum and enstrophy errors, and, for the
learned steppers, ``speedup_at_matched_error`` against the ladder with its bound and the
break-even. Writes ``front.json``, ``front.md`` (the table) and ``front.png`` to ``--out``::

    python benchmarks/front.py                                  # fine 128^2, ladder 32..96
    python benchmarks/front.py --quick                          # fine 64^2, a smoke run
    python benchmarks/front.py --fine 256 --ladder 32,48,64,96,128
    python benchmarks/front.py --learned corr=runs/kolmogorov/forecaster --upfront corr=900
    python benchmarks/front.py --spectral-filter data/kolmogorov_fine-default  # + linear closure

Setting, the same for every stepper:

- the fine solver and every rung run at their largest stable internal step (smallest
  stable ``num_substeps``, :func:`solvers.resolution.at_resolution`);
- initial states: ``--batch`` random initial conditions
  (``initial_condition(fold_in(key(seed), i))``) advanced ``--spinup`` intervals by the fine
  solver (rounded up to whole chunks of 10); the reference climatology (long-run energy
  spectrum and mean enstrophy) is the time mean over the second half of that spin-up,
  projected onto the comparison grid;
- everything is scored on the coarsest grid among the steppers (Fourier truncation);
- learned steppers are loaded from bundle directories (``--learned NAME=PATH``, repeatable)
  with :func:`load_stepper`; ``--upfront NAME=SECONDS`` gives their data generation plus
  training wall time for the break-even;
- the error floor (``--no-floor`` skips it): the fine solver started from the initial
  states projected onto the comparison grid, i.e. what exact dynamics reach from the
  coarse state alone; each learned stepper gets ``gap_closed`` (the fraction of the error
  between the ladder rung on its grid and the floor it removes) and
  ``ceiling_speedup_at_matched_error`` (what a stepper at the floor with its cost would get).

The machine may be shared: timings are best-of-repeats and still noisy; read them with the
``load_avg`` recorded in ``setting.json`` (also printed to stderr).
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# `python benchmarks/<script>.py` puts benchmarks/ first on sys.path, where solvers.py and
# datasets.py would shadow the project's packages of the same names.
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from solvers import NavierStokes2D
from solvers.resolution import at_resolution
from surrogate import front as fr
from surrogate.front_stage import FILTER_NAME, fit_dataset_filter

SPINUP_CHUNK = 10


def load_stepper(path: str | os.PathLike) -> Any:
    """Load a learned stepper from a bundle directory.

    Uses the learned-correction loader of :mod:`surrogate.correction` when that module
    exists (``load_stepper``, or ``load_correction``), which returns a correction or a
    plain forecaster as the bundle says; otherwise
    :func:`surrogate.bundle.load_forecaster`.
    """
    if importlib.util.find_spec("surrogate.correction") is not None:
        correction = importlib.import_module("surrogate.correction")
        for name in ("load_stepper", "load_correction"):
            loader = getattr(correction, name, None)
            if loader is not None:
                return loader(path)
    from surrogate.bundle import load_forecaster

    return load_forecaster(path)


def _pairs(values: list[str], what: str, cast) -> dict[str, Any]:
    out = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise SystemExit(f"{what}: expected NAME=VALUE, got {v!r}")
        out[name] = cast(value)
    return out


def _grids(text: str) -> list[int]:
    return [int(g) for g in text.split(",") if g.strip()]


def kolmogorov_solver(num_points: int, dt: float, precision: str) -> NavierStokes2D:
    """The default Kolmogorov flow on ``num_points``^2 at its largest stable internal step."""
    # 64^2 is stable with 60 substeps per time unit (configs/experiment/kolmogorov.yaml);
    # at_resolution scales that to the grid and walks to the smallest stable count.
    base = NavierStokes2D(
        num_points=64, dt=dt, num_substeps=max(1, math.ceil(60 * dt)), precision=precision
    )
    return at_resolution(base, num_points)


def spun_up_states(
    fine: Any, batch: int, spinup: int, seed: int, comparison_grid: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Random initial conditions advanced ``spinup`` intervals (rounded up to chunks).

    Returns:
        ``(states (B, C, *fine grid), climate_frames (B, L, C, *comparison grid),
        intervals run)``: the climate frames are the second half of the spin-up.
    """
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(batch))
    x = jax.vmap(fine.initial_condition)(keys)
    chunk = min(SPINUP_CHUNK, max(spinup, 2))
    long = fr.long_run_frames(fine, x, max(spinup, 2), comparison_grid, chunk_steps=chunk)
    bad = np.flatnonzero(~np.isfinite(long.last_states.reshape(batch, -1)).all(axis=1))
    if bad.size:
        raise FloatingPointError(f"spin-up: samples {bad.tolist()} went non-finite")
    return long.last_states, long.frames, long.num_steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fine", type=int, default=128, help="fine reference grid (default 128)")
    ap.add_argument("--ladder", default="32,48,64,96", help="solver ladder grids, comma-separated")
    ap.add_argument("--dt", type=float, default=0.5, help="output interval (time units)")
    ap.add_argument("--precision", default="float32", choices=("float32", "float64"))
    ap.add_argument("--batch", type=int, default=8, help="trajectories per batch (all steppers)")
    ap.add_argument("--spinup", type=int, default=60, help="spin-up intervals of the fine run")
    ap.add_argument("--num-leads", type=int, default=16, help="scored output intervals")
    ap.add_argument("--lead", type=int, default=8, help="lead (intervals) of the matched error")
    ap.add_argument(
        "--long-steps", type=int, default=96, help="long-run intervals (second half scored)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per stepper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--learned", action="append", default=[], metavar="NAME=PATH", help="a learned bundle"
    )
    ap.add_argument(
        "--upfront",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="data generation + training wall seconds of a learned stepper (break-even)",
    )
    ap.add_argument(
        "--spectral-filter",
        type=Path,
        default=None,
        metavar="DATASET",
        help="also fit the linear closure (surrogate.spectral_filter) on this dataset's "
        "training split, on its grid, and run it as the learned stepper 'spectral-filter'",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/front"), help="output directory")
    ap.add_argument("--quick", action="store_true", help="fine 64, ladder 32,48, short runs")
    ap.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the error floor (the fine solver from the states on the comparison grid)",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.fine, args.ladder, args.batch = 64, "32,48", 2
        args.spinup, args.num_leads, args.lead, args.long_steps, args.repeats = 20, 4, 2, 8, 1
    if args.precision == "float64":
        jax.config.update("jax_enable_x64", True)

    learned = {
        name: load_stepper(path) for name, path in _pairs(args.learned, "--learned", str).items()
    }
    upfront = _pairs(args.upfront, "--upfront", float)
    fine = kolmogorov_solver(args.fine, args.dt, args.precision)
    if args.spectral_filter is not None:
        filt, _, upfront[FILTER_NAME] = fit_dataset_filter(fine, args.spectral_filter)
        learned[FILTER_NAME] = filt
    ladder_grids = _grids(args.ladder)
    grid_c = fr.default_comparison_grid(
        [(g, g) for g in ladder_grids] + [tuple(s.grid.num_points) for s in learned.values()]
    )
    t0 = time.perf_counter()
    x0, climate, spinup = spun_up_states(fine, args.batch, args.spinup, args.seed, grid_c)
    spinup_s = time.perf_counter() - t0
    reference = fr.reference_climate(climate, fine, grid_c)
    front = fr.run_front(
        fine,
        ladder_grids,
        learned,
        x0,
        num_leads=args.num_leads,
        lead=args.lead,
        reference_spectrum=reference["spectrum"],
        reference_enstrophy=reference["enstrophy"],
        upfront_cost_s=upfront,
        long_rollout_steps=args.long_steps,
        progress=not args.no_progress,
        comparison_grid=grid_c,
        repeats=args.repeats,
        floor=not args.no_floor,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    front.write_json(args.out / "front.json")
    (args.out / "front.md").write_text(front.table_markdown() + "\n")
    fr.plot_front(front, args.out / "front.png")

    for e in front.entries:
        d = e.to_dict(front.lead)
        line = {
            k: d[k]
            for k in (
                "kind",
                "name",
                "grid",
                "substeps",
                "batch_size",
                "cost_s_per_trajectory_per_time_unit",
                "compile_s",
                "timed_runs",
                "error_at_lead",
                "time_to_corr_095",
                "time_to_corr_095_bound",
                "spectrum_max_rel_error",
                "spectrum_mean_rel_error",
                "enstrophy_rel_error",
                "nonfinite_members",
            )
        }
        line["lead"] = front.lead
        if e.kind in ("learned", "hybrid"):
            m = d["matched"] or {}
            line.update(
                speedup_at_matched_error=d["speedup_at_matched_error"],
                bound=m.get("bound"),
                matched_solver_cost=m.get("matched_solver_cost"),
                speedup_at_matched_corr_time=d["speedup_at_matched_corr_time"],
                breakeven_time_units=d["breakeven_time_units"],
                ceiling_speedup_at_matched_error=d["ceiling_speedup_at_matched_error"],
                ceiling_speedup_at_matched_corr_time=d["ceiling_speedup_at_matched_corr_time"],
                free_ceiling_speedup_at_matched_error=d["free_ceiling_speedup_at_matched_error"],
                free_ceiling_speedup_at_matched_corr_time=d[
                    "free_ceiling_speedup_at_matched_corr_time"
                ],
                gap_closed=d["gap_closed"],
            )
        print(json.dumps(line), flush=True)
    setting = {
        "fine": args.fine,
        "fine_substeps": fine.num_substeps,
        "dt": args.dt,
        "precision": args.precision,
        "batch": args.batch,
        "spinup_intervals": spinup,
        "spinup_s": spinup_s,
        "num_leads": args.num_leads,
        "long_steps": front.long_rollout_steps,
        "comparison_grid": list(front.comparison_grid),
        "out": str(args.out),
        "load_avg": list(os.getloadavg()),
    }
    (args.out / "setting.json").write_text(json.dumps(setting, indent=1) + "\n")
    print(json.dumps({"setting": setting}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
