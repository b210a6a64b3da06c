"""Name -> solver class registry, so configs and stored provenance can rebuild solvers."""

from __future__ import annotations

from typing import Any

from solvers.base import Solver

_REGISTRY: dict[str, type[Solver]] = {}


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator adding a solver under its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"solver name {cls.name!r} is already registered by {_REGISTRY[cls.name]}")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Registered solver names, sorted."""
    return sorted(_REGISTRY)


def get_solver_class(name: str) -> type[Solver]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown solver {name!r}; available: {', '.join(available())}") from None


def build_solver(name: str, **kwargs: Any) -> Solver:
    """Build a registered solver from keyword arguments, naming any unknown key.

    Raises:
        KeyError: unknown solver name.
        TypeError: a keyword the solver does not take (the message lists the valid ones).
        ValueError: an invalid value (from the solver's own validation).
    """
    import inspect

    cls = get_solver_class(name)
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise TypeError(
            f"solver {name!r} got unknown key(s) {unknown}; valid keys: {', '.join(valid)}"
        )
    return cls(**kwargs)
