"""Generation: round trip, determinism, resume, locking, overwrite protection, NaN policy."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import jax
import netCDF4
import numpy as np
import pytest
import xarray as xr

import datasets
import solvers
from datasets import storage
from datasets.provenance import RUNTIME_KEYS
from datasets.simulate import simulate_batch
from tests.datasets.dataset_helpers import GENERATE, Fuse1D, Shift2D, checksums, ks_solver

REPO = pathlib.Path(__file__).resolve().parents[2]


def _direct_trajectory(solver, seed: int, index: int, spinup: int, frames: int) -> np.ndarray:
    """Trajectory ``index`` computed without the dataset code: unbatched, step by step."""
    advance = jax.jit(solver.advance)
    state = solver.initial_condition(jax.random.fold_in(jax.random.key(seed), index))
    for _ in range(spinup):
        state = advance(state)
    return np.asarray(solvers.rollout(solver, state, frames - 1))


def test_round_trip_values_coords_and_attributes(ks_dataset):
    solver = ks_solver()
    ds = datasets.open_dataset(ks_dataset)
    try:
        assert ds["u"].dims == ("trajectory", "time", "x")
        assert ds["u"].dtype == np.float32
        np.testing.assert_array_equal(ds["trajectory"].values, np.arange(6))
        # Written from the same float64 formula: exact.
        np.testing.assert_array_equal(ds["time"].values, np.arange(10) * 0.5)
        np.testing.assert_array_equal(ds["x"].values, solver.grid.coords()["x"])
        assert ds["u"].attrs == {"units": "1", "long_name": "Kuramoto-Sivashinsky field"}
        assert ds["x"].attrs["units"] == "1" and ds["x"].attrs["long_name"] == "x coordinate"
        assert ds["time"].attrs["units"] == solver.time_units
        a = ds.attrs
        assert a["Conventions"] == "CF-1.10" and a["solver"] == "kuramoto_sivashinsky"
        assert json.loads(a["solver_config"]) == solver.config()
        assert (a["dt"], a["seed"], a["spinup_steps"], a["precision"]) == (0.5, 0, 4, "float32")
        assert a["package_version"] and a["title"] and a["history"] and a["source"]
        assert a["created"]  # from the manifest: timestamps stay out of the shard bytes
        values = ds["u"].values
    finally:
        ds.close()
    for i in (0, 5):
        expected = _direct_trajectory(solver, 0, i, spinup=4, frames=10)[:, 0]
        # Separately compiled programs (per-step jit vs one vmapped scan) fuse and round
        # differently: measured 2e-6 after 14 steps for |u| < 2, i.e. ~10 float32 eps
        # per step; 1e-5 leaves a factor 5 and still catches any wrong frame or key.
        np.testing.assert_allclose(values[i], expected, rtol=1e-5, atol=1e-5)
    manifest = datasets.read_manifest(ks_dataset)
    assert manifest["complete"] and manifest["splits"] == {
        "train": [0, 5],
        "val": [5, 6],
        "test": [6, 6],
    }
    for s in manifest["shards"]:
        assert storage.sha256_file(ks_dataset / s["file"]) == s["sha256"]
    assert (ks_dataset / "statistics.nc").is_file()


def test_shard_bytes_are_deterministic(tmp_path):
    layout = {
        "variables": ["u"],
        "units": {"u": "1"},
        "long_names": {"u": "u"},
        "time_units": "1",
        "grid": {
            "num_points": [16],
            "domain_length": [1.0],
            "axes": ["x"],
            "length_units": "1",
            "long_names": ["x coordinate"],
        },
        "dt": 0.1,
        "precision": "float32",
    }
    frames = np.random.default_rng(0).normal(size=(3, 5, 1, 16)).astype(np.float32)
    digests = []
    for k in range(2):
        ds = storage.shard_dataset(frames, np.arange(3), layout=layout, attrs={"a": "b"})
        digests.append(storage.write_shard(ds, tmp_path / f"s{k}.nc"))
        time.sleep(1.1)  # HDF5 object timestamps, if any were written, have 1 s resolution
    assert digests[0] == digests[1]


def test_batch_size_and_global_x64_do_not_change_bytes(ks_dataset, tmp_path):
    other = datasets.generate(ks_solver(), tmp_path / "b3", **{**GENERATE, "batch_size": 3})
    assert checksums(other) == checksums(ks_dataset)
    with jax.enable_x64(True):
        again = datasets.generate(ks_solver(), tmp_path / "x64", **GENERATE)
    assert checksums(again) == checksums(ks_dataset)


def test_compressed_shards_hold_the_same_values(ks_dataset, tmp_path):
    out = datasets.generate(ks_solver(), tmp_path / "z", **GENERATE, compression_level=1)
    np.testing.assert_array_equal(
        datasets.load_trajectories(out), datasets.load_trajectories(ks_dataset)
    )
    size = sum(p.stat().st_size for p in out.glob("shard-*.nc"))
    assert size < sum(p.stat().st_size for p in ks_dataset.glob("shard-*.nc"))
    assert datasets.validate(out, num_resimulate=0).passed


def test_two_dimensional_solver_exact_frames_and_validation(tmp_path):
    solver = Shift2D(num_substeps=1)
    out = datasets.generate(solver, tmp_path / "s2d", **GENERATE)
    ds = datasets.open_dataset(out)
    try:
        assert ds["h"].dims == ("trajectory", "time", "y", "x")
        assert ds["h"].attrs["units"] == "m" and ds["q"].attrs["units"] == "m s-1"
        assert ds["time"].attrs["units"] == "s" and ds["y"].attrs["units"] == "m"
        np.testing.assert_array_equal(ds["y"].values, np.arange(6) * 0.5)
        h, q = ds["h"].values, ds["q"].values
    finally:
        ds.close()
    # Exact solution: a roll per output step (a permutation: no rounding at all).
    for t in range(10):
        np.testing.assert_array_equal(h[:, t], np.roll(h[:, 0], t, axis=-1))
        np.testing.assert_array_equal(q[:, t], np.roll(q[:, 0], t, axis=-2))
    u0 = solver.initial_condition(jax.random.fold_in(jax.random.key(0), 3))
    np.testing.assert_array_equal(h[3, 0], np.roll(np.asarray(u0[0]), 4, axis=-1))  # spin-up
    report = datasets.validate(out)
    assert report.passed, str(report)


def test_resume_after_deleted_shard_and_stale_temporary(ks_dataset, ks_copy):
    reference = checksums(ks_dataset)
    (ks_copy / "shard-00001.nc").unlink()
    stale = ks_copy / ".shard-00001.nc.99999.tmp"
    stale.write_bytes(b"half a shard from a killed run")
    before = (ks_copy / "shard-00000.nc").stat().st_mtime_ns
    datasets.generate(ks_solver(), ks_copy, **GENERATE)
    assert not stale.exists()
    assert checksums(ks_copy) == reference
    for name, digest in reference.items():
        assert storage.sha256_file(ks_copy / name) == digest
    assert (ks_copy / "shard-00000.nc").stat().st_mtime_ns == before  # kept, not rewritten
    events = [e["event"] for e in datasets.read_manifest(ks_copy)["history"]]
    assert events == ["started", "completed", "resumed", "completed"]


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
import datasets
from tests.datasets.dataset_helpers import Shift2D
datasets.generate(Shift2D(num_substeps={substeps}), {out!r}, **{kwargs!r})
"""


