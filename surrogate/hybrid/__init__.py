"""Hybrid runner: switch step by step between a classical solver and a learned surrogate.

See :mod:`surrogate.hybrid.runner` for the execution model, :mod:`.policies` for who runs
each step and :mod:`.indicators` for the online, ground-truth-free error indicators.
"""

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
from surrogate.hybrid.runner import (
    DISPATCH_MODES,
    ENGINE_FALLBACK,
    ENGINE_NAMES,
    ENGINE_ROLLBACK,
    ENGINE_SOLVER,
    ENGINE_SURROGATE,
    HybridResult,
    HybridRunner,
    compare_cost,
    sweep_thresholds,
)

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
    "sweep_thresholds",
    "tail_share",
]
