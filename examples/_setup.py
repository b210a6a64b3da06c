"""Shared settings of the examples: the problem, its dataset and the output folder.

Every example runs on its own: it builds (or finds) what it needs, so they can be run in
any order. ``--tiny`` shrinks everything to seconds (used by the test suite).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from solvers import KuramotoSivashinsky


def parse(description: str, argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default="outputs/examples", help="output folder")
    ap.add_argument("--tiny", action="store_true", help="smallest setting (for tests)")
    args = ap.parse_args(argv)
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def problem(tiny: bool) -> KuramotoSivashinsky:
    """Kuramoto-Sivashinsky in the minimal chaotic box (L = 22), output every dt = 1."""
    return KuramotoSivashinsky(
        num_points=32 if tiny else 64,
        domain_length=22.0,
        dt=1.0,
        num_substeps=4,
        initial_max_mode=4,
    )


def dataset(args) -> Path:
    """Generate the example dataset (returns at once when it is already complete)."""
    import datasets

    return datasets.generate(
        problem(args.tiny),
        args.out / "data",
        num_trajectories=10 if args.tiny else 96,
        num_frames=12 if args.tiny else 150,
        spinup_steps=5 if args.tiny else 100,
        trajectories_per_shard=5 if args.tiny else 16,
        splits={"train": 0.6, "val": 0.2, "test": 0.2} if args.tiny else None,
        progress=not args.tiny,
    )


def forecaster(args):
    """Train the example forecaster, or load it when it exists."""
    import datasets
    from surrogate.bundle import load_forecaster, save_forecaster
    from surrogate.forecaster import ForecasterSpec
    from surrogate.train import TrainConfig, init_forecaster, train

    bundle = args.out / "forecaster"
    path = dataset(args)
    info = datasets.dataset_info(path)
    if (bundle / "bundle.json").exists():
        return load_forecaster(bundle, dataset_info=info)
    cfg = TrainConfig(
        num_steps=20 if args.tiny else 1500,
        batch_size=4 if args.tiny else 16,
        warmup_steps=2 if args.tiny else 100,
        rollout_schedule=[[0, 1], [10, 2]] if args.tiny else [[0, 1], [1000, 3]],
        log_every=5 if args.tiny else 10,
        checkpoint_every=10 if args.tiny else 250,
        validate_every=0,
    )
    loader = datasets.WindowLoader(
        path, "train", batch_size=cfg.batch_size, horizon=cfg.max_rollout
    )
    spec = ForecasterSpec.create(
        model_name="fno",
        model_kwargs={"width": 8, "modes": 4, "num_layers": 1}
        if args.tiny
        else {"width": 32, "modes": 12},
        variables=info["variables"],
        units=info["units"],
        grid=info["grid"],
        dt=info["dt"],
    )
    result = train(
        init_forecaster(spec, loader.statistics),
        loader,
        cfg,
        args.out / "train",
        progress=not args.tiny,
    )
    save_forecaster(result.forecaster, bundle, overwrite=True)
    return result.forecaster
