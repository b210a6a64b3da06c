"""Shared fixtures: float64 on demand, small deterministic keys."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX enabled (restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def key():
    return jax.random.key(0)
