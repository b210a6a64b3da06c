"""Train on your own trajectories: numpy arrays (or an xarray Dataset / netCDF file) in.

Makes an ensemble of 1D heat-equation solutions in closed form with numpy (no solver of this
package), turns them into a dataset with ``datasets.from_arrays`` (the same shards, manifest
and statistics ``datasets.generate`` writes; the provenance says no solver is known),
validates it (re-simulation skipped, everything else checked), trains a tiny FNO on it with
the Python API, and compares its forecast with the exact solution.

    python examples/07_own_data.py [--out outputs/examples] [--tiny]

A netCDF file goes the same way: ``datasets.from_xarray(out, xr.open_dataset("my.nc"),
trajectory_dim="member")`` reads the dims by name, ``units``/``long_name`` from the
attributes and ``dt`` from the ``time`` coordinate.
"""

from __future__ import annotations

import numpy as np
from _setup import parse

import datasets
from solvers import Grid, rollout
from surrogate.forecaster import ForecasterSpec
from surrogate.train import TrainConfig, init_forecaster, train

DIFFUSIVITY = 0.1  # m^2 s-1
DT = 0.5  # s between stored frames


def heat_trajectories(grid: Grid, num_trajectories: int, num_frames: int) -> np.ndarray:
    """Exact solutions of u_t = D u_xx on a periodic domain: ``(N, T, 1, X)``, float32.

    u(x, t) = sum_k a_k exp(-D q_k^2 t) sin(q_k x + phi_k), q_k = 2 pi k / L, with random
    amplitudes and phases per trajectory (modes k = 1..4).
    """
    (x,) = grid.coords().values()
    t = np.arange(num_frames) * DT
    q = 2 * np.pi * np.arange(1, 5) / grid.domain_length[0]
    rng = np.random.default_rng(0)
    a = rng.normal(size=(num_trajectories, q.size)) / np.arange(1, 5)
    phi = rng.uniform(0, 2 * np.pi, (num_trajectories, q.size))
    decay = np.exp(-DIFFUSIVITY * q[None, :] ** 2 * t[:, None])  # (T, K)
    waves = np.sin(q[None, :, None] * x[None, None, :] + phi[:, :, None])  # (N, K, X)
    u = np.einsum("nk,tk,nkx->ntx", a, decay, waves)
    return u[:, :, None].astype(np.float32)


def main(argv=None) -> None:
    args = parse(__doc__.splitlines()[0], argv)
    grid = Grid((32,), (2 * np.pi,), ("x",), length_units="m")
    data = heat_trajectories(grid, 16 if args.tiny else 128, 12 if args.tiny else 40)
    path = datasets.from_arrays(
        args.out / "own_data",
        data,
        variables=("u",),
        units={"u": "K"},
        long_names={"u": "temperature anomaly"},
        grid=grid,
        dt=DT,
        time_units="s",
        splits={"train": 0.75, "val": 0.125, "test": 0.125},
        trajectories_per_shard=8 if args.tiny else 32,
        source="closed-form 1D heat equation (examples/07_own_data.py)",
        overwrite=True,
    )
    info = datasets.dataset_info(path)
    print(f"dataset {path}: {info['num_trajectories']}, source {info['source']['description']}")
    report = datasets.validate(path)
    print(report)
    if not report.passed:
        raise SystemExit(1)

    cfg = TrainConfig(
        num_steps=30 if args.tiny else 1000,
        batch_size=8 if args.tiny else 32,
        learning_rate=1e-2 if args.tiny else 3e-3,
        warmup_steps=2 if args.tiny else 50,
        log_every=5 if args.tiny else 50,
        checkpoint_every=0,
        validate_every=0,
    )
    loader = datasets.WindowLoader(path, "train", batch_size=cfg.batch_size)
    print(f"training statistics: {loader.statistics}")
    spec = ForecasterSpec.create(
        model_name="fno",
        model_kwargs={"width": 8, "modes": 4, "num_layers": 1}
        if args.tiny
        else {"width": 16, "modes": 8, "num_layers": 2},
        variables=info["variables"],
        units=info["units"],
        grid=info["grid"],
        dt=info["dt"],
    )
    result = train(
        init_forecaster(spec, loader.statistics),
        loader,
        cfg,
        args.out / "own_train",
        progress=not args.tiny,
    )
    losses = [m["loss"] for m in result.metrics]
    print(f"training loss: {losses[0]:.3g} -> {losses[-1]:.3g}")

    truth = datasets.load_trajectories(path, "test")[0]  # (T, 1, X)
    forecast = np.asarray(rollout(result.forecaster, truth[0], truth.shape[0] - 1))
    err = np.sqrt(np.mean((forecast - truth) ** 2, axis=(1, 2)))
    print(
        f"RMSE vs the exact solution at lead 1 and {truth.shape[0] - 1}: "
        f"{err[1]:.3g}, {err[-1]:.3g} (field RMS {np.sqrt(np.mean(truth**2)):.3g})"
    )


if __name__ == "__main__":
    main()
