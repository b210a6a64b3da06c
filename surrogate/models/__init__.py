"""Neural models behind one signature: ``model(x)``, ``(B, C_in, *spatial) -> (B, C_out, *spatial)``.

Flax NNX modules for periodic 1D and 2D grids, all constructed as

    Model(in_channels, out_channels, *, spatial_dims, <architecture kwargs>,
          dtype=None, param_dtype=jnp.float32, rngs)

where ``dtype`` is the compute dtype (``jnp.bfloat16`` for mixed precision: parameters stay in
``param_dtype``, the output comes back in the input's dtype).

- :class:`FNO`: Fourier neural operator (Li et al. 2021).
- :class:`UNet`: residual U-Net with GroupNorm and circular padding.
- :class:`AFNONet`: FourCastNet-style vision transformer with AFNO token mixing.

:func:`build_model` builds one by registry name (``MODELS``), :func:`count_parameters` counts
its real parameters.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from surrogate.models.afno import AFNONet
from surrogate.models.fno import FNO
from surrogate.models.unet import UNet

MODELS: dict[str, type[nnx.Module]] = {"fno": FNO, "unet": UNet, "afno": AFNONet}

# Passed by build_model itself or by the caller as runtime pieces, never as architecture.
_RUNTIME_KWARGS = ("in_channels", "out_channels", "spatial_dims", "rngs")


def model_kwargs(name: str) -> tuple[str, ...]:
    """Names of the keyword arguments ``build_model(name, ...)`` accepts besides the runtime ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    params = inspect.signature(MODELS[name].__init__).parameters
    return tuple(p for p in params if p not in ("self", *_RUNTIME_KWARGS))


def build_model(
    name: str,
    *,
    in_channels: int,
    out_channels: int,
    spatial_dims: int,
    rngs: nnx.Rngs,
    **kwargs: Any,
) -> nnx.Module:
    """Build the model registered as ``name`` (``"fno"``, ``"unet"`` or ``"afno"``).

    Args:
        name: registry name.
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        spatial_dims: 1 or 2.
        rngs: random number generators for the initial parameters.
        **kwargs: architecture keyword arguments of the model class, plus ``dtype`` and
            ``param_dtype``.

    Returns:
        The module, ``(B, C_in, *spatial) -> (B, C_out, *spatial)``.

    Raises:
        ValueError: for an unknown ``name`` or keyword, listing the valid ones.
    """
    valid = model_kwargs(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown keyword(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"valid: {', '.join(valid)}"
        )
    return MODELS[name](in_channels, out_channels, spatial_dims=spatial_dims, rngs=rngs, **kwargs)


def count_parameters(model: nnx.Module) -> int:
    """Number of real scalars in the model's ``nnx.Param`` variables (complex counts as 2)."""
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))  # arrays or ShapeDtypeStructs
    return int(
        sum(
            np.prod(x.shape) * (2 if jnp.issubdtype(x.dtype, jnp.complexfloating) else 1)
            for x in leaves
        )
    )


__all__ = ["MODELS", "AFNONet", "FNO", "UNet", "build_model", "count_parameters", "model_kwargs"]
