"""The solver contract on every registered solver: jit/vmap consistency, tracing, rollout,
dtype, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import (
    AdvectionDiffusion,
    Burgers,
    KuramotoSivashinsky,
    Lorenz96,
    NavierStokes2D,
    NonFiniteError,
    ShallowWater2D,
    available,
    build_solver,
    check_finite,
    first_nonfinite_frame,
    get_solver_class,
    rollout,
)


def _ks(**kw):
    return KuramotoSivashinsky(
        **{"num_points": 32, "domain_length": 22.0, "dt": 0.5, "num_substeps": 2, **kw}
    )


def _burgers(**kw):
    return Burgers(**{"num_points": 32, "viscosity": 0.1, "dt": 0.1, "num_substeps": 2, **kw})


def _advection(**kw):
    return AdvectionDiffusion(**{"num_points": 32, "dt": 0.02, **kw})


def _advection_2d(**kw):
    return AdvectionDiffusion(**{"num_points": (16, 16), "velocity": (0.5, 1.0), "dt": 0.02, **kw})


def _lorenz96(**kw):
    return Lorenz96(**{"num_sites": 16, "dt": 0.05, "num_substeps": 5, **kw})


def _navier_stokes(**kw):
    return NavierStokes2D(**{"num_points": 16, "dt": 0.25, "num_substeps": 4, **kw})


def _shallow_water(**kw):
    return ShallowWater2D(**{"num_points": 16, "dt": 0.1, "num_substeps": 2, **kw})


MAKERS = {
    "ks": _ks,
    "burgers": _burgers,
    "advection_diffusion": _advection,
    "advection_diffusion_2d": _advection_2d,
    "lorenz96": _lorenz96,
    "navier_stokes_2d": _navier_stokes,
    "shallow_water": _shallow_water,
}
PRECISIONS = ["float32", "float64"]


@pytest.fixture(params=sorted(MAKERS))
def make(request):
    return MAKERS[request.param]


def test_every_registered_solver_runs_the_contract():
    covered = {type(m()) for m in MAKERS.values()}
    assert {get_solver_class(name) for name in available()} <= covered


def _round_off(x, ulps: int = 64) -> float:
    """An absolute tolerance of ``ulps`` float64 ulps of the field's scale ``max |x|``.

    FFT round-off is relative to the largest coefficient, not to each grid value, so values
    near zero of a field with ``max |x| = 14`` (Navier-Stokes vorticity) differ by a few
    ulps of 14, not of themselves.
    """
    return ulps * float(np.finfo(np.float64).eps) * max(1.0, float(np.max(np.abs(x))))


def test_jit_matches_no_jit(x64, make):
    solver = make(precision="float64")
    u0 = solver.initial_condition(jax.random.key(0))
    with jax.disable_jit():
        eager = solver.advance(u0)
    jitted = jax.jit(type(solver).advance)(solver, u0)
    # Same operations; XLA may fuse or reorder a few: differences are a few ulps.
    np.testing.assert_allclose(jitted, eager, rtol=1e-13, atol=_round_off(eager))


def test_vmap_matches_a_loop(x64, make):
    solver = make(precision="float64")
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(3))
    batch = jax.jit(jax.vmap(solver.initial_condition))(keys)
    draw = jax.jit(type(solver).initial_condition)
    for i, key in enumerate(keys):  # per-sample keys regenerate each member of the batch
        # vmapped and single draws may use different FFT kernels: a few ulps.
        np.testing.assert_allclose(
            batch[i], draw(solver, key), rtol=1e-14, atol=_round_off(batch[i], 8)
        )
    out = jax.jit(jax.vmap(solver.advance))(batch)
    advance = jax.jit(solver.advance)  # one wrapper: one compilation for the loop
    loop = jnp.stack([advance(u) for u in batch])
    # Batched and single FFTs may use different kernels: a few ulps.
    np.testing.assert_allclose(out, loop, rtol=1e-13, atol=_round_off(loop))


def test_no_retracing_across_parameter_values(make):
    traces = []

    @jax.jit
    def run(solver, u):
        traces.append(1)  # Python side effect: runs only while tracing
        return solver.advance(u)

    first = make()
    u0 = first.initial_condition(jax.random.key(0))
    if isinstance(first, Burgers):
        second = make(viscosity=0.07)  # a physical parameter
    else:
        second = make(dt=0.8 * first.dt)  # dt is a leaf of every solver
    a = run(first, u0)
    b = run(second, u0)
    assert len(traces) == 1
    assert not np.allclose(a, b)  # the new value was really used


def test_rollout_shape_and_equivalence_to_repeated_advance(x64, make):
    solver = make(precision="float64")
    u0 = solver.initial_condition(jax.random.key(2))
    frames = rollout(solver, u0, 6)
    assert frames.shape == (7, *solver.state_shape)
    assert rollout(solver, u0, 6, include_initial=False).shape == (6, *solver.state_shape)
    np.testing.assert_array_equal(frames[0], u0)
    u = u0
    advance = jax.jit(solver.advance)
    for _ in range(6):
        u = advance(u)
    # The same jitted step inside and outside a scan: identical up to fusion differences.
    np.testing.assert_allclose(frames[-1], u, rtol=1e-13, atol=_round_off(u))


def test_check_finite_reports_sample_frame_and_time():
    dt = 0.25
    frames = np.zeros((4, 8, 1, 16))
    frames[2, 5, 0, 3] = np.nan
    frames[3, 7, 0, 0] = np.inf  # a later sample: the first bad one is reported
    with pytest.raises(NonFiniteError) as info:
        check_finite(frames, dt=dt, batched=True)
    err = info.value
    assert (err.sample, err.frame, err.time) == (2, 5, 5 * dt)
    assert "trajectory 2" in str(err) and "frame 5" in str(err) and "t = 1.25" in str(err)
    with pytest.raises(NonFiniteError) as info:
        check_finite(frames[2], dt=dt, sample_offset=10, t0=1.0)
    assert (info.value.sample, info.value.frame, info.value.time) == (10, 5, 1.0 + 5 * dt)
    check_finite(np.ones((3, 1, 4)), dt=dt)  # finite frames pass silently
    # The pure index is usable inside jit.
    idx = jax.jit(lambda f: first_nonfinite_frame(f, batched=True))(jnp.asarray(frames))
    np.testing.assert_array_equal(idx, [-1, -1, 5, 7])


def test_solvers_are_immutable(make):
    solver = make()
    with pytest.raises(AttributeError, match="immutable"):
        solver.num_substeps = 3
    with pytest.raises(AttributeError, match="immutable"):
        del solver.grid


def test_pytree_round_trip_keeps_the_solver(make):
    solver = make()
    leaves, treedef = jax.tree.flatten(solver)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert type(rebuilt) is type(solver) and rebuilt.config() == solver.config()


def test_build_solver_names_a_misspelled_key():
    with pytest.raises(TypeError, match="viscosty"):
        build_solver("burgers", viscosty=0.1)
    with pytest.raises(KeyError, match="burger'.*available"):
        build_solver("burger")
    assert isinstance(build_solver("burgers", num_points=32, viscosity=0.1), Burgers)


def test_unstable_step_raises_naming_the_limit():
    with pytest.raises(ValueError, match=r"stability limit 1 .*num_substeps >= 3"):
        KuramotoSivashinsky(num_points=32, dt=3.0, num_substeps=1)
    # Burgers: dx = 2 pi / 32 = 0.196; Courant 1 at amplitude 2 means h <= 0.0982.
    with pytest.raises(ValueError, match=r"stability limit 0\.09817 .*Courant"):
        Burgers(num_points=32, dt=0.2, num_substeps=1, initial_amplitude=2.0)


def test_float64_without_x64_raises(make):
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="precision='float64' needs 64-bit JAX"):
            make(precision="float64")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_dtype_in_equals_dtype_out(x64, make, precision):
    solver = make(precision=precision)
    cls = type(solver)
    u0 = jax.jit(cls.initial_condition)(solver, jax.random.key(0))
    assert u0.dtype == jnp.dtype(precision) and u0.shape == solver.state_shape
    assert jax.jit(cls.step)(solver, u0).dtype == u0.dtype
    assert rollout(solver, u0, 2).dtype == u0.dtype  # rollout calls advance
    assert all(v.dtype == u0.dtype for v in jax.jit(cls.diagnostics)(solver, u0).values())


def test_gradient_through_a_short_rollout_matches_finite_differences(x64, make):
    solver = make(precision="float64")
    u0 = solver.initial_condition(jax.random.key(4))
    direction = solver.initial_condition(jax.random.key(5))

    def loss(u):
        return jnp.sum(rollout(solver, u, 3)[-1] ** 2)

    grad = jax.jit(jax.grad(loss))(u0)
    eps = 1e-6
    fd = (loss(u0 + eps * direction) - loss(u0 - eps * direction)) / (2 * eps)
    # Central differences: O(eps^2) truncation ~1e-12 plus round-off eps_mach * loss / eps.
    np.testing.assert_allclose(jnp.vdot(grad, direction), fd, rtol=1e-7, atol=1e-9)


def test_wrong_state_shape_is_named(make):
    solver = make()
    shape = solver.state_shape
    wrong = (*shape[:-1], shape[-1] // 2)
    with pytest.raises(
        ValueError, match=rf"state has shape \({wrong[0]}, .*expected \({shape[0]}, "
    ):
        solver.advance(jnp.zeros(wrong))
