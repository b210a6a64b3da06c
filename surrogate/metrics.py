"""Weather-style skill metrics for forecasts of PDE states, as pure ``jnp`` functions.

Conventions (as everywhere in the project): a state is ``(C, *spatial)`` with one channel
per physical variable and spatial axes last, ordered ``(..., y, x)``. Every metric here
takes arrays ``(..., C, *spatial)`` with any number of leading axes (samples, lead times),
reduces over the last ``spatial_ndim`` axes and keeps the channel axis, so results are
per variable. Optionally one leading ``sample_axis`` is averaged too, the way WeatherBench 2
aggregates over initial conditions.

All functions are jit-able and differentiable where that makes sense; results keep the
floating dtype of their inputs (no dtype is hard-coded).

References:
    Rasp et al. (2024), WeatherBench 2: A benchmark for the next generation of data-driven
    global weather models, JAMES 16, e2023MS004019.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from solvers.base import promoted_dtype
from solvers.grid import Grid
from solvers.resolution import spectral_resample
from solvers.spectral import radial_shells, rfft_weights, spatial_axes

Array = jax.Array


# ---- helpers ---------------------------------------------------------------------------
def _check_spatial_ndim(owner: str, spatial_ndim: int, *arrays: Array) -> None:
    if not isinstance(spatial_ndim, int | np.integer) or spatial_ndim < 1:
        raise ValueError(f"{owner}: spatial_ndim must be an int >= 1, got {spatial_ndim!r}")
    for a in arrays:
        if a.ndim < spatial_ndim + 1:
            raise ValueError(
                f"{owner}: arrays must be (..., C, *spatial) with {spatial_ndim} spatial "
                f"axes, got an array of shape {tuple(a.shape)}"
            )


def _check_same_shape(owner: str, forecast: Array, truth: Array) -> None:
    if tuple(forecast.shape) != tuple(truth.shape):
        raise ValueError(
            f"{owner}: forecast has shape {tuple(forecast.shape)} but truth has shape "
            f"{tuple(truth.shape)}; they must match"
        )


def _per_channel(values: Array, spatial_ndim: int) -> Array:
    """Reshape ``(C,)`` to ``(C, 1, ..., 1)`` so it broadcasts against ``(C, *spatial)``."""
    values = jnp.asarray(values)
    return values.reshape(values.shape + (1,) * spatial_ndim)


def _reduce_samples(values: Array, sample_axis: int | None) -> Array:
    return values if sample_axis is None else jnp.mean(values, axis=sample_axis)


# ---- pointwise error -------------------------------------------------------------------
def mean_squared_error(forecast: Array, truth: Array, *, spatial_ndim: int) -> Array:
    """Spatial mean of the squared error, per variable.

    ``MSE = mean_x (f - o)^2`` over the grid points of one state.

    Args:
        forecast: ``(..., C, *spatial)``.
        truth: same shape as ``forecast``.
        spatial_ndim: number of trailing spatial axes (1 or 2 in this project).

    Returns:
        ``(..., C)`` in the variable's units squared.

    Raises:
        ValueError: mismatched shapes or too few axes.
    """
    _check_spatial_ndim("mean_squared_error", spatial_ndim, forecast, truth)
    _check_same_shape("mean_squared_error", forecast, truth)
    return jnp.mean((forecast - truth) ** 2, axis=spatial_axes(spatial_ndim))


def rmse(
    forecast: Array, truth: Array, *, spatial_ndim: int, sample_axis: int | None = None
) -> Array:
    """Root-mean-square error per variable (and per any leading axis, e.g. lead time).

    ``RMSE = sqrt(mean_n mean_x (f - o)^2)``: the spatial MSE of each state is averaged over
    the ``sample_axis`` (if given) *before* the square root, as in WeatherBench 2.

    Args:
        forecast: ``(..., C, *spatial)``, e.g. ``(N, T, C, *spatial)``.
        truth: same shape as ``forecast``.
        spatial_ndim: number of trailing spatial axes.
        sample_axis: a leading axis to average over (e.g. 0 for ``N``); ``None`` keeps it.

    Returns:
        ``(..., C)`` without the spatial axes (and without ``sample_axis`` if given), in the
        variable's units; ``(T, C)`` for ``(N, T, C, *spatial)`` inputs and ``sample_axis=0``.
    """
    mse = mean_squared_error(forecast, truth, spatial_ndim=spatial_ndim)
    return jnp.sqrt(_reduce_samples(mse, sample_axis))


def normalized_rmse(
    forecast: Array,
    truth: Array,
    std: Array,
    *,
    spatial_ndim: int,
    sample_axis: int | None = None,
) -> Array:
    """RMSE divided by the truth's climatological standard deviation, per variable.

    ``NRMSE_c = RMSE_c / sigma_c``; 0 is perfect, about ``sqrt(2)`` is the level of two
    independent draws from the climate (a random forecast), 1 that of forecasting the
    climatological mean.

    Args:
        forecast, truth, spatial_ndim, sample_axis: as in :func:`rmse`.
        std: ``(C,)`` climatological standard deviation of each variable (its units), > 0.

    Returns:
        Dimensionless ``(..., C)`` like :func:`rmse`.
    """
    std = jnp.asarray(std)
    if std.ndim != 1 or std.shape[0] != forecast.shape[-spatial_ndim - 1]:
        raise ValueError(
            f"normalized_rmse: std must have shape (C,) = ({forecast.shape[-spatial_ndim - 1]},)"
            f", got {tuple(std.shape)}"
        )
    return rmse(forecast, truth, spatial_ndim=spatial_ndim, sample_axis=sample_axis) / std


# ---- anomaly correlation ---------------------------------------------------------------
def anomaly_correlation(
    forecast: Array,
    truth: Array,
    climatology: Array,
    *,
    spatial_ndim: int,
    sample_axis: int | None = None,
    centered: bool = False,
) -> Array:
    """Anomaly correlation coefficient (ACC) per variable, WeatherBench 2 style.

    With anomalies ``f' = f - c`` and ``o' = o - c`` against the climatology ``c``, the ACC
    of one state is the correlation over space::

        ACC = sum_x f' o' / sqrt(sum_x f'^2 * sum_x o'^2)

    This is the *uncentred* ACC of WeatherBench 2 (default): the anomalies keep their
    spatial mean, so a forecast that gets the domain mean wrong is penalised. With
    ``centered=True`` the spatial mean of each anomaly is removed first (the centred ACC,
    i.e. the Pearson correlation of the anomaly patterns). The per-state ACC is averaged
    over ``sample_axis`` if given. It is +1 for a perfect (or positively scaled) anomaly,
    -1 for a sign-flipped one, and NaN where an anomaly is identically zero.

    Args:
        forecast: ``(..., C, *spatial)``.
        truth: same shape as ``forecast``.
        climatology: ``(C, *spatial)`` (or anything broadcastable), e.g. the time mean of the
            training data per grid point.
        spatial_ndim: number of trailing spatial axes.
        sample_axis: a leading axis to average over; ``None`` keeps it.
        centered: remove the spatial mean of the anomalies (centred ACC).

    Returns:
        Dimensionless ``(..., C)`` in ``[-1, 1]``.
    """
    _check_spatial_ndim("anomaly_correlation", spatial_ndim, forecast, truth)
    _check_same_shape("anomaly_correlation", forecast, truth)
    axes = spatial_axes(spatial_ndim)
    fa = forecast - climatology
    oa = truth - climatology
    if centered:
        fa = fa - jnp.mean(fa, axis=axes, keepdims=True)
        oa = oa - jnp.mean(oa, axis=axes, keepdims=True)
    num = jnp.sum(fa * oa, axis=axes)
    den = jnp.sqrt(jnp.sum(fa * fa, axis=axes) * jnp.sum(oa * oa, axis=axes))
    acc = jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.nan)
    return _reduce_samples(acc, sample_axis)


def valid_time(acc_curve: Array, lead_times: Array, threshold: float = 0.6) -> Array:
    """Lead time at which the ACC first drops below ``threshold`` (the skill horizon).

    Let ``i`` be the first lead index with ``acc[i] < threshold``. The result is the lead
    time where the straight line between ``(t[i-1], acc[i-1])`` and ``(t[i], acc[i])``
    crosses the threshold. Special cases:

    - never below the threshold: ``+inf`` (skill lasts beyond the evaluated leads);
    - already below at the first lead: ``t[0]``;
    - a non-finite ACC (a blown-up forecast) counts as skill lost at that lead, and the
      result is that lead time ``t[i]`` (no interpolation).

    Args:
        acc_curve: ``(..., L)``, ACC against lead time along the last axis.
        lead_times: ``(L,)`` increasing lead times (time units).
        threshold: skill threshold; 0.6 is the customary "useful forecast" limit.

    Returns:
        ``(...)`` lead times in the units of ``lead_times`` (floating dtype).
    """
    acc = jnp.asarray(acc_curve)
    t = jnp.asarray(lead_times, dtype=promoted_dtype(acc.dtype, jnp.float32))
    if t.ndim != 1 or t.shape[0] != acc.shape[-1] or t.shape[0] < 1:
        raise ValueError(
            f"valid_time: lead_times must have shape (L,) with L = acc_curve.shape[-1] = "
            f"{acc.shape[-1]} >= 1, got {tuple(t.shape)}"
        )
    below = ~(acc >= threshold)  # NaN counts as below: a blown-up forecast has no skill
    i = jnp.argmax(below, axis=-1)
    ip = jnp.maximum(i - 1, 0)
    a1 = jnp.take_along_axis(acc, i[..., None], axis=-1)[..., 0]
    a0 = jnp.take_along_axis(acc, ip[..., None], axis=-1)[..., 0]
    t1, t0 = t[i], t[ip]
    exact = (i == 0) | ~jnp.isfinite(a1)
    # a0 >= threshold > a1 on the interpolated branch, so a0 - a1 > 0.
    denom = jnp.where(exact, 1, a0 - a1)
    crossing = t0 + (a0 - threshold) / denom * (t1 - t0)
    result = jnp.where(exact, t1, crossing).astype(t.dtype)
    return jnp.where(jnp.any(below, axis=-1), result, jnp.inf).astype(t.dtype)


# ---- spectra ---------------------------------------------------------------------------
def spectrum_wavenumbers(grid: Grid) -> np.ndarray:
    """Wavenumbers (angular, ``2 pi / length`` units) of the shells of :func:`power_spectrum`.

    Shell ``j`` has centre ``j * dk`` with ``dk = 2 pi / max(domain_length)``, the
    fundamental wavenumber of the longest axis. In 1D these are exactly the rfft
    wavenumbers ``2 pi m / L``, ``m = 0 .. N // 2``; in 2D the shells reach the corner
    of the spectral grid so that no mode is dropped.

    Returns:
        ``(K,)`` float64 numpy array.
    """
    _, max_shell = _shell_index(grid)
    dk = 2 * np.pi / max(grid.domain_length)
    return np.arange(max_shell + 1, dtype=np.float64) * dk


def _shell_index(grid: Grid) -> tuple[np.ndarray, int]:
    """Shell index of every ``rfftn`` mode of the grid, and the largest index."""
    shell, _ = radial_shells(grid.num_points, grid.domain_length)
    return shell, int(shell.max())


def power_spectrum(field: Array, grid: Grid) -> tuple[np.ndarray, Array]:
    """Power spectrum of a periodic field: 1D per wavenumber, 2D isotropic (shell-summed).

    With the normalised Fourier coefficients ``u_hat(k) = (1/N) sum_x u(x) exp(-i k x)``
    (``N`` the number of grid points), the spectrum is

    - 1D: ``E(k_m) = |u_hat(k_m)|^2 + |u_hat(-k_m)|^2`` for ``m = 0 .. N // 2``
      (the Nyquist and mean modes counted once);
    - 2D: ``E(k_j) = sum over modes with round(|k| / dk) = j of |u_hat(k)|^2``.

    Either way Parseval holds: ``sum_k E(k) = mean_x u(x)^2``, so a mode
    ``a cos(k0 x)`` has ``E(k0) = a^2 / 2``. For the kinetic energy of a velocity field sum
    the spectra of its components and halve.

    Args:
        field: ``(..., *spatial)`` real array on ``grid`` (e.g. ``(N, C, *spatial)``).
        grid: the field's :class:`~solvers.grid.Grid`.

    Returns:
        ``(wavenumbers, spectrum)``: ``(K,)`` numpy angular wavenumbers (``2 pi / length``
        units, see :func:`spectrum_wavenumbers`) and ``(..., K)`` power in the field's units
        squared (per shell, not per unit wavenumber).
    """
    ndim = grid.ndim
    if tuple(field.shape[field.ndim - ndim :]) != grid.num_points or field.ndim < ndim:
        raise ValueError(
            f"power_spectrum: field has shape {tuple(field.shape)} but the grid has "
            f"num_points {grid.num_points} on its trailing axes"
        )
    shell, max_shell = _shell_index(grid)
    size = int(np.prod(grid.num_points))
    u_hat = jnp.fft.rfftn(field, axes=spatial_axes(ndim)) / size
    power = jnp.abs(u_hat) ** 2 * jnp.asarray(rfft_weights(grid.num_points), field.dtype)
    lead = field.shape[: field.ndim - ndim]
    flat = power.reshape((-1, shell.size))
    spectrum = jnp.zeros((flat.shape[0], max_shell + 1), flat.dtype)
    spectrum = spectrum.at[:, jnp.asarray(shell.reshape(-1))].add(flat)
    return spectrum_wavenumbers(grid), spectrum.reshape((*lead, max_shell + 1))


# ---- stability and invariants ----------------------------------------------------------
def exceeds_amplitude(frame: Array, reference: Array, threshold: float, *, spatial_ndim: int):
    """Whether a state ``(..., C, *spatial)`` is non-finite or too large (shape ``(...)``).

    True when any value is NaN/Inf, or when for any channel with ``reference > 0`` the
    largest absolute value exceeds ``threshold * reference``.

    Args:
        frame: ``(..., C, *spatial)``.
        reference: ``(..., C)`` reference amplitude per channel (broadcastable).
        threshold: the factor (dimensionless, > 0).
        spatial_ndim: number of trailing spatial axes.
    """
    axes = spatial_axes(spatial_ndim)
    amp = jnp.max(jnp.abs(frame), axis=axes)
    nonfinite = ~jnp.all(jnp.isfinite(frame), axis=(-1 - spatial_ndim, *axes))
    too_big = jnp.any((reference > 0) & (amp > threshold * reference), axis=-1)
    return nonfinite | too_big


def blowup_time(
    trajectory: Array,
    dt: float,
    threshold: float = 10.0,
    *,
    spatial_ndim: int,
    reference_amplitude: Array | None = None,
) -> Array:
    """Time of the first frame that is non-finite or larger than ``threshold`` x the start.

    Frame ``i`` sits at time ``i * dt`` (frame 0 is the initial state). A frame "blows up"
    when it holds a NaN/Inf, or when for some channel ``max_x |u_c| > threshold * A_c``
    with ``A_c`` the reference amplitude: by default ``max_x |u_c|`` of frame 0; channels
    with ``A_c = 0`` are checked for finiteness only (pass ``reference_amplitude``, e.g.
    the climatological maximum, when a channel starts at rest).

    Args:
        trajectory: ``(..., T, C, *spatial)``.
        dt: time between frames (time units).
        threshold: amplitude factor, > 0.
        spatial_ndim: number of trailing spatial axes.
        reference_amplitude: ``(..., C)`` or ``(C,)`` amplitude per channel (its units).

    Returns:
        ``(...)`` blow-up time (time units), ``+inf`` if no frame blows up.
    """
    _check_spatial_ndim("blowup_time", spatial_ndim, trajectory)
    if trajectory.ndim < spatial_ndim + 2:
        raise ValueError(
            f"blowup_time: trajectory must be (..., T, C, *spatial), got {tuple(trajectory.shape)}"
        )
    if not threshold > 0:
        raise ValueError(f"blowup_time: threshold must be > 0, got {threshold!r}")
    axes = spatial_axes(spatial_ndim)
    if reference_amplitude is None:
        first = jnp.take(trajectory, 0, axis=-2 - spatial_ndim)
        reference_amplitude = jnp.max(jnp.abs(first), axis=axes)
    ref = jnp.asarray(reference_amplitude)[..., None, :]  # broadcast over T
    bad = exceeds_amplitude(trajectory, ref, threshold, spatial_ndim=spatial_ndim)
    first_bad = jnp.argmax(bad, axis=-1)
    dtype = promoted_dtype(trajectory.dtype, jnp.float32)
    return jnp.where(jnp.any(bad, axis=-1), first_bad.astype(dtype) * dt, jnp.inf).astype(dtype)


def invariant_drift(diagnostic_series: Array, *, scale: Array | None = None) -> Array:
    """Relative drift of a scalar diagnostic (mass, energy, ...) against time.

    ``drift(t) = (s(t) - s(0)) / S`` with the scale ``S = |s(0)|`` by default. Quantities
    whose initial value is zero (the mean of a zero-mean field) have no meaningful relative
    drift: pass a ``scale`` (in the diagnostic's units) or get NaN there.

    Args:
        diagnostic_series: ``(..., T)``, time along the last axis.
        scale: ``(...)`` (broadcastable) positive scale; default ``|s(0)|``.

    Returns:
        ``(..., T)`` dimensionless signed drift, 0 at ``t = 0``.
    """
    s = jnp.asarray(diagnostic_series)
    if s.ndim < 1:
        raise ValueError("invariant_drift: diagnostic_series must have a time axis (..., T)")
    s0 = s[..., :1]
    scale = jnp.abs(s0) if scale is None else jnp.asarray(scale, s.dtype)[..., None]
    return jnp.where(scale > 0, (s - s0) / jnp.where(scale > 0, scale, 1), jnp.nan)


# ---- spectral resampling ---------------------------------------------------------------
def resample(field: Array, num_points: Sequence[int]) -> Array:
    """Spectral resampling of a periodic field onto ``num_points`` over its trailing axes.

    The one implementation is :func:`solvers.resolution.spectral_resample` (Fourier
    truncation when coarsening, zero padding when refining, an even grid's Nyquist mode
    folded or split so that refining then coarsening back is exact to round-off).

    Args:
        field: ``(..., *spatial)`` real array.
        num_points: the new spatial shape ``(..., y, x)``; its length sets how many
            trailing axes are spatial.

    Returns:
        ``(..., *num_points)`` in the dtype of ``field``.
    """
    return spectral_resample(field, tuple(int(n) for n in num_points))


def downsample(field: Array, num_points: Sequence[int]) -> Array:
    """Coarsen a periodic field by Fourier truncation (see :func:`resample`).

    Args:
        field: ``(..., *spatial)``.
        num_points: coarse shape, each entry ``<=`` the field's.

    Returns:
        ``(..., *num_points)``.
    """
    _check_direction("downsample", field, num_points, finer=False)
    return resample(field, num_points)


def upsample(field: Array, num_points: Sequence[int]) -> Array:
    """Refine a periodic field by zero-padding its Fourier modes (see :func:`resample`).

    Args:
        field: ``(..., *spatial)``.
        num_points: fine shape, each entry ``>=`` the field's.

    Returns:
        ``(..., *num_points)``.
    """
    _check_direction("upsample", field, num_points, finer=True)
    return resample(field, num_points)


def _check_direction(owner: str, field: Array, num_points: Sequence[int], finer: bool) -> None:
    num_points = tuple(int(n) for n in num_points)
    old = tuple(field.shape[field.ndim - len(num_points) :])
    ok = all((n >= o) if finer else (n <= o) for n, o in zip(num_points, old, strict=True))
    if not ok:
        rel = ">=" if finer else "<="
        raise ValueError(
            f"{owner}: num_points {num_points} must be {rel} the field's spatial shape {old}"
        )


__all__ = [
    "anomaly_correlation",
    "blowup_time",
    "downsample",
    "exceeds_amplitude",
    "invariant_drift",
    "mean_squared_error",
    "normalized_rmse",
    "power_spectrum",
    "resample",
    "rmse",
    "spectrum_wavenumbers",
    "upsample",
    "valid_time",
]
