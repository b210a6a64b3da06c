"""A mesh-less ``HybridRunner`` runs on whichever device its input is on (forced CPU devices).

The checks share one subprocess (:func:`tests.helpers.run_script`): the forced
device count only takes effect before JAX initialises.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import run_script

TWO_DEVICES = """
from surrogate.hybrid import chunk as chunk_module
from tests.helpers import NUM_STEPS, ks_setup

d0, d1 = jax.devices()
runner, x0 = ks_setup(None)  # threshold policy: solver and surrogate both run
out = {"devices": jax.device_count()}
runs = {}
for name, device in [("dev0", d0), ("dev1", d1), ("dev0_again", d0)]:
    res = runner.run(jax.device_put(x0, device), NUM_STEPS)
    runs[name] = res
    out[name] = {"compile_time": res.compile_time, "engine": res.engine.tolist()}
with jax.default_device(d1):  # a host array goes to the default device
    res = runner.run(np.asarray(x0), NUM_STEPS)
    runs["host_on_dev1"] = res
    out["host_on_dev1"] = {"compile_time": res.compile_time, "engine": res.engine.tolist()}
out["bitwise"] = {k: bool(np.array_equal(r.states, runs["dev0"].states)) for k, r in runs.items()}
# Each cached program takes its state on the device it was compiled for.
out["program_devices"] = sorted(
    next(iter(exe.input_shardings[0][1][0].device_set)).id
    for key, exe in chunk_module._COMPILED.items()
)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_devices() -> dict:
    return run_script(TWO_DEVICES, 2, timeout=180.0)


def test_runner_compiled_on_device_0_also_runs_on_device_1(two_devices):
    r = two_devices
    assert r["devices"] == 2
    # Same program on two identical CPU devices: the results agree bit for bit.
    assert all(r["bitwise"].values()), r["bitwise"]
    engines = [r[k]["engine"] for k in ("dev0", "dev1", "dev0_again", "host_on_dev1")]
    assert all(np.array_equal(e, engines[0]) for e in engines)
    # One compilation per device; returning to a device, or reaching it through the
    # default device, reuses its program.
    assert r["dev0"]["compile_time"] > 0 and r["dev1"]["compile_time"] > 0
    assert r["dev0_again"]["compile_time"] == 0.0
    assert r["host_on_dev1"]["compile_time"] == 0.0
    assert r["program_devices"] == [0, 1]
