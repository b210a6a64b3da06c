"""Bring your own solver: wrap a pure step function, or an exponax stepper, as a Solver.

:func:`from_step` turns ``step_fn(state) -> state`` and ``init_fn(key) -> state`` (plus
the metadata every dataset and stepper needs: variables, grid, ``dt``, units) into a
:class:`StepSolver`, an object that satisfies the whole :class:`solvers.Solver` contract:
a JAX pytree (jit- and vmap-able), ``initial_condition``, ``step``, ``advance`` /
``__call__`` over ``dt``, ``config()`` and the metadata. :func:`from_exponax` does the
same for an `exponax <https://github.com/Ceyron/exponax>`_ stepper, reading the domain,
grid and ``dt`` from it.

The functions may be plain functions or callable pytrees (an ``equinox.Module``, a
``jax.tree_util.Partial``). Their array leaves become leaves of the solver (traced, so
new values do not recompile); every other leaf (Python ints such as grid sizes, floats,
functions) is kept static, as ``equinox.filter_jit`` does: an exponax stepper keeps its
grid size as a Python int, which must not be traced.

Provenance. ``config()`` records each function by its importable name
``"module:QualName"`` (or, for a callable object, a description in angle brackets), so a
dataset generated with a :class:`StepSolver` can be re-simulated elsewhere exactly when
the functions are module-level functions of a trusted module
(:func:`solvers.trust_module`): ``StepSolver(**config)`` imports them by name, only
from trusted modules. :meth:`StepSolver.rebuild_problems` says why that is impossible
otherwise (a script's ``__main__``, a closure, a lambda, an exponax object); generation
logs it as a warning, and ``datasets.validate(path, solver=...)`` accepts the live
solver instead.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from solvers.base import Solver, check_positive, check_substeps, resolve_precision
from solvers.grid import Grid
from solvers.pytree import register_fields
from solvers.stepper import Stepper

Array = jax.Array

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


# ---- callables as (array leaves, static rest) ------------------------------------------
def _split(fn: Any, owner: str, what: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Split a callable pytree into its array leaves and a hashable static description.

    Raises:
        TypeError: a non-array leaf is unhashable (it could not be a static jit argument).
    """
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    mask = tuple(isinstance(x, _ARRAY_TYPES) for x in leaves)
    arrays = tuple(x for x, m in zip(leaves, mask, strict=True) if m)
    static = (treedef, tuple(None if m else x for x, m in zip(leaves, mask, strict=True)), mask)
    try:
        hash(static)
    except TypeError as e:
        raise TypeError(
            f"{owner}: {what} is a pytree with an unhashable non-array leaf ({e}); non-array "
            "leaves are kept static, so they must be hashable (use arrays for data)"
        ) from None
    return arrays, static


def _join(arrays: Sequence[Any], static: tuple[Any, ...]) -> Any:
    treedef, leaves, mask = static
    it = iter(arrays)
    return jax.tree_util.tree_unflatten(
        treedef, [next(it) if m else s for s, m in zip(leaves, mask, strict=True)]
    )


def _describe(fn: Any) -> str:
    """``"module:QualName"`` of a function, else ``"<module.Class object (...)>"``."""
    if inspect.isfunction(fn) or inspect.isbuiltin(fn):
        return f"{fn.__module__}:{fn.__qualname__}"
    if isinstance(fn, _ExponaxIC):
        return _describe(fn.generator)
    cls = type(fn)
    scalars = ""
    if dataclasses.is_dataclass(fn):
        scalars = ", ".join(
            f"{f.name}={getattr(fn, f.name)!r}"
            for f in dataclasses.fields(fn)
            if isinstance(getattr(fn, f.name, None), bool | int | float | str)
        )
    return f"<{cls.__module__}.{cls.__qualname__} object({scalars})>"