def test_resume_after_kill_is_byte_identical(tmp_path):
    # ~7e5 internal steps per output step: a shard takes about 0.1 s, so the process is
    # reliably killed between the first and the last of its 6 shards.
    substeps = 700_001
    kwargs = {**GENERATE, "trajectories_per_shard": 1, "num_frames": 3, "spinup_steps": 0}
    out = tmp_path / "killed"
    script = _KILL_SCRIPT.format(repo=str(REPO), substeps=substeps, out=str(out), kwargs=kwargs)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not (out / "shard-00000.nc").exists():
            assert proc.poll() is None, "generation subprocess died early"
            assert time.monotonic() < deadline, "no shard appeared within 120 s"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    manifest = datasets.read_manifest(out)
    assert not manifest["complete"] and len(list(out.glob("shard-*.nc"))) < 6
    resumed = datasets.generate(Shift2D(num_substeps=substeps), out, **kwargs)
    reference = datasets.generate(Shift2D(num_substeps=substeps), tmp_path / "ref", **kwargs)
    assert checksums(resumed) == checksums(reference)
    assert len(checksums(resumed)) == 6
    assert not list(out.glob(".*.tmp"))
    np.testing.assert_array_equal(
        datasets.load_trajectories(resumed), datasets.load_trajectories(reference)
    )


def test_second_writer_fails_fast(ks_copy):
    with storage.writer_lock(ks_copy):
        # Non-blocking flock: raises at once (a blocking lock would hang this test). A
        # complete dataset needs no lock (test_integrity); overwriting one does.
        with pytest.raises(datasets.DatasetLockedError, match="being written by another process"):
            datasets.generate(ks_solver(), ks_copy, **GENERATE, overwrite=True)
    datasets.generate(ks_solver(), ks_copy, **GENERATE)  # the lock is free again


