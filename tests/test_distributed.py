"""Multi-device and multi-process code on forced CPU devices, each check in a subprocess.

``XLA_FLAGS=--xla_force_host_platform_device_count=N`` only takes effect before JAX
initialises, which has long happened in this pytest process, so every multi-device check
runs ``python -c <script>`` with the flag set and asserts on the JSON it prints.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from surrogate import distributed
from tests.helpers import PRELUDE, REPO, adam_gap, free_port, run_processes, run_script


def test_process_slice_tiles_the_items():
    for n in (0, 1, 7, 16):
        for p in (1, 2, 3, 4):
            parts = [distributed.process_slice(n, i, p) for i in range(p)]
            assert [j for s in parts for j in range(n)[s]] == list(range(n))
            sizes = [s.stop - s.start for s in parts]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="process_index"):
        distributed.process_slice(4, 2, 2)


def test_initialize_from_env_is_a_noop_without_a_cluster(monkeypatch):
    for k in (*distributed.ENV_KEYS, "SLURM_STEP_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.initialize_from_env() is False
    assert distributed.initialize_from_env(enabled=False) is False
    with pytest.raises(RuntimeError, match="JAX_COORDINATOR_ADDRESS"):
        distributed.initialize_from_env(enabled=True)


GENERATE_AND_STEP = """
import pathlib, tempfile
import jax.numpy as jnp
import datasets
from surrogate.evaluate import rollout_batch
from tests.datasets.dataset_helpers import checksums, ks_solver

out = {"devices": jax.device_count()}
tmp = pathlib.Path(tempfile.mkdtemp())
solver = ks_solver()
kw = dict(num_trajectories=10, num_frames=4, trajectories_per_shard=5, batch_size=3,
          progress=False)
for d in (1, 4):
    datasets.generate(solver, tmp / f"d{d}", devices=d, **kw)
out["same_bytes"] = checksums(tmp / "d1") == checksums(tmp / "d4")
out["num_shards"] = len(checksums(tmp / "d4"))

mesh = distributed.data_mesh()
x0 = jnp.asarray(datasets.regenerate_trajectories(tmp / "d1", range(8))[:, 0])
a = rollout_batch(solver, x0, num_frames=3)
b = rollout_batch(solver, x0, num_frames=3, mesh=mesh)
out["rollout_equal"] = bool(np.array_equal(np.asarray(a), np.asarray(b)))
out["rollout_sharded"] = len(b.sharding.device_set)
try:
    distributed.shard_batch(np.zeros((6, 2)), mesh)
    out["error"] = None
except ValueError as e:
    out["error"] = str(e)

# one data-parallel step on 4 devices against one step on one device
_, data, spec, stats = make_setup()
cfg = small_config(num_steps=1, log_every=1, checkpoint_every=0)
one = train(init_forecaster(spec, stats), ArrayLoader(data, batch_size=8), cfg, tmp / "t1", progress=False)
four = train(init_forecaster(spec, stats), ArrayLoader(data, batch_size=8), cfg, tmp / "t4",
             progress=False, mesh=mesh)