def _rebuild_problem(path: str, what: str) -> str | None:
    """Why ``path`` (from :func:`_describe`) cannot be imported in another process, or None."""
    from solvers.registry import is_trusted_module

    if path.startswith("<"):
        return f"{what} is a callable object {path}, not a module-level function"
    module, _, qualname = path.partition(":")
    if module in ("__main__", "__mp_main__"):
        return f"{what} {path} is defined in a script (module __main__)"
    if "<" in qualname:
        return f"{what} {path} is a closure or a lambda, not a module-level function"
    if any(p.startswith("_") for p in (*module.split("."), *qualname.split("."))):
        return f"{what} {path} has a private name (only public names are imported)"
    if not is_trusted_module(module):
        return (
            f"{what} {path} is in module {module!r}, which is not trusted: call "
            f"solvers.trust_module({module.split('.')[0]!r}) in the validating process"
        )
    return None


def _resolve(fn: Any, owner: str, what: str) -> tuple[Any, str]:
    """``(callable, recorded name)`` from a callable or a recorded ``"module:QualName"``."""
    if isinstance(fn, str):
        if fn.startswith("<"):
            raise ValueError(
                f"{owner}: {what} was recorded as {fn}, a callable object that cannot be "
                "rebuilt from its name; pass the solver object itself (e.g. "
                "datasets.validate(path, solver=...))"
            )
        from solvers.registry import resolve_trusted

        return resolve_trusted(fn, where=f"{owner}: {what}"), fn
    if not callable(fn):
        raise TypeError(f"{owner}: {what} must be callable, got {type(fn).__name__}")
    return fn, _describe(fn)


def _per_variable(
    owner: str, key: str, value: Mapping[str, str] | None, variables: tuple[str, ...], default
) -> tuple[tuple[str, str], ...]:
    if value is None:
        value = {v: default(v) for v in variables}
    if not isinstance(value, Mapping):
        raise TypeError(f"{owner}: {key} must map each variable to a string, got {value!r}")
    missing = [v for v in variables if v not in value]
    extra = [k for k in value if k not in variables]
    if missing or extra:
        raise ValueError(
            f"{owner}: {key} must have exactly the keys {list(variables)}; missing {missing}, "
            f"unknown {extra}"
        )
    bad = [v for v in variables if not isinstance(value[v], str)]
    if bad:
        raise TypeError(f"{owner}: {key} values must be strings; not for {bad}")
    return tuple((v, value[v]) for v in variables)


