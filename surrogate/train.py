"""Rollout training of forecasters with optax, orbax checkpoints and exact resume.

The loss is the mean squared error over ``k`` autoregressive steps, each variable in
units of the standard deviation of its one-step change (the scale of what the network
predicts, GraphCast-style, so an untrained network starts near 1 whatever ``dt``)::

    L = 1/k sum_j mean(((F^j(x) - y_j) / sigma_delta)^2)

with backpropagation through all ``k`` steps, or, with ``pushforward``, through the last
step only (the first ``k - 1`` are run without gradient; Brandstetter et al. 2022). ``k``
grows on a curriculum. Optional Gaussian input noise (in units of sigma_state), global
gradient-norm clipping, AdamW with linear warmup and cosine decay, optional bfloat16
compute (parameters stay float32).

Exactness: the batch at step ``s`` is a pure function of ``(seed, s)`` (the loader), the
noise key is ``fold_in(key(seed), s)``, and a checkpoint holds parameters, optimizer state
and step; resuming from a checkpoint replays the identical computation, so N straight
steps and k steps + kill + resume to N give bitwise-identical parameters and losses on CPU.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from surrogate import distributed
from surrogate.forecaster import Forecaster

Array = jax.Array


class TrainingDivergedError(FloatingPointError):
    """The training loss or the parameters became non-finite."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (every field is a keyword of the config node).

    Attributes:
        num_steps: optimizer steps in total.
        batch_size: windows per step (taken from the loader; recorded for provenance).
        learning_rate: peak learning rate after warmup.
        end_learning_rate_factor: final learning rate as a fraction of the peak.
        warmup_steps: linear warmup length.
        weight_decay: AdamW decoupled weight decay.
        grad_clip_norm: global gradient-norm clip (``0`` disables).
        rollout_schedule: curriculum as ``[[step, k], ...]``: from ``step`` on, train
            on ``k``-step rollouts. Must start at step 0.
        pushforward: gradient through the last rollout step only.
        input_noise_std: Gaussian noise added to inputs, in units of the state std.
        compute_dtype: ``"float32"`` or ``"bfloat16"``.
        log_every: steps between metric records (and host syncs).
        checkpoint_every: steps between checkpoints (a multiple of ``log_every``).
        validate_every: steps between rollout validations (a multiple of ``log_every``;
            ``0`` disables).
        val_rollout_steps: rollout length of the validation.
        val_batches: number of validation batches.
        keep_checkpoints: how many recent checkpoints to keep.
        history: input frames per forecast (the forecaster's history).
        seed: seeds parameter init, batch order and noise.
    """

    num_steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    end_learning_rate_factor: float = 0.01
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip_norm: float = 1.0
    rollout_schedule: tuple[tuple[int, int], ...] = ((0, 1),)
    pushforward: bool = False
    input_noise_std: float = 0.0
    compute_dtype: str = "float32"
    log_every: int = 10
    checkpoint_every: int = 200
    validate_every: int = 200
    val_rollout_steps: int = 10
    val_batches: int = 4
    keep_checkpoints: int = 2
    history: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        sched = tuple((int(s), int(k)) for s, k in self.rollout_schedule)
        object.__setattr__(self, "rollout_schedule", sched)
        for name in (
            "num_steps",
            "batch_size",
            "log_every",
            "keep_checkpoints",
            "val_batches",
            "history",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"TrainConfig: learning_rate must be > 0, got {self.learning_rate}")
        if not sched or sched[0][0] != 0:
            raise ValueError(
                f"TrainConfig: rollout_schedule must start at step 0, got {list(sched)}"
            )
        if any(k < 1 for _, k in sched) or any(
            b[0] <= a[0] for a, b in zip(sched, sched[1:], strict=False)
        ):
            raise ValueError(
                "TrainConfig: rollout_schedule needs increasing steps and k >= 1, "
                f"got {list(sched)}"
            )
        for name in ("checkpoint_every", "validate_every"):
            v = int(getattr(self, name))
            if v < 0 or (v and v % self.log_every):
                raise ValueError(
                    f"TrainConfig: {name}={v} must be 0 or a multiple of log_every={self.log_every}"
                )
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(
                f"TrainConfig: compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}"
            )
        if self.input_noise_std < 0 or self.grad_clip_norm < 0 or self.warmup_steps < 0:
            raise ValueError(
                "TrainConfig: input_noise_std, grad_clip_norm, warmup_steps must be >= 0"
            )

    @property
    def max_rollout(self) -> int:
        return max(k for _, k in self.rollout_schedule)

    def rollout_at(self, step: int) -> int:
        """Curriculum: rollout length ``k`` used at ``step``."""
        k = self.rollout_schedule[0][1]
        for s, kk in self.rollout_schedule:
            if step >= s:
                k = kk
        return k

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rollout_schedule"] = [list(x) for x in self.rollout_schedule]
        return d


def make_optimizer(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with warmup + cosine decay, behind optional global-norm clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        decay_steps=max(cfg.num_steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.end_learning_rate_factor,
    )
    chain = []
    if cfg.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    chain.append(optax.adamw(schedule, weight_decay=cfg.weight_decay))
    return optax.chain(*chain), schedule


# ---- the loss ------------------------------------------------------------------------
def rollout_loss(
    params,
    forecaster: Forecaster,
    inputs: Array,
    targets: Array,
    key: Array,
    *,
    rollout_steps: int,
    pushforward: bool,
    input_noise_std: float,
) -> Array:
    """MSE (in units of the one-step-change std) of a ``rollout_steps``-step rollout.

    Args:
        params: network state being trained.
        forecaster: supplies graph, normalisation and history (its own params unused).
        inputs: ``(B, history, C, *spatial)`` input frames.
        targets: ``(B, >= rollout_steps, C, *spatial)`` the frames that follow.
        key: PRNG key for input noise.

    Returns:
        Scalar loss (float32).
    """
    c = inputs.shape[2]
    spatial = (1,) * (inputs.ndim - 3)
    norm = forecaster.normalization
    std = norm.delta_std.reshape(c, *spatial).astype(inputs.dtype)
    if input_noise_std > 0:
        state_std = norm.state_std.reshape(c, *spatial).astype(inputs.dtype)
        noise = jax.random.normal(key, inputs.shape, inputs.dtype)
        inputs = inputs + input_noise_std * state_std * noise

    def advance(window):
        nxt = forecaster.step_batch(window, params)
        return jnp.concatenate([window[:, 1:], nxt[:, None]], axis=1), nxt

    def mse(pred, target):
        return jnp.mean(jnp.square((pred - target) / std).astype(jnp.float32))

    k = rollout_steps
    if pushforward and k > 1:

        def body_ng(window, _):
            window, _ = advance(window)
            return window, None

        window, _ = jax.lax.scan(body_ng, inputs, None, length=k - 1)
        window = jax.lax.stop_gradient(window)
        _, pred = advance(window)
        return mse(pred, targets[:, k - 1])

    def body(window, target):
        window, pred = advance(window)
        return window, mse(pred, target)

    _, losses = jax.lax.scan(body, inputs, jnp.moveaxis(targets[:, :k], 1, 0))
    return jnp.mean(losses)


def make_train_step(
    forecaster: Forecaster,
    optimizer,
    cfg: TrainConfig,
    rollout_steps: int,
    mesh: jax.sharding.Mesh | None = None,
):
    """Jitted pure step ``(params, opt_state, inputs, targets, key) -> (params, opt_state, loss, gnorm)``.

    With ``mesh`` (axis ``"data"``) the loss and gradients are computed per device on its
    rows of the batch (``jax.shard_map``) and averaged over the devices (``pmean``, an
    all-reduce); the optimizer update then runs replicated. Equal row counts per device
    make this the gradient of the global mean loss. Input noise is drawn per device from
    ``fold_in(key, device index)``. (Sharding annotations alone would let XLA's
    partitioner all-gather the batch before every FFT, as in AFNO or an FFT-based FNO.)
    """
    loss_fn = partial(
        rollout_loss,
        forecaster=forecaster,
        rollout_steps=rollout_steps,
        pushforward=cfg.pushforward,
        input_noise_std=cfg.input_noise_std,
    )

    def value_and_grad(params, inputs, targets, key):
        return jax.value_and_grad(lambda p: loss_fn(p, inputs=inputs, targets=targets, key=key))(
            params
        )

    loss_and_grads = value_and_grad

    if mesh is not None:
        from jax.flatten_util import ravel_pytree
        from jax.sharding import PartitionSpec as P

        axis = distributed.DATA_AXIS

        def local(params, inputs, targets, key):
            key = jax.random.fold_in(key, jax.lax.axis_index(axis))
            # One flat buffer: XLA:CPU's cross-process all-reduce (gloo) pays its latency
            # per operand, ~4 ms each here, so a tuple of 19 gradient leaves cost 70 ms.
            flat, unravel = ravel_pytree(value_and_grad(params, inputs, targets, key))
            return unravel(jax.lax.pmean(flat, axis))

        loss_and_grads = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(axis), P(axis), P()),
            out_specs=P(),
            check_vma=False,
        )

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, inputs, targets, key):
        loss, grads = loss_and_grads(params, inputs, targets, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, optax.tree.norm(grads)

    return step


def make_validation(forecaster: Forecaster, rollout_steps: int):
    """Jitted ``(params, inputs, targets) -> (rollout_steps,)`` normalised RMSE per lead."""

    @jax.jit
    def evaluate(params, inputs, targets):
        c = inputs.shape[2]
        std = forecaster.normalization.state_std.reshape(c, *(1,) * (inputs.ndim - 3))

        def body(window, target):
            nxt = forecaster.step_batch(window, params)
            err = jnp.sqrt(jnp.mean(jnp.square((nxt - target) / std)))
            return jnp.concatenate([window[:, 1:], nxt[:, None]], axis=1), err

        _, errs = jax.lax.scan(body, inputs, jnp.moveaxis(targets[:, :rollout_steps], 1, 0))
        return errs

    return evaluate


# ---- checkpoints ---------------------------------------------------------------------
class _Checkpoints:
    """Orbax manager of the last checkpoints, plus the best one, under ``run_dir``."""

    def __init__(self, run_dir: Path, keep: int) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=True
        )
        self.last = ocp.CheckpointManager(run_dir / "checkpoints", options=opts)
        best_opts = ocp.CheckpointManagerOptions(
            max_to_keep=1, enable_async_checkpointing=False, create=True
        )
        self.best = ocp.CheckpointManager(run_dir / "best", options=best_opts)

    @staticmethod
    def _tree(params, opt_state) -> dict:
        leaves = jax.tree.leaves(opt_state)
        return {
            "params": jax.tree.map(np.asarray, nnx.to_pure_dict(params)),
            "opt_state": {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)},
        }

    def save(self, manager, step: int, params, opt_state, meta: dict) -> None:
        ocp = self._ocp
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(self._tree(params, opt_state)),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        manager.wait_until_finished()

    def restore(self, manager, params, opt_state, step: int | None = None):
        """Restore into the structures of ``params``/``opt_state``; returns (params, opt, meta)."""
        ocp = self._ocp
        step = manager.latest_step() if step is None else step
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype),
            self._tree(params, opt_state),
        )
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        state = out["state"]
        new_params = jax.tree.map(lambda x: x, params)
        nnx.replace_by_pure_dict(new_params, jax.tree.map(jnp.asarray, state["params"]))
        treedef = jax.tree.structure(opt_state)
        leaves = [jnp.asarray(state["opt_state"][k]) for k in sorted(state["opt_state"])]
        return new_params, jax.tree.unflatten(treedef, leaves), out["meta"]

    def close(self) -> None:
        self.last.close()
        self.best.close()


# ---- metrics log ---------------------------------------------------------------------
class MetricsLog:
    """Append-only JSONL + CSV metric log in the run directory; truncated on resume."""

    FIELDS = (
        "step",
        "loss",
        "grad_norm",
        "lr",
        "rollout_k",
        "val_nrmse",
        "samples_per_s",
        "wall_s",
    )

    def __init__(self, run_dir: Path, resume_step: int | None, *, write: bool = True) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        # Under jax.distributed only process 0 writes; the others keep records in memory.
        self.write = write
        records = self.read(run_dir)
        if resume_step is None:
            records = []
        else:
            records = [r for r in records if r["step"] <= resume_step]
        self.records = records
        self._tb = None
        if write:
            self._rewrite()
            self._tb = _tensorboard_writer(run_dir)

    @staticmethod
    def read(run_dir: str | os.PathLike) -> list[dict]:
        p = Path(run_dir) / "metrics.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line from a crash
        return out

    def _rewrite(self) -> None:
        tmp = self.jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        os.replace(tmp, self.jsonl)
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.records)

    def append(self, record: dict) -> None:
        self.records.append(record)
        if not self.write:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore").writerow(record)
        if self._tb is not None:
            for k in ("loss", "grad_norm", "lr", "val_nrmse"):
                if record.get(k) is not None:
                    self._tb.add_scalar(k, record[k], record["step"])


def _tensorboard_writer(run_dir: Path):
    """A ``tensorboardX`` writer when that package is installed, else ``None``."""
    try:
        from tensorboardX import SummaryWriter  # type: ignore[import-not-found]
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


# ---- the loop ------------------------------------------------------------------------
@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

    forecaster: Forecaster
    best_forecaster: Forecaster
    metrics: list[dict]
    step: int
    best_val: float
    run_dir: Path


def train(
    forecaster: Forecaster,
    loader,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    val_loader=None,
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
    on_step: Callable[[int], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> TrainResult:
    """Train ``forecaster`` on batches from ``loader``; checkpoint and resume in ``run_dir``.

    Args:
        forecaster: initial forecaster (its parameters are the starting point unless a
            checkpoint in ``run_dir`` is resumed).
        loader: object with ``batch(step) -> (inputs (B, h, C, *sp), targets (B, K, C, *sp))``
            with ``K >= cfg.max_rollout``, pure in ``step``. Under several processes a
            loader that also has ``window_indices(step)`` and ``batch(step, part=(i, p))``
            (:class:`datasets.WindowLoader`) reads only this process's rows.
        cfg: hyper-parameters.
        run_dir: directory for checkpoints (``checkpoints/``, ``best/``) and metrics.
        val_loader: like ``loader`` with ``K >= cfg.val_rollout_steps`` (optional).
        resume: continue from the latest checkpoint in ``run_dir`` when there is one;
            ``False`` refuses a ``run_dir`` that already holds checkpoints.
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
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    optimizer, schedule = make_optimizer(cfg)
    # Copy: the train step donates its parameter buffers, the caller keeps theirs.
    params = jax.tree.map(jnp.copy, forecaster.params)
    opt_state = optimizer.init(params)
    ckpts = _Checkpoints(run_dir, cfg.keep_checkpoints)
    start = 0
    best_val = math.inf
    if not resume and ckpts.last.latest_step() is not None:
        raise FileExistsError(
            f"train: {run_dir} holds checkpoints up to step {ckpts.last.latest_step()}; "
            "pass resume=True to continue that run, or use a new run_dir"
        )
    if resume and ckpts.last.latest_step() is not None:
        params, opt_state, meta = ckpts.restore(ckpts.last, params, opt_state)
        start = int(meta["step"])
        best_val = float(meta.get("best_val", math.inf))
    if mesh is not None:
        params, opt_state = distributed.replicate((params, opt_state), mesh)
    primary = jax.process_index() == 0
    log = MetricsLog(run_dir, start if start > 0 else None, write=primary)
    if primary:
        (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

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
                if validate is not None and cfg.validate_every and done % cfg.validate_every == 0:
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
                        log.append(rec)
                pending.clear()
                if bar is not None:
                    bar.update(done - bar.n)
                    bar.set_postfix(loss=f"{losses[-1]:.3e}", k=k, samples_s=f"{sps:.0f}")
                if val is not None and val < best_val:
                    best_val = val
                    _check_params_finite(params, done)
                    ckpts.save(
                        ckpts.best, done, params, opt_state, {"step": done, "best_val": best_val}
                    )
                if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == end:
                    _check_params_finite(params, done)
                    ckpts.save(
                        ckpts.last, done, params, opt_state, {"step": done, "best_val": best_val}
                    )
                if on_step is not None:
                    on_step(done)
    finally:
        if bar is not None:
            bar.close()
    final = forecaster.replace(params=params)
    best = final
    if ckpts.best.latest_step() is not None:
        bp, _, _ = ckpts.restore(ckpts.best, params, opt_state)
        if mesh is not None:
            bp = distributed.replicate(bp, mesh)
        best = forecaster.replace(params=bp)
    ckpts.close()
    return TrainResult(final, best, log.records, end, best_val, run_dir)


def _run_validation(validate, params, val_loader, cfg: TrainConfig, mesh=None) -> float:
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
    ok = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
    if not ok:
        raise TrainingDivergedError(
            f"non-finite parameters at step {step}; not checkpointing (the last good "
            "checkpoint is kept)"
        )


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)


def init_forecaster(spec, statistics, *, seed: int = 0) -> Forecaster:
    """A freshly initialised forecaster for ``spec`` with normalisation from ``statistics``."""
    from surrogate.forecaster import Normalization, build_network

    network = build_network(spec, nnx.Rngs(seed))
    return Forecaster.create(spec, network, Normalization.from_statistics(statistics))


__all__: Sequence[str] = [
    "MetricsLog",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "init_forecaster",
    "make_optimizer",
    "rollout_loss",
    "train",
]