out["step_rel_diff"] = maxdiff(leaves(four.forecaster), leaves(one.forecaster))
out["loss"] = [one.metrics[0]["loss"], four.metrics[0]["loss"]]
out["grad_norm"] = [one.metrics[0]["grad_norm"], four.metrics[0]["grad_norm"]]
out["lr"] = one.metrics[0]["lr"]
out["param_devices"] = len(jax.tree.leaves(four.forecaster.params)[0].sharding.device_set)
print(json.dumps(out))
"""


@pytest.mark.integration
def test_four_devices_generate_same_bytes_and_train_like_one():
    r = run_script(GENERATE_AND_STEP, 4)
    assert r["devices"] == 4
    assert r["num_shards"] == 2 and r["same_bytes"]
    assert r["rollout_equal"] and r["rollout_sharded"] == 4
    assert "not divisible by the 4 devices" in r["error"]
    assert r["param_devices"] == 4
    # The warmup starts at lr 0 (asserted), so this step leaves the parameters where they
    # were: any difference would be a wrong update, not round-off.
    assert r["lr"] == 0.0 and r["step_rel_diff"] < 1e-4, r
    # Loss and gradient come before Adam: the 4-device all-reduce sums 4 float32 partial
    # means in another order than one device's mean, a few ulps (rtol 1e-5 ~ 80 eps).
    np.testing.assert_allclose(r["loss"][0], r["loss"][1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r["grad_norm"][0], r["grad_norm"][1], rtol=1e-5, atol=1e-7)


CHECKPOINT = """
run_dir, devices, stop_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
_, data, spec, stats = make_setup()
cfg = small_config(num_steps=4, log_every=2, checkpoint_every=2)
mesh = distributed.data_mesh(devices) if devices > 1 else None
res = train(init_forecaster(spec, stats), ArrayLoader(data, batch_size=8), cfg, run_dir,
            progress=False, mesh=mesh, stop_at=stop_at)
np.savez(run_dir + f"/params_{devices}.npz", *leaves(res.forecaster))
out = {"step": res.step, "devices": jax.device_count(), "losses": [m["loss"] for m in res.metrics]}
if len(sys.argv) > 4:  # also the uninterrupted run on one device, in this same process
    straight = train(init_forecaster(spec, stats), ArrayLoader(data, batch_size=8), cfg, sys.argv[4],
                     progress=False)
    np.savez(sys.argv[4] + "/params_1.npz", *leaves(straight.forecaster))
    out["straight_losses"] = [m["loss"] for m in straight.metrics]
print(json.dumps(out))
"""


@pytest.mark.integration
def test_checkpoint_saved_on_four_devices_resumes_on_two(tmp_path):
    a = run_script(CHECKPOINT, 4, str(tmp_path / "split"), "4", "2")
    assert a["step"] == 2 and a["devices"] == 4
    b = run_script(CHECKPOINT, 2, str(tmp_path / "split"), "2", "4", str(tmp_path / "straight"))
    assert b["step"] == 4 and b["devices"] == 2 and len(b["losses"]) == 2
    resumed = np.load(tmp_path / "split" / "params_2.npz")
    straight = np.load(tmp_path / "straight" / "params_1.npz")
    from surrogate.train import make_optimizer
    from tests.helpers import small_config

    cfg = small_config(num_steps=4, log_every=2, checkpoint_every=2)  # as in CHECKPOINT
    gap = adam_gap(make_optimizer(cfg)[1](s) for s in range(cfg.num_steps))
    for k in straight.files:
        # four AdamW steps on gradients reduced in another order: Adam's bound (7.3e-3)
        np.testing.assert_allclose(resumed[k], straight[k], rtol=0, atol=gap, err_msg=k)
    # Parameters that differ by more than round-off are those with a near-zero gradient,
    # which move the loss only at second order: float32 agreement (rtol 1e-4 ~ 800 eps).
    np.testing.assert_allclose(b["losses"], b["straight_losses"], rtol=1e-4, atol=1e-7)


MULTIPROCESS = """
import pathlib
pid, port, root = int(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=60)
import datasets
from tests.datasets.dataset_helpers import checksums, ks_solver

datasets.generate(ks_solver(), root / "data", num_trajectories=10, num_frames=4,
                  trajectories_per_shard=2, batch_size=2, progress=False)
_, data, spec, stats = make_setup()
cfg = small_config(num_steps=2, log_every=1, checkpoint_every=2)
mesh = distributed.data_mesh()
res = train(init_forecaster(spec, stats), ArrayLoader(data, batch_size=8), cfg, root / f"run{pid}",
            progress=False, mesh=mesh)
# one run directory shared by both processes: stop after step 1, resume from a different
# initialisation; orbax saves and restores collectively
shared = root / "shared"
train(init_forecaster(spec, stats), ArrayLoader(data, batch_size=8), cfg, shared, progress=False,
      mesh=mesh, stop_at=1)
