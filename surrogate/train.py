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
steps and k steps + kill + resume to N give bitwise-identical parameters and losses on CPU,
whatever the point of the kill (between a "best" and a "last" save included).

Integrity: each checkpoint step carries the sha256 of its files, verified before it is
restored (a corrupted step is set aside and the previous one used); a run directory is
locked while it trains; a resume with other settings or another forecaster is refused
unless forced, and a forced change is recorded.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from surrogate import distributed
from surrogate.bundle import checksum_problems, file_checksums, shape_problems
from surrogate.forecaster import Forecaster, ForecasterSpec

Array = jax.Array
log = logging.getLogger("surrogate.train")


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
            on ``k``-step rollouts. Must start at step 0. A ``step`` given as a float
            strictly between 0 and 1 is a fraction of ``num_steps`` (``[[0, 1], [0.5, 2]]``:
            two-step rollouts for the second half), so the curriculum follows a changed
            ``num_steps``; integers are absolute steps. Stored resolved to absolute steps.
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
    rollout_schedule: tuple[tuple[int | float, int], ...] = ((0, 1),)
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
        sched = tuple(
            (_schedule_step(s, self.num_steps), _schedule_k(k)) for s, k in self.rollout_schedule
        )
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


def _schedule_step(step: Any, num_steps: int) -> int:
    """A curriculum switch point: an absolute step, or a fraction of ``num_steps`` in (0, 1)."""
    if isinstance(step, bool) or not isinstance(step, int | float | np.integer | np.floating):
        raise ValueError(
            f"TrainConfig: rollout_schedule steps must be integers or fractions in (0, 1), "
            f"got {step!r}"
        )
    if isinstance(step, float | np.floating) and not float(step).is_integer():
        if not 0.0 < step < 1.0:
            raise ValueError(
                f"TrainConfig: rollout_schedule step {step!r} is neither an integer step nor a "
                "fraction of num_steps in (0, 1)"
            )
        return round(float(step) * int(num_steps))
    return int(step)


def _schedule_k(k: Any) -> int:
    if (
        isinstance(k, bool)
        or not isinstance(k, int | np.integer)
        and not (isinstance(k, float) and k.is_integer())
    ):
        raise ValueError(f"TrainConfig: rollout_schedule lengths k must be integers, got {k!r}")
    return int(k)


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


# ---- the run directory lock -----------------------------------------------------------
class RunLockedError(RuntimeError):
    """Another process holds the lock of a run directory."""


