"""Convolution, pooling, normalisation, dropout, reshape and branches: hand-written backward == jax.vjp."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import draws, gradcheck, losses, train

def _inputs(layer, in_shape, batch=3, seed=0, dtype=jnp.float64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    _, params = layer.init(k1, in_shape)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    return params, draws.normal(k2, (batch,) + in_shape, dtype)


conv_specs = st.fixed_dictionaries({
    "size": st.tuples(st.integers(3, 9), st.integers(3, 9)),
    "channels": st.sampled_from([2, 8]),  # 8 input channels x a 3x3 kernel: the chunked im2col dW
    "kernel": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "strides": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "padding": st.sampled_from(["SAME", "VALID", ((1, 0), (0, 2))]),
    "groups": st.sampled_from([1, 2]),
    "batch": st.integers(1, 3),
    "seed": st.integers(0, 2 ** 16),
})


@settings(max_examples=6, deadline=None)
@given(conv_specs)
def test_random_convolutions_backprop_exactly(spec):
    layer = fnnet.Conv(2 * spec["groups"], spec["kernel"], strides=spec["strides"], padding=spec["padding"],
                       dilation=spec["dilation"], feature_group_count=spec["groups"])
    in_shape = spec["size"] + (spec["channels"] * spec["groups"],)
    pads = {"SAME": ((0, 0), (0, 0)), "VALID": ((0, 0), (0, 0))}.get(spec["padding"], spec["padding"])
    too_small = spec["padding"] != "SAME" and any(  # worked out here, independently of the layer's geometry
        n + lo + hi < (k - 1) * d + 1 for n, k, d, (lo, hi) in zip(spec["size"], spec["kernel"], spec["dilation"], pads))
    if too_small:  # refused with a message naming the layer; an accepted configuration must not be
        with pytest.raises(ValueError, match=r"Conv\(.*too small"):
            layer.init(jax.random.PRNGKey(0), in_shape)
        return
    layer.init(jax.random.PRNGKey(0), in_shape)
    with jax.enable_x64(True):
        params, x = _inputs(layer, in_shape, batch=spec["batch"], seed=spec["seed"])

        @jax.jit  # one compilation per drawn example
        def both(params, x, dy):
            manual = layer.backward(params, layer.forward(params, x)[1], dy)
            return manual, jax.vjp(layer.apply, params, x)[1](dy)

        dy = draws.normal(jax.random.PRNGKey(spec["seed"] + 1),
                               jax.eval_shape(layer.apply, params, x).shape, jnp.float64)
        manual, reference = both(params, x, dy)
        chex.assert_trees_all_close(manual, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", ["im2col-transposed", "im2col-chunked", "convolution"])
@pytest.mark.parametrize("make, in_shape", [
    (lambda c: fnnet.Conv(c, 3, strides=(2, 1), padding=((2, 0), (1, 1)), dilation=(1, 2)), (9, 8)),
    (lambda c: fnnet.Conv1D(c, 5, strides=2, dilation=2), (17,))])
def test_every_kernel_gradient_path_is_exact(x64, monkeypatch, path, make, in_shape):
    """dW has three formulations (see conv_kernel_grad): each must equal jax.vjp's."""
    from fnnet.layers import conv
    if path.startswith("im2col") and jax.default_backend() != "cpu":
        pytest.skip("the im2col dW is the CPU path: on this backend every case takes the convolution form")
    channels = 2 if path == "im2col-transposed" else 8  # taps·Cin <= 32 takes the transposed columns
    if path == "convolution":
        monkeypatch.setattr(conv, "_IM2COL_MAX_BYTES", 0)
    layer = make(3)
    params, x = _inputs(layer, in_shape + (channels,), batch=4)
    dy = draws.normal(jax.random.PRNGKey(5), jax.eval_shape(layer.apply, params, x).shape, jnp.float64)

    @jax.jit  # the hand-written backward and jax.vjp's as one program
    def both(params, x, dy):
        return layer.backward(params, layer.forward(params, x)[1], dy), jax.vjp(layer.apply, params, x)[1](dy)

    manual, reference = both(params, x, dy)
    chex.assert_trees_all_close(manual, reference, rtol=1e-10, atol=1e-12)