# ---- the wrapper ----------------------------------------------------------------------
class StepSolver(Solver):
    """A solver made of a pure step function and an initial-condition function.

    ``advance(state)`` applies ``step_fn`` ``num_substeps`` times and covers the output
    interval ``dt``; ``initial_condition(key) = init_fn(key)``. Built by
    :func:`from_step` (see there for the arguments) or :func:`from_exponax`;
    ``StepSolver(**solver.config())`` rebuilds one whose functions are importable from
    trusted modules (strings ``"module:QualName"`` are accepted for the three functions).

    Attributes:
        name, variables, units, long_names, time_units, grid, dt, num_substeps,
        precision: the metadata of the :class:`solvers.Solver` contract.
    """

    _dynamic_fields = ("_dt", "_step_arrays", "_init_arrays", "_diag_arrays")
    _static_fields = (
        "name",
        "variables",
        "_units",
        "_long_names",
        "time_units",
        "grid",
        "num_substeps",
        "precision",
        "_step_static",
        "_init_static",
        "_diag_static",
        "_paths",
    )

    def __init__(
        self,
        step_fn: Callable[[Array], Array] | str,
        init_fn: Callable[[Array], Array] | str,
        *,
        variables: Sequence[str],
        grid: Grid | Mapping[str, Any],
        dt: float,
        units: Mapping[str, str] | None = None,
        long_names: Mapping[str, str] | None = None,
        time_units: str = "1",
        num_substeps: int = 1,
        precision: str = "float32",
        name: str | None = None,
        diagnostics_fn: Callable[[Array], dict[str, Array]] | str | None = None,
    ) -> None:
        owner = "from_step"
        step, step_path = _resolve(step_fn, owner, "step_fn")
        init, init_path = _resolve(init_fn, owner, "init_fn")
        diag, diag_path = (None, None)
        if diagnostics_fn is not None:
            diag, diag_path = _resolve(diagnostics_fn, owner, "diagnostics_fn")
        if isinstance(variables, str) or not isinstance(variables, Sequence):
            raise TypeError(f"{owner}: variables must be a sequence of names, got {variables!r}")
        names = tuple(variables)
        if not names or not all(isinstance(v, str) and v for v in names):
            raise ValueError(f"{owner}: variables must be non-empty strings, got {variables!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"{owner}: variables {names} repeat a name")
        if isinstance(grid, Mapping):
            grid = Grid.from_dict(dict(grid))
        if not isinstance(grid, Grid):
            raise TypeError(
                f"{owner}: grid must be a solvers.Grid (or its to_dict()), got "
                f"{type(grid).__name__}"
            )
        check_positive(owner, dt=dt)
        num_substeps = check_substeps(owner, num_substeps)
        resolve_precision(precision)
        if not isinstance(time_units, str):
            raise TypeError(f"{owner}: time_units must be a string, got {time_units!r}")
        if name is None:
            name = getattr(step, "__name__", type(step).__name__)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{owner}: name must be a non-empty string, got {name!r}")
        from solvers.registry import available

        if name in available():
            raise ValueError(
                f"{owner}: name {name!r} is a registered solver (datasets record solvers by "
                "name and would rebuild that one); choose another name"
            )
        step_arrays, step_static = _split(step, owner, "step_fn")
        init_arrays, init_static = _split(init, owner, "init_fn")
        diag_arrays, diag_static = _split(diag, owner, "diagnostics_fn")
        self._set(
            name=name,
            variables=names,
            _units=_per_variable(owner, "units", units, names, lambda v: "1"),
            _long_names=_per_variable(owner, "long_names", long_names, names, lambda v: v),
            time_units=time_units,
            grid=grid,
            num_substeps=num_substeps,
            precision=precision,
            _dt=float(dt),
            _step_arrays=step_arrays,
            _step_static=step_static,
            _init_arrays=init_arrays,
            _init_static=init_static,
            _diag_arrays=diag_arrays,
            _diag_static=diag_static,
            _paths=(step_path, init_path, diag_path),
        )
        self._check_functions()

    def _check_functions(self) -> None:
        """Trace (never run) both functions once: shapes and dtypes, named in the message."""
        expected = self.state_shape
        spec = f"state_shape {expected} = (len(variables), *grid.shape)"
        key = jax.random.key(0)
        try:
            out = jax.eval_shape(self._init, key)
        except Exception as e:
            raise TypeError(
                f"from_step: init_fn(key) failed for a key from jax.random.key: "
                f"{type(e).__name__}: {e}"
            ) from e
        if not hasattr(out, "shape") or tuple(out.shape) != expected:
            got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            raise ValueError(f"from_step: init_fn(key) returned shape {got}, expected {spec}")
        probe = jax.ShapeDtypeStruct(expected, self.dtype)
        try:
            out = jax.eval_shape(self._step, probe)
        except Exception as e:
            raise TypeError(
                f"from_step: step_fn failed on a state of shape {expected} and dtype "
                f"{self.dtype}: {type(e).__name__}: {e}"
            ) from e
        if not hasattr(out, "shape") or tuple(out.shape) != expected:
            got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            raise ValueError(
                f"from_step: step_fn(state) returned shape {got} for a state of {spec}; a "
                "step must preserve the state's shape"
            )

    # ---- the wrapped functions -----------------------------------------------------------
    @property
    def _step(self) -> Callable[[Array], Array]:
        return _join(self._step_arrays, self._step_static)

    @property
    def _init(self) -> Callable[[Array], Array]:
        return _join(self._init_arrays, self._init_static)

    # ---- metadata ------------------------------------------------------------------------
    @property
    def units(self) -> dict[str, str]:  # type: ignore[override]
        """CF unit string per variable."""
        return dict(self._units)

    @property
    def long_names(self) -> dict[str, str]:  # type: ignore[override]
        """CF long name per variable."""
        return dict(self._long_names)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments; the functions by name (see the module docstring)."""
        step_path, init_path, diag_path = self._paths
        return {
            "step_fn": step_path,
            "init_fn": init_path,
            "variables": list(self.variables),
            "grid": self.grid.to_dict(),
            "dt": self.dt,
            "units": self.units,
            "long_names": self.long_names,
            "time_units": self.time_units,
            "num_substeps": self.num_substeps,
            "precision": self.precision,
            "name": self.name,
            "diagnostics_fn": diag_path,
        }

    def rebuild_problems(self) -> list[str]:
        """Why ``StepSolver(**config())`` would fail in another process (empty: it works)."""
        out = []
        for path, what in zip(self._paths, ("step_fn", "init_fn", "diagnostics_fn"), strict=True):
            problem = None if path is None else _rebuild_problem(path, what)
            if problem:
                out.append(problem)
        return out

    # ---- stepping ------------------------------------------------------------------------
    def initial_condition(self, key: Array) -> Array:
        """``init_fn(key)`` as ``(C, *spatial)`` in the solver precision."""
        return self._init(key).astype(self.dtype)

    def step(self, state: Array) -> Array:
        """``step_fn(state)``: one internal step of ``dt / num_substeps``; dtype kept."""
        return self._step(state).astype(state.dtype)

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """``diagnostics_fn(state)``, or ``{}`` when none was given."""
        if self._paths[2] is None:
            return {}
        return dict(_join(self._diag_arrays, self._diag_static)(state))


def from_step(
    step_fn: Callable[[Array], Array],
    init_fn: Callable[[Array], Array],
    *,
    variables: Sequence[str],
    grid: Grid | Mapping[str, Any],
    dt: float,
    units: Mapping[str, str] | None = None,
    long_names: Mapping[str, str] | None = None,
    time_units: str = "1",
    num_substeps: int = 1,
    precision: str = "float32",
    name: str | None = None,
    diagnostics_fn: Callable[[Array], dict[str, Array]] | None = None,
) -> StepSolver:
    """Wrap a pure step function and an initial-condition function as a solver.

    The result satisfies the whole :class:`solvers.Solver` contract, so it goes wherever a
    solver goes: ``datasets.generate``, ``rollout``, the hybrid runner, ``jax.jit`` /
    ``jax.vmap``.

    Args:
        step_fn: pure, unbatched ``state (C, *spatial) -> state`` advancing one internal
            step ``dt / num_substeps`` (with the default ``num_substeps=1``: the whole
            output interval). A function or a callable pytree (e.g. an equinox Module):
            its array leaves are traced, everything else is static.
        init_fn: ``key -> state (C, *spatial)``, a random initial condition from the
            typed PRNG key it is given (trajectory ``i`` of a dataset gets
            ``fold_in(key(seed), i)``).
        variables: channel names in state order, e.g. ``("u",)``; ``C = len(variables)``.
        grid: the spatial grid (:class:`solvers.Grid`, or its ``to_dict()``); the state's
            spatial shape is ``grid.shape``.
        dt: output interval that ``num_substeps`` calls of ``step_fn`` cover, in
            ``time_units`` (> 0). It is metadata: ``step_fn`` must advance by
            ``dt / num_substeps`` itself.
        units: CF unit string per variable (default ``"1"`` for each).
        long_names: CF long name per variable (default: the variable name).
        time_units: CF unit of ``dt`` and of the time axis (default ``"1"``).
        num_substeps: calls of ``step_fn`` per output interval, an int >= 1.
        precision: ``"float32"`` or ``"float64"`` (needs ``jax_enable_x64``); initial
            conditions are cast to it.
        name: the solver's name in dataset provenance (default ``step_fn.__name__``); not
            the name of a registered solver.
        diagnostics_fn: optional pure ``state -> {name: scalar}`` (invariants such as
            ``"mass"``, checked by validation and used by drift indicators).

    Returns:
        A :class:`StepSolver`.

    Raises:
        ValueError: ``init_fn(key)`` does not return ``(len(variables), *grid.shape)``,
            ``step_fn`` does not preserve that shape, or a bad argument (named).
        TypeError: a function is not callable, fails when traced, or holds an unhashable
            non-array leaf.
    """
    return StepSolver(
        step_fn,
        init_fn,
        variables=variables,
        grid=grid,
        dt=dt,
        units=units,
        long_names=long_names,
        time_units=time_units,
        num_substeps=num_substeps,
        precision=precision,
        name=name,
        diagnostics_fn=diagnostics_fn,
    )


_AXES = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}


class _ExponaxIC:
    """``key -> generator(num_points, key=key)``: an exponax random IC generator as init_fn."""

    def __init__(self, generator: Any, num_points: int) -> None:
        self.generator, self.num_points = generator, num_points

    def __call__(self, key: Array) -> Array:
        return self.generator(self.num_points, key=key)


register_fields(_ExponaxIC, ("generator",), ("num_points",))


def from_exponax(
    stepper: Stepper,
    *,
    variables: Sequence[str],
    ic: Any,
    units: Mapping[str, str] | None = None,
    long_names: Mapping[str, str] | None = None,
    time_units: str = "1",
    length_units: str = "1",
    num_substeps: int = 1,
    precision: str = "float32",
    name: str | None = None,
    diagnostics_fn: Callable[[Array], dict[str, Array]] | None = None,
) -> StepSolver:
    """Wrap an exponax stepper (``exponax.stepper.*``) as a solver.

    The grid and ``dt`` come from the stepper: ``num_spatial_dims``, ``num_points`` and
    ``domain_extent`` give a periodic grid with point ``j`` at ``j * domain_extent /
    num_points`` on every axis (exponax's own grid), and ``dt`` is the stepper's. The
    output interval is ``num_substeps * stepper.dt``. Exponax states are ``(channels,
    *spatial)`` like ours; exponax's spatial axis ``i`` is state axis ``1 + i``, named
    ``("x",)``, ``("y", "x")`` or ``("z", "y", "x")``, so the first component of a
    vector coefficient (e.g. an advection velocity) acts along the first named axis.

    Args:
        stepper: an exponax stepper instance (an ``equinox.Module`` with
            ``num_spatial_dims``, ``domain_extent``, ``num_points``, ``num_channels``,
            ``dt``); its grid sizes stay static, its arrays are traced.
        variables: one name per exponax channel, e.g. ``("u",)``.
        ic: an exponax random IC generator (``exponax.ic.RandomTruncatedFourierSeries(1,
            cutoff=5)``: called as ``ic(num_points, key=key)``) or any ``key -> state``
            function.
        units, long_names, time_units, num_substeps, precision, name, diagnostics_fn: as
            in :func:`from_step` (``name`` defaults to ``"exponax_<stepper class>"``).
        length_units: CF unit of ``domain_extent`` (default ``"1"``).

    Returns:
        A :class:`StepSolver`. Its ``config()`` records the stepper as a description in
        angle brackets: such a solver is not rebuilt from a dataset's provenance, so
        validate its datasets with ``datasets.validate(path, solver=solver)``.

    Raises:
        TypeError: ``stepper`` lacks an exponax stepper's attributes (named).
        ValueError: ``variables`` does not give one name per channel, or as in
            :func:`from_step`.
    """
    attrs = ("num_spatial_dims", "domain_extent", "num_points", "num_channels", "dt")
    missing = [a for a in attrs if not hasattr(stepper, a)]
    if missing or not callable(stepper):
        raise TypeError(
            f"from_exponax: {type(stepper).__name__} is not an exponax stepper: it lacks "
            f"{missing or ['__call__']} (expected an instance of an exponax.stepper class)"
        )
    dims, n = int(stepper.num_spatial_dims), int(stepper.num_points)
    if isinstance(variables, str) or len(tuple(variables)) != int(stepper.num_channels):
        raise ValueError(
            f"from_exponax: variables {variables!r} must name the stepper's "
            f"{stepper.num_channels} channel(s)"
        )
    if dims not in _AXES:
        raise ValueError(f"from_exponax: num_spatial_dims must be 1, 2 or 3, got {dims}")
    grid = Grid(
        (n,) * dims,
        (float(stepper.domain_extent),) * dims,
        _AXES[dims],
        length_units=length_units,
    )
    init = ic
    if hasattr(ic, "gen_ic_fun"):  # exponax.ic.BaseRandomICGenerator
        init = _ExponaxIC(ic, n)
    return StepSolver(
        stepper,
        init,
        variables=variables,
        grid=grid,
        dt=float(stepper.dt) * check_substeps("from_exponax", num_substeps),
        units=units,
        long_names=long_names,
        time_units=time_units,
        num_substeps=num_substeps,
        precision=precision,
        name=f"exponax_{type(stepper).__name__.lower()}" if name is None else name,
        diagnostics_fn=diagnostics_fn,
    )


__all__ = ["StepSolver", "from_exponax", "from_step"]