LOCK_NAME = ".lock"
_held_locks: dict[Path, int] = {}  # run directories this process holds, with depth


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, *, enabled: bool = True) -> Iterator[Path]:
    """Hold an exclusive, non-blocking ``flock`` on ``run_dir/.lock`` for the block.

    The lock file records the holder's pid for the message of the process refused. The
    kernel drops the lock when its holder dies, so the lock file of a killed run is taken
    over, never stale. Re-entrant within a process (a pipeline holding its run directory
    may call stages that take the same lock).

    Args:
        run_dir: the directory to lock (created if needed).
        enabled: ``False`` makes this a no-op (processes other than 0 of a job, which
            share process 0's run directory).

    Raises:
        RunLockedError: another process holds the lock; names the directory and the pid.
    """
    run_dir = Path(run_dir).absolute()
    if not enabled:
        yield run_dir / LOCK_NAME
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    path = run_dir / LOCK_NAME
    if key in _held_locks:
        _held_locks[key] += 1
        try:
            yield path
        finally:
            _held_locks[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = path.read_text().strip() or "unknown"
            raise RunLockedError(
                f"run directory {run_dir} is in use by process {holder} (lock {path} is "
                "held); wait for that run to finish or use another run directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held_locks[key] = 1
        try:
            yield path
        finally:
            del _held_locks[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---- checkpoints ---------------------------------------------------------------------
class CheckpointCorruptedError(RuntimeError):
    """No checkpoint of a run directory passes its checksum and metadata checks."""


class _Checkpoints:
    """Orbax managers of the last checkpoints and of the best ones, under ``run_dir``.

    Every step directory gets a sidecar ``sha256.json`` (the sha256 of each of its files),
    written once orbax has committed the step; restoring verifies it. A step without a
    sidecar (older runs, or a crash between the commit and the sidecar) is restored
    unverified, with a warning: orbax's commit is atomic, so it is complete.

    ``best/`` keeps, besides newer ones, the newest best step at or before the oldest
    retained last checkpoint, so whichever last checkpoint a run resumes from, the best
    model as of that step is still there (orbax's own ``max_to_keep`` would delete it).
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
        leaves = jax.tree.leaves(opt_state)
        return {
            "params": jax.tree.map(np.asarray, nnx.to_pure_dict(params)),
            "opt_state": {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)},
        }

    @staticmethod
    def step_dir(manager, step: int) -> Path:
        return Path(manager.directory) / str(step)

    def save(self, manager, step: int, params, opt_state, meta: dict) -> None:
        self._commit(manager, step, self._tree(params, opt_state), meta)
        if self.primary:
            self._write_sidecar(manager, step)

    def _commit(self, manager, step: int, tree: dict, meta: dict) -> None:
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
        d = self.step_dir(manager, step)
        record = {"sha256": file_checksums(d, exclude=(self.SIDECAR,))}
        tmp = d / f".{self.SIDECAR}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / self.SIDECAR)

    def problems(self, manager, step: int) -> list[str]:
        """What is wrong with a step's files (empty: intact, or unverifiable)."""
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
        """``(meta, "")`` for a usable step, ``(None, what is wrong)`` otherwise."""
        problems = self.problems(manager, step)
        if problems:
            return None, "; ".join(problems)
        try:
            return self.read_meta(manager, step), ""
        except ValueError as e:
            return None, str(e)

    def latest_good(self, manager) -> tuple[int | None, dict | None, list[tuple[int, str]]]:
        """Newest usable step with its metadata, and the newer unusable ones with why."""
        bad = []
        for step in sorted(manager.all_steps(), reverse=True):
            meta, problem = self.check(manager, step)
            if meta is not None:
                return step, meta, bad
            bad.append((step, problem))
        return None, None, bad

    def set_aside(self, manager, step: int) -> Path:
        """Move a corrupted step out of its manager into ``run_dir/corrupted/`` (kept for
        inspection; a resumed run will write that step again)."""
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
        manager.delete(step)

    def restore(self, manager, step: int, params, opt_state):
        """Restore step ``step`` into the structures of ``params``/``opt_state``.

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


# Settings that change no parameter and no metric: a resume may change them freely.
_RESUME_FREE_KEYS = frozenset({"keep_checkpoints", "checkpoint_every"})


def train(
    forecaster: Forecaster,
    loader,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    val_loader=None,
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
        ckpts = _Checkpoints(run_dir, cfg.keep_checkpoints, primary=primary)
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
    ckpts: _Checkpoints,
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
    config_record = _json_value(cfg.to_dict())
    spec_record = _spec_record(forecaster.spec)
    start, best_val, best_step, changes = 0, math.inf, None, []
    if not resume and ckpts.last.latest_step() is not None:
        raise FileExistsError(
            f"train: {run_dir} holds checkpoints up to step {ckpts.last.latest_step()}; "
            "pass resume=True to continue that run, or use a new run_dir"
        )
    resumed, meta = _resumable_step(ckpts)
    if resumed is not None:
        changes = list(meta.get("config_changes", []))
        changed = _changed_settings(meta, config_record, spec_record, run_dir)
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
    best_val, best_step = _settle_best(ckpts, start, best_val, best_step)
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
            "spec": spec_record,
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


def _resumable_step(ckpts: _Checkpoints) -> tuple[int | None, dict]:
    """The newest intact last checkpoint and its metadata; sets corrupted newer ones aside.

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


def _settle_best(
    ckpts: _Checkpoints, start: int, best_val: float, best_step: int | None
) -> tuple[float, int | None]:
    """Make ``best/`` agree with a run resumed at ``start``.

    Best checkpoints after ``start`` belong to the lost part of the run (a crash after a
    "best" save and before the next "last" one); the resumed run writes them again. The
    best checkpoint the resumed state refers to is verified; if it is gone or corrupted the
    best so far is forgotten (logged), and the next validation sets a new one.
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


def _spec_record(spec: ForecasterSpec) -> dict[str, Any]:
    """What a checkpoint must share with the forecaster resuming it (no provenance)."""
    d = spec.to_dict()
    d.pop("provenance")
    return _json_value(d)


def _json_value(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _changed_settings(
    meta: Mapping[str, Any],
    config: Mapping[str, Any],
    spec: Mapping[str, Any],
    run_dir: Path,
) -> dict[str, list]:
    """``{key: [checkpoint's, now]}`` for each setting that differs from the checkpoint's.

    Keys are dotted (``learning_rate``, ``spec.model_kwargs.width``). Checkpoints written
    before settings were recorded in them are compared with ``train_config.json``.
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
    return {k: v for k, v in out.items() if k not in _RESUME_FREE_KEYS}


def _diff(old: Any, new: Any, prefix: str = "") -> dict[str, list]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = {}
        for k in sorted(set(old) | set(new)):
            a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
            out.update(_diff(a, b, f"{prefix}{k}."))
        return out
    return {} if old == new else {prefix.rstrip("."): [old, new]}


def _training_record(cfg, end, best_step, best_val, changes) -> dict[str, Any]:
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
    tmp = run_dir / ".training.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, run_dir / "training.json")


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
    from datasets.progress import progress_bar

    return progress_bar(total=total, initial=start, desc="train", unit="step")


def init_forecaster(spec, statistics, *, seed: int = 0) -> Forecaster:
    """A freshly initialised forecaster for ``spec`` with normalisation from ``statistics``."""
    from surrogate.forecaster import Normalization, build_network

    network = build_network(spec, nnx.Rngs(seed))
    return Forecaster.create(spec, network, Normalization.from_statistics(statistics))


__all__: Sequence[str] = [
    "CheckpointCorruptedError",
    "MetricsLog",
    "RunLockedError",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "init_forecaster",
    "make_optimizer",
    "rollout_loss",
    "run_lock",
    "train",
]
