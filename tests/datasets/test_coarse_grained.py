"""Coarse-grained datasets: a fine solver run, stored Fourier-truncated to a coarser grid.

Kuramoto-Sivashinsky on 64 points stored on 32, and the 2D ``Shift2D`` test double on a
``(6, 8)`` grid stored on ``(4, 6)`` (one size per axis, non-square).

Worker byte-identity is not repeated here: the coarse grid travels inside the spec that
spawned workers and ``jax.distributed`` processes already receive, and every path calls
the same ``_dispatch_shard``; ``test_two_spawned_workers_give_the_same_checksums``
covers that path.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import netCDF4
import numpy as np
import pytest

import datasets
import solvers
from datasets.manifest import MANIFEST_NAME
from solvers.resolution import spectral_resample
from solvers.rollout import rollout
from tests.datasets.dataset_helpers import Shift2D

FINE = {"num_points": 64, "domain_length": 22.0, "dt": 0.5, "num_substeps": 2}
COARSE = 32
GENERATE = {
    "num_trajectories": 4,
    "num_frames": 6,
    "trajectories_per_shard": 2,
    "batch_size": 2,
    "spinup_steps": 2,
    "seed": 3,
    "progress": False,
}
RECORD = {"filter": "spectral_truncation", "fine_num_points": [64], "num_points": [32]}


def fine_solver(**overrides) -> solvers.KuramotoSivashinsky:
    return solvers.KuramotoSivashinsky(**{**FINE, **overrides})


@pytest.fixture(scope="module")
def coarse_dataset(tmp_path_factory) -> pathlib.Path:
    """KS on 64 points stored on 32 (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("coarse") / "data"
    return datasets.generate(fine_solver(), out, **GENERATE, store_num_points=COARSE)


@pytest.fixture
def coarse_copy(coarse_dataset, tmp_path) -> pathlib.Path:
    dst = tmp_path / "copy"
    shutil.copytree(coarse_dataset, dst)
    return dst


def fine_rollouts(solver, num: int, seed: int, spinup: int, frames: int) -> np.ndarray:
    """The solver's own trajectories ``(num, T, C, *fine)``, spun up as generate does."""

    def one(i):
        state = solver.initial_condition(jax.random.fold_in(jax.random.key(seed), i))
        state = jax.lax.fori_loop(0, spinup, lambda _, s: solver.advance(s), state)
        return rollout(solver, state, frames - 1)

    return np.asarray(jax.jit(jax.vmap(one))(jnp.arange(num)))


def tamper(path: pathlib.Path, edit) -> None:
    """Apply ``edit(manifest)`` to the stored manifest."""
    file = path / MANIFEST_NAME
    manifest = json.loads(file.read_text())
    edit(manifest)
    file.write_text(json.dumps(manifest))


def error_messages(report: datasets.ValidationReport) -> list[str]:
    return [i.message for i in report.issues() if i.severity == "error"]


def test_stored_frames_are_the_projected_fine_rollout(coarse_dataset):
    stored = datasets.load_trajectories(coarse_dataset)
    fine = fine_rollouts(
        fine_solver(), 4, GENERATE["seed"], GENERATE["spinup_steps"], GENERATE["num_frames"]
    )
    assert fine.shape[-1] == 64 and stored.shape == (4, 6, 1, COARSE)
    expected = np.asarray(spectral_resample(fine, COARSE))
    # Same float32 operations compiled into another program: fusion may round a few ulp
    # differently per step, over about 8 output intervals.
    atol = 64 * np.finfo(np.float32).eps * np.abs(expected).max()
    np.testing.assert_allclose(stored, expected, rtol=0, atol=atol)


def test_grid_metadata_loaders_and_statistics_are_coarse(coarse_dataset):
    manifest = datasets.read_manifest(coarse_dataset)
    layout = manifest["layout"]
    assert layout["grid"]["num_points"] == [COARSE]
    assert layout["grid"]["domain_length"] == [22.0]
    assert layout["state_shape"] == [1, COARSE]
    info = datasets.dataset_info(coarse_dataset)
    assert info["grid"]["num_points"] == [COARSE] and tuple(info["state_shape"]) == (1, COARSE)
    ds = datasets.open_dataset(coarse_dataset)
    assert ds["u"].shape == (4, 6, COARSE)
    np.testing.assert_array_equal(ds["x"].values, np.arange(COARSE) * (22.0 / COARSE))
    loader = datasets.WindowLoader(coarse_dataset, "train", batch_size=2, seed=0)
    assert loader.grid["num_points"] == [COARSE]
    history, target = loader.batch(0)
    assert history.shape == (2, 1, 1, COARSE) and target.shape == (2, 1, 1, COARSE)
    stats = datasets.load_statistics(coarse_dataset)
    assert stats.climatology.shape == (1, COARSE)  # computed from the stored frames


def test_provenance_records_the_fine_solver_and_the_filter(coarse_dataset):
    manifest = datasets.read_manifest(coarse_dataset)
    assert manifest["solver"] == "kuramoto_sivashinsky"
    assert manifest["solver_config"]["num_points"] == 64
    assert manifest["spec"]["solver_config"]["num_points"] == 64
    assert manifest["coarse_graining"] == RECORD
    assert manifest["spec"]["coarse_graining"] == RECORD
    for shard in manifest["shards"]:
        with netCDF4.Dataset(coarse_dataset / shard["file"]) as nc:
            assert json.loads(nc.getncattr("coarse_graining")) == RECORD
            assert json.loads(nc.getncattr("solver_config"))["num_points"] == 64
            assert nc.dimensions["x"].size == COARSE


def test_validation_resimulates_on_the_fine_grid(coarse_dataset):
    report = datasets.validate(coarse_dataset, num_resimulate=2)
    assert report.passed, str(report)
    notes = report.checks["accuracy"].notes
    assert sum("re-simulated" in n for n in notes) == 2
    assert any("conserved diagnostics" in n for n in notes)


def _wrong_filter(m):
    for rec in (m["coarse_graining"], m["spec"]["coarse_graining"]):
        rec["filter"] = "gaussian"


def _solver_on_another_grid(m):  # the record still says 64
    for cfg in (m["solver_config"], m["spec"]["solver_config"]):
        cfg["num_points"] = 48


def _wrong_num_points(m):
    for rec in (m["coarse_graining"], m["spec"]["coarse_graining"]):
        rec["num_points"] = [16]


def _consistent_but_false_fine_grid(m):
    for cfg in (m["solver_config"], m["spec"]["solver_config"]):
        cfg["num_points"] = 48
    for rec in (m["coarse_graining"], m["spec"]["coarse_graining"]):
        rec["fine_num_points"] = [48]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_wrong_filter, "coarse_graining.filter = 'gaussian' is not a known filter"),
        (_solver_on_another_grid, "fine_num_points = [64] differs from the grid [48]"),
        (_wrong_num_points, "num_points = [16] differs from the stored grid"),
        (_consistent_but_false_fine_grid, "re-simulation differs from the stored frames"),
    ],
    ids=["filter", "solver-grid", "coarse-grid", "false-fine-grid"],
)
def test_tampered_coarse_graining_fails_validation(coarse_copy, edit, message):
    tamper(coarse_copy, edit)
    report = datasets.validate(coarse_copy, num_resimulate=1)
    assert not report.passed
    errors = error_messages(report)
    assert any(message in e for e in errors), "\n".join(errors)


