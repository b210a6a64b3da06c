"""The stepper contract, declared once: what every solver and learned stepper provides.

A *stepper* advances a state ``(C, *spatial)`` by one output interval ``dt``. Solvers
(:class:`solvers.Solver`, :func:`solvers.from_step`), learned steppers
(:class:`surrogate.forecaster.Forecaster`, :class:`surrogate.correction.LearnedCorrection`)
and wrappers (:class:`solvers.resolution.Resampled`) all satisfy :class:`Stepper`, so
generation, evaluation, the hybrid runner and the front take any of them and never ask
which one is a network.

- :class:`Stepper`: ``dt``, ``variables``, ``units``, ``long_names``, ``time_units``,
  ``grid``, ``state_shape`` and ``__call__(state) -> state`` over one output interval,
  unbatched, shape and dtype preserving, pure (batches come from ``jax.vmap``).
- Capabilities, checked with ``isinstance`` (as diffrax checks its marker classes):
  :class:`HasDiagnostics` (``diagnostics(state) -> {name: scalar}``),
  :class:`HasCourantNumber` (``courant_number(state) -> scalar``),
  :class:`Rebuildable` (``config() -> constructor kwargs``, so the same stepper can be
  rebuilt on another grid: :func:`solvers.resolution.at_resolution`).
- :func:`check_stepper` names what an object lacks; :func:`mismatches` and
  :func:`check_compatible` answer "do these two steppers describe the same problem?"
  once for everyone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

Array = jax.Array

#: The attributes every stepper has (besides ``__call__``).
STEPPER_ATTRIBUTES = (
    "dt",
    "variables",
    "units",
    "long_names",
    "time_units",
    "grid",
    "state_shape",
)

#: Relative tolerance on equal ``dt`` and domain lengths (values that went through JSON).
RTOL = 1e-9


@runtime_checkable
class Stepper(Protocol):
    """One output interval of a periodic problem: ``state (C, *spatial) -> state``.

    Attributes:
        dt: output interval (``time_units``).
        variables: channel names in state order.
        units: CF units per variable.
        long_names: CF long name per variable.
        time_units: CF unit of ``dt``.
        grid: the :class:`solvers.grid.Grid` of the spatial axes.
        state_shape: ``(len(variables), *grid.num_points)``.
    """

    dt: float
    variables: tuple[str, ...]
    units: Mapping[str, str]
    long_names: Mapping[str, str]
    time_units: str
    grid: Any
    state_shape: tuple[int, ...]

    def __call__(self, state: Array) -> Array: ...


@runtime_checkable
class HasDiagnostics(Protocol):
    """A stepper that reports scalar diagnostics of a state (energy, mass, ...)."""

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """Named scalar diagnostics of one state ``(C, *spatial)``."""
        ...


@runtime_checkable
class HasCourantNumber(Protocol):
    """A stepper that reports the Courant number of its internal step for a state."""

    def courant_number(self, state: Array) -> Array:
        """Scalar Courant number of the internal step for one state ``(C, *spatial)``."""
        ...


@runtime_checkable
class Rebuildable(Protocol):
    """A stepper whose ``type(s)(**s.config())`` rebuilds it (with changed keywords)."""

    def config(self) -> dict[str, Any]:
        """Constructor keywords that rebuild the stepper."""
        ...


class WrapsSolver:
    """Stepper metadata taken from ``self.solver``, for steppers built around one solver.

    A learned correction or a fitted filter advances the state with its ``solver`` and then
    changes it, keeping the solver's ``dt``, grid and variables: subclassing this gives
    them :data:`STEPPER_ATTRIBUTES` without restating each property.
    """

    solver: Any

    @property
    def dt(self) -> float:
        """Output interval (``time_units``)."""
        return self.solver.dt

    @property
    def variables(self) -> tuple[str, ...]:
        """Channel names in state order."""
        return self.solver.variables

    @property
    def units(self) -> Mapping[str, str]:
        """CF units per variable."""
        return self.solver.units

    @property
    def long_names(self) -> Mapping[str, str]:
        """CF long names per variable."""
        return self.solver.long_names

    @property
    def time_units(self) -> str:
        """Units of ``dt``."""
        return self.solver.time_units

    @property
    def grid(self):
        """The solver's grid (:class:`solvers.Grid`)."""
        return self.solver.grid

    @property
    def state_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)``."""
        return tuple(self.solver.state_shape)


def check_stepper(owner: str, obj: Any, name: str = "stepper") -> None:
    """Raise ``TypeError`` naming every attribute of the contract that ``obj`` lacks.

    Args:
        owner: who checks (the start of the message).
        obj: the object handed in as a stepper.
        name: how to call it in the message (``"solver"``, ``"surrogate"``, ...).
    """
    missing = [a for a in STEPPER_ATTRIBUTES if not hasattr(obj, a)]
    if not callable(obj):
        missing.append("__call__")
    if missing:
        raise TypeError(
            f"{owner}: {name} {type(obj).__name__} lacks {', '.join(missing)}; a stepper has "
            f"{', '.join(STEPPER_ATTRIBUTES)} and __call__(state) over one output interval "
            "(solvers.stepper.Stepper)"
        )


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` for a mapping, else ``obj.key``."""
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


