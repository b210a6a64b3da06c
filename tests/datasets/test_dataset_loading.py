"""Loading: lazy xarray view, statistics from the training split, the window loader."""

from __future__ import annotations

import numpy as np
import pytest

import datasets
from datasets.loading import _orthogonal_read


def test_open_dataset_is_lazy_and_matches_arrays(ks_dataset):
    full = datasets.load_trajectories(ks_dataset)
    assert full.shape == (6, 10, 1, 32) and full.dtype == np.float32
    ds = datasets.open_dataset(ks_dataset)
    try:
        # Nothing is read until asked for: the variable wraps a lazy backend array.
        assert not isinstance(ds["u"].variable._data, np.ndarray)
        np.testing.assert_array_equal(ds["u"].values, full[:, :, 0])
        # Outer indexing across shards, unsorted and repeated rows, time slices.
        sub = ds["u"].isel(trajectory=[5, 0, 3, 3], time=slice(2, 7, 2), x=[4, 1])
        np.testing.assert_array_equal(sub.values, full[[5, 0, 3, 3]][:, 2:7:2, 0][:, :, [4, 1]])
        np.testing.assert_array_equal(ds["u"][4, -1].values, full[4, -1, 0])
    finally:
        ds.close()
    val = datasets.open_dataset(ks_dataset, split="val")
    try:
        np.testing.assert_array_equal(val["trajectory"].values, [5])
        np.testing.assert_array_equal(val["u"].values, full[5:6, :, 0])
    finally:
        val.close()
    with pytest.raises(KeyError, match="unknown split 'validation'"):
        datasets.open_dataset(ks_dataset, split="validation")