def test_max_pool_gives_each_window_one_maximum_like_reduce_window(x64):
    pool = fnnet.MaxPool(2, strides=1)  # overlapping windows, and whole windows of ReLU zeros
    x = jax.nn.relu(jnp.round(draws.normal(jax.random.PRNGKey(0), (2, 5, 5, 2))))
    y, residuals = pool.forward((), x)
    dy = jnp.ones_like(y)
    _, dx = pool.backward((), residuals, dy)
    reference = jax.vjp(lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 1, 1, 1),
                                                        "VALID"), x)[1](dy)[0]
    np.testing.assert_array_equal(dx, reference)
    assert float(dx.sum()) == float(dy.sum())  # each window's dy goes to exactly one entry
    # the input really has ties, where a plain "x == max" mask would route dy to every tied entry
    window_max = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "VALID")
    ties = sum((x[:, a:a + 4, b:b + 4, :] == window_max).astype(jnp.int32) for a in range(2) for b in range(2))
    assert int((ties >= 2).sum()) > 0


def test_batchnorm_trains_on_batch_statistics_and_evaluates_on_running_ones(x64):
    bn = fnnet.BatchNorm(momentum=0.8)
    _, params, state = fnnet.init_with_state(bn, jax.random.PRNGKey(0), (3, 3, 2))
    x = 3 + 2 * draws.normal(jax.random.PRNGKey(1), (8, 3, 3, 2), jnp.float64)
    y, new_state = fnnet.apply_with_state(bn, params, state, x, train=True)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1, rtol=1e-4)
    np.testing.assert_allclose(new_state["mean"], 0.2 * x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(new_state["var"], 0.8 + 0.2 * x.var(axis=(0, 1, 2)), rtol=1e-12)
    y_eval, same = fnnet.apply_with_state(bn, params, new_state, x, train=False)
    chex.assert_trees_all_equal(same, new_state)
    expected = (np.asarray(x) - np.asarray(new_state["mean"])) / np.sqrt(np.asarray(new_state["var"]) + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-10)
    for train_mode in (True, False):
        report = gradcheck.check_layer(bn, params, x, state=new_state, train=train_mode)
        assert report.passed, str(report)


def test_dropout_drops_the_rate_and_is_the_identity_in_evaluation():
    drop = fnnet.Dropout(0.3)
    x = jnp.ones((200, 50))
    y, _ = fnnet.apply_with_state(drop, (), (), x, key=jax.random.PRNGKey(0), train=True)
    assert abs(float(jnp.mean(y == 0)) - 0.3) < 0.02            # rate is the probability of dropping
    np.testing.assert_allclose(float(jnp.mean(y)), 1.0, atol=0.03)  # inverted: the mean is kept
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.7], rtol=1e-6)
    np.testing.assert_array_equal(fnnet.apply_with_state(drop, (), (), x, train=False)[0], x)
    np.testing.assert_array_equal(drop.apply((), x), x)
    report = gradcheck.check_layer(drop, (), x[:4, :6], rng=jax.random.PRNGKey(3))
    assert report.passed


@pytest.mark.parametrize("make,in_shape,message", [
    (lambda: fnnet.Conv(4, 3), (5, 5), r"Conv\(4, 3x3\): expected examples of shape \(H, W, C\).*channel axis"),
    (lambda: fnnet.Conv(4, 5, padding="VALID"), (3, 8, 1), r"Conv\(4, 5x5\): input of spatial size \(3, 8\) "
                                                          r"is too small"),
    (lambda: fnnet.Conv(4, 3, feature_group_count=2), (5, 5, 3), "3 input channels do not divide into 2"),
    (lambda: fnnet.MaxPool(4), (3, 3, 1), r"MaxPool\(4x4\): input of spatial size \(3, 3\) is too small"),
    (lambda: fnnet.Reshape((4, 4)), (3, 5), r"Reshape\(\(4, 4\)\): cannot reshape"),
])
def test_bad_shapes_name_the_layer(make, in_shape, message):
    with pytest.raises(ValueError, match=message):
        make().init(jax.random.PRNGKey(0), in_shape)


