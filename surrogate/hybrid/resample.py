"""Spectral resampling lives in :mod:`solvers.resolution`; re-exported for old imports."""

from solvers.resolution import coarsen, refine, spectral_resample

__all__ = ["coarsen", "refine", "spectral_resample"]
