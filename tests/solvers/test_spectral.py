"""Verification of the shared spectral numerics: ETDRK4 coefficients, dealiasing, random fields."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import spectral

H = 0.3  # time step used to scale the coefficients; any positive value works


def _direct(z: np.ndarray, h: float) -> dict[str, np.ndarray]:
    """Cox-Matthews closed forms; accurate only away from z = 0 (cancellation there)."""
    ez = np.exp(z)
    return {
        "exp_full": ez,
        "exp_half": np.exp(z / 2),
        "q": h * (np.exp(z / 2) - 1) / z,
        "f1": h * (-4 - z + ez * (4 - 3 * z + z**2)) / z**3,
        "f2": h * (2 + z + ez * (z - 2)) / z**3,
        "f3": h * (-4 - 3 * z - z**2 + ez * (4 - z)) / z**3,
    }


def _phi(j: int, z: np.ndarray, terms: int = 25) -> np.ndarray:
    """phi_j(z) = sum_n z^n / (n + j)!, by its Taylor series (exact to round-off for |z| <= 1)."""
    return sum(z**n / math.factorial(n + j) for n in range(terms))


def _taylor(z: np.ndarray, h: float) -> dict[str, np.ndarray]:
    """The same coefficients through phi-functions: f1 = h (phi1 - 3 phi2 + 4 phi3), etc."""
    p1, p2, p3 = _phi(1, z), _phi(2, z), _phi(3, z)
    return {
        "exp_full": _phi(0, z),
        "exp_half": _phi(0, z / 2),
        "q": h * _phi(1, z / 2) / 2,
        "f1": h * (p1 - 3 * p2 + 4 * p3),
        "f2": h * (p2 - 2 * p3),
        "f3": h * (-p2 + 4 * p3),
    }


def _points(radii: np.ndarray, complex_plane: bool) -> np.ndarray:
    """hL values on rays through the left and right half planes (or the real axis)."""
    if complex_plane:
        angles = np.array([0.1, 0.5, 0.75, 1.0, 1.25, 1.5, 1.9]) * np.pi / 2 * np.array([[1], [-1]])
        angles = np.concatenate([angles.ravel(), np.pi - angles.ravel(), [np.pi / 2, -np.pi / 2]])
        return (radii[:, None] * np.exp(1j * angles[None])).ravel()
    return np.concatenate([-radii, radii])


def _coefficients_as_numpy(coeffs) -> dict[str, np.ndarray]:
    return {
        f: np.asarray(getattr(coeffs, f)) for f in ("exp_full", "exp_half", "q", "f1", "f2", "f3")
    }


@pytest.mark.parametrize("complex_plane", [False, True], ids=["real_L", "complex_L"])
def test_etdrk4_coefficients_match_direct_formulas_for_moderate_hl(x64, complex_plane):
    radii = np.geomspace(1.0, 50.0, 12)
    z = _points(radii, complex_plane)
    if not complex_plane:
        z = z[z.real < 40]  # e^50 / 50^3 overflows nothing, but keep the real case tidy
    got = _coefficients_as_numpy(spectral.etdrk4_coefficients(z / H, H, dtype=jnp.float64))
    want = _direct(z, H)
    for name in want:
        # Direct formulas lose ~2 digits to cancellation at |hL| = 1 (terms of size ~10
        # summing to ~0.2); the contour mean is accurate to ~1e-15 relative.
        np.testing.assert_allclose(got[name], want[name], rtol=1e-11, atol=0, err_msg=name)
    assert all(np.iscomplexobj(v) == complex_plane for v in got.values())


@pytest.mark.parametrize("complex_plane", [False, True], ids=["real_L", "complex_L"])
def test_etdrk4_coefficients_match_taylor_series_for_tiny_hl(x64, complex_plane):
    z = _points(np.geomspace(1e-8, 1e-3, 11), complex_plane)
    got = _coefficients_as_numpy(spectral.etdrk4_coefficients(z / H, H, dtype=jnp.float64))
    want = _taylor(z, H)
    for name in want:
        # Round-off of a mean of 32 O(1) terms: a few ulps of the O(h) result.
        np.testing.assert_allclose(got[name], want[name], rtol=1e-13, atol=0, err_msg=name)
    # The direct formulas really are useless here (so the contour method is needed):
    bad = _direct(z, H)["f1"]
    assert np.max(np.abs(bad / want["f1"] - 1)) > 1e-3


def test_etdrk4_coefficients_at_zero_are_the_limits(x64):
    got = _coefficients_as_numpy(spectral.etdrk4_coefficients(np.zeros(3), H, dtype=jnp.float64))
    limits = {"exp_full": 1.0, "exp_half": 1.0, "q": H / 2, "f1": H / 6, "f2": H / 6, "f3": H / 6}
    for name, value in limits.items():
        # phi-function limits at 0 are exact rationals; contour mean to round-off.
        np.testing.assert_allclose(got[name], value, rtol=1e-14, atol=0, err_msg=name)


def test_etdrk4_coefficients_follow_the_requested_dtype():
    lin = np.array([0.0, -1.0, -4.0])
    real = spectral.etdrk4_coefficients(lin, 0.1, dtype=jnp.float32)
    cplx = spectral.etdrk4_coefficients(1j * lin, 0.1, dtype=jnp.float32)
    assert real.f1.dtype == jnp.float32
    assert cplx.f1.dtype == jnp.complex64


def test_etdrk4_step_with_zero_nonlinearity_is_the_exponential(x64):
    lin = -np.linspace(0.0, 20.0, 9) + 3j * np.linspace(-1.0, 1.0, 9)
    c = spectral.etdrk4_coefficients(lin, H, dtype=jnp.float64)
    v = jnp.asarray(np.exp(1j * np.arange(9.0)))
    out = spectral.etdrk4_step(v, c, jnp.zeros_like)
    # N = 0 leaves exactly one product exp(hL) v; adding zeros is exact.
    np.testing.assert_allclose(out, np.exp(H * lin) * np.asarray(v), rtol=1e-15, atol=1e-300)


def test_etdrk4_step_is_exact_for_constant_forcing(x64):
    # u' = L u + F has u(h) = e^{hL} u0 + h phi1(hL) F; ETDRK4 reproduces it exactly.
    lin = np.array([-0.5, -3.0, -40.0, 0.0]) + np.array([0.0, 2.0, -1.0, 0.0]) * 1j
    f = jnp.asarray([1.0, -2.0 + 1j, 0.5j, 3.0])
    u0 = jnp.asarray([0.3, 1.0, -1.0j, 2.0])
    c = spectral.etdrk4_coefficients(lin, H, dtype=jnp.float64)
    out = spectral.etdrk4_step(u0, c, lambda v: f)
    z = H * lin
    big = np.abs(z) > 1  # series for small |z|, the cancellation-free closed form elsewhere
    phi1 = np.where(big, (np.exp(z) - 1) / np.where(big, z, 1), _phi(1, z))
    want = np.exp(z) * np.asarray(u0) + H * phi1 * np.asarray(f)
    # Cancellation-free sums of O(1) terms: a few ulps.
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-15)


# ---- dealiasing ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [16, 17, 48, 64, 96, 100])
def test_dealiasing_mask_keeps_modes_below_a_third(n):
    mask = spectral.dealiasing_mask((n,))
    idx = np.arange(n // 2 + 1)
    np.testing.assert_array_equal(mask, idx < n / 3)
    if n % 3:
        np.testing.assert_array_equal(mask, idx <= n / 3)  # the same set when 3 does not divide n


@pytest.mark.parametrize("shape", [(48,), (64,), (96,), (48, 64), (30, 32)])
def test_dealiasing_mask_makes_quadratic_products_alias_free(shape):
    """Every pair of kept modes sums to a mode that is either exactly representable or
    aliases onto a removed mode (Orszag's 2/3 rule)."""
    mask = spectral.dealiasing_mask(shape)
    for axis, n in enumerate(shape):
        # Reduce to the 1D statement per axis: the mask is a tensor product.
        line = np.moveaxis(mask, axis, -1).reshape(-1, mask.shape[axis])[0]
        if axis == len(shape) - 1:
            kept = np.flatnonzero(line)
            kept = np.unique(np.concatenate([kept, -kept]))
        else:
            kept = np.fft.fftfreq(n, 1.0 / n)[line].astype(int)
        s = kept[:, None] + kept[None, :]
        aliased = s[np.abs(s) >= n / 2]
        wrapped = (aliased + n // 2) % n - n // 2
        assert not np.any(np.isin(wrapped, kept)), (shape, axis)


@pytest.mark.parametrize("n", [48, 64])
def test_dealiased_pseudo_spectral_product_equals_the_exact_product(x64, n):
    rng = np.random.default_rng(0)
    mask = spectral.dealiasing_mask((n,))
    m = n // 2 + 1
    u_hat = (rng.normal(size=m) + 1j * rng.normal(size=m)) * mask
    v_hat = (rng.normal(size=m) + 1j * rng.normal(size=m)) * mask
    u_hat[0] = u_hat[0].real
    v_hat[0] = v_hat[0].real
    u = np.fft.irfft(u_hat, n)
    v = np.fft.irfft(v_hat, n)
    got = np.asarray(spectral.rfft(jnp.asarray(u * v), 1)) * mask
    # Exact product by convolution of the full (two-sided) spectra, then truncation.
    uf, vf = np.fft.fft(u), np.fft.fft(v)
    k = np.fft.fftfreq(n, 1.0 / n).astype(int)
    exact = np.zeros(m, complex)
    for i, p in enumerate(k):
        for j, q in enumerate(k):
            if 0 <= p + q < m:
                exact[p + q] += uf[i] * vf[j] / n
    # Sums of ~n^2 products of O(1) numbers: round-off ~1e-13.
    np.testing.assert_allclose(got, exact * mask, rtol=0, atol=1e-11)


# ---- wavenumbers -----------------------------------------------------------------------------


def test_wavenumbers_differentiate_fourier_modes_exactly(x64):
    n, length = (12, 16), (3.0, 5.0)
    ky, kx = spectral.wavenumbers(n, length)
    y, x = np.meshgrid(
        *(np.arange(ni) * li / ni for ni, li in zip(n, length, strict=True)), indexing="ij"
    )
    f = np.sin(2 * np.pi * 2 * y / length[0]) * np.cos(2 * np.pi * 3 * x / length[1])
    dfdx = -np.sin(2 * np.pi * 2 * y / length[0]) * np.sin(2 * np.pi * 3 * x / length[1])
    dfdx *= 2 * np.pi * 3 / length[1]
    got = spectral.irfft(1j * kx * spectral.rfft(jnp.asarray(f), 2), n)
    # Exact for a resolved mode: round-off of two FFTs times |k| ~ 4.
    np.testing.assert_allclose(got, dfdx, rtol=0, atol=1e-13)
    assert ky.shape == (12, 1) and kx.shape == (1, 9)


def test_derivative_wavenumbers_zero_the_nyquist_mode_only():
    (k,) = spectral.wavenumbers((8,), (2 * np.pi,))
    (kd,) = spectral.derivative_wavenumbers((8,), (2 * np.pi,))
    np.testing.assert_array_equal(kd[..., :4], k[..., :4])
    assert kd[..., 4] == 0 and k[..., 4] == 4
    (kodd,) = spectral.derivative_wavenumbers((9,), (2 * np.pi,))
    np.testing.assert_array_equal(kodd, spectral.wavenumbers((9,), (2 * np.pi,))[0])


# ---- Gaussian random fields -------------------------------------------------------------------


def _draws(num, num_points, domain_length, **kwargs):
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(7), i))(jnp.arange(num))
    return np.asarray(
        jax.vmap(
            lambda k: spectral.gaussian_random_field(
                k, num_points, domain_length, dtype=jnp.float64, **kwargs
            )
        )(keys)
    )


