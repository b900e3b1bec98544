"""Verify the verifiers: a catalogue of planted bugs, each in a small model, and what every
diagnostic must say about it; and the other way, healthy models that nothing may flag.

For each planted bug: ``fnnet.trace`` marks the right row ``NOT OK`` (or shows the statistic),
``check_model`` names the right layer by its path, ``explain`` agrees with the trace or says it
does not, ``doctor`` fails the right check and only that one, ``debug_nans`` names the layer of
a NaN or inf. A diagnostic that says ``OK`` to a planted bug, or flags a healthy model, fails here.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
import fnnet.app.cli
from fnnet import FanInSum, FanOut, Identity, Residual, draws, parallel, serial
from fnnet.gradcheck import cases
from fnnet.layer import make_layer

# -- the bugs: layers whose functions are wrong in one way each ------------------------------------


def _silu(z):
    return z * jax.nn.sigmoid(z)


def _silu_grad(z):
    s = jax.nn.sigmoid(z)
    return s * (1 + z * (1 - s))


def elementwise(name, *, forward_scale=1.0, grad=None, swapped=False):
    """A SiLU layer with one planted bug: ``forward`` scaled, or ``backward`` given by
    ``grad(z, dy)`` (the correct one is ``dy · silu'(z)``), or the pair returned swapped."""
    grad = grad or (lambda z, dy: dy * _silu_grad(z))

    def backward(params, z, dy):
        dx = grad(z, dy)
        return (dx, ()) if swapped else ((), dx)

    return make_layer(name, lambda key, shape: (tuple(shape), ()), lambda params, z: _silu(z),
                      lambda params, z: (forward_scale * _silu(z), z), backward)


NanSilu = elementwise("NanSilu", grad=lambda z, dy: dy * jnp.nan)
InfSilu = elementwise("InfSilu", grad=lambda z, dy: dy * _silu_grad(z) + jnp.inf)
LoudSilu = elementwise("LoudSilu", forward_scale=1.5)
ScaledSilu = elementwise("ScaledSilu", grad=lambda z, dy: 1.01 * dy * _silu_grad(z))
SwappedSilu = elementwise("SwappedSilu", swapped=True)

# ReLU whose backward is NaN exactly at the kink z == 0 (fed by a ReLU, it sees exact zeros)
KinkNanRelu = make_layer("KinkNanRelu", lambda key, shape: (tuple(shape), ()), lambda p, z: jax.nn.relu(z),
                         lambda p, z: (jax.nn.relu(z), z),
                         lambda p, z, dy: ((), dy * jnp.where(z > 0, 1.0, jnp.where(z == 0, jnp.nan, 0.0))))

# y = x − (mean over the batch): a correct backward of a function that mixes the examples
BatchCentred = make_layer("BatchCentred", lambda key, shape: (tuple(shape), ()),
                          lambda p, x: x - jnp.mean(x, axis=0, keepdims=True),
                          lambda p, x: (x - jnp.mean(x, axis=0, keepdims=True), None),
                          lambda p, r, dy: ((), dy - jnp.mean(dy, axis=0, keepdims=True)))


def running_mean_layer(forward_factor):
    """Identity that keeps a running mean of its input as state (BatchNorm-like); its forward
    updates the state with ``forward_factor`` × the batch mean (1 is right)."""
    def stateful_init(key, shape):
        return tuple(shape), (), {"mean": jnp.zeros(shape[-1])}

    def new_state(state, x, factor):
        return {"mean": 0.9 * state["mean"] + 0.1 * factor * jnp.mean(x, axis=0)}

    def stateful_apply(params, state, x, *, key=None, train=False):
        return x, (new_state(state, x, 1.0) if train else state)

    def stateful_forward(params, state, x, *, key=None, train=False):
        return x, None, (new_state(state, x, forward_factor) if train else state)

    return make_layer("RunningMean", lambda key, shape: (tuple(shape), ()), lambda p, x: x,
                      lambda p, x: (x, None), lambda p, r, dy: ((), dy), stateful_init=stateful_init,
                      stateful_apply=stateful_apply, stateful_forward=stateful_forward)


class Planted(NamedTuple):
    name: str
    model: fnnet.Layer
    path: str
    """The trace path of the faulty layer."""
    says: str
    """What the faulty row's problem (or check_model's culprit) must say."""


def _mlp(bug):
    return serial(fnnet.Dense(4), fnnet.Tanh, bug, fnnet.Dense(2))


PLANTED = [
    Planted("NaN backward everywhere", _mlp(NanSilu), "2", "dx has"),
    Planted("NaN backward only at the kink", serial(fnnet.Dense(4), fnnet.Relu, KinkNanRelu, fnnet.Dense(2)), "2",
            "nan"),
    Planted("inf backward", _mlp(InfSilu), "2", "inf"),
    Planted("forward disagrees with apply", _mlp(LoudSilu), "2", "forward's output differs from apply's"),
    Planted("backward scaled by 1.01", _mlp(ScaledSilu), "2", "dx disagrees with jax.vjp"),
    Planted("wrong gradient in a Residual's branch",
            serial(fnnet.Dense(4), fnnet.Tanh, Residual(serial(fnnet.Dense(4), ScaledSilu)), fnnet.Dense(2)),
            "2/1/0/1", "dx disagrees with jax.vjp"),
    Planted("wrong gradient in one branch of a parallel",
            serial(fnnet.Dense(4), FanOut(2), parallel(Identity, ScaledSilu), FanInSum, fnnet.Dense(2)),
            "2/1", "dx disagrees with jax.vjp"),
]


def _data(in_features=3, examples=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(examples, in_features))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    return x, y


def _params(model, in_features=3):
    return model.init(jax.random.PRNGKey(0), (in_features,))[1]


@pytest.mark.parametrize("bug", PLANTED, ids=lambda b: b.name)
def test_trace_marks_the_faulty_row_and_only_it(x64, bug):
    x, y = _data()
    trace = fnnet.trace(bug.model, fnnet.losses.softmax_cross_entropy, _params(bug.model), x, y)
    assert not trace.passed
    faulty = trace.layer(bug.path)
    assert not faulty.passed
    assert bug.says in (faulty.problem or faulty.nonfinite), (faulty.problem, faulty.nonfinite)
    assert f"{faulty.label}: " in str(trace).splitlines()[0] and faulty.label == f"layer {bug.path} ({faulty.name})"
    row = next(line for line in str(trace).splitlines()[3:] if line.split()[0] == str(faulty.index))
    assert "NOT OK" in row
    for layer in trace.layers:  # the layers after it (in forward order) did nothing wrong
        if layer.backward_order is not None and faulty.backward_order is not None and \
                layer.backward_order < faulty.backward_order:
            assert layer.passed, (layer.index, layer.name, layer.problem, layer.nonfinite)


@pytest.mark.parametrize("bug", PLANTED, ids=lambda b: b.name)
def test_check_model_names_the_faulty_layer_by_its_path(x64, bug):
    x, y = _data()
    report = fnnet.gradcheck.check_model(bug.model, fnnet.losses.softmax_cross_entropy, _params(bug.model), x, y,
                                         raise_on_failure=False)
    assert not report.passed
    assert report.culprit_path == bug.path, report.culprit
    assert bug.says in report.culprit or "nan" in report.culprit or "inf" in report.culprit, report.culprit
    for row in report.rows:  # a NaN is never measured as a zero error
        assert row.passed or row.max_rel_error > 0 or row.fd_rel_error > 0 or np.isnan(row.fd_rel_error), row
    with pytest.raises(fnnet.gradcheck.GradientMismatch, match=f"layer {bug.path} \\("):
        fnnet.gradcheck.check_model(bug.model, fnnet.losses.softmax_cross_entropy, _params(bug.model), x, y)


@pytest.mark.parametrize("bug", [b for b in PLANTED if "NaN" in b.name or "inf" in b.name], ids=lambda b: b.name)
def test_debug_nans_names_the_layer_of_a_nan_or_inf(x64, bug):
    x, y = _data()
    found = fnnet.debug_nans(bug.model, fnnet.losses.softmax_cross_entropy, _params(bug.model), x, y)
    assert found is not None and found.where == "backward" and found.path == bug.path, found


def test_swapped_backward_pair_is_named_where_it_is_returned(x64):
    model = _mlp(SwappedSilu)
    params, (x, y) = _params(model), _data()
    with pytest.raises(ValueError, match=r"layer 2 \(SwappedSilu\): backward returned .*\(dparams, dx\)"):
        fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    report = fnnet.gradcheck.check_model(model, fnnet.losses.softmax_cross_entropy, params, x, y,
                                         raise_on_failure=False)
    assert not report.passed and "SwappedSilu" in report.failure and report.culprit_path == "2"
    layer_report = fnnet.gradcheck.check_layer(SwappedSilu, (), jnp.ones((3, 4)), raise_on_failure=False)
    assert not layer_report.passed and "(dparams, dx)" in layer_report.failure
    with pytest.raises(ValueError, match="SwappedSilu"):
        fnnet.value_and_grad(model, fnnet.losses.softmax_cross_entropy)(params, x, y)
    with pytest.raises(ValueError, match="SwappedSilu"):
        fnnet.train.fit(model, fnnet.losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=1, batch_size=4,
                        key=jax.random.PRNGKey(0))


def test_a_dparams_tuple_for_a_dict_is_named(x64):
    dense = fnnet.Dense(2)
    bad = make_layer("TupleDense", dense.init, dense.apply, dense.forward,
                     lambda p, r, dy: (tuple(dense.backward(p, r, dy)[0].values()), dense.backward(p, r, dy)[1]))
    model = serial(fnnet.Dense(3), fnnet.Tanh, bad)
    params, (x, y) = _params(model), _data()
    with pytest.raises(ValueError, match=r"layer 2 \(TupleDense\): backward returned dparams"):
        fnnet.value_and_grad(model, fnnet.losses.softmax_cross_entropy)(params, x, y)
    report = fnnet.gradcheck.check_model(model, fnnet.losses.softmax_cross_entropy, params, x, y,
                                         raise_on_failure=False)
    assert not report.passed and report.culprit_path == "2"


def test_a_wrong_new_state_is_caught(x64):
    model = serial(fnnet.Dense(3), running_mean_layer(2.0), fnnet.Dense(2))
    _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (3,))
    x, y = _data()
    report = fnnet.gradcheck.check_model(model, fnnet.losses.softmax_cross_entropy, params, x, y,
                                         raise_on_failure=False)
    assert not report.passed and report.culprit_path == "1" and "new state" in report.culprit
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y, state=state, train=True)
    assert [layer.passed for layer in trace.layers] == [True, False, True]
    assert "new state" in trace.layers[1].problem
    healthy = serial(fnnet.Dense(3), running_mean_layer(1.0), fnnet.Dense(2))
    assert fnnet.trace(healthy, fnnet.losses.softmax_cross_entropy, params, x, y, state=state, train=True).passed
    assert fnnet.gradcheck.check_model(healthy, fnnet.losses.softmax_cross_entropy, params, x, y).passed


