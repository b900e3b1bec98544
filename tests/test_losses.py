"""Every loss: grad == jax.grad(value), finite differences, stability at ±1000, shape errors."""

import chex
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

import fnnet
from fnnet import draws, losses


def _cases(key):
    k1, k2, k3 = jax.random.split(key, 3)
    logits = 2 * draws.normal(k1, (6, 3))
    probs = draws.uniform(k2, (6, 3), minval=0.05, maxval=0.95)
    bits = jax.random.bernoulli(k3, 0.5, (6, 3)).astype(logits.dtype)
    labels = jax.random.randint(k3, (6,), 0, 3)
    return [
        ("squared_error", losses.squared_error, logits, probs),
        ("mse", losses.mse, logits, probs),
        ("binary_cross_entropy", losses.binary_cross_entropy, probs, bits),
        ("sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy, logits, bits),
        ("softmax_cross_entropy-labels", losses.softmax_cross_entropy, logits, labels),
        ("softmax_cross_entropy-onehot", losses.softmax_cross_entropy, logits,
         jax.nn.one_hot(labels, 3, dtype=logits.dtype)),
        ("softmax_cross_entropy-soft", losses.softmax_cross_entropy, logits,
         jax.nn.softmax(draws.normal(k1, (6, 3)), -1)),
    ]


IDS = [case[0] for case in _cases(jax.random.PRNGKey(0))]


@pytest.mark.parametrize("index", range(len(IDS)), ids=IDS)
def test_grad_equals_autodiff_and_finite_differences(x64, index):
    _, loss, pred, target = _cases(jax.random.PRNGKey(0))[index]
    pred = pred.astype(jnp.float64)
    if jnp.issubdtype(target.dtype, jnp.floating):
        target = target.astype(jnp.float64)
    manual, reference = jax.jit(lambda p, t: (loss.grad(p, t), jax.grad(loss.value)(p, t)))(pred, target)
    chex.assert_trees_all_close(manual, reference, rtol=1e-10, atol=1e-15)
    chex.assert_equal_shape([manual, pred])
    jax.test_util.check_vjp(lambda p: loss.value(p, target),
                            lambda p: (loss.value(p, target), lambda g: (g * loss.grad(p, target),)),
                            (pred,), atol=1e-7, rtol=1e-7, eps=1e-6)


@pytest.mark.parametrize("index", range(len(IDS)), ids=IDS)
def test_value_is_mean_over_examples(index):
    _, loss, pred, target = _cases(jax.random.PRNGKey(1))[index]
    @jax.jit  # one program, not one per operation
    def values(pred, target):
        per_example = jnp.stack([loss.value(pred[i:i + 1], target[i:i + 1]) for i in range(6)])
        return loss.value(pred, target), per_example, loss.value(pred[0], target[0])

    batch, per_example, one = values(pred, target)
    np.testing.assert_allclose(batch, per_example.mean(), rtol=1e-5)
    # one example without a batch axis is a batch of one
    np.testing.assert_allclose(one, per_example[0], rtol=1e-5)


def test_reductions_are_as_documented():
    pred = jnp.array([[1.0, 2.0], [3.0, 5.0]])
    target = jnp.zeros((2, 2))
    np.testing.assert_allclose(losses.squared_error.value(pred, target), 0.5 * (1 + 4 + 9 + 25) / 2)
    np.testing.assert_allclose(losses.mse.value(pred, target), (1 + 4 + 9 + 25) / 4)


@pytest.mark.parametrize("loss,target", [
    (losses.sigmoid_binary_cross_entropy, jnp.array([[1.0, 0.0], [0.0, 1.0]])),
    (losses.softmax_cross_entropy, jnp.array([0, 1])),
])
def test_fused_losses_finite_at_extreme_logits(loss, target):
    logits = jnp.array([[1000.0, -1000.0], [1000.0, -1000.0]])
    value, grad, reference = jax.jit(lambda p, t: (loss.value(p, t), loss.grad(p, t), jax.grad(loss.value)(p, t)))(
        logits, target)
    chex.assert_tree_all_finite((value, grad, reference))
    # example 0 is right with certainty (loss 0), example 1 wrong by 2000 nats
    np.testing.assert_allclose(value, 2000.0 / 2, rtol=1e-6)


def test_binary_cross_entropy_clips_probabilities():
    value = losses.binary_cross_entropy.value(jnp.array([[0.0], [1.0]]), jnp.array([[1.0], [0.0]]))
    grad = losses.binary_cross_entropy.grad(jnp.array([[0.0], [1.0]]), jnp.array([[1.0], [0.0]]))
    chex.assert_tree_all_finite((value, grad))
    assert float(value) > 10


def test_sigmoid_then_bce_gives_tutorial_delta(x64):
    """The chain Sigmoid backward ∘ BCE grad is the tutorials' delta_out = (ŷ - y)/N."""
    z = jnp.array([[-1.5], [0.3], [2.0], [0.0]], jnp.float64)
    y = jnp.array([[0.0], [1.0], [1.0], [0.0]], jnp.float64)
    p, residual = fnnet.Sigmoid.forward((), z)
    _, delta = fnnet.Sigmoid.backward((), residual, losses.binary_cross_entropy.grad(p, y))
    chex.assert_trees_all_close(delta, (p - y) / 4, rtol=1e-12)
    chex.assert_trees_all_close(delta, losses.sigmoid_binary_cross_entropy.grad(z, y), rtol=1e-12)
    chex.assert_trees_all_close(losses.binary_cross_entropy.value(p, y),
                                losses.sigmoid_binary_cross_entropy.value(z, y), rtol=1e-12)


def test_softmax_labels_and_onehot_agree():
    logits = draws.normal(jax.random.PRNGKey(0), (5, 4))
    labels = jnp.array([0, 3, 1, 1, 2])
    onehot = jax.nn.one_hot(labels, 4)
    loss = losses.softmax_cross_entropy
    np.testing.assert_allclose(loss.value(logits, labels), loss.value(logits, onehot), rtol=1e-6)
    np.testing.assert_allclose(loss.grad(logits, labels), loss.grad(logits, onehot), rtol=1e-6)
    np.testing.assert_allclose(loss.grad(logits, labels), (jax.nn.softmax(logits) - onehot) / 5,
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", list(losses.ALL.values()), ids=list(losses.ALL))
def test_mismatched_target_shape_is_a_clear_error(loss):
    pred = jnp.zeros((4, 1))
    with pytest.raises(ValueError, match=r"target shape \(4, 3\)"):
        loss.value(pred, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"target shape"):
        loss.grad(pred, jnp.zeros((2, 1)))
    if loss is not losses.softmax_cross_entropy:
        with pytest.raises(ValueError, match=r"target shape \(4,\) does not match prediction shape \(4, 1\)"):
            loss.value(pred, jnp.zeros((4,)))


def test_softmax_float_labels_rejected():
    with pytest.raises(ValueError, match="must be integers"):
        losses.softmax_cross_entropy.value(jnp.zeros((4, 3)), jnp.zeros((4,)))
