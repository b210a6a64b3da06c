"""Validation: the four checks pass on good data and name every kind of corruption."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import netCDF4
import numpy as np
import pytest

import datasets
import solvers
from datasets.validation import main

REPO = pathlib.Path(__file__).resolve().parents[2]


def _issues(report, check):
    return [str(i) for i in report.issues(check) if i.severity == "error"]


def test_good_dataset_passes_all_four_checks(ks_dataset):
    before = {p.name: p.stat().st_mtime_ns for p in ks_dataset.iterdir()}
    report = datasets.validate(ks_dataset)
    assert report.passed, str(report)
    assert list(report.checks) == ["schema", "consistency", "accuracy", "completeness"]
    assert all(c.passed for c in report.checks.values())
    notes = " ".join(report.checks["accuracy"].notes)
    assert notes.count("bit-for-bit") == 2 and "['mass']" in notes
    assert {p.name: p.stat().st_mtime_ns for p in ks_dataset.iterdir()} == before  # no writes
    assert main([str(ks_dataset), "--json"]) == 0


def _truncate(d: pathlib.Path) -> None:
    p = d / "shard-00001.nc"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _html(d: pathlib.Path) -> None:
    (d / "shard-00001.nc").write_text("<!DOCTYPE html><html><body>Not Found</body></html>")


def _flip_byte(d: pathlib.Path) -> None:
    p = d / "shard-00001.nc"
    b = bytearray(p.read_bytes())
    b[len(b) - 200] ^= 0x01  # a single bit, late in the file (data chunks)
    p.write_bytes(bytes(b))


def _remove_shard(d: pathlib.Path) -> None:
    (d / "shard-00002.nc").unlink()


def _remove_attribute(d: pathlib.Path) -> None:
    with netCDF4.Dataset(d / "shard-00000.nc", "a") as nc:
        nc.delncattr("solver_config")
        nc.variables["u"].delncattr("units")


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_truncate, [("schema", "shard-00001.nc: cannot open: truncated")]),
        (_html, [("schema", "shard-00001.nc: cannot open: not a netCDF4/HDF5 file")]),
        (_flip_byte, [("consistency", "shard-00001.nc: sha256")]),
        (
            _remove_shard,
            [
                ("consistency", "shard-00002.nc: shard file listed in the manifest is missing"),
                ("completeness", "shard-00002.nc: trajectories 4..5 missing"),
            ],
        ),
        (
            _remove_attribute,
            [
                ("schema", "shard-00000.nc: global attribute 'solver_config' missing"),
                ("schema", "shard-00000.nc:u: attribute 'units' missing"),
                ("consistency", "shard-00000.nc: sha256"),
            ],
        ),
    ],
    ids=["truncated", "html", "flipped-byte", "missing-shard", "removed-attribute"],
)
def test_corruption_is_caught_with_a_clear_message(ks_copy, corrupt, expected):
    corrupt(ks_copy)
    report = datasets.validate(ks_copy)
    assert not report.passed
    for check, fragment in expected:
        assert not report.checks[check].passed
        assert any(fragment in i for i in _issues(report, check)), (fragment, str(report))
    assert "Traceback" not in str(report)


def _edit_trajectory(d: pathlib.Path, row: int, edit) -> None:
    with netCDF4.Dataset(d / "shard-00000.nc", "a") as nc:
        u = nc.variables["u"]
        values = np.asarray(u[row])
        u[row] = edit(values.copy())


@pytest.mark.parametrize(
    ("edit", "check", "fragment"),
    [
        (
            lambda u: np.where(np.arange(10)[:, None] >= 6, np.nan, u),
            "completeness",
            "trajectory 1 (shard-00000.nc): u: NaN/Inf from frame 6 (t = 3)",
        ),
        (
            lambda u: np.broadcast_to(u[:1], u.shape),
            "completeness",
            "trajectory 1 (shard-00000.nc): constant trajectory",
        ),
        (
            lambda u: np.concatenate([u[:4], u[3:4], u[5:]]),
            "completeness",
            "frame 4 equals frame 3",
        ),
        (
            lambda u: u + np.where(np.arange(10)[:, None] >= 5, 1e-2, 0.0).astype(u.dtype),
            "accuracy",
            "trajectory 1: conserved diagnostic 'mass' drifts by 0.01",
        ),
        (
            lambda u: u * np.float32(1.001),
            "accuracy",
            "trajectory 1: re-simulation differs from the stored frames from frame 0",
        ),
    ],
    ids=["nan", "constant", "repeated-frame", "mass-drift", "not-reproducible"],
)
def test_bad_values_are_located(ks_copy, edit, check, fragment):
    _edit_trajectory(ks_copy, 1, edit)
    report = datasets.validate(ks_copy, num_resimulate=6)
    assert not report.checks[check].passed
    assert any(fragment in i for i in _issues(report, check)), str(report)


def test_unreadable_or_missing_manifest(ks_copy):
    (ks_copy / "manifest.json").write_text("{not json")
    report = datasets.validate(ks_copy)
    assert not report.passed
    assert "is not valid JSON" in _issues(report, "consistency")[0]
    (ks_copy / "manifest.json").unlink()
    report = datasets.validate(ks_copy)
    assert "manifest.json not found" in _issues(report, "consistency")[0]


def test_unfinished_generation_is_incomplete(ks_copy):
    manifest = json.loads((ks_copy / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:2]
    manifest["complete"] = False
    (ks_copy / "manifest.json").write_text(json.dumps(manifest))
    report = datasets.validate(ks_copy)
    errors = _issues(report, "completeness")
    assert any("1 shard(s) never written, e.g. shard-00002.nc" in e for e in errors)
    assert any("marks the generation unfinished" in e for e in errors)
    # The now unlisted shard file is reported, and statistics no longer match the data.
    assert any("not listed in the manifest" in str(i) for i in report.issues("consistency"))
    assert any("statistics.nc" in e and "stale" in e for e in _issues(report, "consistency"))


def test_metadata_disagreeing_with_manifest(ks_copy):
    with netCDF4.Dataset(ks_copy / "shard-00002.nc", "a") as nc:
        nc.setncattr("dt", 0.25)
        nc.variables["x"][3] = 123.0
    report = datasets.validate(ks_copy)
    errors = _issues(report, "consistency")
    assert any("shard-00002.nc: dt = 0.25, manifest has 0.5" in e for e in errors)
    assert any("shard-00002.nc:x: coordinate values differ" in e for e in errors)


def test_command_line_exit_codes(ks_dataset, ks_copy):
    _remove_shard(ks_copy)
    assert main([str(ks_copy), "--num-resimulate", "0"]) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "datasets.validate", str(ks_copy), "--num-resimulate", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "FAILED" in proc.stdout and "shard-00002.nc" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr  # `-m datasets.validate` is a clean entry


def test_navier_stokes_dataset_passes_validation(tmp_path):
    solver = solvers.NavierStokes2D(num_points=(16, 24), domain_length=(6.0, 9.0), dt=0.1)
    out = datasets.generate(
        solver,
        tmp_path / "ns",
        num_trajectories=2,
        num_frames=4,
        trajectories_per_shard=2,
        batch_size=2,
        progress=False,
    )
    ds = datasets.open_dataset(out)
    try:
        assert ds["vorticity"].dims == ("trajectory", "time", "y", "x")
        assert ds["vorticity"].shape == (2, 4, 16, 24)
        np.testing.assert_array_equal(ds["y"].values, np.arange(16) * 6.0 / 16)
    finally:
        ds.close()
    report = datasets.validate(out)
    assert report.passed, str(report)
    assert any("mean_vorticity" in n for n in report.checks["accuracy"].notes)
