"""Every solver config in configs/solver/ loads, names exactly its constructor's keywords,
builds a solver through Hydra and takes a finite step."""

import inspect
from pathlib import Path

import hydra.utils
import jax
import jax.numpy as jnp
import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "solver"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SMALL = 32  # points per axis for the smoke step: keeps every config fast


def _small_grid(cfg: DictConfig) -> dict:
    """Override ``num_points`` (if the solver has one) with a small grid of the same rank."""
    if "num_points" not in cfg:
        return {}
    n = cfg.num_points
    if isinstance(n, ListConfig):
        return {"num_points": [min(int(v), SMALL) for v in n]}
    return {"num_points": min(int(n), SMALL)}


def test_the_folder_holds_the_expected_configs():
    names = {p.stem for p in CONFIGS}
    assert {
        "advection_diffusion",
        "advection_diffusion_2d",
        "burgers",
        "kuramoto_sivashinsky",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_keys_are_exactly_the_constructor_keywords(path):
    cfg = OmegaConf.load(path)
    cls = hydra.utils.get_class(cfg._target_)
    params = inspect.signature(cls.__init__).parameters
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    expected = {k for k, p in params.items() if k != "self" and p.kind in keyword_kinds}
    keys = set(cfg) - {"_target_"}
    assert keys == expected, (
        f"{path.name}: unknown keys {sorted(keys - expected)}, missing keys {sorted(expected - keys)}"
    )


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_a_solver_that_steps(path):
    cfg = OmegaConf.load(path)
    solver = hydra.utils.instantiate(cfg, **_small_grid(cfg))
    assert type(solver).__name__ == cfg._target_.rsplit(".", 1)[-1]
    assert solver.dtype == jnp.dtype(cfg.precision)
    state = jax.jit(type(solver).initial_condition)(solver, jax.random.key(0))
    out = jax.jit(type(solver).advance)(solver, state)
    assert out.shape == state.shape == solver.state_shape
    assert out.dtype == state.dtype
    assert bool(jnp.all(jnp.isfinite(out)))
    assert not bool(jnp.all(out == state))  # it moved
    # The solver's own description rebuilds it, with the same keys as the file.
    config = solver.config()
    assert set(config) == set(cfg) - {"_target_"}
    assert type(solver)(**config).config() == config


def test_a_misspelled_key_fails_at_build_time_naming_it():
    cfg = OmegaConf.load(CONFIG_DIR / "burgers.yaml")
    cfg.viscosty = cfg.pop("viscosity")
    with pytest.raises(Exception, match="viscosty"):
        hydra.utils.instantiate(cfg)
