"""Every built-in layer and combinator (the one catalogue, fnnet.gradcheck.cases) on any leading
batch axes: the shape init declares is the shape apply returns (one example, (2,), (2, 3)), a
(2, 3) batch is a (6,) batch, and jax.vmap over single examples is the batch; for apply, forward
and backward alike, with gradients shaped and typed like the params. One jit per case."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import draws
from fnnet.gradcheck.cases import LAYER_CASES

IDS = [case.name for case in LAYER_CASES]
TOL = dict(rtol=2e-5, atol=2e-5)




def _relead(tree, old_lead_ndim, new_lead):
    # on the host: an eager reshape would compile a program for every shape
    return jax.tree.map(lambda a: np.reshape(np.asarray(a), tuple(new_lead) + a.shape[old_lead_ndim:]), tree)


def _fns(case, params, state, key):
    """apply, forward and backward of the case's layer in a fixed mode: the case's own for one
    batch, evaluation for the vmap/reshape comparisons of a stateful layer (batch statistics and
    dropout masks depend on the whole batch by definition)."""
    layer, train = case.layer, case.train and not fnnet.is_stateful(case.layer)

    def apply(x):
        return fnnet.apply_with_state(layer, params, state, x, key=key, train=train)[0]

    def forward(x):
        y, residuals, _ = fnnet.forward_with_state(layer, params, state, x, key=key, train=train)
        return y, residuals

    def backward(x, dy):
        return layer.backward(params, forward(x)[1], dy)

    return apply, forward, backward


def _floats(tree):
    return [a for a in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]


@pytest.mark.parametrize("case", LAYER_CASES, ids=IDS)
def test_two_batch_axes_equal_one_and_vmap_equals_batch(case):
    key = jax.random.PRNGKey(0)
    out_shape, params, state = case.init(key)
    apply, forward, backward = _fns(case, params, state, jax.random.PRNGKey(3))
    x23 = case.inputs(jax.random.PRNGKey(1), (2, 3))
    x6 = _relead(x23, 2, (6,))
    dy6 = jax.tree.map(lambda y: draws.normal(jax.random.PRNGKey(2), y.shape, y.dtype),
                       jax.eval_shape(apply, x6))
    dy23 = _relead(dy6, 1, (2, 3))

    @jax.jit  # one compilation per case: every path below, traced together
    def everything(x23, x6, dy23, dy6):
        one, two = jax.tree.map(lambda a: a[0], x6), jax.tree.map(lambda a: a[:2], x6)
        return {"y6": apply(x6), "y23": apply(x23), "forward23": forward(x23)[0], "back6": backward(x6, dy6),
                "two": apply(two), "train_one": fnnet.apply_with_state(case.layer, params, state, one, key=key,
                                                                      train=case.train)[0],
                "back23": backward(x23, dy23), "vmap_y": jax.vmap(apply)(x6),
                "vmap_forward": jax.vmap(lambda x: forward(x)[0])(x6), "vmap_back": jax.vmap(backward)(x6, dy6),
                "one": apply(one)}

    out = jax.device_get(everything(x23, x6, dy23, dy6))   # compared on the host: no eager program per shape
    y6, (dparams6, dx6), (dparams23, dx23) = out["y6"], out["back6"], out["back23"]
    # (a) the shape init declares is apply's, for one example and for (2,), (2, 3) and (6,) batches,
    # in the case's own mode too (BatchNorm in training: more than one value per channel in one example)
    is_shape = lambda s: isinstance(s, tuple) and all(isinstance(d, int) for d in s)  # noqa: E731
    for lead, y in (((), out["one"]), ((), out["train_one"]), ((2,), out["two"]), ((2, 3), out["y23"]),
                    ((6,), y6)):
        want = jax.tree.map(lambda s: tuple(lead) + tuple(s), out_shape, is_leaf=is_shape)
        got = jax.tree.map(lambda a: a.shape, y)
        assert got == want, f"{case.name}: batch {lead}: init declares {out_shape}, apply gives {got}"
    # the contract: dparams shaped and typed like the params, dx like x (float0 for token ids)
    assert jax.tree.structure(dparams6) == jax.tree.structure(params), case.name
    chex.assert_trees_all_equal_shapes_and_dtypes(dparams6, params)
    if not case.vocab:
        chex.assert_trees_all_equal_shapes_and_dtypes(dx6, x6)
    # (b) apply / forward / backward on a (2, 3) batch == on the (6,) batch
    chex.assert_trees_all_close(_relead(out["y23"], 2, (6,)), y6, **TOL)
    chex.assert_trees_all_close(_relead(out["forward23"], 2, (6,)), y6, **TOL)
    chex.assert_trees_all_close(dparams23, dparams6, **TOL)
    chex.assert_trees_all_close(_floats(_relead(dx23, 2, (6,))), _floats(dx6), **TOL)
    # (c) jax.vmap over single examples == the batch
    chex.assert_trees_all_close(out["vmap_y"], y6, **TOL)
    chex.assert_trees_all_close(out["vmap_forward"], y6, **TOL)
    dparams_each, dx_each = out["vmap_back"]
    chex.assert_trees_all_close(jax.tree.map(lambda g: g.sum(0), dparams_each), dparams6, **TOL)
    chex.assert_trees_all_close(_floats(dx_each), _floats(dx6), **TOL)
    # (a) one example: equal to its row of the batch
    chex.assert_trees_all_close(out["one"], jax.tree.map(lambda a: a[0], y6), **TOL)


def test_global_avg_pool_on_any_leading_axes_and_vmap():
    """The issue's repros: (3, 2, 5, 5, 4) images, one (8, 8, 1) image, and a vmapped CNN."""
    assert jax.eval_shape(fnnet.GlobalAvgPool.apply, (), jax.ShapeDtypeStruct((3, 2, 5, 5, 4), jnp.float32)).shape == (3, 2, 4)
    assert jax.eval_shape(fnnet.GlobalAvgPool.apply, (), jax.ShapeDtypeStruct((8, 8, 1), jnp.float32)).shape == (1,)
    model = fnnet.serial(fnnet.Conv(4, 3), fnnet.MaxPool(2), fnnet.GlobalAvgPool, fnnet.Dense(3))
    _, params = model.init(jax.random.PRNGKey(0), (8, 8, 1))
    images = draws.normal(jax.random.PRNGKey(1), (5, 8, 8, 1))
    each, batch = jax.jit(lambda p, v: (jax.vmap(model.apply, in_axes=(None, 0))(p, v), model.apply(p, v)))(params, images)
    assert each.shape == (5, 3)
    np.testing.assert_allclose(each, batch, rtol=1e-5, atol=1e-6)


