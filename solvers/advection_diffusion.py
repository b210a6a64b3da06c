"""Linear advection-diffusion of a passive tracer, 1D or 2D periodic, exact in time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from solvers import spectral
from solvers.base import (
    check_nonnegative,
    check_positive,
    check_substeps,
    complex_dtype,
    is_int,
    resolve_precision,
)
from solvers.etdrk4 import ETDRK4Solver
from solvers.grid import Grid

Array = jax.Array

_AXES = {1: ("x",), 2: ("y", "x")}


def _as_tuple(owner: str, arg: str, value: Any, ndim: int | None) -> tuple:
    """``value`` as a tuple with one entry per axis (a scalar is one entry, or broadcast)."""
    if isinstance(value, str):
        raise ValueError(f"{owner}: {arg} must be a number or a sequence, got {value!r}")
    if isinstance(value, Sequence) or (isinstance(value, np.ndarray) and value.ndim == 1):
        values = tuple(value)
    else:
        values = (value,) * (ndim or 1)
    if ndim is not None and len(values) != ndim:
        raise ValueError(
            f"{owner}: {arg} must have {ndim} entries ordered like the axes "
            f"{_AXES.get(ndim, ndim)}, got {value!r}"
        )
    return values


class AdvectionDiffusion(ETDRK4Solver):
    """Advection-diffusion of a passive tracer by a uniform velocity, periodic, 1D or 2D.

    ``c_t + a . grad c = D lap c``. In spectral space this is ``c_hat_t = L c_hat`` with
    ``L = -i a . k - D |k|^2``, solved exactly: each internal step multiplies by
    ``exp(h L)`` (ETDRK4 with a zero nonlinear term reduces to exactly that), so the only
    error is round-off and ``dt`` is limited by nothing but the output cadence. The
    advective part uses :func:`spectral.derivative_wavenumbers` (Nyquist mode not
    advected), which keeps real fields real on even grids.

    Args:
        num_points: grid points, an int (1D, axis ``x``) or ``(ny, nx)`` (2D, axes
            ``("y", "x")``); each >= 4.
        domain_length: period of each axis (length units); a float (the same on every
            axis) or a sequence ordered like ``num_points``. Default 1.
        velocity: uniform advecting velocity (length / time units); a float in 1D, a
            sequence ``(a_y, a_x)`` in 2D. Default 1 (one domain crossing per time unit).
        diffusivity: ``D`` (length^2 / time units), >= 0. Default 1e-3.
        dt: output interval (time units), > 0. Default 0.02.
        num_substeps: internal steps per ``dt`` (exact for any value; they only set the
            size of :meth:`step`). Default 1.
        initial_amplitude: expected pointwise standard deviation of the random initial
            condition (concentration units), > 0. Default 1.
        initial_length_scale: correlation length of the initial condition (length
            units), > 0. Default 0.1.
        initial_smoothness: spectral decay exponent of the initial condition, > 0.
            Default 2.
        initial_mean: mean concentration of the initial condition (conserved). Default 0.
        precision: ``"float32"`` or ``"float64"`` (needs 64-bit JAX).

    Initial conditions: ``initial_mean`` plus a zero-mean Gaussian random field with
    power spectrum ``(1 + (|k| initial_length_scale)^2)^(-initial_smoothness)`` on the
    2/3-rule band (see :func:`spectral.gaussian_random_field`).

    State: ``(1, *num_points)``, channel ``"c"``.

    Raises:
        ValueError: a bad argument, named with its allowed range.
    """

    name = "advection_diffusion"
    variables = ("c",)
    conserved_means = ("c",)
    units = {"c": "1"}
    long_names = {"c": "tracer concentration"}
    # Physical parameters are leaves: solvers differing only in their values share a trace.
    _dynamic_fields = ETDRK4Solver._spectral_dynamic + (
        "velocity",
        "diffusivity",
        "initial_mean",
    )
    _static_fields = ETDRK4Solver._spectral_static + (
        "initial_amplitude",
        "initial_length_scale",
        "initial_smoothness",
    )

    def __init__(
        self,
        num_points: int | Sequence[int] = 128,
        domain_length: float | Sequence[float] = 1.0,
        velocity: float | Sequence[float] = 1.0,
        diffusivity: float = 1e-3,
        dt: float = 0.02,
        num_substeps: int = 1,
        initial_amplitude: float = 1.0,
        initial_length_scale: float = 0.1,
        initial_smoothness: float = 2.0,
        initial_mean: float = 0.0,
        precision: str = "float32",
    ) -> None:
        owner = type(self).__name__
        n = _as_tuple(owner, "num_points", num_points, None)
        if len(n) not in _AXES or not all(is_int(v) and v >= 4 for v in n):
            raise ValueError(
                f"{owner}: num_points must be an int >= 4 (1D) or a pair (ny, nx) of such "
                f"ints (2D), got {num_points!r}"
            )
        ndim = len(n)
        lengths = _as_tuple(owner, "domain_length", domain_length, ndim)
        check_positive(owner, **{f"domain_length[{i}]": v for i, v in enumerate(lengths)})
        vel = _as_tuple(owner, "velocity", velocity, 1 if ndim == 1 else ndim)
        if ndim == 2 and not isinstance(velocity, Sequence | np.ndarray):
            raise ValueError(
                f"{owner}: velocity must be a pair (a_y, a_x) on a 2D grid, got {velocity!r}"
            )
        for i, v in enumerate(vel):
            if not (isinstance(v, int | float | np.integer | np.floating) and math.isfinite(v)):
                raise ValueError(
                    f"{owner}: velocity[{i}] must be a finite number, got {v!r} "
                    f"(velocity={velocity!r})"
                )
        check_nonnegative(owner, diffusivity=diffusivity)
        check_positive(
            owner,
            dt=dt,
            initial_amplitude=initial_amplitude,
            initial_length_scale=initial_length_scale,
            initial_smoothness=initial_smoothness,
        )
        if not (
            isinstance(initial_mean, int | float | np.floating) and math.isfinite(initial_mean)
        ):
            raise ValueError(f"{owner}: initial_mean must be a finite number, got {initial_mean!r}")
        num_substeps = check_substeps(owner, num_substeps)
        resolve_precision(precision)

        grid = Grid(tuple(int(v) for v in n), tuple(float(v) for v in lengths), _AXES[ndim])
        ks = spectral.wavenumbers(grid.num_points, grid.domain_length)
        kds = spectral.derivative_wavenumbers(grid.num_points, grid.domain_length)
        k2 = sum(k**2 for k in ks)
        advection = sum(float(a) * kd for a, kd in zip(vel, kds, strict=True))
        linear = -1j * advection - float(diffusivity) * k2
        self._init_spectral(
            grid=grid,
            dt=float(dt),
            num_substeps=num_substeps,
            precision=precision,
            linear=linear[None],
        )
        # Complex even when the velocity is zero, so the pytree's dtypes (hence the
        # trace) do not depend on the velocity's value.
        spectral_dtype = complex_dtype(self.dtype)
        self._set(
            _coefficients=jax.tree.map(lambda a: a.astype(spectral_dtype), self._coefficients),
            velocity=tuple(float(a) for a in vel),
            diffusivity=float(diffusivity),
            initial_mean=float(initial_mean),
            initial_amplitude=float(initial_amplitude),
            initial_length_scale=float(initial_length_scale),
            initial_smoothness=float(initial_smoothness),
        )

    def config(self) -> dict[str, Any]:
        one_d = self.grid.ndim == 1
        return {
            "num_points": self.grid.num_points[0] if one_d else list(self.grid.num_points),
            "domain_length": (
                self.grid.domain_length[0] if one_d else list(self.grid.domain_length)
            ),
            "velocity": float(self.velocity[0]) if one_d else [float(a) for a in self.velocity],
            "diffusivity": float(self.diffusivity),
            "dt": self.dt,
            "num_substeps": self.num_substeps,
            "initial_amplitude": self.initial_amplitude,
            "initial_length_scale": self.initial_length_scale,
            "initial_smoothness": self.initial_smoothness,
            "initial_mean": float(self.initial_mean),
            "precision": self.precision,
        }

    def nonlinear(self, state_hat: Array) -> Array:
        """Zero: the equation is linear."""
        return jnp.zeros_like(state_hat)

    def spectral_step(self, state_hat: Array) -> Array:
        """``c_hat -> exp(h L) c_hat``, the exact solution over one internal step."""
        return self._coefficients.exp_full * state_hat

    def initial_condition(self, key: Array) -> Array:
        """A random tracer field ``(1, *num_points)`` (see the class docstring)."""
        c = spectral.gaussian_random_field(
            key,
            self.grid.num_points,
            self.grid.domain_length,
            length_scale=self.initial_length_scale,
            smoothness=self.initial_smoothness,
            amplitude=self.initial_amplitude,
            dtype=self.dtype,
        )
        return (c + jnp.asarray(self.initial_mean, self.dtype))[None]

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """``mass``: mean of c (conserved exactly); ``variance``: mean of (c - mass)^2
        (decays as ``exp(-2 D |k|^2 t)`` per mode)."""
        c = state[0]
        mass = jnp.mean(c)
        return {"mass": mass, "variance": jnp.mean((c - mass) ** 2)}


__all__ = ["AdvectionDiffusion"]
