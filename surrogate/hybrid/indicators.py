"""Online error indicators: cheap, ground-truth-free estimates of a surrogate step's error.

An indicator maps an :class:`IndicatorContext` of ONE trajectory member (the runner vmaps
it over the batch) to a scalar. The context holds the last solver-verified state, the
state before the proposed step and the proposed surrogate state. Thresholds live in the
policy, in the indicator's ``units``.

Writing one: any object with

- ``name: str`` (unique among a runner's indicators; policies refer to it),
- ``units: str`` and ``long_name: str`` (stored with the logged values),
- ``__call__(context) -> scalar array`` (pure, jit-able, unbatched),
- optionally ``bind(solver, surrogate) -> indicator`` (called once by the runner to
  attach what the indicator needs, e.g. the solver's diagnostics or a coarse solver) and
  ``config() -> dict`` (stored as provenance).

The runner passes indicators into ``jit`` as arguments, so array fields must be pytree
leaves (use :func:`solvers.pytree.pytree_dataclass`) and everything else hashable.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from solvers.pytree import pytree_dataclass
from solvers.resolution import coarsened, spectral_resample
from solvers.spectral import rfft_weights
from solvers.stepper import HasCourantNumber, HasDiagnostics, Stepper

Array = jax.Array


@pytree_dataclass(data_fields="all")
class IndicatorContext:
    """What an indicator sees about one member at one check.

    Attributes:
        verified: last solver-verified state ``(C, *spatial)`` (the initial state until
            the solver first runs).
        current: state the proposed step started from ``(C, *spatial)``.
        proposal: proposed surrogate state ``(C, *spatial)`` (one ``dt`` after ``current``).
        steps_since_verified: int scalar, number of steps from ``verified`` to
            ``proposal`` (>= 1).
        step: int scalar, global 0-based index of the proposed step (it produces frame
            ``step + 1``).
        member: int scalar, index of the trajectory in the batch.
    """

    verified: Array
    current: Array
    proposal: Array
    steps_since_verified: Array
    step: Array
    member: Array


@runtime_checkable
class Indicator(Protocol):
    """The indicator protocol (see module docstring)."""

    name: str
    units: str
    long_name: str

    def __call__(self, context: IndicatorContext) -> Array: ...


def bind_indicator(indicator: Any, solver: Stepper, surrogate: Stepper) -> Any:
    """Call ``indicator.bind(solver, surrogate)`` when it exists, else return it unchanged."""
    bind = getattr(indicator, "bind", None)
    return indicator if bind is None else bind(solver, surrogate)


def indicator_config(indicator: Any) -> dict[str, Any]:
    """``indicator.config()`` if defined, else its type, name and units."""
    cfg = getattr(indicator, "config", None)
    out = dict(cfg()) if callable(cfg) else {}
    out.setdefault("type", type(indicator).__name__)
    out.setdefault("name", indicator.name)
    out.setdefault("units", indicator.units)
    return out


def _channel_std(state: Array) -> Array:
    """Standard deviation over the spatial axes per channel, ``(C, *spatial) -> (C,)``."""
    return jnp.std(state.reshape(state.shape[0], -1), axis=-1)


def _tiny(dtype) -> Array:
    return jnp.asarray(jnp.finfo(dtype).tiny, dtype)


# ---------------------------------------------------------------------------------------
@pytree_dataclass(data_fields=("solver",))
class InvariantDrift:
    """Drift of a solver diagnostic (conserved or bounded) since the last verified state.

    ``value = |D(proposal) - D(verified)| / |D(verified)|`` when ``relative`` (units
    ``"1"``), else ``|D(proposal) - D(verified)|`` in the diagnostic's own units; ``D`` is
    ``solver.diagnostics(state)[quantity]``. A conserved quantity (KS ``mass`` = mean u,
    NS ``mean_vorticity``) stays at round-off for the solver; use ``relative=False`` for
    quantities that vanish (their relative drift is ill-conditioned). A bounded but
    fluctuating quantity (KS ``energy``) drifts naturally with the time since the last
    verification, so its threshold must sit above that natural fluctuation.

    Args:
        quantity: a key of ``solver.diagnostics(state)``, e.g. ``"energy"`` or ``"mass"``.
        relative: divide by ``|D(verified)|``.
        name: indicator name; default ``f"{quantity}_drift"``.
        solver: set by :meth:`bind` (the runner's solver; only its diagnostics are used).
    """

    quantity: str = "energy"
    relative: bool = True
    name: str = ""
    solver: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.quantity, str) or not self.quantity:
            raise ValueError(
                f"InvariantDrift: quantity must be a non-empty string, got {self.quantity!r}"
            )
        if not self.name:
            object.__setattr__(self, "name", f"{self.quantity}_drift")

    @property
    def units(self) -> str:
        """Units of the value: ``"1"`` when relative, else the quantity's own units."""
        return "1" if self.relative else f"units of diagnostic {self.quantity!r}"

    @property
    def long_name(self) -> str:
        """CF long name of the value."""
        kind = "relative drift" if self.relative else "absolute drift"
        return f"{kind} of {self.quantity} since the last solver-verified state"

    def bind(self, solver: Stepper, surrogate: Stepper) -> InvariantDrift:
        """Attach ``solver`` and check that ``quantity`` is one of its diagnostics.

        Raises:
            ValueError: ``quantity`` is not a diagnostics key (the message lists them).
        """
        if not isinstance(solver, HasDiagnostics):
            raise TypeError(
                f"InvariantDrift: {type(solver).__name__} has no diagnostics(state) method "
                "(solvers.stepper.HasDiagnostics), so no invariant can be tracked"
            )
        probe = jax.ShapeDtypeStruct(
            (len(solver.variables), *solver.grid.num_points), getattr(solver, "dtype", "float32")
        )
        keys = sorted(jax.eval_shape(solver.diagnostics, probe))
        if self.quantity not in keys:
            raise ValueError(
                f"InvariantDrift: quantity {self.quantity!r} is not a diagnostic of "
                f"{type(solver).__name__}; available: {', '.join(keys)}"
            )
        return dataclasses.replace(self, solver=solver)

    def __call__(self, context: IndicatorContext) -> Array:
        if self.solver is None:
            raise ValueError("InvariantDrift: call bind(solver, surrogate) first")
        d_p = self.solver.diagnostics(context.proposal)[self.quantity]
        d_v = self.solver.diagnostics(context.verified)[self.quantity]
        drift = jnp.abs(d_p - d_v)
        if self.relative:
            drift = drift / jnp.maximum(jnp.abs(d_v), _tiny(drift.dtype))
        return drift

    def config(self) -> dict[str, Any]:
        """Constructor keywords (rebuilds the indicator; recorded with each run)."""
        return {
            "type": "InvariantDrift",
            "quantity": self.quantity,
            "relative": self.relative,
            "name": self.name,
            "units": self.units,
        }


# ---------------------------------------------------------------------------------------
@pytree_dataclass(data_fields=("noise_std", "key", "surrogate"))
class EnsembleSpread:
    """Spread of an ensemble of surrogate steps from perturbed inputs.

    ``M = num_members`` copies of ``current`` get white Gaussian noise of standard
    deviation ``noise_std * std_c(current)`` per channel ``c``; the surrogate advances
    each. The value is the ensemble standard deviation (ddof 1, RMS over points),
    divided per channel by ``std_c(proposal)``, then RMS over channels (units ``"1"``).
    A smooth, stable stepper maps the input noise to a spread of order ``noise_std`` or
    less (the physics damps the small scales); an unstable or ill-conditioned surrogate
    amplifies it, so thresholds are a multiple of ``noise_std``.

    Keys: member ``b`` at step ``n`` uses ``fold_in(fold_in(key, b), n)``, so any check
    can be regenerated.

    Args:
        num_members: ensemble size, an int >= 2.
        noise_std: input perturbation in units of the per-channel state std, > 0.
        key: a PRNG key, or an int seed for ``jax.random.key``.
        name: indicator name.
        surrogate: set by :meth:`bind`.
    """

    num_members: int = 4
    noise_std: float = 1e-3
    key: Any = 0
    name: str = "ensemble_spread"
    surrogate: Any = None

    units = "1"
    long_name = "normalised spread of perturbed surrogate steps"

    def __post_init__(self) -> None:
        m = self.num_members
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise ValueError(f"EnsembleSpread: num_members must be an int >= 2, got {m!r}")
        if not isinstance(self.noise_std, int | float) or not self.noise_std > 0:
            raise ValueError(f"EnsembleSpread: noise_std must be > 0, got {self.noise_std!r}")
        if isinstance(self.key, int):
            object.__setattr__(self, "key", jax.random.key(self.key))

    def bind(self, solver: Stepper, surrogate: Stepper) -> EnsembleSpread:
        """This indicator for the runner's steppers (checks the surrogate can be perturbed)."""
        return dataclasses.replace(self, surrogate=surrogate)

    def __call__(self, context: IndicatorContext) -> Array:
        if self.surrogate is None:
            raise ValueError("EnsembleSpread: call bind(solver, surrogate) first")
        x = context.current
        key = jax.random.fold_in(jax.random.fold_in(self.key, context.member), context.step)
        scale = (self.noise_std * _channel_std(x)).reshape((-1,) + (1,) * (x.ndim - 1))
        noise = jax.random.normal(key, (self.num_members, *x.shape), x.dtype)
        members = jax.vmap(self.surrogate)(x[None] + scale.astype(x.dtype) * noise)
        members = members.astype(x.dtype).reshape(self.num_members, x.shape[0], -1)
        spread = jnp.sqrt(jnp.mean(jnp.var(members, axis=0, ddof=1), axis=-1))
        rel = spread / jnp.maximum(_channel_std(context.proposal), _tiny(x.dtype))
        return jnp.sqrt(jnp.mean(rel * rel))

    def config(self) -> dict[str, Any]:
        """Constructor keywords (rebuilds the indicator; recorded with each run)."""
        return {
            "type": "EnsembleSpread",
            "num_members": self.num_members,
            "noise_std": float(self.noise_std),
            "name": self.name,
            "units": self.units,
            "key_data": np.asarray(jax.random.key_data(self.key)).tolist(),
        }


# ---------------------------------------------------------------------------------------
def tail_share(state: Array, fraction: float) -> Array:
    """Share of the spectral energy of ``state (C, *spatial)`` in the high-wavenumber tail.

    With the normalised radius ``r = |(i_1 / n_1, ..., i_d / n_d)| / (1/3)`` of mode
    index ``i`` (``r = 1`` at the 2/3-rule cut-off ``n/3`` of each axis), the tail is
    ``r > 1 - fraction``, which includes any energy in the band the solvers dealias away.
    The mean mode is excluded from the total. Returns a scalar in ``[0, 1]``.
    """
    ndim = state.ndim - 1
    shape = state.shape[1:]
    u_hat = jnp.fft.rfftn(state, axes=tuple(range(1, state.ndim)))
    power = jnp.abs(u_hat) ** 2
    weight = rfft_weights(shape)  # interior columns of the last axis stand for two modes
    r2 = np.zeros(power.shape[1:])
    for i, n in enumerate(shape):
        idx = np.fft.rfftfreq(n, 1.0 / n) if i == ndim - 1 else np.fft.fftfreq(n, 1.0 / n)
        s = [1] * ndim
        s[i] = idx.size
        r2 = r2 + (idx.reshape(s) / (n / 3.0)) ** 2
    tail = (np.sqrt(r2) > 1.0 - fraction).astype(np.float64) * weight
    total = (r2 > 0).astype(np.float64) * weight
    dtype = power.dtype
    e_tail = jnp.sum(power * jnp.asarray(tail, dtype))
    e_total = jnp.sum(power * jnp.asarray(total, dtype))
    return e_tail / jnp.maximum(e_total, _tiny(dtype))


@pytree_dataclass()
class SpectralTail:
    """Growth of the high-wavenumber share of spectral energy against the verified state.

    ``value = max(s(proposal), min_share) / max(s(verified), min_share)`` (units ``"1"``)
    with ``s`` = :func:`tail_share` over the top ``fraction`` of the resolved band.
    Energy piling up at the grid scale, the usual first sign of a surrogate going
    unstable, gives values >> 1. ``min_share`` is the share below which a tail counts as
    empty: a well-resolved solver (KS at 64 points holds about 1e-12 there, round-off)
    then gives exactly 1 instead of a ratio of round-off noises, and white noise of
    relative amplitude ``a`` (share about ``0.3 a^2`` on KS) registers once ``0.3 a^2``
    exceeds ``min_share``. Under-resolved flows hold a real tail (NS 2D at 64^2: about
    0.06, fluctuating by a factor of 2), so there the ratio is bounded by ``1 / s``.

    Args:
        fraction: top fraction of the resolved wavenumbers (0 < fraction <= 1).
        min_share: tail share treated as empty, in [0, 1).
        name: indicator name.
    """

    fraction: float = 0.25
    min_share: float = 1e-6
    name: str = "spectral_tail"

    units = "1"
    long_name = "high-wavenumber energy share relative to the verified state"

    def __post_init__(self) -> None:
        if not isinstance(self.fraction, int | float) or not 0 < self.fraction <= 1:
            raise ValueError(f"SpectralTail: fraction must be in (0, 1], got {self.fraction!r}")
        if not isinstance(self.min_share, int | float) or not 0 <= self.min_share < 1:
            raise ValueError(f"SpectralTail: min_share must be in [0, 1), got {self.min_share!r}")
        object.__setattr__(self, "fraction", float(self.fraction))
        object.__setattr__(self, "min_share", float(self.min_share))

    def __call__(self, context: IndicatorContext) -> Array:
        p = tail_share(context.proposal, self.fraction)
        v = tail_share(context.verified, self.fraction)
        floor = jnp.maximum(jnp.asarray(self.min_share, p.dtype), _tiny(p.dtype))
        return jnp.maximum(p, floor) / jnp.maximum(v, floor)

    def config(self) -> dict[str, Any]:
        """Constructor keywords (rebuilds the indicator; recorded with each run)."""
        return {
            "type": "SpectralTail",
            "fraction": self.fraction,
            "min_share": self.min_share,
            "name": self.name,
            "units": self.units,
        }


# ---------------------------------------------------------------------------------------
def coarse_solver_like(solver: Stepper, factor: int = 2) -> Any:
    """The same solver on a grid ``factor`` times coarser, same internal step.

    :func:`solvers.resolution.coarsened`: the solver must be rebuildable on another grid
    (:class:`solvers.stepper.Rebuildable`: a ``config()`` returning its constructor
    keyword arguments, among them ``num_points``, each entry divisible by ``factor``).
    The project's solvers are; a solver wrapped with :func:`solvers.from_step` or
    :func:`solvers.from_exponax` is not (its step function is tied to its grid): build
    its coarse twin yourself and pass it as ``CoarseSolverCheck(coarse_solver=...)``.

    Raises:
        ValueError: the solver cannot be rebuilt on the coarse grid (the reason named,
            with the fix).
    """
    try:
        return coarsened(solver, factor)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"coarse_solver_like: cannot build a coarse {type(solver).__name__}: {e}; pass "
            f"CoarseSolverCheck(coarse_solver=<the same solver on a grid coarser by {factor}>) "
            "instead"
        ) from e


