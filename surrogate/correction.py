"""Learned correction: one coarse solver interval plus a network correction.

Solver-in-the-loop (Um et al. 2020; Kochkov et al. 2021; APEBench's correction
setting): a solver on a coarse grid advances the state over ``dt``, and a network
corrects what the coarse grid gets wrong::

    p      = P(x)                                   (coarse solver, one output interval)
    x_next = p + C_theta(p)                         (C_theta: a Forecaster's change rule)

``C_theta`` is an ordinary :class:`~surrogate.forecaster.Forecaster` applied to the
solver's proposal ``p``: its normalisation holds the statistics of the *correction*
``x_next - P(x)`` on the training data (mean fixed at zero), so a network whose output is
zero gives the coarse solver bit for bit. The pair is a stepper like any other (same
``dt``, grid, variables, state layout), and it is differentiable end to end: training
with :func:`surrogate.train.train` unrolls the rollout loss through the ETDRK4 solver
(``jax.grad`` through ``lax.fori_loop``), the "HPC and AI become one" stage.

Bundles: :func:`save_correction` writes the network's bundle with the base solver's
registry name and configuration in the spec's provenance (``"correction_of"``);
:func:`load_stepper` rebuilds either kind from a bundle, through the solver registry
only (a bundle never names code to import).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from solvers.pytree import register_fields
from solvers.stepper import Stepper, WrapsSolver
from surrogate.forecaster import Forecaster, ForecasterSpec, Normalization

Array = jax.Array

_PROVENANCE_KEY = "correction_of"


class LearnedCorrection(WrapsSolver):
    """A coarse solver interval plus a learned correction, as one stepper over ``dt``.

    Args:
        solver: the coarse solver (a registered :class:`solvers.Solver`; its grid, ``dt``
            and variables are the stepper's).
        forecaster: the correction network with its normalisation (history 1, trained on
            the same grid, ``dt`` and variables as ``solver``).

    Raises:
        ValueError: the forecaster does not match the solver (grid, ``dt``, variables),
            or it was built with ``history > 1``.
    """

    def __init__(self, solver: Stepper, forecaster: Forecaster) -> None:
        if forecaster.history != 1:
            raise ValueError(
                f"LearnedCorrection: the correction network must have history=1, got "
                f"{forecaster.history} (the solver proposal is a single state)"
            )
        forecaster.check_solver(solver)
        object.__setattr__(self, "solver", solver)
        object.__setattr__(self, "forecaster", forecaster)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LearnedCorrection is immutable; use .replace(params=...)")

    # ---- stepper metadata (the solver's) -------------------------------------------------
    @property
    def dt(self) -> float:
        """Output interval (time units)."""
        return self.forecaster.dt

    @property
    def history(self) -> int:
        """Input frames per step (always 1)."""
        return 1

    @property
    def conserved_means(self) -> tuple[str, ...]:
        """Variables whose spatial mean the step keeps (the solver's and the network's)."""
        return tuple(self.forecaster.spec.conserved)

    # ---- what training needs (the network's) --------------------------------------------
    @property
    def spec(self) -> ForecasterSpec:
        """The correction network's spec (its provenance names the base solver)."""
        return self.forecaster.spec

    @property
    def params(self):
        """The network state."""
        return self.forecaster.params

    @property
    def normalization(self) -> Normalization:
        """State statistics and the statistics of the correction ``x_next - P(x)``."""
        return self.forecaster.normalization

    def replace(self, **changes: Any) -> LearnedCorrection:
        """A copy with ``params`` (or ``solver`` / ``forecaster``) replaced."""
        solver = changes.pop("solver", self.solver)
        forecaster = changes.pop("forecaster", self.forecaster)
        if changes:
            forecaster = forecaster.replace(**changes)
        new = object.__new__(LearnedCorrection)
        object.__setattr__(new, "solver", solver)
        object.__setattr__(new, "forecaster", forecaster)
        return new

    # ---- the map ---------------------------------------------------------------------------
    step_batch = Forecaster.step_batch  # deprecated name of advance_windows

    def advance_windows(self, frames: Array, params=None) -> Array:
        """Next states from a batch of one-frame windows.

        Args:
            frames: ``(B, 1, C, *spatial)`` physical states.
            params: network state (defaults to the forecaster's; training passes its own).

        Returns:
            ``(B, C, *spatial)``: ``P(x) + C_theta(P(x))``.
        """
        proposal = jax.vmap(self.solver)(frames[:, -1])
        return self.forecaster.advance_windows(proposal[:, None], params)

    def __call__(self, state: Array) -> Array:
        """Advance one state ``(C, *spatial)`` by ``dt``.

        Raises:
            ValueError: the state's shape is not :attr:`state_shape`.
        """
        if tuple(state.shape) != self.state_shape:
            raise ValueError(
                f"LearnedCorrection: state has shape {tuple(state.shape)}, expected "
                f"{self.state_shape} (channels {self.variables}, grid {self.grid.num_points})"
            )
        return self.advance_windows(state[None, None])[0]

    advance = __call__

    def check_solver(self, solver: Stepper) -> None:
        """Refuse a solver on another grid, ``dt`` or variables (see Forecaster)."""
        self.forecaster.check_solver(solver)

    def check_compatible(self, **kwargs: Any) -> None:
        """Refuse data unlike the training data (see :meth:`Forecaster.check_compatible`)."""
        self.forecaster.check_compatible(**kwargs)

    def diagnostics(self, state: Array) -> dict[str, Array]:
        """The base solver's diagnostics of a state."""
        return self.solver.diagnostics(state)

    def config(self) -> dict[str, Any]:
        """Description for provenance: the base solver and the network."""
        return {
            "kind": "learned_correction",
            "solver": self.solver.name,
            "solver_config": self.solver.config(),
            "model_name": self.spec.model_name,
            "model_kwargs": self.spec.model_kwargs,
        }

    def __repr__(self) -> str:
        return (
            f"LearnedCorrection(solver={self.solver!r}, model={self.spec.model_name!r}, "
            f"grid={self.grid.num_points}, dt={self.dt})"
        )


register_fields(LearnedCorrection, ("solver", "forecaster"))


# ---- building one -----------------------------------------------------------------------
def correction_statistics(
    solver: Stepper, loader: Any, *, num_batches: int = 4, state_statistics: Any = None
) -> Normalization:
    """Normalisation of a learned correction: state statistics and the correction's std.

    The correction target is ``x_next - P(x)`` over training windows (``loader.batch(i)``
    for ``i < num_batches``). Its per-channel standard deviation scales the network output;
    its mean is set to zero so that a zero output is the solver itself.

    Args:
        solver: the coarse solver ``P``.
        loader: object with ``batch(i) -> (inputs (B, 1, C, *sp), targets (B, K, C, *sp))``
            and ``statistics`` (state mean/std), e.g. :class:`datasets.WindowLoader`.
        num_batches: batches to average over (>= 1).
        state_statistics: state statistics (default ``loader.statistics``).

    Returns:
        :class:`Normalization` with ``delta_mean = 0`` and ``delta_std`` the correction's.

    Raises:
        ValueError: ``num_batches < 1``, or a correction with non-finite values (the solver
            cannot integrate the data: check its grid, ``dt`` and ``num_substeps``).
    """
    if num_batches < 1:
        raise ValueError(f"correction_statistics: num_batches must be >= 1, got {num_batches}")
    stats = loader.statistics if state_statistics is None else state_statistics
    step = jax.jit(jax.vmap(solver.__call__))
    total = total_sq = count = 0.0
    for i in range(num_batches):
        inputs, targets = loader.batch(i)
        residual = np.asarray(targets[:, 0] - step(jnp.asarray(inputs[:, -1])), np.float64)
        if not np.all(np.isfinite(residual)):
            raise ValueError(
                "correction_statistics: the coarse solver produced non-finite states on the "
                f"training data (batch {i}); check its grid, dt and num_substeps"
            )
        axes = (0, *range(2, residual.ndim))
        total = total + residual.sum(axis=axes)
        total_sq = total_sq + np.square(residual).sum(axis=axes)
        count += residual.size / residual.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    c = len(mean)

    class _Stats:
        state_mean = np.asarray(stats.state_mean, np.float64).reshape(c)
        state_std = np.asarray(stats.state_std, np.float64).reshape(c)
        delta_mean = np.zeros(c)
        delta_std = std

    return Normalization.from_statistics(_Stats)


def correction_spec(solver: Stepper, spec: ForecasterSpec) -> ForecasterSpec:
    """``spec`` with the base solver recorded in its provenance (for bundles).

    Raises:
        ValueError: ``spec.history != 1``.
    """
    if spec.history != 1:
        raise ValueError(f"correction_spec: history must be 1, got {spec.history}")
    provenance = dict(spec.provenance)
    provenance[_PROVENANCE_KEY] = {"solver": solver.name, "solver_config": solver.config()}
    d = spec.to_dict()
    d["provenance"] = provenance
    return ForecasterSpec.from_dict(d)


def init_correction(solver: Stepper, spec: ForecasterSpec, normalization: Normalization, *, seed=0):
    """A freshly initialised :class:`LearnedCorrection` (random network weights).

    The network's last layer is not touched; instead its output is scaled by the
    correction's (small) std, so the untrained stepper starts close to the solver. Use
    :func:`zero_correction` for an exact zero.
    """
    from flax import nnx

    from surrogate.forecaster import build_network

    spec = correction_spec(solver, spec)
    network = build_network(spec, nnx.Rngs(seed))
    return LearnedCorrection(solver, Forecaster.create(spec, network, normalization))


def zero_correction(correction: LearnedCorrection) -> LearnedCorrection:
    """The same stepper with every network parameter set to zero (output exactly 0)."""
    return correction.replace(params=jax.tree.map(jnp.zeros_like, correction.params))


# ---- bundles ------------------------------------------------------------------------------
def save_correction(
    correction: LearnedCorrection, path: str | os.PathLike, *, overwrite: bool = False
) -> None:
    """Save as a forecaster bundle whose spec names the base solver (registry name + config)."""
    from surrogate.bundle import save_forecaster

    spec = correction_spec(correction.solver, correction.spec)
    save_forecaster(correction.forecaster.replace(spec=spec), path, overwrite=overwrite)


def base_solver_of(spec: ForecasterSpec) -> Any | None:
    """The base solver recorded in a spec's provenance, rebuilt from the registry, or None.

    Raises:
        ValueError: the recorded solver is not registered (nothing is imported).
    """
    import solvers

    record = spec.provenance.get(_PROVENANCE_KEY)
    if record is None:
        return None
    name = record.get("solver")
    if name not in solvers.available():
        raise ValueError(
            f"learned correction: base solver {name!r} is not a registered solver "
            f"(registered: {', '.join(solvers.available())}); register it with "
            "solvers.register before loading"
        )
    return solvers.build_solver(name, **record.get("solver_config", {}))


def load_stepper(path: str | os.PathLike, **kwargs: Any):
    """Load a bundle as a stepper: a :class:`LearnedCorrection` or a plain Forecaster.

    Keyword arguments go to :func:`surrogate.bundle.load_forecaster` (``solver=`` and
    ``dataset_info=`` compatibility checks).
    """
    from surrogate.bundle import load_forecaster

    forecaster = load_forecaster(path, **kwargs)
    solver = base_solver_of(forecaster.spec)
    return forecaster if solver is None else LearnedCorrection(solver, forecaster)


__all__ = [
    "LearnedCorrection",
    "base_solver_of",
    "correction_spec",
    "correction_statistics",
    "init_correction",
    "load_stepper",
    "save_correction",
    "zero_correction",
]
