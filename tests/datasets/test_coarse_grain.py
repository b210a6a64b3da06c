"""datasets.coarse_grain: one fine simulation stored on several coarse grids.

Kuramoto-Sivashinsky on 64 points: generated once on its own grid and once stored on 48;
both projected onto 32 by ``coarse_grain`` must give the dataset ``generate`` writes with
``store_num_points=32`` (same spec, frames equal to round-off), which validates by
re-simulating on the fine grid.
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest

import datasets
import datasets.coarsening as cg
from tests.datasets.test_coarse_grained import GENERATE, RECORD, fine_solver


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict[str, pathlib.Path]:
    """The fine dataset, a 48-point one, and the 32-point one generated directly."""
    root = tmp_path_factory.mktemp("family")
    solver = fine_solver()
    return {
        "fine": datasets.generate(solver, root / "fine", **GENERATE),
        "48": datasets.generate(solver, root / "48", **GENERATE, store_num_points=48),
        "direct32": datasets.generate(solver, root / "d32", **GENERATE, store_num_points=32),
    }


def _frames(path: pathlib.Path) -> np.ndarray:
    return datasets.load_trajectories(path)


@pytest.mark.parametrize("source", ["fine", "48"])
def test_projection_of_a_stored_dataset_is_the_direct_coarse_dataset(family, source, tmp_path):
    out = datasets.coarse_grain(family[source], tmp_path / "c32", 32, progress=False)
    derived, direct = datasets.read_manifest(out), datasets.read_manifest(family["direct32"])
    assert derived["spec"] == direct["spec"]  # what generate(store_num_points=32) records
    assert derived["coarse_graining"] == RECORD and derived["layout"] == direct["layout"]
    assert derived["derived_from"]["path"] == str(family[source].resolve())
    assert derived["derived_from"]["num_points"] == ([64] if source == "fine" else [48])
    a, b = _frames(out), _frames(family["direct32"])
    assert a.shape == b.shape == (4, 6, 1, 32)
    # Truncation composes (the 32-point band lies inside the 48-point one); what differs is
    # float32 FFT round-off of one or two extra transform pairs, a few ulp of the maximum.
    np.testing.assert_allclose(a, b, rtol=0, atol=16 * np.finfo(np.float32).eps * np.abs(b).max())
    assert datasets.load_statistics(out).climatology.shape == (1, 32)
    report = datasets.validate(out, num_resimulate=2)
    assert report.passed, str(report)


def test_rerun_returns_at_once_and_a_kill_resumes_to_the_same_bytes(family, tmp_path, monkeypatch):
    whole = datasets.coarse_grain(family["fine"], tmp_path / "whole", 32, progress=False)
    calls = []
    original = cg._project_shard

    def dies_on_the_second_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(cg, "_project_shard", dies_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        datasets.coarse_grain(family["fine"], tmp_path / "killed", 32, progress=False)
    assert len(datasets.read_manifest(tmp_path / "killed")["shards"]) == 1
    monkeypatch.setattr(cg, "_project_shard", original)
    resumed = datasets.coarse_grain(family["fine"], tmp_path / "killed", 32, progress=False)
    sha = [[s["sha256"] for s in datasets.read_manifest(p)["shards"]] for p in (whole, resumed)]
    assert sha[0] == sha[1]
    events = [e["event"] for e in datasets.read_manifest(resumed)["history"]]
    assert events == ["started", "resumed", "completed"]
    before = (whole / "manifest.json").read_bytes()
    datasets.coarse_grain(family["fine"], whole, 32, progress=False)  # complete: nothing written
    assert (whole / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    ("source", "points", "message"),
    [
        ("48", 64, r"num_points \[64\] is not a coarsening of .* stored grid \[48\]"),
        ("48", 48, r"num_points \[48\] is not a coarsening"),
        ("fine", 65, "store_num_points must be"),
    ],
)
def test_a_target_that_is_not_coarser_is_named(family, source, points, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        datasets.coarse_grain(family[source], tmp_path / "bad", points, progress=False)


def test_unfinished_source_and_the_source_itself_are_refused(family, tmp_path):
    src = tmp_path / "unfinished"
    shutil.copytree(family["fine"], src)
    manifest = datasets.read_manifest(src)
    manifest["complete"] = False
    from datasets.manifest import write_manifest

    write_manifest(src, manifest)
    with pytest.raises(ValueError, match="unfinished"):
        datasets.coarse_grain(src, tmp_path / "out", 32, progress=False)
    with pytest.raises(FileExistsError, match="is the source dataset"):
        datasets.coarse_grain(family["fine"], family["fine"], 32, progress=False)


def test_another_dataset_in_out_dir_is_refused(family, tmp_path):
    out = tmp_path / "taken"
    shutil.copytree(family["48"], out)
    with pytest.raises(FileExistsError, match="different configuration"):
        datasets.coarse_grain(family["fine"], out, 32, progress=False)
