"""Classical solvers: immutable, jit- and vmap-friendly steppers for periodic PDEs and ODEs.

Every solver advances a state ``(C, *spatial)`` by its output interval ``dt``; see
:class:`solvers.base.Solver` for the contract.
"""

from solvers.base import Solver
from solvers.grid import Grid
from solvers.kuramoto_sivashinsky import KuramotoSivashinsky
from solvers.registry import available, build_solver, get_solver_class, register
from solvers.rollout import NonFiniteError, check_finite, first_nonfinite_frame, rollout

register(KuramotoSivashinsky)

__all__ = [
    "Grid",
    "KuramotoSivashinsky",
    "NonFiniteError",
    "Solver",
    "available",
    "build_solver",
    "check_finite",
    "first_nonfinite_frame",
    "get_solver_class",
    "register",
    "rollout",
]
__version__ = "0.1.0"