def test_nan_everywhere_trace_says_not_ok_never_zero(x64):
    model = _mlp(NanSilu)
    x, y = _data()
    text = str(fnnet.trace(model, fnnet.losses.softmax_cross_entropy, _params(model), x, y))
    row = text.splitlines()[5]  # layer 2
    assert row.split()[2] == "NanSilu" and "NOT OK" in row and "OK (0.0e+00)  OK (0.0e+00)" not in row
    assert "every backward agrees" not in text.splitlines()[0]


# -- explain over fan-outs and residual connections -------------------------------------------------

def test_explain_sums_every_consumer_of_a_fan_out(x64):
    model = serial(fnnet.Dense(3), FanOut(2), parallel(Identity, fnnet.Dense(3)), FanInSum, fnnet.Dense(2))
    params, (x, y) = _params(model), _data()
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    assert trace.passed
    text = fnnet.explain(trace, layer=0, unit=1, example=2)
    assert "≠" not in text, text
    assert "layer 2/0 (Identity)" in text and "layer 2/1 (Dense(3))" in text  # both branches, each labelled
    derived = float(text.split("\n  = ")[1].split()[0])
    np.testing.assert_allclose(derived, trace.layers[0].dy[2, 1], rtol=1e-5)  # printed to 6 digits


def test_explain_sums_a_residual_connection_and_agrees(x64):
    model = serial(fnnet.Dense(4), fnnet.Tanh, Residual(serial(fnnet.Dense(4), fnnet.Tanh)), fnnet.Dense(2))
    params, (x, y) = _params(model), _data()
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    text = fnnet.explain(trace, layer=1, unit=3, example=0)
    assert "≠" not in text and "traced:" in text, text


