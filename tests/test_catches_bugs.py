"""Tests that would catch a wrong implementation: stateful branches gradient-checked, the checker
shown to catch planted bugs in stateful layers, forward semantics against independent code, and
bfloat16 end to end.

Each mutant below is a layer with one realistic bug planted; the checker must fail on it (and
pass on the real layer at the same point), so a passing check means something.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws, gpt, gradcheck, losses, train
from fnnet.layers import conv
from fnnet.layers.normalization import BatchStatistics, RunningStatistics

KEY = jax.random.PRNGKey(0)


def _passes(layer, x, **mode):
    _, params, state = fnnet.init_with_state(layer, KEY, jax.tree.map(lambda a: a.shape[1:], x))
    return gradcheck.check_layer(layer, params, x, state=state, rng=jax.random.PRNGKey(5), raise_on_failure=False,
                                 **mode).passed


# 1. stateful combinators, gradient-checked in training mode ---------------------------------------------

@pytest.mark.parametrize("layer,in_shape", [
    (fnnet.Residual(fnnet.serial(fnnet.Dense(4), fnnet.Dropout(0.3))), (4,)),
    (fnnet.serial(fnnet.FanOut(2), fnnet.parallel(fnnet.BatchNorm(), fnnet.Dropout(0.5)), fnnet.FanInSum), (3,)),
], ids=["residual-dense-dropout", "parallel-batchnorm-dropout"])
def test_stateful_combinators_pass_in_training_mode(x64, layer, in_shape):
    x = draws.normal(jax.random.PRNGKey(1), (6,) + in_shape)
    assert _passes(layer, x, train=True)


def test_gpt_with_dropout_is_gradient_checked_in_training_mode(x64):
    model = gpt.GPT(gpt.GPTConfig(vocab_size=7, block_size=6, num_layers=1, num_heads=2, features=8, dropout=0.1))
    _, params, state = fnnet.init_with_state(model, KEY, (6,))
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 6), 0, 7)
    report = gradcheck.check_model(model, losses.softmax_cross_entropy, params, ids, jnp.roll(ids, -1, 1),
                                   state=state, rng=jax.random.PRNGKey(2), train=True, raise_on_failure=False)
    assert report.passed, str(report)
    # dropout really is on: the loss in training mode differs from evaluation mode
    apply = jax.jit(lambda key, train: fnnet.apply_with_state(model, params, state, ids, key=key, train=train)[0],
                    static_argnames="train")
    train_logits, eval_logits = apply(jax.random.PRNGKey(2), train=True), apply(None, train=False)
    assert not np.allclose(train_logits, eval_logits)


# 2. the checker catches planted bugs in stateful layers ----------------------------------------------------

def _batchnorm_without_a_sum():
    """BatchNorm whose training backward forgets the Σ dx̂·x̂ term (the variance's path)."""
    bn = fnnet.BatchNorm()

    def backward(params, residuals, dy):
        grads, dx = bn.backward(params, residuals, dy)
        if isinstance(residuals, BatchStatistics):
            x_hat, inv_std = residuals
            lead = (None,) * (dy.ndim - 1)
            dx_hat = dy * params["scale"][lead]
            dx = (dx_hat - jnp.mean(dx_hat, axis=tuple(range(dy.ndim - 1)))[lead]) * inv_std[lead]  # no x̂ term
        return grads, dx
    return bn._replace(backward=backward)


def _batchnorm_with_eval_residuals():
    """BatchNorm that hands the evaluation-mode residuals to backward when training was asked."""
    bn = fnnet.BatchNorm()

    def stateful_forward(params, state, x, *, key=None, train=False):
        y, residuals, new_state = bn.stateful_forward(params, state, x, key=key, train=train)
        return y, RunningStatistics(*residuals), new_state
    return bn._replace(stateful_forward=stateful_forward)


def _dropout_backward_without_mask():
    drop = fnnet.Dropout(0.5)
    return drop._replace(backward=lambda params, scale, dy: ((), dy))


def _dropout_with_a_fresh_mask():
    """Dropout whose backward gets the mask of another key than the forward's output."""
    drop = fnnet.Dropout(0.5)

    def stateful_forward(params, state, x, *, key=None, train=False):
        y, _, state = drop.stateful_forward(params, state, x, key=key, train=train)
        _, scale, _ = drop.stateful_forward(params, state, x, key=jax.random.fold_in(key, 99), train=train)
        return y, scale, state
    return drop._replace(stateful_forward=stateful_forward)


def _parallel_swapping_states():
    """parallel(BatchNorm, BatchNorm) whose forward path returns the two branches' states swapped."""
    inner = fnnet.parallel(fnnet.BatchNorm(), fnnet.BatchNorm())

    def stateful_forward(params, state, xs, *, key=None, train=False):
        ys, residuals, states = inner.stateful_forward(params, state, xs, key=key, train=train)
        return ys, residuals, states[::-1]
    return fnnet.serial(fnnet.FanOut(2), inner._replace(stateful_forward=stateful_forward), fnnet.FanInSum)


@pytest.mark.parametrize("make_mutant,real,in_shape", [
    (_batchnorm_without_a_sum, fnnet.BatchNorm(), (3, 3, 2)),
    (_batchnorm_with_eval_residuals, fnnet.BatchNorm(), (3, 3, 2)),
    (_dropout_backward_without_mask, fnnet.Dropout(0.5), (7,)),
    (_dropout_with_a_fresh_mask, fnnet.Dropout(0.5), (7,)),
    (_parallel_swapping_states, fnnet.serial(fnnet.FanOut(2), fnnet.parallel(fnnet.BatchNorm(), fnnet.BatchNorm()),
                                             fnnet.FanInSum), (3,)),
], ids=["batchnorm-missing-sum", "batchnorm-eval-when-train", "dropout-no-mask", "dropout-fresh-mask",
        "parallel-swapped-states"])
def test_check_layer_and_check_model_catch_planted_stateful_bugs(x64, make_mutant, real, in_shape):
    x = draws.normal(jax.random.PRNGKey(1), (5,) + in_shape)  # random inputs: ones would hide a mask bug
    mutant = make_mutant()
    if "parallel" in make_mutant.__name__:  # the two branches must start from different states
        _, params, state = fnnet.init_with_state(mutant, KEY, in_shape)
        state = (state[0], ({"mean": state[1][0]["mean"] + 1.0, "var": state[1][0]["var"]}, state[1][1]), state[2])
    else:
        _, params, state = fnnet.init_with_state(mutant, KEY, in_shape)
    for layer, should_pass in ((real, True), (mutant, False)):
        report = gradcheck.check_layer(layer, params, x, state=state, rng=jax.random.PRNGKey(5), train=True,
                                       raise_on_failure=False)
        assert report.passed == should_pass, str(report)
    # a Dense before it: the mutant's dx reaches a parameter gradient, as inside any real model
    model = fnnet.serial(fnnet.Dense(in_shape[-1]), mutant, fnnet.Flatten, fnnet.Dense(3))
    _, model_params, model_state = fnnet.init_with_state(model, KEY, in_shape)
    model_state = (model_state[0], state) + model_state[2:]
    labels = jnp.arange(5) % 3
    report = gradcheck.check_model(model, losses.softmax_cross_entropy, model_params, x, labels, directions=1,
                                   state=model_state, rng=jax.random.PRNGKey(5), train=True, raise_on_failure=False)
    assert not report.passed, str(report)


# 3. forward semantics against independent implementations ----------------------------------------------

def test_causal_self_attention_equals_jax_dot_product_attention():
    heads, features, length = 2, 8, 5
    layer = fnnet.CausalSelfAttention(heads)
    _, params = layer.init(KEY, (length, features))
    x = draws.normal(jax.random.PRNGKey(1), (3, length, features))
    qkv = x @ params["w_qkv"] + params["b_qkv"][None, None]
    q, k, v = (t.reshape(3, length, heads, features // heads) for t in jnp.split(qkv, 3, axis=-1))
    attended = jax.nn.dot_product_attention(q, k, v, is_causal=True)          # (B, T, heads, D)
    expected = attended.reshape(3, length, features) @ params["w_out"] + params["b_out"][None, None]
    np.testing.assert_allclose(layer.apply(params, x), expected, rtol=1e-5, atol=1e-5)
    y, _ = layer.forward(params, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_layernorm_values():
    layer = fnnet.LayerNorm(epsilon=1e-5)
    _, params = layer.init(KEY, (4,))
    params = {"scale": jnp.array([1.0, 2.0, 0.5, 1.0]), "offset": jnp.array([0.0, 1.0, 0.0, -1.0])}
    x = jnp.array([[1.0, 2.0, 3.0, 4.0], [-2.0, 0.0, 2.0, 0.0]])
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * params["scale"][None] + params["offset"][None]
    np.testing.assert_allclose(layer.apply(params, x), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.apply(params, x)[0], [-1.3416, -0.4472 * 2 + 1, 0.4472 * 0.5, 1.3416 - 1],
                               atol=1e-3)


def test_dropout_and_global_avg_pool_values():
    drop = fnnet.Dropout(0.25)
    x = draws.normal(KEY, (400, 50))
    y, _ = fnnet.apply_with_state(drop, (), (), x, key=jax.random.PRNGKey(3), train=True)
    kept = y != 0
    assert abs(float(kept.mean()) - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    images = draws.normal(KEY, (2, 3, 4, 5))
    np.testing.assert_allclose(fnnet.GlobalAvgPool.apply((), images), images.mean((1, 2)), rtol=1e-6)
    fan = fnnet.serial(fnnet.FanOut(3), fnnet.parallel(fnnet.Identity, fnnet.Tanh, fnnet.Sigmoid), fnnet.FanInSum)
    _, params = fan.init(KEY, (4,))
    v = draws.normal(KEY, (2, 4))
    np.testing.assert_allclose(fan.apply(params, v), v + jnp.tanh(v) + jax.nn.sigmoid(v), rtol=1e-6)


# 6. bfloat16 end to end ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model,in_shape,vocab", [
    (fnnet.serial(fnnet.Conv(4, 3), fnnet.BatchNorm(), fnnet.Relu, fnnet.GlobalAvgPool, fnnet.Dense(3)), (6, 6, 1), 0),
    (fnnet.serial(fnnet.Embedding(9, 8), fnnet.LayerNorm(), fnnet.CausalSelfAttention(2), fnnet.Dense(3)), (5,), 9),
], ids=["conv-batchnorm", "embedding-layernorm-attention"])
def test_all_bfloat16_and_bf16_compute_train_like_float32(model, in_shape, vocab):
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    if vocab:
        x = jax.random.randint(k1, (32,) + in_shape, 0, vocab)
        y = x % 3
    else:
        x = draws.normal(k1, (32,) + in_shape)
        y = (x.mean((1, 2, 3)) > 0).astype(jnp.int32) + (x[:, 0, 0, 0] > 1)
    _, params32, state32 = fnnet.init_with_state(model, KEY, in_shape)
    cast = lambda tree: jax.tree.map(lambda a: a.astype(jnp.bfloat16), tree)  # noqa: E731
    x16 = x if vocab else x.astype(jnp.bfloat16)
    # forward finite and gradients in the params' dtype, all-bfloat16
    (value, _), grads = jax.jit(fnnet.value_and_grad(model, losses.softmax_cross_entropy, with_state=True))(
        cast(params32), cast(state32), x16, y, key=k2)
    assert bool(jnp.isfinite(value)) and all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(grads))
    # a short training: float32 master params with bf16 compute, through make_train_step itself
    losses_by_dtype = {}
    for compute in (None, jnp.bfloat16):
        step = jax.jit(train.make_train_step(model, losses.softmax_cross_entropy, optax.adam(3e-2),
                                             compute_dtype=compute))
        state = train.init_state(model, optax.adam(3e-2), KEY, in_shape)
        for _ in range(30):
            state, metrics = step(state, x, y)
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
        losses_by_dtype[compute] = float(metrics["loss"])
    first = float(jax.jit(lambda p, s: losses.softmax_cross_entropy.value(
        fnnet.apply_with_state(model, p, s, x, key=k2, train=True)[0], y))(params32, state32))
    assert losses_by_dtype[None] < 0.7 * first                       # it learns
    assert abs(losses_by_dtype[jnp.bfloat16] - losses_by_dtype[None]) < 0.1 * first + 0.05


# 7. options never exercised ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch,size,chunks", [(3, 5, 1), (2, 5, 2), (1, 7, 1)],
                         ids=["chunks-1", "chunks-2", "one-example"])
def test_conv_dw_chunk_fallbacks(x64, batch, size, chunks):
    """The im2col dW splits N·positions into 4, 2 or 1 chunks: the 2 and 1 fallbacks against jax.vjp."""
    layer = fnnet.Conv(6, 3, padding="VALID")
    _, params = layer.init(KEY, (size, size, 4))            # taps·Cin = 36 > 32: the chunked product
    x = draws.normal(jax.random.PRNGKey(1), (batch, size, size, 4))
    rows = batch * (size - 2) ** 2
    assert next(c for c in (4, 2, 1) if rows % c == 0) == chunks   # the case reaches the fallback it names
    if jax.default_backend() != "cpu":
        pytest.skip("the im2col dW is the CPU path; other backends use the convolution form")

    @jax.jit  # the chunked dW and jax.vjp's as one program
    def both(params, x):
        dy = jnp.ones((batch, size - 2, size - 2, 6))
        dw = conv.conv_kernel_grad(x, dy, (3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, 2)
        return dw, jax.vjp(lambda w: layer.apply(dict(params, w=w), x), params["w"])[1](dy)[0]

    dw, reference = both(params, x)
    chex.assert_trees_all_close(dw, reference, rtol=1e-10)
    assert gradcheck.check_layer(layer, params, x).passed
