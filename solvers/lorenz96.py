"""Lorenz-96: a chaotic ring of sites, the classic toy model of atmospheric predictability."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from solvers.base import (
    Solver,
    check_int,
    check_nonnegative,
    check_positive,
    check_stability,
    check_substeps,
    resolve_precision,
)
from solvers.grid import Grid

Array = jax.Array

# Classic RK4 on the attractor, measured in float64 (16 attractor states per case, 400
# time units, blow-up = non-finite or |x| > 100): F = 8 stable at h = 0.165, blows up
# from h = 0.17; F = 16 stable at 0.085, blows up from 0.09. The largest Jacobian
# eigenvalue grows about linearly with |x|, hence with F, so the limit is
# 0.12 * 8 / max(F, 8): a 30 % margin at F = 8 and at F = 16. (Accuracy, not
# stability, is what asks for the default h = 0.01.)
_MAX_INTERNAL_DT_F8 = 0.12


class Lorenz96(Solver):
    """Lorenz (1996) model: ``num_sites`` variables on a periodic ring, classic RK4.

    ``dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F``, indices modulo ``N``.

    The quadratic advection term conserves the energy ``E = sum_i x_i^2 / 2`` (its
    contribution ``sum_i x_i (x_{i+1} - x_{i-2}) x_{i-1}`` telescopes to zero), so
    ``dE/dt = -2 E + F sum_i x_i``. For ``F = 8``, ``N = 40`` the attractor has mean
    about 2.3, standard deviation about 3.6 and leading Lyapunov exponent about 1.7
    (one model time unit is about 5 days of atmospheric error growth).

    Args:
        num_sites: ring size ``N`` (int >= 4). State shape ``(1, N)``.
        forcing: constant forcing ``F`` (nondimensional); chaotic for ``F`` above about 6.
        dt: output interval (nondimensional time; 0.05 is about 6 hours).
        num_substeps: RK4 steps per ``dt``.
        initial_perturbation: standard deviation of the Gaussian perturbation of the
            initial condition around the fixed point ``x_i = F`` (>= 0).
        precision: ``"float32"`` or ``"float64"``.

    Initial conditions: ``x_i = F + initial_perturbation * z_i`` with ``z_i ~ N(0, 1)``
    independent. The fixed point is unstable, so the state reaches the attractor after a
    spin-up of a few tens of time units (discard it when sampling climate statistics).

    Grid: axis ``"site"`` with coordinates ``0, 1, ..., N - 1`` (``"site index"``).

    Raises:
        ValueError: ``num_sites`` not an int >= 4, a non-finite or non-positive ``dt``,
            a negative ``forcing`` or ``initial_perturbation``, or an RK4 step
            ``dt / num_substeps`` above ``0.12 * 8 / max(F, 8)`` (RK4 is measured to
            blow up on the F = 8 attractor from 0.17).
    """

    name = "lorenz96"
    variables = ("x",)
    units = {"x": "1"}
    long_names = {"x": "Lorenz-96 site variable"}
    _dynamic_fields = ("_dt", "forcing", "initial_perturbation")
    _static_fields = ("grid", "num_substeps", "precision")

    def __init__(
        self,
        num_sites: int = 40,
        forcing: float = 8.0,
        dt: float = 0.05,
        num_substeps: int = 5,
        initial_perturbation: float = 0.01,
        precision: str = "float32",
    ) -> None:
        owner = type(self).__name__
        check_int(owner, "num_sites", num_sites, 4)
        check_positive(owner, dt=dt)
        check_nonnegative(owner, forcing=forcing, initial_perturbation=initial_perturbation)
        num_substeps = check_substeps(owner, num_substeps)
        resolve_precision(precision)  # validates, and checks x64 for "float64"
        limit = _MAX_INTERNAL_DT_F8 * 8.0 / max(float(forcing), 8.0)
        check_stability(
            owner,
            internal_dt=dt / num_substeps,
            limit=limit,
            dt=dt,
            num_substeps=num_substeps,
            reason=f"RK4 on the Lorenz-96 attractor: 0.12 * 8 / max(F, 8) at F = {forcing}",
        )
        n = int(num_sites)
        self._set(
            grid=Grid((n,), (float(n),), ("site",), long_names=("site index",)),
            num_substeps=num_substeps,
            precision=precision,
            _dt=float(dt),
            forcing=float(forcing),
            initial_perturbation=float(initial_perturbation),
        )

    @property
    def num_sites(self) -> int:
        """Number of sites ``K`` on the ring."""
        return self.grid.num_points[0]

    def config(self) -> dict[str, Any]:
        """Constructor keywords (rebuilds the solver; recorded in dataset provenance)."""
        return {
            "num_sites": self.num_sites,
            "forcing": float(self.forcing),
            "dt": self.dt,
            "num_substeps": self.num_substeps,
            "initial_perturbation": float(self.initial_perturbation),
            "precision": self.precision,
        }

    # ---- the ODE -----------------------------------------------------------------------
    def advection(self, state: Array) -> Array:
        """Energy-conserving quadratic term ``(x_{i+1} - x_{i-2}) x_{i-1}``, ``(1, N)``."""
        x = state
        return (jnp.roll(x, -1, axis=-1) - jnp.roll(x, 2, axis=-1)) * jnp.roll(x, 1, axis=-1)

    def tendency(self, state: Array) -> Array:
        """Right-hand side ``dx/dt = advection(x) - x + F``, ``(1, N) -> (1, N)``."""
        return self.advection(state) - state + self.forcing

    def step(self, state: Array) -> Array:
        """One classic RK4 step of size ``dt / num_substeps``, ``(1, N) -> (1, N)``."""
        self._check_state(state)
        h = jnp.asarray(self._dt / self.num_substeps, state.dtype)
        k1 = self.tendency(state)
        k2 = self.tendency(state + 0.5 * h * k1)
        k3 = self.tendency(state + 0.5 * h * k2)
        k4 = self.tendency(state + h * k3)
        return state + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)

    def advance(self, state: Array) -> Array:
        """``num_substeps`` RK4 steps: advance by the output interval ``dt``."""
        self._check_state(state)
        return jax.lax.fori_loop(0, self.num_substeps, lambda _, s: self.step(s), state)

    # ---- initial conditions and diagnostics ------------------------------------------
    def initial_condition(self, key: Array) -> Array:
        """``F + initial_perturbation * N(0, 1)`` per site, shape ``(1, N)``."""
        z = jax.random.normal(key, self.state_shape, self.dtype)
        return (self.forcing + self.initial_perturbation * z).astype(self.dtype)

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """Energy ``sum x^2 / 2`` and the site mean ``mean x`` of a ``(1, N)`` state."""
        x = state[0]
        return {"energy": 0.5 * jnp.sum(x * x), "mean": jnp.mean(x)}


__all__ = ["Lorenz96"]