def test_explain_says_when_its_derivation_disagrees_with_the_trace(x64):
    model = serial(fnnet.Dense(4), ScaledSilu, fnnet.Dense(2))
    params, (x, y) = _params(model), _data()
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    text = fnnet.explain(trace, layer=0, unit=1, example=0)
    assert "≠ traced" in text and "layer 1 (ScaledSilu)" in text and "disagree" in text, text
    branch = serial(fnnet.Dense(3), Residual(serial(fnnet.Dense(3), ScaledSilu)), fnnet.Dense(2))
    trace = fnnet.trace(branch, fnnet.losses.softmax_cross_entropy, _params(branch), x, y)
    assert "≠ traced" in fnnet.explain(trace, layer="1/1/0/0", unit=0, example=0)
    assert "NOT OK" in fnnet.explain(trace, layer="1/1/0/1", unit=0, example=0)  # the faulty layer itself


def test_explain_formats_numbers_and_rows_honestly(x64):
    model = serial(fnnet.Dense(3, use_bias=False), fnnet.Tanh, fnnet.Dense(2))
    params, (x, y) = _params(model), _data()
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    text = fnnet.explain(trace, layer=0, unit=0, example=0) + fnnet.explain(trace, layer=1, unit=0, example=1)
    assert "−-" not in text and "b[0]" not in text and "= -0 " not in text and not text.endswith("= -0")
    conv = serial(fnnet.Reshape((2, 2, 1)), fnnet.Conv(2, 1), fnnet.Relu, fnnet.Flatten, fnnet.Dense(2))
    x4 = np.random.default_rng(1).normal(size=(3, 4))
    trace = fnnet.trace(conv, fnnet.losses.softmax_cross_entropy, _params(conv, 4), x4, np.array([0, 1, 0]))
    assert "example 1, position (0, 1)" in fnnet.explain(trace, layer=2, unit=0, example=5)


