"""Dataset benchmarks: generation throughput and scaling, cost of writing, memory, loader.

Prints one JSON line per figure::

    python benchmarks/datasets.py           # the default datasets (minutes)
    python benchmarks/datasets.py --quick   # small counts (about a minute)

Figures:

- ``generation_throughput``: trajectories/s for the default Kuramoto-Sivashinsky (and,
  when ``solvers.NavierStokes2D`` exists, Navier-Stokes) dataset configs, solver only
  (compute + device->host, no files) and full ``generate`` in one process (warm: no
  compilation), and the write overhead ``full / solver_only - 1`` (target <= 10 %).
- ``worker_scaling``: steady-state throughput (between the first and the last finished
  shard, so start-up and compilation are excluded) with one spawned worker per core
  versus one process, and the scaling efficiency ``speedup / cores``.
- ``peak_rss``: maximum resident memory of a fresh process generating N and 10 N
  trajectories (target: unchanged).
- ``chunking``: write time, size and random-window read time per compression level and
  chunk shape on one default-size shard.
- ``loader_throughput``: WindowLoader batches/s (direct ``batch(step)`` and prefetching
  ``iterate``) for the default training windows.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

import datasets  # noqa: E402
import solvers  # noqa: E402
from datasets import storage  # noqa: E402
from datasets.provenance import generation_spec, solver_layout  # noqa: E402
from datasets.shards import _collect, _dispatch_shard  # noqa: E402
from datasets.simulate import precision_scope  # noqa: E402
from datasets.workers import _Recorder  # noqa: E402


def emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure, **values}), flush=True)


def solver_from_config(name: str):
    """Build a solver from ``configs/solver/<name>.yaml`` (plain YAML, no Hydra)."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "solver" / f"{name}.yaml"))
    node.pop("_target_", None)
    return solvers.build_solver(name, **node)


def data_defaults() -> dict:
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "data" / "default.yaml"))
    node.pop("path")
    return node


def _generate_kwargs(base: dict, **over) -> dict:
    kw = {**base, **over, "progress": False, "overwrite": True}
    return kw


