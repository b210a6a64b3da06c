"""Scaling of sharded generation and data-parallel training with devices and processes.

Two ways to add parallel workers, each measured in fresh subprocesses:

- devices in one process: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (forced
  CPU devices; on a GPU host ``--real`` takes the first N real devices instead);
- processes of one ``jax.distributed`` job on this host, started by ``hs-launch`` with
  one device each and their own share of the cores (``--processes``).

Prints one JSON line per measurement::

    python benchmarks/scaling.py                          # devices 1 2 4, processes 1 2
    python benchmarks/scaling.py --quick                  # smaller work (a minute or two)
    python benchmarks/scaling.py --devices 1 --processes 1 2 4
    python benchmarks/scaling.py --problem kolmogorov --devices 1 2   # the main job's work

Figures, per worker count ``n`` (warm: compilation excluded, best of ``--repeats``):

- ``generation``: trajectories/s of ``simulate_batch`` on a chunk whose trajectory axis
  is sharded over the ``n`` workers (Kuramoto-Sivashinsky, 128 points, 64 trajectories x 50
  frames per chunk);
- ``training``: samples/s of the jitted data-parallel train step (FNO 1D, width 32,
  128 points, global batch ``--train-batch``, default 128); its gradient all-reduce
  crosses processes in the processes mode (one flat buffer per step);
- with ``--problem kolmogorov`` the main job's work instead: ``generation`` runs the fine
  128^2 Navier-Stokes solver (59 substeps per interval) on chunks of 4 trajectories x 4
  frames, ``training`` the learned correction (32^2 solver plus ``fno_coarse``, one-step
  loss through the solver) at the main job's global batch of 8;
- ``speedup = throughput(n) / throughput(one process, one device)`` and
  ``efficiency = speedup / n``.

Forced CPU devices share their process's thread pool and the host's cores: efficiency
above ``cores / n`` is impossible, and on a CPU even ``n = cores`` forced devices rarely
help (one device's XLA runtime already spreads its work over the cores, badly for small
operations). Processes pinned to their own cores are the CPU route to parallel speed.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# `python benchmarks/<script>.py` puts benchmarks/ first on sys.path, where solvers.py and
# datasets.py would shadow the project's packages of the same names.
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from surrogate import distributed

n, quick, repeats, b = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
problem = sys.argv[5]
distributed.initialize_from_env()  # joins when hs-launch set JAX_* (processes mode)
mesh = distributed.data_mesh(n) if jax.process_count() == 1 else distributed.data_mesh()
from datasets.generation import simulate_batch
from solvers import KuramotoSivashinsky, NavierStokes2D
from solvers.resolution import at_resolution

if problem == "ks":
    solver = KuramotoSivashinsky(num_points=128, domain_length=64.0, dt=0.5, num_substeps=4)
    batch = 32 if quick else 64
    frames = 20 if quick else 50
else:  # the main job: the fine 128^2 Kolmogorov solver, chunks of 4 trajectories
    solver = NavierStokes2D(num_points=64 if quick else 128, dt=0.5, num_substeps=59)
    batch, frames = 4, 2 if quick else 4
idx = distributed.shard_batch(np.arange(batch, dtype=np.int32), mesh)
key = distributed.replicate(jax.random.key(0), mesh)
run = lambda: jax.block_until_ready(simulate_batch(solver, key, idx, frames, 0, mesh=mesh))
run()
reps = 2 if quick else 4
gen = 0.0
for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(reps):
        run()
    gen = max(gen, reps * batch / (time.perf_counter() - t))

from surrogate.forecaster import ForecasterSpec
from surrogate.train import TrainConfig, init_forecaster, make_optimizer, make_train_step

class Stats:
    state_mean = np.zeros(1); state_std = np.ones(1)
    delta_mean = np.zeros(1); delta_std = np.ones(1)

if problem == "ks":
    spec = ForecasterSpec.create(
        model_name="fno", model_kwargs={"width": 32, "modes": 16, "num_layers": 4},
        variables=solver.variables, units=dict(solver.units), grid=solver.grid.to_dict(),
        dt=solver.dt, history=1)
    f = init_forecaster(spec, Stats())
    shape = (1, 128)
else:  # the main job's learned correction: the 32^2 solver plus fno_coarse
    from surrogate.correction import init_correction
    coarse = at_resolution(solver, 32)
    spec = ForecasterSpec.create(
        model_name="fno",
        model_kwargs={"width": 16, "modes": 8, "num_layers": 4, "projection_channels": 32},
        variables=coarse.variables, units=dict(coarse.units), grid=coarse.grid.to_dict(),
        dt=coarse.dt, history=1)
    from surrogate.forecaster import Normalization
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    f = init_correction(coarse, spec, Normalization(zero, one, zero, one))
    shape = (1, 32, 32)
cfg = TrainConfig(num_steps=100, batch_size=b)
opt, _ = make_optimizer(cfg)
step = make_train_step(f, opt, cfg, 1, mesh)
params = distributed.replicate(jax.tree.map(jnp.copy, f.params), mesh)
state = distributed.replicate(opt.init(params), mesh)
rng = np.random.default_rng(0)
x = distributed.shard_batch(rng.standard_normal((b, 1, *shape)).astype(np.float32), mesh)
y = distributed.shard_batch(rng.standard_normal((b, 1, *shape)).astype(np.float32), mesh)
k = distributed.replicate(jax.random.key(0), mesh)
params, state, loss, _ = step(params, state, x, y, k)
jax.block_until_ready(loss)
steps = (5 if quick else 20) if problem == "ks" else (3 if quick else 10)
tr = 0.0
for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(steps):
        params, state, loss, _ = step(params, state, x, y, k)
    jax.block_until_ready(loss)
    tr = max(tr, steps * b / (time.perf_counter() - t))
if distributed.is_primary():
    print(json.dumps({"workers": jax.device_count(), "processes": jax.process_count(),
                      "generation": gen, "training": tr}))
"""