# -- doctor: the right check, and only that one -----------------------------------------------------

def _verdicts(report):
    return {check.name: check.passed for check in report.checks}



def _doctor_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    return x, (x[:, 0] - x[:, 2] > 0).astype(np.int32)


@pytest.mark.parametrize("bug", [PLANTED[0], PLANTED[3], PLANTED[4], PLANTED[5]], ids=lambda b: b.name)
def test_doctor_fails_the_gradcheck_and_nothing_else(bug):
    report = fnnet.doctor(bug.model, fnnet.losses.softmax_cross_entropy, _params(bug.model), _doctor_data())
    verdicts = _verdicts(report)
    assert verdicts.pop("gradcheck at these parameters") is False, str(report)
    assert False not in verdicts.values(), str(report)
    assert f"layer {bug.path} (" in str(report), str(report)
    assert "mixes the examples" not in str(report)


def test_doctor_fails_the_independence_check_of_a_layer_that_mixes_examples():
    model = serial(fnnet.Dense(8), fnnet.Tanh, BatchCentred, fnnet.Dense(2))
    report = fnnet.doctor(model, fnnet.losses.softmax_cross_entropy, _params(model), _doctor_data())
    verdicts = _verdicts(report)
    assert verdicts.pop("examples independent") is False, str(report)
    assert False not in verdicts.values(), str(report)


