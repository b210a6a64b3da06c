"""The generation modules after the split: old import paths, the worker entry point, int checks."""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest

import datasets
from datasets import generation, provenance, simulate, workers
from tests.datasets.dataset_helpers import GENERATE, ks_solver


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("RUNTIME_KEYS", provenance),
        ("generation_spec", provenance),
        ("library_versions", provenance),
        ("package_version", provenance),
        ("rebuild_solver", provenance),
        ("solver_layout", provenance),
        ("stored_num_points", provenance),
        ("precision_scope", simulate),
        ("regenerate_trajectories", simulate),
        ("regenerate_trajectory", simulate),
        ("simulate_batch", simulate),
    ],
)
def test_datasets_generation_still_exports_what_others_import(name, home):
    # surrogate.front_stage and the benchmarks import these from datasets.generation.
    assert getattr(generation, name) is getattr(home, name)
    assert name in generation.__all__


def test_the_worker_entry_point_resolves_by_module_path():
    # A spawned child finds its target as (module, qualname), as multiprocessing does.
    entry = workers._worker_main
    assert entry.__module__ == "datasets.workers"
    assert getattr(importlib.import_module(entry.__module__), entry.__qualname__) is entry


def test_generate_int_checks_name_the_argument_and_the_bound(tmp_path):
    too_many = jax.local_device_count() + 1
    with pytest.raises(
        ValueError, match=rf"datasets.generate: devices must be an int <= {too_many - 1},"
    ):
        datasets.generate(ks_solver(), tmp_path / "x", **{**GENERATE, "devices": too_many})
    with pytest.raises(ValueError, match=r"datasets.generate: seed must be an int <= 2147483647"):
        datasets.generate(ks_solver(), tmp_path / "x", **{**GENERATE, "seed": 2**31})
    with pytest.raises(ValueError, match=r"datasets.generate: num_frames must be an int >= 2"):
        datasets.generate(ks_solver(), tmp_path / "x", **{**GENERATE, "num_frames": True})
    assert not (tmp_path / "x").exists()


def test_statistics_chunk_size_must_be_an_int():
    data = np.zeros((2, 3, 1, 4), np.float32)
    for bad in (0, 1.5, True):
        with pytest.raises(
            ValueError, match=r"statistics_from_arrays: chunk_trajectories must be an int >= 1"
        ):
            datasets.statistics_from_arrays(data, ("u",), chunk_trajectories=bad)


def test_from_arrays_compression_level_names_its_range(tmp_path):
    from solvers.grid import Grid

    grid = Grid((4,), (1.0,), ("x",))
    with pytest.raises(ValueError, match=r"compression_level must be an int in \[0, 9\], got 10"):
        datasets.from_arrays(
            tmp_path / "d",
            np.zeros((2, 3, 1, 4), np.float32),
            variables=("u",),
            units={"u": "1"},
            grid=grid,
            dt=0.5,
            compression_level=10,
        )


@pytest.mark.parametrize("bad", [0, 1.5, True])
def test_regenerate_trajectories_names_a_bad_batch_size(ks_dataset, bad):
    with pytest.raises(
        ValueError, match=r"regenerate_trajectories: batch_size must be an int >= 1"
    ):
        simulate.regenerate_trajectories(ks_dataset, [0], batch_size=bad)
