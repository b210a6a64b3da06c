"""The compiled pieces of a training step: optimizer, train step, rollout validation.

Optional Gaussian input noise (in units of sigma_state), global gradient-norm clipping,
AdamW with linear warmup and cosine decay; parameters stay float32 whatever the forecaster
computes in.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import optax

from datasets.plumbing import map_rows
from surrogate import distributed
from surrogate.forecaster import Forecaster
from surrogate.training.config import TrainConfig
from surrogate.training.loss import rollout_loss

Array = jax.Array


def make_optimizer(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with warmup + cosine decay, behind optional global-norm clipping.

    Args:
        cfg: supplies ``learning_rate`` (peak), ``warmup_steps``, ``num_steps`` (decay
            length), ``end_learning_rate_factor``, ``weight_decay`` and ``grad_clip_norm``
            (``0``: no clipping).

    Returns:
        ``(optimizer, schedule)``: the optax transformation and its learning rate as a
        function of the 0-based step.
    """
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


def make_train_step(
    forecaster: Forecaster,
    optimizer: optax.GradientTransformation,
    cfg: TrainConfig,
    rollout_steps: int,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[..., tuple[object, optax.OptState, Array, Array]]:
    """Jitted pure step ``(params, opt_state, inputs, targets, key) -> (params, opt_state, loss, gnorm)``.

    With ``mesh`` (axis ``"data"``) the loss and gradients are computed per device on its
    rows of the batch (``jax.shard_map``) and averaged over the devices (``pmean``, an
    all-reduce); the optimizer update then runs replicated. Equal row counts per device
    make this the gradient of the global mean loss. Input noise is drawn per device from
    ``fold_in(key, device index)``. (Sharding annotations alone would let XLA's
    partitioner all-gather the batch before every FFT, as in AFNO or an FFT-based FNO.)

    Args:
        forecaster: the forecaster being trained (graph, normalisation, history).
        optimizer: from :func:`make_optimizer`.
        cfg: supplies ``pushforward`` and ``input_noise_std`` of the loss.
        rollout_steps: ``k`` of the rollout loss (static: one compiled step per ``k``).
        mesh: data-parallel mesh with axis ``"data"`` (``None``: one device).

    Returns:
        The step. It donates ``params`` and ``opt_state``; ``inputs`` is
        ``(B, history, C, *spatial)``, ``targets`` ``(B, >= rollout_steps, C, *spatial)``
        (``B`` divisible by the mesh size), ``key`` the step's noise key; ``loss`` and
        ``gnorm`` (global gradient norm before clipping) are float32 scalars.
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

        loss_and_grads = map_rows(local, mesh, (P(), P(axis), P(axis), P()), P())

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, inputs, targets, key):
        loss, grads = loss_and_grads(params, inputs, targets, key)
        # optax's Adam raises a float decay to an int32 step count: standard promotion,
        # whatever mode the caller runs in (the test suite runs strict).
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, opt_state, loss, optax.tree.norm(grads)

    return step


def make_validation(forecaster: Forecaster, rollout_steps: int) -> Callable[..., Array]:
    """Jitted ``(params, inputs, targets) -> (rollout_steps,)`` normalised RMSE per lead.

    Args:
        forecaster: supplies graph, history and the state std the errors are scaled by.
        rollout_steps: leads scored (static).

    Returns:
        The validation: ``inputs`` ``(B, history, C, *spatial)``, ``targets``
        ``(B, >= rollout_steps, C, *spatial)``; the RMSE at each lead in units of the
        state std, averaged over batch, variables and space.
    """

    @jax.jit
    def evaluate(params, inputs, targets):
        c = inputs.shape[2]
        std = forecaster.normalization.state_std.reshape(c, *(1,) * (inputs.ndim - 3))

        def body(window, target):
            nxt = forecaster.advance_windows(window, params)
            err = jnp.sqrt(jnp.mean(jnp.square((nxt - target) / std)))
            return jnp.concatenate([window[:, 1:], nxt[:, None]], axis=1), err

        _, errs = jax.lax.scan(body, inputs, jnp.moveaxis(targets[:, :rollout_steps], 1, 0))
        return errs

    return evaluate
