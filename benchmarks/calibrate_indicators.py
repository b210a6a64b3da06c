"""Calibrate hybrid-runner thresholds: the indicators' values when the solver is its own surrogate.

A threshold must sit above what the indicator reads for a perfect surrogate (no false
alarms) and below what it reads for a bad one. This script runs the configured runner with
the solver in the surrogate's seat and thresholds that never trip, from spun-up states of
the configured problem, and prints one JSON line per indicator: the maximum and 99th
percentile over all members and steps (units of the indicator).

    python benchmarks/calibrate_indicators.py experiment=kolmogorov [--steps 100] [--members 8]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# `python benchmarks/<script>.py` puts benchmarks/ first on sys.path, where solvers.py and
# datasets.py would shadow the project's packages of the same names.
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from solvers import rollout
from surrogate.cli import check_targets

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=kolmogorov")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--spinup", type=int, default=None, help="default: data.spinup_steps")
    args = ap.parse_args(argv)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=args.overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        check_targets(cfg)  # only this project's or trusted code is built
        solver = instantiate(cfg.solver, _convert_="all")
        runner = instantiate(cfg.hybrid.runner, solver=solver, surrogate=solver)
    spinup = cfg.data.spinup_steps if args.spinup is None else args.spinup
    keys = jax.random.split(jax.random.key(12345), args.members)
    x0 = jax.vmap(solver.initial_condition)(keys)
    x0 = jax.vmap(lambda u: rollout(solver, u, max(spinup, 1), include_initial=False)[-1])(x0)
    policy = runner.policy
    if hasattr(policy, "threshold"):
        never = tuple(float("inf") for _ in policy.threshold)
        runner = runner.with_policy(dataclasses.replace(policy, threshold=never))
    result = runner.run(x0, args.steps)
    for name, values in result.indicator_values.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        print(
            json.dumps(
                {
                    "indicator": name,
                    "units": result.indicator_attrs[name]["units"],
                    "max": float(v.max()) if v.size else None,
                    "p99": float(np.percentile(v, 99)) if v.size else None,
                    "median": float(np.median(v)) if v.size else None,
                    "steps": args.steps,
                    "members": args.members,
                    "overrides": args.overrides,
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
