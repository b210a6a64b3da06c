"""The hybrid runner with its batch split over a device mesh (forced CPU devices).

The 4-device checks share one subprocess (:func:`tests.helpers.run_script`):
the forced device count only takes effect before JAX initialises. The runs are tiny (KS on
32 points, 8 members, a few steps) so the whole file stays well under a minute.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from solvers import KuramotoSivashinsky
from surrogate import distributed
from surrogate.hybrid import (
    ENGINE_ROLLBACK,
    ENGINE_SURROGATE,
    AlwaysSolver,
    HybridRunner,
    Threshold,
)
from tests.helpers import (
    BATCH,
    NUM_STEPS,
    PRELUDE,
    REPO,
    SWEEP,
    THRESHOLD,
    MemberStepTrip,
    expected_trips,
    free_port,
    run_processes,
    run_script,
)

FOUR_DEVICES = """
import re
import jax.numpy as jnp
from surrogate.hybrid import AlwaysSolver, compare_cost, sweep_thresholds
from surrogate.hybrid import chunk as chunk_module
from tests.helpers import NUM_STEPS, SWEEP, ks_setup

out_dir = sys.argv[1]
out = {"devices": jax.device_count()}
mesh = distributed.data_mesh()

# Always-solver: 6 steps in chunks of 4 (the second chunk half skipped).
runner1, x0 = ks_setup(None, AlwaysSolver())
one = runner1.run(x0, 6)
four = ks_setup(mesh, AlwaysSolver())[0].run(x0, 6)
out["solver_bitwise"] = bool(np.array_equal(one.states, four.states))
out["solver_maxdiff"] = float(np.max(np.abs(one.states - four.states)))
out["solver_engine"] = np.unique(four.engine).tolist()
exe = [v for k, v in chunk_module._COMPILED.items() if k[0] == mesh][-1]
carry_sh, frames_sh = exe.input_shardings[0][1][0], exe.output_shardings[1]
out["frames_devices"] = len(frames_sh.device_set)
out["frames_split"] = frames_sh.is_equivalent_to(distributed.batch_sharding(mesh), 4)
out["carry_devices"] = len(carry_sh.device_set)
out["carry_split"] = carry_sh.is_equivalent_to(distributed.batch_sharding(mesh), 3)
out["config_devices"] = [one.config["devices"], four.config["devices"]]

# Threshold policy: some members trip at some steps, and are redone by the solver.
a = ks_setup(None)[0].run(x0, NUM_STEPS)
runner4 = ks_setup(mesh)[0]
b = runner4.run(x0, NUM_STEPS)
np.save(out_dir + "/threshold_one_device.npy", a.states)
np.save(out_dir + "/threshold_four_devices.npy", b.states)
hlo = [v for k, v in chunk_module._COMPILED.items() if k[0] == mesh][-1].as_text()
ops = r"\b(all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)\b"
out["collectives"] = sorted(set(re.findall(ops, hlo)))
out["state_shapes"] = {"local": "f32[2,1,32]" in hlo, "global": "f32[8,1,32]" in hlo}
out["engine"] = [a.engine.tolist(), b.engine.tolist()]
out["values_equal"] = bool(
    np.array_equal(a.indicator_values["member_step_trip"], b.indicator_values["member_step_trip"])
)

try:
    runner4.run(x0[:6], 2)
    out["error"] = None
except ValueError as e:
    out["error"] = str(e)

