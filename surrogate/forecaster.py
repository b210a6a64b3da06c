"""The learned stepper: a network, its normalisation and the residual rule.

``Forecaster`` advances a physical state ``(C, *spatial)`` by the data's output interval
``dt`` exactly like a solver, so the hybrid runner, the evaluation and rollouts never need
to know which stepper is the network. It predicts the *normalised change* over ``dt``
(GraphCast-style)::

    x_in   = (x - state_mean) / state_std              (per channel, history stacked)
    delta  = model(x_in) * delta_std + delta_mean      (per channel)
    x_next = x_last + delta

It is a pytree: the network parameters and normalisation arrays are leaves, the graph
definition and metadata are static, so ``jax.jit``, ``vmap`` and ``lax.scan`` take it as
an ordinary argument.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from solvers.pytree import pytree_dataclass, register_fields

Array = jax.Array


@pytree_dataclass(data_fields="all")
class Normalization:
    """Per-channel statistics of states and of their one-step changes.

    Fields are arrays of shape ``(C,)`` in the units of each variable.
    """

    state_mean: Array
    state_std: Array
    delta_mean: Array
    delta_std: Array

    @classmethod
    def from_statistics(cls, stats: Any, dtype=jnp.float32) -> Normalization:
        """Build from any object with ``state_mean``/``state_std``/``delta_mean``/``delta_std``.

        Standard deviations are floored at a tiny fraction of their largest entry so a
        constant channel cannot divide by zero.
        """
        arrays = {}
        for f in ("state_mean", "state_std", "delta_mean", "delta_std"):
            value = np.asarray(getattr(stats, f), dtype=np.float64)
            if value.ndim != 1:
                raise ValueError(f"Normalization: {f} must have shape (C,), got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"Normalization: {f} has non-finite entries: {value}")
            if f.endswith("std"):
                value = np.maximum(value, 1e-12 * max(float(value.max()), 1e-30))
            arrays[f] = jnp.asarray(value, dtype)
        return cls(**arrays)

    def to_dict(self) -> dict[str, list[float]]:
        """The fields as lists (JSON-ready)."""
        return {
            f.name: np.asarray(getattr(self, f.name)).tolist() for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]], dtype=jnp.float32) -> Normalization:
        """Inverse of :meth:`to_dict` (float32 arrays)."""
        return cls(**{k: jnp.asarray(v, dtype) for k, v in d.items()})


@dataclasses.dataclass(frozen=True)
class ForecasterSpec:
    """Static description of a forecaster: what it was trained on and how it is built.

    Hashable (it is static pytree metadata): mappings are kept as canonical JSON strings
    and exposed through properties.

    Attributes:
        model_name: registry name in :mod:`surrogate.models` (``"fno"``, ``"unet"``, ...).
        model_kwargs: architecture keyword arguments (JSON-serialisable).
        variables: channel names in state order.
        units: CF units per variable.
        long_names: CF long name per variable (``long_names_json``; optional, bundles
            written before it was recorded read the variable names).
        time_units: CF unit of ``dt`` (default ``"1"``).
        grid: the grid description (``solvers.Grid.to_dict()``), checked on use.
        dt: output interval the model learned (time units).
        history: number of input frames.
        compute_dtype: ``"float32"`` or ``"bfloat16"`` (parameters stay float32).
        provenance: free-form training provenance (dataset, config, steps, versions).
        conserved: variables whose spatial mean the forecast keeps exactly, as the PDE does
            (``solver.conserved_means``): the mean of the predicted change is removed.
    """

    model_name: str
    model_kwargs_json: str
    variables: tuple[str, ...]
    units_json: str
    grid_json: str
    dt: float
    history: int = 1
    compute_dtype: str = "float32"
    provenance_json: str = "{}"
    conserved: tuple[str, ...] = ()
    long_names_json: str = "{}"
    time_units: str = "1"

    @classmethod
    def create(
        cls,
        *,
        model_name: str,
        model_kwargs: Mapping[str, Any],
        variables: Sequence[str],
        units: Mapping[str, str],
        grid: Mapping[str, Any],
        dt: float,
        history: int = 1,
        compute_dtype: str = "float32",
        provenance: Mapping[str, Any] | None = None,
        conserved: Sequence[str] = (),
        long_names: Mapping[str, str] | None = None,
        time_units: str = "1",
    ) -> ForecasterSpec:
        """Validate and build a spec from plain values (see the class attributes).

        Raises:
            ValueError: ``history < 1``, an unknown ``compute_dtype``, a conserved variable
                that is not among ``variables``, or a grid description lacking
                ``num_points``, ``domain_length`` or ``axes``.
            TypeError: a mapping that is not JSON-serialisable.
        """
        if int(history) < 1:
            raise ValueError(f"ForecasterSpec: history must be >= 1, got {history}")
        if compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(
                "ForecasterSpec: compute_dtype must be 'float32' or 'bfloat16', "
                f"got {compute_dtype!r}"
            )
        unknown = [v for v in conserved if v not in tuple(variables)]
        if unknown:
            raise ValueError(
                f"ForecasterSpec: conserved variables {unknown} are not among {tuple(variables)}"
            )
        for key in ("num_points", "domain_length", "axes"):
            if key not in grid:
                raise ValueError(f"ForecasterSpec: grid description lacks {key!r}: {dict(grid)}")
        return cls(
            model_name=str(model_name),
            model_kwargs_json=_canonical(model_kwargs),
            variables=tuple(variables),
            units_json=_canonical(units),
            grid_json=_canonical(grid),
            dt=float(dt),
            history=int(history),
            compute_dtype=compute_dtype,
            provenance_json=_canonical(provenance or {}),
            conserved=tuple(conserved),
            long_names_json=_canonical(dict(long_names or {})),
            time_units=str(time_units),
        )

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Architecture keyword arguments of the model."""
        return json.loads(self.model_kwargs_json)

    @property
    def units(self) -> dict[str, str]:
        """CF units per variable."""
        return json.loads(self.units_json)

    @property
    def long_names(self) -> dict[str, str]:
        """CF long name per variable (the variable's name where none was recorded)."""
        recorded = json.loads(self.long_names_json)
        return {v: recorded.get(v, v) for v in self.variables}

    @property
    def grid(self) -> dict[str, Any]:
        """The grid description (``solvers.Grid.to_dict()``)."""
        return json.loads(self.grid_json)

    @property
    def provenance(self) -> dict[str, Any]:
        """Free-form training provenance (dataset, config, steps, versions)."""
        return json.loads(self.provenance_json)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (``bundle.json`` stores these)."""
        return {
            "model_name": self.model_name,
            "model_kwargs": self.model_kwargs,
            "variables": list(self.variables),
            "units": self.units,
            "grid": self.grid,
            "dt": self.dt,
            "history": self.history,
            "compute_dtype": self.compute_dtype,
            "provenance": self.provenance,
            "conserved": list(self.conserved),
            "long_names": json.loads(self.long_names_json),
            "time_units": self.time_units,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ForecasterSpec:
        """Inverse of :meth:`to_dict` (missing optional keys take their defaults)."""
        return cls.create(**d)

    @property
    def num_points(self) -> tuple[int, ...]:
        """Points per spatial axis of the training grid."""
        return tuple(self.grid["num_points"])

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes."""
        return len(self.num_points)


