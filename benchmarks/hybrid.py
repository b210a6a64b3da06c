"""Hybrid runner report: accuracy versus speed-up over indicator thresholds, per problem.

For each trained run directory (made by ``hs-pipeline experiment=<name>``), reruns the
hybrid stage (pure solver, pure surrogate, the configured policy, the threshold sweep and the
out-of-distribution scenarios; see :func:`surrogate.pipeline.stage_hybrid`) and prints one
JSON line per run and per swept threshold: solver share, speed-up over the pure solver,
RMSE against the solver at a short lead, and the largest relative error of the long-run mean
spectrum. The figure is ``<run_dir>/figures/hybrid_tradeoff.png``.

    hs-pipeline experiment=ks                 # KS: runs/ks-fno
    hs-pipeline experiment=kolmogorov         # Navier-Stokes: runs/kolmogorov-fno_medium
    python benchmarks/hybrid.py runs/ks-fno runs/kolmogorov-fno_medium [--num-steps 400]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# `python benchmarks/<script>.py` puts benchmarks/ first on sys.path, where solvers.py and
# datasets.py would shadow the project's packages of the same names.
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import json
import shutil
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from surrogate import pipeline
from surrogate.cli import check_targets


def run(run_dir: Path, num_steps: int | None) -> None:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    check_targets(cfg)  # a run directory may come from someone else
    data_dir = Path(cfg.data.path)
    solver = instantiate(cfg.solver, _convert_="all")
    forecaster = pipeline.load_trained(run_dir, data_dir)
    runner = instantiate(cfg.hybrid.runner, solver=solver, surrogate=forecaster)
    shutil.rmtree(run_dir / "hybrid", ignore_errors=True)
    sweep = cfg.hybrid.get("sweep") or {}
    summary = pipeline.stage_hybrid(
        runner,
        data_dir,
        run_dir,
        num_steps=int(num_steps or cfg.hybrid.num_steps),
        num_trajectories=int(cfg.hybrid.num_trajectories),
        sweep_indicator=sweep.get("indicator"),
        sweep_thresholds=list(sweep.get("thresholds") or []),
        scenarios=OmegaConf.to_container(cfg.hybrid.scenarios)
        if cfg.hybrid.get("scenarios")
        else None,
        short_lead_steps=int(cfg.hybrid.get("short_lead_steps", 5)),
    )
    keys = (
        "solver_fraction",
        "speedup",
        "wall_time",
        "short_lead_rmse",
        "long_run_spectrum_max_rel_error",
    )
    base = {"run_dir": str(run_dir), "solver": solver.name, "num_steps": summary["num_steps"]}
    for name in ("surrogate", "hybrid"):
        print(json.dumps({**base, "run": name, **{k: summary[name].get(k) for k in keys}}))
    print(
        json.dumps(
            {
                **base,
                "run": "surrogate",
                "blown_up_members": summary["surrogate"]["blown_up_members"],
            }
        )
    )
    for row in (summary.get("sweep") or {}).get("rows", []):
        print(
            json.dumps(
                {
                    **base,
                    "run": "sweep",
                    "indicator": summary["sweep"]["indicator"],
                    "threshold": row["threshold"],
                    **{k: row.get(k) for k in keys},
                }
            )
        )
    for key, val in summary.items():
        if key.startswith("scenario_"):
            print(json.dumps({**base, "run": key, **val}, default=float))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument(
        "--num-steps", type=int, default=None, help="horizon (default: the run's config)"
    )
    args = ap.parse_args(argv)
    for run_dir in args.run_dirs:
        run(run_dir, args.num_steps)


if __name__ == "__main__":
    main()
