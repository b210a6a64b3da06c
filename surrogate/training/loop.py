"""The training loop: :func:`train` a forecaster on rollouts, checkpointing and resuming.

``k`` grows on a curriculum (:class:`~surrogate.training.config.TrainConfig`); the loss is
:func:`~surrogate.training.loss.rollout_loss`.

Exactness: the batch at step ``s`` is a pure function of ``(seed, s)`` (the loader), the
noise key is ``fold_in(key(seed), s)``, and a checkpoint holds parameters, optimizer state
and step; resuming from a checkpoint replays the identical computation, so N straight
steps and k steps + kill + resume to N give bitwise-identical parameters and losses on CPU,
whatever the point of the kill (between a "best" and a "last" save included).

Integrity: a run directory is locked while it trains
(:func:`~surrogate.training.lock.run_lock`); checkpoints are verified before they are
restored (:mod:`surrogate.training.checkpoints`, :mod:`surrogate.training.resume`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from surrogate import distributed
from surrogate.forecaster import Forecaster, ForecasterSpec
from surrogate.training.checkpoints import Checkpoints
from surrogate.training.config import TrainConfig
from surrogate.training.lock import run_lock
from surrogate.training.metrics_log import MetricsLog
from surrogate.training.resume import (
    changed_settings,
    json_value,
    resumable_step,
    settle_best,
    spec_record,
)
from surrogate.training.step import make_optimizer, make_train_step, make_validation

Array = jax.Array
# One logger for all of training: users filter on "surrogate.train".
log = logging.getLogger("surrogate.train")


class TrainingDivergedError(FloatingPointError):
    """The training loss or the parameters became non-finite."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        forecaster: the final parameters (step ``step``).
        best_forecaster: the parameters of the best validation (the final ones without
            validation); this is the model to ship.
        metrics: the metric records of the whole run.
        step: the last step trained.
        best_val: the best validation error (``inf`` without validation).
        run_dir: the run directory.
        best_step: the step whose parameters ``best_forecaster`` holds.
        config_changes: settings changed by forced resumes, ``[{"step", "changes"}]``.
    """

    forecaster: Forecaster
    best_forecaster: Forecaster
    metrics: list[dict]
    step: int
    best_val: float
    run_dir: Path
    best_step: int = 0
    config_changes: list[dict] = dataclasses.field(default_factory=list)


def train(
    forecaster: Forecaster,
    loader: Any,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    val_loader: Any = None,
    resume: bool | str = True,
    progress: bool = True,
    stop_at: int | None = None,
    on_step: Callable[[int], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> TrainResult:
    """Train ``forecaster`` on batches from ``loader``; checkpoint and resume in ``run_dir``.

    Validation runs every ``cfg.validate_every`` steps and at step ``cfg.num_steps``, so
    the final parameters can be the shipped best ones. A resume is bitwise identical to a
    straight run whatever the point at which the previous run was killed.

    Args:
        forecaster: initial forecaster (its parameters are the starting point unless a
            checkpoint in ``run_dir`` is resumed).
        loader: object with ``batch(step) -> (inputs (B, h, C, *sp), targets (B, K, C, *sp))``
            with ``K >= cfg.max_rollout``, pure in ``step``. Under several processes a
            loader that also has ``window_indices(step)`` and ``batch(step, part=(i, p))``
            (:class:`datasets.WindowLoader`) reads only this process's rows.
        cfg: hyper-parameters.
        run_dir: directory for checkpoints (``checkpoints/``, ``best/``), metrics,
            ``train_config.json`` and ``training.json`` (resumes, changes, best step).
            Locked while training (:func:`run_lock`).
        val_loader: like ``loader`` with ``K >= cfg.val_rollout_steps`` (optional).
        resume: ``True``: continue from the newest intact checkpoint in ``run_dir`` when
            there is one (a corrupted one is set aside with a logged warning), refusing a
            configuration or forecaster different from the checkpoint's; ``"force"``:
            continue with the new settings anyway, recording the change in
            ``training.json``, in the checkpoints and in the forecasters' provenance;
            ``False``: refuse a ``run_dir`` that already holds checkpoints.
        progress: show a progress bar.
        stop_at: stop (after checkpointing) at this step, as if killed (for tests and
            time-limited jobs).
        on_step: callback after each logged step (used by tests to simulate a crash).
        mesh: data parallelism (see :mod:`surrogate.distributed`): a mesh with axis
            ``"data"``; parameters and optimizer state are replicated, each batch is
            split on its leading axis (its size must divide by the device count), each
            device computes its rows' gradients (``jax.shard_map``) and one all-reduce
            averages them. Under several processes every process calls ``train`` with
            the same arguments and contributes its rows of each batch.
            Checkpoints hold plain arrays, so a run resumes on any device count.
            ``None`` (default): one device, as before.

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDivergedError: a non-finite loss; the last good checkpoint is kept.
        FileExistsError: ``resume=False`` and ``run_dir`` already holds checkpoints.
        RunLockedError: another process is training in ``run_dir``.
        ValueError: resuming with another configuration or forecaster (naming the
            checkpoint and each changed key) without ``resume="force"``, or a checkpoint
            whose arrays do not fit the forecaster.
        CheckpointCorruptedError: no checkpoint in ``run_dir`` is intact.
    """
    if resume not in (True, False, "force"):
        raise ValueError(f"train: resume must be True, False or 'force', got {resume!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0
    with run_lock(run_dir, enabled=primary):
        ckpts = Checkpoints(run_dir, cfg.keep_checkpoints, primary=primary)
        try:
            return _train(
                forecaster,
                loader,
                cfg,
                run_dir,
                ckpts,
                val_loader=val_loader,
                resume=resume,
                progress=progress,
                stop_at=stop_at,
                on_step=on_step,
                mesh=mesh,
                primary=primary,
            )
        finally:
            ckpts.close()


def _train(
    forecaster: Forecaster,
    loader,
    cfg: TrainConfig,
    run_dir: Path,
    ckpts: Checkpoints,
    *,
    val_loader,
    resume: bool | str,
    progress: bool,
    stop_at: int | None,
    on_step: Callable[[int], None] | None,
    mesh: jax.sharding.Mesh | None,
    primary: bool,
) -> TrainResult:
    """:func:`train` inside the run directory's lock."""
    _warn_unreached_schedule(cfg)
    config_record = json_value(cfg.to_dict())
    forecaster_record = spec_record(forecaster.spec)
    start, best_val, best_step, changes = 0, math.inf, None, []
    if not resume and ckpts.last.latest_step() is not None:
        raise FileExistsError(
            f"train: {run_dir} holds checkpoints up to step {ckpts.last.latest_step()}; "
            "pass resume=True to continue that run, or use a new run_dir"
        )
    resumed, meta = resumable_step(ckpts)
    if resumed is not None:
        changes = list(meta.get("config_changes", []))
        changed = changed_settings(meta, config_record, forecaster_record, run_dir)
        if changed and resume != "force":
            where = ckpts.step_dir(ckpts.last, resumed)
            listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ValueError(
                f"train: checkpoint {where} (step {resumed}) was written with other settings: "
                f"{listed}. Resume with the original settings, use a new run directory, or "
                "pass resume='force' to continue with the new ones (the change is recorded)"
            )
        if changed:
            log.warning(
                "train: resuming step %d with changed settings (forced): %s", resumed, changed
            )
            changes.append({"step": resumed, "changes": changed})
        start = resumed
        best_val = float(meta.get("best_val", math.inf))
        best_step = meta.get("best_step")
        if best_step is None and "best_step" not in meta and math.isfinite(best_val):
            # written before best_step was recorded: the newest best at or before `step`
            best_step = max((s for s in ckpts.best.all_steps() if s <= start), default=None)
    best_val, best_step = settle_best(ckpts, start, best_val, best_step)
    optimizer, schedule = make_optimizer(cfg)
    # Copy: the train step donates its parameter buffers, the caller keeps theirs.
    params = jax.tree.map(jnp.copy, forecaster.params)
    opt_state = optimizer.init(params)
    if resumed is not None:
        params, opt_state = ckpts.restore(ckpts.last, start, params, opt_state)
    if mesh is not None:
        params, opt_state = distributed.replicate((params, opt_state), mesh)
    log_ = MetricsLog(run_dir, start if start > 0 else None, write=primary)
    if primary:
        (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        _write_training_record(run_dir, cfg, start, None, best_step, best_val, changes)

    def meta_at(done: int) -> dict:
        return {
            "step": done,
            "best_val": best_val,
            "best_step": best_step,
            "config": config_record,
            "spec": forecaster_record,
            "config_changes": changes,
        }

    steps_cache: dict[int, Any] = {}
    validate = (
        make_validation(forecaster, cfg.val_rollout_steps) if val_loader is not None else None
    )
    base_key = jax.random.key(cfg.seed)
    # Several processes and a loader that can read a share of a batch (WindowLoader):
    # each reads only its own rows. Other loaders give the whole batch everywhere.
    own_rows = mesh is not None and jax.process_count() > 1 and hasattr(loader, "window_indices")
    end = cfg.num_steps if stop_at is None else min(stop_at, cfg.num_steps)
    pending: list[tuple[int, Array, Array]] = []
    bar = _progress(progress, start, cfg.num_steps)
    t_last, n_last = time.perf_counter(), 0
    try:
        for step in range(start, end):
            k = cfg.rollout_at(step)
            if k not in steps_cache:
                steps_cache[k] = make_train_step(forecaster, optimizer, cfg, k, mesh)
            key = jax.random.fold_in(base_key, step)
            if own_rows:  # read only this process's rows
                rows = len(loader.window_indices(step))
                part = (jax.process_index(), jax.process_count())
                local = loader.batch(step, part=part)
                inputs, targets = distributed.from_process_rows(local, rows, mesh)
            else:
                inputs, targets = loader.batch(step)
                if mesh is not None:
                    inputs, targets = distributed.shard_batch((inputs, targets), mesh)
            if mesh is not None:
                key = distributed.replicate(key, mesh)
            params, opt_state, loss, gnorm = steps_cache[k](params, opt_state, inputs, targets, key)
            pending.append((step, loss, gnorm))
            n_last += inputs.shape[0]
            done = step + 1
            if done % cfg.log_every == 0 or done == end:
                losses = np.asarray(jax.device_get([p[1] for p in pending]), dtype=np.float64)
                gnorms = np.asarray(jax.device_get([p[2] for p in pending]), dtype=np.float64)
                bad = np.flatnonzero(~np.isfinite(losses))
                if bad.size:
                    s = pending[int(bad[0])][0]
                    last_good = ckpts.last.latest_step()
                    raise TrainingDivergedError(
                        f"non-finite training loss at step {s} (rollout k={cfg.rollout_at(s)}, "
                        f"learning rate {float(schedule(s)):.3g}); last good checkpoint: "
                        f"{run_dir / 'checkpoints'} step {last_good}. Try a lower learning_rate, "
                        "a smaller grad_clip_norm or a shorter rollout curriculum."
                    )
                now = time.perf_counter()
                sps = n_last / max(now - t_last, 1e-9)
                t_last, n_last = now, 0
                val = None
                # also at the last step, so the final parameters can be the best ones
                if (
                    validate is not None
                    and cfg.validate_every
                    and (done % cfg.validate_every == 0 or done == cfg.num_steps)
                ):
                    val = _run_validation(validate, params, val_loader, cfg, mesh)
                for (s, _, _), lo, gn in zip(pending, losses, gnorms, strict=True):
                    if (s + 1) % cfg.log_every == 0 or s + 1 == end:
                        rec = {
                            "step": s + 1,
                            "loss": float(lo),
                            "grad_norm": float(gn),
                            "lr": float(schedule(s)),
                            "rollout_k": cfg.rollout_at(s),
                            "val_nrmse": val if s + 1 == done else None,
                            "samples_per_s": sps,
                            "wall_s": now,
                        }
                        log_.append(rec)
                pending.clear()
                if bar is not None:
                    bar.update(done - bar.n)
                    bar.set_postfix(loss=f"{losses[-1]:.3e}", k=k, samples_s=f"{sps:.0f}")
                if val is not None and val < best_val:
                    best_val, best_step = val, done
                    _check_params_finite(params, done)
                    ckpts.save(ckpts.best, done, params, opt_state, meta_at(done))
                if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == end:
                    _check_params_finite(params, done)
                    ckpts.save(ckpts.last, done, params, opt_state, meta_at(done))
                    ckpts.prune_best()
                if on_step is not None:
                    on_step(done)
    finally:
        if bar is not None:
            bar.close()
    final = forecaster.replace(params=params)
    best = final
    if best_step is not None:
        bp, _ = ckpts.restore(ckpts.best, best_step, params, opt_state)
        if mesh is not None:
            bp = distributed.replicate(bp, mesh)
        best = forecaster.replace(params=bp)
    shipped = end if best_step is None else best_step
    if primary:
        _write_training_record(run_dir, cfg, start, end, shipped, best_val, changes)
    record = _training_record(cfg, end, shipped, best_val, changes)
    return TrainResult(
        _with_training_provenance(final, record, params_step=end),
        _with_training_provenance(best, record, params_step=shipped),
        log_.records,
        end,
        best_val,
        run_dir,
        best_step=shipped,
        config_changes=changes,
    )


def _training_record(cfg, end, best_step, best_val, changes) -> dict[str, Any]:
    """The training part of ``training.json`` and of the forecasters' provenance."""
    return {
        "num_steps": cfg.num_steps,
        "trained_steps": end,
        "best_step": best_step,
        "best_val": best_val if math.isfinite(best_val) else None,
        "config_changes": changes,
    }


def _write_training_record(run_dir, cfg, start, end, best_step, best_val, changes) -> None:
    """``training.json``: where this run resumed, settings changed, which step shipped."""
    record = {
        "resumed_from_step": start or None,
        **_training_record(cfg, end, best_step, best_val, changes),
    }
    from datasets.plumbing import atomic_write_text

    text = json.dumps(record, indent=2)
    atomic_write_text(run_dir / "training.json", text, fsync=False, sync_directory=False)


def _with_training_provenance(f: Forecaster, record: dict, *, params_step: int) -> Forecaster:
    """``f`` with ``provenance["training"]``: steps, shipped step, forced changes."""
    d = f.spec.to_dict()
    d["provenance"] = {**d["provenance"], "training": {**record, "params_step": params_step}}
    return f.replace(spec=ForecasterSpec.from_dict(d))


def _warn_unreached_schedule(cfg: TrainConfig) -> None:
    """Warn when a curriculum switch point lies at or beyond ``num_steps``."""
    late = [[s, k] for s, k in cfg.rollout_schedule if s >= cfg.num_steps]
    if late:
        trained = sorted({k for s, k in cfg.rollout_schedule if s < cfg.num_steps})
        log.warning(
            "train: rollout_schedule entries %s start at or after num_steps=%d and are never "
            "reached (switch points are absolute steps): this run trains rollouts k=%s only",
            late,
            cfg.num_steps,
            trained,
        )


def _run_validation(validate, params, val_loader, cfg: TrainConfig, mesh=None) -> float:
    """Mean normalised rollout RMSE over ``cfg.val_batches`` batches of ``val_loader``."""
    errs = []
    for i in range(cfg.val_batches):
        inputs, targets = val_loader.batch(i)
        if mesh is not None:
            whole = np.shape(inputs)[0] % mesh.size == 0
            place = distributed.shard_batch if whole else distributed.replicate
            inputs, targets = place((inputs, targets), mesh)
        errs.append(validate(params, inputs, targets))
    return float(np.mean(np.asarray(jax.device_get(errs))))


def _check_params_finite(params, step: int) -> None:
    """Refuse to checkpoint non-finite parameters (raises :class:`TrainingDivergedError`)."""
    ok = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
    if not ok:
        raise TrainingDivergedError(
            f"non-finite parameters at step {step}; not checkpointing (the last good "
            "checkpoint is kept)"
        )


def _progress(enabled: bool, start: int, total: int):
    """The training progress bar (``None`` when disabled)."""
    if not enabled:
        return None
    from datasets.progress import progress_bar

    return progress_bar(total=total, initial=start, desc="train", unit="step")


def init_forecaster(spec: ForecasterSpec, statistics: Any, *, seed: int = 0) -> Forecaster:
    """A freshly initialised forecaster for ``spec`` with normalisation from ``statistics``.

    Args:
        spec: network, variables, grid, ``dt`` and history of the forecaster.
        statistics: any object with ``state_mean``, ``state_std``, ``delta_mean`` and
            ``delta_std``, each of shape ``(C,)`` in the variables' units (e.g. a loader's
            ``statistics``).
        seed: seeds the parameter initialisation.

    Returns:
        The forecaster, its parameters float32.

    Raises:
        ValueError: a statistic without shape ``(C,)`` or with non-finite entries, or an
            unknown ``spec.model_name`` (naming what is wrong).
    """
    from surrogate.forecaster import Normalization, build_network

    network = build_network(spec, nnx.Rngs(seed))
    return Forecaster.create(spec, network, Normalization.from_statistics(statistics))
