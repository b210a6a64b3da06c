"""Base class for periodic pseudo-spectral solvers stepped with ETDRK4.

A subclass writes its PDE as ``v_t = L v + N(v)`` for the spectral state ``v`` (the
``rfftn`` of the state over its spatial axes), with ``L`` diagonal. It passes ``L`` to
:meth:`ETDRK4Solver._init_spectral` and implements :meth:`ETDRK4Solver.nonlinear`.
``advance`` transforms once, takes ``num_substeps`` ETDRK4 steps in spectral space inside
one loop, and transforms back once.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from solvers import spectral
from solvers.base import Solver
from solvers.grid import Grid

Array = jax.Array


class ETDRK4Solver(Solver):
    """Shared machinery of the ETDRK4 pseudo-spectral solvers (see module docstring).

    Pytree leaves it adds: ``_dt`` (output interval), ``_coefficients`` (ETDRK4
    coefficients), ``_mask`` (2/3-rule dealiasing mask as 0/1 of the solver dtype).
    """

    _spectral_dynamic: ClassVar[tuple[str, ...]] = ("_dt", "_coefficients", "_mask")
    _spectral_static: ClassVar[tuple[str, ...]] = ("grid", "num_substeps", "precision")

    def _init_spectral(
        self, *, grid: Grid, dt: float, num_substeps: int, precision: str, linear: np.ndarray
    ) -> None:
        """Precompute ETDRK4 coefficients for ``L = linear`` and the dealiasing mask."""
        dtype = jnp.dtype(precision)
        h = dt / num_substeps
        self._set(
            grid=grid,
            num_substeps=num_substeps,
            precision=precision,
            _dt=dt,
            _coefficients=spectral.etdrk4_coefficients(linear, h, dtype=dtype),
            _mask=jnp.asarray(spectral.dealiasing_mask(grid.num_points), dtype),
        )

    # ---- transforms ------------------------------------------------------------------
    def to_spectral(self, state: Array) -> Array:
        """``(C, *spatial)`` real -> ``(C, *spectral)`` complex."""
        return spectral.rfft(state, self.grid.ndim)

    def from_spectral(self, state_hat: Array) -> Array:
        """Inverse of :meth:`to_spectral`."""
        return spectral.irfft(state_hat, self.grid.num_points)

    # ---- the PDE -----------------------------------------------------------------------
    def nonlinear(self, state_hat: Array) -> Array:
        """``N(v)``: the nonlinear (and forcing) tendency in spectral space, dealiased."""
        raise NotImplementedError

    def spectral_step(self, state_hat: Array) -> Array:
        """One ETDRK4 step in spectral space."""
        return spectral.etdrk4_step(state_hat, self._coefficients, self.nonlinear)

    def step(self, state: Array) -> Array:
        """One internal step of size ``dt / num_substeps``, ``(C, *spatial) -> (C, *spatial)``."""
        self._check_state(state)
        return self.from_spectral(self.spectral_step(self.to_spectral(state))).astype(state.dtype)

    def advance_spectral(self, state_hat: Array) -> Array:
        """``num_substeps`` ETDRK4 steps in spectral space (no transforms in between)."""
        return jax.lax.fori_loop(
            0, self.num_substeps, lambda _, v: self.spectral_step(v), state_hat
        )

    def advance(self, state: Array) -> Array:
        """Advance by the output interval ``dt``, ``(C, *spatial) -> (C, *spatial)``."""
        self._check_state(state)
        v = self.advance_spectral(self.to_spectral(state))
        return self.from_spectral(v).astype(state.dtype)

    # ---- helpers for the nonlinear terms -----------------------------------------------
    def dealias(self, state_hat: Array) -> Array:
        """Zero the modes outside the 2/3-rule band of a spectral state."""
        return state_hat * self._mask.astype(state_hat.dtype)

    def conservative_advection_1d(self, state_hat: Array, k: Array) -> Array:
        """``-(u^2 / 2)_x`` in spectral space, with ``u`` and the product dealiased (2/3 rule).

        Args:
            state_hat: spectral state ``(1, N // 2 + 1)``.
            k: first-derivative wavenumbers (Nyquist zeroed), broadcastable to it.
        """
        u = self.from_spectral(self.dealias(state_hat))
        product_hat = self.dealias(self.to_spectral(u * u))
        return -0.5j * k.astype(product_hat.dtype) * product_hat