def test_fan_in_concat_axis_is_an_axis_of_one_example():
    join = fnnet.serial(fnnet.FanOut(2), fnnet.parallel(fnnet.Identity, fnnet.Identity), fnnet.FanInConcat(1))
    out_shape, params = join.init(jax.random.PRNGKey(0), (4, 5, 3))
    assert out_shape == (4, 10, 3)
    x = jnp.ones((2, 4, 5, 3))
    assert join.apply(params, x).shape == (2, 4, 10, 3)
    assert jax.vmap(join.apply, in_axes=(None, 0))(params, x).shape == (2, 4, 10, 3)
    assert fnnet.FanInConcat(0).init(None, ((4, 5), (1, 5)))[0] == (5, 5)
    with pytest.raises(ValueError, match=r"FanInConcat\(3\): .*axis inside it"):
        fnnet.FanInConcat(3).init(None, ((4, 5), (4, 5)))


def test_flatten_and_reshape_with_init_params_on_one_example_and_many_axes():
    _, params = fnnet.Reshape((2, 3)).init(None, (6,))
    assert fnnet.Reshape((2, 3)).apply(params, jnp.ones(6)).shape == (2, 3)
    assert fnnet.Reshape((2, 3)).apply(params, jnp.ones((4, 5, 6))).shape == (4, 5, 2, 3)
    _, params = fnnet.Flatten.init(None, (28, 28, 1))
    assert fnnet.Flatten.apply(params, jnp.ones((28, 28, 1))).shape == (784,)
    assert fnnet.Flatten.apply(params, jnp.ones((0, 28, 28, 1))).shape == (0, 784)
    with pytest.raises(ValueError, match=r"Flatten: expected input of shape \(\.\.\., 28, 28, 1\)"):
        fnnet.Flatten.apply(params, jnp.ones((2, 27, 28, 1)))
    with pytest.raises(ValueError, match=r"Reshape\(\(2, 3\)\): .*one leading batch axis.*x\[None\]"):
        fnnet.Reshape((2, 3)).apply((), jnp.ones(6))


# BatchNorm: one image has many values per channel ------------------------------------------------------

def test_batchnorm_trains_on_one_image_but_not_on_one_value_per_channel():
    bn = fnnet.BatchNorm()
    _, params, state = fnnet.init_with_state(bn, jax.random.PRNGKey(0), (8, 8, 4))
    y, _ = fnnet.apply_with_state(bn, params, state, jnp.arange(256.0).reshape(1, 8, 8, 4), train=True)
    assert y.shape == (1, 8, 8, 4) and bool(jnp.all(jnp.isfinite(y)))
    _, params, state = fnnet.init_with_state(bn, jax.random.PRNGKey(0), (4,))
    with pytest.raises(ValueError, match="more than one value per channel"):
        fnnet.apply_with_state(bn, params, state, jnp.ones((1, 4)), train=True)
    assert "more than one value per channel" in fnnet.BatchNorm.__doc__