def test_gaussian_random_field_flat_spectrum_statistics(x64):
    num, n, length, modes, amplitude = 800, 64, 2 * np.pi, 10, 0.7
    u = _draws(
        num,
        (n,),
        (length,),
        length_scale=0.0,
        smoothness=1.0,
        amplitude=amplitude,
        max_wavenumber=modes + 0.5,
    )
    assert u.shape == (num, n) and u.dtype == np.float64
    # The k = 0 mode is removed: every draw has zero mean to round-off.
    np.testing.assert_allclose(u.mean(axis=-1), 0.0, rtol=0, atol=1e-15)
    # Pooled variance over `num` draws of `modes` independent complex modes has relative
    # standard error 1 / sqrt(num * modes) = 1.1 %; the std then 0.56 %: allow 5 sigma.
    np.testing.assert_allclose(u.std(), amplitude, rtol=0.028, atol=0)
    u_hat = np.abs(np.fft.rfft(u, axis=-1))
    # Band-limited: nothing above mode 10 (round-off of an FFT of O(1) values).
    np.testing.assert_array_less(u_hat[:, modes + 1 :], 1e-12)
    assert np.all(u_hat[:, 1 : modes + 1].mean(axis=0) > 0.5 * u_hat[:, 1 : modes + 1].mean())


