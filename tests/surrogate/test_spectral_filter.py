"""The linear closure: a least-squares gain per Fourier mode on the coarse solver's output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import KuramotoSivashinsky, NavierStokes2D, rollout
from solvers.stepper import check_stepper
from surrogate.spectral_filter import SpectralFilter, apply_gain, fit_spectral_filter, gain_shape


def ks(precision: str = "float32") -> KuramotoSivashinsky:
    return KuramotoSivashinsky(
        num_points=32, domain_length=22.0, dt=0.5, num_substeps=2, precision=precision
    )


def known_gain(solver) -> np.ndarray:
    """A smooth complex gain with g(0) = 1 (what the fit keeps exactly)."""
    shape = gain_shape(solver)
    k = np.arange(shape[-1], dtype=np.float64)
    g = np.exp(-(k**2) / 60.0) * np.exp(0.3j * np.sin(k))
    g = np.broadcast_to(g, shape).copy()
    g[..., 0] = 1.0
    return np.stack([g.real, g.imag], axis=-1)


def filtered_trajectories(filt: SpectralFilter, n: int, t: int) -> np.ndarray:
    keys = jax.random.split(jax.random.key(0), n)
    x0 = jax.vmap(filt.solver.initial_condition)(keys)
    return np.asarray(jax.vmap(lambda x: rollout(filt, x, t - 1))(x0))


def test_the_fit_recovers_a_known_gain_to_round_off(x64):
    solver = ks("float64")
    truth = SpectralFilter(solver, known_gain(solver))
    data = filtered_trajectories(truth, 4, 6)
    fitted, info = fit_spectral_filter(solver, data, batch_size=8)
    assert info["pairs"] == 4 * 5 and info["fit_s"] > 0
    # The solver's 2/3-rule dealiasing keeps modes k > 10 of 32 points at exactly zero: no
    # data there, so the fit leaves them at gain 1. Elsewhere float64: a ratio of sums of
    # products of O(1) FFT coefficients, each exact to ~1e-15.
    gain, truth_gain = np.asarray(fitted.gain), known_gain(solver)
    np.testing.assert_allclose(gain[:, :11], truth_gain[:, :11], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(gain[:, 11:, 0], 1.0)
    np.testing.assert_array_equal(gain[:, 11:, 1], 0.0)
    assert info["train_nrmse_filter"] < 1e-12 < info["train_nrmse_solver"]


def test_stepper_contract_jit_vmap_dtype_and_unit_gain_is_the_solver():
    solver = ks()
    unit = np.zeros((*gain_shape(solver), 2), np.float32)
    unit[..., 0] = 1.0
    filt = SpectralFilter(solver, unit)
    check_stepper("test", filt, "filter")
    assert filt.state_shape == solver.state_shape and filt.dt == solver.dt
    x = jax.vmap(solver.initial_condition)(jax.random.split(jax.random.key(1), 3))
    out = jax.jit(jax.vmap(filt))(x)
    ref = jax.vmap(solver)(x)
    assert out.dtype == jnp.float32 and out.shape == x.shape
    # why: an rfft/irfft round trip in float32, ~1e-7 relative per transform.
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * float(jnp.abs(ref).max()))
    # A pytree: the gain is a leaf, so jit does not recompile for another gain.
    leaves = jax.tree.leaves(filt)
    assert any(np.shape(leaf) == unit.shape for leaf in leaves)


def test_two_dimensional_gain_layout():
    solver = NavierStokes2D(num_points=16, dt=0.5, num_substeps=15, viscosity=1e-2)
    assert gain_shape(solver) == (1, 16, 9)
    x = solver.initial_condition(jax.random.key(2))
    g = np.zeros((1, 16, 9, 2), np.float32)
    g[..., 0] = 0.5
    # why: one rfft2/irfft2 pair of 16^2 in float32, each transform ~log2(16) = 4 roundings
    # of eps relative to the field's maximum.
    atol = 8 * np.finfo(np.float32).eps * float(jnp.abs(x).max())
    np.testing.assert_allclose(apply_gain(x, jnp.asarray(g)), 0.5 * x, rtol=0, atol=atol)


def test_bad_shapes_are_named():
    solver = ks()
    with pytest.raises(ValueError, match=r"gain has shape \(1, 16, 2\), expected \(1, 17, 2\)"):
        SpectralFilter(solver, np.zeros((1, 16, 2), np.float32))
    with pytest.raises(ValueError, match=r"must be \(N, T, \*\(1, 32\)\)"):
        fit_spectral_filter(solver, np.zeros((2, 3, 1, 16), np.float32))
    with pytest.raises(ValueError, match="need T >= 2"):
        fit_spectral_filter(solver, np.zeros((2, 1, 1, 32), np.float32))