def _canonical(d: Mapping[str, Any]) -> str:
    """Canonical JSON of a mapping (sorted keys; tuples become lists)."""
    try:
        return json.dumps(d, sort_keys=True, default=_json_default)
    except TypeError as e:
        raise TypeError(f"ForecasterSpec: value is not JSON-serialisable: {e}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, tuple | list):
        return list(o)
    raise TypeError(f"{type(o).__name__} {o!r}")


def build_network(spec: ForecasterSpec, rngs: nnx.Rngs) -> nnx.Module:
    """Instantiate the network described by ``spec`` (input channels = C x history)."""
    from surrogate.models import build_model

    c = len(spec.variables)
    dtype = jnp.bfloat16 if spec.compute_dtype == "bfloat16" else None
    return build_model(
        spec.model_name,
        in_channels=c * spec.history,
        out_channels=c,
        spatial_dims=spec.spatial_dims,
        rngs=rngs,
        dtype=dtype,
        **spec.model_kwargs,
    )


class Forecaster:
    """A trained network as a stepper over ``dt`` (see module docstring).

    Build with :meth:`Forecaster.create` from a spec, a network and normalisation, or
    load with :func:`surrogate.bundle.load_forecaster`.

    Attributes:
        spec: the static :class:`ForecasterSpec`.
        graphdef: the network's NNX graph definition (static).
        params: the network state (pytree of arrays).
        normalization: :class:`Normalization` (pytree of ``(C,)`` arrays).
    """

    def __init__(self, spec, graphdef, params, normalization) -> None:
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "graphdef", graphdef)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "normalization", normalization)

    def __setattr__(self, name, value):
        raise AttributeError("Forecaster is immutable; use .replace(params=...)")

    @classmethod
    def create(
        cls, spec: ForecasterSpec, network: nnx.Module, normalization: Normalization
    ) -> Forecaster:
        """A forecaster from its spec, an NNX network and the data's normalisation.

        Args:
            spec: the :class:`ForecasterSpec`.
            network: the model, ``(B, history * C, *spatial) -> (B, C, *spatial)``.
            normalization: ``(C,)`` state and one-interval-change means and stds.

        Raises:
            ValueError: a normalisation field whose shape is not ``(C,)``.
        """
        graphdef, params = nnx.split(network)
        c = len(spec.variables)
        for f in dataclasses.fields(normalization):
            shape = tuple(np.shape(getattr(normalization, f.name)))
            if shape != (c,):
                raise ValueError(
                    f"Forecaster: normalisation {f.name} has shape {shape}, expected ({c},): "
                    f"one entry per variable {spec.variables}"
                )
        return cls(spec, graphdef, params, normalization)

    def replace(self, **changes) -> Forecaster:
        """A copy with some of ``spec``, ``graphdef``, ``params``, ``normalization`` replaced."""
        d = {
            "spec": self.spec,
            "graphdef": self.graphdef,
            "params": self.params,
            "normalization": self.normalization,
        }
        d.update(changes)
        return Forecaster(**d)

    # ---- stepper metadata -------------------------------------------------------------
    @property
    def dt(self) -> float:
        """Output interval the model learned (``time_units``)."""
        return self.spec.dt

    @property
    def variables(self) -> tuple[str, ...]:
        """Channel names in state order."""
        return self.spec.variables

    @property
    def grid(self):
        """The training data's :class:`solvers.grid.Grid`."""
        from solvers.grid import Grid

        g = self.spec.grid
        return Grid(
            tuple(g["num_points"]),
            tuple(g["domain_length"]),
            tuple(g["axes"]),
            g.get("length_units", "1"),
            tuple(g["long_names"]) if g.get("long_names") else None,
        )

    @property
    def units(self) -> dict[str, str]:
        """CF units per variable (those of the training data)."""
        return self.spec.units

    @property
    def long_names(self) -> dict[str, str]:
        """CF long name per variable (those of the training data)."""
        return self.spec.long_names

    @property
    def time_units(self) -> str:
        """CF unit of ``dt``."""
        return self.spec.time_units

    @property
    def history(self) -> int:
        """Input frames per forecast."""
        return self.spec.history

    @property
    def state_shape(self) -> tuple[int, ...]:
        """``(len(variables), *grid.num_points)``."""
        return (len(self.variables), *self.spec.num_points)

    # ---- the forward map ----------------------------------------------------------------
    def predict_normalized_delta(self, params, x_norm: Array) -> Array:
        """Network output for normalised inputs ``(B, history*C, *spatial)``."""
        model = nnx.merge(self.graphdef, params)
        return model(x_norm)

    def step_batch(self, frames: Array, params=None) -> Array:
        """Deprecated name of :meth:`advance_windows` (``step`` is a solver's substep)."""
        import warnings

        warnings.warn(
            f"{type(self).__name__}.step_batch is deprecated; use advance_windows",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.advance_windows(frames, params)

    def advance_windows(self, frames: Array, params=None) -> Array:
        """Next state from a batch of input windows.

        Args:
            frames: ``(B, history, C, *spatial)`` physical states, oldest first.
            params: network state to use (defaults to ``self.params``; training passes its
                current parameters here).

        Returns:
            ``(B, C, *spatial)`` physical state one ``dt`` after the last frame.
        """
        params = self.params if params is None else params
        n = self.normalization
        c = len(self.variables)
        shape = (1,) * (frames.ndim - 3)
        mean = n.state_mean.reshape(c, *shape).astype(frames.dtype)
        std = n.state_std.reshape(c, *shape).astype(frames.dtype)
        x = (frames - mean) / std
        b, h = frames.shape[:2]
        x = x.reshape(b, h * c, *frames.shape[3:])
        out = self.predict_normalized_delta(params, x).astype(frames.dtype)
        delta = out * n.delta_std.reshape(c, *shape).astype(frames.dtype) + n.delta_mean.reshape(
            c, *shape
        ).astype(frames.dtype)
        if self.spec.conserved:
            # The PDE conserves these means exactly: remove the mean of their change.
            mask = np.array([v in self.spec.conserved for v in self.variables])
            spatial = tuple(range(2, delta.ndim))
            mean = jnp.mean(delta, axis=spatial, keepdims=True)
            delta = delta - jnp.where(mask.reshape(c, *shape), mean, 0.0)
        return frames[:, -1] + delta

    def __call__(self, state: Array) -> Array:
        """Advance one state ``(C, *spatial)`` by ``dt`` (history 1 only).

        Raises:
            ValueError: wrong state shape, or a forecaster trained with history > 1
                (use :meth:`advance_windows` with the history window instead).
        """
        if self.history != 1:
            raise ValueError(
                f"Forecaster trained with history={self.history} cannot step a single state; "
                "call advance_windows with (B, history, C, *spatial) windows"
            )
        if tuple(state.shape) != self.state_shape:
            raise ValueError(
                f"Forecaster: state has shape {tuple(state.shape)}, expected {self.state_shape} "
                f"(channels {self.variables}, grid {self.spec.num_points})"
            )
        return self.advance_windows(state[None, None])[0]

    advance = __call__

    # ---- compatibility ------------------------------------------------------------------
    def check_compatible(
        self, *, variables=None, grid=None, dt=None, source: str = "target"
    ) -> None:
        """Refuse to run on data or a solver unlike the training data.

        Args:
            variables: channel names of the target.
            grid: a ``solvers.Grid`` or its ``to_dict()``.
            dt: output interval of the target.
            source: how to name the target in the message (a path, a solver name).

        Raises:
            ValueError: naming each mismatching item and both values.
        """
        from solvers.stepper import mismatches

        target = {
            "variables": self.variables if variables is None else variables,
            "grid": self.spec.grid if grid is None else grid,
            "dt": self.dt if dt is None else dt,
        }
        problems = mismatches(target, self, b_label="trained ")
        if problems:
            raise ValueError(f"forecaster does not match {source}: " + "; ".join(problems))

    def check_solver(self, solver) -> None:
        """:meth:`check_compatible` against a solver."""
        self.check_compatible(
            variables=solver.variables,
            grid=solver.grid,
            dt=solver.dt,
            source=f"solver {solver.name!r}",
        )

    def __repr__(self) -> str:
        return (
            f"Forecaster(model={self.spec.model_name!r}, variables={self.variables}, "
            f"grid={self.spec.num_points}, dt={self.dt}, history={self.history})"
        )


register_fields(Forecaster, ("params", "normalization"), ("spec", "graphdef"))
