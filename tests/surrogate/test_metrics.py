"""Skill metrics against values derived by hand on tiny arrays."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers.grid import Grid
from surrogate import metrics

# Hand-derived values computed in float64: only round-off separates them from the metric.
F64 = {"rtol": 1e-12, "atol": 1e-12}


def periodic_x(n: int, length: float) -> np.ndarray:
    return np.arange(n) * (length / n)


# ---- RMSE ------------------------------------------------------------------------------
def test_rmse_of_constant_offsets(x64):
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((2, 3, 2, 8))  # (N, T, C, x)
    offset = np.array([[0.0, 1.0], [2.0, -3.0], [0.5, 4.0]])  # (T, C)
    forecast = truth + offset[None, :, :, None]
    got = metrics.rmse(jnp.asarray(forecast), jnp.asarray(truth), spatial_ndim=1, sample_axis=0)
    np.testing.assert_allclose(got, np.abs(offset), **F64)
    # Without sample_axis every sample keeps its own value.
    per_sample = metrics.rmse(jnp.asarray(forecast), jnp.asarray(truth), spatial_ndim=1)
    np.testing.assert_allclose(per_sample, np.broadcast_to(np.abs(offset), (2, 3, 2)), **F64)


def test_rmse_averages_squared_errors_before_the_root(x64):
    truth = np.zeros((2, 1, 4, 4))  # (N, C, y, x)
    forecast = np.stack([np.full((1, 4, 4), 3.0), np.full((1, 4, 4), 4.0)])
    got = metrics.rmse(jnp.asarray(forecast), jnp.asarray(truth), spatial_ndim=2, sample_axis=0)
    # sqrt((9 + 16) / 2), not the mean of the two RMSEs (3.5).
    np.testing.assert_allclose(got, [math.sqrt(12.5)], **F64)


def test_normalized_rmse_divides_by_the_std_per_variable(x64):
    truth = np.zeros((3, 2, 6))
    forecast = truth + np.array([2.0, 6.0])[None, :, None]
    got = metrics.normalized_rmse(
        jnp.asarray(forecast), jnp.asarray(truth), jnp.array([4.0, 3.0]), spatial_ndim=1
    )
    np.testing.assert_allclose(got, np.tile([0.5, 2.0], (3, 1)), **F64)
    with pytest.raises(ValueError, match="std must have shape"):
        metrics.normalized_rmse(
            jnp.asarray(forecast), jnp.asarray(truth), jnp.ones(3), spatial_ndim=1
        )


def test_rmse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="forecast has shape"):
        metrics.rmse(jnp.zeros((2, 1, 8)), jnp.zeros((2, 1, 9)), spatial_ndim=1)


# ---- ACC -------------------------------------------------------------------------------
def _acc_fields():
    x = periodic_x(16, 2 * np.pi)
    clim = np.stack([0.3 * np.cos(x), np.full_like(x, 2.0)])  # (C=2, x)
    anomaly = np.stack([np.sin(x) + 0.2 * np.cos(3 * x), np.cos(2 * x)])
    return clim, clim + anomaly


@pytest.mark.parametrize(
    ("make_forecast", "expected"),
    [
        (lambda clim, truth: truth, 1.0),  # perfect
        (lambda clim, truth: 2 * clim - truth, -1.0),  # anomaly sign flipped
        (lambda clim, truth: clim + 2 * (truth - clim), 1.0),  # anomaly scaled by 2
    ],
    ids=["perfect", "anti", "scaled"],
)
def test_acc_of_correlated_forecasts(x64, make_forecast, expected):
    clim, truth = _acc_fields()
    forecast = make_forecast(clim, truth)
    for centered in (False, True):
        got = metrics.anomaly_correlation(
            jnp.asarray(forecast),
            jnp.asarray(truth),
            jnp.asarray(clim),
            spatial_ndim=1,
            centered=centered,
        )
        np.testing.assert_allclose(got, [expected, expected], **F64)


def test_acc_uncentred_penalises_a_mean_offset_and_centred_does_not(x64):
    x = periodic_x(32, 2 * np.pi)
    clim = np.zeros((1, 32))
    truth = np.sin(x)[None]
    forecast = (np.sin(x) + 1.0)[None]
    # sum sin (sin + 1) / sqrt(sum sin^2 * sum (sin + 1)^2) = (N/2) / sqrt(N/2 * 3N/2) = 1/sqrt(3)
    uncentred = metrics.anomaly_correlation(
        jnp.asarray(forecast), jnp.asarray(truth), jnp.asarray(clim), spatial_ndim=1
    )
    np.testing.assert_allclose(uncentred, [1 / math.sqrt(3)], **F64)
    centred = metrics.anomaly_correlation(
        jnp.asarray(forecast), jnp.asarray(truth), jnp.asarray(clim), spatial_ndim=1, centered=True
    )
    np.testing.assert_allclose(centred, [1.0], **F64)


def test_acc_averages_over_samples_and_is_nan_for_a_zero_anomaly(x64):
    x = periodic_x(8, 1.0)
    truth = np.stack([np.cos(2 * np.pi * x)[None]] * 2)  # (N=2, C=1, x)
    forecast = np.stack([truth[0], -truth[1]])
    clim = np.zeros((1, 8))
    got = metrics.anomaly_correlation(
        jnp.asarray(forecast), jnp.asarray(truth), jnp.asarray(clim), spatial_ndim=1, sample_axis=0
    )
    np.testing.assert_allclose(got, [0.0], **F64)  # mean of +1 and -1
    zero = metrics.anomaly_correlation(
        jnp.zeros((1, 8)), jnp.asarray(truth[0]), jnp.asarray(clim), spatial_ndim=1
    )
    assert np.isnan(np.asarray(zero)).all()


def test_acc_is_jittable(x64):
    clim, truth = _acc_fields()
    fn = jax.jit(lambda f, t, c: metrics.anomaly_correlation(f, t, c, spatial_ndim=1))
    np.testing.assert_allclose(
        fn(jnp.asarray(2 * clim - truth), jnp.asarray(truth), jnp.asarray(clim)),
        [-1.0, -1.0],
        **F64,
    )


# ---- valid time ------------------------------------------------------------------------
def test_valid_time_interpolates_between_lead_times(x64):
    leads = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    curves = np.array(
        [
            [1.0, 0.9, 0.7, 0.5, 0.3],  # crosses 0.6 half way from t=2 to t=3
            [1.0, 0.95, 0.9, 0.85, 0.8],  # never below
            [0.5, 0.4, 0.3, 0.2, 0.1],  # below from the start
            [1.0, 0.8, np.nan, 0.9, 0.9],  # blown up at t=2: skill lost there
        ]
    )
    got = metrics.valid_time(jnp.asarray(curves), jnp.asarray(leads), threshold=0.6)
    np.testing.assert_allclose(got, [2.5, np.inf, 0.0, 2.0], **F64)


def test_valid_time_on_uneven_leads_and_other_threshold(x64):
    # Line from (2, 0.8) to (6, 0.4) crosses 0.6 at 2 + 0.5 * 4 = 4; crosses 0.5 at 5.
    acc = jnp.array([1.0, 0.8, 0.4])
    leads = jnp.array([0.0, 2.0, 6.0])
    np.testing.assert_allclose(metrics.valid_time(acc, leads), 4.0, **F64)
    np.testing.assert_allclose(metrics.valid_time(acc, leads, threshold=0.5), 5.0, **F64)
    with pytest.raises(ValueError, match="lead_times must have shape"):
        metrics.valid_time(acc, jnp.array([0.0, 1.0]))


# ---- spectra ---------------------------------------------------------------------------
def test_power_spectrum_1d_single_mode_mean_and_nyquist(x64):
    n, length = 16, 22.0
    grid = Grid((n,), (length,), ("x",))
    x = periodic_x(n, length)
    a, b, c = 1.5, 0.7, 0.25
    k0 = 2 * np.pi * 3 / length
    u = a * np.cos(k0 * x + 0.4) + b + c * (-1.0) ** np.arange(n)
    k, e = metrics.power_spectrum(jnp.asarray(u[None]), grid)
    expected = np.zeros(n // 2 + 1)
    expected[0], expected[3], expected[n // 2] = b**2, a**2 / 2, c**2
    np.testing.assert_allclose(k, 2 * np.pi * np.arange(n // 2 + 1) / length, **F64)
    np.testing.assert_allclose(e[0], expected, **F64)
    np.testing.assert_allclose(np.sum(e), np.mean(u**2), **F64)  # Parseval


def test_power_spectrum_2d_shells_and_parseval(x64):
    # Square 2 pi box: mode (k_y, k_x) = (3, 4) has |k| = 5 and lands in shell 5.
    grid = Grid((16, 16), (2 * np.pi, 2 * np.pi), ("y", "x"))
    y, x = grid.meshgrid()
    a = 2.0
    k, e = metrics.power_spectrum(jnp.asarray(a * np.cos(3 * y + 4 * x)), grid)
    expected = np.zeros_like(k)
    expected[5] = a**2 / 2
    np.testing.assert_allclose(k[5], 5.0, **F64)
    np.testing.assert_allclose(e, expected, **F64)
    # Rectangular box (L_y, L_x) = (2 pi, 4 pi): dk = 0.5; (k_y, k_x) = (1, 1) has
    # |k| = sqrt(2) = 2.83 dk, so shell 3 at k = 1.5.
    rect = Grid((12, 16), (2 * np.pi, 4 * np.pi), ("y", "x"))
    y, x = rect.meshgrid()
    k, e = metrics.power_spectrum(jnp.asarray(np.sin(y + x)), rect)
    np.testing.assert_allclose(k[:4], [0.0, 0.5, 1.0, 1.5], **F64)
    np.testing.assert_allclose(e[3], 0.5, **F64)
    np.testing.assert_allclose(np.delete(np.asarray(e), 3), 0.0, **F64)
    # Parseval for random fields with batch axes, including the corner shells.
    field = np.random.default_rng(1).standard_normal((2, 3, 12, 16))
    _, e = metrics.power_spectrum(jnp.asarray(field), rect)
    assert e.shape == (2, 3, k.size)
    np.testing.assert_allclose(np.sum(e, -1), np.mean(field**2, (-2, -1)), **F64)


# ---- blow-up and drift -----------------------------------------------------------------
def test_blowup_time_of_a_planted_nan_and_a_planted_spike(x64):
    rng = np.random.default_rng(2)
    traj = rng.uniform(-1.0, 1.0, (2, 6, 2, 8))  # (N, T, C, x)
    traj[:, 0, :, 0] = 1.0  # initial amplitude exactly 1 in both channels
    traj[0, 4, 1, 3] = np.nan  # sample 0 breaks at frame 4
    traj[1, 3, 0, 5] = 10.5  # sample 1 exceeds 10 x its initial amplitude at frame 3
    got = metrics.blowup_time(jnp.asarray(traj), 0.5, threshold=10.0, spatial_ndim=1)
    np.testing.assert_allclose(got, [2.0, 1.5], **F64)
    clean = rng.uniform(-1.0, 1.0, (6, 2, 8))
    clean[1:, 0, 0] = 1.0 * 10.0  # equal to 10 x the start: not "exceeds"
    clean[0, 0, 0] = 1.0
    clean[0, 0, 1:] = 0.0
    inf = metrics.blowup_time(jnp.asarray(clean), 0.5, threshold=10.0, spatial_ndim=1)
    assert np.isinf(np.asarray(inf))


def test_blowup_time_with_a_reference_amplitude_and_a_channel_at_rest(x64):
    traj = np.zeros((5, 2, 4))
    traj[:, 0] = 1.0
    traj[2:, 1] = 0.3  # grows from rest: only a reference amplitude can judge it
    default = metrics.blowup_time(jnp.asarray(traj), 1.0, spatial_ndim=1)
    assert np.isinf(np.asarray(default))
    ref = metrics.blowup_time(
        jnp.asarray(traj), 1.0, spatial_ndim=1, reference_amplitude=jnp.array([1.0, 0.02])
    )
    np.testing.assert_allclose(ref, 2.0, **F64)  # 0.3 > 10 * 0.02 from frame 2


def test_invariant_drift(x64):
    got = metrics.invariant_drift(jnp.array([[2.0, 2.2, 1.8], [0.0, 0.1, 0.3]]))
    np.testing.assert_allclose(got[0], [0.0, 0.1, -0.1], **F64)
    assert np.isnan(np.asarray(got[1, 1:])).all()  # zero start: no relative drift
    scaled = metrics.invariant_drift(jnp.array([0.0, 0.1, 0.3]), scale=jnp.array(2.0))
    np.testing.assert_allclose(scaled, [0.0, 0.05, 0.15], **F64)


# ---- resampling ------------------------------------------------------------------------
def band_limited(rng, shape, max_index):
    """Random real field whose modes all have ``|index| < max_index`` on every axis."""
    x_hat = np.fft.rfftn(rng.standard_normal(shape), axes=range(-len(shape), 0))
    for axis, n in enumerate(shape):
        last = axis == len(shape) - 1
        f = np.fft.rfftfreq(n, 1 / n) if last else np.fft.fftfreq(n, 1 / n)
        keep = (np.abs(f) < max_index).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        x_hat = x_hat * keep
    return np.fft.irfftn(x_hat, s=shape, axes=range(-len(shape), 0))


@pytest.mark.parametrize(
    ("coarse", "fine"),
    [((8,), (16,)), ((7,), (16,)), ((8,), (15,)), ((8, 8), (16, 12)), ((6, 7), (13, 16))],
)
def test_resampling_round_trips(x64, coarse, fine):
    rng = np.random.default_rng(3)
    # Any coarse field, Nyquist mode included, is band-limited on the finer grid.
    x = rng.standard_normal((2, *coarse))
    back = metrics.downsample(metrics.upsample(jnp.asarray(x), fine), coarse)
    np.testing.assert_allclose(back, x, **F64)
    # A fine field below the coarse Nyquist survives coarsening then refining.
    y = band_limited(rng, fine, min(coarse) / 2)
    again = metrics.upsample(metrics.downsample(jnp.asarray(y), coarse), fine)
    np.testing.assert_allclose(again, y, **F64)


def test_upsample_interpolates_and_downsample_truncates(x64):
    length, n = 3.0, 8
    k1 = 2 * np.pi / length
    coarse_x, fine_x = periodic_x(n, length), periodic_x(3 * n, length)
    u = lambda x: np.cos(2 * k1 * x + 0.3) - 0.5 * np.sin(3 * k1 * x)  # noqa: E731
    np.testing.assert_allclose(
        metrics.upsample(jnp.asarray(u(coarse_x)), (3 * n,)), u(fine_x), **F64
    )
    # Mode 7 is above the coarse Nyquist (4): truncation drops it exactly.
    v = u(fine_x) + np.cos(7 * k1 * fine_x)
    np.testing.assert_allclose(metrics.downsample(jnp.asarray(v), (n,)), u(coarse_x), **F64)


def test_resampling_keeps_dtype_and_checks_direction():
    x = jnp.ones((1, 8, 8), jnp.float32)
    assert metrics.upsample(x, (16, 16)).dtype == jnp.float32
    with pytest.raises(ValueError, match="must be >="):
        metrics.upsample(x, (4, 8))
    with pytest.raises(ValueError, match="must be <="):
        metrics.downsample(x, (16, 8))