def test_bad_inputs_and_arguments_name_the_layer():
    conv = fnnet.Conv(4, 3)
    _, params = conv.init(jax.random.PRNGKey(0), (5, 5, 3))
    with pytest.raises(ValueError, match=r"Conv\(4, 3x3\): expected 3 input channels .* got input of shape "
                                         r"\(2, 5, 5, 2\)"):
        conv.apply(params, jnp.ones((2, 5, 5, 2)))
    with pytest.raises(ValueError, match=r"Conv\(4, 3x3\): expected input of shape \(N, H, W, C\)"):
        conv.apply(params, jnp.ones((5, 3)))
    model = fnnet.serial(fnnet.Flatten, fnnet.Dense(75), conv)   # forgot Reshape((5, 5, 3))
    with pytest.raises(ValueError, match=r"layer 2 \(Conv\(4, 3x3\)\): expected examples of shape \(H, W, C\), "
                                         r"got in_shape \(75,\)"):
        model.init(jax.random.PRNGKey(0), (5, 4))
    for rate in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"Dropout: rate \(the probability of dropping\) must be in \[0, 1\)"):
            fnnet.Dropout(rate)
    with pytest.raises(ValueError, match=r"Dropout\(0.5\): training mode needs a PRNG key"):
        fnnet.apply_with_state(fnnet.Dropout(0.5), (), (), jnp.ones((2, 3)), train=True)
    bn = fnnet.BatchNorm()
    _, bn_params, bn_state = fnnet.init_with_state(bn, jax.random.PRNGKey(0), (3,))
    with pytest.raises(ValueError, match=r"BatchNorm\(momentum=0.9\): training mode needs more than one value per channel"):
        fnnet.apply_with_state(bn, bn_params, bn_state, jnp.ones((1, 3)), train=True)
    with pytest.raises(ValueError, match=r"BatchNorm.*running statistics.*apply_with_state"):
        bn.apply(bn_params, jnp.ones((4, 3)))


def _image_task(n=256, seed=0):
    """8x8 noisy images holding a horizontal (label 0) or a vertical (label 1) bar somewhere."""
    rng = np.random.default_rng(seed)
    x = 0.5 * rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 2, n).astype(np.int32)
    where = rng.integers(0, 8, n)
    for i in range(n):
        if y[i]:
            x[i, :, where[i], 0] += 2.0
        else:
            x[i, where[i], :, 0] += 2.0
    return x, y


CNN = fnnet.serial(fnnet.Conv(8, 3, use_bias=False), fnnet.BatchNorm(), fnnet.Relu, fnnet.MaxPool(2),
                   fnnet.Residual(fnnet.serial(fnnet.Conv(8, 3), fnnet.Relu)), fnnet.Dropout(0.1),
                   fnnet.GlobalAvgPool, fnnet.Dense(2))


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
def test_fit_threads_state_and_keys_and_evaluates_in_eval_mode(grad):
    x, y = _image_task()
    state, history = train.fit(CNN, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=6,
                               batch_size=32, key=jax.random.PRNGKey(0), eval_data=_image_task(128, 1),
                               grad=grad, verbose=False)
    assert history.traces == 1 and history.eval_accuracy[-1] >= 0.85, history.eval_accuracy
    bn_state = state.model_state[1]
    assert float(jnp.abs(bn_state["mean"]).sum()) > 0 and not np.allclose(bn_state["var"], 1)  # updated
    result = train.evaluate(CNN, losses.softmax_cross_entropy, state.params, _image_task(128, 1),
                            model_state=state.model_state)
    assert result["accuracy"] == pytest.approx(history.eval_accuracy[-1])
    logits = train.predict(CNN, state.params, x[:5], model_state=state.model_state)
    again = train.predict(CNN, state.params, x[:5], model_state=state.model_state)
    np.testing.assert_array_equal(logits, again)  # evaluation mode: no dropout, running statistics


