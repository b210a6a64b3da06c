"""Helpers of the dataset tests: tiny configs and test-double solvers.

This is a plain module (not a conftest) so spawned worker processes can import the
test doubles by their class path ``tests.datasets.dataset_helpers:Shift2D``.

- ``Shift2D``: two variables on a non-square 2D grid, exactly solvable (each output step
  rolls ``h`` by ``num_substeps`` cells along x and ``q`` along y), mass conserved exactly.
- ``Fuse1D``: a fraction of its trajectories (decided by the key) turn NaN exactly
  ``fuse`` output intervals after the initial condition.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

import datasets
import solvers
from solvers.base import Solver, resolve_precision
from solvers.grid import Grid

solvers.trust_module(__name__)  # validation may rebuild the test doubles from manifests

# N = 32 on L = 22 is coarse but stable over the few frames stored here; small keeps
# compilation and simulation well under a second.
KS_CONFIG = {"num_points": 32, "domain_length": 22.0, "dt": 0.5, "num_substeps": 2}
GENERATE = {
    "num_trajectories": 6,
    "num_frames": 10,
    "trajectories_per_shard": 2,
    "batch_size": 2,
    "spinup_steps": 4,
    "seed": 0,
    "progress": False,
}


def hashed_uniform(key: jax.Array, shape: tuple[int, ...], salt: int = 0) -> jax.Array:
    """Deterministic pseudo-random numbers in [0, 1) from a key, without threefry.

    The test doubles use this instead of ``jax.random``: threefry takes seconds to compile
    on a loaded CPU, and the tests only need distinct, key-determined fields.
    """
    k = (jax.random.key_data(key) % 65521).astype(jnp.float32)  # small: exact in float32
    n = jnp.arange(1, math.prod(shape) + 1, dtype=jnp.float32).reshape(shape)
    x = jnp.sin(n * 1.2989 + k[0] * 0.78233 + k[-1] * 0.37719 + salt * 0.5311) * 437.58547
    return x - jnp.floor(x)


def ks_solver(**overrides: Any) -> solvers.KuramotoSivashinsky:
    return solvers.KuramotoSivashinsky(**{**KS_CONFIG, **overrides})


def checksums(path: pathlib.Path) -> dict[str, str]:
    """Shard file name -> sha256 from the manifest."""
    return {s["file"]: s["sha256"] for s in datasets.read_manifest(path)["shards"]}


class Shift2D(Solver):
    """``h(t + dt) = roll_x(h(t), s)``, ``q(t + dt) = roll_y(q(t), s)`` with ``s = num_substeps``.

    State ``(2, 6, 8)`` on axes ``("y", "x")`` of lengths 3 m and 4 m; time in seconds.
    Large ``num_substeps`` make it slow on purpose (one roll per internal step).
    """

    name = "test_shift_2d"
    variables = ("h", "q")
    units = {"h": "m", "q": "m s-1"}
    long_names = {"h": "test height", "q": "test flux"}
    time_units = "s"
    conserved = ("mass",)
    # num_substeps is a leaf here (fori_loop takes a traced bound): no recompilation.
    _dynamic_fields = ("_dt", "num_substeps")
    _static_fields = ("grid", "precision")

    def __init__(self, dt: float = 0.25, num_substeps: int = 1, precision: str = "float32"):
        resolve_precision(precision)
        self._set(
            grid=Grid((6, 8), (3.0, 4.0), ("y", "x"), length_units="m"),
            num_substeps=int(num_substeps),
            precision=precision,
            _dt=float(dt),
        )

    def config(self) -> dict[str, Any]:
        return {"dt": self.dt, "num_substeps": self.num_substeps, "precision": self.precision}

    def initial_condition(self, key: jax.Array) -> jax.Array:
        return (2 * hashed_uniform(key, self.state_shape) - 1).astype(self.dtype)

    def step(self, state: jax.Array) -> jax.Array:
        return jnp.stack([jnp.roll(state[0], 1, axis=-1), jnp.roll(state[1], 1, axis=-2)])

    def diagnostics(self, state: jax.Array) -> dict[str, jax.Array]:
        return {"mass": jnp.mean(state[0]), "energy": 0.5 * jnp.mean(state**2)}


class Fuse1D(Solver):
    """Channel ``u`` decays and mixes; channel ``fuse`` counts down on "bad" trajectories.

    A trajectory is bad when ``uniform(fold_in(key, 1)) < bad_fraction``; then ``fuse``
    starts at ``fuse_steps`` and ``u`` becomes NaN at the advance that brings it to 0,
    i.e. the state ``fuse_steps`` output intervals after the initial condition is the
    first non-finite one. Good trajectories carry ``fuse = -1``.
    """

    name = "test_fuse_1d"
    variables = ("u", "fuse")
    units = {"u": "1", "fuse": "1"}
    long_names = {"u": "test field", "fuse": "steps until NaN"}
    # bad_fraction and fuse_steps are leaves: changing them does not recompile.
    _dynamic_fields = ("_dt", "bad_fraction", "fuse_steps")
    _static_fields = ("grid", "num_substeps", "precision")

    def __init__(
        self,
        dt: float = 1.0,
        bad_fraction: float = 0.5,
        fuse_steps: int = 3,
        precision: str = "float32",
    ):
        resolve_precision(precision)
        self._set(
            grid=Grid((8,), (1.0,), ("x",)),
            num_substeps=1,
            precision=precision,
            bad_fraction=float(bad_fraction),
            fuse_steps=int(fuse_steps),
            _dt=float(dt),
        )

    def config(self) -> dict[str, Any]:
        return {
            "dt": self.dt,
            "bad_fraction": self.bad_fraction,
            "fuse_steps": self.fuse_steps,
            "precision": self.precision,
        }

    def is_bad(self, key: jax.Array) -> jax.Array:
        return hashed_uniform(key, (), salt=1) < self.bad_fraction

    def initial_condition(self, key: jax.Array) -> jax.Array:
        u = (2 * hashed_uniform(key, self.grid.num_points) - 1).astype(self.dtype)
        fuse = jnp.where(self.is_bad(key), self.fuse_steps, -1.0).astype(self.dtype)
        return jnp.stack([u, jnp.full_like(u, fuse)])

    def step(self, state: jax.Array) -> jax.Array:
        u, fuse = state[0], state[1]
        u = 0.9 * u + 0.1 * jnp.roll(u, 1)
        fuse = jnp.where(fuse > 0, fuse - 1, fuse)
        u = jnp.where((fuse == 0) | jnp.isnan(u), jnp.nan, u)
        return jnp.stack([u, fuse])

    def diagnostics(self, state: jax.Array) -> dict[str, jax.Array]:
        return {"mass": jnp.mean(state[0])}
