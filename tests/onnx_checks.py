"""``fnnet export`` of a trained run, checked: shared by the tests that train the CLI's runs
(test_cli: the MLP, test_cnn: the CNN, test_cnn: the ResNet, test_gpt: the GPT)."""

import pathlib

import jax
import numpy as np
import pytest

import fnnet
from fnnet.app import cli

TOLERANCE = 1e-5
BATCHES = (1, 3, 8)


def assert_run_exports(run_dir, out: pathlib.Path, capsys, x=None):
    """``fnnet export RUN_DIR out.onnx`` succeeds (its own onnxruntime check passes), and the ONNX
    outputs equal ``run.predict`` (a GPT: its logits) on batches of 1, 3 and 8."""
    onnxruntime = pytest.importorskip("onnxruntime", reason="the interop extra: pip install 'fnnet[interop]'")
    capsys.readouterr()
    assert cli.main(["export", str(run_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime agrees with fnnet" in printed, printed
    run = fnnet.load_run(run_dir)
    examples = run.examples(max(BATCHES))[0] if x is None else x[:max(BATCHES)]
    if run.is_language_model:   # fnnet's side once, on the largest batch: in evaluation mode examples are independent
        logits = jax.jit(lambda params, state, ids: fnnet.apply_with_state(run.model, params, state, ids)[0])
        ours = np.asarray(logits(run.params, run.model_state, examples))
        feed = np.asarray(examples, np.int64)
    else:
        ours, feed = np.asarray(run.predict(examples)), np.asarray(examples, np.float32)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in BATCHES:
        theirs = session.run(None, {"input": feed[:batch]})[0]
        assert theirs.shape == ours[:batch].shape
        assert np.max(np.abs(theirs - ours[:batch])) <= TOLERANCE * np.max(np.abs(ours[:batch])), (run_dir, batch)
