"""``fit`` and ``fit_language_model`` share one checkpointer: a Ctrl-C or a lost output keeps the last
finished epoch (or interval) in both."""

import jax
import numpy as np
import optax
import pytest

import fnnet
from fnnet import checkpoint, losses, train
from fnnet.train import language


def _raise_on_second_line(monkeypatch, record, error):
    """Makes ``record.line`` (the verbose line printed after each epoch or interval, before its
    checkpoint) raise ``error`` the second time: the second unit is finished but not yet saved."""
    calls = []
    line = record.line

    def second_raises(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return line(self, *args, **kwargs)

    monkeypatch.setattr(record, "line", second_raises)


INTERRUPTS = [KeyboardInterrupt(), BrokenPipeError(32, "Broken pipe")]


@pytest.mark.parametrize("error", INTERRUPTS, ids=["ctrl-c", "lost-output"])
def test_fit_language_model_keeps_the_last_finished_interval(tmp_path, monkeypatch, error):
    _raise_on_second_line(monkeypatch, language.LanguageHistory, error)
    model = fnnet.serial(fnnet.Embedding(7, 8), fnnet.Dense(7))
    tokens = np.arange(200) % 7
    with pytest.raises(type(error)):
        train.fit_language_model(model, optax.adam(1e-2), tokens, tokens, block_size=8, batch_size=4, steps=20,
                                 eval_interval=5, eval_batches=1, key=jax.random.PRNGKey(0), verbose=True,
                                 checkpoint_dir=tmp_path)
    path = tmp_path / train.CHECKPOINT_NAME
    assert checkpoint.read_metadata(path)["history"]["step"] == [5, 10]
    assert train.checkpoint_progress(path) == ("step", 10)
    assert int(checkpoint.load(path)["step"]) == 10


@pytest.mark.parametrize("error", INTERRUPTS, ids=["ctrl-c", "lost-output"])
def test_fit_keeps_the_last_finished_epoch(tmp_path, monkeypatch, error):
    _raise_on_second_line(monkeypatch, train.History, error)
    x, y = fnnet.datasets.xor()
    model = fnnet.serial(fnnet.Dense(4), fnnet.Tanh, fnnet.Dense(1))
    with pytest.raises(type(error)):
        train.fit(model, losses.sigmoid_binary_cross_entropy, optax.sgd(0.5), (x, y), epochs=5, batch_size=4,
                  key=jax.random.PRNGKey(0), verbose=True, checkpoint_dir=tmp_path, checkpoint_every=3600)
    path = tmp_path / train.CHECKPOINT_NAME
    assert train.checkpoint_progress(path) == ("epoch", 2)
    assert checkpoint.read_metadata(path)["history"]["epoch"] == [1, 2]
    assert int(checkpoint.load(path)["step"]) == 2
