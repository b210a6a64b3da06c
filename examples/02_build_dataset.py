"""Build a validated training dataset from solver runs ("HPC serves AI").

Generates an ensemble of Kuramoto-Sivashinsky trajectories into sharded CF-netCDF files with
a checksummed manifest (rerunning resumes or returns at once), validates it (schema,
consistency, accuracy by re-simulation, completeness), and shows a training batch.

    python examples/02_build_dataset.py [--out outputs/examples] [--tiny]
"""

from __future__ import annotations

from _setup import dataset, parse

import datasets


def main(argv=None) -> None:
    args = parse(__doc__.splitlines()[0], argv)
    path = dataset(args)
    info = datasets.dataset_info(path)
    print(f"dataset {path}: {info['num_trajectories']} trajectories x {info['num_frames']} frames")
    report = datasets.validate(path, num_resimulate=1)
    print(report)
    if not report.passed:
        raise SystemExit(1)
    ds = datasets.open_dataset(path, split="train")
    print(ds)
    loader = datasets.WindowLoader(path, "train", batch_size=4, history=1, horizon=2, seed=0)
    inputs, targets = loader.batch(0)
    print(
        f"batch 0: inputs {inputs.shape}, targets {targets.shape}; statistics {loader.statistics.state_std}"
    )


if __name__ == "__main__":
    main()