class _SortedOuterOnly:
    """A stand-in for a netCDF4 variable: outer indexing, increasing index arrays only."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def __getitem__(self, key):
        out, axis = self.a, 0
        for k in key:
            if isinstance(k, np.ndarray):
                assert np.all(np.diff(k) > 0), "netCDF4 wants increasing indices"
                out = np.take(out, k, axis=axis)
                axis += 1
            elif isinstance(k, int):
                out = np.take(out, k, axis=axis)
            else:
                out = out[(slice(None),) * axis + (k,)]
                axis += 1
        return out


def test_orthogonal_read_handles_unsorted_and_repeated_indices():
    a = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    key = (np.array([3, 1, 1]), 2, np.array([5, 0]))
    got = _orthogonal_read(_SortedOuterOnly(a), key)
    np.testing.assert_array_equal(got, a[[3, 1, 1]][:, 2][:, [5, 0]])


def test_dataset_info(ks_dataset):
    info = datasets.dataset_info(ks_dataset)
    assert info["solver"] == "kuramoto_sivashinsky" and info["variables"] == ("u",)
    assert info["solver_config"]["num_points"] == 32 and info["dt"] == 0.5
    assert info["num_trajectories"] == {"train": 5, "val": 1, "test": 0, "total": 6}
    assert info["num_frames"] == 10 and info["state_shape"] == (1, 32)
    assert info["grid"]["axes"] == ["x"] and info["units"] == {"u": "1"}
    assert info["complete"] and info["precision"] == "float32"


def test_statistics_from_training_split_only(ks_dataset):
    stats = datasets.load_statistics(ks_dataset)  # written at the end of generation
    train = datasets.load_trajectories(ks_dataset, "train").astype(np.float64)
    delta = np.diff(train, axis=1)
    # Streamed per-shard moments vs one numpy pass over the same float64 values: only
    # summation order differs (a few eps).
    tol = {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(stats.state_mean, train.mean(axis=(0, 1, 3)), **tol)
    np.testing.assert_allclose(stats.state_std, train.std(axis=(0, 1, 3)), **tol)
    np.testing.assert_allclose(stats.delta_mean, delta.mean(axis=(0, 1, 3)), **tol)
    np.testing.assert_allclose(stats.delta_std, delta.std(axis=(0, 1, 3)), **tol)
    np.testing.assert_allclose(stats.climatology, train.mean(axis=(0, 1)), **tol)
    assert stats.climatology.shape == (1, 32) and stats.variables == ("u",)
    assert stats.num_trajectories == 5
    everything = datasets.load_trajectories(ks_dataset).astype(np.float64)
    assert not np.allclose(stats.state_std, everything.std(axis=(0, 1, 3)), rtol=1e-6, atol=0)
    again = datasets.Statistics.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.climatology, stats.climatology)


def test_stale_statistics_are_refused(ks_copy):
    from tests.datasets.dataset_helpers import GENERATE, ks_solver

    datasets.generate(ks_solver(), ks_copy, **{**GENERATE, "seed": 1}, overwrite=True)
    stats = datasets.load_statistics(ks_copy)  # recomputed by the new generation
    (ks_copy / "statistics.nc").unlink()
    with pytest.raises(FileNotFoundError, match="compute_statistics"):
        datasets.load_statistics(ks_copy)
    datasets.compute_statistics(ks_copy)
    np.testing.assert_array_equal(datasets.load_statistics(ks_copy).state_std, stats.state_std)
    manifest = (ks_copy / "manifest.json").read_text()
    (ks_copy / "manifest.json").write_text(manifest.replace('"seed": 1', '"seed": 2', 1))
    with pytest.raises(ValueError, match="computed for different data"):
        datasets.load_statistics(ks_copy)


def _loader(path, **kw):
    return datasets.WindowLoader(
        path, "train", **{"batch_size": 4, "history": 2, "horizon": 3, **kw}
    )


def test_window_shapes_and_contents(ks_dataset):
    loader = _loader(ks_dataset)
    data = datasets.load_trajectories(ks_dataset, "train")
    assert loader.windows_per_trajectory == 10 - 5 + 1 and loader.num_windows == 5 * 6
    assert loader.steps_per_epoch == 30 // 4 and len(loader) == 7
    assert loader.variables == ("u",) and loader.dt == 0.5 and loader.in_memory
    np.testing.assert_array_equal(loader.grid["coords"]["x"], np.arange(32) * 22.0 / 32)
    for step in (0, 6, 7, 20):
        inputs, targets = loader.batch(step)
        assert inputs.shape == (4, 2, 1, 32) and targets.shape == (4, 3, 1, 32)
        assert inputs.dtype == np.float32 and targets.dtype == np.float32
        rows, t0 = np.divmod(loader.window_indices(step), loader.windows_per_trajectory)
        for b in range(4):
            np.testing.assert_array_equal(inputs[b], data[rows[b], t0[b] : t0[b] + 2])
            # Targets are the frames right after the inputs.
            np.testing.assert_array_equal(targets[b], data[rows[b], t0[b] + 2 : t0[b] + 5])
    np.testing.assert_array_equal(loader.trajectories(), data)


def test_epoch_visits_every_window_once(ks_dataset):
    loader = _loader(ks_dataset, drop_last=False)
    assert loader.steps_per_epoch == 8
    seen = np.concatenate([loader.window_indices(s) for s in range(8)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(30))
    assert loader.batch(7)[0].shape[0] == 30 - 7 * 4  # the partial last batch
    # The next epoch is a different permutation of the same windows.
    nxt = np.concatenate([loader.window_indices(s) for s in range(8, 16)])
    assert not np.array_equal(nxt, seen) and np.array_equal(np.sort(nxt), np.arange(30))
    ordered = _loader(ks_dataset, shuffle=False, drop_last=False)
    np.testing.assert_array_equal(ordered.window_indices(1), [4, 5, 6, 7])


def test_batches_are_pure_functions_of_seed_and_step(ks_dataset):
    a, b = _loader(ks_dataset, seed=3), _loader(ks_dataset, seed=3)
    c = _loader(ks_dataset, seed=4)
    for step in (0, 5, 9, 40):  # several epochs; b is fresh: a resumed run
        np.testing.assert_array_equal(a.batch(step)[0], b.batch(step)[0])
        np.testing.assert_array_equal(a.batch(step)[1], b.batch(step)[1])
    differs = [not np.array_equal(a.window_indices(s), c.window_indices(s)) for s in range(7)]
    assert any(differs)
    # A resumed iteration reproduces the same steps, with or without prefetch.
    got = [(s, x.copy(), y.copy()) for s, x, y in a.iterate(start_step=5, num_steps=6)]
    assert [s for s, _, _ in got] == list(range(5, 11))
    for s, x, y in got:
        np.testing.assert_array_equal(x, b.batch(s)[0])
        np.testing.assert_array_equal(y, b.batch(s)[1])
    sync = _loader(ks_dataset, seed=3, prefetch=0)
    for (s, x, _), (s2, x2, _) in zip(got, sync.iterate(5, 6), strict=True):
        assert s == s2
        np.testing.assert_array_equal(x, x2)


def test_process_parts_tile_the_batch_in_memory_and_lazily(ks_dataset):
    for budget in (4 << 30, 0):  # in RAM, then read from the shards
        loader = _loader(ks_dataset, batch_size=7, seed=2, memory_budget_bytes=budget)
        assert loader.in_memory == (budget > 0)
        for step in (0, 3):
            whole = loader.batch(step)
            for p in (1, 2, 3):
                parts = [loader.batch(step, part=(i, p)) for i in range(p)]
                sizes = [x.shape[0] for x, _ in parts]
                assert max(sizes) - min(sizes) <= 1
                for k in (0, 1):  # inputs, targets: the parts, in order, are the batch
                    np.testing.assert_array_equal(np.concatenate([q[k] for q in parts]), whole[k])
        with pytest.raises(ValueError, match="part must be"):
            loader.batch(0, part=(2, 2))


def test_iterate_can_be_abandoned_and_forever(ks_dataset):
    loader = _loader(ks_dataset, prefetch=1)
    it = loader.iterate()  # unbounded
    steps = [next(it)[0] for _ in range(20)]
    assert steps == list(range(20))
    it.close()  # stops the prefetch thread without hanging


def test_lazy_reads_equal_in_memory(ks_dataset):
    mem = _loader(ks_dataset, seed=1, dtype="float64")
    lazy = _loader(ks_dataset, seed=1, dtype="float64", memory_budget_bytes=0)
    assert mem.in_memory and not lazy.in_memory
    for step in (0, 3, 11):
        for x, y in zip(mem.batch(step), lazy.batch(step), strict=True):
            assert x.dtype == np.float64
            np.testing.assert_array_equal(x, y)
    lazy.close()


def test_loader_statistics_and_errors(ks_dataset):
    loader = _loader(ks_dataset)
    np.testing.assert_array_equal(
        loader.statistics.state_std, datasets.load_statistics(ks_dataset).state_std
    )
    with pytest.raises(ValueError, match="history \\+ horizon = 11 exceeds the 10 frames"):
        _loader(ks_dataset, history=5, horizon=6)
    with pytest.raises(ValueError, match="batch_size 31 exceeds the 30 windows"):
        _loader(ks_dataset, batch_size=31)
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        _loader(ks_dataset, horizon=0)
    with pytest.raises(ValueError, match="split 'test' of .* holds no trajectories"):
        datasets.WindowLoader(ks_dataset, "test", batch_size=1)
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        loader.batch(-1)
