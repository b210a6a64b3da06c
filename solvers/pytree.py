"""The one way this project makes a class a JAX pytree.

Every stepper, solver, policy, indicator context and coefficient table is an immutable
object whose attributes split into *data* (arrays and nested pytrees: leaves that ``jit``
traces and ``grad`` differentiates) and *meta* (hashable Python values that shape the
program: grid sizes, names, step counts). :func:`register_fields` registers a class that
way; :func:`pytree_dataclass` is the same for a frozen dataclass.

Both register *with keys* (``jax.tree_util.GetAttrKey`` per data field), so
``tree_leaves_with_path`` names a leaf ``.solver.viscosity`` in error messages, and both
unflatten with ``object.__new__`` and ``object.__setattr__``: ``__init__`` and
``__post_init__`` (argument checks, host-side precomputation) run when a user builds the
object, never on tracers inside ``jit``. Meta values are hashed into the treedef, so two
objects that differ only in data share one compiled program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import jax

T = TypeVar("T", bound=type)

__all__ = ["pytree_dataclass", "register_fields"]


def register_fields(cls: T, data_fields: Sequence[str], meta_fields: Sequence[str] = ()) -> T:
    """Register ``cls`` as a pytree with ``data_fields`` as children, ``meta_fields`` static.

    Args:
        cls: the class; its instances must have every named attribute.
        data_fields: attributes holding arrays or pytrees (traced, differentiated).
        meta_fields: attributes holding hashable values (part of the treedef).

    Returns:
        ``cls`` itself, so this also works as ``register_fields(cls, ...)`` after a class.

    Raises:
        TypeError: when a name is in both lists or is repeated.
    """
    data, meta = tuple(data_fields), tuple(meta_fields)
    names = data + meta
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise TypeError(f"{cls.__name__}: pytree fields {repeated} are named more than once")
    keys = tuple(jax.tree_util.GetAttrKey(n) for n in data)

    def flatten_with_keys(obj):
        return (
            tuple(zip(keys, (getattr(obj, n) for n in data), strict=True)),
            tuple(getattr(obj, n) for n in meta),
        )

    def flatten(obj):
        return tuple(getattr(obj, n) for n in data), tuple(getattr(obj, n) for n in meta)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for n, v in zip(meta, aux, strict=True):
            object.__setattr__(obj, n, v)
        for n, v in zip(data, children, strict=True):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


def pytree_dataclass(data_fields: Sequence[str] | Literal["all"] = ()) -> Callable[[type], type]:
    """Decorator: a frozen dataclass registered with :func:`register_fields`.

    ``data_fields`` names the fields that are leaves (``"all"``: every field); the other
    fields are static, so they must be hashable. The default, no data fields, suits a
    policy or indicator whose every setting shapes the program.

    Raises:
        TypeError: when a name in ``data_fields`` is not a field of the class.
    """

    def wrap(cls: type) -> type:
        cls = dataclasses.dataclass(frozen=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        data = names if data_fields == "all" else list(data_fields)
        unknown = [n for n in data if n not in names]
        if unknown:
            raise TypeError(f"{cls.__name__}: data_fields {unknown} are not fields")
        return register_fields(cls, data, [n for n in names if n not in data])

    return wrap
