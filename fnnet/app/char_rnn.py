"""The Tiny Shakespeare char-rnn recipe: ``fnnet train shakespeare --model lstm`` (or ``rnn``, ``gru``).

Karpathy's char-rnn (:mod:`fnnet.charrnn`: an embedding, ``--layers`` recurrent layers of ``--hidden``
units, a Dense head) trained on windows of ``--seq-len`` characters, ``--batch-size`` of them a
step, with gradients clipped to global norm 5 and Adam with a cosine decay from ``--lr`` to a tenth
of it (:func:`fnnet.charrnn.optimizer`). ``--windows`` picks how a step's windows are drawn: at
random starts, as the GPT's, or ``streams``, consecutive windows of ``batch_size`` streams with each
layer's carry kept from one step to the next (truncated backprop through time,
:func:`fnnet.layers.recurrent.Stateful`); docs/charrnn.md gives the measurements that chose the default.

Validation is the GPT's: the same split (the last 10% of the text), the same estimate during training
(20 batches of random windows of 64 characters, each read from a zero carry) and the same exact loss
at the end (every consecutive window of 64 characters of the split): :data:`EVAL_BLOCK_SIZE`.
The run folder is the GPT's too (:func:`fnnet.app.shakespeare.run_train` writes both), its
``config.json`` holding these settings.
"""

from __future__ import annotations

from fnnet import charrnn
from fnnet.app.choices import CHAR_RNN_MODELS, WINDOWS
from fnnet.train import language

if CHAR_RNN_MODELS != tuple(charrnn.CELLS) or WINDOWS != language.WINDOWS:  # the parser's names, without JAX
    raise RuntimeError(f"fnnet.app.choices.CHAR_RNN_MODELS and WINDOWS must be {tuple(charrnn.CELLS)} and "
                       f"{language.WINDOWS} (fnnet.charrnn.CELLS, fnnet.train.language.WINDOWS)")

EVAL_BLOCK_SIZE = 64
"""The validation windows' length: the GPT's context (``fnnet.app.shakespeare.DEFAULTS["block_size"]``),
so that both are judged on the same windows."""

DEFAULTS = {
    "dataset": "shakespeare", "model": "lstm", "loss": "softmax_cross_entropy",
    "layers": 2, "hidden": 128, "seq_len": 50, "dropout": 0.0, "windows": "random",
    "batch_size": 50, "steps": 3000, "lr": 2e-3, "min_lr": 2e-4, "clip": 5.0,
    "eval_interval": 250, "eval_batches": 20, "eval_block_size": EVAL_BLOCK_SIZE, "grad": "manual", "seed": 0,
}
"""``fnnet train shakespeare --model lstm``'s settings (each has a flag: ``--layers``, ``--seq-len``...)."""

TARGET_VAL_LOSS = 1.65
"""The validation loss the default recipe reaches within 10 minutes on a 2-core CPU (docs/charrnn.md)."""

_FIELDS = {"num_layers": "layers", "hidden": "hidden", "dropout": "dropout"}
"""Each :class:`fnnet.charrnn.CharRNNConfig` field a flag sets, and its setting."""


def is_char_rnn(config: dict) -> bool:
    """True for the settings of a char-rnn run (``model`` ``rnn``, ``lstm`` or ``gru``)."""
    return config.get("model") in CHAR_RNN_MODELS


def validation_window(config: dict) -> int:
    """The windows a language-model run is validated on: a char-rnn's :data:`EVAL_BLOCK_SIZE`, a GPT's
    context (``block_size``)."""
    return int(config["eval_block_size"] if is_char_rnn(config) else config["block_size"])


def model_config(config: dict, training: bool = False) -> charrnn.CharRNNConfig:
    """The :class:`fnnet.charrnn.CharRNNConfig` of a char-rnn run's settings (``vocab`` included). Its
    recurrent layers keep their carry between windows (``stream_batch``) only for ``training`` a
    ``--windows streams`` run: the params are the same either way, and everything else (eval, sample,
    trace, doctor, export) reads windows of any batch from a zero carry, as the plain layers do."""
    streams = training and config.get("windows") == "streams"
    return charrnn.CharRNNConfig(vocab_size=len(config["vocab"]), cell=config["model"],
                                 num_layers=int(config["layers"]), hidden=int(config["hidden"]),
                                 dropout=float(config["dropout"]),
                                 stream_batch=int(config["batch_size"]) if streams else None).check()


def build(config: dict, training: bool = False):
    """``(model, in_shape)`` of a char-rnn run's settings: ``in_shape`` one validation window
    (``training``: the model :func:`recipe` trains, :func:`model_config`)."""
    return charrnn.CharRNN(model_config(config, training)), (validation_window(config),)


def recipe(config: dict):
    """``(model, optimizer, fit options)``: what :func:`fnnet.train.language.fit_language_model` trains,
    and with which of its arguments (the windows)."""
    model, _ = build(config, training=True)
    optimizer = charrnn.optimizer(int(config["steps"]), lr=float(config["lr"]), min_lr=float(config["min_lr"]),
                                  clip=float(config["clip"]))
    return model, optimizer, {"block_size": int(config["seq_len"]), "windows": config["windows"],
                              "eval_block_size": validation_window(config)}


def settings_error(config: dict) -> str | None:
    """What is wrong with a char-rnn's settings (a message naming the flag), or None."""
    try:
        charrnn.CharRNNConfig(vocab_size=1, cell=config["model"],
                              **{field: config[name] for field, name in _FIELDS.items()}).check()
    except ValueError as error:
        field = str(error).split()[1]  # "CharRNNConfig: FIELD ..."
        if field == "dropout":
            return f"--dropout must be in [0, 1), got {config['dropout']}"
        name = _FIELDS.get(field, field)
        return f"--{name} must be a positive integer, got {config[name]!r}"
    for name in ("seq_len", "batch_size", "steps", "eval_interval", "eval_batches"):
        if not isinstance(config[name], int) or isinstance(config[name], bool) or config[name] < 1:
            return f"--{name.replace('_', '-')} must be a positive integer, got {config[name]!r}"
    if not config["lr"] > 0:
        return f"--lr must be > 0, got {config['lr']}"
    return None
