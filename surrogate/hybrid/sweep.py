"""Cost and accuracy of a hybrid runner: against the pure solver, and over a threshold sweep.

:func:`compare_cost` times a hybrid run against the pure-solver run of the same horizon.
:func:`sweep_runs` reruns the hybrid with each threshold of one indicator (thresholds are
traced, so every point reuses one compiled program) and hands the runs over one at a
time; :func:`sweep_thresholds` tabulates them into the accuracy-versus-cost curve.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from solvers.base import check_int
from surrogate.hybrid.result import HybridResult

if TYPE_CHECKING:
    import xarray as xr

    from surrogate.hybrid.runner import HybridRunner

Array = jax.Array


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

    Args:
        runner: the hybrid runner to time.
        initial_states: ``(B, C, *spatial)``.
        num_steps: horizon in steps.
        repeats: runs of each kind, an int >= 1 (default 1).
        run_kwargs: passed to :meth:`HybridRunner.run`.

    Returns:
        ``{"hybrid_wall_time", "solver_wall_time", "speedup" (solver / hybrid),
        "hybrid_compile_time", "solver_compile_time", "solver_fraction", "num_steps",
        "num_trajectories", "hybrid": HybridResult, "solver_only": HybridResult}``.

    Raises:
        ValueError: ``repeats`` is not an int >= 1.
    """
    check_int("compare_cost", "repeats", repeats, 1)
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


def _swept_policies(
    policy: Any, thresholds: Sequence[float], indicator_name: str | None, caller: str
) -> tuple[str, list[tuple[float, Any]]]:
    """The policy with each value of ``thresholds`` for one indicator, the others kept.

    Returns ``(indicator_name, [(threshold, policy), ...])``; raises ``ValueError``
    (prefixed with ``caller``) when the policy has nothing to sweep or does not check
    ``indicator_name``.
    """
    names = tuple(getattr(policy, "indicator_name", ()) or ())
    if not dataclasses.is_dataclass(policy) or not hasattr(policy, "threshold") or not names:
        raise ValueError(f"{caller}: policy {type(policy).__name__} has no thresholds to sweep")
    if indicator_name is None:
        if len(names) != 1:
            raise ValueError(f"{caller}: pass indicator_name, one of {names}")
        indicator_name = names[0]
    if indicator_name not in names:
        raise ValueError(
            f"{caller}: indicator_name {indicator_name!r} is not checked by the "
            f"policy; checked: {names}"
        )
    i = names.index(indicator_name)
    policies = []
    for value in thresholds:
        new = list(policy.threshold)
        new[i] = float(value)
        policies.append((float(value), dataclasses.replace(policy, threshold=tuple(new))))
    return indicator_name, policies


def sweep_runs(
    runner: HybridRunner,
    initial_states: Array | np.ndarray,
    num_steps: int,
    thresholds: Sequence[float],
    *,
    indicator_name: str | None = None,
    reference: Array | np.ndarray | None = None,
    **run_kwargs: Any,
) -> Iterator[tuple[float, HybridResult]]:
    """Rerun the hybrid with each threshold of one indicator, one run at a time.

    The policy (a :class:`~surrogate.hybrid.policies.Threshold` or
    :class:`~surrogate.hybrid.policies.BlockPolicy`) keeps its other thresholds; since
    thresholds are traced, every run reuses one compiled program. The policy is checked
    at once; each run happens when the iterator reaches it, so only one result need be
    held at a time (score it, keep what you need, drop it).

    Args:
        runner: the hybrid runner whose policy is swept.
        initial_states: ``(B, C, *spatial)``.
        num_steps: horizon in steps.
        thresholds: values for the swept indicator, in its units.
        indicator_name: which of the policy's indicators to sweep (default: its only one).
        reference: optional ``(B, num_steps + 1, C, *spatial)`` for each result's ``rmse``.
        run_kwargs: passed to :meth:`HybridRunner.run` (e.g. ``check_finite=False``).

    Returns:
        An iterator of ``(threshold, HybridResult)`` in the order of ``thresholds``.

    Raises:
        ValueError: the policy has no ``indicator_name``/``threshold`` fields, or
            ``indicator_name`` is not among them (raised by the call, before any run).
    """
    _, policies = _swept_policies(runner.policy, thresholds, indicator_name, "sweep_runs")
    return _runs(runner, policies, initial_states, num_steps, reference, run_kwargs)


def _runs(
    runner: HybridRunner,
    policies: list[tuple[float, Any]],
    initial_states: Array | np.ndarray,
    num_steps: int,
    reference: Array | np.ndarray | None,
    run_kwargs: dict[str, Any],
) -> Iterator[tuple[float, HybridResult]]:
    for value, policy in policies:
        res = runner.with_policy(policy).run(
            initial_states, num_steps, reference=reference, **run_kwargs
        )
        yield value, res


def sweep_thresholds(
    runner: HybridRunner,
    initial_states: Array | np.ndarray,
    num_steps: int,
    thresholds: Sequence[float],
    *,
    indicator_name: str | None = None,
    reference: Array | np.ndarray | None = None,
    **run_kwargs: Any,
) -> xr.Dataset:
    """The accuracy-versus-cost curve: rerun with each threshold of one indicator.

    The policy (a :class:`~surrogate.hybrid.policies.Threshold` or
    :class:`~surrogate.hybrid.policies.BlockPolicy`) keeps its other thresholds; since
    thresholds are traced, every point reuses one compiled program. The pure-solver run
    of the same horizon is timed once as the baseline; the hybrid runs are those of
    :func:`sweep_runs`, tabulated.

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

    indicator_name, policies = _swept_policies(
        runner.policy, thresholds, indicator_name, "sweep_thresholds"
    )
    baseline = runner.run_solver_only(initial_states, num_steps, **run_kwargs)
    runs = _runs(runner, policies, initial_states, num_steps, reference, run_kwargs)
    rows = [res for _, res in runs]
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


__all__ = ["compare_cost", "sweep_runs", "sweep_thresholds"]