resumed = train(init_forecaster(spec, stats, seed=99), ArrayLoader(data, batch_size=8), cfg, shared,
                progress=False, mesh=mesh)
resumed_equal = all(np.array_equal(a, b) for a, b in
                    zip(leaves(resumed.forecaster), leaves(res.forecaster), strict=True))
# a WindowLoader: each process reads only its rows of every batch
windows = datasets.WindowLoader(root / "data", "train", batch_size=4, seed=0)
own = train(init_forecaster(spec, stats), windows, cfg, root / f"own{pid}", progress=False,
            mesh=mesh)
np.savez(root / f"own_params_{pid}.npz", *leaves(own.forecaster))
print(json.dumps({"pid": jax.process_index(), "processes": jax.process_count(),
                  "global_devices": jax.device_count(), "step": res.step,
                  "loss": res.metrics[-1]["loss"], "params": [float(x.sum()) for x in
                  leaves(res.forecaster)], "own_losses": [m["loss"] for m in own.metrics],
                  "own_grad_norms": [m["grad_norm"] for m in own.metrics],
                  "resumed_equal": resumed_equal}))
"""


@pytest.mark.integration
def test_two_processes_generate_and_train(tmp_path):
    port = str(free_port())
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
    }
    script = PRELUDE + textwrap.dedent(MULTIPROCESS)
    outs = run_processes(
        [[sys.executable, "-c", script, str(i), port, str(tmp_path)] for i in range(2)], [env] * 2
    )
    assert [o["pid"] for o in outs] == [0, 1]
    assert all(o["processes"] == 2 and o["global_devices"] == 4 for o in outs)
    assert outs[0]["step"] == outs[1]["step"] == 2
    assert outs[0]["params"] == outs[1]["params"]  # replicated: identical on both
    assert outs[0]["resumed_equal"] and outs[1]["resumed_equal"]  # bitwise resume
    import datasets
    from tests.datasets.dataset_helpers import ks_solver

    manifest = datasets.read_manifest(tmp_path / "data")
    assert manifest["complete"] and len(manifest["shards"]) == 5
    single = datasets.generate(
        ks_solver(),
        tmp_path / "single",
        num_trajectories=10,
        num_frames=4,
        trajectories_per_shard=2,
        batch_size=2,
        progress=False,
    )
    from tests.datasets.dataset_helpers import checksums

    assert checksums(tmp_path / "data") == checksums(single)
    assert not list((tmp_path / "data").glob(".records-*"))
    # Rows read per process and assembled equal the whole batch read by one process.
    from surrogate.train import init_forecaster, train
    from tests.helpers import make_setup, small_config

    _, _, spec, stats = make_setup()
    windows = datasets.WindowLoader(tmp_path / "data", "train", batch_size=4, seed=0)
    cfg = small_config(num_steps=2, log_every=1, checkpoint_every=2)
    one = train(init_forecaster(spec, stats), windows, cfg, tmp_path / "own1", progress=False)
    # Loss and gradient norm come before Adam (both steps at the initial parameters: the
    # warmup's first lr is 0): 4 partial means summed in another order, a few float32 ulps.
    np.testing.assert_allclose(
        outs[0]["own_losses"], [m["loss"] for m in one.metrics], rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        outs[0]["own_grad_norms"], [m["grad_norm"] for m in one.metrics], rtol=1e-5, atol=1e-7
    )
    gap = adam_gap(m["lr"] for m in one.metrics)
    refs = [np.ravel(x) for x in jax.tree.leaves(one.forecaster.params)]
    for pid in (0, 1):
        got = np.load(tmp_path / f"own_params_{pid}.npz")
        assert len(got.files) == len(refs)
        flat = np.concatenate([np.ravel(got[f"arr_{i}"]) for i in range(len(refs))])
        # two AdamW steps: a round-off gradient may flip its update (Adam's bound, 1.2e-3)
        np.testing.assert_allclose(flat, np.concatenate(refs), rtol=0, atol=gap)
        # Only a gradient within a few round-offs of zero has its step changed by a tenth:
        # measured 2 of 9345 parameters (94 % bitwise equal); a wrong reduction moves most.
        off = ~np.isclose(flat, np.concatenate(refs), rtol=0, atol=0.05 * gap)
        assert off.mean() < 0.01, (int(off.sum()), off.size)


# ---- failures, resume, Slurm, the whole pipeline -----------------------------------------
def _launch(args: list[str], tmp_path, timeout: float = 240.0, env=None):
    """``python -m surrogate.launch <args>`` with one CPU device per process."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))},
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "surrogate.launch", "--log-dir", str(tmp_path / "logs"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


GENERATE_MAYBE_CRASH = """
import os, pathlib, sys
from surrogate import distributed
distributed.initialize_from_env()
import jax
import datasets
from datasets import storage
from tests.datasets.dataset_helpers import ks_solver

root, crash = pathlib.Path(sys.argv[1]), sys.argv[2] == "1"
if crash and jax.process_index() == 1:
    real, calls = storage.write_shard, []

    def write_shard(ds, final):  # dies when it starts its second shard
        calls.append(final)
        if len(calls) == 2:
            os._exit(17)
        return real(ds, final)

    storage.write_shard = write_shard
datasets.generate(ks_solver(), root, num_trajectories=10, num_frames=4,
                  trajectories_per_shard=2, batch_size=2, progress=False)
"""


@pytest.mark.integration
def test_a_crash_in_multiprocess_generation_loses_only_unfinished_shards(tmp_path):
    import datasets
    from tests.datasets.dataset_helpers import checksums, ks_solver

    data = tmp_path / "data"
    cmd = ["-n", "2", "--no-pin", "--", sys.executable, "-c", GENERATE_MAYBE_CRASH, str(data)]
    crashed = _launch([*cmd, "1"], tmp_path)
    assert crashed.returncode == 17, crashed.stderr[-3000:]
    assert "process 1 exited with status 17; stopping the others" in crashed.stderr
    assert not datasets.read_manifest(data)["complete"]
    # Process 1 finished shard 1 (its first) before dying: it must survive the rerun.
    first = data / datasets.storage.shard_name(1)
    assert first.is_file()
    before = first.stat()
    rerun = _launch([*cmd, "0"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    manifest = datasets.read_manifest(data)
    assert manifest["complete"] and [e["event"] for e in manifest["history"]][-2:] == [
        "resumed",
        "completed",
    ]
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    single = datasets.generate(
        ks_solver(),
        tmp_path / "single",
        num_trajectories=10,
        num_frames=4,
        trajectories_per_shard=2,
        batch_size=2,
        progress=False,
    )
    assert checksums(data) == checksums(single)
    assert not list(data.glob(".records-*"))


SLURM_JOIN = """
import json
from surrogate import distributed
joined = distributed.initialize_from_env()  # "auto": JAX's Slurm detection
import jax, numpy as np
mesh = distributed.data_mesh()
x = distributed.shard_batch(np.arange(4.0), mesh)  # each process contributes 2 rows
print(json.dumps({"joined": joined, "pid": jax.process_index(), "n": jax.process_count(),
                  "gathered": distributed.to_host(x).tolist()}))
"""


def _free_slurm_job_id() -> int:
    """A job id whose JAX-derived coordinator port (61440 + id % 4096) is free now."""
    for job in range(1000 + os.getpid() % 2000, 4096):
        with socket.socket() as s:
            try:
                s.bind(("localhost", 61440 + job))
            except OSError:
                continue
            return job
    raise RuntimeError("no free port in 61440..65535")


@pytest.mark.integration
def test_slurm_step_is_detected_and_joined(tmp_path):
    job = _free_slurm_job_id()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    envs = [
        {
            **base,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": str(REPO),
            # what `srun --ntasks=2` on one node called "localhost" sets
            "SLURM_JOB_ID": str(job),
            "SLURM_STEP_ID": "0",
            "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(i),
            "SLURM_LOCALID": str(i),
            "SLURM_STEP_NODELIST": "localhost",
            "SLURM_STEP_NUM_NODES": "1",
        }
        for i in range(2)
    ]
    outs = run_processes([[sys.executable, "-c", SLURM_JOIN]] * 2, envs, timeout=120)
    assert [o["pid"] for o in outs] == [0, 1]
    assert all(o["joined"] and o["n"] == 2 for o in outs)
    assert all(o["gathered"] == [0.0, 1.0, 2.0, 3.0] for o in outs)


HEARTBEAT = """
import os, sys, time
from surrogate import distributed
distributed.initialize_from_env(heartbeat_timeout=5)
import jax
distributed.barrier("up")
if jax.process_index() == 1:
    os._exit(3)  # dies without a word to the coordinator
t = time.monotonic()
distributed.barrier("never")  # process 1 is gone
print("survived the barrier", flush=True)
"""


@pytest.mark.integration
def test_without_a_launcher_jax_ends_the_survivors_of_a_dead_process(tmp_path):
    port = str(free_port())
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HEARTBEAT],
            env={
                **base,
                "JAX_PLATFORMS": "cpu",
                "PYTHONPATH": str(REPO),
                "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    t0 = time.monotonic()
    try:
        out0, err0 = procs[0].communicate(timeout=90)  # would hang without the heartbeat
        procs[1].communicate(timeout=10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[1].returncode == 3
    assert procs[0].returncode != 0 and "survived" not in out0
    assert "heartbeat" in err0 or "unhealthy" in err0, err0[-2000:]
    # ended by the 5 s heartbeat (10 s measured under a 3x load), not the 90 s timeout
    assert time.monotonic() - t0 < 60


@pytest.mark.integration
def test_pipeline_under_two_processes_matches_one(tmp_path):
    """``hs-launch -n 2 -- hs-pipeline experiment=tiny``: every stage, shared work, one set
    of files; the sharded evaluation equals a one-process evaluation of the same bundle."""
    import xarray as xr

    import datasets
    from surrogate.bundle import load_forecaster
    from surrogate.evaluate import evaluate
    from tests.datasets.dataset_helpers import ks_solver  # noqa: F401 (import check)

    run, data = tmp_path / "run", tmp_path / "data"
    proc = _launch(
        [
            "-n",
            "2",
            "--",
            sys.executable,
            "-m",
            "surrogate",
            "experiment=tiny",
            f"data.path={data}",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    log1 = (tmp_path / "logs" / "process-1.log").read_text()
    assert "process 1 of 2, 1 local / 2 global devices" in log1
    for f in ("report.html", "evaluation.nc", "hybrid/summary.json", "forecaster/bundle.json"):
        assert (run / f).is_file(), f
    assert datasets.read_manifest(data)["complete"]
    metrics = [json.loads(x) for x in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert len({m["step"] for m in metrics if "loss" in m}) == len(
        [m for m in metrics if "loss" in m]
    )  # one writer: no duplicated rows
    stored = xr.open_dataset(run / "evaluation.nc")
    forecaster = load_forecaster(run / "forecaster")
    truth = datasets.load_trajectories(data, "test")[: stored.attrs["num_trajectories"]]
    again = evaluate(
        forecaster,
        truth,
        statistics=datasets.load_statistics(data),
        baselines=(),
        batch_size=int(stored.attrs["batch_size"]),
    )
    # per-member rollouts on 1 row per device vs 2 rows on one: float32 round-off only
    np.testing.assert_allclose(
        again.rmse.sel(model="surrogate").values,
        stored.rmse.sel(model="surrogate").values,
        rtol=1e-4,
        atol=1e-6,
    )
    summary = json.loads((run / "hybrid" / "summary.json").read_text())
    assert summary["num_trajectories"] == 2 and summary["hybrid"]["solver_fraction"] >= 0
