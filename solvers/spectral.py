"""Shared pseudo-spectral numerics: wavenumbers, dealiasing, ETDRK4, random fields.

All functions follow the state convention: spatial axes last, ordered ``(..., y, x)``;
spectral arrays come from ``jnp.fft.rfftn`` over the spatial axes, so the last axis
holds the non-negative wavenumbers only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from solvers.base import complex_dtype
from solvers.pytree import pytree_dataclass

Array = jax.Array


def wavenumbers(num_points: Sequence[int], domain_length: Sequence[float]) -> list[np.ndarray]:
    """Angular wavenumbers of an ``rfftn`` over the given axes, broadcastable to its shape.

    Args:
        num_points: points per axis, ``(..., y, x)``.
        domain_length: axis lengths (same units as the coordinates).

    Returns:
        One float64 numpy array per axis; axis ``i`` has shape with ``n_i`` (or
        ``n_last // 2 + 1`` for the last axis) in position ``i`` and ones elsewhere.
    """
    ndim = len(num_points)
    out = []
    for i, (n, length) in enumerate(zip(num_points, domain_length, strict=True)):
        d = length / n
        k = 2 * np.pi * (np.fft.rfftfreq(n, d) if i == ndim - 1 else np.fft.fftfreq(n, d))
        shape = [1] * ndim
        shape[i] = k.size
        out.append(k.reshape(shape))
    return out


def rfft_weights(num_points: Sequence[int]) -> np.ndarray:
    """Multiplicity of each last-axis ``rfft`` column in the full spectrum.

    An ``rfftn`` keeps the columns ``k_x = 0 .. n_x // 2`` of the last axis; each interior
    column stands for ``+k_x`` and ``-k_x`` (weight 2), the mean column and an even
    grid's Nyquist column for one mode each (weight 1). Sums of ``|u_hat|^2`` over the
    half spectrum times these weights are sums over the full spectrum (Parseval).

    Args:
        num_points: points per axis ``(..., y, x)``.

    Returns:
        ``(n_x // 2 + 1,)`` float64 numpy array (broadcasts against an ``rfftn`` array).
    """
    n = int(num_points[-1])
    weight = np.full(n // 2 + 1, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    return weight


def radial_shells(
    num_points: Sequence[int], domain_length: Sequence[float]
) -> tuple[np.ndarray, float]:
    """Isotropic shell of every ``rfftn`` mode: ``round(|k| / dk)``, ``dk = 2 pi / max(L)``.

    Shells of width the fundamental wavenumber of the longest axis; in 1D shell ``m`` is
    the mode ``2 pi m / L``, in 2D the shells reach the corner of the spectral grid so no
    mode is dropped. Used for radial energy spectra (solvers' diagnostics and metrics).

    Args:
        num_points: points per axis ``(..., y, x)``.
        domain_length: axis lengths.

    Returns:
        ``(shell, dk)``: int64 shell index of the ``rfftn`` shape
        ``(*num_points[:-1], n_x // 2 + 1)``, and the shell width ``dk`` (1 / length).
    """
    ks = wavenumbers(num_points, domain_length)
    shape = (*num_points[:-1], int(num_points[-1]) // 2 + 1)
    kmag = np.sqrt(sum(np.broadcast_to(k, shape) ** 2 for k in ks))
    dk = 2 * np.pi / max(domain_length)
    return np.rint(kmag / dk).astype(np.int64), dk


def derivative_wavenumbers(
    num_points: Sequence[int], domain_length: Sequence[float]
) -> list[np.ndarray]:
    """Like :func:`wavenumbers` but with the Nyquist mode of even axes set to zero.

    Odd derivatives of a real field must not excite the unpaired Nyquist mode (its
    derivative is not representable as a real field), so first derivatives use these.
    """
    ks = wavenumbers(num_points, domain_length)
    out = []
    for k, n in zip(ks, num_points, strict=True):
        k = k.copy()
        if n % 2 == 0:
            # fftfreq and rfftfreq both put the Nyquist mode at index n // 2.
            k.reshape(-1)[n // 2] = 0.0
        out.append(k)
    return out


def dealiasing_mask(num_points: Sequence[int], fraction: float = 2.0 / 3.0) -> np.ndarray:
    """Boolean mask of the modes kept by the 2/3 rule on an ``rfftn`` grid.

    A mode is kept when, on every axis, ``|index| < fraction * n / 2`` (strictly); with
    the default fraction that is ``|index| < n / 3``, the largest band in which a quadratic
    product of kept modes aliases only onto removed modes (when 3 divides ``n``, keeping
    ``|index| = n / 3`` too would let ``n/3 + n/3`` alias onto ``-n/3``).
    """
    ndim = len(num_points)
    mask = np.ones((), dtype=bool)
    for i, n in enumerate(num_points):
        idx = np.fft.rfftfreq(n, 1.0 / n) if i == ndim - 1 else np.fft.fftfreq(n, 1.0 / n)
        shape = [1] * ndim
        shape[i] = idx.size
        # The relative shrink keeps a cut-off that lands on an integer (2/3 * 48 / 2 = 16)
        # strict whichever way the product rounds.
        cutoff = fraction * n / 2 * (1 - 1e-12)
        mask = mask & (np.abs(idx) < cutoff).reshape(shape)
    return mask


def spatial_axes(ndim: int) -> tuple[int, ...]:
    """The last ``ndim`` axes, for ``fft`` calls on ``(C, *spatial)`` arrays."""
    return tuple(range(-ndim, 0))


def rfft(u: Array, ndim: int) -> Array:
    """Real FFT over the last ``ndim`` axes."""
    return jnp.fft.rfftn(u, axes=spatial_axes(ndim))


def irfft(u_hat: Array, num_points: Sequence[int]) -> Array:
    """Inverse of :func:`rfft` onto a grid of ``num_points``."""
    return jnp.fft.irfftn(u_hat, s=tuple(num_points), axes=spatial_axes(len(num_points)))


@pytree_dataclass(data_fields="all")
class ETDRK4Coefficients:
    """Precomputed ETDRK4 coefficients for a diagonal linear operator (Cox-Matthews form).

    Arrays broadcast against the spectral state. They are real when the linear operator
    is real (dissipative problems) and complex otherwise (advection).
    """

    exp_full: Array
    exp_half: Array
    q: Array
    f1: Array
    f2: Array
    f3: Array


def etdrk4_coefficients(
    linear: np.ndarray, h: float, *, num_contour_points: int = 32, dtype=jnp.float32
) -> ETDRK4Coefficients:
    """ETDRK4 coefficients of ``u_t = L u + N(u)`` for a time step ``h``.

    The phi-functions are evaluated by the contour-integral method of Kassam and
    Trefethen (2005): averaging over a circle of radius one around each ``h L`` avoids
    the cancellation that ruins the direct formulas for small ``|h L|``. The average runs
    over the full circle, so complex ``L`` (advection) is handled as well as real ``L``.

    Args:
        linear: diagonal linear operator ``L`` on the spectral grid (numpy, any shape).
        h: time step of one ETDRK4 step (time units of ``L``'s inverse).
        num_contour_points: points on the contour circle.
        dtype: real dtype of the solver; complex coefficients get the matching complex dtype.

    Returns:
        The coefficients, computed in float64 on the host and cast to ``dtype``.
    """
    lin = np.asarray(linear, dtype=np.complex128)
    hl = h * lin
    roots = np.exp(2j * np.pi * (np.arange(num_contour_points) + 0.5) / num_contour_points)
    lr = hl[..., None] + roots
    exp_lr = np.exp(lr)
    q = h * np.mean((np.exp(lr / 2) - 1) / lr, axis=-1)
    f1 = h * np.mean((-4 - lr + exp_lr * (4 - 3 * lr + lr**2)) / lr**3, axis=-1)
    f2 = h * np.mean((2 + lr + exp_lr * (-2 + lr)) / lr**3, axis=-1)
    f3 = h * np.mean((-4 - 3 * lr - lr**2 + exp_lr * (4 - lr)) / lr**3, axis=-1)
    arrays = [np.exp(hl), np.exp(hl / 2), q, f1, f2, f3]
    real = bool(np.all(lin.imag == 0))
    real_dtype = jnp.dtype(dtype)
    spectral_dtype = complex_dtype(real_dtype)
    cast = [
        jnp.asarray(a.real, real_dtype) if real else jnp.asarray(a, spectral_dtype) for a in arrays
    ]
    return ETDRK4Coefficients(*cast)


def etdrk4_step(
    v: Array, coefficients: ETDRK4Coefficients, nonlinear: Callable[[Array], Array]
) -> Array:
    """One ETDRK4 step (Cox and Matthews 2002) of ``v_t = L v + N(v)`` in spectral space.

    Args:
        v: spectral state.
        coefficients: from :func:`etdrk4_coefficients` for the step size.
        nonlinear: ``N``, mapping a spectral state to its (dealiased) nonlinear tendency.

    Returns:
        The spectral state one step later.
    """
    # Real coefficients (dissipative problems) meet a complex state: cast them explicitly,
    # as standard promotion would, so the step is valid under strict dtype promotion.
    c = jax.tree.map(lambda a: a.astype(v.dtype), coefficients)
    nv = nonlinear(v)
    a = c.exp_half * v + c.q * nv
    na = nonlinear(a)
    b = c.exp_half * v + c.q * na
    nb = nonlinear(b)
    cc = c.exp_half * a + c.q * (2 * nb - nv)
    nc = nonlinear(cc)
    return c.exp_full * v + c.f1 * nv + 2 * c.f2 * (na + nb) + c.f3 * nc


def gaussian_random_field(
    key: Array,
    num_points: Sequence[int],
    domain_length: Sequence[float],
    *,
    length_scale: float,
    smoothness: float,
    amplitude: float,
    max_wavenumber: float | None = None,
    dtype=jnp.float32,
) -> Array:
    """Zero-mean periodic Gaussian random field with a Matern-like spectrum.

    The power spectral density is ``S(k) ∝ (1 + (|k| * length_scale)^2)^(-smoothness)``
    for ``0 < |k| <= max_wavenumber`` and zero elsewhere (the mean is removed). The field
    is scaled so that its expected pointwise standard deviation equals ``amplitude``.

    Args:
        key: PRNG key.
        num_points: grid points per axis, ``(..., y, x)``.
        domain_length: axis lengths.
        length_scale: correlation length (coordinate units), > 0.
        smoothness: spectral decay exponent, > 0 (larger is smoother).
        amplitude: expected standard deviation (units of the field).
        max_wavenumber: angular-wavenumber cut-off; ``None`` keeps the dealiased band.
        dtype: real dtype of the result.

    Returns:
        Array of shape ``num_points``.
    """
    ks = wavenumbers(num_points, domain_length)
    k2 = sum(k**2 for k in ks)
    spectrum = (1.0 + k2 * length_scale**2) ** (-smoothness)
    spectrum = np.where(k2 == 0, 0.0, spectrum)
    if max_wavenumber is not None:
        spectrum = np.where(k2 > max_wavenumber**2, 0.0, spectrum)
    spectrum = spectrum * dealiasing_mask(num_points)
    # Expected variance is the mean of S over the *full* spectrum; on the rfft half the
    # interior columns of the last axis stand for two modes.
    n_last = num_points[-1]
    weights = np.full(spectrum.shape[-1], 2.0)
    weights[0] = 1.0
    if n_last % 2 == 0:
        weights[-1] = 1.0
    variance = float(np.sum(spectrum * weights) / np.prod(num_points))
    if variance == 0:
        raise ValueError(
            "gaussian_random_field: the spectrum is empty; raise max_wavenumber "
            f"(got {max_wavenumber}) above the lowest wavenumber of the domain"
        )
    filt = jnp.asarray(np.sqrt(spectrum / variance) * amplitude, dtype)
    noise = jax.random.normal(key, tuple(num_points), dtype)
    noise_hat = rfft(noise, len(num_points))
    return irfft(noise_hat * filt.astype(noise_hat.dtype), num_points).astype(dtype)
