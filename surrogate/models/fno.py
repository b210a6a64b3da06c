"""Fourier neural operator (Li et al., "Fourier Neural Operator for Parametric PDEs", ICLR 2021).

    h_0     = L(x)                                  lifting, pointwise
    h_{l+1} = s( K_l h_l + W_l h_l )                l = 0 .. num_layers-1 (no s after the last)
    y       = Q(h_L)                                projection, two pointwise linears

with ``K_l`` the spectral convolution of :class:`~surrogate.models.layers.SpectralConv` (a learned
complex matrix per kept Fourier mode, plus bias) and ``W_l`` a pointwise linear skip. Optional
pieces make it the FNO of the neuraloperator library: a two-layer lifting MLP
(``lifting_channels``), a channel MLP with soft-gating skip after each Fourier layer
(``channel_mlp_expansion``) and grid coordinates appended to the input
(``positional_embedding``); see :class:`FNO`.

Data are periodic, so there is no domain padding. Without the positional embedding the model
commutes with every integer periodic shift of the grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from surrogate.models.layers import (
    Dtype,
    SpectralConv,
    check_input,
    check_positive_int,
    check_spatial_dims,
    compute_dtype,
    get_activation,
    per_axis,
    to_channels_first,
    to_channels_last,
)

Array = jax.Array


class FNO(nnx.Module):
    """Fourier neural operator on periodic 1D or 2D grids: ``(B, C_in, *sp) -> (B, C_out, *sp)``.

    Mode convention. ``modes = (m_y, m_x)`` (or one int for every axis) keeps the integer
    wavenumbers ``-m_y <= k_y <= m_y - 1`` (2 m_y of them) along y and ``0 <= k_x <= m_x - 1``
    (m_x coefficients of the real FFT) along x, a block of ``2 m_y x m_x`` complex weights per
    channel pair; in 1D, ``modes = m_x`` keeps ``0..m_x-1``. This is the classic FNO-paper
    convention ("modes=16": 16 non-negative and 16 negative wavenumbers). neuraloperator's
    ``n_modes=(a, b)`` (a total count on full axes, ``b // 2 + 1`` real-FFT coefficients on the
    last) is ``modes=(a // 2, b // 2 + 1)`` here: its ``n_modes=(16, 16)`` (a 16 x 9 block) is
    ``modes=(8, 9)``, its 1D ``n_modes=(16,)`` is ``modes=9``.

    Grid sizes. Any grid size works. The largest useful modes on an ``n``-point axis are
    ``n // 2`` on a full axis (``k = -n/2 .. n/2-1``, every coefficient) and ``n // 2 + 1`` on the
    last axis; larger ``modes`` are clamped to what the grid holds (the extra weights are unused
    there), so a model trained on a fine grid also runs on a coarser one.

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        spatial_dims: 1 or 2.
        width: hidden channels of the Fourier layers (default 32).
        modes: kept modes, an int or one int per spatial axis (default 12; see above).
        num_layers: number of Fourier layers (default 4).
        lifting_channels: hidden width of a two-layer lifting MLP; ``None`` (default) lifts with
            one pointwise linear map, as in Li et al.
        projection_channels: hidden width of the two-layer projection (default ``2 * width``).
        channel_mlp_expansion: if > 0, each Fourier layer is followed by a pointwise MLP of
            hidden width ``round(width * expansion)`` with a learned per-channel gate on its
            skip, as in neuraloperator (which uses 0.5); 0 (default) omits it.
        positional_embedding: append the grid coordinates ``x_i = i / n`` in ``[0, 1)`` as
            ``spatial_dims`` extra input channels (neuraloperator's default). It breaks the
            shift equivariance, so it is off by default.
        activation: activation name (see :func:`~surrogate.models.layers.get_activation`),
            default ``"gelu_tanh"``.
        transform: spectral transform, ``"dft"`` (default, fastest on CPUs for a few modes) or
            ``"fft"``; see :class:`~surrogate.models.layers.SpectralConv`.
        dtype: compute dtype, e.g. ``jnp.bfloat16`` (``None``: that of the input). The output
            has the input's dtype.
        param_dtype: parameter dtype (default float32).
        rngs: random number generators.

    Raises:
        ValueError: on an invalid argument (naming it), or at call time on an input whose shape
            is not ``(B, in_channels, *spatial)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int,
        width: int = 32,
        modes: int | Sequence[int] = 12,
        num_layers: int = 4,
        lifting_channels: int | None = None,
        projection_channels: int | None = None,
        channel_mlp_expansion: float = 0.0,
        positional_embedding: bool = False,
        activation: str = "gelu_tanh",
        transform: str = "dft",
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.width = check_positive_int(width, "width")
        self.modes = per_axis(modes, self.spatial_dims, "modes")
        self.num_layers = check_positive_int(num_layers, "num_layers")
        self.activation = activation
        self._act = get_activation(activation)
        if channel_mlp_expansion < 0:
            raise ValueError(f"channel_mlp_expansion must be >= 0, got {channel_mlp_expansion!r}")
        self.positional_embedding = bool(positional_embedding)
        self.dtype = dtype
        self.param_dtype = param_dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        lift_in = in_channels + (self.spatial_dims if self.positional_embedding else 0)
        if lifting_channels:
            lifting_channels = check_positive_int(lifting_channels, "lifting_channels")
            self.lifting = nnx.List(
                [
                    nnx.Linear(lift_in, lifting_channels, **kw),
                    nnx.Linear(lifting_channels, width, **kw),
                ]
            )
        else:
            self.lifting = nnx.List([nnx.Linear(lift_in, width, **kw)])

        # neuraloperator layout: the bias sits in the spectral branch, the linear skip has none.
        self.spectral = nnx.List(
            [
                SpectralConv(width, width, self.modes, transform=transform, **kw)
                for _ in range(self.num_layers)
            ]
        )
        self.skips = nnx.List(
            [nnx.Linear(width, width, use_bias=False, **kw) for _ in range(self.num_layers)]
        )
        hidden = round(width * channel_mlp_expansion)
        if hidden > 0:
            self.channel_mlps = nnx.List(
                [
                    nnx.List([nnx.Linear(width, hidden, **kw), nnx.Linear(hidden, width, **kw)])
                    for _ in range(self.num_layers)
                ]
            )
            self.gates = nnx.List(
                [nnx.Param(jnp.ones((width,), param_dtype)) for _ in range(self.num_layers)]
            )
        else:
            self.channel_mlps = None
            self.gates = None

        proj = check_positive_int(projection_channels or 2 * width, "projection_channels")
        self.projection = nnx.List(
            [nnx.Linear(width, proj, **kw), nnx.Linear(proj, out_channels, **kw)]
        )

    def _lift_input(self, h: Array, dt: jnp.dtype) -> Array:
        """First lifting layer on channels-last ``h`` (grid coordinates appended if enabled).

        With few input channels (<= 4, the usual case: a handful of physical variables) the
        layer is written as broadcast multiply-adds, ``b + sum_k h_k W_k``: XLA:CPU runs the
        weight gradient of a matrix product with so few rows several times slower than the
        equivalent reductions, and the grid coordinates then never get materialised per sample.
        """
        layer = self.lifting[0]
        spatial = h.shape[1:-1]
        coords = [jnp.asarray(np.arange(n) / n, dt) for n in spatial]  # x_i = i / n in [0, 1)
        if layer.in_features > 4:
            if self.positional_embedding:
                grid = jnp.stack(jnp.meshgrid(*coords, indexing="ij"), axis=-1)
                grid = jnp.broadcast_to(grid, (h.shape[0], *spatial, len(spatial)))
                h = jnp.concatenate([h, grid], axis=-1)
            return layer(h)
        kernel = layer.kernel[...].astype(dt)  # (C_in [+ spatial_dims], hidden)
        y = layer.bias[...].astype(dt) + h[..., 0, None] * kernel[0]
        for k in range(1, self.in_channels):
            y = y + h[..., k, None] * kernel[k]
        if self.positional_embedding:
            for axis, c in enumerate(coords):
                shape = [1] * (len(spatial) + 2)
                shape[1 + axis] = -1
                y = y + c.reshape(shape) * kernel[self.in_channels + axis]
        return y

    def __call__(self, x: Array) -> Array:
        """``x (B, C_in, *spatial) -> (B, C_out, *spatial)``, in the dtype of ``x``."""
        check_input(x, self.in_channels, self.spatial_dims, "FNO")
        out_dtype = x.dtype
        dt = compute_dtype(x, self.dtype, self.param_dtype)
        h = self._lift_input(to_channels_last(x).astype(dt), dt)
        if len(self.lifting) == 2:
            h = self.lifting[1](self._act(h))
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            z = self.spectral[i](h) + self.skips[i](h)
            if not last:
                z = self._act(z)
            if self.channel_mlps is not None:
                fc1, fc2 = self.channel_mlps[i]
                z = fc2(self._act(fc1(z))) + self.gates[i][...].astype(dt) * h
                if not last:
                    z = self._act(z)
            h = z
        y = self.projection[1](self._act(self.projection[0](h)))
        return to_channels_first(y).astype(out_dtype)