def test_mirror_of_the_record_must_match_spec_and_shards(coarse_copy):
    tamper(coarse_copy, lambda m: m.pop("coarse_graining"))
    report = datasets.validate(coarse_copy, num_resimulate=0)
    assert "coarse_graining differs between the top level and spec" in error_messages(report)


def test_resuming_with_another_store_num_points_is_refused(coarse_copy):
    for other, key in ((16, "coarse_graining.num_points"), (None, "coarse_graining.filter")):
        with pytest.raises(FileExistsError, match=key):
            datasets.generate(fine_solver(), coarse_copy, **GENERATE, store_num_points=other)
    # The same setting, spelled per axis, is the same dataset: returned as is.
    before = (coarse_copy / MANIFEST_NAME).read_bytes()
    datasets.generate(fine_solver(), coarse_copy, **GENERATE, store_num_points=[COARSE])
    assert (coarse_copy / MANIFEST_NAME).read_bytes() == before


@pytest.mark.parametrize("value", [65, 1, [32, 32], True, "32", 32.0])
def test_bad_store_num_points_is_named(tmp_path, value):
    with pytest.raises(ValueError, match="store_num_points must be an int or 1 int"):
        datasets.generate(fine_solver(), tmp_path / "bad", **GENERATE, store_num_points=value)
    assert not (tmp_path / "bad").exists()


def test_two_dimensional_per_axis_sizes(tmp_path):
    solver = Shift2D(num_substeps=1)
    kwargs = {**GENERATE, "num_frames": 4, "spinup_steps": 1}
    out = datasets.generate(solver, tmp_path / "shift", **kwargs, store_num_points=(4, 6))
    manifest = datasets.read_manifest(out)
    assert manifest["layout"]["grid"]["num_points"] == [4, 6]
    assert manifest["layout"]["state_shape"] == [2, 4, 6]
    assert manifest["coarse_graining"]["fine_num_points"] == [6, 8]
    ds = datasets.open_dataset(out)
    np.testing.assert_array_equal(ds["y"].values, np.arange(4) * (3.0 / 4))
    np.testing.assert_array_equal(ds["x"].values, np.arange(6) * (4.0 / 6))
    stored = datasets.load_trajectories(out)
    fine = fine_rollouts(solver, 4, kwargs["seed"], kwargs["spinup_steps"], kwargs["num_frames"])
    expected = np.asarray(spectral_resample(fine, (4, 6)))
    # Fields of size 1: a few float32 ulp from FFTs compiled in two programs.
    np.testing.assert_allclose(stored, expected, rtol=0, atol=16 * np.finfo(np.float32).eps)
    # Not a point sampling: at the points both grids share (y = 0, 1.5; x = 0, 2) the
    # truncated white-noise fields differ from the fine values by O(1).
    assert np.abs(stored[..., ::2, ::3] - fine[..., ::3, ::4]).max() > 0.1
    report = datasets.validate(out, num_resimulate=1)
    assert report.passed, str(report)
