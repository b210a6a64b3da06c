"""The solver contract: an immutable pytree stepper with metadata.

A solver advances a state of shape ``(C, *spatial)`` (one channel per physical variable,
spatial axes ordered ``(..., y, x)``) by one output interval ``dt`` through ``advance``,
made of ``num_substeps`` internal steps. It is a pytree: physical parameters and
precomputed arrays are leaves (so sweeping a parameter does not recompile), while grid
sizes, step counts and precision are static.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from solvers.grid import Grid
from solvers.pytree import register_fields
from solvers.stepper import Stepper

Array = jax.Array

PRECISIONS = ("float32", "float64")


def resolve_precision(precision: str) -> jnp.dtype:
    """Map a precision name to a dtype, checking that JAX can honour it.

    Raises:
        ValueError: unknown name, or ``"float64"`` while ``jax_enable_x64`` is off.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "precision='float64' needs 64-bit JAX: call "
            "jax.config.update('jax_enable_x64', True) before building the solver"
        )
    return jnp.dtype(precision)


def promoted_dtype(*dtypes: Any) -> jnp.dtype:
    """The dtype JAX's standard promotion gives ``dtypes``, whatever the promotion mode.

    Dtype arithmetic (which complex type goes with a precision, which float type an FFT
    runs in) is not an implicit promotion of arrays, so it stays valid under
    ``jax_numpy_dtype_promotion="strict"``; array operations then cast explicitly.
    """
    with jax.numpy_dtype_promotion("standard"):
        return jnp.dtype(jnp.result_type(*dtypes))


def complex_dtype(real_dtype: Any) -> jnp.dtype:
    """The complex dtype of the same precision (``float32 -> complex64``, ``float64 ->
    complex128``); the spectral state of a real field of ``real_dtype``."""
    return promoted_dtype(real_dtype, jnp.complex64)