def test_doctor_fails_the_dead_units_check_of_a_dead_relu_layer():
    model = serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(2))
    params = _params(model)
    dead = dict(params[0], b=params[0]["b"].at[:10].set(-100.0))  # 10 of 16 units never fire
    params = (dead,) + params[1:]
    report = fnnet.doctor(model, fnnet.losses.softmax_cross_entropy, params, _doctor_data(), init_params=params)
    verdicts = _verdicts(report)
    assert verdicts.pop("dead or saturated units at init") is False, str(report)
    assert "layer 1 (Relu): 62% dead units" in str(report)
    assert False not in verdicts.values(), str(report)
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, *_doctor_data())
    assert trace.layers[1].stats["dead"] == pytest.approx(10 / 16) and trace.passed


def test_doctor_and_trace_refuse_labels_outside_the_classes():
    model = serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(2))
    params = _params(model)
    x, y = _doctor_data()
    y = y.copy()
    y[3] = 7
    for call in (lambda: fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y),
                 lambda: fnnet.debug_nans(model, fnnet.losses.softmax_cross_entropy, params, x, y),
                 lambda: fnnet.doctor(model, fnnet.losses.softmax_cross_entropy, params, (x, y)),
                 lambda: fnnet.value_and_grad(model, fnnet.losses.softmax_cross_entropy)(params, x, y),
                 lambda: fnnet.gradcheck.check_model(model, fnnet.losses.softmax_cross_entropy, params, x, y)):
        with pytest.raises(ValueError, match=r"labels in \[0, 2\).*7 at index 3"):
            call()


# -- training: a too-high learning rate, a short last batch ----------------------------------------

# a too-high learning rate: tests/test_see_inside.py::test_monitor_flags_a_too_high_learning_rate (the
# monitor's warning) and test_fit_locates_a_too_high_learning_rate (debug_nans names the layer); a short
# last batch: tests/test_monitor_padding.py (the statistics are the real rows', no warning)


# -- the other way: healthy models pass every diagnostic -------------------------------------------

SINGLE = [case for case in cases.LAYER_CASES if not (case.in_shape and isinstance(case.in_shape[0], tuple))]
SAMPLE = {"Dense", "Relu", "Sigmoid", "Conv 3x3 SAME", "MaxPool 2x2", "LayerNorm", "BatchNorm (train)",
          "Dropout (train)", "Embedding", "CausalSelfAttention (2 heads)", "Residual", "FanOut + parallel + FanInConcat"}
"""The kinds traced in ``make test``; every catalogue layer in the slow run (~30 s)."""


@pytest.mark.parametrize("case", [case if case.name in SAMPLE else pytest.param(case, marks=pytest.mark.slow)
                                  for case in SINGLE], ids=lambda c: c.name)
def test_every_catalogue_layer_passes_trace(x64, case):
    out_shape, params, state = case.init(jax.random.PRNGKey(1))
    if isinstance(out_shape[0], tuple):
        pytest.skip("a layer with several outputs: traced inside the combinator cases")
    x = case.inputs(jax.random.PRNGKey(2), (4,), jnp.float64)
    target = draws.normal(jax.random.PRNGKey(3), (4,) + tuple(out_shape), jnp.float64)
    trace = fnnet.trace(case.layer, fnnet.losses.mse, params, x, target, state=state, key=jax.random.PRNGKey(4),
                        train=case.train)
    assert trace.passed, str(trace)
    apply = jax.jit(lambda p, s, v: fnnet.apply_with_state(case.layer, p, s, v, key=jax.random.PRNGKey(4),
                                                           train=case.train)[0])
    chex.assert_trees_all_close(trace.pred, np.asarray(apply(params, state, x)))


