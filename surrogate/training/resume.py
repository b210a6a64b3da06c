"""Resuming a run: which checkpoint to continue from, and whether its settings still hold.

A resume replays the identical computation: the checkpoint holds parameters, optimizer
state and step, and a resume with other settings or another forecaster is refused unless
forced (then the change is recorded). Corrupted checkpoints are set aside, and ``best/`` is
made to agree with the step resumed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from surrogate import distributed
from surrogate.forecaster import ForecasterSpec
from surrogate.training.checkpoints import CheckpointCorruptedError, Checkpoints

# One logger for all of training: users filter on "surrogate.train".
log = logging.getLogger("surrogate.train")

# Settings that change no parameter and no metric: a resume may change them freely.
RESUME_FREE_KEYS = frozenset({"keep_checkpoints", "checkpoint_every"})


def resumable_step(ckpts: Checkpoints) -> tuple[int | None, dict]:
    """The newest intact last checkpoint and its metadata; sets corrupted newer ones aside.

    Each corrupted step moved to ``run_dir/corrupted/`` is logged as a warning.

    Args:
        ckpts: the run's checkpoints.

    Returns:
        ``(step, meta)``; ``(None, {})`` when the run has no checkpoint.

    Raises:
        CheckpointCorruptedError: there are checkpoints and none is intact (nothing is
            moved, so every rerun says so until the run directory is dealt with).
    """
    step, meta, bad = ckpts.latest_good(ckpts.last)
    if step is None and bad:
        raise CheckpointCorruptedError(
            f"train: no intact checkpoint in {ckpts.last.directory}: "
            + "; ".join(f"step {s}: {why}" for s, why in bad)
            + ". Start again in a new run directory (or delete these checkpoints)"
        )
    distributed.barrier("train:checkpoints-checked")
    for s, why in bad:
        dest = ckpts.set_aside(ckpts.last, s)
        log.warning(
            "train: checkpoint %s is corrupted (%s); moved to %s, resuming from step %d",
            ckpts.step_dir(ckpts.last, s),
            why,
            dest,
            step,
        )
    return step, meta or {}


def settle_best(
    ckpts: Checkpoints, start: int, best_val: float, best_step: int | None
) -> tuple[float, int | None]:
    """Make ``best/`` agree with a run resumed at ``start``.

    Best checkpoints after ``start`` belong to the lost part of the run (a crash after a
    "best" save and before the next "last" one); the resumed run writes them again. The
    best checkpoint the resumed state refers to is verified; if it is gone or corrupted the
    best so far is forgotten (logged), and the next validation sets a new one.

    Args:
        ckpts: the run's checkpoints.
        start: the step resumed (``0``: a fresh run).
        best_val: the best validation error recorded at ``start`` (``inf``: none).
        best_step: the step of that best checkpoint (``None``: none).

    Returns:
        ``(best_val, best_step)``, reset to ``(inf, None)`` when that checkpoint is unusable.
    """
    problem = ""
    if best_step is not None:
        if best_step not in ckpts.best.all_steps():
            problem = "missing"
        else:
            _, problem = ckpts.check(ckpts.best, best_step)
    distributed.barrier("train:best-checked")
    for s in ckpts.best.all_steps():
        if s > start:
            ckpts.discard(ckpts.best, s)
    if problem:
        where = ckpts.step_dir(ckpts.best, best_step)
        if problem != "missing":
            where = ckpts.set_aside(ckpts.best, best_step)
        log.warning(
            "train: the best checkpoint of step %d is unusable (%s; see %s): the best model "
            "so far is forgotten, the next validation sets a new one",
            best_step,
            problem,
            where,
        )
        best_val, best_step = math.inf, None
    distributed.barrier("train:best-settled")
    ckpts.reload()
    ckpts.prune_best()  # what a crash kept from the pruning after the last save
    return best_val, best_step


def spec_record(spec: ForecasterSpec) -> dict[str, Any]:
    """What a checkpoint must share with the forecaster resuming it (no provenance).

    Args:
        spec: the forecaster's spec.

    Returns:
        ``spec.to_dict()`` without ``provenance``, as JSON would give it back.
    """
    d = spec.to_dict()
    d.pop("provenance")
    return json_value(d)


def json_value(obj: Any) -> Any:
    """``obj`` as read back from JSON (tuples become lists), so records compare equal.

    Raises:
        TypeError: ``obj`` holds something JSON cannot encode.
    """
    return json.loads(json.dumps(obj))


def changed_settings(
    meta: Mapping[str, Any],
    config: Mapping[str, Any],
    spec: Mapping[str, Any],
    run_dir: Path,
) -> dict[str, list]:
    """``{key: [checkpoint's, now]}`` for each setting that differs from the checkpoint's.

    Keys are dotted (``learning_rate``, ``spec.model_kwargs.width``). Checkpoints written
    before settings were recorded in them are compared with ``train_config.json``. The
    keys of :data:`RESUME_FREE_KEYS` are left out.

    Args:
        meta: the checkpoint's metadata (``config`` and ``spec`` records, when present).
        config: the :meth:`TrainConfig.to_dict` record of the run resuming.
        spec: the :func:`spec_record` of the forecaster resuming.
        run_dir: the run directory (for ``train_config.json``).

    Returns:
        The differing settings (empty: the same run).

    Raises:
        ValueError: ``train_config.json`` is not valid JSON (naming the file).
    """
    old_config = meta.get("config")
    if old_config is None and (run_dir / "train_config.json").is_file():
        try:
            old_config = json.loads((run_dir / "train_config.json").read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{run_dir / 'train_config.json'}: invalid JSON ({e})") from None
    out = {}
    if old_config is not None:
        out.update(_diff(old_config, config))
    if meta.get("spec") is not None:
        out.update(_diff(meta["spec"], spec, "spec."))
    return {k: v for k, v in out.items() if k not in RESUME_FREE_KEYS}


def _diff(old: Any, new: Any, prefix: str = "") -> dict[str, list]:
    """``{dotted key: [old, new]}`` of the leaves that differ (absent: ``"<absent>"``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = {}
        for k in sorted(set(old) | set(new)):
            a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
            out.update(_diff(a, b, f"{prefix}{k}."))
        return out
    return {} if old == new else {prefix.rstrip("."): [old, new]}
