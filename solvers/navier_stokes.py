"""2D incompressible Navier-Stokes in vorticity form (Kolmogorov flow), pseudo-spectral ETDRK4."""

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
    complex_dtype,
    resolve_precision,
)
from solvers.etdrk4 import ETDRK4Solver
from solvers.grid import Grid, periodic_box_2d

Array = jax.Array

# Advective Courant limit u_bound * h / min(dx, dy) <= _MAX_COURANT, with u_bound the
# a-priori speed bound of NavierStokes2D.velocity_bound. ETDRK4 treats advection
# explicitly: its stability region reaches about 2.8 up the imaginary axis, and the
# dealiased advection operator has eigenvalues up to |u| |k| <= |u| sqrt(2) (2 pi / 3) / dx,
# so max|u| h / dx <= ~0.95 is safe in theory. On spun-up Kolmogorov flow max|u| is about
# 0.5-0.6 U_laminar, which puts the theoretical limit at u_bound h / dx ~ 1.6.
# Measured (float32, nu = 1e-3, drag = 0.1, A = 1, k_f = 4, u_bound = U_laminar = 8.62,
# 20-100 time units from the default random initial condition), u_bound h / dx:
#   64^2: stable 3.5 (h = 0.04), blow-up 3.9 (h = 0.045);
#   128^2: stable 2.6 (h = 0.015), blow-up 3.1 (h = 0.0175, 3 of 3 seeds);
#   256^2: stable 2.2 (h = 0.00625), blow-up 2.6 (h = 0.0075).
# Also: nu = 2e-4 at 128^2 blow-up from 3.0, drag = 0.05 at 64^2 stable 3.9; unforced
# decay from a strong initial condition (64^2, u_bound = 4 x rms speed) stable 2.2, blow-up 2.7.
# The critical value falls with resolution towards the theoretical ~1.6-2, so the check
# uses 1.5: a factor 1.5-1.7 below the finest measured blow-up.
_MAX_COURANT = 1.5

# The random initial vorticity has a Matern-like spectrum (1 + (k l)^2)^(-s) per mode; the
# shell-summed enstrophy spectrum k (1 + (k l)^2)^(-s) peaks at k l = 1 / sqrt(2 s - 1).
_IC_SMOOTHNESS = 2.0
# Bound on max|u| of a random initial condition in units of its expected rms speed: the
# speed has a Rayleigh tail P(|u| > c u_rms) = exp(-c^2); measured max / rms is 2.7-3.1
# over 16 draws each on 32^2-256^2 grids.
_IC_PEAK_FACTOR = 4.0


