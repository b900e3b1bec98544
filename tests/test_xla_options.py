"""fnnet.xla_options: the XLA options fnnet compiles its convnet programs with, and that they change
how a convolution is compiled, not what it computes."""

import re

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import fnnet
from fnnet import draws, losses, train, xla_options
from fnnet.train.evaluation import evaluation_program

CNN = fnnet.serial(fnnet.Conv(32, 3), fnnet.BatchNorm(), fnnet.Relu, fnnet.MaxPool(2), fnnet.Flatten, fnnet.Dense(3))
SHAPE = (14, 14, 16)  # XLA's cost model hands a convolution this size (batch 32) to YNNPACK; smaller ones it keeps


def _ynn_convolutions(compiled_text: str) -> list[str]:
    """The YNNPACK fusions of a compiled program's HLO that hold a convolution."""
    return [line for line in compiled_text.splitlines()
            if "__ynn_fusion" in line and " fusion(" in line and re.search(r"conv_general_dilated\"", line)]


def test_only_models_with_a_convolution_get_options(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_options.compiler_options(fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(2))) is None
    assert xla_options.has_convolution(fnnet.serial(fnnet.Residual(fnnet.serial(fnnet.Conv1D(2, 3))), fnnet.Flatten))
    assert xla_options.compiler_options(CNN) == {xla_options.YNN_FUSION_TYPES: xla_options.WITHOUT_YNN_CONVOLUTIONS}
    # the user's own choice in XLA_FLAGS wins: fnnet then passes nothing
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-reduce")
    assert xla_options.compiler_options(CNN) is None


def test_the_options_move_convolutions_off_ynnpack_and_compute_the_same_step():
    x = draws.normal(jax.random.PRNGKey(0), (32,) + SHAPE)
    y = jax.random.randint(jax.random.PRNGKey(1), (32,), 0, 3)
    optimizer = optax.sgd(0.1)  # not Adam: its first step is lr·sign(g), and BN makes the conv bias's g ~1e-9 noise
    model = fnnet.serial(fnnet.Conv(32, 3), fnnet.Relu, fnnet.MaxPool(2), fnnet.Flatten, fnnet.Dense(3))  # no BN:
    # over a channel of near-constant outputs BatchNorm's 1/σ magnifies the last bit of the convolution
    state = train.init_state(model, optimizer, jax.random.PRNGKey(2), SHAPE)
    step = train.make_train_step(model, losses.softmax_cross_entropy, optimizer)
    default, chosen = jax.jit(step), jax.jit(step, compiler_options=xla_options.compiler_options(model))
    if not _ynn_convolutions(default.lower(state, x, y).compile().as_text()):
        pytest.skip("XLA's defaults no longer hand convolutions to YNNPACK here: fnnet.xla_options may be "
                    "unnecessary with this jaxlib")
    assert _ynn_convolutions(chosen.lower(state, x, y).compile().as_text()) == []
    (state_a, metrics_a), (state_b, metrics_b) = default(state, x, y), chosen(state, x, y)
    chex.assert_trees_all_close(state_b.params, state_a.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(metrics_b["loss"], metrics_a["loss"], rtol=1e-6)


def test_fit_and_evaluation_compile_with_the_options(monkeypatch):
    asked, chosen = [], xla_options.compiler_options

    def recorded(model):
        asked.append(model)
        return chosen(model)

    monkeypatch.setattr(xla_options, "compiler_options", recorded)
    x = draws.normal(jax.random.PRNGKey(0), (40,) + SHAPE)
    y = jax.random.randint(jax.random.PRNGKey(1), (40,), 0, 3)
    _, history = train.fit(CNN, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=2, batch_size=32,
                           key=jax.random.PRNGKey(0), eval_data=(x, y), verbose=False)
    assert asked[:2] == [CNN, CNN] and history.traces == 1 and jnp.isfinite(history.eval_loss[-1])  # epoch, eval
    _, params, model_state = fnnet.init_with_state(CNN, jax.random.PRNGKey(0), SHAPE)
    program = evaluation_program(CNN, losses.softmax_cross_entropy, x[:32])
    assert _ynn_convolutions(program.lower(params, model_state, x[:32], y[:32]).compile().as_text()) == []


def test_the_trace_knows_its_options_and_conv_dw_in_either_form_matches_jax_vjp():
    """Under :func:`xla_options.jit` (fit's programs) ``Conv``'s backward computes ``dW`` as a
    convolution, elsewhere on the CPU as one im2col product: both must be ``jax.vjp`` of the forward."""
    seen = []
    model = fnnet.serial(fnnet.Conv(6, 3, strides=2, padding="VALID"), fnnet.Relu, fnnet.Conv(4, 3, dilation=2))
    jax.jit(lambda x: seen.append(xla_options.xla_convolutions()) or x)(1.0)
    xla_options.jit(lambda x: seen.append(xla_options.xla_convolutions()) or x, model)(1.0)
    assert seen == [False, True] and not xla_options.xla_convolutions()  # set only while tracing
    _, params = model.init(jax.random.PRNGKey(0), (13, 13, 3))
    x = draws.normal(jax.random.PRNGKey(1), (4, 13, 13, 3))
    y, vjp = jax.vjp(model.apply, params, x)
    dy = draws.normal(jax.random.PRNGKey(2), y.shape)
    expected = vjp(dy)

    def hand_written(params, x, dy):
        _, residuals = model.forward(params, x)
        return model.backward(params, residuals, dy)

    for jitted in (jax.jit(hand_written), xla_options.jit(hand_written, model)):
        chex.assert_trees_all_close(jitted(params, x, dy), expected, rtol=2e-5, atol=2e-5)
