"""Shared test setups and fakes: test modules import these, never each other.

A plain module (not a conftest), so subprocess scripts can import it too, and so the
step functions of the own-solver double can be rebuilt from their names
(``tests.helpers:advect_step``). It imports neither pytest nor xarray.

- Training on a tiny Kuramoto-Sivashinsky dataset: :func:`make_setup` (data, spec,
  :class:`Stats`), :func:`make_spec`, :func:`small_config`, :func:`same_params`.
- Fake surrogates built from a solver (:class:`StepperMeta`): :class:`Scaled`,
  :class:`Damped`; reference trajectories :func:`make_truth`.
- Subprocesses with forced CPU devices: :data:`PRELUDE`, :func:`run_script`,
  :func:`run_processes`, :func:`free_port`, and AdamW's bound :func:`adam_gap`.
- The hybrid runner on KS with a deterministic trip pattern: :func:`ks_setup`,
  :class:`MemberStepTrip`, :func:`expected_trips`.
- A solver brought by the user: exact linear advection :func:`advection` (``from_step``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import solvers
from solvers import Grid, KuramotoSivashinsky, StepSolver, from_step, rollout, spectral
from surrogate.forecaster import ForecasterSpec
from surrogate.hybrid import HybridRunner, Threshold, pytree_dataclass
from surrogate.train import TrainConfig
from tests.datasets.dataset_helpers import hashed_uniform

solvers.trust_module(__name__)  # advection's step functions are rebuilt from their names

REPO = Path(__file__).resolve().parents[1]


# ---- training on a tiny KS dataset --------------------------------------------------------
class Stats:
    """Normalisation statistics of ``(N, T, C, X)`` trajectories, per variable (float64)."""

    def __init__(self, data):
        d = np.asarray(data, np.float64)
        self.state_mean = d.mean(axis=(0, 1, 3))
        self.state_std = d.std(axis=(0, 1, 3))
        delta = np.diff(d, axis=1)
        self.delta_mean = delta.mean(axis=(0, 1, 3))
        self.delta_std = delta.std(axis=(0, 1, 3))


def make_spec(solver, *, width=16, modes=8, history=1) -> ForecasterSpec:
    """A two-layer FNO forecaster spec on ``solver``'s variables, grid and ``dt``."""
    return ForecasterSpec.create(
        model_name="fno",
        model_kwargs={"width": width, "modes": modes, "num_layers": 2},
        variables=solver.variables,
        units=dict(solver.units),
        grid=solver.grid.to_dict(),
        dt=solver.dt,
        history=history,
    )


def spec_for_dataset(info, *, width=8, modes=4, num_layers=1) -> ForecasterSpec:
    """A small FNO forecaster spec for a dataset (``datasets.dataset_info``)."""
    return ForecasterSpec.create(
        model_name="fno",
        model_kwargs={"width": width, "modes": modes, "num_layers": num_layers},
        variables=info["variables"],
        units=info["units"],
        grid=info["grid"],
        dt=info["dt"],
    )


def make_setup(num_points=32, num_traj=6, num_frames=24, width=16, modes=8, history=1):
    """A tiny KS dataset, its statistics, and a forecaster spec (deterministic).

    Returns:
        ``(solver, data (num_traj, num_frames, 1, num_points) float32, spec, stats)``.
    """
    solver = KuramotoSivashinsky(num_points=num_points, domain_length=22.0, dt=0.5, num_substeps=2)
    keys = jax.random.split(jax.random.key(1), num_traj)
    u0 = jax.vmap(solver.initial_condition)(keys)
    # spin up onto the attractor, then record
    u0 = jax.vmap(lambda u: rollout(solver, u, 40, include_initial=False)[-1])(u0)
    data = jax.vmap(lambda u: rollout(solver, u, num_frames - 1))(u0)
    spec = make_spec(solver, width=width, modes=modes, history=history)
    stats = Stats(data)
    return solver, np.asarray(data), spec, stats


