"""Scaling of sharded generation and data-parallel training with the device count.

Each device count runs in a fresh subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (forced CPU devices; on a GPU host
pass ``--real`` to use the first N real devices instead). Prints one JSON line per
measurement::

    python benchmarks/scaling.py                 # devices 1 2 4
    python benchmarks/scaling.py --quick         # smaller work (about a minute)

Figures, per device count ``n`` (warm: compilation excluded):

- ``generation``: trajectories/s of ``simulate_batch`` on a chunk whose trajectory axis
  is sharded over ``n`` devices (Kuramoto-Sivashinsky, 128 points);
- ``training``: samples/s of the jitted data-parallel train step (FNO 1D);
- ``efficiency = throughput(n) / (n * throughput(1))``.

Forced CPU devices share the host's cores: efficiency above ``cores / n`` is impossible,
so on a 2-core machine the 4-device figures measure overhead, not speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from surrogate import distributed

n, quick = int(sys.argv[1]), sys.argv[2] == "1"
mesh = distributed.data_mesh(n)
from datasets.generation import simulate_batch
from solvers import KuramotoSivashinsky

solver = KuramotoSivashinsky(num_points=128, domain_length=64.0, dt=0.5, num_substeps=4)
batch = 16 if quick else 32
frames = 20 if quick else 50
idx = distributed.shard_batch(np.arange(batch, dtype=np.int32), mesh)
key = distributed.replicate(jax.random.key(0), mesh)
run = lambda: jax.block_until_ready(simulate_batch(solver, key, idx, frames, 0))
run()
reps = 2 if quick else 4
t = time.perf_counter()
for _ in range(reps):
    run()
gen = reps * batch / (time.perf_counter() - t)

from surrogate.forecaster import ForecasterSpec
from surrogate.train import TrainConfig, init_forecaster, make_optimizer, make_train_step

class Stats:
    state_mean = np.zeros(1); state_std = np.ones(1)
    delta_mean = np.zeros(1); delta_std = np.ones(1)

spec = ForecasterSpec.create(
    model_name="fno", model_kwargs={"width": 32, "modes": 16, "num_layers": 4},
    variables=solver.variables, units=dict(solver.units), grid=solver.grid.to_dict(),
    dt=solver.dt, history=1)
f = init_forecaster(spec, Stats())
cfg = TrainConfig(num_steps=100, batch_size=32)
opt, _ = make_optimizer(cfg)
step = make_train_step(f, opt, cfg, 1)
params = distributed.replicate(jax.tree.map(jnp.copy, f.params), mesh)
state = distributed.replicate(opt.init(params), mesh)
b = 32
rng = np.random.default_rng(0)
x = distributed.shard_batch(rng.standard_normal((b, 1, 1, 128)).astype(np.float32), mesh)
y = distributed.shard_batch(rng.standard_normal((b, 1, 1, 128)).astype(np.float32), mesh)
k = distributed.replicate(jax.random.key(0), mesh)
params, state, loss, _ = step(params, state, x, y, k)
jax.block_until_ready(loss)
steps = 5 if quick else 20
t = time.perf_counter()
for _ in range(steps):
    params, state, loss, _ = step(params, state, x, y, k)
jax.block_until_ready(loss)
tr = steps * b / (time.perf_counter() - t)
print(json.dumps({"devices": n, "generation": gen, "training": tr}))
"""


def measure(n: int, quick: bool, real: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not real:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
        env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), "1" if quick else "0"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--real", action="store_true", help="real devices, no forced CPU ones")
    args = ap.parse_args()
    base = None
    cores = os.cpu_count()
    for n in args.devices:
        r = measure(n, args.quick, args.real)
        base = base or r
        for what, unit in (("generation", "trajectories/s"), ("training", "samples/s")):
            print(
                json.dumps(
                    {
                        "figure": f"{what}_scaling",
                        "devices": n,
                        "throughput": round(r[what], 2),
                        "unit": unit,
                        "speedup": round(r[what] / base[what], 3),
                        "efficiency": round(r[what] / (n * base[what]), 3),
                        "forced_cpu_devices": not args.real,
                        "host_cores": cores,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
