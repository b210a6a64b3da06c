"""solvers.resolution: spectral resampling is the L2 projection; at_resolution's step.

Spectral truncation from ``n`` to ``m`` points must (1) keep every field the coarse grid
can carry exactly, and (2) be the orthogonal (L2) projection onto those fields: the
residual ``u - refine(coarsen(u))`` is orthogonal to every coarse-band field. Both are
checked in float64, in 1D and 2D, for even and odd sizes.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from solvers.resolution import at_resolution, coarsen, refine, spectral_resample

EPS64 = float(np.finfo(np.float64).eps)
# (fine, coarse) point counts per axis: even/even, even/odd, odd/even, odd/odd.
PAIRS_1D = [(32, 16), (32, 15), (27, 12), (27, 9)]
PAIRS_2D = [((16, 12), (8, 7)), ((15, 18), (10, 9))]


def band_limited(num_points, coarse, rng, *, nyquist_cosine: bool = False):
    """A random real trigonometric polynomial with modes ``|k_a| < coarse_a / 2``.

    Returns a function of the grid size that samples it on that grid, on the unit box;
    with ``nyquist_cosine`` each even coarse axis also gets its Nyquist cosine (the only
    part of mode ``coarse_a / 2`` a real field on ``coarse_a`` points can carry).
    """
    ndim = len(coarse)
    modes = [np.arange(-((c - 1) // 2), (c - 1) // 2 + 1) for c in coarse]
    grid_k = np.meshgrid(*modes, indexing="ij")
    amp = rng.normal(size=grid_k[0].shape) + 1j * rng.normal(size=grid_k[0].shape)

    def sample(points):
        xs = np.meshgrid(*[np.arange(n) / n for n in points], indexing="ij")
        phase = sum(k[..., None] * x.reshape(-1) for k, x in zip(grid_k, xs, strict=True))
        u = np.real(np.sum(amp[..., None] * np.exp(2j * np.pi * phase), axis=tuple(range(ndim))))
        u = u.reshape(points)
        if nyquist_cosine:
            for a, c in enumerate(coarse):
                if c % 2 == 0:
                    u = u + 0.7 * np.cos(np.pi * c * xs[a])
        return u

    return sample


@pytest.mark.parametrize(("fine", "coarse"), [*[((n,), (m,)) for n, m in PAIRS_1D], *PAIRS_2D])
@pytest.mark.parametrize("nyquist_cosine", [False, True])
def test_band_limited_fields_are_kept_exactly(x64, fine, coarse, nyquist_cosine):
    rng = np.random.default_rng(sum(fine) + 7 * sum(coarse))
    field = band_limited(fine, coarse, rng, nyquist_cosine=nyquist_cosine)
    u_fine = jnp.asarray(field(fine))
    u_coarse = jnp.asarray(field(coarse))
    scale = float(np.abs(u_fine).max())
    # A few FFT passes over at most 270 points: round-off of order eps * log2(N) per pass.
    tol = 64 * EPS64 * scale
    # The coarse samples of the same polynomial...
    np.testing.assert_allclose(spectral_resample(u_fine, coarse), u_coarse, rtol=0, atol=tol)
    # ...and back: the refined coarse field is the fine one.
    np.testing.assert_allclose(spectral_resample(u_coarse, fine), u_fine, rtol=0, atol=tol)
    back = spectral_resample(spectral_resample(u_fine, coarse), fine)
    np.testing.assert_allclose(back, u_fine, rtol=0, atol=tol)
    assert back.dtype == jnp.float64


def coarse_band_basis(fine, coarse) -> np.ndarray:
    """Rows spanning the coarse-band fields on the fine grid: each coarse unit impulse, refined."""
    m = math.prod(coarse)
    impulses = jnp.eye(m, dtype=jnp.float64).reshape(m, *coarse)
    return np.asarray(spectral_resample(impulses, fine)).reshape(m, -1)


@pytest.mark.parametrize(("fine", "coarse"), [*[((n,), (m,)) for n, m in PAIRS_1D], *PAIRS_2D])
def test_truncation_is_the_l2_projection(x64, fine, coarse):
    rng = np.random.default_rng(math.prod(fine) + math.prod(coarse))
    u = jnp.asarray(rng.normal(size=(3, *fine)))  # white noise: every fine mode present
    projected = spectral_resample(spectral_resample(u, coarse), fine)
    residual = np.asarray(u - projected).reshape(3, -1)
    basis = coarse_band_basis(fine, coarse)
    assert np.linalg.matrix_rank(basis) == math.prod(coarse)  # the basis spans the band
    inner = basis @ residual.T  # (coarse modes, samples)
    bound = np.linalg.norm(basis, axis=1)[:, None] * np.linalg.norm(residual, axis=1)[None]
    # Each inner product is a sum of N products of FFT outputs: round-off ~ eps log2 N
    # relative to |b| |r|, with margin.
    assert np.all(np.abs(inner) <= 64 * EPS64 * bound), float(np.max(np.abs(inner) / bound))
    # Something was removed (white noise is not band-limited), and projecting is idempotent.
    assert np.linalg.norm(residual) > 0.1 * np.linalg.norm(np.asarray(u))
    again = spectral_resample(spectral_resample(projected, coarse), fine)
    np.testing.assert_allclose(again, projected, rtol=0, atol=64 * EPS64 * float(np.abs(u).max()))


def test_coarsen_and_refine_are_integer_factor_resampling(x64):
    u = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 8)))
    np.testing.assert_array_equal(coarsen(u, 4), spectral_resample(u, (3, 2)))
    np.testing.assert_array_equal(refine(u, 2), spectral_resample(u, (24, 16)))
    with pytest.raises(ValueError, match="factor must be an int >= 1 dividing"):
        coarsen(u, 5)
    # numpy integers count as ints, bools do not (True would silently mean 1)
    np.testing.assert_array_equal(refine(u, np.int64(2)), refine(u, 2))
    with pytest.raises(ValueError, match="factor must be an int >= 1 dividing"):
        coarsen(u, True)
    with pytest.raises(ValueError, match="refine: factor must be an int >= 1, got True"):
        refine(u, True)


def unstable(cls, config, num_substeps) -> bool:
    try:
        cls(**{**config, "num_substeps": num_substeps})
    except ValueError as e:
        assert "stability limit" in str(e)
        return True
    return False


@pytest.mark.parametrize(
    ("solver", "grids"),
    [
        (solvers.Burgers(num_points=64, num_substeps=40), [16, 64, 128, 200]),
        (solvers.NavierStokes2D(num_points=32, dt=0.2), [16, (16, 24), 48]),
        # KS's limit does not depend on the grid: every grid gets the same count.
        (solvers.KuramotoSivashinsky(num_points=64, dt=3.0, num_substeps=9), [32, 128]),
    ],
    ids=["burgers", "navier_stokes_2d", "kuramoto_sivashinsky"],
)
def test_at_resolution_picks_the_smallest_stable_num_substeps(solver, grids):
    cls = type(solver)
    for num_points in grids:
        other = at_resolution(solver, num_points)
        cfg = other.config()
        want = (num_points,) * solver.grid.ndim if isinstance(num_points, int) else num_points
        assert tuple(other.grid.num_points) == tuple(want)
        # Same physics, dt and precision: only the grid and the step count change.
        strip = ("num_points", "num_substeps")
        assert {k: v for k, v in cfg.items() if k not in strip} == {
            k: v for k, v in solver.config().items() if k not in strip
        }
        n = cfg["num_substeps"]
        assert n == 1 or unstable(cls, cfg, n - 1), (num_points, n)
    ks = at_resolution(solver, 32) if cls is solvers.KuramotoSivashinsky else None
    if ks is not None:
        assert ks.num_substeps == 3  # dt 3 over the internal-step limit 1


def test_at_resolution_explicit_num_substeps():
    fine = solvers.Burgers(num_points=64, num_substeps=40)
    assert at_resolution(fine, 32, num_substeps=30).num_substeps == 30
    with pytest.raises(ValueError, match="stability limit"):
        at_resolution(fine, 128, num_substeps=1)
    with pytest.raises(ValueError, match="has not 1 axes"):
        at_resolution(fine, (32, 32))


def test_coarsened_is_the_same_solver_with_the_same_internal_step():
    from solvers import Lorenz96, NavierStokes2D
    from solvers.resolution import coarsened

    ns = NavierStokes2D(num_points=32, dt=0.25, num_substeps=8)
    coarse = coarsened(ns, 2)
    assert coarse.config() == {**ns.config(), "num_points": 16}
    assert coarsened(ns, 2, num_substeps=None).num_substeps <= 8  # largest stable step
    with pytest.raises(ValueError, match=r"factor 3 does not divide the num_points \(32, 32\)"):
        coarsened(ns, 3)
    with pytest.raises(ValueError, match=r"factor must be an int >= 1, got 0"):
        coarsened(ns, 0)
    with pytest.raises(ValueError, match=r"Lorenz96.config\(\) has no 'num_points'"):
        coarsened(Lorenz96(num_sites=16), 2)
