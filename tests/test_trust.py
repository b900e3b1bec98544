"""Nothing the user holds is destroyed, nothing wrong goes through silently (issue 9)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import losses, train

MLP = fnnet.serial(fnnet.Dense(8), fnnet.Relu, fnnet.Dense(3))


def _blobs(n=64, d=4, classes=3, seed=0):
    kx, kw = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kx, (n, d))
    return x, jnp.argmax(x @ jax.random.normal(kw, (d, classes)), -1)


def _fit(*args, **kwargs):
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("batch_size", 16)
    kwargs.setdefault("key", jax.random.PRNGKey(0))
    kwargs.setdefault("verbose", False)
    return train.fit(*args, **kwargs)


def test_fit_never_consumes_the_callers_params():
    x, y = _blobs()
    _, p0 = MLP.init(jax.random.PRNGKey(1), (4,))
    before = jax.tree.map(np.asarray, p0)
    finals = {grad: _fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), params=p0,
                         grad=grad)[0] for grad in ("manual", "autodiff")}
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, p0), before)   # still alive, unchanged
    chex.assert_trees_all_close(finals["manual"].params, finals["autodiff"].params, rtol=1e-5, atol=1e-6)


def test_states_kept_in_on_epoch_end_stay_valid():
    x, y = _blobs()
    kept = []
    state, _ = _fit(MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3,
                    on_epoch_end=lambda epoch, state, history: kept.append(state))
    assert [int(s.step) for s in kept] == [4, 8, 12]
    for s in kept:  # earlier states were not donated by the later epochs
        assert np.isfinite(np.asarray(s.params[0]["w"])).all()
    chex.assert_trees_all_equal(kept[-1].params, state.params)


def test_labels_outside_the_classes_are_refused_before_training():
    x, y = _blobs()
    bad = y.at[5].set(3)
    for run in (lambda: _fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, bad)),
                lambda: train.evaluate(MLP, losses.softmax_cross_entropy,
                                       MLP.init(jax.random.PRNGKey(0), (4,))[1], (x, bad)),
                lambda: _fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), eval_data=(x, bad))):
        with pytest.raises(ValueError, match=r"labels in \[0, 3\).*has 3 at index 5"):
            run()
    with pytest.raises(ValueError, match=r"has -1 at index 0"):
        _fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y.at[0].set(-1)))


def test_logits_given_to_the_probability_loss_are_refused():
    x, y = _blobs()
    bits = (y == 0).astype(jnp.float32)[:, None]
    logits_model = fnnet.serial(fnnet.Dense(8), fnnet.Relu, fnnet.Dense(1))
    with pytest.raises(ValueError, match="takes probabilities in \\[0, 1\\].*sigmoid_binary_cross_entropy"):
        _fit(logits_model, losses.binary_cross_entropy, optax.sgd(0.1), (x, bits))
    prob_model = fnnet.serial(logits_model, fnnet.Sigmoid)
    _fit(prob_model, losses.binary_cross_entropy, optax.sgd(0.1), (x, bits))       # fine
    with pytest.raises(ValueError, match=r"needs targets in \[0, 1\]"):
        _fit(prob_model, losses.binary_cross_entropy, optax.sgd(0.1), (x, 2 * bits - 1))
    with pytest.raises(ValueError, match=r"needs targets in \[0, 1\]"):
        _fit(logits_model, losses.sigmoid_binary_cross_entropy, optax.sgd(0.1), (x, 2 * bits - 1))


def test_nan_or_inf_in_data_is_refused():
    x, y = _blobs()
    with pytest.raises(ValueError, match=r"fit \(eval_data\): x has 1 NaN or infinite value\(s\), the first "
                                         r"at index \(3, 1\)"):
        _fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), eval_data=(x.at[3, 1].set(jnp.nan), y))
    with pytest.raises(ValueError, match="fit: x has 1 NaN"):
        _fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (np.asarray(x.at[0, 0].set(jnp.inf)), y))
    with pytest.raises(ValueError, match="evaluate: y has"):
        train.evaluate(fnnet.Dense(1), losses.mse, fnnet.Dense(1).init(jax.random.PRNGKey(0), (4,))[1],
                       (x, jnp.full((64, 1), jnp.nan)))


def test_params_made_with_the_batch_axis_are_explained():
    model = fnnet.serial(fnnet.Flatten, fnnet.Dense(3))
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 2, 5))
    y = jnp.zeros(32, jnp.int32)
    _, wrong = model.init(jax.random.PRNGKey(0), x.shape)          # the batch axis included
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(3\)\), param 'w' expected shape \(10, 3\).*"
                                         r"batch axis in in_shape"):
        _fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), params=wrong)


def test_a_loss_says_what_its_output_means():
    x, y = _blobs()
    mine = fnnet.Loss(losses.softmax_cross_entropy.value, losses.softmax_cross_entropy.grad,
                      kind="multiclass_logits", name="my_ce")
    state, history = _fit(MLP, mine, optax.adam(1e-2), (x, y), eval_data=(x, y))
    assert 0 < history.train_accuracy[-1] <= 1                 # the kind makes fit count accuracy
    assert history.eval_accuracy[-1] == train.evaluate(MLP, mine, state.params, (x, y))["accuracy"]
    _, params = MLP.init(jax.random.PRNGKey(0), (4,))
    np.testing.assert_allclose(np.sum(train.predict_proba(MLP, params, x, mine), -1), 1, rtol=1e-5)
    plain = fnnet.Loss(losses.mse.value, losses.mse.grad)       # no kind: regression, said so
    assert plain.kind == "regression" and train.resolve_task(plain, None) is None
    with pytest.raises(ValueError, match="kind must be one of"):
        train.resolve_task(fnnet.Loss(losses.mse.value, losses.mse.grad, kind="multiclass"), None)


def test_gradients_have_their_parameters_dtype():
    x, y = _blobs()
    _, params = MLP.init(jax.random.PRNGKey(0), (4,))
    bf16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    for grad_fn in (fnnet.value_and_grad, fnnet.autodiff_value_and_grad):
        _, grads = grad_fn(MLP, losses.softmax_cross_entropy)(bf16, x, y)   # float32 data
        chex.assert_trees_all_equal_shapes_and_dtypes(grads, bf16)
    state, history = _fit(MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), params=bf16)
    chex.assert_trees_all_equal_shapes_and_dtypes(state.params, bf16)
    assert np.isfinite(history.train_loss).all()


def test_mixed_precision_keeps_float32_master_params():
    x, y = _blobs(256)
    runs = {dtype: _fit(MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=5,
                        compute_dtype=dtype) for dtype in (None, jnp.bfloat16)}
    state, history = runs[jnp.bfloat16]
    chex.assert_trees_all_equal_shapes_and_dtypes(state.params, runs[None][0].params)  # float32
    assert history.train_loss[-1] < 0.6 * history.train_loss[0]
    assert abs(history.train_loss[-1] - runs[None][1].train_loss[-1]) < 0.05