def test_overwrite_protection_and_already_complete(ks_copy):
    mtimes = {p.name: p.stat().st_mtime_ns for p in ks_copy.glob("shard-*.nc")}
    datasets.generate(ks_solver(), ks_copy, **GENERATE)  # same spec: already complete
    assert {p.name: p.stat().st_mtime_ns for p in ks_copy.glob("shard-*.nc")} == mtimes
    with pytest.raises(FileExistsError, match=r"num_frames: stored 10, requested 12"):
        datasets.generate(ks_solver(), ks_copy, **{**GENERATE, "num_frames": 12})
    with pytest.raises(FileExistsError, match=r"solver_config\.dt: stored 0\.5, requested 0\.25"):
        datasets.generate(ks_solver(dt=0.25), ks_copy, **GENERATE)
    # Provenance alone differs: the complete dataset is returned unchanged.
    datasets.generate(ks_solver(), ks_copy, **GENERATE, config={"run": "other"})
    assert {p.name: p.stat().st_mtime_ns for p in ks_copy.glob("shard-*.nc")} == mtimes
    datasets.generate(ks_solver(), ks_copy, **{**GENERATE, "num_frames": 12}, overwrite=True)
    assert datasets.dataset_info(ks_copy)["num_frames"] == 12


def test_unfinished_dataset_resumes_with_its_stored_provenance(ks_dataset, ks_copy):
    manifest = datasets.read_manifest(ks_copy)
    manifest["spec"]["config"] = {"run": "first"}
    manifest["shards"], manifest["complete"] = manifest["shards"][:1], False
    (ks_copy / "manifest.json").write_text(json.dumps(manifest))
    for name in ("shard-00001.nc", "shard-00002.nc"):
        (ks_copy / name).unlink()
    datasets.generate(ks_solver(), ks_copy, **GENERATE, config={"run": "second"})
    resumed = datasets.read_manifest(ks_copy)
    assert resumed["complete"] and resumed["spec"]["config"] == {"run": "first"}
    with netCDF4.Dataset(ks_copy / "shard-00002.nc") as nc:  # a shard written on resume
        assert json.loads(nc.getncattr("config")) == {"run": "first"}
    manifest["spec"]["package_version"] = "0.0.1"
    (ks_copy / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(
        FileExistsError, match="unfinished dataset started by hybrid-surrogates 0.0.1"
    ):
        datasets.generate(ks_solver(), ks_copy, **GENERATE)


def test_foreign_shards_without_manifest_are_not_touched(tmp_path):
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "shard-00000.nc").write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError, match="no manifest.json"):
        datasets.generate(ks_solver(), out, **GENERATE)
    assert (out / "shard-00000.nc").read_bytes() == b"someone else's file"


def _bad_trajectories(solver: Fuse1D, seed: int, n: int) -> list[int]:
    base = jax.random.key(seed)
    return [i for i in range(n) if bool(solver.is_bad(jax.random.fold_in(base, i)))]


def test_nonfinite_raises_with_trajectory_and_time(tmp_path):
    solver = Fuse1D(dt=0.5, bad_fraction=0.3, fuse_steps=6)
    bad = _bad_trajectories(solver, 0, 6)
    assert bad and len(bad) < 6  # the seed gives both kinds (else the test is void)
    with pytest.raises(solvers.NonFiniteError) as err:
        datasets.generate(solver, tmp_path / "raise", **GENERATE)
    # First NaN state: 6 intervals after the initial condition = stored frame 6 - 4.
    assert (err.value.sample, err.value.frame, err.value.time) == (bad[0], 2, 1.0)
    assert f"trajectory {bad[0]}" in str(err.value)
    assert not datasets.read_manifest(tmp_path / "raise")["complete"]
    early = Fuse1D(dt=0.5, bad_fraction=0.3, fuse_steps=2)
    with pytest.raises(solvers.NonFiniteError, match="during spin-up") as err:
        datasets.generate(early, tmp_path / "spin", **GENERATE)
    assert (err.value.sample, err.value.frame, err.value.time) == (bad[0], -2, -1.0)


