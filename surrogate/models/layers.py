"""Shared pieces of the neural models: activations, layout helpers and the spectral convolution.

Layout convention. Every model takes and returns channels-first arrays ``(B, C, *spatial)``
(the project's state layout) but works channels-last ``(B, *spatial, C)`` inside: a pointwise
linear map is then one ``(B * prod(spatial), C_in) @ (C_in, C_out)`` matrix product, much
faster on a CPU than a channels-first 1x1 convolution. :func:`to_channels_last` and
:func:`to_channels_first` do the one transpose at entry and exit.

Spectral convolution. :class:`SpectralConv` is the Fourier layer of Li et al. (2021),

    y = F^{-1}( R . P_K F(x) ) + b,

with ``F`` the discrete Fourier transform over the spatial axes, ``P_K`` the projection onto the
kept wavenumbers ``K``, ``R`` one learned complex ``(C_in, C_out)`` matrix per kept wavenumber and
``b`` a per-channel bias. On a CPU, with only a few modes kept, the truncated transforms are done
fastest as small dense real matrix products (a "truncated DFT": ``N x 2M`` per axis) instead of
full FFTs followed by slicing: the FFT computes every coefficient only to throw most of them
away, and XLA's FFT wants the transformed axes innermost, which costs a transpose of the full
activation on each side. Both implementations are here (``transform="dft"`` or ``"fft"``) and agree
to float32 round-off; the tests check it.

Mode convention (used by :class:`~surrogate.models.FNO` and documented there): ``modes[i] = m``
keeps the integer wavenumbers ``-m <= k <= m-1`` (2m coefficients) on every axis but the last,
and ``0 <= k <= m-1`` (m coefficients of the real FFT) on the last axis. On a grid too coarse to
hold them, the kept set is clamped to the wavenumbers the grid has.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from solvers.base import promoted_dtype

Array = jax.Array
Dtype = jnp.dtype | type

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    # tanh-approximate GELU: several times faster than the erf form on CPUs.
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
}


def get_activation(name: str) -> Callable[[Array], Array]:
    """The activation function registered under ``name``.

    Args:
        name: one of ``"gelu_tanh"`` (tanh-approximate GELU), ``"gelu"`` (exact erf GELU),
            ``"relu"``, ``"silu"``, ``"tanh"``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def check_spatial_dims(spatial_dims: int) -> int:
    """Validate the ``spatial_dims`` constructor argument (1 or 2)."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2):
        raise ValueError(f"spatial_dims must be 1 or 2, got {spatial_dims!r}")
    return int(spatial_dims)


def check_positive_int(value: int, name: str) -> int:
    """Validate a positive integer constructor argument, naming it in the error."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def per_axis(value: int | Sequence[int], spatial_dims: int, name: str) -> tuple[int, ...]:
    """Broadcast an int, or check a sequence, to one positive int per spatial axis."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        values = (int(value),) * spatial_dims
    else:
        values = tuple(value)
        if len(values) != spatial_dims:
            raise ValueError(
                f"{name} must be an int or {spatial_dims} ints (one per spatial axis), got {value!r}"
            )
    for v in values:
        check_positive_int(v, name)
    return tuple(int(v) for v in values)


def check_input(x: Array, in_channels: int, spatial_dims: int, model: str) -> None:
    """Raise a ValueError unless ``x`` has shape ``(B, in_channels, *spatial)``."""
    if x.ndim != 2 + spatial_dims or x.shape[1] != in_channels:
        expected = "(B, C, X)" if spatial_dims == 1 else "(B, C, Y, X)"
        raise ValueError(
            f"{model}: x must have shape {expected} with C = in_channels = {in_channels}, "
            f"got shape {tuple(x.shape)}"
        )


def to_channels_last(x: Array) -> Array:
    """``(B, C, *spatial) -> (B, *spatial, C)``."""
    return jnp.moveaxis(x, 1, -1)


def to_channels_first(x: Array) -> Array:
    """``(B, *spatial, C) -> (B, C, *spatial)``."""
    return jnp.moveaxis(x, -1, 1)


def compute_dtype(x: Array, dtype: Dtype | None, param_dtype: Dtype) -> jnp.dtype:
    """The dtype a model computes in: ``dtype`` if given, else the promotion of input and params."""
    if dtype is not None:
        return jnp.dtype(dtype)
    return promoted_dtype(x.dtype, param_dtype)


# --------------------------------------------------------------------------------------------
# Truncated DFT matrices (numpy, cached per grid size and mode count; they become constants)
# --------------------------------------------------------------------------------------------


def kept_full_axis(num_points: int, modes: int) -> tuple[int, int]:
    """Kept (non-negative, negative) wavenumber counts on a full-FFT axis.

    ``modes = m`` asks for ``0..m-1`` and ``-m..-1``; a grid of ``n`` points holds ``0..ceil(n/2)-1``
    and ``-floor(n/2)..-1``, so the counts are clamped to those.
    """
    return min(modes, (num_points + 1) // 2), min(modes, num_points // 2)


def kept_last_axis(num_points: int, modes: int) -> int:
    """Kept wavenumber count ``0..p-1`` on the last (real FFT) axis: ``min(m, n // 2 + 1)``."""
    return min(modes, num_points // 2 + 1)


def full_axis_wavenumbers(num_points: int, modes: int) -> np.ndarray:
    """Kept wavenumbers of a full axis, in the weight's (FFT) order ``0..p-1, -q..-1``."""
    p, q = kept_full_axis(num_points, modes)
    return np.concatenate([np.arange(p), np.arange(-q, 0)])


@functools.lru_cache(maxsize=64)
def _last_axis_dft(num_points: int, kept: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward ``(n, 2, p)`` and inverse ``(2, p, n)`` real matrices of the truncated real DFT.

    Forward (``norm="forward"``): ``X_k = (1/n) sum_x x_x e^{-2 pi i k x / n}``, stored as
    ``[Re, Im]``. Inverse: ``x_x = sum_k c_k Re(X_k e^{+2 pi i k x / n})`` with ``c_0 = 1``,
    ``c_{n/2} = 1`` and ``c_k = 2`` otherwise, which is ``numpy.fft.irfft(X * n, n)`` for ``X``
    zero beyond ``p`` (it ignores the imaginary parts of ``X_0`` and ``X_{n/2}`` as irfft does).
    """
    x = np.arange(num_points)
    k = np.arange(kept)
    angle = 2.0 * np.pi * np.outer(x, k) / num_points  # (n, p)
    forward = np.stack([np.cos(angle), -np.sin(angle)], axis=1) / num_points  # (n, 2, p)
    weight = np.full(kept, 2.0)
    weight[0] = 1.0
    if num_points % 2 == 0 and kept > num_points // 2:
        weight[num_points // 2] = 1.0
    inverse = np.stack([weight[:, None] * np.cos(angle.T), -weight[:, None] * np.sin(angle.T)], 0)
    return forward, inverse


@functools.lru_cache(maxsize=64)
def _full_axis_dft(num_points: int, modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward ``(K, 2, n, 2)`` and inverse ``(n, 2, K, 2)`` real matrices of a truncated complex DFT.

    Acting on complex data stored as a trailing ``[Re, Im]`` pair of axes. Forward
    (``norm="forward"``): ``Z_k = (1/n) sum_y A_y e^{-2 pi i k y / n}``; inverse:
    ``A_y = sum_k Z_k e^{+2 pi i k y / n}``, over the kept wavenumbers ``k`` of
    :func:`full_axis_wavenumbers` (``K`` of them, in that order).
    """
    k = full_axis_wavenumbers(num_points, modes)
    y = np.arange(num_points)
    theta = 2.0 * np.pi * np.outer(k, y) / num_points  # (K, n)
    c, s = np.cos(theta) / num_points, np.sin(theta) / num_points
    forward = np.zeros((len(k), 2, num_points, 2))
    # e^{-i theta} (ar + i ai) = (c ar + s ai) + i (c ai - s ar)
    forward[:, 0, :, 0], forward[:, 0, :, 1] = c, s
    forward[:, 1, :, 0], forward[:, 1, :, 1] = -s, c
    ci, si = np.cos(theta.T), np.sin(theta.T)  # (n, K)
    inverse = np.zeros((num_points, 2, len(k), 2))
    # e^{+i theta} (zr + i zi) = (c zr - s zi) + i (c zi + s zr)
    inverse[:, 0, :, 0], inverse[:, 0, :, 1] = ci, -si
    inverse[:, 1, :, 0], inverse[:, 1, :, 1] = si, ci
    return forward, inverse


def _complex_block_weight(weight: Array) -> Array:
    """``(..., 2, Ci, Co)`` ``[Re, Im]`` weights -> real block ``(..., 2, Ci, 2, Co)``.

    The block ``Wb[r, c, s, o]`` maps ``[Re, Im]`` index ``r`` of the input to index ``s`` of the
    output, so that ``out_s = sum_{r,c} z_r,c Wb[r,c,s,o]`` is the complex product ``z W``:
    ``Re = zr Wr - zi Wi``, ``Im = zr Wi + zi Wr``.
    """
    wr, wi = weight[..., 0, :, :], weight[..., 1, :, :]
    row_re = jnp.stack([wr, wi], axis=-2)  # r = Re: (s = Re -> Wr, s = Im -> Wi)
    row_im = jnp.stack([-wi, wr], axis=-2)  # r = Im: (s = Re -> -Wi, s = Im -> Wr)
    return jnp.stack([row_re, row_im], axis=-4)


class SpectralConv(nnx.Module):
    """Fourier layer ``y = F^{-1}(R . P_K F(x)) + b`` on channels-last data (see module doc).

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        modes: kept modes per spatial axis (1 or 2 axes), convention of the module docstring:
            ``(m_y, m_x)`` keeps ``-m_y..m_y-1`` along y and ``0..m_x-1`` along x.
        use_bias: add a learned per-channel bias ``b`` (default True).
        transform: ``"dft"`` (truncated DFT as real matrix products, fastest on CPUs for
            a few modes) or ``"fft"`` (``jnp.fft.rfftn``, better for many modes on big grids).
        dtype: compute dtype (``None``: promote input and parameter dtypes).
        param_dtype: parameter dtype (default float32).
        rngs: random number generators (uses ``rngs.params()``).

    Parameters: ``weight`` of shape ``(2 m_y, m_x, 2, C_in, C_out)`` in 2D or ``(m_x, 2, C_in,
    C_out)`` in 1D, holding ``[Re, Im]`` of ``R`` (real pairs keep optax and bfloat16 simple);
    wavenumbers along y in FFT order ``0..m_y-1, -m_y..-1``. Initialised complex normal with
    ``E|R|^2 = 2 / (C_in + C_out)``, as neuraloperator does.

    Call: ``x (B, *spatial, C_in) -> (B, *spatial, C_out)``, any grid size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: Sequence[int],
        *,
        use_bias: bool = True,
        transform: str = "dft",
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.modes = tuple(check_positive_int(m, "modes") for m in modes)
        if len(self.modes) not in (1, 2):
            raise ValueError(f"modes must have 1 or 2 entries (one per axis), got {modes!r}")
        if transform not in ("dft", "fft"):
            raise ValueError(f"transform must be 'dft' or 'fft', got {transform!r}")
        self.transform = transform
        self.dtype = dtype
        self.param_dtype = param_dtype
        block = tuple(2 * m for m in self.modes[:-1]) + (self.modes[-1],)
        # A Python float (weakly typed): the weights keep param_dtype, also under x64.
        std = float(np.sqrt(1.0 / (in_channels + out_channels)))  # per real/imag part
        shape = (*block, 2, in_channels, out_channels)
        self.weight = nnx.Param(std * jax.random.normal(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype)) if use_bias else None

    def _kept_weight(self, spatial: tuple[int, ...]) -> Array:
        """The weight rows of the wavenumbers the grid holds (clamped modes)."""
        w = self.weight[...]
        w = w[..., : kept_last_axis(spatial[-1], self.modes[-1]), :, :, :]
        if len(spatial) == 2:
            m = self.modes[0]
            p, q = kept_full_axis(spatial[0], m)
            if p + q < 2 * m:
                w = jnp.concatenate([w[:p], w[2 * m - q :]], axis=0)
        return w

    def __call__(self, x: Array) -> Array:
        spatial = tuple(x.shape[1:-1])
        if len(spatial) != len(self.modes):
            raise ValueError(
                f"SpectralConv with {len(self.modes)} mode axes got x of shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f"SpectralConv: x must have {self.in_channels} channels last, got {tuple(x.shape)}"
            )
        dt = compute_dtype(x, self.dtype, self.param_dtype)
        x = x.astype(dt)
        w = self._kept_weight(spatial)
        if self.transform == "dft":
            y = self._dft(x, w.astype(dt), spatial, dt)
        else:
            y = self._fft(x, w, spatial).astype(dt)
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y

    def _dft(self, x: Array, w: Array, spatial: tuple[int, ...], dt: jnp.dtype) -> Array:
        wb = _complex_block_weight(w)  # (*kept, 2, Ci, 2, Co)
        fx, gx = (jnp.asarray(a, dt) for a in _last_axis_dft(spatial[-1], w.shape[-4]))
        if len(spatial) == 1:
            a = jnp.einsum("bwc,wsk->bskc", x, fx)  # (B, 2, Kx, Ci)
            o = jnp.einsum("brkc,krcso->bsko", a, wb)  # (B, 2, Kx, Co)
            return jnp.einsum("bskc,skw->bwc", o, gx)
        # 2D: swap the last two axes once on each side, (B, H, W, C) <-> (B, H, C, W), so that
        # both x-transforms are plain matrix products over a contiguous W. Left to itself, XLA
        # moves W to the front of the whole activation instead, a strided transpose that cost
        # about a third of the inference time.
        kx, n = w.shape[-4], spatial[-1]
        fy, gy = (jnp.asarray(a, dt) for a in _full_axis_dft(spatial[0], self.modes[0]))
        xt = jnp.swapaxes(x, -1, -2)  # (B, H, Ci, W)
        a = (xt @ fx.reshape(n, 2 * kx)).reshape(*xt.shape[:-1], 2, kx)  # DFT along x
        z = jnp.einsum("yrhs,bhcsk->byrkc", fy, a)  # (B, Ky, 2, Kx, Ci): DFT along y
        o = jnp.einsum("byrkc,ykrcso->bysko", z, wb)  # (B, Ky, 2, Kx, Co): mode mixing
        u = jnp.einsum("hsyr,byrkc->bhcsk", gy, o)  # (B, H, Co, 2, Kx): inverse along y
        y = u.reshape(*u.shape[:-2], 2 * kx) @ gx.reshape(2 * kx, n)  # inverse along x
        return jnp.swapaxes(y, -1, -2)  # (B, H, W, Co)

    def _fft(self, x: Array, w: Array, spatial: tuple[int, ...]) -> Array:
        # XLA's FFT runs in float32/complex64 at least; bfloat16 inputs are upcast for it.
        ft = promoted_dtype(x.dtype, jnp.float32)
        axes = tuple(range(1, 1 + len(spatial)))
        x_hat = jnp.fft.rfftn(x.astype(ft), axes=axes, norm="forward")
        wr, wi = (w[..., j, :, :].astype(x_hat.dtype) for j in (0, 1))
        wc = wr + 1j * wi
        kx = w.shape[-4]
        out_hat = jnp.zeros((*x_hat.shape[:-1], self.out_channels), x_hat.dtype)
        if len(spatial) == 1:
            out_hat = out_hat.at[:, :kx].set(jnp.einsum("bkc,kco->bko", x_hat[:, :kx], wc))
        else:
            p, q = kept_full_axis(spatial[0], self.modes[0])
            rows = np.concatenate([np.arange(p), np.arange(spatial[0] - q, spatial[0])])
            block = jnp.einsum("bykc,ykco->byko", x_hat[:, rows, :kx], wc)
            out_hat = out_hat.at[:, rows, :kx].set(block)
        return jnp.fft.irfftn(out_hat, s=spatial, axes=axes, norm="forward")