class Solver:
    """Base class of the classical solvers.

    Subclasses list their pytree leaves in ``_dynamic_fields`` (physical parameters,
    precomputed arrays) and their static attributes in ``_static_fields`` (grid, step
    counts, precision); ``__init__`` validates, precomputes and sets both through
    :meth:`_set` (instances are immutable, so plain assignment raises). Instances are
    JAX pytrees: they pass through ``jax.jit`` and ``jax.vmap`` as arguments.

    Class attributes every subclass defines:
        name: registry name, e.g. ``"kuramoto_sivashinsky"``.
        variables: channel names in state order, e.g. ``("h", "u", "v")``.
        units: CF unit string per variable.
        long_names: CF long name per variable.
        time_units: CF unit of ``dt`` (default ``"1"``).
        conserved_means: variables whose spatial mean is an exact invariant (default none).

    Set by ``__init__`` through :meth:`_set` (each listed in one of the field tuples):
        _dt: the output interval (read as :attr:`dt`), usually a dynamic field.
        grid: a :class:`solvers.grid.Grid`; the state is ``(len(variables), *grid.shape)``.
        num_substeps: internal steps per ``dt``.
        precision: ``"float32"`` or ``"float64"``.

    Methods a subclass implements: ``config()`` (its constructor keyword arguments, so
    ``type(s)(**s.config())`` rebuilds it; a ``num_points`` keyword lets
    :func:`solvers.resolution.at_resolution` and the coarse-solver indicator rebuild it
    on another grid), ``initial_condition(key)``, ``step(state)`` and optionally
    ``diagnostics(state)``; ``advance``/``__call__`` run ``num_substeps`` steps. A
    minimal subclass::

        class Shift(Solver):
            name, variables = "shift", ("u",)
            units, long_names = {"u": "1"}, {"u": "shifted field"}
            _dynamic_fields = ("_dt",)
            _static_fields = ("grid", "num_substeps", "precision")

            def __init__(self, num_points: int = 32, dt: float = 0.1):
                self._set(grid=Grid((num_points,), (1.0,), ("x",)), num_substeps=1,
                          precision="float32", _dt=float(dt))

            def config(self):
                return {"num_points": self.grid.num_points[0], "dt": self.dt}

            def initial_condition(self, key):
                return jax.random.normal(key, self.state_shape, self.dtype)

            def step(self, state):
                return jnp.roll(state, 1, axis=-1)

    For a step function without a class, see :func:`solvers.from_step`.
    """

    name: ClassVar[str]
    variables: ClassVar[tuple[str, ...]]
    units: ClassVar[Mapping[str, str]]
    long_names: ClassVar[Mapping[str, str]]
    time_units: ClassVar[str] = "1"
    # Variables whose spatial mean the equations conserve exactly (learned steppers can
    # enforce the same; see surrogate.forecaster.ForecasterSpec.conserved).
    conserved_means: ClassVar[tuple[str, ...]] = ()
    _dynamic_fields: ClassVar[tuple[str, ...]] = ()
    _static_fields: ClassVar[tuple[str, ...]] = ()

    # Set by every subclass __init__.
    grid: Grid
    num_substeps: int
    precision: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_fields(cls, cls._dynamic_fields, cls._static_fields)

    def _set(self, **values: Any) -> None:
        for n, v in values.items():
            object.__setattr__(self, n, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"{type(self).__name__} is immutable; build a new solver with "
            f"{type(self).__name__}(**{{**solver.config(), {name!r}: ...}})"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {name!r}")

    # ---- metadata --------------------------------------------------------------------
    @property
    def dtype(self) -> jnp.dtype:
        """Real dtype of the state (from ``precision``)."""
        return jnp.dtype(self.precision)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)``."""
        return (len(self.variables), *self.grid.num_points)

    @property
    def dt(self) -> float:
        """Output interval (time units): a host float, or the traced value inside ``jit``.

        Raises:
            AttributeError: ``__init__`` did not set ``_dt`` (named, with the fix).
        """
        try:
            dt = self._dt
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__}.dt: the output interval is not set; the solver's "
                "__init__ must call self._set(_dt=dt, ...) and list '_dt' in _dynamic_fields "
                "(see solvers.Solver)"
            ) from None
        if isinstance(dt, jax.core.Tracer):
            return dt
        return float(dt)

    @property
    def internal_dt(self) -> float:
        """Internal time step ``dt / num_substeps``."""
        return self.dt / self.num_substeps

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments as plain Python values (provenance, rebuilding)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # ---- stepping --------------------------------------------------------------------
    def initial_condition(self, key: Array) -> Array:
        """A random initial state ``(C, *spatial)`` drawn from the documented distribution."""
        raise NotImplementedError

    def step(self, state: Array) -> Array:
        """One internal step of size ``dt / num_substeps``."""
        raise NotImplementedError

    def advance(self, state: Array) -> Array:
        """Advance by one output interval ``dt`` (``num_substeps`` internal steps)."""
        return jax.lax.fori_loop(0, self.num_substeps, lambda _, s: self.step(s), state)

    def __call__(self, state: Array) -> Array:
        """Steppers are callables ``state -> state`` over ``dt``; same as :meth:`advance`."""
        return self.advance(state)

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """Scalar invariants of a state (mass, energy, ...) keyed by name."""
        raise NotImplementedError

    # ---- helpers for subclasses ------------------------------------------------------
    def _check_state(self, state: Array) -> None:
        """Refuse a state of the wrong shape or of a non-floating dtype (static: trace time)."""
        check_floating_state(type(self).__name__, state, hint=f"state.astype({self.precision!r})")
        if tuple(state.shape) != self.state_shape:
            raise ValueError(
                f"{type(self).__name__}: state has shape {tuple(state.shape)}, expected "
                f"{self.state_shape} = (channels {self.variables}, *grid {self.grid.axes})"
            )


def check_pytree(owner: str, solver: Stepper, what: str = "solver") -> None:
    """Raise ``TypeError`` unless ``solver`` is a JAX pytree (not one opaque leaf).

    Solvers enter ``jax.jit`` as arguments; a plain Python object is a single leaf there
    and fails with a raw "cannot interpret as an abstract array" error.

    Args:
        owner: the function refusing it, for the message (``"datasets.generate"``).
        solver: the object to check.
        what: the argument's name, for the message.
    """
    leaves, treedef = jax.tree_util.tree_flatten(solver)
    if treedef.num_nodes == 1 and len(leaves) == 1 and leaves[0] is solver:
        raise TypeError(
            f"{owner}: {what} must be a JAX pytree (e.g. a subclass of solvers.Solver, or "
            f"wrap your step with solvers.from_step / solvers.from_exponax); got a "
            f"{type(solver).__module__}.{type(solver).__qualname__}, which JAX sees as one "
            "opaque leaf (register it with jax.tree_util.register_pytree_node, or make it "
            "an equinox.Module)"
        )


def check_floating_state(owner: str, state: Array, hint: str = "state.astype(float)") -> None:
    """Raise ``TypeError`` unless ``state`` has a real floating dtype.

    States are physical fields: an int or bool state would be truncated back to its dtype
    after every step (a rollout decays to zeros), and a complex one would lose its
    imaginary part. The dtype is static, so this costs nothing once traced.

    Args:
        owner: name for the message (a solver class, ``"rollout"``).
        state: the state array (or tracer).
        hint: the conversion the message suggests.
    """
    dtype = jnp.result_type(state)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{owner}: state has dtype {dtype}, expected a real floating dtype "
            f"(float32 or float64); convert it first, e.g. {hint}"
        )


def check_positive(owner: str, **values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not a finite positive number."""
    for k, v in values.items():
        if not (
            isinstance(v, int | float | np.floating | np.integer) and math.isfinite(v) and v > 0
        ):
            raise ValueError(f"{owner}: {k} must be a finite number > 0, got {v!r}")


def check_nonnegative(owner: str, **values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not a finite number >= 0."""
    for k, v in values.items():
        if not (
            isinstance(v, int | float | np.floating | np.integer) and math.isfinite(v) and v >= 0
        ):
            raise ValueError(f"{owner}: {k} must be a finite number >= 0, got {v!r}")


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy), bools excluded."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_int(
    owner: str, name: str, value: int, low: int, high: int | None = None, meaning: str = ""
) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (``high=None``: no upper bound).

    Raises:
        ValueError: naming ``name``, the allowed range and ``meaning`` (a parenthesised
            hint), for a non-integer (bools included) or an out-of-range value.
    """
    if not is_int(value) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        hint = f" ({meaning})" if meaning else ""
        raise ValueError(f"{owner}: {name} must be an int {span}{hint}, got {value!r}")
    return int(value)


def check_substeps(owner: str, num_substeps: int) -> int:
    """``num_substeps`` as an int >= 1 (``ValueError`` naming ``owner`` otherwise)."""
    return check_int(owner, "num_substeps", num_substeps, 1)


def check_stability(
    owner: str, *, internal_dt: float, limit: float, dt: float, num_substeps: int, reason: str
) -> None:
    """Fail early when the internal step exceeds a stability limit.

    The message names the limit, the reason and the smallest ``num_substeps`` that works.
    """
    if internal_dt > limit:
        needed = math.ceil(dt / limit)
        raise ValueError(
            f"{owner}: internal step dt/num_substeps = {dt}/{num_substeps} = {internal_dt:.4g} "
            f"exceeds the stability limit {limit:.4g} ({reason}); use num_substeps >= {needed} "
            "or a smaller dt"
        )
