"""The hybrid runner: per-step (or per-block) switching between a solver and a surrogate.

Both engines are steppers over the same output interval ``dt`` (pytree callables
``state (C, *spatial) -> state``); the runner never asks which one is the network. A
**policy** (:mod:`surrogate.hybrid.policies`) schedules the solver or lets the surrogate
propose a block of ``block_size`` steps, and **indicators**
(:mod:`surrogate.hybrid.indicators`) judge each proposal without ground truth. A
proposal is rejected, and the block redone with the solver from its first state, when

- it holds NaN/Inf or ``|state| > blowup_threshold`` (always, unless
  ``fallback_on_nonfinite=False``): engine code 2 (``fallback``);
- an indicator named by the policy is above its threshold (or NaN): code 3
  (``rollback``).

Accepted surrogate steps get code 1, scheduled solver steps code 0. After any solver
block the trajectory's *verified* state (what drift indicators compare against) is its
new state.

Execution model
---------------
The horizon is cut into compiled *chunks* of ``chunk_size`` steps (a ``lax.scan`` over
blocks; each block a ``lax.scan`` over steps, vmapped over the batch). Between chunks the
host only times the chunk and copies its frames out; no decision is made on the host and
there is no callback in the hot loop. Inside a block:

1. the policy's schedule (a batch-uniform scalar) picks, with a real ``lax.cond``, either
   the solver for all members or a batched surrogate proposal;
2. the proposal is checked per member (finite, blow-up, indicators) giving ``need (B,)``;
3. only members that need it are redone by the solver. ``jax.vmap`` of a per-member
   ``lax.cond`` would become a ``select`` computing the solver for *every* member (the
   ``"select"`` mode below, kept only to measure that trap). The dispatch modes:

   - ``"compact"`` (default): a ``lax.switch`` on the number of flagged members picks a
     bucket size ``m`` in ``{1, 2, 4, ..., B}`` (the smallest that holds them); the
     flagged members are gathered into a sub-batch of ``m`` (stable ``argsort``), the
     solver runs vmapped on it, and the results are scattered back. Cost: at most twice
     the solver work actually needed, batched; ``log2(B) + 1`` solver copies compiled.
   - ``"member"``: ``lax.map`` over members of an unbatched ``lax.cond`` (a real branch
     since it is not vmapped): exact solver work, one member at a time.
   - ``"batch"``: one batch-level ``lax.cond``: the solver for all members when any
     needs it.
   - ``"select"``: ``jnp.where`` of both, always computing the solver (the trap).

Measurements (jax 0.10.2 on this project's shared 2-core CPU, no accelerator was
available; steady state, compile excluded, best of 7 runs, run-to-run noise about 30%).
The surrogate is a fake costing what a fast network might (one spectral diffusion step);
a synthetic indicator trips each member independently with probability ``p`` per step
under a ``Threshold`` policy. Wall time relative to the pure-solver run of the same
horizon:

KS, ``N = 128``, ``L = 22``, ``dt = 1`` (4 ETDRK4 substeps), float32, ``B = 32``, 200
steps; pure solver 86 ms, surrogate alone 0.08 of it:

    p      solver frac   select   batch   member   compact
    0      0.00          1.05     0.26    0.25     0.16
    0.01   0.01          1.04     0.42    0.32     0.30
    0.05   0.05          1.08     0.93    0.66     0.46
    0.2    0.21          1.04     1.20    2.29     0.72
    1.0    1.00          1.25     1.36    11.2     1.21
    compile (s)          4.5      4.1     5.4      9.2

NS 2D (vorticity), ``64 x 64`` (8 substeps), float32, ``B = 8``, 20 steps; pure solver
623 ms, surrogate alone 0.02 of it:

    p      solver frac   batch   member   compact
    0      0.00          0.03    0.03     0.03
    0.05   0.05          0.87    0.12     0.08
    0.2    0.26          0.91    0.56     0.45
    1.0    1.00          2.03    1.64     0.95

Reading: ``"select"`` always pays the full solver (the vmap-of-cond trap). ``"batch"``
pays the whole batch as soon as one member trips (``1 - (1 - p)^B`` of the steps).
``"member"`` does exactly the needed solver work but one member at a time; a small 1D
solver step has a large fixed cost per call, so serialising 32 of them is 11 times
slower than one batched call. ``"compact"`` was fastest or tied in every row: it keeps
the batching and never more than doubles the needed work. Its price is compile time
(``log2(B) + 1`` solver copies). On a GPU (not measured here) a batched solver call
costs about the same for 1 or ``B`` members of a small problem, which favours
``"batch"``/``"compact"`` over ``"member"`` even more.

Choice: ``"compact"`` is the default. It is the issue's option (b), gathering flagged
members into sub-batches padded to a few bucket sizes, moved inside the compiled program
(``lax.switch`` on the bucket) so the host never waits on a decision; option (a) is
``"member"`` and option (c) is ``"batch"``.

With a device mesh (``HybridRunner(..., mesh=data_mesh())``, one axis ``"data"``) the
batch axis is split over the devices: the chunk program is wrapped in ``jax.shard_map``
and every device runs the unchanged block logic above on its own ``B / n`` members
(stepper, indicator and policy parameters replicated). Each device therefore compacts its
own flagged members (buckets up to ``B / n``, ``log2(B / n) + 1`` solver copies); there
is no cross-device traffic inside a chunk, only the gather of its outputs to the host
(every process gets the whole result under ``jax.distributed``). Members keep their
global index, so member-keyed indicators (ensemble noise) give the same values as on one
device. ``B`` must be a multiple of the number of devices.

Without a mesh the run happens on one device: the one ``initial_states`` is placed on
(``jax.device_put(x, jax.devices()[1])``, or the default device for a host array or an
uncommitted one). Every argument is committed to that device before compiling and the
compiled programs are cached per device, so a runner used on device 0 then on device 1
compiles once for each and runs on both.

Wall time is recorded per chunk (``chunk_wall_time``, including the copy, or with a mesh
the gather, of the chunk's outputs to the host) and spread evenly over the chunk's steps
(``wall_time`` per step); a smaller ``chunk_size`` gives finer timing at the cost of one
host round-trip per chunk. Compilation happens ahead of time, before the clock starts,
and is reported separately (``compile_time``); compiled programs are cached by the
structure and shapes of their arguments (and the mesh or device), so rerunning with other
thresholds or other solver parameters does not recompile.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import math
import os
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from solvers.base import check_pytree
from solvers.grid import Grid
from solvers.rollout import NonFiniteError
from surrogate.distributed import DATA_AXIS, check_divisible, replicate, shard_batch, to_host
from surrogate.hybrid.indicators import IndicatorContext, bind_indicator, indicator_config
from surrogate.hybrid.policies import AlwaysSolver, policy_thresholds

Array = jax.Array

ENGINE_SOLVER = 0
ENGINE_SURROGATE = 1
ENGINE_FALLBACK = 2
ENGINE_ROLLBACK = 3
ENGINE_NAMES = ("solver", "surrogate", "fallback", "rollback")
DISPATCH_MODES = ("compact", "member", "batch", "select")

# Number of times the chunk program was traced (tests check that a threshold sweep
# reuses one compilation).
TRACE_COUNT = collections.Counter()


# ---- helpers ------------------------------------------------------------------------------
def _is_dynamic(x: Any) -> bool:
    """Leaves that become traced ``jit`` arguments; everything else is static.

    Arrays and Python floats (thresholds, physical parameters: a sweep reuses one
    compilation) are traced. Python ints and bools stay static, as in
    ``equinox.filter_jit``: a pytree stepper may keep grid sizes or step counts as int
    leaves (exponax steppers do, as equinox Modules) and use them as shapes.
    """
    if isinstance(x, bool | int):
        return False
    return isinstance(x, jax.Array | np.ndarray | np.generic | float | complex)


def _partition(tree: Any) -> tuple[list[Any], tuple[Any, tuple[Any, ...]]]:
    """Split a pytree into dynamic leaves and a hashable static description."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dynamic = [x for x in leaves if _is_dynamic(x)]
    static = tuple(None if _is_dynamic(x) else x for x in leaves)
    mask = tuple(_is_dynamic(x) for x in leaves)
    return dynamic, (treedef, static, mask)