def test_gaussian_random_field_2d_matern_statistics(x64):
    num, n, length = 300, (24, 32), (1.0, 2.0)
    ell, nu, amplitude = 0.2, 1.5, 2.0
    u = _draws(num, n, length, length_scale=ell, smoothness=nu, amplitude=amplitude)
    assert u.shape == (num, *n)
    np.testing.assert_allclose(u.mean(axis=(-2, -1)), 0.0, rtol=0, atol=1e-14)  # round-off
    # Standard error of the pooled variance from the spectrum: var(m)/E(m)^2 = sum S^2 /
    # (sum S)^2 per draw over the independent modes (two-sided pairs count once).
    ky, kx = spectral.wavenumbers(n, length)
    k2 = ky**2 + kx**2
    s = (1 + k2 * ell**2) ** (-nu) * spectral.dealiasing_mask(n) * (k2 > 0)
    s = np.broadcast_to(s, s.shape).copy()
    s[:, 1:-1] *= 2  # interior rfft columns stand for a conjugate pair: one complex dof
    rel_var_err = math.sqrt(np.sum(s**2) / np.sum(s) ** 2 / num)
    # Std has half the variance's relative error; allow 5 sigma.
    np.testing.assert_allclose(u.std(), amplitude, rtol=2.5 * rel_var_err, atol=0)
    u_hat = np.abs(np.fft.rfft2(u))
    outside = ~np.broadcast_to(spectral.dealiasing_mask(n), u_hat.shape[1:])
    # Outside the 2/3 band: only FFT round-off of O(amplitude * size) sums.
    assert np.max(u_hat[:, outside]) < 1e-11


