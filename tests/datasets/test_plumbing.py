"""datasets.plumbing: atomic writes, sha256 of a file, canonical JSON, versions, map_rows."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import re

import pytest

from datasets import plumbing, provenance, storage


class _Interrupt(Exception):
    """An injected failure in the middle of a write."""


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(plumbing.TMP_SUFFIX))


@pytest.mark.parametrize("old", [b"old contents\n", None], ids=["replace", "create"])
def test_a_writer_failing_midway_leaves_the_old_file_and_no_temporary(tmp_path, old):
    target = tmp_path / "data.bin"
    if old is not None:
        target.write_bytes(old)
    with pytest.raises(_Interrupt), plumbing.atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new, but only the first half")
            f.flush()
            assert tmp.read_bytes() == b"new, but only the first half"  # really on disk
            raise _Interrupt
    assert (target.read_bytes() if target.exists() else None) == old
    assert _leftovers(tmp_path) == []


def test_a_failing_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def no_rename(src, dst):
        raise OSError(5, "injected rename failure")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="injected rename failure"):
        plumbing.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_successful_writes_replace_the_file_exactly(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with pytest.raises(FileNotFoundError):  # no parent, not asked to create it
        plumbing.atomic_write_text(target, "x")
    text = "line 1\nünïcode\r\nend"  # no newline translation, UTF-8
    assert plumbing.atomic_write_text(target, text, parents=True) == target
    assert target.read_bytes() == text.encode("utf-8")
    data = bytes(range(256))
    plumbing.atomic_write_bytes(target, data, fsync=False, sync_directory=False)
    assert target.read_bytes() == data
    with plumbing.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".")
        assert tmp.name.endswith(plumbing.TMP_SUFFIX) and not tmp.exists()
        tmp.write_bytes(b"from a writer callback")
        assert target.read_bytes() == data  # not replaced before the block ends
    assert target.read_bytes() == b"from a writer callback"
    assert _leftovers(target.parent) == []


def test_a_writer_that_writes_nothing_is_an_error_naming_the_file(tmp_path):
    target = tmp_path / "out.nc"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError, match=r"out\.nc: the writer returned without"):
        with plumbing.atomic_path(target):
            pass
    assert target.read_bytes() == b"old"


def test_temporary_names_are_hidden_process_unique_and_found_by_the_stale_sweep(tmp_path):
    tmp = plumbing.temporary_path(tmp_path / "shard-00000.nc")
    assert tmp == tmp_path / f".shard-00000.nc.{os.getpid()}.tmp"
    tmp.write_bytes(b"left by a killed writer")
    assert storage.remove_stale_temporaries(tmp_path) == [tmp]


def test_sha256_file_matches_hashlib_across_block_boundaries(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    # FIPS 180-2 test vector
    known = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert plumbing.sha256_file(path) == known
    data = os.urandom(10_000)
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert plumbing.sha256_file(path, block=4096) == expected  # a partial last block
    assert plumbing.sha256_file(path) == expected
    path.write_bytes(b"")
    assert plumbing.sha256_file(path) == hashlib.sha256(b"").hexdigest()


def test_canonical_json_is_independent_of_key_order():
    a = {"b": [1, {"y": 2, "x": 1}], "a": "s", "c": None}
    b = {"c": None, "a": "s", "b": [1, {"x": 1, "y": 2}]}
    assert plumbing.canonical_json(a) == plumbing.canonical_json(b)
    assert plumbing.canonical_json(a) == '{"a":"s","b":[1,{"x":1,"y":2}],"c":null}'
    indented = plumbing.canonical_json(a, indent=1)
    assert indented == plumbing.canonical_json(b, indent=1)
    assert indented == json.dumps(a, indent=1, sort_keys=True)  # the files it replaces
    assert json.loads(indented) == a
    assert plumbing.canonical_json({"x": 1}) != plumbing.canonical_json({"x": 2})


def test_canonical_json_refuses_nan_unless_allowed():
    with pytest.raises(ValueError, match="Out of range float values"):
        plumbing.canonical_json({"a": float("nan")})
    assert plumbing.canonical_json({"a": float("nan")}, allow_nan=True) == '{"a":NaN}'


def test_versions_come_from_installed_metadata():
    from importlib import metadata

    got = plumbing.distribution_versions(["numpy", "no-such-distribution-xyz"])
    assert list(got) == ["numpy", "no-such-distribution-xyz"]
    assert got == {"numpy": metadata.version("numpy"), "no-such-distribution-xyz": "not installed"}
    assert plumbing.package_version() == metadata.version(plumbing.DISTRIBUTION)
    libs = provenance.library_versions()
    assert list(libs) == ["jax", "numpy", "xarray", "netCDF4", "netcdf-c", "hdf5", "python"]
    assert libs["python"] == platform.python_version()
    import jax
    import netCDF4
    import numpy
    import xarray

    modules = {"jax": jax, "numpy": numpy, "xarray": xarray, "netCDF4": netCDF4}
    assert {k: libs[k] for k in modules} == {k: m.__version__ for k, m in modules.items()}


def test_solvers_does_not_import_datasets():
    # solvers sits below datasets: the plumbing must stay out of it.
    import solvers

    root = pathlib.Path(solvers.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"^\s*(from|import) datasets\b", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_map_rows_without_a_mesh_is_the_function_and_with_one_splits_the_rows():
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    def scaled(scale, rows):
        return scale * rows, jnp.sum(rows, axis=1)

    assert plumbing.map_rows(scaled, None, None, None) is scaled
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1], dtype=object), (plumbing.DATA_AXIS,))
    rows = jnp.arange(12.0).reshape(4, 3)
    split = P(plumbing.DATA_AXIS)
    out = jax.jit(plumbing.map_rows(scaled, mesh, (P(), split), (split, split)))(2.0, rows)
    np.testing.assert_array_equal(out[0], 2.0 * rows)
    np.testing.assert_array_equal(out[1], rows.sum(axis=1))
