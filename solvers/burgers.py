"""Viscous Burgers equation, 1D periodic, pseudo-spectral ETDRK4."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from solvers import spectral
from solvers.base import (
    check_int,
    check_positive,
    check_stability,
    check_substeps,
    is_int,
    resolve_precision,
)
from solvers.etdrk4 import ETDRK4Solver
from solvers.grid import Grid

Array = jax.Array

# ETDRK4 integrates the diffusion exactly; the step limit is the advective Courant number
# C = u_max * h / dx, with u_max <= initial_amplitude by the maximum principle. Measured in
# float64 (random initial conditions of this class with max |u0| = 1, 8 seeds, L = 2 pi,
# t = 0..4 through shock formation; unstable = non-finite or max |u| > 1.5), first unstable C:
#   N = 128: 2.0 (nu = 1e-4), 2.2 (5e-4), 2.3 (2e-3); nu = 0.01: 3.0; nu = 0.05: > 3
#   N = 256: 1.85 (1e-4), 1.85 (5e-4), 2.0 (2e-3); nu >= 0.01: > 3
#   N = 512: 1.65 (1e-4), 1.7 (5e-4), 1.95 (2e-3)
#   N = 1024: 1.55 (1e-4), 1.65 (5e-4), 2.15 (2e-3)
# It falls with N towards the linear bound of RK4 on the imaginary axis at the dealiasing
# cut-off, 2 sqrt(2) * 3 / (2 pi) = 1.35 (under-resolved fronts keep |u| near u_max at
# every scale). The limit below keeps a margin of about 25 % to that bound.
_COURANT_MEASURED = 1.35
_MAX_COURANT = 1.0


class Burgers(ETDRK4Solver):
    """Viscous Burgers equation on a periodic interval (steepening fronts, shocks).

    ``u_t + u u_x = nu u_xx``, written ``u_t = L u + N(u)`` with ``L = -nu k^2`` (exact
    in ETDRK4) and ``N = -1/2 (u^2)_x`` (conservative form, dealiased by the 2/3 rule).

    Args:
        num_points: grid points (even, >= 8). Default 256.
        domain_length: period (length units). Default ``2 pi``.
        viscosity: ``nu`` (length^2 / time units), > 0. A front of jump ``2 U`` has width
            about ``2 nu / U``; it is resolved when that spans a few grid spacings.
            Default 0.02: with amplitude 1 on 256 points over ``2 pi`` the spectrum near
            the dealiasing cut-off stays below 2e-3 of its peak through shock formation.
        dt: output interval (time units). Default 0.05.
        num_substeps: internal ETDRK4 steps per ``dt``. Default 5.
        initial_amplitude: ``max |u|`` of the initial condition (velocity units), > 0.
        initial_max_mode: highest Fourier mode index (cycles per domain) of the initial
            condition, in ``[1, num_points // 3]``. Default 4.
        precision: ``"float32"`` or ``"float64"`` (needs 64-bit JAX).

    Initial conditions: a zero-mean Gaussian random field with flat spectrum over modes
    ``1..initial_max_mode``, rescaled so that ``max |u| = initial_amplitude`` exactly
    (so the maximum principle bounds ``|u|`` by ``initial_amplitude`` for all time).

    State: ``(1, num_points)``, channel ``"u"``.

    Raises:
        ValueError: a non-positive or non-finite argument, an odd ``num_points``, or an
            internal step whose Courant number ``initial_amplitude * dt / num_substeps /
            dx`` exceeds 1.0 (ETDRK4 is measured unstable from about 1.35 to 3,
            depending on resolution and viscosity).
    """

    name = "burgers"
    variables = ("u",)
    conserved_means = ("u",)
    units = {"u": "1"}
    long_names = {"u": "velocity"}
    # viscosity is a leaf: solvers differing only in its value share a trace.
    _dynamic_fields = ETDRK4Solver._spectral_dynamic + ("_k", "viscosity")
    _static_fields = ETDRK4Solver._spectral_static + (
        "domain_length",
        "initial_amplitude",
        "initial_max_mode",
    )

    def __init__(
        self,
        num_points: int = 256,
        domain_length: float = 2 * math.pi,
        viscosity: float = 0.02,
        dt: float = 0.05,
        num_substeps: int = 5,
        initial_amplitude: float = 1.0,
        initial_max_mode: int = 4,
        precision: str = "float32",
    ) -> None:
        owner = type(self).__name__
        check_positive(
            owner,
            domain_length=domain_length,
            viscosity=viscosity,
            dt=dt,
            initial_amplitude=initial_amplitude,
        )
        num_substeps = check_substeps(owner, num_substeps)
        if not is_int(num_points) or num_points < 8 or num_points % 2:
            raise ValueError(f"{owner}: num_points must be an even int >= 8, got {num_points!r}")
        check_int(owner, "initial_max_mode", initial_max_mode, 1, num_points // 3)
        dtype = resolve_precision(precision)
        grid = Grid((num_points,), (float(domain_length),), ("x",))
        (dx,) = grid.spacing
        check_stability(
            owner,
            internal_dt=dt / num_substeps,
            limit=_MAX_COURANT * dx / initial_amplitude,
            dt=dt,
            num_substeps=num_substeps,
            reason=(
                f"advective Courant number initial_amplitude * h / dx must be <= "
                f"{_MAX_COURANT}; ETDRK4 with 2/3 dealiasing goes unstable near "
                f"C = {_COURANT_MEASURED} on fine grids"
            ),
        )
        (k,) = spectral.wavenumbers(grid.num_points, grid.domain_length)
        self._init_spectral(
            grid=grid,
            dt=float(dt),
            num_substeps=num_substeps,
            precision=precision,
            linear=(-float(viscosity) * k**2)[None],
        )
        (kd,) = spectral.derivative_wavenumbers(grid.num_points, grid.domain_length)
        self._set(
            domain_length=float(domain_length),
            viscosity=float(viscosity),
            initial_amplitude=float(initial_amplitude),
            initial_max_mode=int(initial_max_mode),
            _k=jnp.asarray(kd[None], dtype),
        )

    def config(self) -> dict[str, Any]:
        return {
            "num_points": self.grid.num_points[0],
            "domain_length": self.domain_length,
            "viscosity": float(self.viscosity),
            "dt": self.dt,
            "num_substeps": self.num_substeps,
            "initial_amplitude": self.initial_amplitude,
            "initial_max_mode": self.initial_max_mode,
            "precision": self.precision,
        }

    def nonlinear(self, state_hat: Array) -> Array:
        """``-1/2 i k (u^2)_hat``, with u and the product dealiased (2/3 rule)."""
        return self.conservative_advection_1d(state_hat, self._k)

    def initial_condition(self, key: Array) -> Array:
        """A random smooth field ``(1, num_points)`` with ``max |u| = initial_amplitude``."""
        k1 = 2 * math.pi / self.domain_length
        u = spectral.gaussian_random_field(
            key,
            self.grid.num_points,
            self.grid.domain_length,
            length_scale=0.0,
            smoothness=1.0,
            amplitude=1.0,
            max_wavenumber=(self.initial_max_mode + 0.5) * k1,
            dtype=self.dtype,
        )
        u = u * (jnp.asarray(self.initial_amplitude, self.dtype) / jnp.max(jnp.abs(u)))
        return u[None]

    def courant_number(self, state: Array) -> Array:
        """Advective Courant number ``max |u| h / dx`` of ``state`` at the internal step
        ``h = dt / num_substeps`` (dimensionless, scalar in the state's dtype): the quantity
        the start-up check bounds through ``initial_amplitude`` (limit 1.0), for states the
        solver did not produce itself (the hybrid runner's ``CourantNumber`` indicator)."""
        (dx,) = self.grid.spacing
        return (jnp.max(jnp.abs(state)) * (self.dt / self.num_substeps) / dx).astype(state.dtype)

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """``mass``: mean of u (conserved); ``energy``: ``mean(u^2) / 2`` (non-increasing);
        ``max_abs``: ``max |u|`` (non-increasing, maximum principle)."""
        u = state[0]
        return {
            "mass": jnp.mean(u),
            "energy": 0.5 * jnp.mean(u * u),
            "max_abs": jnp.max(jnp.abs(u)),
        }


__all__ = ["Burgers"]
