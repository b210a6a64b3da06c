"""Integrity: corrupted, replaced, non-finite or implausible data never reach training silently.

Each test names the defect of the fault-injection campaign it guards against.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil

import netCDF4
import numpy as np
import pytest
import xarray as xr

import datasets
from datasets import storage
from datasets.manifest import MANIFEST_NAME, STATISTICS_NAME
from tests.datasets.dataset_helpers import GENERATE, Fuse1D, Shift2D, checksums, ks_solver


def _flip_data_bit(path: pathlib.Path, row: int = 0, frame: int = 3, point: int = 5) -> None:
    """Flip the lowest mantissa bit of one stored value: a finite, slightly wrong value."""
    with netCDF4.Dataset(path) as nc:
        value = np.asarray(nc.variables["u"][row, frame, point], dtype="<f4")
    raw = bytearray(path.read_bytes())
    at = raw.find(value.tobytes())
    assert at >= 0
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def _edit_and_record(directory: pathlib.Path, file: str, edit) -> None:
    """Change a shard's values and record its new checksum, as a faulty generator would."""
    with netCDF4.Dataset(directory / file, "a") as nc:
        nc.set_auto_mask(False)
        edit(nc.variables["u"])
    manifest = datasets.read_manifest(directory)
    for s in manifest["shards"]:
        if s["file"] == file:
            s["sha256"] = storage.sha256_file(directory / file)
            s["size"] = (directory / file).stat().st_size
    storage.write_json_atomic(directory / MANIFEST_NAME, manifest)
    (directory / STATISTICS_NAME).unlink(missing_ok=True)


def _recorded(directory: pathlib.Path, file: str) -> str:
    return checksums(directory)[file]


# ---- high: a corrupted shard is used silently once validation has been cached ----------
def test_loader_refuses_a_shard_corrupted_after_validation(ks_copy):
    datasets.load_trajectories(ks_copy, "train")  # verified once in this process
    shard = ks_copy / "shard-00000.nc"
    _flip_data_bit(shard)
    expected, actual = _recorded(ks_copy, shard.name), storage.sha256_file(shard)
    readers = {
        "WindowLoader": lambda: datasets.WindowLoader(ks_copy, "train", batch_size=2),
        "lazy WindowLoader": lambda: datasets.WindowLoader(
            ks_copy, "train", batch_size=2, memory_budget_bytes=0, shuffle=False
        ).batch(0),
        "load_trajectories": lambda: datasets.load_trajectories(ks_copy),
        "open_dataset": lambda: datasets.open_dataset(ks_copy)["u"].values,
        "compute_statistics": lambda: datasets.compute_statistics(ks_copy, store=False),
    }
    for name, read in readers.items():
        with pytest.raises(ValueError) as e:
            read()
        assert isinstance(e.value, datasets.ShardIntegrityError), name
        message = str(e.value)
        assert str(shard) in message and expected in message and actual in message, name
        assert "regenerate" in message, name


def test_loader_refuses_a_shard_copied_from_another_seed(ks_copy, tmp_path):
    other = datasets.generate(
        ks_solver(), tmp_path / "seed1", **{**GENERATE, "num_trajectories": 2, "seed": 1}
    )
    shutil.copyfile(other / "shard-00000.nc", ks_copy / "shard-00000.nc")
    with pytest.raises(ValueError, match=r"shard .*shard-00000\.nc has sha256"):
        datasets.WindowLoader(ks_copy, "train", batch_size=2)


def test_shard_verification_is_cached_per_process_and_notices_changes(ks_copy, monkeypatch):
    hashed = []
    real = storage.sha256_file
    monkeypatch.setattr(storage, "sha256_file", lambda p, *a: hashed.append(p.name) or real(p))
    datasets.load_trajectories(ks_copy)
    assert sorted(hashed) == ["shard-00000.nc", "shard-00001.nc", "shard-00002.nc"]
    datasets.load_trajectories(ks_copy)
    datasets.WindowLoader(ks_copy, "train", batch_size=2)
    assert len(hashed) == 3  # unchanged files: a stat each, no re-read
    shard = ks_copy / "shard-00001.nc"
    shard.write_bytes(shard.read_bytes())  # same bytes, new mtime: hashed again, accepted
    datasets.load_trajectories(ks_copy)
    assert hashed[3:] == ["shard-00001.nc"]
    # Corrupted, then its mtime put back: the ctime still changes, so it is re-hashed.
    st = shard.stat()
    _flip_data_bit(shard)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ValueError, match=r"shard-00001\.nc has sha256"):
        datasets.load_trajectories(ks_copy)