def time_solver_only(solver, kw: dict) -> float:
    """Seconds to compute (and fetch to host) all shards, no files, after warm-up."""
    spec = generation_spec(
        solver,
        num_trajectories=kw["num_trajectories"],
        num_frames=kw["num_frames"],
        seed=kw["seed"],
        spinup_steps=kw["spinup_steps"],
        trajectories_per_shard=kw["trajectories_per_shard"],
        splits=kw["splits"],
        on_nonfinite=kw["on_nonfinite"],
        compression_level=kw.get("compression_level", 0),
        config=None,
    )
    tps, n, b = spec["trajectories_per_shard"], spec["num_trajectories"], kw["batch_size"]
    with precision_scope(solver.precision):
        _collect(_dispatch_shard(solver, spec, 0, min(tps, n), b))  # compile
        start = time.perf_counter()
        in_flight = None
        for k in [*range(-(-n // tps)), None]:  # the same double buffering as generate
            nxt = (
                None
                if k is None
                else _dispatch_shard(solver, spec, k * tps, min(k * tps + tps, n), b)
            )
            if in_flight is not None:
                _collect(in_flight)
            in_flight = nxt
        return time.perf_counter() - start


def time_generate(solver, out: pathlib.Path, kw: dict) -> tuple[float, float]:
    """Seconds of a warm in-process ``generate`` and of its statistics pass."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    datasets.generate(solver, out, **kw)
    total = time.perf_counter() - start
    start = time.perf_counter()
    datasets.compute_statistics(out, store=False)
    return total, time.perf_counter() - start


def bench_generation(name: str, solver, base: dict, n: int, workdir: pathlib.Path) -> dict:
    kw = _generate_kwargs(base, num_trajectories=n, num_workers=1)
    solver_s = time_solver_only(solver, kw)
    full_s, stats_s = time_generate(solver, workdir / f"{name}-1", kw)
    write_s = full_s - stats_s
    emit(
        "generation_throughput",
        solver=name,
        num_trajectories=n,
        num_frames=kw["num_frames"],
        spinup_steps=kw["spinup_steps"],
        state_shape=list(solver.state_shape),
        solver_only_traj_per_s=round(n / solver_s, 3),
        generate_traj_per_s=round(n / write_s, 3),
        write_overhead=round(write_s / solver_s - 1, 4),
        statistics_s=round(stats_s, 3),
        write_overhead_with_statistics=round(full_s / solver_s - 1, 4),
        target_write_overhead=0.10,
    )
    return {"solver_s": solver_s, "generate_s": write_s}


class _Arrivals:
    """Record when finished shards reach the parent (wraps the manifest recorder)."""

    def __init__(self) -> None:
        self.times: list[tuple[float, int]] = []
        self._orig = _Recorder.add

    def __enter__(self):
        arrivals = self

        def add(recorder, record):
            arrivals.times.append(
                (time.perf_counter(), record["trajectories"][1] - record["trajectories"][0])
            )
            return arrivals._orig(recorder, record)

        _Recorder.add = add
        return self

    def __exit__(self, *exc) -> None:
        _Recorder.add = self._orig

    def steady_rate(self) -> float:
        """Trajectories/s between the first and the last shard (start-up excluded)."""
        (t0, _), (t1, _) = self.times[0], self.times[-1]
        return sum(n for _, n in self.times[1:]) / max(t1 - t0, 1e-9)


def bench_workers(name: str, solver, base: dict, n: int, workdir: pathlib.Path) -> None:
    """Steady-state throughput (start-up and compilation excluded) of 1 vs all cores."""
    cores = os.cpu_count() or 1
    rates, walls = {}, {}
    for workers in (1, cores):
        out = workdir / f"{name}-w{workers}"
        kw = _generate_kwargs(base, num_trajectories=n, num_workers=workers)
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        with _Arrivals() as arrivals:
            datasets.generate(solver, out, **kw)
        walls[workers] = time.perf_counter() - start
        rates[workers] = arrivals.steady_rate()
        shutil.rmtree(out)
    emit(
        "worker_scaling",
        solver=name,
        num_trajectories=n,
        workers=cores,
        single_process_traj_per_s=round(rates[1], 3),
        workers_traj_per_s=round(rates[cores], 3),
        wall_s={str(k): round(v, 2) for k, v in walls.items()},
        speedup=round(rates[cores] / rates[1], 3),
        scaling_efficiency=round(rates[cores] / rates[1] / cores, 3),
    )


_RSS_SCRIPT = """
import resource, sys
sys.path.insert(0, {repo!r})
import datasets, solvers
s = solvers.build_solver("kuramoto_sivashinsky", **{solver!r})
datasets.generate(s, {out!r}, **{kw!r})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_rss(base: dict, n: int, workdir: pathlib.Path) -> None:
    solver = solver_from_config("kuramoto_sivashinsky").config()
    rss = {}
    for count in (n, 10 * n):
        out = workdir / f"rss-{count}"
        kw = _generate_kwargs(base, num_trajectories=count, num_workers=1)
        script = _RSS_SCRIPT.format(repo=str(REPO), solver=solver, out=str(out), kw=kw)
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        rss[count] = int(proc.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB on Linux
        shutil.rmtree(out)
    emit(
        "peak_rss",
        solver="kuramoto_sivashinsky",
        num_frames=base["num_frames"],
        rss_mib={str(k): round(v, 1) for k, v in rss.items()},
        ratio_10n_over_n=round(rss[10 * n] / rss[n], 3),
    )


def bench_chunking(solver, base: dict, workdir: pathlib.Path, name: str) -> None:
    """Write/read costs of one default shard for compression levels and chunk shapes."""
    import netCDF4

    tps, t = base["trajectories_per_shard"], base["num_frames"]
    spec = generation_spec(
        solver,
        num_trajectories=tps,
        num_frames=t,
        seed=0,
        spinup_steps=base["spinup_steps"],
        trajectories_per_shard=tps,
        splits={"train": 1.0},
        on_nonfinite="raise",
        compression_level=0,
        config=None,
    )
    with precision_scope(solver.precision):
        frames, _ = _collect(_dispatch_shard(solver, spec, 0, tps, base["batch_size"]))
    layout = solver_layout(solver)
    frame_bytes = frames[0, 0].nbytes
    default_block = storage.time_block(t, frame_bytes)
    rng = np.random.default_rng(0)
    window = 5
    starts = rng.integers(0, t - window, size=200)
    rows = rng.integers(0, tps, size=200)
    for level in (0, 1, 4):
        for block in sorted({1, default_block, t}):
            ds = storage.shard_dataset(
                frames, np.arange(tps), layout=layout, attrs={}, compression_level=level
            )
            for v in layout["variables"]:
                ds[v].encoding["chunksizes"] = (1, block, *layout["grid"]["num_points"])
            path = workdir / f"chunk-{name}-{level}-{block}.nc"
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                _, size = storage.write_shard(ds, path)
                best = min(best, time.perf_counter() - start)
            with netCDF4.Dataset(path) as nc:
                var = nc.variables[layout["variables"][0]]
                start = time.perf_counter()
                for r, s0 in zip(rows, starts, strict=True):
                    var[int(r), int(s0) : int(s0) + window]
                read = (time.perf_counter() - start) / rows.size
            emit(
                "chunking",
                solver=name,
                compression_level=level,
                chunk_frames=block,
                default=bool(level == 0 and block == default_block),
                write_ms=round(best * 1e3, 2),
                bytes=size,
                ratio=round(size / frames.nbytes, 3),
                window_read_ms=round(read * 1e3, 3),
            )
            path.unlink()


def bench_loader(path: pathlib.Path, steps: int) -> None:
    loader = datasets.WindowLoader(path, "train", batch_size=32, history=1, horizon=4, seed=0)
    loader.batch(0)
    start = time.perf_counter()
    for s in range(steps):
        loader.batch(s)
    direct = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in loader.iterate(0, steps):
        pass
    prefetch = steps / (time.perf_counter() - start)
    lazy = datasets.WindowLoader(
        path, "train", batch_size=32, history=1, horizon=4, seed=0, memory_budget_bytes=0
    )
    lazy_steps = max(steps // 10, 5)
    start = time.perf_counter()
    for s in range(lazy_steps):
        lazy.batch(s)
    lazy_rate = lazy_steps / (time.perf_counter() - start)
    lazy.close()
    inputs, targets = loader.batch(0)
    emit(
        "loader_throughput",
        dataset=str(path.name),
        batch_size=32,
        history=1,
        horizon=4,
        batch_shapes=[list(inputs.shape), list(targets.shape)],
        in_memory_batches_per_s=round(direct, 1),
        prefetch_iterate_batches_per_s=round(prefetch, 1),
        lazy_batches_per_s=round(lazy_rate, 1),
        windows_per_s=round(direct * 32, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (about a minute)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench-datasets-"))
    workdir.mkdir(parents=True, exist_ok=True)
    emit(
        "environment",
        cpu_count=os.cpu_count(),
        jax=jax.__version__,
        device=str(jax.devices()[0]),
        load_average=list(os.getloadavg()),
        quick=args.quick,
    )
    base = data_defaults()
    try:
        ks = solver_from_config("kuramoto_sivashinsky")
        n_ks = base["num_trajectories"] if args.quick else 4 * base["num_trajectories"]
        bench_generation("kuramoto_sivashinsky", ks, base, n_ks, workdir)
        bench_chunking(ks, base, workdir, "kuramoto_sivashinsky")
        bench_loader(workdir / "kuramoto_sivashinsky-1", 200 if args.quick else 2000)
        if hasattr(solvers, "NavierStokes2D"):
            ns = solver_from_config("navier_stokes_2d")
            ns_base = {**base, "num_frames": 20, "spinup_steps": 10} if args.quick else base
            bench_generation("navier_stokes_2d", ns, ns_base, 16 if args.quick else 64, workdir)
            bench_chunking(ns, ns_base, workdir, "navier_stokes_2d")
        bench_workers("kuramoto_sivashinsky", ks, base, 4 * n_ks, workdir)
        rss_base = {**base, "num_frames": 50, "spinup_steps": 0} if args.quick else base
        bench_rss(rss_base, 16 if args.quick else 64, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    emit("done", max_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))


if __name__ == "__main__":
    main()