def _combine(dynamic: Sequence[Any], static: tuple[Any, tuple[Any, ...], tuple[bool, ...]]):
    treedef, static_leaves, mask = static
    it = iter(dynamic)
    leaves = [next(it) if m else s for s, m in zip(static_leaves, mask, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _aval_key(x: Any) -> Any:
    return jax.typeof(x)


def bucket_sizes(batch: int) -> tuple[int, ...]:
    """Sub-batch sizes of the ``"compact"`` dispatch: powers of two below ``batch``, then it."""
    sizes, m = [], 1
    while m < batch:
        sizes.append(m)
        m *= 2
    sizes.append(batch)
    return tuple(sizes)


def _grid_of(stepper: Any, which: str) -> Grid | Any:
    grid = getattr(stepper, "grid", None)
    if grid is None:
        raise TypeError(f"HybridRunner: {which} has no 'grid' attribute (steppers need one)")
    return grid


def _grid_shape(grid: Any) -> tuple[int, ...]:
    n = getattr(grid, "num_points", None)
    if n is None:
        n = getattr(grid, "shape", None)
    return tuple(int(v) for v in n)


# ---- the compiled chunk ----------------------------------------------------------------
def _chunk_impl(
    dynamic: list[Any],
    carry: tuple[Array, Array, Array],
    start_step: Array,
    active_blocks: Array,
    members: Array,
    *,
    static: Any,
    num_blocks: int,
    block_len: int,
    dispatch: str,
    fallback: bool,
):
    """``num_blocks`` blocks of ``block_len`` steps for a batch; see the module docstring.

    Blocks from ``active_blocks`` on are skipped (a real ``lax.cond`` on a scalar), so the
    last, shorter chunk of a run reuses the same compiled program; their outputs are
    zeros and the host drops them.

    Returns ``(carry, frames (B, T, C, *spatial), engine (B, T) int8, tripped (B, T) bool,
    values (I, B, T))`` with ``T = num_blocks * block_len`` and ``I`` indicators.
    """
    TRACE_COUNT["chunk"] += 1
    solver, surrogate, indicators, policy, blowup = _combine(dynamic, static)
    names = [ind.name for ind in indicators]
    gates = [(names.index(n), thr) for n, thr in policy_thresholds(policy).items()]
    state0 = carry[0]
    batch = state0.shape[0]
    dtype = state0.dtype
    num_ind = len(indicators)
    L = block_len
    expand = lambda m, x: m.reshape(m.shape + (1,) * (x.ndim - m.ndim))  # noqa: E731

    def solver_frames(s0: Array) -> Array:
        def f(s, _):
            s = solver(s).astype(dtype)
            return s, s

        return jax.lax.scan(f, s0, None, length=L)[1]

    batched_solver_frames = jax.vmap(solver_frames)

    def redo(need: Array, start: Array, frames: Array) -> Array:
        if dispatch == "select":
            return jnp.where(expand(need, frames), batched_solver_frames(start), frames)
        if dispatch == "batch":
            return jax.lax.cond(
                jnp.any(need),
                lambda: jnp.where(expand(need, frames), batched_solver_frames(start), frames),
                lambda: frames,
            )
        if dispatch == "member":

            def one(args):
                n, s, fr = args
                return jax.lax.cond(n, lambda: solver_frames(s), lambda: fr)

            return jax.lax.map(one, (need, start, frames))
        # "compact": gather the flagged members into the smallest bucket that holds them.
        sizes = bucket_sizes(batch)
        count = jnp.sum(need.astype(jnp.int32))
        branch = jnp.where(count == 0, 0, 1 + jnp.sum(jnp.asarray(sizes) < count))

        def make(m: int):
            def run_bucket():
                order = jnp.argsort(~need, stable=True)[:m]
                sub = batched_solver_frames(start[order])
                keep = expand(need[order], sub)
                return frames.at[order].set(jnp.where(keep, sub, frames[order]))

            return run_bucket

        return jax.lax.switch(branch, [lambda: frames] + [make(m) for m in sizes])

    def solver_block(state, verified, age, first):
        frames = batched_solver_frames(state)
        engine = jnp.full((batch, L), ENGINE_SOLVER, jnp.int8)
        tripped = jnp.zeros((batch, L), bool)
        values = jnp.full((num_ind, batch, L), jnp.nan, dtype)
        return frames, engine, tripped, values, frames[:, -1], jnp.zeros_like(age)

    def surrogate_block(state, verified, age, first):
        def f(s, _):
            p = jax.vmap(surrogate)(s).astype(dtype)
            flat = p.reshape(batch, -1)
            bad = ~jnp.all(jnp.isfinite(flat), axis=-1) | (jnp.max(jnp.abs(flat), axis=-1) > blowup)
            return p, (p, bad)

        proposal, (proposed, bads) = jax.lax.scan(f, state, None, length=L)
        bad = jnp.any(bads, axis=0)
        context = IndicatorContext(
            verified=verified,
            current=proposed[-2] if L > 1 else state,
            proposal=proposal,
            steps_since_verified=age + L,
            step=jnp.broadcast_to(first + L - 1, (batch,)).astype(jnp.int32),
            member=members,
        )
        vals = [jax.vmap(ind)(context).astype(dtype) for ind in indicators]
        tripped = jnp.zeros((batch,), bool)
        for idx, thr in gates:
            tripped = tripped | ~(vals[idx] <= thr)
        if fallback:
            need = bad | tripped
            engine = jnp.where(
                bad, ENGINE_FALLBACK, jnp.where(tripped, ENGINE_ROLLBACK, ENGINE_SURROGATE)
            )
        else:
            need = tripped & ~bad
            engine = jnp.where(need, ENGINE_ROLLBACK, ENGINE_SURROGATE)
        frames = redo(need, state, jnp.swapaxes(proposed, 0, 1))
        last = jnp.arange(L) == L - 1
        values = jnp.full((num_ind, batch, L), jnp.nan, dtype)
        if num_ind:
            values = jnp.where(last, jnp.stack(vals)[..., None], values)
        return (
            frames,
            jnp.broadcast_to(engine.astype(jnp.int8)[:, None], (batch, L)),
            tripped[:, None] & last,
            values,
            jnp.where(expand(need, state), frames[:, -1], verified),
            jnp.where(need, 0, age + L),
        )

    def active_block(carry, first):
        state, verified, age = carry
        scheduled = policy.solver_scheduled(first)
        if scheduled is True:
            out = solver_block(state, verified, age, first)
        elif scheduled is False:
            out = surrogate_block(state, verified, age, first)
        else:
            out = jax.lax.cond(
                scheduled, solver_block, surrogate_block, state, verified, age, first
            )
        frames, engine, tripped, values, new_verified, new_age = out
        return (frames[:, -1], new_verified, new_age), (frames, engine, tripped, values)

    def skipped_block(carry, first):
        outs = (
            jnp.zeros((batch, L) + state0.shape[1:], dtype),
            jnp.zeros((batch, L), jnp.int8),
            jnp.zeros((batch, L), bool),
            jnp.zeros((num_ind, batch, L), dtype),
        )
        return carry, outs

    def block(carry, b):
        return jax.lax.cond(
            b < active_blocks, active_block, skipped_block, carry, start_step + b * L
        )

    carry, (frames, engine, tripped, values) = jax.lax.scan(
        block, carry, jnp.arange(num_blocks, dtype=jnp.int32)
    )
    # (nb, B, L, ...) -> (B, nb * L, ...)
    steps = num_blocks * L
    frames = jnp.moveaxis(frames, 0, 1).reshape((batch, steps) + frames.shape[3:])
    engine = jnp.moveaxis(engine, 0, 1).reshape(batch, steps)
    tripped = jnp.moveaxis(tripped, 0, 1).reshape(batch, steps)
    values = jnp.moveaxis(values, 0, 2).reshape(num_ind, batch, steps)
    return carry, frames, engine, tripped, values


_COMPILED: collections.OrderedDict[Any, Any] = collections.OrderedDict()
_COMPILED_MAX = 32


def _run_device(x: Array) -> jax.Device:
    """The device a mesh-less run uses: the one ``x`` lives on (committed, or the default
    device for an uncommitted array); a batch already spread over several devices is
    gathered onto the first of them (pass ``mesh=`` to keep it split)."""
    return min(x.devices(), key=lambda d: d.id)


def _sharded(impl: Any, mesh: Mesh) -> Any:
    """``impl`` run per device on its share of the batch (``jax.shard_map`` over ``"data"``).

    Stepper/indicator/policy leaves and the two step scalars are replicated; the carry,
    the member indices and every output are split on their batch axis (axis 1 of the
    ``(I, B, T)`` indicator values). The body has no collective, so ``check_vma`` (which
    only checks replication claims of outputs) is off.
    """
    rows = P(DATA_AXIS)
    return jax.shard_map(
        impl,
        mesh=mesh,
        in_specs=(P(), (rows, rows, rows), P(), P(), rows),
        out_specs=((rows, rows, rows), rows, rows, rows, P(None, DATA_AXIS)),
        check_vma=False,
    )


def _compiled_chunk(
    dynamic,
    carry,
    start_step,
    active_blocks,
    members,
    *,
    mesh: Mesh | None = None,
    device: jax.Device | None = None,
    **static_kwargs,
):
    """Ahead-of-time compiled chunk program (cached); returns ``(executable, seconds)``.

    The arguments must already be placed: with ``mesh`` by :func:`~surrogate.distributed.
    replicate` / :func:`~surrogate.distributed.shard_batch`, without it committed to
    ``device``. The executable is compiled for their shardings, so both are in the key.
    """
    key = (
        mesh,
        device,
        tuple(sorted(static_kwargs.items(), key=lambda kv: kv[0])),
        tuple(_aval_key(x) for x in dynamic),
        tuple(_aval_key(x) for x in carry),
        _aval_key(start_step),
        _aval_key(active_blocks),
        _aval_key(members),
    )
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key], 0.0
    t = time.perf_counter()
    impl = partial(_chunk_impl, **static_kwargs)
    fn = jax.jit(impl if mesh is None else _sharded(impl, mesh))
    executable = fn.lower(dynamic, carry, start_step, active_blocks, members).compile()
    seconds = time.perf_counter() - t
    _COMPILED[key] = executable
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return executable, seconds


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
        dispatch: how rejected members are redone (see the module docstring):
            ``"compact"``, ``"member"``, ``"batch"`` or ``"select"``.
        chunk_size: steps per compiled chunk (rounded down to a multiple of the policy's
            ``block_size``, at least one block); sets the granularity of the timing.
        dt_rtol: relative tolerance on equal ``dt``.
        mesh: optional device mesh with the single axis ``"data"``
            (:func:`surrogate.distributed.data_mesh`): the batch is split over its devices,
            each running the chunk program on its ``B / n`` members with no cross-device
            traffic (see the module docstring). ``B`` must then be a multiple of ``n``.
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
        solver: Any,
        surrogate: Any,
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
            for attr in ("dt", "variables", "grid"):
                try:
                    getattr(s, attr)
                except AttributeError as e:
                    raise TypeError(
                        f"HybridRunner: {which} has no {attr!r} attribute ({e})"
                    ) from None
            if not callable(s):
                raise TypeError(f"HybridRunner: {which} must be callable (state -> state)")
            check_pytree("HybridRunner", s, which)
        problems = []
        dt_a, dt_b = float(solver.dt), float(surrogate.dt)
        if not math.isclose(dt_a, dt_b, rel_tol=dt_rtol, abs_tol=0.0):
            problems.append(f"dt: solver {dt_a} != surrogate {dt_b} (rtol {dt_rtol})")
        if tuple(solver.variables) != tuple(surrogate.variables):
            problems.append(
                f"variables: solver {tuple(solver.variables)} != surrogate "
                f"{tuple(surrogate.variables)}"
            )
        g_a, g_b = _grid_of(solver, "solver"), _grid_of(surrogate, "surrogate")
        if _grid_shape(g_a) != _grid_shape(g_b):
            problems.append(
                f"grid shape: solver {_grid_shape(g_a)} != surrogate {_grid_shape(g_b)}"
            )
        len_a, len_b = getattr(g_a, "domain_length", None), getattr(g_b, "domain_length", None)
        if (
            len_a is not None
            and len_b is not None
            and not np.allclose(len_a, len_b, rtol=1e-9, atol=0.0)
        ):
            problems.append(f"grid domain_length: solver {len_a} != surrogate {len_b}")
        if problems:
            raise ValueError("HybridRunner: steppers do not match: " + "; ".join(problems))
        if dispatch not in DISPATCH_MODES:
            raise ValueError(
                f"HybridRunner: dispatch must be one of {DISPATCH_MODES}, got {dispatch!r}"
            )
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"HybridRunner: chunk_size must be an int >= 1, got {chunk_size!r}")
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
        self.dt = dt_a
        self.variables = tuple(solver.variables)
        self.grid = g_a

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
        if (
            isinstance(num_steps, bool)
            or not isinstance(num_steps, int | np.integer)
            or num_steps < 1
        ):
            raise ValueError(f"HybridRunner.run: num_steps must be an int >= 1, got {num_steps!r}")
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

        dynamic, static = _partition(
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
            device = _run_device(x)
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
                executables[(nb, L)], seconds = _compiled_chunk(
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
        units = getattr(self.solver, "units", {}) or {}
        long_names = getattr(self.solver, "long_names", {}) or {}
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
            time_units=getattr(self.solver, "time_units", "1"),
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


def compare_cost(
    runner: HybridRunner,
    initial_states: Array | np.ndarray,
    num_steps: int,
    *,
    repeats: int = 1,
    **run_kwargs: Any,
) -> dict[str, Any]:
    """Time a hybrid run against the pure-solver run of the same horizon.

    Both are compiled first (compile time reported separately, not in the wall time);
    each is then run ``repeats`` times and the fastest wall time kept.

    Returns:
        ``{"hybrid_wall_time", "solver_wall_time", "speedup" (solver / hybrid),
        "hybrid_compile_time", "solver_compile_time", "solver_fraction", "num_steps",
        "num_trajectories", "hybrid": HybridResult, "solver_only": HybridResult}``.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"compare_cost: repeats must be an int >= 1, got {repeats!r}")
    hybrid_runs = [runner.run(initial_states, num_steps, **run_kwargs) for _ in range(repeats)]
    solver_runs = [
        runner.run_solver_only(initial_states, num_steps, **run_kwargs) for _ in range(repeats)
    ]
    hybrid = min(hybrid_runs, key=lambda r: r.wall_time)
    solver_only = min(solver_runs, key=lambda r: r.wall_time)
    return {
        "hybrid_wall_time": hybrid.wall_time,
        "solver_wall_time": solver_only.wall_time,
        "speedup": solver_only.wall_time / hybrid.wall_time,
        "hybrid_compile_time": sum(r.compile_time for r in hybrid_runs),
        "solver_compile_time": sum(r.compile_time for r in solver_runs),
        "solver_fraction": hybrid.solver_fraction,
        "num_steps": hybrid.num_steps,
        "num_trajectories": hybrid.num_trajectories,
        "hybrid": hybrid,
        "solver_only": solver_only,
    }


def sweep_thresholds(
    runner: HybridRunner,
    initial_states: Array | np.ndarray,
    num_steps: int,
    thresholds: Sequence[float],
    *,
    indicator_name: str | None = None,
    reference: Array | np.ndarray | None = None,
    **run_kwargs: Any,
):
    """The accuracy-versus-cost curve: rerun with each threshold of one indicator.

    The policy (a :class:`~surrogate.hybrid.policies.Threshold` or
    :class:`~surrogate.hybrid.policies.BlockPolicy`) keeps its other thresholds; since
    thresholds are traced, every point reuses one compiled program. The pure-solver run
    of the same horizon is timed once as the baseline.

    Args:
        runner: the hybrid runner whose policy is swept.
        initial_states: ``(B, C, *spatial)``.
        num_steps: horizon in steps.
        thresholds: values for the swept indicator, in its units.
        indicator_name: which of the policy's indicators to sweep (default: its only one).
        reference: optional ``(B, num_steps + 1, C, *spatial)`` for the RMSE columns.
        run_kwargs: passed to :meth:`HybridRunner.run`.

    Returns:
        An ``xarray.Dataset`` over dim ``threshold``: ``solver_fraction``, ``wall_time``
        (s), ``speedup`` (pure-solver wall time / hybrid wall time), ``rollbacks`` and
        ``fallbacks`` (member-steps), and with a reference ``rmse_<var>`` (mean over
        trajectories at the final time) and ``mean_rmse_<var>`` (also over lead times).

    Raises:
        ValueError: the policy has no ``indicator_name``/``threshold`` fields, or
            ``indicator_name`` is not among them.
    """
    import xarray as xr

    policy = runner.policy
    names = tuple(getattr(policy, "indicator_name", ()) or ())
    if not dataclasses.is_dataclass(policy) or not hasattr(policy, "threshold") or not names:
        raise ValueError(
            f"sweep_thresholds: policy {type(policy).__name__} has no thresholds to sweep"
        )
    if indicator_name is None:
        if len(names) != 1:
            raise ValueError(f"sweep_thresholds: pass indicator_name, one of {names}")
        indicator_name = names[0]
    if indicator_name not in names:
        raise ValueError(
            f"sweep_thresholds: indicator_name {indicator_name!r} is not checked by the "
            f"policy; checked: {names}"
        )
    i = names.index(indicator_name)
    baseline = runner.run_solver_only(initial_states, num_steps, **run_kwargs)
    rows = []
    for value in thresholds:
        new = list(policy.threshold)
        new[i] = float(value)
        res = runner.with_policy(dataclasses.replace(policy, threshold=tuple(new))).run(
            initial_states, num_steps, reference=reference, **run_kwargs
        )
        rows.append(res)
    counts = [r.engine_counts() for r in rows]
    data: dict[str, Any] = {
        "solver_fraction": ("threshold", [r.solver_fraction for r in rows], {"units": "1"}),
        "wall_time": ("threshold", [r.wall_time for r in rows], {"units": "s"}),
        "speedup": (
            "threshold",
            [baseline.wall_time / r.wall_time for r in rows],
            {"units": "1", "long_name": "pure-solver wall time / hybrid wall time"},
        ),
        "rollbacks": ("threshold", [c["rollback"] for c in counts], {"units": "1"}),
        "fallbacks": ("threshold", [c["fallback"] for c in counts], {"units": "1"}),
    }
    if reference is not None:
        for v in runner.variables:
            units = rows[0].units[v]
            data[f"rmse_{v}"] = (
                "threshold",
                [float(np.mean(r.rmse[v][:, -1])) for r in rows],
                {"units": units, "long_name": f"RMSE of {v} at the final time"},
            )
            data[f"mean_rmse_{v}"] = (
                "threshold",
                [float(np.mean(r.rmse[v])) for r in rows],
                {"units": units, "long_name": f"RMSE of {v} averaged over lead times"},
            )
    attrs = {
        "indicator_name": indicator_name,
        "indicator_units": rows[0].indicator_attrs[indicator_name]["units"] if rows else "",
        "baseline_wall_time": baseline.wall_time,
        "num_steps": int(num_steps),
        "runner_config": json.dumps(runner.config(), default=str),
    }
    coords = {"threshold": ("threshold", np.asarray(thresholds, dtype=np.float64))}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _describe(stepper: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(stepper).__name__, "repr": repr(stepper)[:2000]}
    cfg = getattr(stepper, "config", None)
    if callable(cfg):
        try:
            out["config"] = cfg()
        except Exception:  # a stepper whose config needs more context: keep the repr
            pass
    return out


# ---- the result ------------------------------------------------------------------------------
@dataclasses.dataclass
class HybridResult:
    """Trajectories and per-step log of a hybrid run.

    Attributes:
        states: ``(B, N + 1, C, *spatial)`` frames, initial state first (state units).
        engine: ``(B, N)`` int8, engine of step ``n`` (frame ``n`` -> ``n + 1``): 0 solver
            (scheduled), 1 surrogate (accepted), 2 fallback (proposal non-finite or blown
            up, redone by the solver), 3 rollback (proposal rejected by an indicator,
            redone by the solver).
        tripped: ``(B, N)`` bool, an indicator checked by the policy exceeded its threshold
            at that step's check.
        indicator_values: name -> ``(B, N)`` float64 value at each check (NaN at steps
            without a check: scheduled solver steps, inner steps of a block).
        indicator_attrs: name -> ``{"units", "long_name"}``.
        chunk_wall_time: ``(K,)`` seconds per compiled chunk (compile excluded).
        chunk_first_step, chunk_num_steps: ``(K,)`` the steps each chunk covered.
        wall_time: seconds of the whole run (compile excluded).
        compile_time: seconds spent compiling for this run (0 when cached).
        dt, t0, time_units: time axis ``t0 + n dt``.
        variables, units, long_names, grid: state metadata.
        config: the runner's configuration (:meth:`HybridRunner.config`).
        rmse: variable -> ``(B, N + 1)`` RMSE against the reference, or ``None``.
    """

    states: np.ndarray
    engine: np.ndarray
    tripped: np.ndarray
    indicator_values: dict[str, np.ndarray]
    indicator_attrs: dict[str, dict[str, str]]
    chunk_wall_time: np.ndarray
    chunk_first_step: np.ndarray
    chunk_num_steps: np.ndarray
    wall_time: float
    compile_time: float
    dt: float
    t0: float
    variables: tuple[str, ...]
    units: dict[str, str]
    long_names: dict[str, str]
    grid: Any
    time_units: str
    config: dict[str, Any]
    rmse: dict[str, np.ndarray] | None = None

    # ---- summaries -----------------------------------------------------------------------
    @property
    def num_trajectories(self) -> int:
        return int(self.states.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.engine.shape[1])

    @property
    def times(self) -> np.ndarray:
        return self.t0 + self.dt * np.arange(self.num_steps + 1)

    @property
    def solver_fraction(self) -> float:
        """Fraction of member-steps whose frame came from the solver (codes 0, 2, 3)."""
        return float(np.mean(self.engine != ENGINE_SURROGATE))

    def engine_counts(self) -> dict[str, int]:
        """Member-steps per engine; they add up to ``B * N``."""
        return {name: int(np.sum(self.engine == code)) for code, name in enumerate(ENGINE_NAMES)}

    def step_wall_time(self) -> np.ndarray:
        """``(N,)`` wall time per step: each chunk's time spread evenly over its steps."""
        return np.repeat(self.chunk_wall_time / self.chunk_num_steps, self.chunk_num_steps)

    def first_nonfinite_frame(self) -> np.ndarray:
        """``(B,)`` index of the first frame with NaN/Inf per trajectory, -1 if none."""
        bad = ~np.isfinite(self.states.reshape(self.num_trajectories, self.num_steps + 1, -1))
        any_bad = bad.any(-1)
        return np.where(any_bad.any(1), any_bad.argmax(1), -1)

    def summary(self, baseline: HybridResult | None = None) -> dict[str, Any]:
        """Solver fraction, engine counts, wall and compile time, and the speed-up against a
        ``baseline`` run (e.g. :meth:`HybridRunner.run_solver_only`) when given."""
        out = {
            "num_trajectories": self.num_trajectories,
            "num_steps": self.num_steps,
            "solver_fraction": self.solver_fraction,
            "engine_counts": self.engine_counts(),
            "wall_time": self.wall_time,
            "compile_time": self.compile_time,
            "wall_time_per_step": self.wall_time / self.num_steps,
        }
        if self.rmse is not None:
            out["final_rmse"] = {v: float(np.mean(r[:, -1])) for v, r in self.rmse.items()}
        if baseline is not None:
            out["baseline_wall_time"] = baseline.wall_time
            out["speedup"] = baseline.wall_time / self.wall_time
        return out

    # ---- xarray / netCDF -------------------------------------------------------------------
    def to_xarray(self):
        """The result as an ``xarray.Dataset``.

        Variables: one per state variable with dims ``(trajectory, time, *grid axes)``;
        ``engine``, ``tripped`` and ``indicator_<name>`` with dims ``(trajectory, step)``
        (step ``n`` produces frame ``n``, ``n = 1..N``); ``rmse_<variable>`` with dims
        ``(trajectory, time)`` when a reference was given; ``chunk_wall_time``,
        ``chunk_first_step``, ``chunk_num_steps`` with dim ``chunk`` and ``wall_time``
        with dim ``step``. Attributes hold the runner config (JSON) and the summary.
        """
        import xarray as xr

        from datasets.storage import spatial_coordinate_attrs, time_coordinate_attrs

        axes = tuple(self.grid.axes)
        coords: dict[str, Any] = {
            "trajectory": (
                "trajectory",
                np.arange(self.num_trajectories),
                {"long_name": "member index of the run", "units": "1"},
            ),
            "time": ("time", self.times, time_coordinate_attrs(self.time_units, "model time")),
            "step": (
                "step",
                np.arange(1, self.num_steps + 1),
                {"long_name": "step index n (advances frame n - 1 to frame n)", "units": "1"},
            ),
            "chunk": (
                "chunk",
                np.arange(len(self.chunk_wall_time)),
                {"long_name": "index of a compiled chunk of steps", "units": "1"},
            ),
        }
        grid_coords = self.grid.coords()
        for i, a in enumerate(axes):
            coords[a] = (
                a,
                grid_coords[a],
                spatial_coordinate_attrs(a, self.grid.long_names[i], self.grid.length_units),
            )
        data: dict[str, Any] = {}
        for i, v in enumerate(self.variables):
            data[v] = (
                ("trajectory", "time", *axes),
                self.states[:, :, i],
                {"units": self.units[v], "long_name": self.long_names[v]},
            )
        data["engine"] = (
            ("trajectory", "step"),
            self.engine.astype(np.int8),
            {
                "long_name": "engine that produced the step",
                "flag_values": np.arange(len(ENGINE_NAMES), dtype=np.int8),
                "flag_meanings": " ".join(ENGINE_NAMES),
                "units": "1",
            },
        )
        data["tripped"] = (
            ("trajectory", "step"),
            self.tripped.astype(np.int8),
            {"long_name": "a policy indicator exceeded its threshold (1) or not (0)", "units": "1"},
        )
        for name, values in self.indicator_values.items():
            data[f"indicator_{name}"] = (
                ("trajectory", "step"),
                values,
                dict(self.indicator_attrs[name]),
            )
        data["wall_time"] = (
            "step",
            self.step_wall_time(),
            {"units": "s", "long_name": "wall time per step (chunk time spread evenly)"},
        )
        data["chunk_wall_time"] = (
            "chunk",
            self.chunk_wall_time,
            {"units": "s", "long_name": "wall time of the chunk"},
        )
        data["chunk_first_step"] = (
            "chunk",
            self.chunk_first_step,
            {"units": "1", "long_name": "first step of the chunk"},
        )
        data["chunk_num_steps"] = (
            "chunk",
            self.chunk_num_steps,
            {"units": "1", "long_name": "steps in the chunk"},
        )
        if self.rmse is not None:
            for v, r in self.rmse.items():
                data[f"rmse_{v}"] = (
                    ("trajectory", "time"),
                    r,
                    {"units": self.units[v], "long_name": f"RMSE of {v} against the reference"},
                )
        try:
            from solvers import __version__ as version
        except ImportError:  # pragma: no cover
            version = "unknown"
        summary = self.summary()
        attrs = {
            "title": "hybrid solver/surrogate run",
            "Conventions": "CF-1.10",
            "history": "written by surrogate.hybrid.HybridResult.to_xarray",
            "dt": self.dt,
            "t0": self.t0,
            "wall_time": self.wall_time,
            "compile_time": self.compile_time,
            "solver_fraction": self.solver_fraction,
            "engine_counts": json.dumps(summary["engine_counts"]),
            "engine_codes": json.dumps(dict(enumerate(ENGINE_NAMES))),
            "policy": json.dumps(self.config.get("policy", {}), default=str),
            "indicators": json.dumps(self.config.get("indicators", []), default=str),
            "runner_config": json.dumps(self.config, default=str),
            "variables": json.dumps(list(self.variables)),
            "grid": json.dumps(self.grid.to_dict() if hasattr(self.grid, "to_dict") else {}),
            "package_version": version,
            "created": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        ds = xr.Dataset(data, coords=coords, attrs=attrs)
        for name in ds.coords:  # CF 2.5.1: coordinate variables carry no _FillValue
            ds[name].encoding["_FillValue"] = None
        return ds

    def to_netcdf(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_xarray` to netCDF atomically (temporary file, then rename)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            self.to_xarray().to_netcdf(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def from_xarray(cls, ds) -> HybridResult:
        """Rebuild a result from :meth:`to_xarray` output (e.g. a reopened netCDF file)."""
        variables = tuple(json.loads(ds.attrs["variables"]))
        g = json.loads(ds.attrs["grid"])
        grid = Grid(
            tuple(g["num_points"]),
            tuple(g["domain_length"]),
            tuple(g["axes"]),
            g.get("length_units", "1"),
            tuple(g["long_names"]) if g.get("long_names") else None,
        )
        states = np.stack([ds[v].values for v in variables], axis=2)
        names = [k[len("indicator_") :] for k in ds.data_vars if k.startswith("indicator_")]
        rmse_keys = [f"rmse_{v}" for v in variables]
        rmse = (
            {v: ds[f"rmse_{v}"].values for v in variables}
            if all(k in ds for k in rmse_keys)
            else None
        )
        return cls(
            states=states,
            engine=ds["engine"].values.astype(np.int8),
            tripped=ds["tripped"].values.astype(bool),
            indicator_values={n: ds[f"indicator_{n}"].values for n in names},
            indicator_attrs={
                n: {
                    "units": ds[f"indicator_{n}"].attrs.get("units", ""),
                    "long_name": ds[f"indicator_{n}"].attrs.get("long_name", n),
                }
                for n in names
            },
            chunk_wall_time=ds["chunk_wall_time"].values,
            chunk_first_step=ds["chunk_first_step"].values,
            chunk_num_steps=ds["chunk_num_steps"].values,
            wall_time=float(ds.attrs["wall_time"]),
            compile_time=float(ds.attrs["compile_time"]),
            dt=float(ds.attrs["dt"]),
            t0=float(ds.attrs["t0"]),
            variables=variables,
            units={v: ds[v].attrs.get("units", "1") for v in variables},
            long_names={v: ds[v].attrs.get("long_name", v) for v in variables},
            grid=grid,
            time_units=ds["time"].attrs.get("units", "1"),
            config=json.loads(ds.attrs["runner_config"]),
            rmse=rmse,
        )

    @classmethod
    def from_netcdf(cls, path: str | os.PathLike) -> HybridResult:
        """Read a file written by :meth:`to_netcdf`."""
        import xarray as xr

        with xr.open_dataset(path) as ds:
            return cls.from_xarray(ds.load())


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