def test_validation_cache_is_keyed_on_the_shards_identities(ks_copy, tmp_path):
    from surrogate.pipeline import stage_validate

    run = tmp_path / "run"
    run.mkdir()
    first = stage_validate(ks_copy, run, num_resimulate=0)
    assert first["ok"] and stage_validate(ks_copy, run, num_resimulate=0) == first  # cached
    _flip_data_bit(ks_copy / "shard-00002.nc")
    with pytest.raises(RuntimeError, match=r"shard-00002\.nc: sha256"):
        stage_validate(ks_copy, run, num_resimulate=0)  # the cache no longer applies
    assert first["dataset_identity"] != datasets.dataset_identity(ks_copy)


def test_generate_recomputes_a_corrupted_shard(ks_copy):
    before = checksums(ks_copy)
    _flip_data_bit(ks_copy / "shard-00001.nc")
    datasets.generate(ks_solver(), ks_copy, **GENERATE)
    assert storage.sha256_file(ks_copy / "shard-00001.nc") == before["shard-00001.nc"]
    assert checksums(ks_copy) == before


# ---- medium: NaN in the data surfaced as a diverged training ------------------------------
def test_nan_in_the_data_is_named_before_training(ks_copy):
    def poison(u):
        u[0, 3, 7] = np.nan  # shard-00001 row 0 is trajectory 2 (train)

    _edit_and_record(ks_copy, "shard-00001.nc", poison)
    pattern = r"trajectory 2 holds NaN/Inf in variable 'u' at frame 3 \(t = 1\.5\)"
    with pytest.raises(ValueError, match=pattern) as e:
        datasets.WindowLoader(ks_copy, "train", batch_size=2)
    assert isinstance(e.value, datasets.NonFiniteDataError)
    with pytest.raises(ValueError, match=pattern):
        datasets.compute_statistics(ks_copy)
    lazy = datasets.WindowLoader(ks_copy, "train", batch_size=2, memory_budget_bytes=0)
    with pytest.raises(ValueError, match=r"trajectory 2 holds NaN/Inf in variable 'u' at frame"):
        for _ in lazy.iterate(0, lazy.steps_per_epoch):
            pass


# ---- medium: validation passed values of 1e30 ------------------------------------------
def test_validation_flags_implausible_values(ks_copy):
    def blow_up(u):
        u[1] = u[1] * np.float32(1e30)  # shard-00001 row 1: trajectory 3 (train)

    _edit_and_record(ks_copy, "shard-00001.nc", blow_up)
    report = datasets.validate(ks_copy, num_resimulate=0)
    errors = [str(i) for i in report.issues("accuracy") if i.severity == "error"]
    assert not report.passed and len(errors) == 1, str(report)
    assert "trajectory 3 (shard-00001.nc)" in errors[0] and "u = " in errors[0]
    assert "e+30" in errors[0] and "implausible" in errors[0]


def test_good_data_lie_within_the_plausible_range(ks_dataset):
    report = datasets.validate(ks_dataset, num_resimulate=0)
    assert report.passed, str(report)
    assert any("plausible range of 'u'" in n for n in report.checks["accuracy"].notes)


# ---- medium: shard bytes depended on workers and path -------------------------------------
def test_shards_are_identical_for_any_worker_count_and_path(tmp_path):
    def run(path: pathlib.Path, workers: int, batch_size: int) -> pathlib.Path:
        data = {**GENERATE, "batch_size": batch_size, "num_workers": workers}
        config = {"solver": Shift2D().config(), "data": {**data, "path": str(path)}}
        return datasets.generate(Shift2D(), path, **data, config=config)

    one, two = run(tmp_path / "a", 1, 2), run(tmp_path / "elsewhere" / "b", 2, 3)
    assert checksums(one) == checksums(two)
    for name in checksums(one):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    stored = datasets.read_manifest(two)["spec"]["config"]["data"]
    assert not set(stored) & {"path", "num_workers", "batch_size", "progress"}


