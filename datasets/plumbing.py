"""File plumbing shared by ``datasets`` and ``surrogate``: atomic writes, digests, versions.

One home for the small pieces every writer needs, so that each exists once:

- atomic replacement of a file (:func:`atomic_path`, :func:`atomic_write_text`,
  :func:`atomic_write_bytes`): the data go to a hidden, process-unique temporary file in
  the same directory (:func:`temporary_path`), are flushed to stable storage and renamed
  over the final name with ``os.replace``; readers, and a crash at any point, see the
  old file or the new one, never a partial one, and a failed write removes its
  temporary file;
- the sha256 of a file (:func:`sha256_file`) and canonical JSON (:func:`canonical_json`:
  sorted keys, so equal values give equal strings and equal digests);
- the installed versions of this project and of libraries (:func:`package_version`,
  :func:`distribution_versions`), for provenance records.

- the one data-parallel pattern (:func:`map_rows`): a function run by every device of a
  one-axis mesh (:data:`DATA_AXIS`) on its rows of the batch.

Nothing here knows about solvers, datasets or networks; ``solvers`` does not import it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any

#: Suffix of every temporary file written by :func:`atomic_path` (see
#: :func:`temporary_path`); ``.*<TMP_SUFFIX>`` finds those left by killed writers.
TMP_SUFFIX = ".tmp"

#: The distribution name of this project (``pyproject.toml``).
DISTRIBUTION = "hybrid-surrogates"


# ---- atomic files ------------------------------------------------------------------------
def temporary_path(final: str | os.PathLike) -> pathlib.Path:
    """A hidden, process-unique temporary name next to ``final``.

    Args:
        final: the file the temporary will replace.

    Returns:
        ``<dir>/.<name>.<pid>.tmp``: in the same directory (so on the same filesystem,
        where ``os.replace`` is atomic), hidden, unique per process, ending in
        :data:`TMP_SUFFIX`.
    """
    final = pathlib.Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}{TMP_SUFFIX}")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a directory's) data and metadata to stable storage.

    Args:
        path: an existing file or directory.

    Raises:
        OSError: it cannot be opened (``FileNotFoundError`` when absent) or synced.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(
    tmp: str | os.PathLike,
    final: str | os.PathLike,
    sync_directory: bool = True,
    *,
    fsync: bool = True,
) -> None:
    """fsync ``tmp``, rename it over ``final`` atomically, then fsync the directory.

    The file fsync before the rename makes sure the new name never points at unwritten
    data after a crash; the directory fsync makes the rename itself durable, and may be
    left to a later commit in the same directory (dataset shards: the next manifest
    write).

    Args:
        tmp: the finished temporary file (same filesystem as ``final``).
        final: the name it takes.
        sync_directory: fsync ``final``'s directory after the rename.
        fsync: fsync ``tmp`` before the rename (``False``: a crash of the machine may
            leave ``final`` empty or partial; a crash of the process still cannot).

    Raises:
        OSError: from the fsync or the rename.
    """
    if fsync:
        fsync_path(tmp)
    os.replace(tmp, final)
    if sync_directory:
        fsync_path(pathlib.Path(final).parent)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    fsync: bool = True,
    sync_directory: bool = True,
    parents: bool = False,
) -> Iterator[pathlib.Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    For writers that take a file name (``xarray.Dataset.to_netcdf``, ``numpy.save``,
    ...)::

        with atomic_path(out) as tmp:
            ds.to_netcdf(tmp)

    When the block returns, the temporary is committed (:func:`commit`); when it raises,
    ``path`` is left untouched (the old file, or none) and the temporary is removed.

    Args:
        path: the file to (re)place.
        fsync: fsync the temporary before the rename.
        sync_directory: fsync the directory after the rename.
        parents: create missing parent directories of ``path`` first.

    Yields:
        The temporary path, :func:`temporary_path` ``(path)``: in the same directory,
        not yet existing.

    Raises:
        FileNotFoundError: the block returned without creating the temporary file, or
            the directory of ``path`` does not exist (and ``parents`` is false).
        OSError: from the fsync or the rename; whatever the block raises passes through.
    """
    path = pathlib.Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(
                errno.ENOENT,
                f"atomic write of {path}: the writer returned without creating the "
                f"temporary file {tmp}",
                str(tmp),
            )
        commit(tmp, path, sync_directory, fsync=fsync)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(
    path: str | os.PathLike,
    data: bytes,
    *,
    fsync: bool = True,
    sync_directory: bool = True,
    parents: bool = False,
) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the file to (re)place.
        data: its new contents.
        fsync, sync_directory, parents: as :func:`atomic_path`.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        OSError: the write, the fsync or the rename failed; ``path`` is unchanged.
    """
    with atomic_path(path, fsync=fsync, sync_directory=sync_directory, parents=parents) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(path)


def atomic_write_text(
    path: str | os.PathLike,
    text: str,
    *,
    encoding: str = "utf-8",
    fsync: bool = True,
    sync_directory: bool = True,
    parents: bool = False,
) -> pathlib.Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the file to (re)place.
        text: its new contents (written as is: no newline translation on POSIX).
        encoding: the text encoding.
        fsync, sync_directory, parents: as :func:`atomic_path`.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        OSError: the write, the fsync or the rename failed; ``path`` is unchanged.
        UnicodeEncodeError: ``text`` cannot be encoded; ``path`` is unchanged.
    """
    data = text.encode(encoding)
    return atomic_write_bytes(
        path, data, fsync=fsync, sync_directory=sync_directory, parents=parents
    )


