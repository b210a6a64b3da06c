"""Surrogate benchmarks: model throughput, and our FNO against neuraloperator's (PyTorch).

Prints one JSON line per figure::

    python benchmarks/surrogates.py                       # every section
    python benchmarks/surrogates.py --quick               # few repeats (noisy, a smoke run)
    python benchmarks/surrogates.py --sections models_throughput
    python benchmarks/surrogates.py --thp                 # glibc malloc on transparent huge pages

Sections (one function each, run by :func:`main` in this order):

- ``fno_vs_neuraloperator``: our :class:`surrogate.models.FNO` built as the identical
  architecture of neuraloperator 2.0's ``FNO`` (same kept modes, lifting/projection MLPs,
  channel MLPs with soft gating, grid positional embedding: the parameter counts match
  exactly), in the two cases of the peer script ``shared/peers/fno_neuraloperator.py``:
  2D ``(B, 1, 64, 64)`` hidden 32, and 1D ``(B, 1, 256)`` hidden 64. Training step = forward
  + MSE + backward + Adam(1e-3) on a fixed random batch, one ``jax.jit``-compiled pure function
  of ``(params, opt_state, x, y)`` (``nnx.split`` once, donated buffers); inference jitted.
  Median seconds per call over repeats after warm-up (compile time separately), CPU time over
  wall time, user/system CPU and minor page faults per call. The peer script runs in the same
  invocation (``peers-venv/bin/python``, when that venv exists) and each case prints
  ``ratio = ours_samples_per_s / theirs_samples_per_s`` for training and each inference batch.
- ``models_throughput``: training samples/s of every registered model at its default config
  (``configs/model/*.yaml``) on ``(16, 1, 64, 64)`` 2D inputs, and inference samples/s.

About memory. XLA:CPU allocates each execution's scratch memory (hundreds of MB for a
training step) with malloc and frees it afterwards; with glibc's defaults the pages go back to
the OS, so every step page-faults them in again, 4 KiB at a time; on small VMs that is 30 % or
more of a training step's CPU time (see ``sys_ms`` and ``minor_faults``). The package's entry
points call :func:`solvers.retain_freed_memory` first (one arena, no mmap, no trimming: freed
memory is reused), and so does this benchmark for our side (``env.retain_freed_memory``);
``--glibc-defaults`` skips it. The peer process runs with glibc's defaults (PyTorch's step
faults far less). ``--thp`` re-runs both sides with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
(transparent huge pages for malloc, glibc >= 2.35; the variable is inherited by the peer
process, and our side then leaves malloc as the variable says).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from solvers.allocator import retain_freed_memory  # noqa: E402
from surrogate.models import MODELS, count_parameters  # noqa: E402
from surrogate.models.fno import FNO  # noqa: E402

PEER_SCRIPT = REPO.parent / "shared" / "peers" / "fno_neuraloperator.py"
if not PEER_SCRIPT.exists():
    PEER_SCRIPT = pathlib.Path("/work/shared/peers/fno_neuraloperator.py")
PEER_PYTHON = REPO / "peers-venv" / "bin" / "python"
THP_TUNABLE = "glibc.malloc.hugetlb=1"
ALLOCATOR = {"retain_freed_memory": False}

# The two cases of the peer script, as (name, FNO kwargs, spatial, train batch, infer batches).
# neuraloperator FNO(n_modes=(16, 16), hidden_channels=32, n_layers=4) with its defaults:
# lifting/projection MLPs of 2 * hidden, channel MLP expansion 0.5 with soft-gating skip,
# linear FNO skip, grid positional embedding; n_modes=(16, 16) keeps a 16 x 9 rfft2 block,
# which is modes=(8, 9) in our convention.
FNO_CASES = [
    (
        "fno2d_64x64",
        dict(width=32, modes=(8, 9), lifting_channels=64, projection_channels=64),
        (64, 64),
        16,
        (1, 16),
    ),
    (
        "fno1d_N256",
        dict(width=64, modes=(9,), lifting_channels=128, projection_channels=128),
        (256,),
        32,
        (1, 32),
    ),
]
NEURALOP_DEFAULTS = dict(num_layers=4, channel_mlp_expansion=0.5, positional_embedding=True)


# ----------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int, inner: int) -> dict[str, Any]:
    """Median/min/max seconds per call of ``fn`` (which must block), CPU use, faults per call."""
    for _ in range(warmup):
        fn()
    per_call = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        per_call.append((time.perf_counter() - t) / inner)
    wall = time.perf_counter() - w0
    cpu = time.process_time() - c0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = repeats * inner
    return {
        "median_s": statistics.median(per_call),
        "min_s": min(per_call),
        "max_s": max(per_call),
        "cpu_util_cores": cpu / wall,
        "user_ms": 1e3 * (r1.ru_utime - r0.ru_utime) / n,
        "sys_ms": 1e3 * (r1.ru_stime - r0.ru_stime) / n,
        "minor_faults": (r1.ru_minflt - r0.ru_minflt) / n,
    }


def make_train_step(model: nnx.Module, learning_rate: float = 1e-3):
    """Split ``model`` once; return ``(step, params, opt_state)`` with a jitted pure Adam step.

    ``step(params, opt_state, x, y) -> (params, opt_state, loss)``: forward, MSE, backward and an
    Adam update in one compiled function; params and optimizer state are donated.
    """
    graphdef, params = nnx.split(model)
    params = jax.tree.map(jnp.copy, params)  # donated below: keep the model's own arrays alive
    tx = optax.adam(learning_rate)
    opt_state = tx.init(params)

    def loss_fn(params, x, y):
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1)), params, opt_state


def make_inference(model: nnx.Module):
    """Split ``model`` once; return ``(infer, params)`` with ``infer(params, x)`` jitted."""
    graphdef, params = nnx.split(model)
    return jax.jit(lambda params, x: nnx.merge(graphdef, params)(x)), params


def bench_train(model, x, y, args) -> dict[str, Any]:
    """Throughput of the jitted training step of ``model`` on the fixed batch ``(x, y)``."""
    step, params, opt_state = make_train_step(model)
    t0 = time.perf_counter()
    compiled = step.lower(params, opt_state, x, y).compile()
    compile_s = time.perf_counter() - t0
    state = {"params": params, "opt": opt_state}

    def run():
        state["params"], state["opt"], loss = compiled(state["params"], state["opt"], x, y)
        loss.block_until_ready()

    t = time_calls(run, args.warmup, args.repeats, args.inner_train)
    return {
        "batch": int(x.shape[0]),
        "compile_s": compile_s,
        **t,
        "samples_per_s": x.shape[0] / t["median_s"],
        "ms_per_step": 1e3 * t["median_s"],
    }


def bench_infer(model, x, args) -> dict[str, Any]:
    """Latency and throughput of the jitted forward pass of ``model`` on ``x``."""
    infer, params = make_inference(model)
    t0 = time.perf_counter()
    compiled = infer.lower(params, x).compile()
    compile_s = time.perf_counter() - t0
    t = time_calls(
        lambda: compiled(params, x).block_until_ready(), args.warmup, args.repeats, args.inner_infer
    )
    return {
        "batch": int(x.shape[0]),
        "compile_s": compile_s,
        **t,
        "latency_ms": 1e3 * t["median_s"],
        "samples_per_s": x.shape[0] / t["median_s"],
    }


def environment() -> dict[str, Any]:
    return {
        "jax": jax.__version__,
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        # Ours: solvers.retain_freed_memory(), as the hs-* entry points apply it; the peer
        # process runs with glibc's defaults (and the same GLIBC_TUNABLES, if any).
        "retain_freed_memory": ALLOCATOR["retain_freed_memory"],
    }


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def run_peer(args) -> dict[str, Any] | None:
    """Run the neuraloperator peer script once; its JSON, or None (with a note) if unavailable."""
    if not PEER_PYTHON.exists():
        emit({"note": f"{PEER_PYTHON} not found: peer figures skipped (see module docstring)"})
        return None
    cmd = [
        str(PEER_PYTHON),
        str(PEER_SCRIPT),
        f"--repeats={args.repeats}",
        f"--warmup={args.warmup}",
        f"--inner-train={args.inner_train}",
        f"--inner-infer={args.inner_infer}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        emit({"note": "peer script failed", "stderr_tail": proc.stderr[-2000:]})
        return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def fno_vs_neuraloperator(args) -> list[dict[str, Any]]:
    """Our FNO against neuraloperator's on the peer script's two cases (module docstring)."""
    peer = run_peer(args)
    theirs = {r["case"]: r for r in peer["results"]} if peer else {}
    records = []
    key = jax.random.key(0)
    for name, kwargs, spatial, train_batch, infer_batches in FNO_CASES:
        model = FNO(
            1,
            1,
            spatial_dims=len(spatial),
            **kwargs,
            **NEURALOP_DEFAULTS,
            rngs=nnx.Rngs(0),
        )
        x = jax.random.normal(jax.random.fold_in(key, 0), (train_batch, 1, *spatial))
        y = jax.random.normal(jax.random.fold_in(key, 1), (train_batch, 1, *spatial))
        ours = {"train": bench_train(model, x, y, args), "infer": {}}
        for b in infer_batches:
            xi = jax.random.normal(jax.random.fold_in(key, 2 + b), (b, 1, *spatial))
            ours["infer"][f"batch{b}"] = bench_infer(model, xi, args)
        rec = {
            "bench": "fno_vs_neuraloperator",
            "case": name,
            "params_ours": count_parameters(model),
            "params_theirs": theirs.get(name, {}).get("params_real"),
            "fno_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
            | NEURALOP_DEFAULTS,
            "ours": ours,
        }
        if name in theirs:
            t = theirs[name]
            rec["theirs"] = {"train": t["train"], "infer": t["infer"]}
            rec["ratio"] = {
                "train": ours["train"]["samples_per_s"] / t["train"]["samples_per_s"],
                **{
                    f"infer_{k}": ours["infer"][k]["samples_per_s"] / t["infer"][k]["samples_per_s"]
                    for k in ours["infer"]
                    if k in t["infer"]
                },
            }
            rec["peer_versions"] = peer["versions"]
        rec["env"] = environment()
        emit(rec)
        records.append(rec)
    return records


def _default_model_kwargs(name: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "model" / f"{name}.yaml"))
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def models_throughput(args) -> list[dict[str, Any]]:
    """Training and inference samples/s of each model at its default config on 64 x 64 inputs."""
    records = []
    key = jax.random.key(0)
    batch, spatial = 16, (64, 64)
    x = jax.random.normal(jax.random.fold_in(key, 0), (batch, 1, *spatial))
    y = jax.random.normal(jax.random.fold_in(key, 1), (batch, 1, *spatial))
    for name, cls in MODELS.items():
        kwargs = _default_model_kwargs(name)
        model = cls(1, 1, spatial_dims=2, **kwargs, rngs=nnx.Rngs(0))
        rec = {
            "bench": "models_throughput",
            "model": name,
            "kwargs": kwargs,
            "input_shape": [batch, 1, *spatial],
            "params": count_parameters(model),
            "train": bench_train(model, x, y, args),
            "infer": bench_infer(model, x, args),
            "env": environment(),
        }
        emit(rec)
        records.append(rec)
    return records


def forecast_vs_solver(args) -> list[dict[str, Any]]:
    """Trained forecaster against its solver for the same horizon, batch 1 and 32.

    For each trained run directory in ``--runs`` (``hs-pipeline`` output; default the KS and
    Kolmogorov presets when present): both steppers advance the dataset's test states by
    ``--horizon`` output intervals in one compiled ``lax.scan`` (``rollout_batch``), compile
    time apart; the forecast's RMSE against the solver at the horizon (relative to the
    solver state's std) is the accuracy at which the speed-up holds.
    """
    import hydra.utils
    import numpy as np
    from omegaconf import OmegaConf

    import datasets
    from surrogate.cli import check_targets
    from surrogate.evaluate import rollout_batch
    from surrogate.pipeline import load_trained

    records = []
    runs = [pathlib.Path(r) for r in args.runs.split(",") if r]
    for run_dir in runs:
        if not (run_dir / "forecaster" / "bundle.json").exists():
            print(
                json.dumps(
                    {
                        "section": "forecast_vs_solver",
                        "run": str(run_dir),
                        "skipped": "no trained bundle",
                    }
                )
            )
            continue
        cfg = OmegaConf.load(run_dir / "config.yaml")
        check_targets(cfg)  # a run directory may come from someone else
        data_dir = pathlib.Path(cfg.data.path)
        solver = hydra.utils.instantiate(cfg.solver, _convert_="all")
        forecaster = load_trained(run_dir, data_dir)
        test = datasets.load_trajectories(data_dir, "test")[:, 0]
        for batch in (1, 32):
            x0 = jnp.asarray(np.resize(test, (batch, *test.shape[1:])))
            out = {}
            for name, stepper in (("solver", solver), ("surrogate", forecaster)):
                t0 = time.perf_counter()
                final = jax.block_until_ready(rollout_batch(stepper, x0, args.horizon + 1)[:, -1])
                compile_s = time.perf_counter() - t0
                timing = time_calls(
                    lambda st=stepper, x=x0: jax.block_until_ready(
                        rollout_batch(st, x, args.horizon + 1)
                    ),
                    args.warmup,
                    args.repeats,
                    1,
                )
                out[name] = (final, timing, compile_s)
            err = float(jnp.sqrt(jnp.mean((out["surrogate"][0] - out["solver"][0]) ** 2)))
            scale = float(jnp.std(out["solver"][0]))
            rec = {
                "section": "forecast_vs_solver",
                "run": str(run_dir),
                "solver": solver.name,
                "grid": list(solver.grid.num_points),
                "batch": batch,
                "horizon_steps": args.horizon,
                "horizon_time": args.horizon * solver.dt,
                "solver_s": out["solver"][1]["median_s"],
                "surrogate_s": out["surrogate"][1]["median_s"],
                "speedup": out["solver"][1]["median_s"] / out["surrogate"][1]["median_s"],
                "solver_compile_s": out["solver"][2],
                "surrogate_compile_s": out["surrogate"][2],
                "rmse_at_horizon": err,
                "relative_rmse_at_horizon": err / scale if scale else None,
                "cores_solver": out["solver"][1]["cpu_util_cores"],
                "cores_surrogate": out["surrogate"][1]["cpu_util_cores"],
            }
            print(json.dumps(rec))
            records.append(rec)
    return records


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "fno_vs_neuraloperator": fno_vs_neuraloperator,
    "models_throughput": models_throughput,
    "forecast_vs_solver": forecast_vs_solver,
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--inner-train", type=int, default=3, help="train steps per timed repeat")
    ap.add_argument("--inner-infer", type=int, default=5, help="inference calls per repeat")
    ap.add_argument("--quick", action="store_true", help="repeats=3, warmup=1, inner=1")
    ap.add_argument("--thp", action="store_true", help="re-run with " + THP_TUNABLE)
    ap.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="skip solvers.retain_freed_memory() (what the package's entry points apply)",
    )
    ap.add_argument(
        "--runs",
        default="runs/ks-fno,runs/kolmogorov-fno_medium",
        help="forecast_vs_solver: trained run directories (comma-separated)",
    )
    ap.add_argument("--horizon", type=int, default=10, help="forecast_vs_solver: steps of dt")
    args = ap.parse_args(argv)
    if args.thp and THP_TUNABLE not in os.environ.get("GLIBC_TUNABLES", ""):
        env = dict(os.environ)
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), THP_TUNABLE]))
        argv = sys.argv[1:] if argv is None else argv
        sys.exit(subprocess.call([sys.executable, __file__, *argv], env=env))
    if not args.glibc_defaults:
        ALLOCATOR["retain_freed_memory"] = retain_freed_memory()  # before JAX's threads exist
    if args.quick:
        args.repeats, args.warmup, args.inner_train, args.inner_infer = 3, 1, 1, 1
    unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown sections {unknown}; valid: {', '.join(SECTIONS)}")
    for name in args.sections.split(","):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