# ---- low -----------------------------------------------------------------------------
def test_a_complete_dataset_is_used_without_the_writer_lock(ks_copy):
    mtimes = {p.name: p.stat().st_mtime_ns for p in ks_copy.iterdir()}
    with storage.writer_lock(ks_copy):  # as if read-only, or another writer held it
        assert datasets.generate(ks_solver(), ks_copy, **GENERATE) == ks_copy
    assert {p.name: p.stat().st_mtime_ns for p in ks_copy.iterdir()} == mtimes


def test_corrupt_statistics_are_refused_naming_the_file(ks_copy):
    file = ks_copy / STATISTICS_NAME
    with netCDF4.Dataset(file, "a") as nc:
        nc.variables["state_std"][0] = np.nan
    with pytest.raises(ValueError, match=rf"{file}: state_std holds NaN/Inf"):
        datasets.load_statistics(ks_copy)
    with pytest.raises(ValueError, match=r"state_std holds NaN/Inf"):
        _ = datasets.WindowLoader(ks_copy, "train", batch_size=2).statistics  # not recomputed

    good = datasets.compute_statistics(ks_copy, store=False)
    with xr.open_dataset(file) as ds:
        attrs = dict(ds.attrs)
    xr.Dataset(
        {
            "state_mean": ("variable", good.state_mean),
            "state_std": ("extra", [1.0, 2.0]),  # two entries for one variable
            "delta_mean": ("variable", good.delta_mean),
            "delta_std": ("variable", good.delta_std),
            "climatology": (("variable", "x"), good.climatology),
        },
        coords={"variable": ["u"]},
        attrs=attrs,
    ).to_netcdf(file)
    with pytest.raises(ValueError, match=rf"{file}: state_std has shape \(2,\), expected \(1,\)"):
        datasets.load_statistics(ks_copy)


def test_skip_that_empties_a_split_fails_at_generation_and_validation(tmp_path):
    solver = Fuse1D(dt=0.5, bad_fraction=1.0, fuse_steps=5)
    out = tmp_path / "empty"
    with pytest.raises(ValueError, match=r"split 'train' of .* holds no trajectories"):
        datasets.generate(solver, out, **GENERATE, on_nonfinite="skip")
    report = datasets.validate(out, num_resimulate=0)
    assert not report.passed
    messages = " ".join(i.message for i in report.issues("completeness"))
    assert "no trajectory stored (of 6)" in messages


def test_disk_full_names_the_file(tmp_path, monkeypatch):
    target = tmp_path / MANIFEST_NAME
    if os.path.exists("/dev/full"):  # a real ENOSPC from the kernel
        storage.temporary_path(target).symlink_to("/dev/full")
    else:  # elsewhere the same error, raised by the write itself

        def full(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(OSError, match=rf"no space left .* writing {target}") as e:
        storage.write_json_atomic(target, {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    monkeypatch.undo()

    # A full disk under HDF5 surfaces as a bare RuntimeError("NetCDF: HDF error").
    def hdf5_error(*args, **kwargs):
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", hdf5_error)
    monkeypatch.setattr(storage, "free_bytes", lambda directory: 0)
    shard = tmp_path / "shard-00000.nc"
    with pytest.raises(OSError, match=rf"no space left .* writing {shard}"):
        storage.write_shard(xr.Dataset({"u": ("x", np.zeros(4))}), shard)


def test_malformed_json_names_the_file(tmp_path):
    bad = tmp_path / ".records-process00000.json"
    bad.write_text('[{"index": 0,')
    with pytest.raises(ValueError, match=rf"{bad} is not valid JSON"):
        storage.read_json(bad)
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(datasets.ManifestError, match=rf"{tmp_path / MANIFEST_NAME} is not valid"):
        datasets.read_manifest(tmp_path)