def _grid_dict(grid: Any) -> dict[str, Any]:
    return grid.to_dict() if hasattr(grid, "to_dict") else dict(grid)


def mismatches(
    a: Any,
    b: Any,
    *,
    grid: str = "points",
    dt: bool = True,
    variables: bool = True,
    b_label: str = "",
    dt_rtol: float = RTOL,
) -> list[str]:
    """How two steppers (or a stepper and a data description) differ, item by item.

    Args:
        a, b: objects with ``variables``, ``grid`` (a ``Grid`` or its ``to_dict()``) and
            ``dt``, or mappings with those keys.
        grid: ``"points"`` (same ``num_points`` and domain), ``"domain"`` (same domain and
            number of axes; grids may differ, as a solver ladder's) or ``"none"``.
        dt: compare ``dt`` (relative tolerance :data:`RTOL`).
        variables: compare the channel names.
        b_label: written before each of ``b``'s values (``"trained "``: ``dt 0.25 !=
            trained 0.5``).
        dt_rtol: relative tolerance on equal ``dt``.

    Returns:
        One ``"<item> <a's> != <b's>"`` string per difference (empty: compatible).
    """
    if grid not in ("points", "domain", "none"):
        raise ValueError(f"mismatches: grid must be 'points', 'domain' or 'none', got {grid!r}")
    problems = []
    if variables and tuple(_get(a, "variables")) != tuple(_get(b, "variables")):
        problems.append(
            f"variables {tuple(_get(a, 'variables'))} != {b_label}{tuple(_get(b, 'variables'))}"
        )
    if grid != "none":
        ga, gb = _grid_dict(_get(a, "grid")), _grid_dict(_get(b, "grid"))
        pa, pb = tuple(ga["num_points"]), tuple(gb["num_points"])
        if grid == "points" and pa != pb:
            problems.append(f"grid num_points {pa} != {b_label}{pb}")
        la, lb = tuple(ga["domain_length"]), tuple(gb["domain_length"])
        if len(la) != len(lb) or not np.allclose(la, lb, rtol=RTOL, atol=0):
            problems.append(f"grid domain_length {la} != {b_label}{lb}")
    if dt:
        da, db = float(_get(a, "dt")), float(_get(b, "dt"))
        if not math.isclose(da, db, rel_tol=dt_rtol, abs_tol=0.0):
            problems.append(f"dt {da} != {b_label}{db}")
    return problems


def check_compatible(
    owner: str,
    a: Any,
    b: Any,
    *,
    names: tuple[str, str] = ("stepper", "reference"),
    grid: str = "points",
    dt: bool = True,
) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` describe the same problem.

    Args:
        owner: who checks (the start of the message).
        a, b: steppers (or data descriptions, see :func:`mismatches`).
        names: how to call ``a`` and ``b`` in the message.
        grid, dt: as in :func:`mismatches`.

    Raises:
        ValueError: ``"<owner>: <a> does not match <b>: variables ... != ...; dt ..."``,
            each difference with ``a``'s value first.
    """
    problems = mismatches(a, b, grid=grid, dt=dt)
    if problems:
        raise ValueError(f"{owner}: {names[0]} does not match {names[1]}: " + "; ".join(problems))


__all__ = [
    "WrapsSolver",
    "RTOL",
    "STEPPER_ATTRIBUTES",
    "HasCourantNumber",
    "HasDiagnostics",
    "Rebuildable",
    "Stepper",
    "check_compatible",
    "check_stepper",
    "mismatches",
]
