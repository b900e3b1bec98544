"""The monitor describes a batch's real examples only: the padded rows of an epoch's short last batch
(weights 0; copies of the data's row 0) stay out of every statistic (issue 29, item 4)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws, train
from fnnet.gradients import loss_and_grads
from fnnet.tape import recording
from fnnet.tracing import activation_stats
from fnnet.train.epochs import epoch_batches
from fnnet.train.monitor import layer_health


def _reference(kind, y):
    """The statistics of ``y`` (real rows only), in float64 NumPy: the independent reference."""
    y = np.asarray(y, np.float64)
    stats = {"mean": y.mean(), "std": y.std(), "min": y.min(), "max": y.max(), "zeros": np.mean(y == 0)}
    if kind == "Relu":
        stats["dead"] = np.mean(np.all(y.reshape(-1, y.shape[-1]) == 0, axis=0))
    if kind == "Tanh":
        stats["saturated"] = np.mean(np.abs(y) > 0.99)
    if kind == "Sigmoid":
        stats["saturated"] = np.mean(np.minimum(y, 1 - y) < 0.01)
    return stats


def _assert_stats(found, expected, rtol=1e-5, atol=1e-6):
    assert set(found) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(float(found[name]), value, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("padding", ["zeros", "garbage"])
@pytest.mark.parametrize("shape", [(8,), (3, 4, 5), (6, 8)], ids=["dense", "feature-map", "sequence"])
def test_activation_stats_leave_out_the_padding_rows(padding, shape):
    """A ReLU output of 5 real examples and 3 padding rows ((B, F), a CNN's (B, H, W, C), a GPT's
    (B, T, F)): with the weights, every statistic is the real rows' alone."""
    rng = np.random.default_rng(0)
    real = np.maximum(rng.normal(size=(5,) + shape), 0).astype(np.float32)
    real[..., :2] = 0.0                    # two units dead on every real example
    real[..., 2] = np.abs(real[..., 2]) + 0.5  # one unit alive everywhere
    pad = np.zeros((3,) + shape, np.float32) if padding == "zeros" else np.full((3,) + shape, 1e4, np.float32)
    if padding == "garbage":
        pad[0, ..., 3] = np.nan
        pad[1, ..., 4] = np.inf
    y = jnp.asarray(np.concatenate([real, pad]))
    weights = jnp.array([1., 1., 1., 1., 1., 0., 0., 0.])
    stats = jax.jit(activation_stats, static_argnums=0)  # one program each, as inside a step
    _assert_stats(stats("Relu", y, weights=weights), _reference("Relu", real))
    _assert_stats(stats("Relu", real), _reference("Relu", real))  # no weights: all rows, as before
    squashed = np.tanh(3 * rng.normal(size=(5,) + shape)).astype(np.float32)
    y = jnp.asarray(np.concatenate([squashed, pad]))
    _assert_stats(stats("Tanh", y, weights=weights), _reference("Tanh", squashed))


def test_layer_health_of_a_padded_batch_is_the_real_rows_health():
    """A step's tape on 5 real examples + 3 padding rows (garbage inputs), masked by the weights,
    gives the health of the 5 real examples alone: activations and the gradient norm ‖dθ‖."""
    model = fnnet.serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(8), fnnet.Sigmoid, fnnet.Dense(3))
    loss = fnnet.losses.softmax_cross_entropy
    _, params = model.init(jax.random.PRNGKey(0), (4,))
    x = draws.normal(jax.random.PRNGKey(1), (8, 4))
    x = x.at[5:].set(-30.0)  # padding that would kill every ReLU unit and saturate every sigmoid
    y = jnp.array([0, 1, 2, 0, 1, 0, 0, 0])
    weights = jnp.array([1., 1., 1., 1., 1., 0., 0., 0.])
    new_params = jax.tree.map(lambda p: p * 0.99, params)
    @jax.jit  # as inside a compiled step
    def healths(params, new_params, x, y, weights):
        with recording() as padded_tape:
            loss_and_grads(model, loss, params, x, y, weights=weights)
        with recording() as real_tape:
            loss_and_grads(model, loss, params, x[:5], y[:5])
        return layer_health(padded_tape, params, new_params, weights), layer_health(real_tape, params, new_params)

    padded, real = healths(params, new_params, x, y, weights)
    assert set(padded) == set(real) == {"layer 0 (Dense(16))", "layer 1 (Relu)", "layer 2 (Dense(8))",
                                        "layer 3 (Sigmoid)", "layer 4 (Dense(3))"}
    for label in real:
        _assert_stats(padded[label], {k: float(v) for k, v in real[label].items()})
    hidden = fnnet.serial(fnnet.Dense(16), fnnet.Relu).apply(params[:2], x[:5])
    _assert_stats({k: padded["layer 1 (Relu)"][k] for k in ("mean", "std", "dead")},
                  {k: v for k, v in _reference("Relu", hidden).items() if k in ("mean", "std", "dead")})