def test_manual_and_autodiff_agree_with_state_and_dropout(x64):
    x, y = _image_task(16)
    _, params, state = fnnet.init_with_state(CNN, jax.random.PRNGKey(0), (8, 8, 1))
    report = gradcheck.check_model(CNN, losses.softmax_cross_entropy, params, x, y, state=state,
                                   rng=jax.random.PRNGKey(4))
    assert report.passed, str(report)


def test_checkpoint_resume_is_bit_exact_with_model_state(tmp_path):
    x, y = _image_task(96)
    kwargs = dict(batch_size=32, key=jax.random.PRNGKey(0), verbose=False)
    straight, _ = train.fit(CNN, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3, **kwargs)
    train.fit(CNN, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=2, checkpoint_dir=tmp_path,
              **kwargs)
    resumed, history = train.fit(CNN, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3,
                                 checkpoint_dir=tmp_path, resume=True, **kwargs)
    assert history.epoch == [1, 2, 3]
    chex.assert_trees_all_equal(resumed, straight)


def test_per_example_grads_refuse_batch_statistics_and_ensembles_train():
    with pytest.raises(ValueError, match="batch statistics are not per-example"):
        fnnet.per_example_grads(CNN, losses.softmax_cross_entropy)
    x, y = _image_task(64)
    states, metrics = train.fit_ensemble(CNN, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y),
                                         keys=jax.random.split(jax.random.PRNGKey(0), 2), epochs=2, batch_size=32)
    assert metrics["loss"].shape == (2, 2) and states.model_state[1]["mean"].shape == (2, 8)
    assert not np.allclose(states.model_state[1]["mean"][0], states.model_state[1]["mean"][1])


@pytest.mark.parametrize("n, sizes", [(70, [32, 32, 6]), (65, [32, 33])])
def test_batch_statistics_never_see_padding(x64, n, sizes):
    """A partial last batch runs as a smaller batch for a model with BatchNorm: the epoch equals
    plain steps on exactly the real examples (a remainder of one joins the batch before it)."""
    model = fnnet.serial(fnnet.Conv(4, 3), fnnet.BatchNorm(), fnnet.Relu, fnnet.GlobalAvgPool, fnnet.Dense(2))
    x, y = _image_task(n)
    x = x.astype(np.float64)
    optimizer = optax.sgd(0.1)
    state = train.init_state(model, optimizer, jax.random.PRNGKey(0), x.shape[1:])
    epoch = jax.jit(train.make_epoch(model, losses.softmax_cross_entropy, optimizer, n=n, batch_size=32))
    after_epoch, metrics = epoch(state, x, y)
    np.testing.assert_array_equal(metrics["count"], sizes)

    order, _ = jax.jit(train.epochs.batch_plan, static_argnums=(2, 3))(state.key, state.step, n, 32)
    order = np.asarray(order).reshape(-1)[:n]
    assert sorted(order.tolist()) == list(range(n))  # every example once
    step = jax.jit(train.make_train_step(model, losses.softmax_cross_entropy, optimizer))
    start = 0
    for size in sizes:
        batch = order[start:start + size]
        state, batch_metrics = step(state, x[batch], y[batch])
        start += size
    chex.assert_trees_all_close(after_epoch, state, rtol=1e-12)
    assert float(metrics["loss"][-1]) == pytest.approx(float(batch_metrics["loss"]), rel=1e-12)
