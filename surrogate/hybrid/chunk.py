"""The compiled chunk program of the hybrid runner, its dispatch modes and its cache.

A *chunk* is ``num_blocks`` blocks of ``block_len`` steps for a whole batch, compiled
once: a ``lax.scan`` over blocks, each a ``lax.scan`` over steps vmapped over the batch.
Inside a block the policy's schedule picks the solver or a surrogate proposal with a real
``lax.cond``; the proposal is checked per member (finite, blow-up, indicators) and only
the members that need it are redone by the solver, in one of :data:`DISPATCH_MODES`:

- ``"compact"`` (default): the flagged members are gathered into the smallest bucket of
  :func:`bucket_sizes` that holds them (a ``lax.switch`` on their count), the solver
  runs vmapped on that sub-batch and the results are scattered back;
- ``"member"``: ``lax.map`` over members of an unbatched ``lax.cond``;
- ``"batch"``: one batch-level ``lax.cond``, the solver for all when any needs it;
- ``"select"``: ``jnp.where`` of both, always computing the solver (kept to measure the
  vmap-of-cond trap).

Steppers, indicators and the policy enter the program as pytrees split by
:func:`partition` into traced leaves (arrays and Python floats, so a threshold sweep
reuses one compilation) and a hashable static part. :func:`compiled_chunk` compiles ahead
of time, for one device or (wrapped in ``jax.shard_map``) for a ``"data"`` mesh, and
caches the executables. The execution model and the measurements behind the default
dispatch are in ``docs/hybrid_runner.md``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from datasets.plumbing import map_rows
from surrogate.distributed import DATA_AXIS
from surrogate.hybrid.indicators import IndicatorContext
from surrogate.hybrid.policies import policy_thresholds

Array = jax.Array
# What :func:`partition` keeps out of ``jit``: (treedef, static leaves, is-dynamic mask).
Static = tuple[Any, tuple[Any, ...], tuple[bool, ...]]

# Engine codes of the per-step log (``HybridResult.engine``).
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


def partition(tree: Any) -> tuple[list[Any], Static]:
    """Split a pytree into its traced leaves and a hashable static description.

    Arrays and Python floats/complex become traced ``jit`` arguments; Python ints, bools
    and every other leaf stay static (see ``_is_dynamic``).

    Args:
        tree: any pytree (here the steppers, indicators, policy and blow-up threshold).

    Returns:
        ``(dynamic, static)``: the traced leaves in flattening order, and
        ``(treedef, static leaves with None for traced ones, is-dynamic mask)``, which
        :func:`combine` turns back into the tree. ``static`` must be hashable to key the
        compile cache; the caller checks.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dynamic = [x for x in leaves if _is_dynamic(x)]
    static = tuple(None if _is_dynamic(x) else x for x in leaves)
    mask = tuple(_is_dynamic(x) for x in leaves)
    return dynamic, (treedef, static, mask)


