"""Kuramoto-Sivashinsky equation, 1D periodic, pseudo-spectral ETDRK4."""

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

# ETDRK4 integrates the stiff k^4 damping exactly, so the step limit comes from the
# nonlinear term at mid wavenumbers and barely depends on resolution. Measured on the
# attractor (|u| < 4): stable at h = 1.0 for N = 64..256, L = 22..32 pi, unstable from
# h = 1.5 (N = 256, L = 32 pi). The start-up check uses the measured safe value.
_MAX_INTERNAL_DT = 1.0


class KuramotoSivashinsky(ETDRK4Solver):
    """Kuramoto-Sivashinsky equation on a periodic interval (chaotic for long domains).

    ``u_t + u u_x + u_xx + u_xxxx = 0``, written ``u_t = L u + N(u)`` with
    ``L = k^2 - k^4`` (exact in ETDRK4) and ``N = -1/2 (u^2)_x`` (dealiased, 2/3 rule).

    Args:
        num_points: grid points (even, >= 8).
        domain_length: period ``L`` (nondimensional); chaos needs ``L`` above about 13,
            ``L = 22`` is the classical minimal chaotic box, ``32 pi`` a well-developed one.
        dt: output interval (nondimensional time).
        num_substeps: internal ETDRK4 steps per ``dt``.
        initial_amplitude: standard deviation of the random initial condition.
        initial_max_mode: highest Fourier mode index (cycles per domain) in the initial
            condition; modes beyond the dealiased band (about N/3) are never drawn, so a
            coarser copy of a solver (same keywords, fewer points) stays valid.
        precision: ``"float32"`` or ``"float64"``.

    Initial conditions: a zero-mean Gaussian random field with flat spectrum over
    modes ``1..initial_max_mode``, standard deviation ``initial_amplitude``.

    Raises:
        ValueError: a non-positive or non-finite argument, an odd ``num_points``, or an
            internal step ``dt / num_substeps`` above 1.0 (ETDRK4 is measured unstable on
            the KS attractor from 1.5).
    """

    name = "kuramoto_sivashinsky"
    variables = ("u",)
    conserved_means = ("u",)
    units = {"u": "1"}
    long_names = {"u": "Kuramoto-Sivashinsky field"}
    _dynamic_fields = ETDRK4Solver._spectral_dynamic + ("_k",)
    _static_fields = ETDRK4Solver._spectral_static + (
        "domain_length",
        "initial_amplitude",
        "initial_max_mode",
    )

    def __init__(
        self,
        num_points: int = 256,
        domain_length: float = 32 * math.pi,
        dt: float = 1.0,
        num_substeps: int = 4,
        initial_amplitude: float = 1.0,
        initial_max_mode: int = 8,
        precision: str = "float32",
    ) -> None:
        owner = type(self).__name__
        check_positive(
            owner, domain_length=domain_length, dt=dt, initial_amplitude=initial_amplitude
        )
        num_substeps = check_substeps(owner, num_substeps)
        if not is_int(num_points) or num_points < 8 or num_points % 2:
            raise ValueError(f"{owner}: num_points must be an even int >= 8, got {num_points!r}")
        check_int(owner, "initial_max_mode", initial_max_mode, 1)
        dtype = resolve_precision(precision)
        grid = Grid((num_points,), (float(domain_length),), ("x",))
        (k,) = spectral.wavenumbers(grid.num_points, grid.domain_length)
        check_stability(
            owner,
            internal_dt=dt / num_substeps,
            limit=_MAX_INTERNAL_DT,
            dt=dt,
            num_substeps=num_substeps,
            reason="ETDRK4 on the KS attractor is measured unstable from h = 1.5",
        )
        self._init_spectral(
            grid=grid,
            dt=float(dt),
            num_substeps=num_substeps,
            precision=precision,
            linear=(k**2 - k**4)[None],
        )
        (kd,) = spectral.derivative_wavenumbers(grid.num_points, grid.domain_length)
        self._set(
            domain_length=float(domain_length),
            initial_amplitude=float(initial_amplitude),
            initial_max_mode=int(initial_max_mode),
            _k=jnp.asarray(kd[None], dtype),
        )

    def config(self) -> dict[str, Any]:
        """Constructor keywords (rebuilds the solver; recorded in dataset provenance)."""
        return {
            "num_points": self.grid.num_points[0],
            "domain_length": self.domain_length,
            "dt": self.dt,
            "num_substeps": self.num_substeps,
            "initial_amplitude": self.initial_amplitude,
            "initial_max_mode": self.initial_max_mode,
            "precision": self.precision,
        }

    def nonlinear(self, state_hat: Array) -> Array:
        """``N(u_hat) = -P[(u^2 / 2)_x]`` in spectral space, ``P`` the 2/3-rule truncation."""
        return self.conservative_advection_1d(state_hat, self._k)

    def initial_condition(self, key: Array) -> Array:
        """A random band-limited state ``(1, N)`` drawn from ``key`` (see the class docstring)."""
        k1 = 2 * math.pi / self.domain_length
        u = spectral.gaussian_random_field(
            key,
            self.grid.num_points,
            self.grid.domain_length,
            length_scale=0.0,
            smoothness=1.0,
            amplitude=self.initial_amplitude,
            max_wavenumber=(self.initial_max_mode + 0.5) * k1,
            dtype=self.dtype,
        )
        return u[None]

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """Mean of u (conserved) and energy ``mean(u^2) / 2``."""
        u = state[0]
        return {"mass": jnp.mean(u), "energy": 0.5 * jnp.mean(u * u)}


__all__ = ["KuramotoSivashinsky"]
