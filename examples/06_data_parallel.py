"""Data parallelism over a device mesh: the same code on one device and on four.

On a CPU this forces four host devices (``XLA_FLAGS``, set before JAX starts); with GPUs
JAX uses those instead. Each part compares the mesh run with a one-device run:

1. generation split over the devices gives byte-identical shards;
2. one data-parallel training step (gradients averaged over the devices) matches a
   one-device step to float32 round-off;
3. evaluation rollouts and the hybrid runner split their trajectories over the devices
   and give the same skill and the same engine log.

Several processes work the same way, one mesh over all their devices: see the README
section "From a laptop to a cluster" (``hs-launch -n 2 -- ...``).

    python examples/06_data_parallel.py [--out outputs/examples] [--tiny]
"""

from __future__ import annotations

import os

# Four CPU devices, before JAX initialises (a flag set by the caller wins).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import json  # noqa: E402
import shutil  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _setup import dataset, forecaster, parse, problem  # noqa: E402

import datasets  # noqa: E402
from surrogate.distributed import data_mesh  # noqa: E402
from surrogate.evaluate import evaluate  # noqa: E402
from surrogate.hybrid import CoarseSolverCheck, HybridRunner, Threshold  # noqa: E402
from surrogate.train import TrainConfig, train  # noqa: E402


def main(argv=None) -> None:
    args = parse(__doc__.splitlines()[0], argv)
    mesh = data_mesh()
    n = mesh.size
    print(f"{n} device(s): {[str(d) for d in jax.devices()]}")
    solver, f = problem(args.tiny), forecaster(args)
    out: dict = {"devices": n}

    # 1. generation: the trajectory axis of every chunk split over the devices
    kw = dict(num_trajectories=8, num_frames=6, trajectories_per_shard=4, progress=False)
    one = datasets.generate(solver, args.out / "dp_data_1", devices=1, overwrite=True, **kw)
    many = datasets.generate(solver, args.out / "dp_data_n", devices=n, overwrite=True, **kw)
    sums = [[s["sha256"] for s in datasets.read_manifest(p)["shards"]] for p in (one, many)]
    out["generation_byte_identical"] = sums[0] == sums[1]
    print(f"generation on 1 and {n} devices byte-identical: {out['generation_byte_identical']}")

    # 2. one data-parallel training step from the trained forecaster's parameters
    path = dataset(args)
    cfg = TrainConfig(num_steps=1, batch_size=4 * n, warmup_steps=0, log_every=1)
    loader = datasets.WindowLoader(path, "train", batch_size=cfg.batch_size)
    for k in ("1", "n"):
        shutil.rmtree(args.out / f"dp_train_{k}", ignore_errors=True)  # a fresh step each time
    steps = [
        train(f, loader, cfg, args.out / f"dp_train_{k}", progress=False, mesh=m)
        for k, m in (("1", None), ("n", mesh))
    ]
    diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(*(jax.tree.leaves(s.forecaster.params) for s in steps), strict=True)
    )
    out["train_step_max_param_difference"] = diff
    print(f"one training step, 1 vs {n} devices: largest parameter difference {diff:.2e}")

    # 3. evaluation and the hybrid runner with the trajectories split over the devices
    truth = datasets.load_trajectories(path, "test")[:n]
    if len(truth) < n:  # the tiny dataset's test split is smaller than the mesh
        truth = datasets.load_trajectories(path, "train")[:n]
    ev = [evaluate(f, truth, baselines=(), batch_size=n, mesh=m) for m in (None, mesh)]
    rmse = [e.rmse.sel(model="surrogate").values for e in ev]
    out["evaluation_max_rmse_difference"] = float(np.max(np.abs(rmse[0] - rmse[1])))
    runners = [
        HybridRunner(solver, f, Threshold("coarse_check", 3e-2), [CoarseSolverCheck()], mesh=m)
        for m in (None, mesh)
    ]
    runs = [r.run(truth[:, 0], 10 if args.tiny else 100) for r in runners]
    out["hybrid_same_engines"] = bool(np.array_equal(runs[0].engine, runs[1].engine))
    out["hybrid_solver_fraction"] = runs[1].solver_fraction
    print(
        f"evaluation RMSE difference {out['evaluation_max_rmse_difference']:.2e}; hybrid "
        f"engine log identical: {out['hybrid_same_engines']} "
        f"(solver on {100 * runs[1].solver_fraction:.0f}% of steps)"
    )
    (args.out / "06_data_parallel.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out / '06_data_parallel.json'}")


if __name__ == "__main__":
    main()
