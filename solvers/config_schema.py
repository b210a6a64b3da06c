"""Start-up checks of configuration nodes against the signature they will be passed to.

A config node builds one object: its keys are exactly the keyword arguments of a class
or function. :func:`check_kwargs` compares a plain mapping with that signature and its
type hints, so a misspelled key or a wrong type fails before any work starts, with a
message naming the node, the key, what was given and what was expected. No Hydra here:
entry points convert their nodes to plain dicts first.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration node does not match what it configures."""


def check_kwargs(
    target: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    where: str,
    runtime: tuple[str, ...] = (),
    allow_missing: bool = True,
) -> None:
    """Raise :class:`ConfigError` unless ``kwargs`` fits ``target``'s keyword arguments.

    Args:
        target: the class (its ``__init__``) or function the node configures.
        kwargs: the node's keys and values (plain Python values).
        where: the node's name in messages, e.g. ``"solver"`` or ``"configs/model/fno.yaml"``.
        runtime: keyword arguments supplied by the entry point, not by the config.
        allow_missing: whether keys with no default may be absent from the node.
    """
    sig = inspect.signature(target.__init__ if inspect.isclass(target) else target)
    params = {
        n: p
        for n, p in sig.parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolvable forward references: skip type checks
        hints = {}
    name = getattr(target, "__qualname__", repr(target))
    for key, value in kwargs.items():
        if key.startswith("_") and key.endswith("_"):
            continue  # Hydra's own keys (_target_, _partial_, ...)
        if key in runtime:
            raise ConfigError(
                f"{where}: key {key!r} is supplied at run time by the entry point and must "
                "not be set in the config"
            )
        if key not in params:
            if accepts_any:
                continue
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key {key!r} for {name}{hint}; valid keys: "
                f"{', '.join(k for k in params if k not in runtime)}"
            )
        expected = hints.get(key)
        if expected is not None and not _matches(value, expected):
            raise ConfigError(
                f"{where}: key {key!r} = {value!r} has type {type(value).__name__}, "
                f"expected {_describe(expected)}"
            )
    if not allow_missing:
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty and n not in kwargs and n not in runtime
        ]
        if missing:
            raise ConfigError(f"{where}: missing required key(s) {missing} for {name}")


def _matches(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is bool:
        return isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if origin in (tuple, list, typing.Sequence) or expected in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        args = typing.get_args(expected)
        if not args:
            return True
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        if origin is tuple:
            return len(args) == len(value) and all(
                _matches(v, a) for v, a in zip(value, args, strict=True)
            )
        return all(_matches(v, args[0]) for v in value)
    if origin in (dict, Mapping) or expected is dict:
        return isinstance(value, Mapping)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True  # a hint we do not check (callables, arrays, ...)


def _describe(expected: Any) -> str:
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