# ---- digests and canonical JSON ----------------------------------------------------------
def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in blocks (constant memory).

    Args:
        path: the file.
        block: bytes read at a time.

    Returns:
        The 64-character lowercase hex digest.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when absent).
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any, *, indent: int | None = None, allow_nan: bool = False) -> str:
    """JSON with sorted keys: equal values give equal strings, whatever the key order.

    Args:
        obj: JSON-serialisable value (dicts, lists, strings, numbers, bools, None).
        indent: ``None`` for the compact form (``","`` and ``":"`` separators, no
            whitespace: what digests are taken of); an int for a readable file indented
            by that many spaces (``", "``/``": "`` separators as ``json.dumps``).
        allow_nan: write NaN and infinities as ``NaN``/``Infinity`` (not JSON; Python
            reads them back) instead of refusing them.

    Returns:
        The JSON text (no trailing newline).

    Raises:
        TypeError: a value is not JSON-serialisable.
        ValueError: a float is NaN or infinite and ``allow_nan`` is false.
    """
    separators = (",", ":") if indent is None else None
    return json.dumps(
        obj, sort_keys=True, indent=indent, separators=separators, allow_nan=allow_nan
    )


# ---- versions ----------------------------------------------------------------------------
def distribution_versions(
    names: Iterable[str], *, missing: str = "not installed"
) -> dict[str, str]:
    """Installed versions of Python distributions, read from their metadata.

    Args:
        names: distribution names as installed (``"jax"``, ``"orbax-checkpoint"``, ...).
        missing: the value recorded for a distribution that is not installed.

    Returns:
        ``{name: version}`` in the order of ``names``.
    """
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = missing
    return out


def package_version() -> str:
    """Installed version of this project (:data:`DISTRIBUTION`).

    Returns:
        The version from the installed metadata; when the project is not installed (run
        from a source tree), ``solvers.__version__``, else ``"unknown"``.
    """
    try:
        from importlib.metadata import version

        return version(DISTRIBUTION)
    except Exception:  # noqa: BLE001 - not installed: fall back to the source tree
        import solvers

        return getattr(solvers, "__version__", "unknown")


#: The one mesh axis of data parallelism: batch rows are split over it.
DATA_AXIS = "data"


def map_rows(fn: Any, mesh: Any, in_specs: Any, out_specs: Any) -> Any:
    """``fn`` run by every device of ``mesh`` on its rows of the batch, or ``fn`` itself.

    ``jax.shard_map`` over :data:`DATA_AXIS` rather than sharding annotations: with
    annotations alone XLA's partitioner all-gathers the batch before every FFT, so every
    device computed the whole batch (measured in data generation and in AFNO's train
    step). Specs are pytrees of ``PartitionSpec`` matching the arguments and results:
    ``P("data")`` splits the leading axis, ``P()`` replicates (steppers, parameters, keys).
    ``check_vma`` is off: a body either has no collective or reduces with one explicit
    ``pmean`` whose replicated result its out spec states.

    Args:
        fn: the per-device function.
        mesh: a mesh with axis :data:`DATA_AXIS`, or ``None`` (one device: ``fn`` unchanged).
        in_specs, out_specs: as for ``jax.shard_map``.

    Returns:
        A function with ``fn``'s signature.
    """
    if mesh is None:
        return fn
    import jax

    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
