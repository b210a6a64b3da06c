"""Training checkpoints: orbax managers of the last and best steps, with sha256 sidecars.

Each checkpoint step carries the sha256 of its files, verified before it is restored (a
corrupted step is set aside by the resume logic, :mod:`surrogate.training.resume`, and the
previous one used). A checkpoint holds parameters, optimizer state and a JSON record (step,
best validation, the settings it was written with).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from surrogate.bundle import checksum_problems, file_checksums, shape_problems

# One logger for all of training: users filter on "surrogate.train".
log = logging.getLogger("surrogate.train")


class CheckpointCorruptedError(RuntimeError):
    """No checkpoint of a run directory passes its checksum and metadata checks."""


class Checkpoints:
    """Orbax managers of the last checkpoints and of the best ones, under ``run_dir``.

    Every step directory gets a sidecar ``sha256.json`` (the sha256 of each of its files),
    written once orbax has committed the step; restoring verifies it. A step without a
    sidecar (older runs, or a crash between the commit and the sidecar) is restored
    unverified, with a warning: orbax's commit is atomic, so it is complete.

    ``best/`` keeps, besides newer ones, the newest best step at or before the oldest
    retained last checkpoint, so whichever last checkpoint a run resumes from, the best
    model as of that step is still there (orbax's own ``max_to_keep`` would delete it).

    Methods taking a ``manager`` take :attr:`last` or :attr:`best`. Under several processes
    every process saves (orbax coordinates the writes) and only the ``primary`` one writes
    sidecars, moves and deletes.

    Args:
        run_dir: the run directory (``checkpoints/`` and ``best/`` are created in it).
        keep: how many last checkpoints orbax keeps (``TrainConfig.keep_checkpoints``).
        primary: whether this is process 0.
    """

    SIDECAR = "sha256.json"

    def __init__(self, run_dir: Path, keep: int, *, primary: bool = True) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.run_dir = run_dir
        self.primary = primary
        self._unverified: set[Path] = set()  # warned about once

        def manager(name: str, keep: int | None):
            opts = ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=False,
                create=True,
                cleanup_tmp_directories=True,
            )
            handlers = {
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            }
            return ocp.CheckpointManager(run_dir / name, options=opts, item_handlers=handlers)

        self.last = manager("checkpoints", keep)
        self.best = manager("best", None)  # pruned by prune_best

    @staticmethod
    def _tree(params, opt_state) -> dict:
        """Plain numpy arrays: the parameters as a pure dict, optimizer leaves numbered."""
        leaves = jax.tree.leaves(opt_state)
        return {
            "params": jax.tree.map(np.asarray, nnx.to_pure_dict(params)),
            "opt_state": {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)},
        }

    @staticmethod
    def step_dir(manager, step: int) -> Path:
        """The directory of ``step`` in ``manager`` (whether or not it exists)."""
        return Path(manager.directory) / str(step)

    def save(self, manager, step: int, params, opt_state, meta: dict) -> None:
        """Commit ``step`` (parameters, optimizer state, JSON ``meta``), then its sidecar.

        Args:
            manager: :attr:`last` or :attr:`best`.
            step: the optimizer steps done.
            params: the network state (``nnx.State``).
            opt_state: the optax state.
            meta: JSON-ready record stored beside the arrays.
        """
        self._commit(manager, step, self._tree(params, opt_state), meta)
        if self.primary:
            self._write_sidecar(manager, step)

    def _commit(self, manager, step: int, tree: dict, meta: dict) -> None:
        """Save synchronously; orbax's commit (rename of a temporary) is atomic."""
        ocp = self._ocp
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        manager.wait_until_finished()

    def _write_sidecar(self, manager, step: int) -> None:
        """Write ``sha256.json`` of a committed step atomically (temporary, fsync, rename)."""
        from datasets.plumbing import atomic_write_text, canonical_json

        d = self.step_dir(manager, step)
        record = {"sha256": file_checksums(d, exclude=(self.SIDECAR,))}
        atomic_write_text(d / self.SIDECAR, canonical_json(record, indent=1), sync_directory=False)

    def problems(self, manager, step: int) -> list[str]:
        """What is wrong with a step's files (empty: intact, or unverifiable).

        A step without a sidecar is unverifiable: logged once as a warning, then accepted.

        Returns:
            One message per problem, naming the file.
        """
        d = self.step_dir(manager, step)
        sidecar = d / self.SIDECAR
        if not sidecar.is_file():
            if d in self._unverified:
                return []
            self._unverified.add(d)
            log.warning(
                "checkpoint %s has no checksum record %s (written before checksums were "
                "recorded, or interrupted just after orbax committed it): restoring it "
                "unverified",
                d,
                self.SIDECAR,
            )
            return []
        try:
            recorded = json.loads(sidecar.read_text())["sha256"]
            return checksum_problems(d, dict(recorded))
        except (ValueError, KeyError, TypeError) as e:
            return [f"{sidecar}: unreadable checksum record ({type(e).__name__}: {e})"]

    def read_meta(self, manager, step: int) -> dict:
        """The step's JSON metadata.

        Returns:
            The ``meta`` record saved with the step.

        Raises:
            ValueError: the metadata file is not valid JSON (naming the file).
        """
        try:
            out = manager.restore(
                step, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore())
            )
        except json.JSONDecodeError as e:
            meta_dir = self.step_dir(manager, step) / "meta"
            files = sorted(p for p in meta_dir.glob("*") if p.is_file() and "commit" not in p.name)
            where = files[0] if len(files) == 1 else meta_dir
            raise ValueError(f"{where}: invalid checkpoint metadata JSON ({e})") from None
        return dict(out["meta"])

    def check(self, manager, step: int) -> tuple[dict | None, str]:
        """Whether ``step`` can be resumed from: checksums, then its metadata.

        Returns:
            ``(meta, "")`` for a usable step, ``(None, what is wrong)`` otherwise.
        """
        problems = self.problems(manager, step)
        if problems:
            return None, "; ".join(problems)
        try:
            return self.read_meta(manager, step), ""
        except ValueError as e:
            return None, str(e)

    def latest_good(self, manager) -> tuple[int | None, dict | None, list[tuple[int, str]]]:
        """Newest usable step with its metadata, and the newer unusable ones with why.

        Returns:
            ``(step, meta, [(bad step, what is wrong), ...])``; ``(None, None, bad)`` when
            no step is usable.
        """
        bad = []
        for step in sorted(manager.all_steps(), reverse=True):
            meta, problem = self.check(manager, step)
            if meta is not None:
                return step, meta, bad
            bad.append((step, problem))
        return None, None, bad

    def set_aside(self, manager, step: int) -> Path:
        """Move a corrupted step out of its manager into ``run_dir/corrupted/``.

        It is kept for inspection; a resumed run writes that step again. Only the primary
        process moves it (call :meth:`reload` after a barrier).

        Returns:
            Where the step is (or, on other processes, will be) kept.
        """
        src = self.step_dir(manager, step)
        dest = self.run_dir / "corrupted" / f"{Path(manager.directory).name}-{step}"
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{Path(manager.directory).name}-{step}.{n}")
            n += 1
        if self.primary:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, dest)
        return dest

    def discard(self, manager, step: int) -> None:
        """Delete a step at resume (process 0; call :meth:`reload` after a barrier)."""
        if self.primary:
            shutil.rmtree(self.step_dir(manager, step))

    def reload(self) -> None:
        """Re-read both managers' steps from disk (after another process changed them)."""
        self.last.reload()
        self.best.reload()

    def prune_best(self) -> None:
        """Delete best steps no retained last checkpoint can resume to (see class doc)."""
        floor = min(self.last.all_steps(), default=None)
        if floor is None:
            return
        steps = sorted(self.best.all_steps())
        keep_from = max((s for s in steps if s <= floor), default=None)
        for s in steps:
            if keep_from is not None and s < keep_from:
                self._delete(self.best, s)

    def _delete(self, manager, step: int) -> None:
        """Delete a step through orbax (a separate method: tests inject crashes here)."""
        manager.delete(step)

    def restore(self, manager, step: int, params, opt_state) -> tuple[Any, Any]:
        """Restore step ``step`` into the structures of ``params``/``opt_state``.

        Args:
            manager: :attr:`last` or :attr:`best`.
            step: the step to restore.
            params: the network state whose structure, shapes and dtypes to fill.
            opt_state: the optax state whose structure to fill.

        Returns:
            ``(params, opt_state)``.

        Raises:
            CheckpointCorruptedError: the step fails its checksums.
            ValueError: the stored arrays do not have the shapes of ``params`` and
                ``opt_state`` (each path named with both shapes).
        """
        ocp = self._ocp
        problems = self.problems(manager, step)
        if problems:
            raise CheckpointCorruptedError(
                f"checkpoint {self.step_dir(manager, step)} is corrupted: " + "; ".join(problems)
            )
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype),
            self._tree(params, opt_state),
        )
        # orbax restores the stored shapes whatever the target says: compare first
        stored = manager.item_metadata(step)["state"].tree
        problems = shape_problems(abstract, stored)
        if problems:
            raise ValueError(
                f"train: checkpoint {self.step_dir(manager, step)} does not fit the forecaster "
                "being trained: " + "; ".join(problems)
            )
        out = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
        state = out["state"]
        new_params = jax.tree.map(lambda x: x, params)
        nnx.replace_by_pure_dict(new_params, jax.tree.map(jnp.asarray, state["params"]))
        treedef = jax.tree.structure(opt_state)
        leaves = [jnp.asarray(state["opt_state"][k]) for k in sorted(state["opt_state"])]
        return new_params, jax.tree.unflatten(treedef, leaves)

    def close(self) -> None:
        """Close both orbax managers."""
        self.last.close()
        self.best.close()
