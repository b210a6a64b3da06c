"""Rotating shallow water on a doubly periodic domain, pseudo-spectral ETDRK4.

Equations (vector-invariant form, nondimensional, units ``"1"`` throughout)::

    u_t =  (f + zeta) v - d_x(g h + K) + D u
    v_t = -(f + zeta) u - d_y(g h + K) + D v
    h_t = -d_x(h u) - d_y(h v)                   + D h

with layer thickness ``h``, velocities ``(u, v)``, relative vorticity
``zeta = d_x v - d_y u``, kinetic energy per unit mass ``K = (u^2 + v^2) / 2``, gravity
``g`` and Coriolis parameter ``f(y)``. ``D = -viscosity (-lap)^p`` is a (hyper)viscosity
of order ``p = viscosity_order`` acting on all three fields (on ``h`` it removes
grid-scale noise in the thickness while conserving mass: it has no zero mode).

Coriolis parameter: a periodic domain cannot hold the linear beta-plane ``f0 + beta y``,
so the beta-plane is the periodic profile ``f(y) = f0 + beta (L_y / 2 pi) sin(2 pi y / L_y)``,
whose slope at ``y = 0`` (and ``-beta`` at ``y = L_y / 2``) is ``beta``; ``beta = 0`` is the
f-plane.

Why this scheme:

- Pseudo-spectral derivatives are exact for the resolved modes, so linear waves
  (inertia-gravity, Rossby) have no numerical dispersion in space.
- Mass is conserved exactly: ``h_t`` is a flux divergence, whose spectral zero mode is
  ``i k * (...) = 0`` identically, and the linear operator is zero there too, so the mean
  of ``h`` changes only by the round-off of the transforms.
- The vector-invariant form writes all nonlinear terms as quadratic products (``zeta v``,
  ``K``, ``h u``), so the 2/3 rule (inputs and products truncated) removes all aliasing.
  The Galerkin-truncated system then conserves mass exactly and energy and potential
  enstrophy up to the interaction with the truncated band, which is negligible for a
  resolved flow (the tests bound the energy drift of an inviscid run).
- The only stiff part, the hyperviscosity, is diagonal in Fourier space and is
  integrated exactly by ETDRK4 (Cox-Matthews, contour-integral coefficients); gravity
  waves, Coriolis and advection are in the explicit part ``N``, so the step obeys a
  gravity-wave CFL condition (below). A linear operator carrying the gravity waves
  would not be diagonal (it couples ``h``, ``u`` and ``v``).

Stability: with ``L = 0`` ETDRK4 reduces to classic RK4, whose stability interval on the
imaginary axis is ``|omega h| <= 2.83``. The fastest resolved wave has frequency about
``sqrt(f^2 + g H |k|^2) + |u| |k|`` with ``|k|_max = sqrt(2) (2/3) pi / dx`` at the corner
of the dealiased square, predicting ``(sqrt(g H) + u_max) h / dx <= 0.95`` for square cells.
Measured (float64, inviscid, ``f0 = 1``, 3 random states each, 10 time units): a resting
random height field (pure gravity waves) is stable at Courant number 0.98 and blows up
from 1.02 on 64^2, stable at 0.94 and blows up from 0.98 on 128^2; balanced random flows
with ``u_max`` about 0.3 stayed stable up to 1.15 (5 time units), so counting ``u_max``
in full is conservative. The start-up check uses ``_MAX_COURANT = 0.8`` (a 15 % margin
below the first blow-up), combined with the inertial limit ``max|f| h <= 2`` as
``h <= 1 / sqrt((c / (0.8 dx))^2 + (max|f| / 2)^2)``, ``c = sqrt(g H) + u_max``, where
``u_max`` is 4 standard deviations of the random initial speed (``_step_limit``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from solvers import spectral
from solvers.base import (
    check_int,
    check_nonnegative,
    check_positive,
    check_stability,
    check_substeps,
    resolve_precision,
)
from solvers.etdrk4 import ETDRK4Solver
from solvers.grid import Grid, periodic_box_2d

Array = jax.Array

# Gravity-wave Courant number (sqrt(g H) + u_max) h / min(dx, dy) allowed: 15 % below the
# first measured blow-up at 0.98 (128^2; see the module docstring).
_MAX_COURANT = 0.8
# Inertial oscillations alone: RK4 needs |f| h <= 2.83 (measured: f = 20, 8^2, stable at
# f h = 2.8, blow-up from 2.9); a 30 % margin.
_MAX_INERTIAL = 2.0
# Start-up velocity bound: the largest of 4 standard deviations of the random initial
# speed (a Gaussian field on a 128^2 grid rarely exceeds 4 sigma).
_SIGMAS = 4.0
INITIAL_VELOCITIES = ("geostrophic", "rest")


def _step_limit(
    grid: Grid,
    *,
    gravity: float,
    mean_depth: float,
    coriolis: float,
    beta: float,
    initial_amplitude: float,
    initial_max_mode: int,
    initial_velocity: str,
) -> tuple[float, str]:
    """Largest stable internal step and a sentence naming the limit (module docstring).

    ``h <= 1 / sqrt((c / (C dx))^2 + (max|f| / C_f)^2)`` with ``c = sqrt(g H) + u_max``,
    ``C = _MAX_COURANT``, ``C_f = _MAX_INERTIAL``: the gravity-wave CFL limit and the
    inertial limit, combined as the frequencies ``sqrt(f^2 + c^2 k^2)`` combine.
    ``u_max`` is ``_SIGMAS`` standard deviations of the random initial speed: balanced
    ``(g / f0) a k_rms`` or, for gravity waves from the height field, ``a sqrt(g / H)``.
    """
    ly, lx = grid.domain_length
    ky, kx = spectral.wavenumbers(grid.num_points, grid.domain_length)
    k2 = np.broadcast_to(ky**2 + kx**2, spectral.dealiasing_mask(grid.num_points).shape)
    k_cut = 2 * math.pi * (initial_max_mode + 0.5) / max(ly, lx)
    in_band = (k2 > 0) & (k2 <= k_cut**2) & spectral.dealiasing_mask(grid.num_points)
    # Interior rfft columns stand for two modes each.
    weights = np.broadcast_to(np.where(np.arange(kx.size) == 0, 1.0, 2.0), k2.shape)
    k_rms = math.sqrt(np.sum((k2 * weights)[in_band]) / np.sum(weights[in_band]))
    speed_std = initial_amplitude * math.sqrt(gravity / mean_depth)
    if initial_velocity == "geostrophic":
        speed_std = max(speed_std, gravity * initial_amplitude * k_rms / abs(coriolis))
    u_max = _SIGMAS * speed_std
    c = math.sqrt(gravity * mean_depth)
    dx = min(grid.spacing)
    f_max = abs(coriolis) + abs(beta) * ly / (2 * math.pi)
    limit = 1.0 / math.hypot((c + u_max) / (_MAX_COURANT * dx), f_max / _MAX_INERTIAL)
    reason = (
        f"gravity-wave CFL (sqrt(g H) + u_max) h / dx <= {_MAX_COURANT} with sqrt(g H) = "
        f"{c:.4g}, u_max = {u_max:.4g} (4 std of the initial speed), dx = {dx:.4g}, "
        f"combined with the inertial limit max|f| h <= {_MAX_INERTIAL}, max|f| = {f_max:.4g}"
    )
    return limit, reason


class ShallowWater2D(ETDRK4Solver):
    """Rotating shallow water, doubly periodic, f-plane or periodic beta-plane.

    See the module docstring for the equations, the scheme and its stability limit.
    Everything is nondimensional (units ``"1"``); with ``gravity = mean_depth = 1`` the
    gravity-wave speed is 1 and the deformation radius is ``1 / coriolis``.

    Args:
        num_points: grid points, an int (square) or ``(n_y, n_x)``; each an even int >= 8.
        domain_length: box size, a float or ``(L_y, L_x)``; default ``2 pi``.
        gravity: gravitational acceleration ``g`` > 0 (length / time^2).
        mean_depth: mean layer thickness ``H`` > 0 (length); the initial ``h`` has mean
            ``H``, and ``H`` enters the start-up CFL check.
        coriolis: Coriolis parameter ``f0`` (1 / time), any finite value; 0 for no rotation.
        beta: meridional gradient of ``f`` (1 / (length time)) of the periodic beta-plane
            profile ``f0 + beta (L_y / 2 pi) sin(2 pi y / L_y)``; 0 for the f-plane.
        viscosity: (hyper)viscosity coefficient ``nu`` >= 0 (length^(2p) / time).
        viscosity_order: ``p`` in ``D = -nu (-lap)^p``: 1 Laplacian, 2 biharmonic, ...
        dt: output interval (time).
        num_substeps: internal ETDRK4 steps per ``dt``.
        initial_amplitude: standard deviation of the random initial height perturbation
            ``eta = h - H`` (length), > 0 and <= ``mean_depth / 4`` (keeps ``h > 0``).
        initial_max_mode: highest mode (cycles across the longer side) of ``eta``.
        initial_velocity: ``"geostrophic"``: ``(u, v) = (g / f0) (-d_y eta, d_x eta)``,
            geostrophically balanced with ``f0`` (exact balance of the linear f-plane
            equations, quasi-geostrophic on the beta-plane; needs ``coriolis != 0``);
            ``"rest"``: zero velocity (the height field then radiates gravity waves).
        precision: ``"float32"`` or ``"float64"``.

    Initial conditions: ``h = H + eta`` with ``eta`` a zero-mean Gaussian random field
    with a flat spectrum over ``0 < |k| <= 2 pi (initial_max_mode + 1/2) / max(L_y, L_x)``,
    standard deviation ``initial_amplitude``; velocity from ``initial_velocity``.

    State: ``(3, n_y, n_x)``, channels ``("h", "u", "v")``, spatial axes ``("y", "x")``.

    Raises:
        ValueError: a bad argument (named in the message), ``initial_velocity =
            "geostrophic"`` with ``coriolis = 0``, or an internal step ``dt / num_substeps``
            above the gravity-wave CFL limit ``(sqrt(g H) + u_max) h / min(dx, dy) <= 0.8``
            combined with the inertial limit ``max|f| h <= 2`` (``u_max``: 4 standard
            deviations of the random initial speed; the message names the limit and the
            smallest ``num_substeps`` that passes).
    """

    name = "shallow_water"
    variables = ("h", "u", "v")
    conserved_means = ("h",)
    units = {"h": "1", "u": "1", "v": "1"}
    long_names = {
        "h": "layer thickness",
        "u": "eastward (x) velocity",
        "v": "northward (y) velocity",
    }
    _dynamic_fields = ETDRK4Solver._spectral_dynamic + (
        "gravity",
        "mean_depth",
        "coriolis",
        "beta",
        "viscosity",
        "initial_amplitude",
        "_kx",
        "_ky",
        "_beta_profile",
    )
    _static_fields = ETDRK4Solver._spectral_static + (
        "viscosity_order",
        "initial_max_mode",
        "initial_velocity",
    )

    def __init__(
        self,
        num_points: int | tuple[int, int] = 64,
        domain_length: float | tuple[float, float] = 2 * math.pi,
        gravity: float = 1.0,
        mean_depth: float = 1.0,
        coriolis: float = 2.0,
        beta: float = 0.0,
        viscosity: float = 1e-5,
        viscosity_order: int = 2,
        dt: float = 0.25,
        num_substeps: int = 5,
        initial_amplitude: float = 0.05,
        initial_max_mode: int = 4,
        initial_velocity: str = "geostrophic",
        precision: str = "float32",
    ) -> None:
        owner = type(self).__name__
        ny, nx, ly, lx = periodic_box_2d(num_points, domain_length, owner, even=True)
        check_positive(
            owner,
            gravity=gravity,
            mean_depth=mean_depth,
            dt=dt,
            initial_amplitude=initial_amplitude,
        )
        for arg, value in (("coriolis", coriolis), ("beta", beta)):
            if not isinstance(value, int | float | np.floating | np.integer) or not math.isfinite(
                value
            ):
                raise ValueError(f"{owner}: {arg} must be a finite number, got {value!r}")
        check_nonnegative(owner, viscosity=viscosity)
        check_int(owner, "viscosity_order", viscosity_order, 1, 8, "1 Laplacian, 2 biharmonic, ...")
        num_substeps = check_substeps(owner, num_substeps)
        if initial_amplitude > mean_depth / 4:
            raise ValueError(
                f"{owner}: initial_amplitude must be <= mean_depth / 4 = {mean_depth / 4} "
                f"so that the thickness h stays positive, got {initial_amplitude!r}"
            )
        max_mode = (min(ny, nx) - 1) // 3  # strict 2/3 rule: |index| < n / 3
        check_int(
            owner, "initial_max_mode", initial_max_mode, 1, max_mode, "inside the dealiased band"
        )
        if initial_velocity not in INITIAL_VELOCITIES:
            raise ValueError(
                f"{owner}: initial_velocity must be one of {INITIAL_VELOCITIES}, got "
                f"{initial_velocity!r}"
            )
        if initial_velocity == "geostrophic" and coriolis == 0:
            raise ValueError(
                f"{owner}: initial_velocity='geostrophic' needs coriolis != 0 (geostrophic "
                "balance u = -(g / f0) d_y eta); use initial_velocity='rest' without rotation"
            )
        dtype = resolve_precision(precision)
        grid = Grid((int(ny), int(nx)), (float(ly), float(lx)), ("y", "x"))

        limit, reason = _step_limit(
            grid,
            gravity=gravity,
            mean_depth=mean_depth,
            coriolis=coriolis,
            beta=beta,
            initial_amplitude=initial_amplitude,
            initial_max_mode=initial_max_mode,
            initial_velocity=initial_velocity,
        )
        check_stability(
            owner,
            internal_dt=dt / num_substeps,
            limit=limit,
            dt=dt,
            num_substeps=num_substeps,
            reason=reason,
        )

        ky, kx = spectral.wavenumbers(grid.num_points, grid.domain_length)
        linear = -float(viscosity) * (ky**2 + kx**2) ** viscosity_order
        self._init_spectral(
            grid=grid, dt=float(dt), num_substeps=num_substeps, precision=precision, linear=linear
        )
        kyd, kxd = spectral.derivative_wavenumbers(grid.num_points, grid.domain_length)
        y = grid.coords()["y"][:, None]
        self._set(
            gravity=float(gravity),
            mean_depth=float(mean_depth),
            coriolis=float(coriolis),
            beta=float(beta),
            viscosity=float(viscosity),
            initial_amplitude=float(initial_amplitude),
            viscosity_order=int(viscosity_order),
            initial_max_mode=int(initial_max_mode),
            initial_velocity=str(initial_velocity),
            _kx=jnp.asarray(kxd, dtype),
            _ky=jnp.asarray(kyd, dtype),
            _beta_profile=jnp.asarray(ly / (2 * math.pi) * np.sin(2 * math.pi * y / ly), dtype),
        )

    def config(self) -> dict[str, Any]:
        ny, nx = self.grid.num_points
        ly, lx = self.grid.domain_length
        return {
            "num_points": ny if ny == nx else (ny, nx),
            "domain_length": ly if ly == lx else (ly, lx),
            "gravity": float(self.gravity),
            "mean_depth": float(self.mean_depth),
            "coriolis": float(self.coriolis),
            "beta": float(self.beta),
            "viscosity": float(self.viscosity),
            "viscosity_order": self.viscosity_order,
            "dt": self.dt,
            "num_substeps": self.num_substeps,
            "initial_amplitude": float(self.initial_amplitude),
            "initial_max_mode": self.initial_max_mode,
            "initial_velocity": self.initial_velocity,
            "precision": self.precision,
        }

    # ---- the PDE -----------------------------------------------------------------------
    def coriolis_parameter(self) -> Array:
        """``f(y) = f0 + beta (L_y / 2 pi) sin(2 pi y / L_y)``, shape ``(n_y, 1)``."""
        return self.coriolis + self.beta * self._beta_profile

    def nonlinear(self, state_hat: Array) -> Array:
        """Explicit tendency ``N`` (all but the hyperviscosity), spectral ``(3, n_y, n_x//2+1)``.

        Inverse FFTs of ``(h, u, v, zeta)`` and forward FFTs of the quadratic products
        ``((f + zeta) v, -(f + zeta) u, K, h u, h v)``, inputs and output truncated by the
        2/3 rule.
        """
        s_hat = self.dealias(state_hat)
        ikx, iky = (1j * k.astype(s_hat.dtype) for k in (self._kx, self._ky))
        h_hat, u_hat, v_hat = s_hat[0], s_hat[1], s_hat[2]
        zeta_hat = ikx * v_hat - iky * u_hat
        # One transform per field rather than one of a stacked array: bit-identical, and
        # faster under vmap (see NavierStokes2D.nonlinear).
        h, u, v, zeta = (self.from_spectral(f) for f in (h_hat, u_hat, v_hat, zeta_hat))
        q_abs = self.coriolis_parameter().astype(h.dtype) + zeta
        products = (q_abs * v, -q_abs * u, 0.5 * (u * u + v * v), h * u, h * v)
        p_hat = [self.to_spectral(p) for p in products]
        bernoulli_hat = self.gravity * h_hat + p_hat[2]
        tendency = jnp.stack(
            [
                -(ikx * p_hat[3] + iky * p_hat[4]),
                p_hat[0] - ikx * bernoulli_hat,
                p_hat[1] - iky * bernoulli_hat,
            ]
        )
        return self.dealias(tendency)

    # ---- initial conditions and diagnostics ------------------------------------------
    def initial_condition(self, key: Array) -> Array:
        """Random ``h = H + eta`` with balanced or resting velocity, ``(3, n_y, n_x)``.

        See the class docstring for the distribution.
        """
        ly, lx = self.grid.domain_length
        eta = spectral.gaussian_random_field(
            key,
            self.grid.num_points,
            self.grid.domain_length,
            length_scale=0.0,
            smoothness=1.0,
            amplitude=1.0,
            max_wavenumber=2 * math.pi * (self.initial_max_mode + 0.5) / max(ly, lx),
            dtype=self.dtype,
        )
        eta = self.initial_amplitude * eta
        if self.initial_velocity == "geostrophic":
            eta_hat = self.to_spectral(eta)
            ky, kx = (k.astype(eta_hat.dtype) for k in (self._ky, self._kx))
            grad = self.from_spectral(1j * jnp.stack([ky * eta_hat, kx * eta_hat]))
            scale = self.gravity / self.coriolis
            u, v = -scale * grad[0], scale * grad[1]
        else:
            u = v = jnp.zeros_like(eta)
        return jnp.stack([self.mean_depth + eta, u, v]).astype(self.dtype)

    def vorticity(self, state: Array) -> Array:
        """Relative vorticity ``zeta = d_x v - d_y u`` (1 / time), ``(n_y, n_x)``."""
        self._check_state(state)
        s_hat = self.to_spectral(state)
        kx, ky = (k.astype(s_hat.dtype) for k in (self._kx, self._ky))
        return self.from_spectral(1j * kx * s_hat[2] - 1j * ky * s_hat[1]).astype(state.dtype)

    def potential_vorticity(self, state: Array) -> Array:
        """Potential vorticity ``q = (f + zeta) / h`` (1 / (time length)), ``(n_y, n_x)``."""
        f = self.coriolis_parameter().astype(state.dtype)
        return (f + self.vorticity(state)) / state[0]

    def courant_number(self, state: Array) -> Array:
        """Gravity-wave Courant number ``max(sqrt(g h) + |u|) h_t / min(dx, dy)`` of a
        ``(3, n_y, n_x)`` state at the internal step ``h_t = dt / num_substeps``
        (dimensionless, scalar in the state's dtype); the start-up check bounds it a
        priori by 0.8 (measured limits in the module docstring). For states the solver did not produce
        itself (the hybrid runner's ``CourantNumber`` indicator)."""
        h, u, v = state[0], state[1], state[2]
        wave = jnp.sqrt(self.gravity * jnp.maximum(h, 0)) + jnp.sqrt(u * u + v * v)
        dx = min(self.grid.spacing)
        return (jnp.max(wave) * (self.dt / self.num_substeps) / dx).astype(state.dtype)

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """Domain means of the invariants of a ``(3, n_y, n_x)`` state.

        Returns:
            ``mass``: ``mean(h)`` (conserved to round-off);
            ``energy``: ``mean(h (u^2 + v^2) / 2 + g h^2 / 2)`` (conserved without
            viscosity, up to the truncation and time errors);
            ``potential_enstrophy``: ``mean(h q^2 / 2) = mean((f + zeta)^2 / (2 h))``;
            ``mean_potential_vorticity``: mass-weighted mean ``mean(h q) / mean(h) =
            mean(f + zeta) / mean(h)`` (conserved: circulation over mass).
        """
        h, u, v = state[0], state[1], state[2]
        q = self.potential_vorticity(state)
        mass = jnp.mean(h)
        return {
            "mass": mass,
            "energy": jnp.mean(0.5 * h * (u * u + v * v) + 0.5 * self.gravity * h * h),
            "potential_enstrophy": jnp.mean(0.5 * h * q * q),
            "mean_potential_vorticity": jnp.mean(h * q) / mass,
        }


__all__ = ["ShallowWater2D"]
