"""Shared fixtures: strict dtype promotion, float64 on demand, small deterministic keys.

The suite runs under ``jax_numpy_dtype_promotion="strict"``: every mixed-dtype operation
in the project's code (a real wavenumber times a complex spectrum, an integer step times a
float interval) must cast explicitly, so a float32 path can never silently widen and a
float64 path never silently narrows. Tests of code that is not ours and relies on implicit
promotion (optax's Adam bias correction raises a float to an int32 power; flax's
normalisation layers promote bfloat16 statistics; exponax's steppers multiply by ``1j``)
carry ``@pytest.mark.standard_promotion`` and run under the standard rules. Subprocesses
(examples, pipelines) run with JAX's default, the standard rules, as users do.
"""

import jax
import pytest


def pytest_configure(config):
    # Before collection, so module-level code of the test files is checked too.
    jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
    """Standard promotion for tests marked ``standard_promotion``, else strict."""
    mode = "standard" if request.node.get_closest_marker("standard_promotion") else "strict"
    with jax.numpy_dtype_promotion(mode):
        yield


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX enabled (restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def key():
    return jax.random.key(0)