@pytree_dataclass(data_fields=("solver",))
class CourantNumber:
    """The solver's Courant number of the proposal: is it a state the solver can integrate?

    ``value = solver.courant_number(proposal)`` (units ``"1"``). A surrogate can hand the
    solver a state it cannot integrate stably (faster flow, or sharper gradients, than
    its internal step allows); a later rollback or fallback step of the solver then
    blows up, where neither engine fails alone. With this indicator in the policy such
    proposals are rejected and the block is redone by the solver from its (stable) start.
    Choose the threshold between the solver's own values (calibrate with
    ``benchmarks/calibrate_indicators.py``) and its measured stability limit.

    Args:
        name: indicator name.
        solver: set by :meth:`bind` (the runner's solver; it must have ``courant_number``).
    """

    name: str = "courant"
    solver: Any = None

    units = "1"
    long_name = "advective Courant number of the proposal at the solver's internal step"

    def bind(self, solver: Stepper, surrogate: Stepper) -> CourantNumber:
        """Attach ``solver``.

        Raises:
            TypeError: the solver has no ``courant_number(state)`` method.
        """
        if not isinstance(solver, HasCourantNumber):
            raise TypeError(
                f"CourantNumber: {type(solver).__name__} has no courant_number(state) method "
                "(NavierStokes2D, Burgers and ShallowWater2D provide one)"
            )
        return dataclasses.replace(self, solver=solver)

    def __call__(self, context: IndicatorContext) -> Array:
        if self.solver is None:
            raise ValueError("CourantNumber: call bind(solver, surrogate) first")
        return self.solver.courant_number(context.proposal)

    def config(self) -> dict[str, Any]:
        """Constructor keywords (rebuilds the indicator; recorded with each run)."""
        return {"type": "CourantNumber", "name": self.name, "units": self.units}