def test_healthy_models_pass_check_model_trace_and_doctor():
    x, y = _doctor_data()
    for model in (serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(2)),
                  serial(fnnet.Dense(16), fnnet.Relu, Residual(serial(fnnet.Dense(16), fnnet.Tanh)), fnnet.Dense(2)),
                  serial(fnnet.Dense(16), FanOut(2), parallel(Identity, fnnet.Dense(16)), FanInSum, fnnet.Relu,
                         fnnet.Dense(2))):
        params = _params(model)
        if model.children[2].children:  # a residual, a fan-out (the plain MLP's doctor: the CLI tests below)
            report = fnnet.doctor(model, fnnet.losses.softmax_cross_entropy, params, (x, y))
            assert report.passed, str(report)
        else:
            report = fnnet.gradcheck.check_model(model, fnnet.losses.softmax_cross_entropy, params, x[:4], y[:4],
                                                 raise_on_failure=False)
            assert report.passed and report.culprit is None, str(report)
        with jax.enable_x64(True):
            trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x[:8], y[:8])
        assert trace.passed, str(trace)
        for layer in trace.layers:
            for unit in range(min(2, np.shape(layer.y)[-1])):
                assert "≠" not in fnnet.explain(trace, layer.index, unit, example=1)


# -- the command line on the built-in data sets and runs -------------------------------------------

@pytest.mark.parametrize("dataset", ["xor", "regression",  # breast-cancer: test_see_inside.py::test_cli_doctor
                                     pytest.param("digits", marks=pytest.mark.slow),
                                     pytest.param("mnist", marks=pytest.mark.slow)])
def test_cli_doctor_passes_every_builtin_data_set_with_its_default_model(dataset, capsys, shared_data, monkeypatch):
    """`fnnet doctor DATASET`: a fresh model as `fnnet train DATASET` would start, nothing flagged
    (digits and MNIST in the slow run; the CNN, Fashion-MNIST and the GPT in the slow test below; the
    trained runs in test_see_inside, test_cnn and test_gpt)."""
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    assert fnnet.app.cli.main(["doctor", dataset]) == 0
    out = capsys.readouterr().out
    assert "every check passed" in out and "✗" not in out and "at a fresh initialisation" in out, out


@pytest.mark.slow  # ~45 s: the CNN's and the GPT's float64 gradchecks and overfits
@pytest.mark.parametrize("args", [["fashion-mnist"], ["mnist", "--model", "cnn"], ["shakespeare"]], ids=" ".join)
def test_cli_doctor_passes_the_cnn_fashion_and_the_gpt(args, capsys, shared_data, monkeypatch):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    assert fnnet.app.cli.main(["doctor", *args]) == 0
    out = capsys.readouterr().out
    assert "every check passed" in out and "✗" not in out, out


def test_check_layer_honours_raise_on_failure_for_a_forward_of_another_shape(x64):
    squeeze = make_layer("Squeezed", lambda key, shape: (tuple(shape), ()), lambda p, z: z,
                         lambda p, z: (z[..., :1], None), lambda p, r, dy: ((), dy))
    report = fnnet.gradcheck.check_layer(squeeze, (), jnp.ones((3, 4)), raise_on_failure=False)
    assert not report.passed and "forward returns" in report.failure
    with pytest.raises(fnnet.gradcheck.GradientMismatch, match="Squeezed: forward returns"):
        fnnet.gradcheck.check_layer(squeeze, (), jnp.ones((3, 4)))
