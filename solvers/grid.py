"""Uniform periodic grids and their coordinates."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np


def as_pair(value: Any, name: str, owner: str) -> tuple[Any, Any]:
    """A number or a ``(y, x)`` pair -> ``(y, x)``, for 2D solver arguments.

    Raises:
        ValueError: a sequence of another length, naming ``owner`` and ``name``.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{owner}: {name} must be a number or a pair (y, x), got {value!r}")
        return value[0], value[1]
    return value, value


def periodic_box_2d(
    num_points: Any, domain_length: Any, owner: str, *, even: bool = False
) -> tuple[int, int, float, float]:
    """Validate 2D ``num_points`` / ``domain_length`` (a number or a ``(y, x)`` pair each).

    Returns:
        ``(ny, nx, ly, lx)``.

    Raises:
        ValueError: a point count that is not an int >= 8 (even when ``even``), or a length
            that is not a finite number > 0, naming ``owner``, the argument and the axis.
    """
    ny, nx = as_pair(num_points, "num_points", owner)
    kind = "an even int >= 8" if even else "an int >= 8"
    for axis, n in (("y", ny), ("x", nx)):
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 8 or (even and n % 2):
            raise ValueError(
                f"{owner}: num_points must be {kind} or a pair of them, got {n!r} for axis {axis!r}"
            )
    ly, lx = as_pair(domain_length, "domain_length", owner)
    for length in (ly, lx):
        if (
            not isinstance(length, int | float | np.floating | np.integer)
            or isinstance(length, bool)
            or not np.isfinite(length)
            or length <= 0
        ):
            raise ValueError(f"{owner}: domain_length must be a finite number > 0, got {length!r}")
    return int(ny), int(nx), float(ly), float(lx)


@dataclasses.dataclass(frozen=True)
class Grid:
    """A uniform, periodic, cell-vertex grid.

    Point ``j`` along an axis of length ``L`` with ``N`` points sits at ``j * L / N``.

    Args:
        num_points: points per axis, ordered ``(..., y, x)`` like the state's spatial axes.
        domain_length: length of each axis, in ``length_units``.
        axes: axis names, e.g. ``("x",)`` or ``("y", "x")``; Lorenz-96 uses ``("site",)``.
        length_units: CF unit string of the coordinates (``"1"`` when nondimensional).
        long_names: CF ``long_name`` of each axis coordinate.
    """

    num_points: tuple[int, ...]
    domain_length: tuple[float, ...]
    axes: tuple[str, ...]
    length_units: str = "1"
    long_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n, length, axes = self.num_points, self.domain_length, self.axes
        if not (len(n) == len(length) == len(axes)):
            raise ValueError(
                f"Grid: num_points {n}, domain_length {length} and axes {axes} must have the "
                "same length (one entry per spatial axis)"
            )
        for name, value in zip(axes, n, strict=True):
            if int(value) != value or value < 2:
                raise ValueError(
                    f"Grid: num_points for axis {name!r} must be an int >= 2, got {value}"
                )
        for name, value in zip(axes, length, strict=True):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"Grid: domain_length for axis {name!r} must be > 0, got {value}")
        object.__setattr__(self, "num_points", tuple(int(v) for v in n))
        object.__setattr__(self, "domain_length", tuple(float(v) for v in length))
        object.__setattr__(self, "axes", tuple(str(a) for a in axes))
        if self.long_names is None:
            object.__setattr__(self, "long_names", tuple(f"{a} coordinate" for a in self.axes))

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.num_points)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Grid spacing ``dx`` per axis, in ``length_units``."""
        return tuple(
            length / n for length, n in zip(self.domain_length, self.num_points, strict=True)
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Points per axis (``num_points``), the spatial part of a state's shape."""
        return self.num_points

    def coords(self) -> dict[str, np.ndarray]:
        """Coordinate values per axis name (float64 numpy arrays)."""
        return {
            axis: np.arange(n, dtype=np.float64) * (length / n)
            for axis, n, length in zip(self.axes, self.num_points, self.domain_length, strict=True)
        }

    def meshgrid(self) -> tuple[np.ndarray, ...]:
        """Coordinate arrays broadcast to the grid shape, in axis order (``ij`` indexing)."""
        return tuple(np.meshgrid(*self.coords().values(), indexing="ij"))

    def to_dict(self) -> dict:
        """Plain description for metadata (JSON-serialisable)."""
        return {
            "num_points": list(self.num_points),
            "domain_length": list(self.domain_length),
            "axes": list(self.axes),
            "length_units": self.length_units,
            "long_names": list(self.long_names),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        """Inverse of :meth:`to_dict` (stored metadata back to a grid).

        Raises:
            ValueError: a required key (``num_points``, ``domain_length``, ``axes``) is
                missing, naming it and the keys present.
        """
        missing = [k for k in ("num_points", "domain_length", "axes") if k not in d]
        if missing:
            raise ValueError(f"Grid.from_dict: missing {missing}; got keys {sorted(d)}")
        names = d.get("long_names")
        return cls(
            tuple(d["num_points"]),
            tuple(d["domain_length"]),
            tuple(d["axes"]),
            d.get("length_units", "1"),
            tuple(names) if names else None,
        )