def test_nonfinite_skip_records_and_drops(tmp_path):
    solver = Fuse1D(dt=0.5, bad_fraction=0.3, fuse_steps=5)
    bad = _bad_trajectories(solver, 0, 6)
    # One split: the default 'val' split is trajectory 5 alone, which blows up (a split
    # left empty is refused: test_integrity).
    splits = {"train": 1.0}
    out = datasets.generate(
        solver, tmp_path / "skip", **GENERATE, on_nonfinite="skip", splits=splits
    )
    manifest = datasets.read_manifest(out)
    assert [s["trajectory"] for s in manifest["skipped"]] == bad
    assert all(s["frame"] == 1 and s["time"] == 0.5 for s in manifest["skipped"])
    good = [i for i in range(6) if i not in bad]
    ds = datasets.open_dataset(out)
    try:
        np.testing.assert_array_equal(ds["trajectory"].values, good)
        assert np.isfinite(ds["u"].values).all()
    finally:
        ds.close()
    assert datasets.dataset_info(out)["num_trajectories"]["total"] == len(good)
    report = datasets.validate(out, num_resimulate=len(good))
    assert report.passed, str(report)
    assert any("skipped for non-finite" in i.message for i in report.issues("completeness"))


def test_simulate_batch_traces_once_across_solver_parameters():
    key = jax.random.key(0)
    idx = np.arange(2, dtype=np.int32)
    simulate_batch(Shift2D(dt=0.25), key, idx, num_frames=10, spinup_steps=4)
    n = simulate_batch._cache_size()
    simulate_batch(Shift2D(dt=0.5), key, idx, num_frames=10, spinup_steps=4)
    assert simulate_batch._cache_size() == n  # dt is a traced leaf: no retrace


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 1}, "num_frames must be an int >= 2"),
        ({"num_trajectories": 0}, "num_trajectories must be an int >= 1"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"batch_size": 2.0}, "batch_size must be an int"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite must be one of"),
        ({"splits": {"train": 0.9}}, "fractions must sum to 1"),
        ({"splits": {"train": 1.2, "val": -0.2}}, "fraction of 'val' must be a number >= 0"),
        ({"num_workers": 0}, "num_workers must be an int >= 1"),
        ({"compression_level": 10}, "compression_level must be an int <= 9"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.generate(ks_solver(), tmp_path / "x", **{**GENERATE, **kwargs})
    assert not (tmp_path / "x").exists()


def test_not_a_solver_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"solver must be a JAX pytree .*solvers.from_step"):
        datasets.generate(object(), tmp_path / "x", num_trajectories=1, num_frames=2)


def test_runtime_keys_are_generate_arguments():
    import inspect

    params = inspect.signature(datasets.generate).parameters
    assert set(RUNTIME_KEYS) - {"path"} <= set(params)


def test_float64_dataset_reproduces_bit_for_bit(x64, tmp_path):
    out = datasets.generate(
        ks_solver(precision="float64"), tmp_path / "f64", **{**GENERATE, "num_trajectories": 2}
    )
    ds = datasets.open_dataset(out)
    try:
        assert ds["u"].dtype == np.float64
    finally:
        ds.close()
    report = datasets.validate(out)
    assert report.passed, str(report)
    assert any("bit-for-bit" in n for n in report.checks["accuracy"].notes)


def test_two_spawned_workers_give_the_same_checksums(tmp_path):
    # Workers rebuild the solver from its class path and config (test doubles included).
    one = datasets.generate(Shift2D(), tmp_path / "w1", **GENERATE)
    two = datasets.generate(Shift2D(), tmp_path / "w2", **GENERATE, num_workers=2)
    assert checksums(two) == checksums(one)
    assert datasets.read_manifest(two)["history"][0]["num_workers"] == 2


@pytest.mark.slow
def test_workers_auto_on_kuramoto_sivashinsky(ks_dataset, tmp_path):
    out = datasets.generate(ks_solver(), tmp_path / "auto", **GENERATE, num_workers="auto")
    assert checksums(out) == checksums(ks_dataset)


def test_split_coordinate_agrees_with_the_manifest(ks_dataset):
    manifest = datasets.read_manifest(ks_dataset)
    for shard in manifest["shards"]:
        with xr.open_dataset(ks_dataset / shard["file"], engine="netcdf4") as ds:
            for i, name in zip(ds["trajectory"].values, ds["split"].values, strict=True):
                lo, hi = manifest["splits"][name]
                assert lo <= i < hi, (shard["file"], int(i), name)
    with datasets.open_dataset(ks_dataset) as ds:
        for name, (lo, hi) in manifest["splits"].items():
            ids = ds["trajectory"].values[ds["split"].values == name]
            np.testing.assert_array_equal(ids, np.arange(lo, hi))
    with datasets.open_dataset(ks_dataset, "val") as ds:
        assert set(ds["split"].values) == {"val"}