@pytree_dataclass(data_fields=("coarse_solver",))
class CoarseSolverCheck:
    """Disagreement of the proposal with one cheap coarse-resolution solver step.

    ``current`` is Fourier-truncated to the coarse grid and advanced one ``dt`` by the
    coarse solver; ``proposal`` is truncated too. The value is the RMS of their
    difference over the coarse points divided by the proposal's std, per channel, then
    RMS over channels (units ``"1"``). For the true solver it measures the coarse
    solver's own one-step truncation error (small where the flow is resolved at half
    the points); for a surrogate it adds the surrogate's large-scale error.

    Args:
        coarse_solver: a solver on a coarser grid of the same domain, same ``dt`` and
            variables; ``None`` builds one from the runner's solver with ``num_points //
            factor`` (see :func:`coarse_solver_like`) in :meth:`bind`. That needs a
            solver whose ``config()`` holds its constructor keywords including
            ``num_points`` (the project's solvers; not :func:`solvers.from_step` or
            :func:`solvers.from_exponax` wrappers, whose coarse twin you pass here).
        factor: coarsening factor used when ``coarse_solver`` is ``None``, an int >= 2.
        name: indicator name.
    """

    coarse_solver: Any = None
    factor: int = 2
    name: str = "coarse_check"

    units = "1"
    long_name = "relative disagreement with a coarse-resolution solver step"

    def __post_init__(self) -> None:
        f = self.factor
        if isinstance(f, bool) or not isinstance(f, int) or f < 2:
            raise ValueError(f"CoarseSolverCheck: factor must be an int >= 2, got {f!r}")

    def bind(self, solver: Stepper, surrogate: Stepper) -> CoarseSolverCheck:
        """Build (or check) the coarse solver against the runner's solver.

        Raises:
            ValueError: the coarse solver's variables, domain or ``dt`` differ, or none
                was given and the runner's solver cannot be rebuilt on a coarser grid
                (see :func:`coarse_solver_like`).
        """
        coarse = self.coarse_solver
        if coarse is None:
            coarse = coarse_solver_like(solver, self.factor)
        problems = []
        if tuple(coarse.variables) != tuple(solver.variables):
            problems.append(f"variables {tuple(coarse.variables)} != {tuple(solver.variables)}")
        if not np.allclose(
            coarse.grid.domain_length, solver.grid.domain_length, rtol=1e-12, atol=0
        ):
            problems.append(
                f"domain_length {coarse.grid.domain_length} != {solver.grid.domain_length}"
            )
        if not np.isclose(coarse.dt, solver.dt, rtol=1e-9, atol=0):
            problems.append(f"dt {coarse.dt} != {solver.dt}")
        if problems:
            raise ValueError(
                "CoarseSolverCheck: coarse solver does not match: " + "; ".join(problems)
            )
        return dataclasses.replace(self, coarse_solver=coarse)

    def __call__(self, context: IndicatorContext) -> Array:
        if self.coarse_solver is None:
            raise ValueError("CoarseSolverCheck: call bind(solver, surrogate) first")
        sizes = self.coarse_solver.grid.num_points
        x = context.current
        solver_dtype = jnp.dtype(getattr(self.coarse_solver, "dtype", x.dtype))
        coarse_step = self.coarse_solver(spectral_resample(x, sizes).astype(solver_dtype))
        p = spectral_resample(context.proposal, sizes)
        c = x.shape[0]
        diff = (p - coarse_step.astype(p.dtype)).reshape(c, -1)
        rms = jnp.sqrt(jnp.mean(diff * diff, axis=-1))
        rel = rms / jnp.maximum(_channel_std(p), _tiny(p.dtype))
        return jnp.sqrt(jnp.mean(rel * rel))

    def config(self) -> dict[str, Any]:
        """Constructor keywords (rebuilds the indicator; recorded with each run)."""
        coarse = self.coarse_solver
        return {
            "type": "CoarseSolverCheck",
            "factor": self.factor,
            "name": self.name,
            "units": self.units,
            "coarse_num_points": None if coarse is None else list(coarse.grid.num_points),
        }


__all__ = [
    "CoarseSolverCheck",
    "EnsembleSpread",
    "Indicator",
    "IndicatorContext",
    "InvariantDrift",
    "SpectralTail",
    "bind_indicator",
    "coarse_solver_like",
    "indicator_config",
    "tail_share",
]
