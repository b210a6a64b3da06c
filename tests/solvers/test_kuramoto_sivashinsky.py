"""Kuramoto-Sivashinsky: ETDRK4 order, conservation of the mean, chaos, float32 path."""

import jax
import jax.numpy as jnp
import numpy as np

from solvers import KuramotoSivashinsky, rollout

L, N = 22.0, 64  # the classical minimal chaotic box


def _smooth_initial_condition() -> jax.Array:
    """``cos(2 pi x / L) (1 + sin(2 pi x / L))``, the Kassam-Trefethen initial condition."""
    x = np.arange(N) * L / N
    return jnp.asarray(np.cos(2 * np.pi * x / L) * (1 + np.sin(2 * np.pi * x / L)))[None]


@jax.jit
def _integrate(solver: KuramotoSivashinsky, u: jax.Array, num_steps: jax.Array) -> jax.Array:
    """``num_steps`` calls of ``advance``; the count is traced, so one compile serves all."""
    return jax.lax.fori_loop(0, num_steps, lambda _, v: solver.advance(v), u)


def _solve(total_time: float, num_steps: int) -> np.ndarray:
    solver = KuramotoSivashinsky(
        num_points=N,
        domain_length=L,
        dt=total_time / num_steps,
        num_substeps=1,
        precision="float64",
    )
    return np.asarray(_integrate(solver, _smooth_initial_condition(), num_steps))


def test_etdrk4_is_fourth_order_in_time(x64):
    # Self-convergence against a 1024-step reference; its error (temporal plus round-off,
    # measured ~2e-13), gauged against a 2048-step run, must be far below the errors fitted
    # (4e-8 .. 1.5e-11).
    #
    # The step sizes are in ETDRK4's asymptotic regime, h |L| <~ 1 on the modes that carry
    # the error (modes 8..16, |L| = k^4 ~ 50..450). At larger steps, h |L| >> 1 there, and
    # the Cox-Matthews scheme shows its known stiff order reduction (Hochbruck & Ostermann
    # 2005): measured local slopes 2.7..3.4 for h = 1/8..1/64 over t = 2.
    total_time = 1.0
    reference = _solve(total_time, 1024)
    steps = np.array([40, 80, 160, 320])
    errors = np.array([np.max(np.abs(_solve(total_time, int(n)) - reference)) for n in steps])
    reference_error = np.max(np.abs(_solve(total_time, 2048) - reference))
    assert reference_error < 0.05 * errors[-1], (reference_error, errors)
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 3.6 <= slope <= 4.4, (slope, errors)


def test_mean_is_conserved_to_round_off(x64):
    solver = KuramotoSivashinsky(
        num_points=N, domain_length=L, dt=1.0, num_substeps=4, precision="float64"
    )
    u0 = solver.initial_condition(jax.random.key(5)) + 0.3
    frames = rollout(solver, u0, 100)
    mass = np.asarray(jax.vmap(solver.diagnostics)(frames)["mass"])
    # k = 0 has L = 0 and a zero nonlinear term (k factor), so only the O(eps) error of the
    # contour-computed exp(0) = 1 and FFT round-off act, over 400 steps.
    np.testing.assert_allclose(mass, 0.3, rtol=0, atol=1e-13)
    assert np.max(np.abs(frames)) > 1.0  # it did evolve to the attractor, far from u0


def test_nearby_initial_conditions_separate_exponentially(x64):
    solver = KuramotoSivashinsky(
        num_points=N, domain_length=L, dt=1.0, num_substeps=4, precision="float64"
    )
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(4))
    u0 = jax.vmap(solver.initial_condition)(keys)
    # Spin up onto the attractor, then perturb by 1e-8 in the first Fourier mode.
    on_attractor = jax.vmap(lambda u: rollout(solver, u, 200, include_initial=False)[-1])(u0)
    x = np.arange(N) * L / N
    perturbed = on_attractor + 1e-8 * jnp.asarray(np.cos(2 * np.pi * x / L))
    a = jax.vmap(lambda u: rollout(solver, u, 400))(on_attractor)
    b = jax.vmap(lambda u: rollout(solver, u, 400))(perturbed)
    distance = np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=(-2, -1)))  # (4, 401)
    assert np.all(distance[:, 0] < 1e-8)  # rms of the 1e-8 cosine is 7.1e-9
    # Saturation at the size of the attractor (|u| ~ 1..3): a 1e8-fold growth.
    assert np.all(distance[:, -100:].max(axis=1) > 0.1)
    # Exponential growth in between: fit log(distance) over 1e-7 < d < 1e-2 per sample. The
    # leading Lyapunov exponent for L = 22 is about 0.043-0.048 (Cvitanovic et al. 2010,
    # Edson et al. 2019); finite-time estimates here measured 0.027..0.057, mean 0.043.
    rates = []
    for d in distance:
        window = (d > 1e-7) & (d < 1e-2)
        assert window.sum() > 50, d  # a long exponential phase, not a jump
        t = np.arange(d.size)[window]
        rates.append(np.polyfit(t, np.log(d[window]), 1)[0])
    assert 0.02 <= np.mean(rates) <= 0.08, rates
    assert min(rates) > 0.01, rates


def test_float32_in_float32_out():
    solver = KuramotoSivashinsky(num_points=N, domain_length=L, dt=1.0, num_substeps=4)
    u0 = solver.initial_condition(jax.random.key(0))
    assert u0.dtype == jnp.float32
    frames = rollout(solver, u0, 50)
    assert frames.dtype == jnp.float32
    assert solver.step(u0).dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(frames)))
    assert solver._coefficients.f1.dtype == jnp.float32  # no silent upcast inside either
