"""The one pytree mechanism (``solvers.pytree``): data versus meta, keys, no ``__init__``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers.pytree import pytree_dataclass, register_fields


class _Scaled:
    built = 0

    def __init__(self, factor, name):
        type(self).built += 1
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        self.factor, self.name = factor, name

    def __call__(self, x):
        return self.factor * x


register_fields(_Scaled, ("factor",), ("name",))


def test_data_fields_are_leaves_meta_fields_shape_the_treedef():
    a, b = _Scaled(jnp.float32(2.0), "a"), _Scaled(jnp.float32(3.0), "a")
    leaves, treedef = jax.tree_util.tree_flatten(a)
    assert len(leaves) == 1 and float(leaves[0]) == 2.0
    assert jax.tree_util.tree_structure(b) == treedef
    assert jax.tree_util.tree_structure(_Scaled(1.0, "other")) != treedef


def test_unflatten_does_not_run_init_and_jit_traces_once():
    traces = []

    @jax.jit
    def apply(s, x):
        traces.append(1)
        return s(x)

    built = _Scaled.built
    out = [apply(_Scaled(jnp.float32(f), "s"), jnp.ones(3)) for f in (2.0, 5.0)]
    np.testing.assert_array_equal(out[1], np.full(3, 5.0, np.float32))
    assert len(traces) == 1  # data only: one program for both factors
    assert _Scaled.built == built + 2  # only the two explicit constructions
    mapped = jax.tree.map(lambda x: x + 1, _Scaled(jnp.float32(1.0), "s"))
    assert isinstance(mapped, _Scaled) and mapped.name == "s" and float(mapped.factor) == 2.0


def test_leaves_are_named_by_attribute():
    @pytree_dataclass(data_fields=("solver", "scale"))
    class Outer:
        solver: object
        scale: float
        label: str

    tree = Outer(_Scaled(jnp.float32(1.0), "s"), 0.5, "x")
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
    assert paths == [".solver.factor", ".scale"]


def test_gradients_flow_through_data_fields():
    @pytree_dataclass(data_fields="all")
    class Pair:
        a: jax.Array
        b: jax.Array

    grads = jax.grad(lambda p: p.a * p.b)(Pair(jnp.float32(2.0), jnp.float32(3.0)))
    assert (float(grads.a), float(grads.b)) == (3.0, 2.0)


def test_default_has_no_data_fields():
    @pytree_dataclass()
    class Policy:
        k: int

    assert jax.tree_util.tree_leaves(Policy(3)) == []


def test_bad_field_names_are_refused():
    with pytest.raises(TypeError, match=r"data_fields \['nope'\] are not fields"):

        @pytree_dataclass(data_fields=("nope",))
        class Bad:
            a: int

    class Twice:
        pass

    with pytest.raises(TypeError, match=r"Twice: pytree fields \['a'\] are named more than once"):
        register_fields(Twice, ("a",), ("a",))
