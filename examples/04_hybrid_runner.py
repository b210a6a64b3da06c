"""Run the hybrid runner: surrogate where it is safe, solver where it is needed.

Compares pure solver, pure surrogate and the hybrid with a threshold policy on a
coarse-solver check and mass drift; prints which engine ran how often, the error against
the solver and the cost, and plots the engine per step.

    python examples/04_hybrid_runner.py [--out outputs/examples] [--tiny]
"""

from __future__ import annotations

import numpy as np
from _setup import dataset, forecaster, parse, problem

import datasets
from surrogate import plots
from surrogate.hybrid import (
    AlwaysSurrogate,
    CoarseSolverCheck,
    HybridRunner,
    InvariantDrift,
    Threshold,
)


def main(argv=None) -> None:
    args = parse(__doc__.splitlines()[0], argv)
    solver, f = problem(args.tiny), forecaster(args)
    x0 = datasets.load_trajectories(dataset(args), "test")[:, 0]
    steps = 10 if args.tiny else 100
    runner = HybridRunner(
        solver,
        f,
        Threshold(["mass_drift", "coarse_check"], [1e-4, 3e-2]),
        [InvariantDrift("mass", relative=False), CoarseSolverCheck(factor=2)],
    )
    ref = runner.run_solver_only(x0, steps)
    sur = runner.with_policy(AlwaysSurrogate(), indicators=()).run(
        x0, steps, reference=ref.states, check_finite=False
    )
    hyb = runner.run(x0, steps, reference=ref.states)
    for name, r in (("solver", ref), ("surrogate", sur), ("hybrid", hyb)):
        rmse = "" if r.rmse is None else f", mean RMSE {np.nanmean(r.rmse['u']):.3g}"
        print(
            f"{name:>9}: solver on {100 * r.solver_fraction:5.1f}% of steps, wall {r.wall_time:.3f} s{rmse}"
        )
    print("engine counts of the hybrid:", hyb.engine_counts())
    hyb.to_netcdf(args.out / "hybrid.nc")
    path = plots.plot_engine_timeline(hyb, solver.dt, args.out / "04_hybrid_engines.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
