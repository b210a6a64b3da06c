"""Policies: which engine advances each step (or block of steps) of a hybrid run.

A policy is a small frozen dataclass registered as a pytree. Thresholds are leaves, so a
sweep over thresholds (the accuracy-versus-cost curve) reuses one compiled program;
integers that shape the computation (``k``, ``block_size``) and indicator names are static.

Every policy answers three questions for the runner (see :mod:`surrogate.hybrid.runner`):

- ``block_size``: how many surrogate steps are proposed before one check (1 = per step);
- ``solver_scheduled(step)``: whether the solver is scheduled for the block that starts
  at global step ``step`` for *every* member (a Python bool when it never depends on the
  step, else a traced scalar bool); a scheduled block never evaluates the surrogate;
- ``thresholds``: ``{indicator name: threshold}``; a proposed block whose indicator value
  is above (or NaN against) its threshold is rejected and redone with the solver.

Independently of the policy, a proposal holding NaN/Inf or ``|state|`` above the runner's
``blowup_threshold`` always falls back to the solver.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from solvers.pytree import pytree_dataclass

Array = jax.Array


def _names_and_thresholds(
    owner: str, indicator_name: Any, threshold: Any, *, allow_empty: bool
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Normalise ``str | Sequence[str]`` and ``float | Sequence[float]`` to matching tuples."""
    names = (indicator_name,) if isinstance(indicator_name, str) else tuple(indicator_name)
    values = (
        (threshold,)
        if isinstance(threshold, int | float) and not isinstance(threshold, bool)
        else tuple(threshold)
    )
    if not names and not allow_empty:
        raise ValueError(f"{owner}: indicator_name must name at least one indicator")
    if len(names) != len(values):
        raise ValueError(
            f"{owner}: indicator_name {names} and threshold {values} must have the same length"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}: indicator_name {names} repeats a name")
    for n in names:
        if not isinstance(n, str) or not n:
            raise ValueError(
                f"{owner}: indicator_name entries must be non-empty strings, got {n!r}"
            )
    out = []
    for n, v in zip(names, values, strict=True):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{owner}: threshold for {n!r} must be a number, got {v!r}") from None
        if math.isnan(f) or f < 0:
            raise ValueError(f"{owner}: threshold for {n!r} must be >= 0 (inf allowed), got {v!r}")
        out.append(f)
    return names, tuple(out)


class Policy:
    """Base class of the policies (see module docstring)."""

    block_size: ClassVar[int] = 1

    @property
    def thresholds(self) -> dict[str, Any]:
        """``{indicator name: threshold}`` checked on proposed surrogate blocks."""
        return {}

    def solver_scheduled(self, step: Array) -> bool | Array:
        """Whether the solver runs the block starting at global step ``step`` for everyone."""
        return False

    def config(self) -> dict[str, Any]:
        """Plain description (type and constructor arguments) for run metadata."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = [_plain(x) for x in v] if isinstance(v, tuple) else _plain(v)
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, bool | int | str) or v is None:
        return v
    return float(v)


@pytree_dataclass()
class AlwaysSolver(Policy):
    """Run the solver on every step (the surrogate is never evaluated): the reference cost."""

    def solver_scheduled(self, step: Array) -> bool:
        """Every step is scheduled for the solver."""
        return True


@pytree_dataclass()
class AlwaysSurrogate(Policy):
    """Run the surrogate on every step; only a non-finite or blown-up step uses the solver."""


@pytree_dataclass()
class EveryK(Policy):
    """Solver on every ``k``-th step, surrogate otherwise.

    Step ``n`` (0-based global index, advancing frame ``n`` to frame ``n + 1``) runs the
    solver when ``(n + 1) % k == 0``: ``k - 1`` surrogate steps, then one solver step that
    re-anchors the trajectory. ``k = 1`` is always-solver.

    Args:
        k: period in steps, an int >= 1.
    """

    k: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"EveryK: k must be an int >= 1, got {self.k!r}")

    def solver_scheduled(self, step: Array) -> bool | Array:
        """The solver takes the steps ``n`` with ``(n + 1) % k == 0``; the surrogate the others."""
        if self.k == 1:
            return True
        return (jnp.asarray(step) + 1) % self.k == 0


@pytree_dataclass(data_fields=("threshold",))
class Threshold(Policy):
    """Propose a surrogate step; redo it with the solver if an indicator exceeds its threshold.

    The step is rejected when ``value > threshold`` (or the value is NaN) for any of the
    named indicators; the rejected step is logged as ``rollback`` (engine code 3).

    Args:
        indicator_name: name of an indicator given to the runner, or a list of names.
        threshold: threshold in the indicator's units (see its ``units``), or a list
            matching ``indicator_name``; >= 0, ``inf`` disables the check.
    """

    indicator_name: str | tuple[str, ...] = "energy_drift"
    threshold: float | tuple[float, ...] = 0.1

    def __post_init__(self) -> None:
        names, values = _names_and_thresholds(
            "Threshold", self.indicator_name, self.threshold, allow_empty=False
        )
        object.__setattr__(self, "indicator_name", names)
        object.__setattr__(self, "threshold", values)

    @property
    def thresholds(self) -> dict[str, Any]:
        """Indicator name -> threshold (in the indicator's units)."""
        return dict(zip(self.indicator_name, self.threshold, strict=True))


@pytree_dataclass(data_fields=("threshold",))
class BlockPolicy(Policy):
    """Run the surrogate for ``block_size`` steps, check once, roll back a failed block.

    The indicators are evaluated once at the end of the block (current = the state before
    the block's last step, proposal = the block's last state, verified = the last
    solver-verified state). If any named indicator is above its threshold, or any step of
    the block was non-finite or blew up, the whole block is redone with the solver from
    its first state (engine code 3, or 2 for a non-finite block). Checking once per block
    amortises expensive indicators (ensembles, coarse solves) over ``block_size`` steps.

    Args:
        block_size: steps per block, an int >= 1.
        indicator_name: indicator name(s) checked at the end of each block (may be empty:
            then only non-finite/blow-up blocks are rolled back).
        threshold: matching threshold(s) in the indicators' units, >= 0.
    """

    block_size: int = 8
    indicator_name: str | tuple[str, ...] = ()
    threshold: float | tuple[float, ...] = ()

    def __post_init__(self) -> None:
        b = self.block_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"BlockPolicy: block_size must be an int >= 1, got {b!r}")
        names, values = _names_and_thresholds(
            "BlockPolicy", self.indicator_name, self.threshold, allow_empty=True
        )
        object.__setattr__(self, "indicator_name", names)
        object.__setattr__(self, "threshold", values)

    @property
    def thresholds(self) -> dict[str, Any]:
        """Indicator name -> threshold (in the indicator's units)."""
        return dict(zip(self.indicator_name, self.threshold, strict=True))


def policy_thresholds(policy: Any) -> Mapping[str, Any]:
    """``policy.thresholds`` or ``{}`` for duck-typed policies without one."""
    return dict(getattr(policy, "thresholds", {}) or {})


__all__ = [
    "AlwaysSolver",
    "AlwaysSurrogate",
    "BlockPolicy",
    "EveryK",
    "Policy",
    "Threshold",
    "policy_thresholds",
    "pytree_dataclass",
]
