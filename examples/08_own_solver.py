"""Bring your own solver: a pure step function (or an exponax stepper) as a solver.

Wraps a spectral step of the 1D advection-diffusion equation

    u_t + c u_x = nu u_xx   on [0, 2 pi), periodic,

(exact for each Fourier mode) with ``solvers.from_step``, checks it against the exact
solution, generates a dataset with it, validates it (passing the solver: functions defined
in a script cannot be re-imported from the dataset's provenance), and runs the hybrid
runner with the solver against a deliberately damped copy. With ``exponax`` installed the
same goes for ``solvers.from_exponax(exponax.stepper.Advection(...))``.

    python examples/08_own_solver.py [--out outputs/examples] [--tiny]

For datasets that other processes can re-validate, put ``advect_diffuse`` and
``random_modes`` in an importable module and call ``solvers.trust_module("mymodule")``.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from _setup import parse

import datasets
import solvers
from solvers.pytree import register_fields
from surrogate.hybrid import EveryK, HybridRunner

NUM_POINTS, LENGTH = 64, 2 * math.pi
VELOCITY, VISCOSITY, DT = 1.0, 0.05, 0.1  # length/time, length^2/time, time
MAX_MODE = 6


def advect_diffuse(u: jax.Array) -> jax.Array:
    """One exact step of DT for each Fourier mode: u_hat *= exp((-i k c - nu k^2) DT)."""
    k = 2 * math.pi * jnp.fft.rfftfreq(NUM_POINTS, LENGTH / NUM_POINTS)
    u_hat = jnp.fft.rfft(u, axis=-1) * jnp.exp((-1j * k * VELOCITY - VISCOSITY * k**2) * DT)
    return jnp.fft.irfft(u_hat, n=NUM_POINTS, axis=-1).astype(u.dtype)


def random_modes(key: jax.Array) -> jax.Array:
    """Random amplitudes on modes 1..MAX_MODE, shape (1, NUM_POINTS)."""
    a, b = jax.random.normal(key, (2, MAX_MODE)) / jnp.arange(1, MAX_MODE + 1)
    x = jnp.arange(NUM_POINTS) * (LENGTH / NUM_POINTS)
    m = jnp.arange(1, MAX_MODE + 1)[:, None]
    return (a[:, None] * jnp.cos(m * x) + b[:, None] * jnp.sin(m * x)).sum(0)[None]


def make_solver() -> solvers.StepSolver:
    grid = solvers.Grid((NUM_POINTS,), (LENGTH,), ("x",), length_units="m")
    return solvers.from_step(
        advect_diffuse,
        random_modes,
        variables=("u",),
        grid=grid,
        dt=DT,
        units={"u": "K"},
        long_names={"u": "temperature"},
        time_units="s",
        name="advection_diffusion_spectral",
        diagnostics_fn=lambda u: {"mass": jnp.mean(u)},
    )


class Damped:
    """A stand-in surrogate: the solver's step, then 2 % damping (a pytree stepper)."""

    def __init__(self, solver):
        self.solver = solver

    def __call__(self, u):
        return 0.98 * self.solver(u)

    def __getattr__(self, name):  # dt, variables, grid, ... from the solver
        return getattr(self.solver, name)


register_fields(Damped, data_fields=("solver",))


def main(argv=None) -> None:
    args = parse(__doc__.splitlines()[0], argv)
    solver = make_solver()
    u0 = solver.initial_condition(jax.random.key(0))
    steps = 10
    u = solvers.rollout(solver, u0, steps)[-1]
    # Exact: shift by c t and damp mode k by exp(-nu k^2 t); here via the same FFT in numpy.
    k = np.fft.rfftfreq(NUM_POINTS, LENGTH / NUM_POINTS) * 2 * np.pi
    t = steps * DT
    exact = np.fft.irfft(
        np.fft.rfft(np.asarray(u0, np.float64))
        * np.exp((-1j * k * VELOCITY - VISCOSITY * k**2) * t),
        n=NUM_POINTS,
    )
    err = float(np.abs(np.asarray(u) - exact).max())
    print(f"{solver.name}: max |u - exact| after {steps} steps = {err:.2e}")

    path = datasets.generate(
        solver,
        args.out / "own_solver",
        num_trajectories=4 if args.tiny else 64,
        num_frames=6 if args.tiny else 50,
        trajectories_per_shard=4 if args.tiny else 16,
        progress=not args.tiny,
    )  # logs a warning: the functions live in this script (module __main__)
    report = datasets.validate(path, solver=solver)
    print(report)
    if not report.passed:
        raise SystemExit(1)

    runner = HybridRunner(solver, Damped(solver), EveryK(3))
    x0 = jnp.stack([solver.initial_condition(jax.random.key(i)) for i in range(4)])
    result = runner.run(x0, 12)
    summary = {"max_error_vs_exact": err, "solver_fraction": result.solver_fraction}
    if _has_exponax():
        summary["exponax"] = exponax_demo()
    (args.out / "08_own_solver.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


def _has_exponax() -> bool:
    try:
        import exponax  # noqa: F401
    except ImportError:
        return False
    return True


def exponax_demo() -> dict:
    """An exponax stepper as a solver: grid and dt are read from it."""
    import exponax

    stepper = exponax.stepper.Advection(1, LENGTH, NUM_POINTS, DT, velocity=VELOCITY)
    ic = exponax.ic.RandomTruncatedFourierSeries(1, cutoff=MAX_MODE)
    solver = solvers.from_exponax(stepper, variables=("u",), ic=ic, units={"u": "K"})
    u0 = solver.initial_condition(jax.random.key(0))
    u = jax.jit(lambda s, x: solvers.rollout(s, x, 10))(solver, u0)[-1]
    return {"name": solver.name, "dt": solver.dt, "mass_change": float(jnp.mean(u) - jnp.mean(u0))}


if __name__ == "__main__":
    main()
