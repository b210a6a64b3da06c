"""A linear closure: the coarse solver's output multiplied by a fitted gain per Fourier mode.

The baseline a learned correction has to beat. The coarse solver's error over one output
interval is partly *linear* in its output: under-resolved transfer damps or amplifies each
wavenumber by a roughly fixed factor on the attractor. The best such correction is

    x_next = F^{-1}( g(k) . F(P(x)) )

with one complex gain ``g(k)`` per real-FFT coefficient and channel, fitted by least squares
on the training pairs (a closed form, per coefficient:
``g = sum conj(P^) Y^ / sum |P^|^2``) in seconds, with no network and one FFT pair per step.
Kept exact: ``g(0) = 1``, so a conserved mean stays the solver's; a mode the data never
excites (zero in every pair, e.g. removed by the solver's dealiasing) keeps ``g = 1``.

On the main job's data (Kolmogorov flow, 128^2 stored on 32^2) this filter takes the 32^2
solver's one-interval nRMSE from 0.38 to 0.30 on the test windows, a little *better* than
the FNO correction trained through the solver (0.32): the FNO had learned little beyond a
linear filter. The front therefore runs it beside every learned stepper
(``front.spectral_filter``), so that a network is credited only for what it adds to it.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from solvers.base import complex_dtype
from solvers.pytree import register_fields
from solvers.stepper import Stepper, WrapsSolver, check_stepper

Array = jax.Array


class SpectralFilter(WrapsSolver):
    """A stepper: the base solver's interval, then a gain per Fourier mode (module doc).

    Args:
        solver: the coarse solver (its ``dt``, grid and variables are the stepper's).
        gain: ``(C, *rfft shape, 2)`` real and imaginary parts of ``g`` per channel and
            real-FFT coefficient of the grid (``rfftn`` over the spatial axes: the last
            axis has ``n // 2 + 1`` entries).

    Raises:
        ValueError: ``gain`` has another shape.
    """

    def __init__(self, solver: Stepper, gain: Any) -> None:
        check_stepper("SpectralFilter", solver, "solver")
        expected = (*gain_shape(solver), 2)
        if tuple(np.shape(gain)) != expected:
            raise ValueError(
                f"SpectralFilter: gain has shape {tuple(np.shape(gain))}, expected {expected} "
                f"(channels, real-FFT coefficients of the grid {tuple(solver.grid.num_points)}, "
                "[re, im])"
            )
        object.__setattr__(self, "solver", solver)
        object.__setattr__(self, "gain", jnp.asarray(gain))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SpectralFilter is immutable")

    # ---- stepper metadata (the solver's, from WrapsSolver) ------------------------------
    @property
    def name(self) -> str:
        """The base solver's name with ``+spectral_filter``."""
        return f"{self.solver.name}+spectral_filter"

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """The base solver's diagnostics of a state."""
        return self.solver.diagnostics(state)

    def config(self) -> dict[str, Any]:
        """Description for provenance (the gain itself is data, not config)."""
        return {"kind": "spectral_filter", "solver": self.solver.config()}

    # ---- the map -------------------------------------------------------------------------
    def __call__(self, state: Array) -> Array:
        """Advance one state ``(C, *spatial)`` by ``dt``: ``F^{-1}(g . F(P(x)))``."""
        return apply_gain(self.solver(state), self.gain)

    advance = __call__


register_fields(SpectralFilter, ("solver", "gain"))


def gain_shape(solver: Stepper) -> tuple[int, ...]:
    """``(C, *rfft shape)`` of ``solver``'s grid."""
    *rest, last = (int(n) for n in solver.grid.num_points)
    return (len(solver.variables), *rest, last // 2 + 1)


def apply_gain(state: Array, gain: Array) -> Array:
    """``F^{-1}(g . F(state))`` over the spatial axes of ``(..., C, *spatial)``."""
    spatial = tuple(state.shape[-(gain.ndim - 2) :])
    axes = tuple(range(state.ndim - len(spatial), state.ndim))
    h = jnp.fft.rfftn(state, axes=axes)
    cdt = complex_dtype(state.dtype)
    g = jax.lax.complex(gain[..., 0], gain[..., 1]).astype(cdt)
    return jnp.fft.irfftn(h * g, s=spatial, axes=axes).astype(state.dtype)


def fit_spectral_filter(
    solver: Stepper, trajectories: Any, *, batch_size: int = 64
) -> tuple[SpectralFilter, dict[str, Any]]:
    """Fit the least-squares gain on every consecutive pair of ``trajectories``.

    Args:
        solver: the coarse solver (the dataset's grid, ``dt`` and variables).
        trajectories: ``(N, T, C, *spatial)`` stored frames (e.g. the training split).
        batch_size: states per compiled solver call.

    Returns:
        ``(filter, info)``: the stepper, and ``{"pairs", "fit_s",
        "train_nrmse_solver", "train_nrmse_filter"}`` (the one-interval nRMSE of the
        solver alone and with the filter on the training pairs).

    Raises:
        ValueError: the frames are not ``(N, T >= 2, *solver.state_shape)``.
    """
    data = np.asarray(trajectories)
    if data.ndim != 2 + len(solver.state_shape) or tuple(data.shape[2:]) != tuple(
        solver.state_shape
    ):
        raise ValueError(
            f"fit_spectral_filter: trajectories must be (N, T, *{tuple(solver.state_shape)}), "
            f"got {data.shape}"
        )
    if data.shape[1] < 2:
        raise ValueError(f"fit_spectral_filter: need T >= 2 frames, got {data.shape}")
    t0 = time.perf_counter()
    x = data[:, :-1].reshape(-1, *data.shape[2:])
    y = data[:, 1:].reshape(-1, *data.shape[2:])
    step = jax.jit(jax.vmap(solver))
    pad = -len(x) % batch_size
    xp = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
    p = np.concatenate(
        [
            np.asarray(step(jnp.asarray(xp[i : i + batch_size])))
            for i in range(0, len(xp), batch_size)
        ]
    )[: len(x)]
    axes = tuple(range(2, x.ndim))
    ph = np.fft.rfftn(p.astype(np.float64), axes=axes)
    yh = np.fft.rfftn(y.astype(np.float64), axes=axes)
    num = np.sum(np.conj(ph) * yh, axis=0)
    den = np.sum(np.abs(ph) ** 2, axis=0)
    tiny = np.finfo(np.float64).eps * max(float(den.max()), np.finfo(np.float64).tiny)
    g = np.where(den > tiny, num / np.maximum(den, tiny), 1.0)
    g[(slice(None),) + (0,) * len(axes)] = 1.0  # the mean is the solver's (conserved)
    gain = np.stack([g.real, g.imag], axis=-1).astype(np.dtype(data.dtype))
    filt = SpectralFilter(solver, gain)
    fitted = np.fft.irfftn(ph * g, s=x.shape[2:], axes=axes)
    info = {
        "pairs": int(len(x)),
        "fit_s": time.perf_counter() - t0,
        "train_nrmse_solver": _nrmse(p, y),
        "train_nrmse_filter": _nrmse(fitted, y),
    }
    return filt, info


def _nrmse(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


__all__ = ["SpectralFilter", "apply_gain", "fit_spectral_filter", "gain_shape"]
