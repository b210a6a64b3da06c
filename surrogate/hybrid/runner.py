"""The hybrid runner: per-step (or per-block) switching between a solver and a surrogate.

:class:`HybridRunner` composes two steppers over the same ``dt`` with a policy
(:mod:`surrogate.hybrid.policies`) and online error indicators
(:mod:`surrogate.hybrid.indicators`). It checks that the steppers match, cuts the horizon
into compiled chunks (:mod:`surrogate.hybrid.chunk`), runs and times them, and returns a
:class:`~surrogate.hybrid.result.HybridResult`. The execution model, the dispatch modes
and the measurements behind the defaults are in ``docs/hybrid_runner.md``.

:class:`HybridResult`, :func:`compare_cost`, :func:`sweep_thresholds`,
:func:`bucket_sizes` and the engine codes are re-exported here for older imports; their
homes are :mod:`.result`, :mod:`.sweep` and :mod:`.chunk`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from solvers.base import check_int, check_pytree
from solvers.grid import Grid
from solvers.rollout import NonFiniteError
from solvers.stepper import STEPPER_ATTRIBUTES, Stepper, mismatches
from surrogate.distributed import DATA_AXIS, check_divisible, replicate, shard_batch, to_host
from surrogate.hybrid.chunk import (
    DISPATCH_MODES,
    ENGINE_FALLBACK,
    ENGINE_NAMES,
    ENGINE_ROLLBACK,
    ENGINE_SOLVER,
    ENGINE_SURROGATE,
    bucket_sizes,
    compiled_chunk,
    partition,
    run_device,
)
from surrogate.hybrid.indicators import bind_indicator, indicator_config
from surrogate.hybrid.policies import AlwaysSolver, policy_thresholds
from surrogate.hybrid.result import HybridResult
from surrogate.hybrid.sweep import compare_cost, sweep_thresholds

Array = jax.Array


def _grid_of(stepper: Stepper, which: str) -> Grid | Any:
    grid = getattr(stepper, "grid", None)
    if grid is None:
        raise TypeError(f"HybridRunner: {which} has no 'grid' attribute (steppers need one)")
    return grid


def _grid_shape(grid: Any) -> tuple[int, ...]:
    n = getattr(grid, "num_points", None)
    if n is None:
        n = getattr(grid, "shape", None)
    return tuple(int(v) for v in n)


def _describe(stepper: Stepper) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(stepper).__name__, "repr": repr(stepper)[:2000]}
    cfg = getattr(stepper, "config", None)
    if callable(cfg):
        try:
            out["config"] = cfg()
        except Exception:  # a stepper whose config needs more context: keep the repr
            pass
    return out


# ---- the runner ----------------------------------------------------------------------------
class HybridRunner:
    """Run a batch of trajectories, switching between a solver and a surrogate.

    Args:
        solver: classical stepper over ``dt`` (``state (C, *spatial) -> state``) with
            ``.dt``, ``.variables``, ``.grid``; its ``diagnostics``/``config`` are used by
            the indicators that need them.
        surrogate: learned (or any) stepper with the same ``dt``, variables and grid.
        policy: a policy from :mod:`surrogate.hybrid.policies` (or any object with
            ``block_size``, ``solver_scheduled(step)``, ``thresholds`` and being a
            pytree).
        indicators: indicators evaluated on every proposed block (logged; those named by
            the policy also gate it). Names must be unique.
        fallback_on_nonfinite: redo non-finite or blown-up proposals with the solver.
            ``False`` accepts them (to measure a surrogate's time to blow-up).
        blowup_threshold: a proposal with ``max |state| >`` this (state units, all
            channels) counts as blown up; ``inf`` keeps only the NaN/Inf test. Default
            ``1e6``.
        dispatch: how rejected members are redone (see :mod:`surrogate.hybrid.chunk`):
            ``"compact"``, ``"member"``, ``"batch"`` or ``"select"``.
        chunk_size: steps per compiled chunk (rounded down to a multiple of the policy's
            ``block_size``, at least one block); sets the granularity of the timing.
        dt_rtol: relative tolerance on equal ``dt``.
        mesh: optional device mesh with the single axis ``"data"``
            (:func:`surrogate.distributed.data_mesh`): the batch is split over its devices,
            each running the chunk program on its ``B / n`` members with no cross-device
            traffic (see docs/hybrid_runner.md). ``B`` must then be a multiple of ``n``.
            Default ``None``: one device, the one ``initial_states`` of each run is
            placed on.

    Raises:
        ValueError: ``dt``, variables or grid differ between the steppers (the message
            names the mismatch); an indicator name is repeated; the policy names an
            indicator that was not given; a bad ``dispatch``, ``chunk_size`` or
            ``blowup_threshold``; a ``mesh`` whose axes are not exactly ``("data",)``.
        TypeError: a stepper is not a JAX pytree, or lacks ``dt``, ``variables`` or
            ``grid``; ``mesh`` is not a ``jax.sharding.Mesh``.
    """

    def __init__(
        self,
        solver: Stepper,
        surrogate: Stepper,
        policy: Any,
        indicators: Sequence[Any] = (),
        *,
        fallback_on_nonfinite: bool = True,
        blowup_threshold: float = 1e6,
        dispatch: str = "compact",
        chunk_size: int = 64,
        dt_rtol: float = 1e-6,
        mesh: Mesh | None = None,
    ) -> None:
        for which, s in (("solver", solver), ("surrogate", surrogate)):
            check_pytree("HybridRunner", s, which)
            for attr in STEPPER_ATTRIBUTES:
                try:
                    getattr(s, attr)
                except AttributeError as e:
                    raise TypeError(
                        f"HybridRunner: {which} has no {attr!r} attribute ({e})"
                    ) from None
            if not callable(s):
                raise TypeError(f"HybridRunner: {which} must be callable (state -> state)")
        _grid_shape(_grid_of(solver, "solver"))  # named errors for a missing grid
        _grid_shape(_grid_of(surrogate, "surrogate"))
        problems = mismatches(solver, surrogate, dt_rtol=dt_rtol, b_label="surrogate ")
        if problems:
            raise ValueError(
                "HybridRunner: steppers do not match (solver first): " + "; ".join(problems)
            )
        if dispatch not in DISPATCH_MODES:
            raise ValueError(
                f"HybridRunner: dispatch must be one of {DISPATCH_MODES}, got {dispatch!r}"
            )
        check_int("HybridRunner", "chunk_size", chunk_size, 1)
        try:
            blowup = float(blowup_threshold)
        except (TypeError, ValueError):
            blowup = float("nan")
        if not blowup > 0:
            raise ValueError(
                f"HybridRunner: blowup_threshold must be > 0 (inf allowed), got {blowup_threshold!r}"
            )
        if mesh is not None:
            if not isinstance(mesh, Mesh):
                raise TypeError(
                    f"HybridRunner: mesh must be a jax.sharding.Mesh or None, got "
                    f"{type(mesh).__name__}"
                )
            if tuple(mesh.axis_names) != (DATA_AXIS,):
                raise ValueError(
                    f"HybridRunner: mesh must have the single axis ({DATA_AXIS!r},) "
                    f"(surrogate.distributed.data_mesh), got axes {tuple(mesh.axis_names)}"
                )
        block_size = getattr(policy, "block_size", None)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise TypeError(
                f"HybridRunner: policy {policy!r} needs an int block_size >= 1, got {block_size!r}"
            )
        bound = tuple(bind_indicator(ind, solver, surrogate) for ind in indicators)
        names = [ind.name for ind in bound]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"HybridRunner: indicator names must be unique, repeated: {repeated}")
        missing = [n for n in policy_thresholds(policy) if n not in names]
        if missing:
            raise ValueError(
                f"HybridRunner: policy {type(policy).__name__} checks indicator(s) {missing} "
                f"that were not given; indicators: {names or 'none'}"
            )
        self.solver = solver
        self.surrogate = surrogate
        self.policy = policy
        self.indicators = bound
        self.fallback_on_nonfinite = bool(fallback_on_nonfinite)
        self.blowup_threshold = blowup
        self.dispatch = dispatch
        self.chunk_size = chunk_size
        self.dt_rtol = float(dt_rtol)
        self.mesh = mesh
        self.dt = float(solver.dt)
        self.variables = tuple(solver.variables)
        self.grid = _grid_of(solver, "solver")

    # ---- metadata ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Plain description of the runner (policy, indicators, options, steppers)."""
        policy_cfg = getattr(self.policy, "config", None)
        return {
            "policy": policy_cfg()
            if callable(policy_cfg)
            else {"type": type(self.policy).__name__},
            "indicators": [indicator_config(ind) for ind in self.indicators],
            "fallback_on_nonfinite": self.fallback_on_nonfinite,
            "blowup_threshold": self.blowup_threshold,
            "dispatch": self.dispatch,
            "chunk_size": self.chunk_size,
            "devices": None if self.mesh is None else int(self.mesh.size),
            "solver": _describe(self.solver),
            "surrogate": _describe(self.surrogate),
        }

    def _plan(self, num_steps: int) -> list[tuple[int, int, int, int]]:
        """``[(first step, active blocks, compiled blocks, block_len), ...]`` over the horizon.

        All chunks but a final partial block share one compiled size; a horizon that is
        not a multiple of ``block_size`` ends with one shorter block.
        """
        L = self.policy.block_size
        per_chunk = max(1, self.chunk_size // L)
        full, rem = divmod(num_steps, L)
        nb = min(per_chunk, full)
        plan, first = [], 0
        while full > 0:
            active = min(nb, full)
            plan.append((first, active, nb, L))
            first += active * L
            full -= active
        if rem:
            plan.append((first, 1, 1, rem))
        return plan

    # ---- running ------------------------------------------------------------------------
    def run(
        self,
        initial_states: Array | np.ndarray,
        num_steps: int,
        *,
        reference: Array | np.ndarray | None = None,
        t0: float = 0.0,
        check_finite: bool = True,
    ) -> HybridResult:
        """Advance a batch ``num_steps`` times and log every step of every member.

        Args:
            initial_states: ``(B, C, *spatial)`` in the state units; its dtype is kept.
            num_steps: number of steps of ``dt``, an int >= 1.
            reference: optional reference trajectories ``(B, num_steps + 1, C, *spatial)``
                (initial frame included) for RMSE against lead time.
            t0: model time of the initial states.
            check_finite: raise if the final trajectories hold NaN/Inf (possible only when
                the solver itself fails or ``fallback_on_nonfinite=False``).

        Returns:
            A :class:`HybridResult`.

        Raises:
            ValueError: bad shapes or ``num_steps``; with a mesh, ``B`` not divisible by
                its number of devices.
            NonFiniteError: non-finite frames and ``check_finite`` (the result is
                attached as ``error.result``).
        """
        check_int("HybridRunner.run", "num_steps", num_steps, 1)
        num_steps = int(num_steps)
        x = jnp.asarray(initial_states)
        shape = (len(self.variables), *_grid_shape(self.grid))
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"HybridRunner.run: initial_states must have shape (B, *{shape}) = (batch, "
                f"channels {self.variables}, *grid), got {tuple(x.shape)}"
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"HybridRunner.run: initial_states must be floating, got {x.dtype}")
        probe = jax.ShapeDtypeStruct(shape, x.dtype)
        for which, stepper in (("solver", self.solver), ("surrogate", self.surrogate)):
            if isinstance(self.policy, AlwaysSolver) and which == "surrogate":
                continue
            out = jax.eval_shape(stepper, probe)
            if tuple(out.shape) != shape:
                raise ValueError(
                    f"HybridRunner.run: {which} maps a state of shape {shape} to {tuple(out.shape)}"
                )
        batch = x.shape[0]
        if self.mesh is not None:
            try:
                check_divisible(batch, self.mesh)
            except ValueError as e:
                raise ValueError(f"HybridRunner.run: {e}") from None
        ref = None
        if reference is not None:
            ref = np.asarray(reference)
            if ref.shape != (batch, num_steps + 1, *shape):
                raise ValueError(
                    f"HybridRunner.run: reference must have shape {(batch, num_steps + 1, *shape)} "
                    f"(trajectory, time incl. initial frame, C, *spatial), got {ref.shape}"
                )

        dynamic, static = partition(
            (self.solver, self.surrogate, self.indicators, self.policy, self.blowup_threshold)
        )
        try:
            hash(static)
        except TypeError as e:
            raise TypeError(
                "HybridRunner.run: the steppers, indicators and policy enter jit as pytrees; "
                "their non-array parts must be hashable (register array fields as pytree "
                f"leaves, e.g. with surrogate.hybrid.pytree_dataclass): {e}"
            ) from e
        carry = (x, x, jnp.zeros((batch,), jnp.int32))
        members = jnp.arange(batch, dtype=jnp.int32)
        mesh, device = self.mesh, None
        if mesh is None:
            # Committed to one device: the executable is compiled for (and cached under)
            # that device, so a later run on another device compiles its own.
            device = run_device(x)
            dynamic, carry, members = jax.device_put((dynamic, carry, members), device)
            scalar = lambda v: jax.device_put(np.int32(v), device)  # noqa: E731
        else:
            # Placed before lowering: the executable is compiled for these shardings, and
            # each chunk's carry comes back with the same ones.
            dynamic = replicate(dynamic, mesh)
            carry, members = shard_batch((carry, members), mesh)
            scalar = lambda v: replicate(np.int32(v), mesh)  # noqa: E731
        plan = self._plan(num_steps)
        compile_time = 0.0
        executables = {}
        for _, _, nb, L in plan:
            if (nb, L) not in executables:
                executables[(nb, L)], seconds = compiled_chunk(
                    dynamic,
                    carry,
                    scalar(0),
                    scalar(nb),
                    members,
                    mesh=mesh,
                    device=device,
                    static=static,
                    num_blocks=nb,
                    block_len=L,
                    dispatch=self.dispatch,
                    fallback=self.fallback_on_nonfinite,
                )
                compile_time += seconds

        frames_out, engine_out, tripped_out, values_out = [], [], [], []
        chunk_times, chunk_first, chunk_steps = [], [], []
        t_start = time.perf_counter()
        for first, active, nb, L in plan:
            t = time.perf_counter()
            carry, frames, engine, tripped, values = executables[(nb, L)](
                dynamic, carry, scalar(first), scalar(active), members
            )
            jax.block_until_ready((carry, frames, engine, tripped, values))
            # Whole arrays to the host (gathered from every process under
            # jax.distributed), sliced there: no extra device program per chunk.
            frames, engine, tripped, values = to_host((frames, engine, tripped, values))
            chunk_times.append(time.perf_counter() - t)
            n = active * L
            chunk_first.append(first)
            chunk_steps.append(n)
            frames_out.append(frames[:, :n])
            engine_out.append(engine[:, :n])
            tripped_out.append(tripped[:, :n])
            values_out.append(values[:, :, :n])
        wall_time = time.perf_counter() - t_start

        states = np.concatenate([to_host(x)[:, None]] + frames_out, axis=1)
        values = np.concatenate(values_out, axis=-1).astype(np.float64)
        rmse = None
        if ref is not None:
            err = (states.astype(np.float64) - ref.astype(np.float64)) ** 2
            err = np.sqrt(err.reshape(batch, num_steps + 1, len(self.variables), -1).mean(-1))
            rmse = {v: err[:, :, i] for i, v in enumerate(self.variables)}
        units, long_names = self.solver.units, self.solver.long_names
        result = HybridResult(
            states=states,
            engine=np.concatenate(engine_out, axis=1),
            tripped=np.concatenate(tripped_out, axis=1),
            indicator_values={ind.name: values[i] for i, ind in enumerate(self.indicators)},
            indicator_attrs={
                ind.name: {"units": ind.units, "long_name": ind.long_name}
                for ind in self.indicators
            },
            chunk_wall_time=np.asarray(chunk_times),
            chunk_first_step=np.asarray(chunk_first, dtype=np.int64),
            chunk_num_steps=np.asarray(chunk_steps, dtype=np.int64),
            wall_time=wall_time,
            compile_time=compile_time,
            dt=self.dt,
            t0=float(t0),
            variables=self.variables,
            units={v: units.get(v, "1") for v in self.variables},
            long_names={v: long_names.get(v, v) for v in self.variables},
            grid=self.grid,
            time_units=self.solver.time_units,
            config=self.config(),
            rmse=rmse,
        )
        if check_finite:
            first_bad = result.first_nonfinite_frame()
            bad = np.flatnonzero(first_bad >= 0)
            if bad.size:
                b, f = int(bad[0]), int(first_bad[bad[0]])
                err = NonFiniteError(
                    b,
                    f,
                    result.t0 + f * result.dt,
                    detail="the hybrid run produced non-finite frames (engine at that step: "
                    f"{ENGINE_NAMES[int(result.engine[b, f - 1])]}); see error.result",
                )
                err.result = result
                raise err
        return result

    def with_policy(self, policy: Any, indicators: Sequence[Any] | None = None) -> HybridRunner:
        """A runner with the same steppers and options and another policy (and indicators)."""
        return HybridRunner(
            self.solver,
            self.surrogate,
            policy,
            self.indicators if indicators is None else indicators,
            fallback_on_nonfinite=self.fallback_on_nonfinite,
            blowup_threshold=self.blowup_threshold,
            dispatch=self.dispatch,
            chunk_size=self.chunk_size,
            dt_rtol=self.dt_rtol,
            mesh=self.mesh,
        )

    def run_solver_only(
        self, initial_states: Array | np.ndarray, num_steps: int, **kwargs: Any
    ) -> HybridResult:
        """The pure-solver run of the same horizon, through the same machinery (the baseline).

        Takes the arguments of :meth:`run`.
        """
        return self.with_policy(AlwaysSolver(), indicators=()).run(
            initial_states, num_steps, **kwargs
        )


# HybridRunner is this module's own; the rest is re-exported for older imports.
__all__ = [
    "DISPATCH_MODES",
    "ENGINE_FALLBACK",
    "ENGINE_NAMES",
    "ENGINE_ROLLBACK",
    "ENGINE_SOLVER",
    "ENGINE_SURROGATE",
    "HybridResult",
    "HybridRunner",
    "bucket_sizes",
    "compare_cost",
    "sweep_thresholds",
]