def test_gaussian_random_field_is_reproducible_and_key_dependent():
    kw = dict(length_scale=0.1, smoothness=2.0, amplitude=1.0)
    a = spectral.gaussian_random_field(jax.random.key(3), (32,), (1.0,), **kw)
    b = spectral.gaussian_random_field(jax.random.key(3), (32,), (1.0,), **kw)
    c = spectral.gaussian_random_field(jax.random.key(4), (32,), (1.0,), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.dtype == jnp.float32


def test_gaussian_random_field_empty_band_raises():
    with pytest.raises(ValueError, match="max_wavenumber"):
        spectral.gaussian_random_field(
            jax.random.key(0),
            (32,),
            (2 * np.pi,),
            length_scale=0.0,
            smoothness=1.0,
            amplitude=1.0,
            max_wavenumber=0.5,
        )


@pytest.mark.parametrize("shape", [(16,), (15,), (12, 16), (12, 15), (9, 7)])
def test_rfft_weights_make_half_spectrum_sums_full_spectrum_sums(shape):
    # Parseval on the half spectrum: sum w |u_hat|^2 == sum over the full fftn spectrum.
    u = np.random.default_rng(0).standard_normal(shape)
    half = np.abs(np.fft.rfftn(u)) ** 2 * spectral.rfft_weights(shape)
    full = np.abs(np.fft.fftn(u)) ** 2
    np.testing.assert_allclose(half.sum(), full.sum(), rtol=1e-12)
    np.testing.assert_allclose(half.sum(), u.size * np.sum(u**2), rtol=1e-12)


def test_radial_shells_count_modes_by_rounded_wavenumber():
    shell, dk = spectral.radial_shells((8, 8), (2 * np.pi, 4 * np.pi))
    assert shell.shape == (8, 5) and dk == pytest.approx(0.5)
    # (k_y, k_x) = (1, 0) on L_y = 2 pi: |k| = 1 -> shell 2; (0, 0.5) -> shell 1
    assert shell[1, 0] == 2 and shell[0, 1] == 1 and shell[0, 0] == 0
    ky, kx = spectral.wavenumbers((8, 8), (2 * np.pi, 4 * np.pi))
    np.testing.assert_array_equal(shell, np.rint(np.hypot(ky, kx) / dk))