def small_config(**kw) -> TrainConfig:
    """20 steps of batch 8, logged every 5, checkpointed every 10, no validation."""
    base = dict(
        num_steps=20,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=5,
        log_every=5,
        checkpoint_every=10,
        validate_every=0,
        keep_checkpoints=3,
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def same_params(a, b) -> bool:
    """Whether two parameter pytrees are equal bit for bit."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
    )


# ---- fake surrogates ------------------------------------------------------------------------
class StepperMeta:
    """The stepper contract's metadata (``solvers.stepper.Stepper``), from ``self.solver``."""

    @property
    def dt(self):
        return self.solver.dt

    @property
    def variables(self):
        return self.solver.variables

    @property
    def grid(self):
        return self.solver.grid

    @property
    def units(self):
        return self.solver.units

    @property
    def long_names(self):
        return self.solver.long_names

    @property
    def time_units(self):
        return self.solver.time_units

    @property
    def state_shape(self):
        return self.solver.state_shape


@pytree_dataclass(data_fields=("solver", "scale"))
class Scaled(StepperMeta):
    """``scale * solver(state)``."""

    solver: object
    scale: float = 1.0

    def __call__(self, state):
        return self.solver(state) * jnp.asarray(self.scale, state.dtype)


@pytree_dataclass(data_fields=("solver", "damping"))
class Damped(StepperMeta):
    """Fake surrogate: the solver followed by extra diffusion ``exp(-damping k^2)`` per step."""

    solver: object
    damping: float

    def __call__(self, state):
        (k,) = spectral.wavenumbers(self.grid.num_points, self.grid.domain_length)
        y_hat = jnp.fft.rfft(self.solver(state))
        y_hat = y_hat * jnp.exp(-self.damping * k**2).astype(y_hat.dtype)
        return jnp.fft.irfft(y_hat, n=state.shape[-1]).astype(state.dtype)


def make_truth(solver, num_traj, num_frames, spin_up=0, seed=0, steps_per_frame=1):
    """Reference trajectories through ``solvers.rollout`` (not the code under test)."""

    def one(i):
        x0 = solver.initial_condition(jax.random.fold_in(jax.random.key(seed), i))
        if spin_up:
            x0 = rollout(solver, x0, spin_up, include_initial=False)[-1]
        frames = rollout(solver, x0, (num_frames - 1) * steps_per_frame)
        return frames[::steps_per_frame]

    return np.asarray(jax.vmap(one)(jnp.arange(num_traj)))


# ---- subprocesses with forced CPU devices ----------------------------------------------------
# ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` only takes effect before JAX
# initialises, so multi-device checks run ``python -c PRELUDE + script``.
# The preamble: the tiny KS training setup above and two comparison helpers.
PRELUDE = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from surrogate import distributed
    from surrogate.train import train, init_forecaster
    from datasets import ArrayLoader
    from tests.helpers import make_setup, small_config

    def leaves(f):
        return [np.asarray(x) for x in jax.tree.leaves(f.params)]

    def maxdiff(a, b):
        return max(float(np.max(np.abs(x - y) / (1e-6 + np.abs(y)))) for x, y in zip(a, b))
    """
)


def adam_gap(learning_rates) -> float:
    """How far apart AdamW can put one parameter in two runs from the same start.

    Each step moves a parameter by ``lr_t |m_hat / (sqrt(v_hat) + eps)|``, at most 1.01 lr_t
    over the first 5 steps (Cauchy-Schwarz on the bias-corrected moments, b1 = 0.9,
    b2 = 0.999); decoupled weight decay (1e-4 lr_t |p|) is covered by rounding up to 1.02.
    A gradient that is zero up to round-off (summed in another order on another device or
    process) can land anywhere in that range, so two runs may differ by twice the sum.
    """
    return 2 * 1.02 * float(sum(learning_rates))


def run_script(script: str, devices: int, *args: str, timeout: float = 120.0, env=None) -> dict:
    """Run ``PRELUDE + script`` with ``devices`` forced CPU devices; return the last JSON line."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A TCP port free on localhost now (for a ``jax.distributed`` coordinator)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(commands: list[list[str]], envs: list[dict], timeout: float = 150.0) -> list:
    """Start one process per command and environment, all at once; return the JSON of
    each one's last stdout line, in order (a failing process fails the test; none is left
    running)."""
    procs = [
        subprocess.Popen(
            cmd,
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd, env in zip(commands, envs, strict=True)
    ]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            assert p.returncode == 0, stderr[-4000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


# ---- the hybrid runner on KS with a deterministic trip pattern --------------------------------
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # irrational steps spread the values over [0, 1)
SILVER = math.sqrt(2.0) - 1.0


@pytree_dataclass()
class MemberStepTrip:
    """``frac(GOLDEN * member + SILVER * step)``: a deterministic value in ``[0, 1)``.

    Under ``Threshold(name, thr)`` it trips a fixed, mixed set of (member, step) pairs
    without random-number code to compile. It reads the *global* member index, so a
    sharded run that lost track of which members a device holds would log other trips.
    """

    name: str = "member_step_trip"
    units = "1"
    long_name = "fractional part of a member/step hash"

    def __call__(self, context):
        dtype = context.proposal.dtype
        v = GOLDEN * context.member.astype(dtype) + SILVER * context.step.astype(dtype)
        return v - jnp.floor(v)


def expected_trips(batch: int, num_steps: int, threshold: float) -> np.ndarray:
    """``(B, N)`` bool: where :class:`MemberStepTrip` exceeds ``threshold`` (float64).

    For ``B = N = 8`` no value lies within 5e-4 of 0.3, 0.7 or 1.0, far above the
    float32 round-off (~1e-6) of the runner's own evaluation.
    """
    m, s = np.meshgrid(np.arange(batch), np.arange(num_steps), indexing="ij")
    return np.mod(GOLDEN * m + SILVER * s, 1.0) > threshold


BATCH, NUM_STEPS, THRESHOLD = 8, 8, 0.7
SWEEP = [0.3, 0.7, 1.0]


def ks_setup(mesh: Mesh | None, policy=None, indicators=()) -> tuple[HybridRunner, jax.Array]:
    """A runner on KS (32 points) with a cheap fake surrogate, and ``(BATCH, 1, 32)`` states.

    Default policy: ``Threshold`` on :class:`MemberStepTrip` at ``THRESHOLD``.
    """
    ks = KuramotoSivashinsky(num_points=32, domain_length=22.0, dt=1.0, num_substeps=4)
    if policy is None:
        policy, indicators = Threshold("member_step_trip", THRESHOLD), (MemberStepTrip(),)
    runner = HybridRunner(ks, Scaled(ks, 0.97), policy, indicators, chunk_size=4, mesh=mesh)
    x0 = jax.vmap(ks.initial_condition)(jax.random.split(jax.random.key(0), BATCH))
    return runner, x0


# ---- a solver brought by the user: exact linear advection ------------------------------------
# u_t + c u_x = 0 on a periodic box: a spectral phase shift is exact.
NUM_POINTS, LENGTH, VELOCITY, DT = 32, 2 * math.pi, 0.7, 0.1
GRID = Grid((NUM_POINTS,), (LENGTH,), ("x",), length_units="m")
MODES = (1, 3, 5)


def advect_step(state: jax.Array) -> jax.Array:
    """One exact advection step of DT: multiply mode k by exp(-i k c DT)."""
    u_hat = jnp.fft.rfft(state, axis=-1)
    k = 2 * math.pi * jnp.fft.rfftfreq(NUM_POINTS, LENGTH / NUM_POINTS).astype(u_hat.dtype)
    u_hat = u_hat * jnp.exp(-1j * k * VELOCITY * DT)
    return jnp.fft.irfft(u_hat, n=NUM_POINTS, axis=-1).astype(state.dtype)


def sine_init(key: jax.Array) -> jax.Array:
    """A band-limited random field: sum of a_m sin(m x) with a_m from the key."""
    amplitudes = hashed_uniform(key, (len(MODES),))
    x = jnp.asarray(GRID.coords()["x"], jnp.float32)
    return sum(a * jnp.sin(m * x) for a, m in zip(amplitudes, MODES, strict=True))[None]


def mean_diagnostics(state: jax.Array) -> dict[str, jax.Array]:
    return {"mass": jnp.mean(state)}


def advection(**kw) -> StepSolver:
    """The advection solver through ``solvers.from_step`` (``kw`` overrides its arguments)."""
    base = dict(
        variables=("u",),
        grid=GRID,
        dt=DT,
        units={"u": "m s-1"},
        long_names={"u": "advected field"},
        time_units="s",
        name="own_advection",
        diagnostics_fn=mean_diagnostics,
    )
    return from_step(advect_step, sine_init, **{**base, **kw})
