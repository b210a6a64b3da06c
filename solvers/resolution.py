"""Resolution: one periodic problem on several grids.

Spectral resampling of periodic states between grids (Fourier truncation / zero padding)
and :func:`at_resolution`, the same solver rebuilt on another grid at its largest stable
internal step (the rungs of a solver ladder, coarse-grained datasets, coarse checks).

A periodic field sampled on ``n`` points is the trigonometric polynomial

    u(x) = (1/n) sum_k u_hat[k] exp(i k 2 pi x / L),   |k| <= n/2,

and resampling onto ``m`` points evaluates the same polynomial on the new grid after
projecting it onto the modes that grid can hold:

- ``m < n`` (coarsening): keep ``|k| < m/2``; for even ``m`` the new Nyquist mode gets
  ``u_hat[m/2] + u_hat[-m/2]`` (the cosine part of the two modes, the only part a real
  field on ``m`` points can carry); this is the L2 projection, i.e. Fourier truncation.
- ``m > n`` (refining): zero padding; an even ``n``'s Nyquist coefficient is split in
  halves between ``+n/2`` and ``-n/2`` so the refined field stays real and equals the
  trigonometric interpolant of the coarse samples.

Consequences, checked in the tests: ``coarsen(refine(u)) == u`` to round-off, and
``refine(coarsen(u)) == u`` for fields band-limited below the coarse Nyquist mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from solvers.base import check_int, is_int
from solvers.pytree import register_fields
from solvers.stepper import Stepper

Array = jax.Array


def _resample_axis_hat(u_hat: Array, axis: int, n_in: int, n_out: int) -> Array:
    """Map the full (complex ``fftn``) spectrum along ``axis`` from ``n_in`` to ``n_out`` modes."""
    if n_out == n_in:
        return u_hat
    m = min(n_in, n_out)
    half = (m - 1) // 2  # modes 0..half and -half..-1 are copied unchanged
    take = lambda lo, hi: jax.lax.slice_in_dim(u_hat, lo, hi, axis=axis)  # noqa: E731
    pos = take(0, half + 1)
    neg = take(n_in - half, n_in) if half > 0 else None
    shape = list(u_hat.shape)
    if n_out < n_in:
        parts = [pos]
        if m % 2 == 0:
            # Cosine parts of modes +m/2 and -m/2 fold onto the coarse Nyquist mode.
            parts.append(take(m // 2, m // 2 + 1) + take(n_in - m // 2, n_in - m // 2 + 1))
        if neg is not None:
            parts.append(neg)
        return jnp.concatenate(parts, axis=axis)
    # Refinement: zero padding, an even input's Nyquist mode split between +-n_in/2.
    parts = [pos]
    num_zeros = n_out - (2 * half + 1)
    if m % 2 == 0:
        nyquist = 0.5 * take(m // 2, m // 2 + 1)
        shape[axis] = num_zeros - 2
        parts += [nyquist, jnp.zeros(shape, u_hat.dtype), nyquist]
    else:
        shape[axis] = num_zeros
        parts.append(jnp.zeros(shape, u_hat.dtype))
    if neg is not None:
        parts.append(neg)
    return jnp.concatenate(parts, axis=axis)


def spectral_resample(state: Array, num_points: int | Sequence[int]) -> Array:
    """Resample a periodic state onto another uniform grid of the same domain.

    Args:
        state: real array ``(..., *spatial)``; the last ``len(num_points)`` axes are the
            periodic spatial axes ``(..., y, x)`` (units unchanged).
        num_points: target points per spatial axis (an int for a 1D grid), each >= 2.

    Returns:
        The resampled state ``(..., *num_points)`` with the dtype of ``state``. Point ``j``
        of an axis of length ``L`` sits at ``j L / n`` on both grids, so the domain and the
        origin are shared.

    Raises:
        ValueError: ``num_points`` has more axes than ``state`` or an entry below 2.
    """
    out = (int(num_points),) if isinstance(num_points, int) else tuple(int(n) for n in num_points)
    ndim = len(out)
    if ndim == 0 or ndim > state.ndim:
        raise ValueError(
            f"spectral_resample: num_points {num_points!r} must name 1..{state.ndim} spatial "
            f"axes of a state of shape {tuple(state.shape)}"
        )
    if any(n < 2 for n in out):
        raise ValueError(f"spectral_resample: num_points entries must be >= 2, got {out}")
    if tuple(state.shape[-ndim:]) == out:
        return state
    return _resample(state, out)


@partial(jax.jit, static_argnums=1)
def _resample(state: Array, out: tuple[int, ...]) -> Array:
    """Jitted core of :func:`spectral_resample` (one compilation per shape pair)."""
    ndim = len(out)
    n_in = tuple(state.shape[-ndim:])
    axes = tuple(range(state.ndim - ndim, state.ndim))
    u_hat = jnp.fft.fftn(state, axes=axes)
    for axis, a, b in zip(axes, n_in, out, strict=True):
        u_hat = _resample_axis_hat(u_hat, axis, a, b)
    # ifftn divides by prod(out); the forward transform carried prod(n_in).
    scale = 1.0
    for a, b in zip(n_in, out, strict=True):
        scale *= b / a
    return (jnp.fft.ifftn(u_hat, axes=axes).real * scale).astype(state.dtype)


def coarsen(state: Array, factor: int = 2, ndim: int | None = None) -> Array:
    """Fourier-truncate the last ``ndim`` axes by an integer ``factor`` (``n -> n // factor``).

    Args:
        state: ``(..., *spatial)``.
        factor: integer coarsening factor >= 1; every spatial size must be divisible by it.
        ndim: number of spatial axes (default: all axes after the first, i.e. a
            ``(C, *spatial)`` state).
    """
    ndim = state.ndim - 1 if ndim is None else ndim
    sizes = state.shape[state.ndim - ndim :]
    if not is_int(factor) or factor < 1 or any(n % factor for n in sizes):
        raise ValueError(
            f"coarsen: factor must be an int >= 1 dividing every spatial size {tuple(sizes)}, "
            f"got {factor!r}"
        )
    return spectral_resample(state, tuple(n // factor for n in sizes))


def refine(state: Array, factor: int = 2, ndim: int | None = None) -> Array:
    """Zero-pad the spectrum of the last ``ndim`` axes by an integer ``factor`` (``n -> n factor``)."""
    ndim = state.ndim - 1 if ndim is None else ndim
    factor = check_int("refine", "factor", factor, 1)
    sizes = state.shape[state.ndim - ndim :]
    return spectral_resample(state, tuple(n * factor for n in sizes))


def _sizes(num_points: int | Sequence[int]) -> tuple[int, ...]:
    return (int(num_points),) if isinstance(num_points, int) else tuple(int(n) for n in num_points)


def at_resolution(
    solver: Stepper, num_points: int | Sequence[int], *, num_substeps: int | None = None
) -> Any:
    """The same solver (same physics, ``dt``, precision) on another grid.

    Built as ``type(solver)(**{**solver.config(), "num_points": ..., "num_substeps": ...})``.
    With ``num_substeps=None`` the internal step is the *largest stable* one: the smallest
    ``num_substeps`` the solver's own start-up stability check accepts (a solver ladder
    must not handicap a rung with needless substeps). The search starts from the count
    scaled by the grid ratio (an advective Courant limit ``h ~ dx``), and steps down or up
    from there; constructors are cheap host code.

    Args:
        solver: a solver whose ``config()`` has ``num_points`` and ``num_substeps``.
        num_points: the new grid, an int (1D or square) or one size per axis.
        num_substeps: internal steps per ``dt``; ``None`` picks the smallest stable count.

    Returns:
        A new solver of the same class.

    Raises:
        ValueError: the solver's config lacks ``num_points``/``num_substeps``, the grid has
            another number of axes, or the solver rejects the configuration for another
            reason than its stability limit (its message is included).
    """
    cfg = dict(solver.config())
    owner = f"at_resolution({type(solver).__name__})"
    for key in ("num_points", "num_substeps"):
        if key not in cfg:
            raise ValueError(f"{owner}: config() has no {key!r}, so it cannot be rebuilt")
    old = tuple(solver.grid.num_points)
    new = _sizes(num_points)
    if len(new) == 1 and len(old) > 1:
        new = new * len(old)
    if len(new) != len(old):
        raise ValueError(f"{owner}: num_points {num_points!r} has not {len(old)} axes")
    # Keep the config's own spelling: an int for a square (or 1D) grid, else a tuple.
    value: Any = new[0] if isinstance(cfg["num_points"], int) and len(set(new)) == 1 else new
    cls = type(solver)

    def build(n: int):
        try:
            return cls(**{**cfg, "num_points": value, "num_substeps": n}), None
        except ValueError as err:
            if "stability limit" in str(err):
                return None, err
            raise ValueError(f"{owner}: num_points={value!r}: {err}") from err

    if num_substeps is not None:
        built, err = build(int(num_substeps))
        if built is None:
            raise ValueError(f"{owner}: {err}") from err
        return built
    guess = max(
        1, math.ceil(cfg["num_substeps"] * max(n / o for n, o in zip(new, old, strict=True)))
    )
    built, _ = build(guess)
    if built is not None:  # step down while stable
        n = guess
        while n > 1:
            smaller, _ = build(n - 1)
            if smaller is None:
                break
            built, n = smaller, n - 1
        return built
    n = guess
    for _ in range(100_000):  # step up until stable; the limit is finite for any grid
        n = max(n + 1, math.ceil(n * 1.05))
        built, _ = build(n)
        if built is not None:
            while n > guess + 1:  # the geometric step may overshoot: walk back down
                smaller, _ = build(n - 1)
                if smaller is None:
                    break
                built, n = smaller, n - 1
            return built
    raise ValueError(f"{owner}: found no stable num_substeps for num_points={value!r}")


def coarsened(solver: Stepper, factor: int, *, num_substeps: int | None | str = "same") -> Any:
    """The same solver on a grid ``factor`` times coarser on every axis.

    The one "same solver on a coarser grid" of the project: the coarse-solver baseline of
    :func:`surrogate.evaluate.evaluate` and the hybrid runner's coarse check use it.

    Args:
        solver: a solver whose ``config()`` has ``num_points`` and ``num_substeps``
            (:class:`solvers.stepper.Rebuildable`).
        factor: integer coarsening factor >= 1 dividing every grid size.
        num_substeps: ``"same"`` (default): the solver's own count, so the coarse solver
            takes the same internal step; an int; or ``None``: the largest stable step
            (:func:`at_resolution`).

    Returns:
        A new solver of the same class on ``num_points // factor``.

    Raises:
        ValueError: ``factor`` is not an int >= 1 or does not divide a grid size, the
            config lacks ``num_points``, or the solver rejects the coarse configuration
            (its message is included).
    """
    factor = check_int("coarsened", "factor", factor, 1)
    config = getattr(solver, "config", None)
    cfg = dict(config()) if callable(config) else {}
    name = type(solver).__name__
    if "num_points" not in cfg:
        raise ValueError(
            f"coarsened: {name}.config() has no 'num_points' (the constructor keyword giving "
            "the grid size), so the solver cannot be rebuilt on a coarser grid"
        )
    sizes = tuple(int(n) for n in solver.grid.num_points)
    if any(n % factor for n in sizes):
        raise ValueError(f"coarsened: factor {factor} does not divide the num_points {sizes}")
    substeps = cfg.get("num_substeps") if num_substeps == "same" else num_substeps
    return at_resolution(solver, tuple(n // int(factor) for n in sizes), num_substeps=substeps)


class Resampled:
    """A stepper seen through another grid: refine (or project), advance, project back.

    ``Resampled(solver_64, (32, 32))(x32) = P_32(solver_64(R_64(x32)))`` with ``R`` the
    spectral interpolation (zero padding) and ``P`` the Fourier truncation of
    :func:`spectral_resample`. It lets a finer (or coarser) solver stand in for the solver
    of a coarse-grid stepper, e.g. in the hybrid runner, whose engines share one state
    layout. Scales the inner grid cannot hold are lost at each step, so it is the inner
    stepper restarted from the outer grid's information every interval.

    Args:
        stepper: the inner stepper (any pytree stepper with ``grid``, ``dt``, ``variables``).
        num_points: the outer grid, one size per axis of the inner grid (an int: square).
    """

    def __init__(self, stepper: Stepper, num_points: int | Sequence[int]) -> None:
        inner = tuple(stepper.grid.num_points)
        outer = _sizes(num_points)
        if len(outer) == 1 and len(inner) > 1:
            outer = outer * len(inner)
        if len(outer) != len(inner) or any(n < 2 for n in outer):
            raise ValueError(
                f"Resampled: num_points {num_points!r} must give one size >= 2 per axis of "
                f"the inner grid {inner}"
            )
        object.__setattr__(self, "stepper", stepper)
        object.__setattr__(self, "num_points", outer)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Resampled is immutable")

    @property
    def grid(self):
        """The outer grid (same domain as the inner one)."""
        import dataclasses

        return dataclasses.replace(self.stepper.grid, num_points=self.num_points)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """``(C, *num_points)`` on the outer grid."""
        return (len(self.variables), *self.num_points)

    def __getattr__(self, name: str) -> Any:
        # dt, variables, units, long_names, time_units, name, precision, conserved_means
        if name in ("stepper", "num_points"):
            raise AttributeError(name)
        return getattr(self.stepper, name)

    def to_inner(self, state: Array) -> Array:
        """``state`` on the outer grid -> the inner grid."""
        return spectral_resample(state, tuple(self.stepper.grid.num_points))

    def __call__(self, state: Array) -> Array:
        """Advance ``(C, *outer grid)`` by ``dt`` through the inner stepper."""
        return spectral_resample(self.stepper(self.to_inner(state)), self.num_points)

    advance = __call__

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """The inner stepper's diagnostics of the interpolated state."""
        return self.stepper.diagnostics(self.to_inner(state))

    def courant_number(self, state: Array) -> Array:
        """The inner stepper's Courant number of the interpolated state."""
        return self.stepper.courant_number(self.to_inner(state))

    def config(self) -> dict[str, Any]:
        """The wrapped stepper's config (``Resampled`` itself is rebuilt by its constructor)."""
        inner = self.stepper.config() if hasattr(self.stepper, "config") else {}
        return {"resampled_to": list(self.num_points), **inner}

    def __repr__(self) -> str:
        return f"Resampled({self.stepper!r}, num_points={self.num_points})"


register_fields(Resampled, ("stepper",), ("num_points",))


__all__ = ["Resampled", "at_resolution", "coarsen", "refine", "spectral_resample"]
