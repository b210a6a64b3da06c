"""FourCastNet-style vision transformer with adaptive Fourier neural operator (AFNO) token mixing.

Guibas et al., "Adaptive Fourier Neural Operators" (ICLR 2022); Pathak et al., "FourCastNet"
(2022). On a grid cut into non-overlapping patches of ``patch_size`` cells per axis:

    tokens   t = E(patches(x)) + p                   patch embedding (linear) + learned position
    block    u = t + M(LN_1(t))                      AFNO token mixing (with its own skip)
             t = u + MLP(LN_2(u))                    MLP of hidden width mlp_ratio * embed_dim
    output   y = unpatchify(D(t))                    linear decoder back to patches

    AFNO mixing  M(z) = F^{-1}( S_lambda( mask . W_2 relu(W_1 F(z) + b_1) + b_2 ) ) + z

with ``F`` the orthonormal real FFT over the token grid, ``W_1, W_2`` block-diagonal complex
matrices (``num_blocks`` blocks over the embedding channels, shared by all wavenumbers),
``S_lambda`` the soft shrinkage ``sign(a) max(|a| - lambda, 0)`` of real and imaginary parts
(``lambda = sparsity_threshold``) and ``mask`` the hard truncation that keeps the lowest
``hard_thresholding_fraction`` of the wavenumbers per axis. (FourCastNet's reference code slices
the unshifted FFT array and so keeps the *highest* y-wavenumbers when the fraction is below 1;
this implementation keeps the lowest, as the paper describes.)

Shift equivariance. A periodic shift of the grid by a multiple of ``patch_size`` shifts the
token grid, which multiplies each Fourier coefficient by a phase ``e^{-i k s}``. FourCastNet's
mixing is *not* equivariant under that: its ReLU and soft shrinkage act on real and imaginary
parts separately and its biases are complex constants, none of which commute with a phase. With
``phase_equivariant=True`` the mixing uses phase-equivariant forms instead,

    M(z) = F^{-1}( mask . S_lambda(W_2 modrelu(W_1 F(z))) ) + z,
    modrelu(u) = relu(|u| + b) u / |u|,     S_lambda(u) = max(|u| - lambda, 0) u / |u|,

(``b`` a real bias per channel, no complex biases), and the network then commutes with shifts by
multiples of ``patch_size`` provided the learned positional embedding (on by default, as in
FourCastNet; it also ties the model to one grid size, ``grid_shape``) is off.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from solvers.base import promoted_dtype
from surrogate.models.layers import (
    Dtype,
    check_input,
    check_positive_int,
    check_spatial_dims,
    compute_dtype,
    get_activation,
    per_axis,
)

Array = jax.Array


def softshrink(x: Array, threshold: float) -> Array:
    """``sign(x) * max(|x| - threshold, 0)``, elementwise."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0.0)