class NavierStokes2D(ETDRK4Solver):
    """2D incompressible Navier-Stokes on a periodic box, vorticity form, Kolmogorov forcing.

    The relative vorticity ``w = v_x - u_y`` obeys::

        w_t + u w_x + v w_y = viscosity * lap(w) - drag * w + f(y),
        f(y) = -forcing_amplitude * k_f * cos(k_f * y),
        lap(psi) = -w,   u = psi_y,   v = -psi_x,

    where ``k_f = 2 pi forcing_wavenumber / L_y``. The forcing convention is the standard
    Kolmogorov one (e.g. Kochkov et al. 2021): ``f`` is the curl of the body force
    ``forcing_amplitude * sin(k_f y)`` on the x-velocity. Everything is nondimensional.

    The laminar Kolmogorov flow ``u = U sin(k_f y)``, ``v = 0``, i.e.
    ``w = -U k_f cos(k_f y)`` with ``U = forcing_amplitude / (viscosity k_f^2 + drag)``,
    is an exact steady solution (the nonlinear term vanishes for it); it is unstable
    at high Reynolds number and the flow becomes turbulent.

    Numerics: the spectral vorticity ``w_hat`` (``rfftn`` over ``(y, x)``) obeys
    ``w_hat_t = L w_hat + N(w_hat)`` with ``L = -viscosity |k|^2 - drag`` integrated
    exactly by ETDRK4, and ``N`` = ``-(u w_x + v w_y)`` computed pseudo-spectrally with
    the 2/3 rule (inputs and product truncated), plus the forcing (a constant spectral
    array). Each ``N`` costs one batched inverse FFT of ``(u, v, w_x, w_y)`` and one
    forward FFT of the product. The dealiased nonlinear term conserves the mean vorticity,
    the kinetic energy and the enstrophy exactly (up to round-off).

    Args:
        num_points: grid points, an int (square) or ``(n_y, n_x)``; each >= 8.
        domain_length: box size (nondimensional), a float or ``(L_y, L_x)``; default
            ``2 pi``.
        viscosity: kinematic viscosity ``nu`` >= 0 (length^2 / time); default 1e-3.
        drag: linear (Rayleigh) drag ``alpha`` >= 0 (1 / time); default 0.1.
        forcing_amplitude: amplitude ``A`` >= 0 of the body force ``A sin(k_f y)`` on the
            x-velocity (length / time^2); 0 gives decaying turbulence. Default 1.0.
        forcing_wavenumber: number of forcing periods across ``L_y`` (int >= 1, inside the
            dealiased band, about ``n_y / 3``); ``k_f = 2 pi forcing_wavenumber / L_y``, equal
            to ``forcing_wavenumber`` in the default ``2 pi`` box. Default 4.
        dt: output interval (time units).
        num_substeps: internal ETDRK4 steps per ``dt``.
        initial_amplitude: standard deviation (rms) of the random initial vorticity
            (1 / time), > 0.
        initial_peak_wavenumber: angular wavenumber at which the expected shell-summed
            enstrophy spectrum of the random initial vorticity peaks, > 0.
        precision: ``"float32"`` or ``"float64"``.

    Initial conditions: a zero-mean Gaussian random field of vorticity from
    :func:`solvers.spectral.gaussian_random_field`, per-mode power
    ``(1 + (|k| l)^2)^-2`` with ``l = 1 / (sqrt(3) initial_peak_wavenumber)`` inside the
    dealiased band, scaled to rms ``initial_amplitude``.

    State: ``(1, n_y, n_x)``, channel ``"vorticity"``, spatial axes ``("y", "x")``.

    Raises:
        ValueError: a bad argument (named in the message), forcing with neither viscosity
            nor drag (energy would grow without bound), or an internal step
            ``dt / num_substeps`` above the advective Courant limit
            ``velocity_bound() * h / min(dx, dy) <= 1.5`` (measured blow-ups from 2.6 at
            256^2, see the module notes; the message names the
            limit and the smallest ``num_substeps`` that passes).
    """

    name = "navier_stokes_2d"
    variables = ("vorticity",)
    conserved_means = ("vorticity",)
    units = {"vorticity": "1"}
    long_names = {"vorticity": "relative vorticity"}
    _dynamic_fields = ETDRK4Solver._spectral_dynamic + (
        "viscosity",
        "drag",
        "forcing_amplitude",
        "_forcing_hat",
        "_advection_ops",
        "_field_ops",
        "_shell_index",
        "_shell_weight",
        "_shell_wavenumbers",
    )
    _static_fields = ETDRK4Solver._spectral_static + (
        "forcing_wavenumber",
        "initial_amplitude",
        "initial_peak_wavenumber",
        "_num_shells",
    )

    def __init__(
        self,
        num_points: int | tuple[int, int] = 64,
        domain_length: float | tuple[float, float] = 2 * math.pi,
        viscosity: float = 1e-3,
        drag: float = 0.1,
        forcing_amplitude: float = 1.0,
        forcing_wavenumber: int = 4,
        dt: float = 0.2,
        num_substeps: int = 12,
        initial_amplitude: float = 5.0,
        initial_peak_wavenumber: float = 4.0,
        precision: str = "float32",
    ) -> None:
        owner = type(self).__name__
        ny, nx, ly, lx = periodic_box_2d(num_points, domain_length, owner, even=False)
        check_positive(
            owner,
            dt=dt,
            initial_amplitude=initial_amplitude,
            initial_peak_wavenumber=initial_peak_wavenumber,
        )
        check_nonnegative(
            owner, viscosity=viscosity, drag=drag, forcing_amplitude=forcing_amplitude
        )
        num_substeps = check_substeps(owner, num_substeps)
        # Largest y-mode the 2/3 rule keeps: the forcing must survive the truncation.
        max_forcing = int(np.flatnonzero(spectral.dealiasing_mask((int(ny), 2))[: ny // 2, 0])[-1])
        check_int(
            owner,
            "forcing_wavenumber",
            forcing_wavenumber,
            1,
            max_forcing,
            f"periods across L_y inside the dealiased band of n_y = {ny}",
        )
        if forcing_amplitude > 0 and viscosity == 0 and drag == 0:
            raise ValueError(
                f"{owner}: forcing_amplitude = {forcing_amplitude} > 0 needs viscosity > 0 "
                "or drag > 0; without dissipation the energy grows without bound"
            )
        dtype = resolve_precision(precision)
        spectral_dtype = complex_dtype(dtype)
        grid = Grid((int(ny), int(nx)), (float(ly), float(lx)), ("y", "x"))

        self._set(
            grid=grid,
            viscosity=float(viscosity),
            drag=float(drag),
            forcing_amplitude=float(forcing_amplitude),
            forcing_wavenumber=int(forcing_wavenumber),
            initial_amplitude=float(initial_amplitude),
            initial_peak_wavenumber=float(initial_peak_wavenumber),
        )
        u_bound = self.velocity_bound()
        check_stability(
            owner,
            internal_dt=dt / num_substeps,
            limit=_MAX_COURANT * min(grid.spacing) / u_bound,
            dt=dt,
            num_substeps=num_substeps,
            reason=(
                f"advective Courant number u_bound * h / dx <= {_MAX_COURANT} with the "
                f"a-priori speed bound u_bound = {u_bound:.4g} "
                "(max of the laminar Kolmogorov speed A / (nu k_f^2 + alpha) and "
                f"{_IC_PEAK_FACTOR:g} x the rms speed of the initial condition)"
            ),
        )

        ky, kx = spectral.wavenumbers(grid.num_points, grid.domain_length)
        k2 = ky**2 + kx**2
        self._init_spectral(
            grid=grid,
            dt=float(dt),
            num_substeps=num_substeps,
            precision=precision,
            linear=(-float(viscosity) * k2 - float(drag))[None],
        )

        # Velocity and vorticity-gradient operators on w_hat: u = psi_y, v = -psi_x with
        # psi_hat = w_hat / |k|^2 (zero mean); derivatives leave the Nyquist modes out.
        kyd, kxd = spectral.derivative_wavenumbers(grid.num_points, grid.domain_length)
        inv_k2 = np.divide(1.0, k2, out=np.zeros_like(k2), where=k2 > 0)
        shape = k2.shape
        field_ops = np.stack(
            [
                np.broadcast_to(1j * kyd * inv_k2, shape),
                np.broadcast_to(-1j * kxd * inv_k2, shape),
                np.broadcast_to(1j * kxd, shape),
                np.broadcast_to(1j * kyd, shape),
            ]
        )
        mask = spectral.dealiasing_mask(grid.num_points)

        y = grid.coords()["y"][:, None] * np.ones((1, grid.num_points[1]))
        k_f = self.forcing_angular_wavenumber
        forcing = -float(forcing_amplitude) * k_f * np.cos(k_f * y)
        forcing_hat = np.fft.rfftn(forcing)[None] * mask

        # Isotropic shells of width dk = min fundamental wavenumber; rfft weights count the
        # interior x-columns twice (they stand for +/- kx).
        shell, dk = spectral.radial_shells(grid.num_points, grid.domain_length)
        shell = shell.astype(np.int32)
        weight = np.broadcast_to(spectral.rfft_weights(grid.num_points), shell.shape)
        num_shells = int(shell.max()) + 1
        self._set(
            _forcing_hat=jnp.asarray(forcing_hat, spectral_dtype),
            _advection_ops=jnp.asarray(field_ops * mask, spectral_dtype),
            _field_ops=jnp.asarray(field_ops, spectral_dtype),
            _shell_index=jnp.asarray(shell),
            _shell_weight=jnp.asarray(weight / (2.0 * (ny * nx) ** 2), dtype),
            _shell_wavenumbers=jnp.asarray(dk * np.arange(num_shells), dtype),
            _num_shells=num_shells,
        )

    # ---- metadata ----------------------------------------------------------------------
    @property
    def forcing_angular_wavenumber(self) -> float:
        """``k_f = 2 pi forcing_wavenumber / L_y`` (1 / length)."""
        return 2 * math.pi * self.forcing_wavenumber / self.grid.domain_length[0]

    def laminar_velocity(self) -> float:
        """Speed ``U = A / (nu k_f^2 + alpha)`` of the steady laminar Kolmogorov flow."""
        a = float(self.forcing_amplitude)
        if a == 0:
            return 0.0
        return a / (float(self.viscosity) * self.forcing_angular_wavenumber**2 + float(self.drag))

    def initial_rms_speed(self) -> float:
        """Expected rms speed ``sqrt(<u^2 + v^2>)`` of the random initial condition."""
        ky, kx = spectral.wavenumbers(self.grid.num_points, self.grid.domain_length)
        k2 = np.broadcast_to(ky**2 + kx**2, (ky.size, kx.size))
        ell = 1.0 / (math.sqrt(2 * _IC_SMOOTHNESS - 1) * self.initial_peak_wavenumber)
        power = (1.0 + k2 * ell**2) ** (-_IC_SMOOTHNESS)
        power = np.where(k2 == 0, 0.0, power) * spectral.dealiasing_mask(self.grid.num_points)
        inv_k2 = np.divide(1.0, k2, out=np.zeros_like(k2), where=k2 > 0)
        # Interior columns of the rfft half-plane stand for +/- k_x.
        weight = spectral.rfft_weights(self.grid.num_points)
        power = power * weight
        return self.initial_amplitude * math.sqrt(np.sum(power * inv_k2) / np.sum(power))

    def velocity_bound(self) -> float:
        """A-priori bound on ``max |u|`` used by the start-up Courant check.

        ``max(U_laminar, _IC_PEAK_FACTOR * initial_rms_speed())`` with
        ``U_laminar = A / (nu k_f^2 + alpha)``: the forced flow's speed scale (drag-limited
        turbulence stays below it) and the peak speed of a random initial condition.
        """
        return max(self.laminar_velocity(), _IC_PEAK_FACTOR * self.initial_rms_speed())

    def config(self) -> dict[str, Any]:
        ny, nx = self.grid.num_points
        ly, lx = self.grid.domain_length
        return {
            "num_points": ny if ny == nx else (ny, nx),
            "domain_length": ly if ly == lx else (ly, lx),
            "viscosity": float(self.viscosity),
            "drag": float(self.drag),
            "forcing_amplitude": float(self.forcing_amplitude),
            "forcing_wavenumber": self.forcing_wavenumber,
            "dt": self.dt,
            "num_substeps": self.num_substeps,
            "initial_amplitude": self.initial_amplitude,
            "initial_peak_wavenumber": self.initial_peak_wavenumber,
            "precision": self.precision,
        }

    # ---- the PDE -------------------------------------------------------------------------
    def nonlinear(self, state_hat: Array) -> Array:
        """``N(w_hat) = -P[u w_x + v w_y] + f_hat`` with ``P`` the 2/3-rule truncation.

        Args:
            state_hat: ``(1, n_y, n_x // 2 + 1)`` complex spectral vorticity.

        Returns:
            The tendency, same shape and dtype.
        """
        # The mask is folded into the operators: they see only the kept modes. One inverse
        # transform per field, not one of the stacked (4, ...) array: under vmap, XLA:CPU
        # ran the stacked batch of transforms 1.9x slower at batch 32, for bit-identical
        # results (python benchmarks/solvers.py --cases ns128 --precisions float32).
        u, v, w_x, w_y = (self.from_spectral(op * state_hat) for op in self._advection_ops)
        advection_hat = self.to_spectral(u * w_x + v * w_y)
        return self._forcing_hat - self.dealias(advection_hat)

    def initial_condition(self, key: Array) -> Array:
        """Random vorticity ``(1, n_y, n_x)``, see the class docstring for its law."""
        ell = 1.0 / (math.sqrt(2 * _IC_SMOOTHNESS - 1) * self.initial_peak_wavenumber)
        w = spectral.gaussian_random_field(
            key,
            self.grid.num_points,
            self.grid.domain_length,
            length_scale=ell,
            smoothness=_IC_SMOOTHNESS,
            amplitude=self.initial_amplitude,
            dtype=self.dtype,
        )
        return w[None]

    # ---- derived fields and diagnostics ----------------------------------------------
    def _check_batched_state(self, state: Array) -> None:
        if tuple(state.shape[-3:]) != self.state_shape:
            raise ValueError(
                f"{type(self).__name__}: state has shape {tuple(state.shape)}, expected "
                f"(..., *{self.state_shape}) = (..., channels {self.variables}, *grid "
                f"{self.grid.axes})"
            )

    def _fields(self, state: Array) -> Array:
        """``(..., 1, n_y, n_x) -> (..., 4, n_y, n_x)``: ``(u, v, w_x, w_y)``, undealiased."""
        self._check_batched_state(state)
        return self.from_spectral(self._field_ops * self.to_spectral(state)).astype(state.dtype)

    def velocity(self, state: Array) -> Array:
        """Velocity ``(u, v) = (psi_y, -psi_x)`` with ``lap psi = -w`` (spectrally exact).

        Args:
            state: vorticity ``(..., 1, n_y, n_x)``.

        Returns:
            ``(..., 2, n_y, n_x)``: x-velocity ``u`` then y-velocity ``v`` (length / time),
            in the state's dtype. The mean vorticity (``k = 0``) does not enter.
        """
        return self._fields(state)[..., :2, :, :]

    def courant_number(self, state: Array) -> Array:
        """Advective Courant number of ``state`` at the internal step ``h = dt / num_substeps``.

        ``max_x |u| h / min(dx, dy)`` with ``|u|`` the local speed (dimensionless). The
        start-up check bounds it a priori through :meth:`velocity_bound`; this is the
        value of a given state, for states the solver did not produce itself (a
        surrogate's, in the hybrid runner). On the Kolmogorov preset (64^2, h = 1/60) the
        solver's own states stay below about 0.9 (1.3 with doubled initial anomalies), and a
        surrogate-made state at 1.67 blew it up; the limit falls on finer grids (see
        ``_MAX_COURANT``).

        Args:
            state: vorticity ``(1, n_y, n_x)``.

        Returns:
            Scalar, in the state's dtype.
        """
        u, v = self.velocity(state)
        h = self.dt / self.num_substeps
        dx = min(L / n for L, n in zip(self.grid.domain_length, self.grid.num_points, strict=True))
        return (jnp.sqrt(jnp.max(u * u + v * v)) * h / dx).astype(state.dtype)

    def energy_spectrum(self, state: Array) -> tuple[Array, Array]:
        """Isotropic kinetic-energy spectrum, summed over wavenumber shells.

        ``E(k_i) = sum over modes with round(|k| / dk) = i of (|u_hat|^2 + |v_hat|^2) /
        (2 N^2)``, ``N = n_y n_x``, ``dk = 2 pi / max(L_y, L_x)``, over the full (not
        half) spectrum, so that ``sum_i E(k_i)`` equals the mean kinetic energy
        ``mean((u^2 + v^2) / 2)`` (Parseval); ``E`` is a shell sum, not a density
        (divide by ``dk`` for one).

        Args:
            state: vorticity ``(..., 1, n_y, n_x)``.

        Returns:
            ``(k, E)``: shell wavenumbers ``k_i = i dk`` of shape ``(num_shells,)`` and the
            spectrum ``(..., num_shells)``, both in the state's real dtype. Shells reach
            the grid corner ``|k| = sqrt(k_y,max^2 + k_x,max^2)``.
        """
        self._check_batched_state(state)
        w_hat = self.to_spectral(state)[..., 0, :, :]
        uv_hat = self._field_ops[:2] * w_hat[..., None, :, :]
        density = jnp.sum(jnp.abs(uv_hat) ** 2, axis=-3) * self._shell_weight
        batch = density.shape[:-2]
        flat = density.reshape(*batch, -1)
        spectrum = jnp.zeros((*batch, self._num_shells), flat.dtype)
        spectrum = spectrum.at[..., self._shell_index.reshape(-1)].add(flat)
        dtype = state.dtype
        return self._shell_wavenumbers.astype(dtype), spectrum.astype(dtype)

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """Scalar diagnostics of a vorticity state ``(..., 1, n_y, n_x)``.

        Returns:
            ``kinetic_energy`` ``mean((u^2 + v^2) / 2)``, ``enstrophy`` ``mean(w^2) / 2``,
            ``palinstrophy`` ``mean(|grad w|^2) / 2``, ``max_vorticity`` ``max |w|`` and
            ``mean_vorticity`` ``mean(w)`` (zero on a periodic box, and kept zero), each of
            shape ``(...)``. Without forcing, ``d(energy)/dt = -2 nu enstrophy - 2 alpha
            energy`` and ``d(enstrophy)/dt = -2 nu palinstrophy - 2 alpha enstrophy``.
        """
        u, v, w_x, w_y = jnp.moveaxis(self._fields(state), -3, 0)
        w = state[..., 0, :, :]
        axes = (-2, -1)
        return {
            "kinetic_energy": 0.5 * jnp.mean(u * u + v * v, axis=axes),
            "enstrophy": 0.5 * jnp.mean(w * w, axis=axes),
            "palinstrophy": 0.5 * jnp.mean(w_x * w_x + w_y * w_y, axis=axes),
            "max_vorticity": jnp.max(jnp.abs(w), axis=axes),
            "mean_vorticity": jnp.mean(w, axis=axes),
        }


__all__ = ["NavierStokes2D"]
