"""Evaluate the forecaster weather-style against persistence and a coarse solver.

RMSE, anomaly correlation and the valid time (ACC > 0.6) per lead time on the test split,
energy spectra, and figures.

    python examples/05_evaluate_and_compare.py [--out outputs/examples] [--tiny]
"""

from __future__ import annotations

from _setup import dataset, forecaster, parse, problem

import datasets
from surrogate import plots
from surrogate.evaluate import evaluate, save_evaluation, summary_table


def main(argv=None) -> None:
    args = parse(__doc__.splitlines()[0], argv)
    path = dataset(args)
    ds = evaluate(
        forecaster(args),
        datasets.load_trajectories(path, "test"),
        statistics=datasets.load_statistics(path),
        solver=problem(args.tiny),
        batch_size=4,
    )
    print(summary_table(ds))
    save_evaluation(ds, args.out / "evaluation.nc")
    print("wrote", plots.plot_skill(ds, args.out / "05_skill.png"))
    print("wrote", plots.plot_spectra(ds, args.out / "05_spectra.png"))


if __name__ == "__main__":
    main()