def _frequency_mask(tokens: tuple[int, ...], fraction: float) -> np.ndarray:
    """Boolean ``(*rfft_shape,)`` mask keeping the lowest ``fraction`` of wavenumbers per axis."""
    masks = []
    for i, n in enumerate(tokens):
        kept = int((n // 2 + 1) * fraction)
        if i < len(tokens) - 1:
            k = np.abs(np.fft.fftfreq(n) * n)
        else:
            k = np.arange(n // 2 + 1)
        masks.append(k < kept)
    grids = np.meshgrid(*masks, indexing="ij")
    return np.logical_and.reduce(grids)


class AFNOMixing(nnx.Module):
    """AFNO token mixing ``F^{-1}(S(mask . W_2 relu(W_1 F(z) + b_1) + b_2)) + z`` on ``(B, *tok, D)``."""

    def __init__(
        self,
        embed_dim: int,
        *,
        num_blocks: int,
        sparsity_threshold: float,
        hard_thresholding_fraction: float,
        phase_equivariant: bool = False,
        dtype: Dtype | None,
        param_dtype: Dtype,
        rngs: nnx.Rngs,
    ):
        if embed_dim % num_blocks:
            raise ValueError(f"num_blocks={num_blocks} must divide embed_dim={embed_dim}")
        self.num_blocks = num_blocks
        self.block_size = embed_dim // num_blocks
        self.sparsity_threshold = float(sparsity_threshold)
        self.hard_thresholding_fraction = float(hard_thresholding_fraction)
        self.phase_equivariant = bool(phase_equivariant)
        self.dtype = dtype
        self.param_dtype = param_dtype
        scale = 0.02  # FourCastNet's initial scale of the spectral weights
        nb, bs = num_blocks, self.block_size
        keys = jax.random.split(rngs.params(), 4)
        # [Re, Im] pairs first: w[0] = Re, w[1] = Im.
        self.w1 = nnx.Param(scale * jax.random.normal(keys[0], (2, nb, bs, bs), param_dtype))
        self.w2 = nnx.Param(scale * jax.random.normal(keys[2], (2, nb, bs, bs), param_dtype))
        if self.phase_equivariant:
            # modReLU bias on the modulus; no complex biases (they do not commute with phases).
            self.b1 = nnx.Param(scale * jax.random.normal(keys[1], (nb, bs), param_dtype))
            self.b2 = None
        else:
            self.b1 = nnx.Param(scale * jax.random.normal(keys[1], (2, nb, bs), param_dtype))
            self.b2 = nnx.Param(scale * jax.random.normal(keys[3], (2, nb, bs), param_dtype))

    @staticmethod
    def _complex_dense(z: Array, w: Array, b: Array | None = None) -> Array:
        """``z W (+ b)`` per block for ``z (..., 2, nb, bs)`` stacked ``[Re, Im]``."""
        zr, zi = z[..., 0, :, :], z[..., 1, :, :]
        wr, wi = w[0], w[1]
        re = jnp.einsum("...ni,nio->...no", zr, wr) - jnp.einsum("...ni,nio->...no", zi, wi)
        im = jnp.einsum("...ni,nio->...no", zr, wi) + jnp.einsum("...ni,nio->...no", zi, wr)
        if b is not None:
            re, im = re + b[0], im + b[1]
        return jnp.stack([re, im], axis=-3)

    @staticmethod
    def _modulus(u: Array) -> Array:
        """``|u|`` of ``u (..., 2, nb, bs)`` stacked ``[Re, Im]``, kept as a size-1 axis."""
        # The tiny floor keeps the gradient of sqrt finite at u = 0.
        return jnp.sqrt(jnp.sum(u * u, axis=-3, keepdims=True) + 1e-12)

    def __call__(self, z: Array) -> Array:
        tokens = tuple(z.shape[1:-1])
        axes = tuple(range(1, 1 + len(tokens)))
        # FFTs run in float32 at least (XLA has no bfloat16 FFT).
        ft = promoted_dtype(z.dtype, jnp.float32)
        z_hat = jnp.fft.rfftn(z.astype(ft), axes=axes, norm="ortho")  # (B, *freq, D)
        shape = (*z_hat.shape[:-1], self.num_blocks, self.block_size)
        a = jnp.stack([z_hat.real, z_hat.imag], axis=-2).reshape(*shape[:-2], 2, *shape[-2:])
        w1, w2, b1 = (p[...].astype(ft) for p in (self.w1, self.w2, self.b1))
        if self.phase_equivariant:
            u = self._complex_dense(a, w1)
            r = self._modulus(u)
            h = u * (jax.nn.relu(r + b1) / r)  # modReLU
            o = self._complex_dense(h, w2)
            r = self._modulus(o)
            o = o * (jnp.maximum(r - self.sparsity_threshold, 0.0) / r)  # modulus shrinkage
        else:
            h = jax.nn.relu(self._complex_dense(a, w1, b1))
            o = self._complex_dense(h, w2, self.b2[...].astype(ft))
            o = softshrink(o, self.sparsity_threshold)
        mask = _frequency_mask(tokens, self.hard_thresholding_fraction)
        o = o * jnp.asarray(mask, ft)[..., None, None, None]
        o_re, o_im = (o[..., j, :, :].astype(z_hat.dtype) for j in (0, 1))
        o = (o_re + 1j * o_im).reshape(z_hat.shape)
        y = jnp.fft.irfftn(o, s=tokens, axes=axes, norm="ortho")
        return y.astype(z.dtype) + z


class AFNOBlock(nnx.Module):
    """``u = t + M(LN(t))``, ``t' = u + MLP(LN(u))`` on tokens ``(B, *tok, D)``."""

    def __init__(
        self,
        embed_dim: int,
        *,
        mlp_ratio: float,
        activation: str,
        num_blocks: int,
        sparsity_threshold: float,
        hard_thresholding_fraction: float,
        phase_equivariant: bool,
        dtype: Dtype | None,
        param_dtype: Dtype,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        hidden = check_positive_int(round(embed_dim * mlp_ratio), "mlp_ratio * embed_dim")
        self._act = get_activation(activation)
        self.norm1 = nnx.LayerNorm(embed_dim, **kw)
        self.mixing = AFNOMixing(
            embed_dim,
            num_blocks=num_blocks,
            sparsity_threshold=sparsity_threshold,
            hard_thresholding_fraction=hard_thresholding_fraction,
            phase_equivariant=phase_equivariant,
            **kw,
        )
        self.norm2 = nnx.LayerNorm(embed_dim, **kw)
        self.fc1 = nnx.Linear(embed_dim, hidden, **kw)
        self.fc2 = nnx.Linear(hidden, embed_dim, **kw)

    def __call__(self, t: Array) -> Array:
        u = t + self.mixing(self.norm1(t))
        return u + self.fc2(self._act(self.fc1(self.norm2(u))))


class AFNONet(nnx.Module):
    """FourCastNet-style AFNO transformer: ``(B, C_in, *sp) -> (B, C_out, *sp)`` (see module doc).

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        spatial_dims: 1 or 2.
        patch_size: patch edge in grid cells, an int or one per axis (default 4); every grid
            size must be divisible by it.
        embed_dim: token embedding width ``D`` (default 128).
        depth: number of AFNO blocks (default 4).
        num_blocks: diagonal blocks of the AFNO weights; must divide ``embed_dim`` (default 8).
        mlp_ratio: MLP hidden width over ``embed_dim`` (default 4.0).
        sparsity_threshold: soft-shrinkage ``lambda`` of the AFNO output (default 0.01).
        hard_thresholding_fraction: fraction of the wavenumbers kept per token-grid axis, in
            ``(0, 1]`` (default 1.0: all).
        phase_equivariant: use the phase-equivariant mixing (modReLU, modulus shrinkage, no
            complex biases) that makes the network commute with shifts by multiples of
            ``patch_size`` when ``positional_embedding`` is off; default False (FourCastNet's).
        positional_embedding: add a learned embedding per token position (default True, as
            FourCastNet). It fixes the grid to ``grid_shape`` and breaks shift equivariance.
        grid_shape: spatial shape of the inputs, an int or one per axis; required when
            ``positional_embedding`` is on (the embedding has one vector per patch), ignored
            otherwise (any grid divisible by ``patch_size`` works).
        activation: MLP activation name (default ``"gelu_tanh"``).
        dtype: compute dtype (``None``: that of the input); the output has the input's dtype.
            The FFTs of the mixing run in float32 at least.
        param_dtype: parameter dtype (default float32).
        rngs: random number generators.

    Raises:
        ValueError: on an invalid argument (naming it), or at call time on an input of the wrong
            shape, a grid not divisible by ``patch_size`` or not equal to ``grid_shape``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int,
        patch_size: int | Sequence[int] = 4,
        embed_dim: int = 128,
        depth: int = 4,
        num_blocks: int = 8,
        mlp_ratio: float = 4.0,
        sparsity_threshold: float = 0.01,
        hard_thresholding_fraction: float = 1.0,
        phase_equivariant: bool = False,
        positional_embedding: bool = True,
        grid_shape: int | Sequence[int] | None = None,
        activation: str = "gelu_tanh",
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.spatial_dims = check_spatial_dims(spatial_dims)
        d = self.spatial_dims
        self.patch_size = per_axis(patch_size, d, "patch_size")
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.depth = check_positive_int(depth, "depth")
        check_positive_int(num_blocks, "num_blocks")
        if embed_dim % num_blocks:
            raise ValueError(f"num_blocks={num_blocks} must divide embed_dim={embed_dim}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")
        if sparsity_threshold < 0:
            raise ValueError(f"sparsity_threshold must be >= 0, got {sparsity_threshold!r}")
        if not 0 < hard_thresholding_fraction <= 1:
            raise ValueError(
                f"hard_thresholding_fraction must be in (0, 1], got {hard_thresholding_fraction!r}"
            )
        get_activation(activation)
        self.dtype = dtype
        self.param_dtype = param_dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        patch_cells = int(np.prod(self.patch_size))
        self.embed = nnx.Linear(in_channels * patch_cells, embed_dim, **kw)
        if positional_embedding:
            if grid_shape is None:
                raise ValueError(
                    "grid_shape is required with positional_embedding=True (one learned vector "
                    "per patch); pass the input grid size, e.g. grid_shape=64"
                )
            self.grid_shape = per_axis(grid_shape, d, "grid_shape")
            bad = [n for n, p in zip(self.grid_shape, self.patch_size, strict=True) if n % p]
            if bad:
                raise ValueError(
                    f"grid_shape={self.grid_shape} must be divisible by patch_size={self.patch_size}"
                )
            tokens = tuple(n // p for n, p in zip(self.grid_shape, self.patch_size, strict=True))
            # FourCastNet: truncated normal, std 0.02.
            init = 0.02 * jax.random.truncated_normal(
                rngs.params(), -2.0, 2.0, (*tokens, embed_dim), param_dtype
            )
            self.pos_embed = nnx.Param(init)
        else:
            self.grid_shape = None
            self.pos_embed = None
        self.blocks = nnx.List(
            [
                AFNOBlock(
                    embed_dim,
                    mlp_ratio=mlp_ratio,
                    activation=activation,
                    num_blocks=num_blocks,
                    sparsity_threshold=sparsity_threshold,
                    hard_thresholding_fraction=hard_thresholding_fraction,
                    phase_equivariant=phase_equivariant,
                    **kw,
                )
                for _ in range(self.depth)
            ]
        )
        self.decode = nnx.Linear(embed_dim, out_channels * patch_cells, **kw)

    def _patchify(self, x: Array) -> Array:
        """``(B, C, *sp) -> (B, *tokens, prod(patch) * C)``, patch cells before channels."""
        b, c, *sp = x.shape
        p = self.patch_size
        if len(sp) == 1:
            x = x.reshape(b, c, sp[0] // p[0], p[0])
            return x.transpose(0, 2, 3, 1).reshape(b, sp[0] // p[0], p[0] * c)
        x = x.reshape(b, c, sp[0] // p[0], p[0], sp[1] // p[1], p[1])
        x = x.transpose(0, 2, 4, 3, 5, 1)
        return x.reshape(b, sp[0] // p[0], sp[1] // p[1], p[0] * p[1] * c)

    def _unpatchify(self, t: Array, channels: int) -> Array:
        """Inverse of :meth:`_patchify`: ``(B, *tokens, prod(patch) * C) -> (B, C, *sp)``."""
        b, *tok, _ = t.shape
        p = self.patch_size
        if len(tok) == 1:
            t = t.reshape(b, tok[0], p[0], channels).transpose(0, 3, 1, 2)
            return t.reshape(b, channels, tok[0] * p[0])
        t = t.reshape(b, tok[0], tok[1], p[0], p[1], channels).transpose(0, 5, 1, 3, 2, 4)
        return t.reshape(b, channels, tok[0] * p[0], tok[1] * p[1])

    def __call__(self, x: Array) -> Array:
        """``x (B, C_in, *spatial) -> (B, C_out, *spatial)``, in the dtype of ``x``."""
        check_input(x, self.in_channels, self.spatial_dims, "AFNONet")
        sp = tuple(x.shape[2:])
        if any(n % p for n, p in zip(sp, self.patch_size, strict=True)):
            raise ValueError(
                f"AFNONet: grid {sp} must be divisible by patch_size={self.patch_size}, "
                f"got x of shape {tuple(x.shape)}"
            )
        if self.grid_shape is not None and sp != self.grid_shape:
            raise ValueError(
                f"AFNONet: built for grid_shape={self.grid_shape} (learned positional "
                f"embedding), got x of shape {tuple(x.shape)}"
            )
        out_dtype = x.dtype
        dt = compute_dtype(x, self.dtype, self.param_dtype)
        t = self.embed(self._patchify(x.astype(dt)))
        if self.pos_embed is not None:
            t = t + self.pos_embed[...].astype(dt)
        for blk in self.blocks:
            t = blk(t)
        return self._unpatchify(self.decode(t), self.out_channels).astype(out_dtype)
