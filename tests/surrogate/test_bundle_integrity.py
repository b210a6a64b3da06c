"""Bundles: atomic overwrite at every crash point, checksums, weights against the spec."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from solvers import KuramotoSivashinsky
from surrogate.bundle import BundleCorruptedError, load_forecaster, save_forecaster
from surrogate.train import init_forecaster
from tests.helpers import make_spec


class Stats:
    """Unit normalisation statistics for one channel (the weights are what is tested)."""

    state_mean = np.zeros(1)
    state_std = np.ones(1)
    delta_mean = np.zeros(1)
    delta_std = np.ones(1)


@pytest.fixture(scope="module")
def spec():
    solver = KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=0.5, num_substeps=2)
    return make_spec(solver, width=8, modes=4)


def _leaves(f):
    return [np.asarray(x) for x in jax.tree.leaves(f.params)]


def _same(f, g) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(_leaves(f), _leaves(g), strict=True))


def _flip_bit(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


def _largest_file(root: Path) -> Path:
    return max((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


class _Interrupt(Exception):
    """An injected failure."""


def _intercept(monkeypatch, parent: Path, on_op):
    """Route ``os.rename``/``os.replace``/``shutil.rmtree`` on entries of ``parent``
    through ``on_op(kind, path, real)`` (orbax's own renames inside temporaries pass)."""
    real = {"rename": os.rename, "replace": os.replace, "rmtree": shutil.rmtree}

    def wrap(kind):
        def op(src, *args, **kwargs):
            if Path(src).parent == parent:
                return on_op(kind, Path(src), lambda: real[kind](src, *args, **kwargs))
            return real[kind](src, *args, **kwargs)

        return op

    monkeypatch.setattr(os, "rename", wrap("rename"))
    monkeypatch.setattr(os, "replace", wrap("replace"))
    monkeypatch.setattr(shutil, "rmtree", wrap("rmtree"))


def _interrupt_at(index: int, mode: str, work: Path, snapshot: Path):
    """An ``on_op`` for :func:`_intercept` that interrupts the ``index``-th operation.

    ``mode``: ``"kill"`` copies the directory to ``snapshot`` first (what a SIGKILL would
    leave), ``"kill mid-op"`` deletes half of a tree being removed before that copy,
    ``"fail"`` only raises (the code's own error handling runs).
    """
    seen = 0

    def on_op(kind, path, run):
        nonlocal seen
        seen += 1
        if seen - 1 != index:
            return run()
        if mode == "kill mid-op" and kind == "rmtree":
            files = sorted(p for p in path.rglob("*") if p.is_file())
            for p in files[: len(files) // 2]:
                p.unlink()
        if mode != "fail":
            shutil.copytree(work, snapshot, symlinks=True)
        raise _Interrupt(f"{mode} at {kind} of {path.name}")

    return on_op


@pytest.mark.integration  # heavy (> 5 s): kept out of the default suite's budget
def test_overwrite_interrupted_at_every_point_leaves_old_or_new(spec, tmp_path, monkeypatch):
    """Kill (a snapshot of the disk at that instant, mid-deletion too) or fail at each
    rename and deletion of ``save_forecaster(overwrite=True)``: the final name then loads
    as the old or the new bundle, and the next save removes every temporary."""
    old, new, third = (init_forecaster(spec, Stats(), seed=s) for s in (1, 2, 3))

    # the points of one overwrite
    rec = tmp_path / "record"
    save_forecaster(old, rec / "b")
    points = []
    _intercept(monkeypatch, rec, lambda kind, p, run: (points.append(kind), run())[1])
    save_forecaster(new, rec / "b", overwrite=True)
    monkeypatch.undo()
    assert len(points) >= 2, points

    def check(root: Path, what: str) -> None:
        loaded = load_forecaster(root / "b")
        assert _same(loaded, old) or _same(loaded, new), what
        save_forecaster(third, root / "b", overwrite=True)
        assert _same(load_forecaster(root / "b"), third), what
        assert sorted(p.name for p in root.iterdir()) == ["b"], what

    for i, kind in enumerate(points):
        for mode in ("kill", "fail") + (("kill mid-op",) if kind == "rmtree" else ()):
            case = tmp_path / f"{i}-{mode.replace(' ', '-')}"
            work, snap = case / "work", case / "snapshot"
            save_forecaster(old, work / "b")
            _intercept(monkeypatch, work, _interrupt_at(i, mode, work, snap))
            with pytest.raises(_Interrupt):
                save_forecaster(new, work / "b", overwrite=True)
            monkeypatch.undo()
            check(snap if mode != "fail" else work, f"{mode} at point {i} ({points[i]})")


def test_stale_temporaries_are_removed_and_an_interrupted_swap_repaired(spec, tmp_path):
    old, new = (init_forecaster(spec, Stats(), seed=s) for s in (1, 2))
    path = save_forecaster(old, tmp_path / "b")
    (tmp_path / ".b.new-dead").mkdir()
    (tmp_path / ".b.x1y2z3").mkdir()  # the temporary name of earlier versions
    save_forecaster(new, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    # killed between the two renames: the final name is absent, the old bundle aside
    os.rename(path, tmp_path / ".b.old-0123")
    assert _same(load_forecaster(path), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_bit_flip_in_the_weights_is_refused_naming_the_file(spec, tmp_path):
    f = init_forecaster(spec, Stats(), seed=1)
    path = save_forecaster(f, tmp_path / "b")
    recorded = json.loads((path / "bundle.json").read_text())["checksums"]
    assert recorded and all(k.startswith("weights/") for k in recorded)
    target = _largest_file(path / "weights")
    _flip_bit(target)
    with pytest.raises(BundleCorruptedError, match=re.escape(str(target))):
        load_forecaster(path)


def test_bundle_without_checksums_still_loads(spec, tmp_path):
    """Bundles written before checksums were recorded load unverified."""
    f = init_forecaster(spec, Stats(), seed=1)
    path = save_forecaster(f, tmp_path / "b")
    meta = json.loads((path / "bundle.json").read_text())
    del meta["checksums"]
    (path / "bundle.json").write_text(json.dumps(meta))
    assert _same(load_forecaster(path), f)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("modes", 3, r"spectral/0/weight: stored shape \(4, 2, 8, 8\), expected \(3, 2, 8, 8\)"),
        (
            "projection_channels",
            24,
            r"projection/0/kernel: stored shape \(8, 16\), expected \(8, 24\)",
        ),
        ("num_layers", 3, r"spectral/2/\S+: expected but not stored"),
    ],
)
def test_spec_edited_in_bundle_json_is_refused(spec, tmp_path, key, value, match):
    f = init_forecaster(spec, Stats(), seed=1)
    path = save_forecaster(f, tmp_path / "b")
    meta = json.loads((path / "bundle.json").read_text())
    meta["spec"]["model_kwargs"][key] = value
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"do not match the spec in bundle\.json.*" + match):
        load_forecaster(path)