def combine(dynamic: Sequence[Any], static: Static) -> Any:
    """Rebuild the pytree that :func:`partition` split: the inverse of it.

    Args:
        dynamic: the traced leaves (or tracers standing for them), in flattening order.
        static: the static description returned by :func:`partition`.

    Returns:
        The pytree, with ``dynamic`` in place of its traced leaves.
    """
    treedef, static_leaves, mask = static
    it = iter(dynamic)
    leaves = [next(it) if m else s for s, m in zip(static_leaves, mask, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _aval_key(x: Any) -> Any:
    return jax.typeof(x)


def bucket_sizes(batch: int) -> tuple[int, ...]:
    """Sub-batch sizes of the ``"compact"`` dispatch: powers of two below ``batch``, then it.

    Args:
        batch: members per device, an int >= 1.

    Returns:
        ``(1, 2, 4, ..., batch)``: one compiled solver copy per size.
    """
    sizes, m = [], 1
    while m < batch:
        sizes.append(m)
        m *= 2
    sizes.append(batch)
    return tuple(sizes)


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

    The body of :func:`compiled_chunk` (arguments as there).

    Blocks from ``active_blocks`` on are skipped (a real ``lax.cond`` on a scalar), so the
    last, shorter chunk of a run reuses the same compiled program; their outputs are
    zeros and the host drops them.

    Returns ``(carry, frames (B, T, C, *spatial), engine (B, T) int8, tripped (B, T) bool,
    values (I, B, T))`` with ``T = num_blocks * block_len`` and ``I`` indicators.
    """
    TRACE_COUNT["chunk"] += 1
    solver, surrogate, indicators, policy, blowup = combine(dynamic, static)
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


def run_device(x: Array) -> jax.Device:
    """The device a mesh-less run uses: the one ``x`` lives on.

    That is the device ``x`` is committed to, or the default device for an uncommitted
    array; a batch already spread over several devices is gathered onto the first of them
    (pass ``mesh=`` to the runner to keep it split).

    Args:
        x: the initial states ``(B, C, *spatial)``, a ``jax.Array``.

    Returns:
        The device with the lowest id among those holding ``x``.
    """
    return min(x.devices(), key=lambda d: d.id)


def _sharded(impl: Any, mesh: Mesh) -> Any:
    """``impl`` run per device on its share of the batch (``jax.shard_map`` over ``"data"``).

    Stepper/indicator/policy leaves and the two step scalars are replicated; the carry,
    the member indices and every output are split on their batch axis (axis 1 of the
    ``(I, B, T)`` indicator values). The body has no collective, so ``check_vma`` (which
    only checks replication claims of outputs) is off.
    """
    rows = P(DATA_AXIS)
    return map_rows(
        impl,
        mesh,
        (P(), (rows, rows, rows), P(), P(), rows),
        ((rows, rows, rows), rows, rows, rows, P(None, DATA_AXIS)),
    )


def compiled_chunk(
    dynamic: list[Any],
    carry: tuple[Array, Array, Array],
    start_step: Array,
    active_blocks: Array,
    members: Array,
    *,
    static: Static,
    num_blocks: int,
    block_len: int,
    dispatch: str,
    fallback: bool,
    mesh: Mesh | None = None,
    device: jax.Device | None = None,
) -> tuple[Any, float]:
    """The ahead-of-time compiled chunk program, from the cache when it is there.

    The arguments must already be placed: with ``mesh`` by :func:`~surrogate.distributed.
    replicate` / :func:`~surrogate.distributed.shard_batch`, without it committed to
    ``device``. The executable is compiled for their shardings, so both are in the key,
    with the static arguments and the abstract values (shape, dtype, sharding) of the
    others; the cache keeps the 32 most recently used executables.

    Args:
        dynamic: traced leaves of ``(solver, surrogate, indicators, policy, blowup)``
            (:func:`partition`).
        carry: ``(state (B, C, *spatial), verified state (B, C, *spatial), steps since
            verified (B,) int32)``.
        start_step: int32 scalar, the step the chunk starts at.
        active_blocks: int32 scalar, blocks actually run (the rest are skipped).
        members: ``(B,)`` int32 global member indices.
        static: the static part from :func:`partition`.
        num_blocks: blocks per chunk (compiled size).
        block_len: steps per block.
        dispatch: one of :data:`DISPATCH_MODES`.
        fallback: redo non-finite or blown-up proposals with the solver.
        mesh: a ``"data"`` mesh to split the batch over, or ``None``.
        device: the device of a mesh-less run (:func:`run_device`).

    Returns:
        ``(executable, seconds)``: the executable takes ``(dynamic, carry, start_step,
        active_blocks, members)`` and returns ``(carry, frames (B, T, C, *spatial),
        engine (B, T) int8, tripped (B, T) bool, values (I, B, T))``; ``seconds`` is the
        compile time, exactly 0.0 on a cache hit.
    """
    static_kwargs = {
        "static": static,
        "num_blocks": num_blocks,
        "block_len": block_len,
        "dispatch": dispatch,
        "fallback": fallback,
    }
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


__all__ = [
    "DISPATCH_MODES",
    "ENGINE_FALLBACK",
    "ENGINE_NAMES",
    "ENGINE_ROLLBACK",
    "ENGINE_SOLVER",
    "ENGINE_SURROGATE",
    "TRACE_COUNT",
    "Static",
    "bucket_sizes",
    "combine",
    "compiled_chunk",
    "partition",
    "run_device",
]
