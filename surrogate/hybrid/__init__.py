"""Hybrid runner: switch step by step between a classical solver and a learned surrogate.

:mod:`.runner` holds :class:`HybridRunner`, :mod:`.chunk` the compiled program it runs,
:mod:`.result` the :class:`HybridResult` it returns (with netCDF input and output),
:mod:`.sweep` the cost comparison and threshold sweep, :mod:`.policies` who runs each step
and :mod:`.indicators` the online, ground-truth-free error indicators. The execution model
and its measurements are in ``docs/hybrid_runner.md``.
"""

from surrogate.hybrid.chunk import (
    DISPATCH_MODES,
    ENGINE_FALLBACK,
    ENGINE_NAMES,
    ENGINE_ROLLBACK,
    ENGINE_SOLVER,
    ENGINE_SURROGATE,
)
from surrogate.hybrid.indicators import (
    CoarseSolverCheck,
    CourantNumber,
    EnsembleSpread,
    Indicator,
    IndicatorContext,
    InvariantDrift,
    SpectralTail,
    coarse_solver_like,
    tail_share,
)
from surrogate.hybrid.policies import (
    AlwaysSolver,
    AlwaysSurrogate,
    BlockPolicy,
    EveryK,
    Policy,
    Threshold,
    pytree_dataclass,
)
from surrogate.hybrid.resample import coarsen, refine, spectral_resample
from surrogate.hybrid.result import HybridResult
from surrogate.hybrid.runner import HybridRunner
from surrogate.hybrid.sweep import compare_cost, sweep_runs, sweep_thresholds

__all__ = [
    "DISPATCH_MODES",
    "ENGINE_FALLBACK",
    "ENGINE_NAMES",
    "ENGINE_ROLLBACK",
    "ENGINE_SOLVER",
    "ENGINE_SURROGATE",
    "AlwaysSolver",
    "AlwaysSurrogate",
    "BlockPolicy",
    "CoarseSolverCheck",
    "CourantNumber",
    "EnsembleSpread",
    "EveryK",
    "HybridResult",
    "HybridRunner",
    "Indicator",
    "IndicatorContext",
    "InvariantDrift",
    "Policy",
    "SpectralTail",
    "Threshold",
    "coarse_solver_like",
    "coarsen",
    "compare_cost",
    "pytree_dataclass",
    "refine",
    "spectral_resample",
    "sweep_runs",
    "sweep_thresholds",
    "tail_share",
]