# Sweep: every threshold (and the pure-solver baseline) reuses the programs built above.
traces = chunk_module.TRACE_COUNT["chunk"]
ds = sweep_thresholds(runner4, x0, NUM_STEPS, SWEEP)
out["sweep_traces"] = chunk_module.TRACE_COUNT["chunk"] - traces
out["sweep_rollbacks"] = ds["rollbacks"].values.tolist()
out["sweep_devices"] = json.loads(ds.attrs["runner_config"])["devices"]
report = compare_cost(runner4, x0, NUM_STEPS)
out["compare"] = {
    "devices": [report[k].config["devices"] for k in ("hybrid", "solver_only")],
    "solver_fraction": [report[k].solver_fraction for k in ("hybrid", "solver_only")],
    "speedup_finite": bool(np.isfinite(report["speedup"]) and report["speedup"] > 0),
    "compile_time": report["hybrid_compile_time"] + report["solver_compile_time"],
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("four_devices")


@pytest.fixture(scope="module")
def four_devices(four_devices_dir) -> dict:
    return run_script(FOUR_DEVICES, 4, str(four_devices_dir), timeout=240.0)


@pytest.mark.integration
def test_sharded_always_solver_run_equals_one_device(four_devices):
    r = four_devices
    assert r["devices"] == 4
    # Every member's solver steps are the same vmapped ETDRK4 scan on 2 members per
    # device as on 8 on one; XLA:CPU's FFT and elementwise kernels work per member, so
    # the result is expected bit for bit (maxdiff reported on failure).
    assert r["solver_bitwise"], r["solver_maxdiff"]
    assert r["solver_engine"] == [0]
    # The compiled chunk takes its carry and gives its frames split over the 4 devices.
    assert r["frames_devices"] == 4 and r["frames_split"]
    assert r["carry_devices"] == 4 and r["carry_split"]
    assert r["config_devices"] == [None, 4]


@pytest.mark.integration
def test_sharded_threshold_run_logs_the_same_engines(four_devices, four_devices_dir):
    r = four_devices
    one, four = (np.asarray(e) for e in r["engine"])
    np.testing.assert_array_equal(four, one)
    # The trips are exactly the (member, step) pairs the indicator puts above the
    # threshold, with global member indices: members differ, so each device's
    # compaction sees a mix of flagged and accepted members.
    trips = expected_trips(BATCH, NUM_STEPS, THRESHOLD)
    np.testing.assert_array_equal(four == ENGINE_ROLLBACK, trips)
    np.testing.assert_array_equal(four == ENGINE_SURROGATE, ~trips)
    per_member = trips.sum(axis=1)
    assert per_member.min() < per_member.max() and 0 < trips.mean() < 1
    assert r["values_equal"]
    # Compaction is device-local: the program holds 2 members per device, no collective.
    assert r["collectives"] == []
    assert r["state_shapes"] == {"local": True, "global": False}
    # Redone members run the solver in sub-batches of another size (buckets of at most
    # 2 per device instead of 8), which XLA may block differently; on XLA:CPU the states
    # came out bitwise equal, but only float32 round-off of the O(1) KS fields, grown
    # over 8 chaotic steps, is promised: rtol 1e-5, atol 1e-5.
    one_states = np.load(four_devices_dir / "threshold_one_device.npy")
    four_states = np.load(four_devices_dir / "threshold_four_devices.npy")
    np.testing.assert_allclose(four_states, one_states, rtol=1e-5, atol=1e-5)


@pytest.mark.integration
def test_sharded_batch_must_divide_by_the_devices(four_devices):
    err = four_devices["error"]
    assert err is not None and "HybridRunner.run" in err
    assert "batch size 6 is not divisible by the 4 devices" in err


@pytest.mark.integration
def test_sharded_threshold_sweep_reuses_one_compilation(four_devices):
    r = four_devices
    # Thresholds are traced and the mesh runs above built both programs (hybrid and
    # pure solver): the sweep's baseline and its three thresholds trace nothing new.
    assert r["sweep_traces"] == 0
    expected = [int(expected_trips(BATCH, NUM_STEPS, t).sum()) for t in SWEEP]
    assert r["sweep_rollbacks"] == expected and expected[0] > expected[1] > expected[2] == 0
    assert r["sweep_devices"] == 4


@pytest.mark.integration
def test_sharded_compare_cost_runs_both_on_the_mesh(four_devices):
    c = four_devices["compare"]
    assert c["devices"] == [4, 4]
    trips = expected_trips(BATCH, NUM_STEPS, THRESHOLD)
    assert c["solver_fraction"] == [float(trips.mean()), 1.0]
    assert c["speedup_finite"] and c["compile_time"] == 0.0  # both programs cached


TWO_PROCESSES = """
from tests.helpers import NUM_STEPS, ks_setup
pid, port, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=60)
runner, x0 = ks_setup(distributed.data_mesh())
res = runner.run(x0, NUM_STEPS)
np.save(f"{out_dir}/states_{pid}.npy", res.states)
print(json.dumps({"processes": jax.process_count(), "global_devices": jax.device_count(),
                  "engine": res.engine.tolist()}))
"""


@pytest.mark.integration
def test_two_processes_each_get_the_whole_sharded_result(four_devices, four_devices_dir, tmp_path):
    # 2 processes x 2 devices: the same 4-device program, outputs gathered across
    # processes (surrogate.distributed.to_host); both hold all 8 members.
    port = str(free_port())
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
    }
    script = PRELUDE + textwrap.dedent(TWO_PROCESSES)
    outs = run_processes(
        [[sys.executable, "-c", script, str(i), port, str(tmp_path)] for i in range(2)], [env] * 2
    )
    assert all(o["processes"] == 2 and o["global_devices"] == 4 for o in outs)
    trips = expected_trips(BATCH, NUM_STEPS, THRESHOLD)
    for o in outs:
        np.testing.assert_array_equal(np.asarray(o["engine"]) == ENGINE_ROLLBACK, trips)
    one_process = np.load(four_devices_dir / "threshold_four_devices.npy")
    for pid in range(2):
        # Same per-device program on 2 members each as the one-process 4-device run.
        assert np.array_equal(np.load(tmp_path / f"states_{pid}.npy"), one_process)


# ---- in this process (one CPU device): construction only, nothing compiled -----------------
def test_mesh_is_validated_and_carried_by_with_policy():
    ks = KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=1.0, num_substeps=4)
    mesh = distributed.data_mesh(1)
    runner = HybridRunner(ks, ks, AlwaysSolver(), mesh=mesh)
    assert runner.config()["devices"] == 1
    swapped = runner.with_policy(Threshold("member_step_trip", 0.5), (MemberStepTrip(),))
    assert swapped.mesh is mesh and swapped.config()["devices"] == 1
    assert HybridRunner(ks, ks, AlwaysSolver()).config()["devices"] is None
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        HybridRunner(ks, ks, AlwaysSolver(), mesh=4)
    other = Mesh(np.asarray(jax.devices()[:1], dtype=object), ("batch",))
    with pytest.raises(ValueError, match=r"single axis \('data',\).*\('batch',\)"):
        HybridRunner(ks, ks, AlwaysSolver(), mesh=other)
