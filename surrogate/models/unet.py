"""Modern U-Net for periodic 1D and 2D fields (residual blocks, GroupNorm, GELU, circular padding).

    stem      h = Conv_k(x)
    encoder   level l = 0..L-1: blocks_per_level residual blocks of width widths[l]; the output
              is kept as the skip s_l; then (l < L-1) a stride-2 convolution halves the grid
    decoder   level l = L-2..0: nearest-neighbour upsampling x2, Conv_k to widths[l],
              concatenation with s_l, blocks_per_level residual blocks
    head      y = Conv_1( act(GroupNorm(h)) )

    residual block:  h -> h' = Conv_k(act(GN(Conv_k(act(GN(h)))))) + P h   (P: 1x1 if widths differ)

All convolutions pad circularly (the data are periodic), GroupNorm statistics are over the whole
grid, and the stride-2 convolutions sample every other cell, so the network commutes with
periodic shifts by multiples of its total downsampling factor ``2 ** (L - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from surrogate.models.layers import (
    Dtype,
    check_input,
    check_positive_int,
    check_spatial_dims,
    compute_dtype,
    get_activation,
    to_channels_first,
    to_channels_last,
)

Array = jax.Array


class ResBlock(nnx.Module):
    """Pre-activation residual block ``h + Conv(act(GN(Conv(act(GN(h))))))`` on ``(B, *sp, C)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int,
        kernel_size: int,
        norm_groups: int,
        activation: str,
        dtype: Dtype | None,
        param_dtype: Dtype,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        k = (kernel_size,) * spatial_dims
        self._act = get_activation(activation)
        self.norm1 = nnx.GroupNorm(in_channels, num_groups=norm_groups, **kw)
        self.conv1 = nnx.Conv(in_channels, out_channels, k, padding="CIRCULAR", **kw)
        self.norm2 = nnx.GroupNorm(out_channels, num_groups=norm_groups, **kw)
        self.conv2 = nnx.Conv(out_channels, out_channels, k, padding="CIRCULAR", **kw)
        self.proj = (
            nnx.Linear(in_channels, out_channels, **kw) if in_channels != out_channels else None
        )

    def __call__(self, x: Array) -> Array:
        h = self.conv1(self._act(self.norm1(x)))
        h = self.conv2(self._act(self.norm2(h)))
        return h + (self.proj(x) if self.proj is not None else x)


class UNet(nnx.Module):
    """Residual U-Net with circular padding: ``(B, C_in, *sp) -> (B, C_out, *sp)`` (see module doc).

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        spatial_dims: 1 or 2.
        widths: channels per level, finest first (default ``(32, 64, 128)``: 3 levels, grids
            halved twice). Each spatial size must be divisible by ``2 ** (len(widths) - 1)``.
        blocks_per_level: residual blocks per level, in the encoder and in the decoder
            (default 2).
        norm_groups: GroupNorm groups; must divide every width (default 8).
        kernel_size: convolution kernel size per axis, odd (default 3).
        activation: activation name (default ``"gelu_tanh"``).
        dtype: compute dtype (``None``: that of the input); the output has the input's dtype.
        param_dtype: parameter dtype (default float32).
        rngs: random number generators.

    Raises:
        ValueError: on an invalid argument (naming it), or at call time on an input of the wrong
            shape or a grid not divisible by the downsampling factor.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int,
        widths: Sequence[int] = (32, 64, 128),
        blocks_per_level: int = 2,
        norm_groups: int = 8,
        kernel_size: int = 3,
        activation: str = "gelu_tanh",
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.spatial_dims = check_spatial_dims(spatial_dims)
        widths = tuple(check_positive_int(w, "widths") for w in widths)
        if not widths:
            raise ValueError("widths must name at least one level, got ()")
        self.widths = widths
        check_positive_int(blocks_per_level, "blocks_per_level")
        check_positive_int(norm_groups, "norm_groups")
        bad = [w for w in widths if w % norm_groups]
        if bad:
            raise ValueError(f"norm_groups={norm_groups} must divide every width, not {bad}")
        check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        get_activation(activation)
        self._act = get_activation(activation)
        self.dtype = dtype
        self.param_dtype = param_dtype
        d = self.spatial_dims
        k = (kernel_size,) * d
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        block = dict(
            spatial_dims=d, kernel_size=kernel_size, norm_groups=norm_groups, activation=activation
        )

        self.stem = nnx.Conv(in_channels, widths[0], k, padding="CIRCULAR", **kw)
        encoder, downs = [], []
        prev = widths[0]
        for level, w in enumerate(widths):
            blocks = []
            for _ in range(blocks_per_level):
                blocks.append(ResBlock(prev, w, **block, **kw))
                prev = w
            encoder.append(nnx.List(blocks))
            if level < len(widths) - 1:
                downs.append(nnx.Conv(w, w, k, strides=2, padding="CIRCULAR", **kw))
        self.encoder = nnx.List(encoder)
        self.downs = nnx.List(downs)

        ups, decoder = [], []
        for level in range(len(widths) - 2, -1, -1):
            w = widths[level]
            ups.append(nnx.Conv(widths[level + 1], w, k, padding="CIRCULAR", **kw))
            blocks = [ResBlock(2 * w, w, **block, **kw)]
            blocks += [ResBlock(w, w, **block, **kw) for _ in range(blocks_per_level - 1)]
            decoder.append(nnx.List(blocks))
        self.ups = nnx.List(ups)
        self.decoder = nnx.List(decoder)

        self.head_norm = nnx.GroupNorm(widths[0], num_groups=norm_groups, **kw)
        self.head = nnx.Linear(widths[0], out_channels, **kw)

    @property
    def downsampling_factor(self) -> int:
        """Total downsampling ``2 ** (levels - 1)``: grid sizes must be multiples of it."""
        return 2 ** (len(self.widths) - 1)

    def __call__(self, x: Array) -> Array:
        """``x (B, C_in, *spatial) -> (B, C_out, *spatial)``, in the dtype of ``x``."""
        check_input(x, self.in_channels, self.spatial_dims, "UNet")
        f = self.downsampling_factor
        if any(n % f for n in x.shape[2:]):
            raise ValueError(
                f"UNet with {len(self.widths)} levels needs grid sizes divisible by {f}, "
                f"got x of shape {tuple(x.shape)}"
            )
        out_dtype = x.dtype
        h = to_channels_last(x).astype(compute_dtype(x, self.dtype, self.param_dtype))
        h = self.stem(h)
        skips = []
        for level, blocks in enumerate(self.encoder):
            for blk in blocks:
                h = blk(h)
            if level < len(self.downs):
                skips.append(h)
                h = self.downs[level](h)
        for up, blocks in zip(self.ups, self.decoder, strict=True):
            for axis in range(1, 1 + self.spatial_dims):
                h = jnp.repeat(h, 2, axis=axis)
            h = jnp.concatenate([up(h), skips.pop()], axis=-1)
            for blk in blocks:
                h = blk(h)
        y = self.head(self._act(self.head_norm(h)))
        return to_channels_first(y).astype(out_dtype)
