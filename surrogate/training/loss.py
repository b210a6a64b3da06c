"""The rollout loss: mean squared error of ``k`` autoregressive steps.

Each variable is measured in units of the standard deviation of its one-step change (the
scale of what the network predicts, GraphCast-style, so an untrained network starts near 1
whatever ``dt``)::

    L = 1/k sum_j mean(((F^j(x) - y_j) / sigma_delta)^2)

with backpropagation through all ``k`` steps, or, with ``pushforward``, through the last
step only (the first ``k - 1`` are run without gradient; Brandstetter et al. 2022).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from surrogate.forecaster import Forecaster

Array = jax.Array


def rollout_loss(
    params: nnx.State,
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
        params: network state being trained (``nnx.State``, float32).
        forecaster: supplies graph, normalisation and history (its own params unused).
        inputs: ``(B, history, C, *spatial)`` input frames.
        targets: ``(B, >= rollout_steps, C, *spatial)`` the frames that follow.
        key: PRNG key for input noise.
        rollout_steps: ``k``, the autoregressive steps scored (static, >= 1).
        pushforward: backpropagate through the last of the ``k`` steps only.
        input_noise_std: std of the Gaussian noise added to ``inputs``, in units of each
            variable's state std (``0``: none).

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
        nxt = forecaster.advance_windows(window, params)
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
