"""Classical solvers: immutable, jit- and vmap-friendly steppers for periodic PDEs and ODEs.

Every solver advances a state ``(C, *spatial)`` by its output interval ``dt``; see
:class:`solvers.base.Solver` for the contract.
"""

from solvers.adapters import StepSolver, from_exponax, from_step
from solvers.advection_diffusion import AdvectionDiffusion
from solvers.allocator import retain_freed_memory
from solvers.base import Solver
from solvers.burgers import Burgers
from solvers.grid import Grid
from solvers.kuramoto_sivashinsky import KuramotoSivashinsky
from solvers.lorenz96 import Lorenz96
from solvers.navier_stokes import NavierStokes2D
from solvers.registry import (
    UntrustedCodeError,
    available,
    build_solver,
    get_solver_class,
    register,
    resolve_trusted,
    trust_module,
    trusted_modules,
)
from solvers.rollout import NonFiniteError, check_finite, first_nonfinite_frame, rollout
from solvers.shallow_water import ShallowWater2D
from solvers.stepper import Stepper, check_compatible, check_stepper

register(KuramotoSivashinsky)
register(Lorenz96)
register(ShallowWater2D)
register(AdvectionDiffusion)
register(Burgers)
register(NavierStokes2D)

__all__ = [
    "Stepper",
    "check_compatible",
    "check_stepper",
    "AdvectionDiffusion",
    "Burgers",
    "Grid",
    "KuramotoSivashinsky",
    "Lorenz96",
    "NavierStokes2D",
    "NonFiniteError",
    "ShallowWater2D",
    "Solver",
    "StepSolver",
    "UntrustedCodeError",
    "available",
    "build_solver",
    "check_finite",
    "first_nonfinite_frame",
    "from_exponax",
    "from_step",
    "get_solver_class",
    "register",
    "retain_freed_memory",
    "resolve_trusted",
    "rollout",
    "trust_module",
    "trusted_modules",
]
__version__ = "0.1.0"