def test_fit_monitor_at_a_short_last_batch_sees_the_real_examples_only():
    """130 examples in batches of 128: step 2 of each epoch holds 2 real examples and 126 copies of
    row 0 (a blank example here, all zeros). Its recorded health equals the statistics of the model's
    own ``apply`` on those 2 examples, at the params the step started from; and a healthy model
    gets no warning."""
    model = fnnet.serial(fnnet.Dense(32), fnnet.Relu, fnnet.Dense(16), fnnet.Tanh, fnnet.Dense(3))
    loss, optimizer, key = fnnet.losses.softmax_cross_entropy, optax.sgd(0.01), jax.random.PRNGKey(1)
    n, batch_size = 130, 128
    x = draws.normal(jax.random.PRNGKey(0), (n, 8)).at[0].set(0.0)
    y = jnp.argmax(x[:, :3], axis=1).astype(jnp.int32)
    _, history = train.fit(model, loss, optimizer, (x, y), epochs=3, batch_size=batch_size, key=key,
                           verbose=False, monitor=1)
    assert history.health_steps == [1, 2, 3, 4, 5, 6]
    assert history.warnings == []

    # the params before step 2: step 1 replayed (the same batch and weights the epoch used)
    state = train.init_state(model, optimizer, key, (8,))
    (first, first_weights), (second, second_weights) = epoch_batches(model, state.key, state.step, n, batch_size)
    step = jax.jit(train.make_train_step(model, loss, optimizer))
    state, _ = step(state, x[first], y[first], first_weights)
    rows = np.asarray(second)[np.asarray(second_weights) > 0]
    assert len(rows) == 2
    params, xr, yr = state.params, x[rows], y[rows]

    relu_out = jax.jit(fnnet.serial(fnnet.Dense(32), fnnet.Relu).apply)(params[:2], xr)
    tanh_out = jax.jit(fnnet.serial(fnnet.Dense(32), fnnet.Relu, fnnet.Dense(16), fnnet.Tanh).apply)(params[:4], xr)
    at = history.health_steps.index(2)
    recorded = {label: {stat: values[at] for stat, values in stats.items()} for label, stats in history.layers.items()}
    keep = ("mean", "std", "dead", "saturated")
    _assert_stats(recorded["layer 1 (Relu)"], {k: v for k, v in _reference("Relu", relu_out).items() if k in keep},
                  rtol=1e-4)
    _assert_stats(recorded["layer 3 (Tanh)"], {k: v for k, v in _reference("Tanh", tanh_out).items() if k in keep},
                  rtol=1e-4)
    # ‖dθ‖ of each Dense: autodiff of the mean loss over the 2 real examples (the padding never reached it)
    grads = jax.jit(jax.grad(lambda p: loss.value(model.apply(p, xr), yr)))(params)
    for index in (0, 2, 4):
        label = next(label for label in recorded if label.startswith(f"layer {index} "))
        expected = float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                                     for g in jax.tree.leaves(grads[index]))))
        np.testing.assert_allclose(recorded[label]["grad_norm"], expected, rtol=1e-4, err_msg=label)
