"""The learned correction: a coarse solver interval plus a network, trained through the solver."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import NavierStokes2D, rollout
from solvers.resolution import at_resolution, spectral_resample
from surrogate.correction import (
    LearnedCorrection,
    correction_statistics,
    init_correction,
    load_stepper,
    save_correction,
    zero_correction,
)
from surrogate.forecaster import ForecasterSpec
from surrogate.hybrid import AlwaysSurrogate, HybridRunner
from surrogate.train import TrainConfig, rollout_loss, train


class WindowLoader:
    """In-memory windows ``(B, 1, C, *sp) -> (B, K, C, *sp)``, pure in ``step``."""

    def __init__(self, data: np.ndarray, batch_size: int, horizon: int) -> None:
        self.data, self.batch_size, self.horizon = data, batch_size, horizon
        n, t = data.shape[:2]
        self.windows = [(i, s) for i in range(n) for s in range(t - horizon)]
        d = np.asarray(data, np.float64)
        axes = (0, 1, *range(3, d.ndim))

        class Stats:
            state_mean = d.mean(axis=axes)
            state_std = d.std(axis=axes)
            delta_mean = np.diff(d, axis=1).mean(axis=axes)
            delta_std = np.diff(d, axis=1).std(axis=axes)

        self.statistics = Stats

    def batch(self, step: int):
        per = len(self.windows) // self.batch_size
        epoch, pos = divmod(step, per)
        order = np.random.default_rng([0, epoch]).permutation(len(self.windows))
        picked = [
            self.windows[j] for j in order[pos * self.batch_size : (pos + 1) * self.batch_size]
        ]
        x = np.stack([self.data[i, s : s + 1] for i, s in picked])
        y = np.stack([self.data[i, s + 1 : s + 1 + self.horizon] for i, s in picked])
        return x, y


@pytest.fixture(scope="module")
def setup():
    """Fine 32^2 Kolmogorov trajectories projected onto 16^2, and the 16^2 solver."""
    fine = NavierStokes2D(num_points=32, dt=0.5, num_substeps=15, viscosity=1e-2)
    keys = jax.random.split(jax.random.key(3), 4)
    x0 = jax.vmap(fine.initial_condition)(keys)
    traj = jax.vmap(lambda x: rollout(fine, x, 9))(x0)  # (4, 10, 1, 32, 32)
    data = np.asarray(spectral_resample(traj, (16, 16)))
    coarse = at_resolution(fine, 16)
    spec = ForecasterSpec.create(
        model_name="fno",
        model_kwargs={"width": 8, "modes": 4, "num_layers": 1},
        variables=coarse.variables,
        units=coarse.units,
        grid=coarse.grid.to_dict(),
        dt=coarse.dt,
        conserved=coarse.conserved_means,
    )
    loader = WindowLoader(data, batch_size=4, horizon=2)
    norm = correction_statistics(coarse, loader, num_batches=2)
    return coarse, spec, loader, norm, data


def test_zero_network_is_the_coarse_solver_bit_for_bit(setup):
    coarse, spec, loader, norm, data = setup
    c = zero_correction(init_correction(coarse, spec, norm))
    x = jnp.asarray(data[:, 0])
    np.testing.assert_array_equal(
        np.asarray(jax.jit(jax.vmap(c))(x)), np.asarray(jax.jit(jax.vmap(coarse))(x))
    )


def test_correction_statistics_are_those_of_the_solver_residual(setup):
    coarse, spec, loader, norm, data = setup
    # A zero mean makes a zero network output the solver itself.
    np.testing.assert_array_equal(np.asarray(norm.delta_mean), 0.0)
    x, y = loader.batch(0)
    residual = np.asarray(y[:, 0] - jax.vmap(coarse)(jnp.asarray(x[:, 0])))
    assert 0 < float(norm.delta_std[0]) < 10 * residual.std()


def test_stepper_contract(setup):
    coarse, spec, loader, norm, data = setup
    c = init_correction(coarse, spec, norm, seed=1)
    x = jnp.asarray(data[:2, 0])
    assert c.state_shape == coarse.state_shape and c.dt == coarse.dt
    assert c.variables == coarse.variables and c.grid == coarse.grid
    one = jax.jit(c)(x[0])
    assert one.dtype == x.dtype and one.shape == x[0].shape
    batched = jax.jit(jax.vmap(c))(x)
    looped = jnp.stack([jax.jit(c)(s) for s in x])
    # why: vmapped vs single FFTs and matmuls may sum in another order (float32 round-off
    # of a field of size ~5, through ~30 FFT stages).
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-5, atol=1e-4)
    with jax.disable_jit():
        eager = c(x[0])
    np.testing.assert_allclose(np.asarray(eager), np.asarray(one), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="expected"):
        c(jnp.zeros((1, 8, 8), x.dtype))
    other = NavierStokes2D(num_points=24, dt=0.5, num_substeps=15, viscosity=1e-2)
    with pytest.raises(ValueError, match="num_points"):
        LearnedCorrection(other, c.forecaster)


def test_gradient_through_the_unrolled_solver_matches_finite_differences(setup):
    coarse, spec, loader, norm, data = setup
    with jax.enable_x64(True):
        solver64 = type(coarse)(**{**coarse.config(), "precision": "float64"})
        c = init_correction(solver64, spec, norm, seed=2)
        c = c.replace(params=jax.tree.map(lambda p: p.astype(jnp.float64), c.params))
        x, y = loader.batch(0)
        x, y = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)

        def loss(p):  # two intervals unrolled through ETDRK4 and the network, in float64
            one = c.advance_windows(x, p)
            two = c.advance_windows(one[:, None], p)
            return jnp.mean((one - y[:, 0]) ** 2) + jnp.mean((two - y[:, 1]) ** 2)

        loss = jax.jit(loss)
        grads = jax.jit(jax.grad(loss))(c.params)
        flat, unravel = jax.flatten_util.ravel_pytree(c.params)
        g = jax.flatten_util.ravel_pytree(grads)[0]
        direction = jax.random.normal(jax.random.key(5), flat.shape, flat.dtype)
        eps = 1e-5
        fd = (loss(unravel(flat + eps * direction)) - loss(unravel(flat - eps * direction))) / (
            2 * eps
        )
        # why: central differences in float64 err by O(eps^2 f''') ~ 1e-10 plus round-off
        # O(1e-16 f / eps) ~ 1e-11, relative to a directional derivative of order one.
        np.testing.assert_allclose(float(jnp.dot(g, direction)), float(fd), rtol=1e-6, atol=1e-9)


def test_training_through_the_solver_lowers_the_loss(setup, tmp_path):
    coarse, spec, loader, norm, data = setup
    c = init_correction(coarse, spec, norm)
    cfg = TrainConfig(
        num_steps=40,
        batch_size=4,
        learning_rate=3e-3,
        warmup_steps=2,
        rollout_schedule=[[0, 1], [20, 2]],
        log_every=10,
        checkpoint_every=40,
        validate_every=0,
    )
    result = train(c, loader, cfg, tmp_path / "run", progress=False)
    assert isinstance(result.forecaster, LearnedCorrection)
    x, y = loader.batch(0)
    before = rollout_loss(
        c.params,
        c,
        x,
        y,
        jax.random.key(0),
        rollout_steps=1,
        pushforward=False,
        input_noise_std=0.0,
    )
    after = rollout_loss(
        result.forecaster.params,
        c,
        x,
        y,
        jax.random.key(0),
        rollout_steps=1,
        pushforward=False,
        input_noise_std=0.0,
    )
    assert float(after) < 0.8 * float(before)


def test_bundle_round_trip_rebuilds_the_solver(setup, tmp_path):
    coarse, spec, loader, norm, data = setup
    c = init_correction(coarse, spec, norm, seed=4)
    save_correction(c, tmp_path / "bundle")
    back = load_stepper(tmp_path / "bundle")
    assert isinstance(back, LearnedCorrection)
    assert back.solver.config() == coarse.config()
    x = jnp.asarray(data[0, 0])
    np.testing.assert_array_equal(np.asarray(jax.jit(back)(x)), np.asarray(jax.jit(c)(x)))


def test_hybrid_runner_and_evaluate_accept_a_correction(setup):
    from surrogate.evaluate import evaluate

    coarse, spec, loader, norm, data = setup
    c = init_correction(coarse, spec, norm, seed=5)
    runner = HybridRunner(coarse, c, AlwaysSurrogate())
    res = runner.run(jnp.asarray(data[:2, 0]), 3)
    expected = jax.vmap(lambda s: rollout(c, s, 3))(jnp.asarray(data[:2, 0]))
    np.testing.assert_array_equal(np.asarray(res.states), np.asarray(expected))
    ds = evaluate(c, data[:2, :4], solver=coarse, baselines=("persistence",), batch_size=2)
    assert np.all(np.isfinite(ds["rmse"].sel(model="surrogate").values))
