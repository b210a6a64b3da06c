"""Learned forecasters and the hybrid runner ("AI transforms HPC").

- :mod:`surrogate.models`: FNO, U-Net and AFNO networks (Flax NNX), one signature
  ``(B, C_in, *spatial) -> (B, C_out, *spatial)``;
- :mod:`surrogate.forecaster`: :class:`Forecaster`, a network + normalisation + residual
  rule that is a stepper like a solver; :mod:`surrogate.bundle` saves and loads it;
- :mod:`surrogate.train`: rollout training with curriculum, checkpoints and exact resume;
- :mod:`surrogate.evaluate`, :mod:`surrogate.metrics`, :mod:`surrogate.plots`: skill scores;
- :mod:`surrogate.hybrid`: the hybrid runner, its policies and error indicators;
- :mod:`surrogate.pipeline`, :mod:`surrogate.cli`: the end-to-end stages and entry points;
- :mod:`surrogate.distributed`: meshes and multi-process helpers.
"""

from surrogate.bundle import load_forecaster, save_forecaster
from surrogate.forecaster import Forecaster, ForecasterSpec, Normalization

__all__ = ["Forecaster", "ForecasterSpec", "Normalization", "load_forecaster", "save_forecaster"]