def measure(
    n: int,
    quick: bool,
    real: bool,
    repeats: int,
    train_batch: int,
    processes: int = 0,
    pin: bool = True,
    problem: str = "ks",
) -> dict:
    """One measurement: ``n`` devices in one process, or ``processes`` pinned processes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    if not real:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
        env["JAX_PLATFORMS"] = "cpu"
    child = [
        sys.executable,
        "-c",
        CHILD,
        str(n),
        "1" if quick else "0",
        str(repeats),
        str(train_batch),
        problem,
    ]
    if processes:
        logs = tempfile.mkdtemp(prefix="scaling-logs-")
        launch = [sys.executable, "-m", "surrogate.launch", "-n", str(processes)]
        launch += [] if pin else ["--no-pin"]
        child = [*launch, "--log-dir", logs, "--", *child]
    out = subprocess.run(child, env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"scaling child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument(
        "--processes", type=int, nargs="*", default=[2], help="pinned processes (hs-launch)"
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept")
    ap.add_argument(
        "--train-batch", type=int, default=None, help="global training batch (ks 128, kolmogorov 8)"
    )
    ap.add_argument("--no-pin", action="store_true", help="processes share all cores")
    ap.add_argument("--real", action="store_true", help="real devices, no forced CPU ones")
    ap.add_argument(
        "--problem",
        choices=("ks", "kolmogorov"),
        default="ks",
        help="ks: KS generation and FNO-1D training; kolmogorov: the main job's fine 128^2 "
        "Navier-Stokes generation and its learned-correction training (default batch 8)",
    )
    args = ap.parse_args()
    if args.train_batch is None:  # kolmogorov: the main job's training batch
        args.train_batch = 128 if args.problem == "ks" else 8
    cores = len(os.sched_getaffinity(0))
    base = measure(1, args.quick, args.real, args.repeats, args.train_batch, problem=args.problem)
    runs = [
        (
            "devices",
            n,
            measure(n, args.quick, args.real, args.repeats, args.train_batch, problem=args.problem)
            if n > 1
            else base,
        )
        for n in args.devices
    ]
    runs += [
        (
            "processes",
            p,
            measure(
                1,
                args.quick,
                args.real,
                args.repeats,
                args.train_batch,
                processes=p,
                pin=not args.no_pin,
                problem=args.problem,
            ),
        )
        for p in args.processes
    ]
    for mode, n, r in runs:
        for what, unit in (("generation", "trajectories/s"), ("training", "samples/s")):
            print(
                json.dumps(
                    {
                        "figure": f"{what}_scaling",
                        "mode": mode,
                        "workers": n,
                        "throughput": round(r[what], 2),
                        "unit": unit,
                        "speedup": round(r[what] / base[what], 3),
                        "efficiency": round(r[what] / (n * base[what]), 3),
                        "problem": args.problem,
                        "forced_cpu_devices": not args.real,
                        "host_cores": cores,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
