"""A trained run folder, loaded back: :func:`load_run` gives a :class:`Run` that predicts.

``fnnet train DATASET --out RUN_DIR`` writes ``config.json`` (the recipe: data set, hidden
widths, activation, loss, input shape...), ``checkpoint.safetensors`` (the whole
:class:`fnnet.train.TrainState`) and ``metrics.json``. :func:`load_run` rebuilds the model
from the config with :mod:`fnnet.app.recipes`, loads just the params, checked against the
model's shapes, and keeps the loss so that probabilities and labels mean the right thing::

    run = fnnet.load_run("runs/mnist")
    logits = run.predict(x)              # raw outputs, x of shape (N, 784) or (N, 28, 28)
    probs = run.predict_proba(x)         # softmax / sigmoid by the loss
    labels = run.predict_labels(x)       # class ids (classifiers only)

Inputs must be preprocessed as the data set's loader in :mod:`fnnet.datasets` returns
them (MNIST pixels in [0, 1], breast-cancer features standardised...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np

import jax

from fnnet import checkpoint, datasets, losses, tracing, train
from fnnet.app import char_rnn, recipes, shakespeare
from fnnet.app.choices import TEXT_MODELS
from fnnet.app.jobs import CONFIG_NAME, METRICS_NAME
from fnnet.app.recipes import RecipeError
from fnnet.checkpoint import CheckpointError
from fnnet.layer import Layer, init_with_state, is_stateful
from fnnet.losses import Loss
from fnnet.summaries import summary
from fnnet.train import language

@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """A trained model with everything needed to use it: built by :func:`load_run`."""

    dir: pathlib.Path
    config: dict              # config.json as written by ``fnnet train``
    model: Layer              # rebuilt from the config by fnnet.app.recipes.build_model
    params: Any               # the trained params, in the structure model.init gives
    loss: Loss                # the training loss: it decides what probabilities and labels are
    in_shape: tuple           # one example's shape, no batch axis
    metrics: dict | None      # metrics.json, or None when the run has none
    model_state: Any = ()     # BatchNorm's running statistics (``()`` for a model without state)

    def __repr__(self) -> str:
        """One line: ``Run(runs/bc: breast-cancer, mlp of 3 layers, 961 parameters, 30 epochs; test
        accuracy 97.37%, test loss 0.0731)`` (``run.params`` holds the numbers themselves)."""
        parts = [self.config.get("dataset") or "a fit() checkpoint"]
        try:
            layers = len(summary(self.model, self.in_shape).rows)
            parts.append(f"{self.config.get('model') or 'model'} of {layers} layer{'' if layers == 1 else 's'}")
        except Exception:  # noqa: BLE001  a repr must not raise: a model summary() cannot lay out shows its name
            parts.append(self.model.name or "model")
        count = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(self.params))
        parts.append(f"{count:,} parameter{'' if count == 1 else 's'}")
        metrics = self.metrics or {}
        if self.is_language_model:
            steps = metrics.get("steps")
            if steps is not None:
                parts.append(f"{steps:,} steps")
        else:
            epochs = metrics.get("epochs", self.config.get("epochs"))
            if epochs is not None:
                parts.append(f"{epochs} epoch{'' if epochs == 1 else 's'}")
        results = []
        if metrics.get("test_accuracy") is not None:
            results.append(f"test accuracy {metrics['test_accuracy']:.2%}")
        for key in ("test_loss", "val_loss"):
            if metrics.get(key) is not None:
                results.append(f"{key.replace('_', ' ')} {metrics[key]:.4g}")
        return f"Run({self.dir}: {', '.join(parts)}" + (f"; {', '.join(results)})" if results else ")")

    __str__ = __repr__

    @property
    def task(self) -> str:
        """``"multiclass"``, ``"binary"`` or ``"regression"`` (from the loss's kind)."""

        return train.resolve_task(self.loss, None) or "regression"

    @property
    def spec(self) -> recipes.DatasetSpec | None:
        """The data set's recipe (loader, class names, preprocessing); ``None`` for a run that
        :func:`fnnet.train.fit` wrote (no data set recorded)."""
        name = self.config.get("dataset")
        return recipes.dataset(name) if name in recipes.DATASETS else None

    @property
    def is_language_model(self) -> bool:
        """True for a GPT or char-rnn run (``fnnet train shakespeare``): it samples text instead of predicting."""
        return self.config.get("model") in TEXT_MODELS

    def sample(self, prompt: str = "\n", num_tokens: int = 500, *, temperature: float = 0.8,
               top_k: int | None = None, seed: int = 0) -> str:
        """A language-model run's text: ``prompt`` and ``num_tokens`` sampled characters.

        Raises:
          ValueError: not a language-model run, or a prompt character outside its vocabulary.
        """
        if not self.is_language_model:
            raise ValueError(f"{self.dir}: a {self.config.get('dataset')} classifier run cannot sample "
                             f"text; use predict")

        return shakespeare.sample(self.model, self.params, self.config, prompt, num_tokens,
                                  temperature=temperature, top_k=top_k, seed=seed, model_state=self.model_state)

    def _text(self):
        """Tiny Shakespeare as character ids, when they are this language model's ids (a model
        converted with another vocabulary reads other ids: an error, not a silently wrong loss)."""
        text = datasets.tiny_shakespeare()
        if text.vocab != self.config.get("vocab"):
            raise RecipeError(f"{self.dir}: its vocabulary ({len(self.config.get('vocab') or '')} characters) is "
                              f"not Tiny Shakespeare's ({text.vocab_size}), so its ids are not the data set's; "
                              f"give it tokens of its own (Run.evaluate(ids))")
        return text

    def as_batch(self, x) -> np.ndarray:
        """``x`` as a float batch of shape ``(N, *in_shape)``: any shape whose examples have
        ``prod(in_shape)`` values is reshaped (MNIST: ``(N, 784)`` or ``(N, 28, 28)``).

        Raises:
          ValueError: naming the expected and the actual shape, or values outside the
            range the data set's loader gives (e.g. MNIST pixels not scaled to [0, 1]).
        """
        if self.is_language_model:
            raise ValueError(f"{self.dir} is a language model ({self.config.get('dataset')}): it samples "
                             f"text (fnnet sample, Run.sample) instead of predicting on arrays")
        x = np.asarray(x)
        numeric = x.dtype.kind in "biuf" or np.issubdtype(x.dtype, np.floating) or \
            jnp.issubdtype(x.dtype, jnp.floating)  # bfloat16 & co (ml_dtypes) are floats too
        if not numeric:
            raise ValueError(f"expected an array of numbers (ints or floats), got one of dtype {x.dtype}")
        if x.dtype != np.float32 and x.dtype != np.float64:
            x = x.astype(np.float32)
        size = math.prod(self.in_shape)
        if x.ndim < 1 or math.prod(x.shape[1:]) != size:
            one = x.size == size and x.ndim >= 1
            hint = f"; for one example use x[None] (shape {(1,) + x.shape})" if one else ""
            raise ValueError(f"expected examples of shape (N, {', '.join(map(str, self.in_shape))}) "
                             f"({size} values each), got shape {x.shape}{hint}")
        x = x.reshape((x.shape[0],) + tuple(self.in_shape))
        if not np.all(np.isfinite(x)):
            raise ValueError(f"holds NaN or infinite values (example {int(np.argwhere(~np.isfinite(x))[0][0])})")
        low_high = self.spec.x_range if self.spec is not None else None
        if low_high is not None and x.size and (x.min() < low_high[0] - 1e-3 or x.max() > low_high[1] + 1e-3):
            raise ValueError(f"values run from {x.min():g} to {x.max():g}; {self.config['dataset']} "
                             f"expects {self.spec.preprocessing}")
        return x

    def predict(self, x, *, batch_size: int = 4096):
        """The model's raw outputs (logits for the fused losses) on ``x`` (see :meth:`as_batch`)."""

        return train.predict(self.model, self.params, self.as_batch(x), batch_size=batch_size,
                             model_state=self.model_state)

    def predict_proba(self, x, *, batch_size: int = 4096):
        """Probabilities: softmax of multi-class logits, sigmoid of binary logits (a regression
        run's values as they are)."""

        return train.predict_proba(self.model, self.params, self.as_batch(x), self.loss,
                                   batch_size=batch_size, model_state=self.model_state)

    def predict_labels(self, x, *, batch_size: int = 4096) -> np.ndarray:
        """Class ids, int32: the argmax for multi-class, ``1`` where the probability of a binary
        output is above 0.5 (shape ``(N,)`` for one output). A ``ValueError`` for regression."""
        if self.task == "regression":
            raise ValueError(f"{self.dir}: a regression run ({self.config['dataset']}) has no labels; "
                             f"use predict")
        proba = np.asarray(self.predict_proba(x, batch_size=batch_size))
        if self.task == "multiclass":
            return np.argmax(proba, axis=-1).astype(np.int32)
        labels = (proba > 0.5).astype(np.int32)
        return labels[..., 0] if labels.shape[-1] == 1 else labels

    def examples(self, count: int = 8, split: str = "test") -> tuple:
        """``(x, y)``: the first ``count`` examples of the ``"test"`` (or ``"train"``) split as
        ``fnnet train`` used it (for a language model: ``count`` windows of its validation window's
        length, :func:`fnnet.app.char_rnn.validation_window`, of validation, or training, tokens and
        their next tokens)."""
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"examples: count must be a positive int, got {count!r}")
        if split not in ("train", "test"):
            raise ValueError(f"examples: split must be 'train' or 'test', got {split!r}")
        if self.is_language_model:
            block = char_rnn.validation_window(self.config)
            text = self._text()
            return language.consecutive_windows(text.val if split == "test" else text.train, block, count)
        if self.spec is None:
            raise ValueError(f"{self.dir}: a fit() checkpoint records no data set; trace it with "
                             f"fnnet.trace(run.model, run.loss, run.params, x, y)")
        x, y = self.spec.load(self.config.get("seed", 0))[1 if split == "test" else 0]
        return self.as_batch(x[:count]), np.asarray(y[:count])

    def trace(self, count: int = 8):
        """:func:`fnnet.trace` of the trained model on :meth:`examples` (evaluation mode)."""
        x, y = self.examples(count)
        return tracing.trace(self.model, self.loss, self.params, x, y, state=self.model_state or None)

    def evaluate(self, data=None) -> dict:
        """Test loss and accuracy (as :func:`fnnet.train.evaluate`) on ``data = (x, y)``, by
        default the data set's test split as ``fnnet train`` used it. For a language model: the
        exact validation loss (:func:`fnnet.train.language.evaluate_language_model`) on
        ``data`` (1-D token ids), by default Tiny Shakespeare's validation split."""

        if self.is_language_model:

            tokens = self._text().val if data is None else data
            return language.evaluate_language_model(self.model, self.params, tokens,
                                                    block_size=char_rnn.validation_window(self.config),
                                                    model_state=self.model_state)
        if data is None:
            if self.spec is None:
                raise ValueError(f"{self.dir}: a fit() checkpoint records no data set; pass data=(x, y)")
            data = self.spec.load(self.config.get("seed", 0))[1]
        x, y = data
        data = (self.as_batch(x), y)  # any shape with the example's values, as predict takes it
        return train.evaluate(self.model, self.loss, self.params, data, model_state=self.model_state)


def _load_fit_checkpoint(run_dir: pathlib.Path, model: Layer, loss, in_shape) -> Run:
    """A :class:`Run` for a folder :func:`fnnet.train.fit` wrote (``checkpoint_dir=``): its
    checkpoint with the params, model state and history; the model is the caller's."""

    checkpoint_path = run_dir / train.CHECKPOINT_NAME
    if not checkpoint_path.is_file():
        raise CheckpointError(f"{run_dir}: no {train.CHECKPOINT_NAME} here (fit writes one after each epoch "
                              f"when given checkpoint_dir=)")
    metadata = checkpoint.read_metadata(checkpoint_path)
    if in_shape is None:
        if "in_shape" not in metadata:
            raise RecipeError(f"{checkpoint_path}: records no input shape (written by an older fnnet); "
                              f"pass in_shape= (one example's shape)")
        in_shape = metadata["in_shape"]
    in_shape = tuple(int(d) for d in in_shape)
    if loss is None:
        name = metadata.get("loss")
        if name not in losses.ALL:
            raise RecipeError(f"{checkpoint_path}: records the loss {name!r}, not a built-in one; pass loss=")
        loss = losses.ALL[name]
    like_params, like_state = jax.eval_shape(lambda: init_with_state(model, jax.random.PRNGKey(0), in_shape)[1:])
    try:
        params = checkpoint.load(checkpoint_path, like=like_params)
        model_state = checkpoint.load(checkpoint_path, like=like_state, prefix="model_state/") \
            if is_stateful(model) else ()
    except CheckpointError as error:
        raise CheckpointError(f"{error} (does the model given to load_run match the one fit trained, for "
                              f"examples of shape {in_shape}?)") from None
    metrics = {"history": metadata.get("history"), "epochs": metadata.get("epoch")}
    config = {"in_shape": list(in_shape), "loss": next((k for k, v in losses.ALL.items() if v is loss), None)}
    return Run(run_dir, config, model, params, loss, in_shape, metrics, model_state)


def load_run(run_dir, *, model: Layer | None = None, loss: Loss | None = None, in_shape=None) -> Run:
    """Loads a run folder: the ``--out`` folder of ``fnnet train``, or with ``model=`` any
    ``checkpoint_dir`` that :func:`fnnet.train.fit` wrote.

    For ``fnnet train`` runs the model is rebuilt from ``config.json``
    (:func:`fnnet.app.recipes.model_from_config`), the params are read from
    ``checkpoint.safetensors`` and checked against its shapes. For a ``fit`` folder, pass the
    ``model`` you trained: the params, the model state (BatchNorm) and the history come from the
    checkpoint, the example shape and the loss from what ``fit`` recorded in it (``in_shape=``,
    ``loss=`` for checkpoints that lack them). ``predict``, ``predict_labels`` and ``evaluate(data)``
    then work as for CLI runs.

    Example::

        run = fnnet.load_run("runs/mnist")
        labels = run.predict_labels(x_test)          # or run.predict / run.predict_proba
        run.model.apply(run.params, x_test[:8])      # the plain fnnet model and params (an MLP;
                                                     # a CNN: fnnet.apply_with_state with run.model_state)

    Raises:
      RecipeError: no such folder (or a file, such as the checkpoint, given instead of its
        folder), or no readable ``config.json`` in it.
      CheckpointError: the checkpoint is missing, damaged, or does not fit the model.
    """

    run_dir = pathlib.Path(run_dir)
    if run_dir.is_file():
        holder = run_dir.parent
        hint = f"pass its folder: {holder}" if (holder / CONFIG_NAME).is_file() or \
            (holder / train.CHECKPOINT_NAME).is_file() else \
            f"pass a run folder (the --out of 'fnnet train': it holds {CONFIG_NAME} and {train.CHECKPOINT_NAME})"
        raise RecipeError(f"{run_dir}: is a file, not a run folder; {hint}")
    if not run_dir.is_dir():
        raise RecipeError(f"{run_dir}: no such run folder")
    config_path = run_dir / CONFIG_NAME
    if model is not None:
        return _load_fit_checkpoint(run_dir, model, loss, in_shape)
    if not config_path.is_file():
        raise RecipeError(f"{run_dir}: no {CONFIG_NAME} here; is it the --out folder of 'fnnet train'? For a "
                          f"folder fit(checkpoint_dir=...) wrote, pass the model: load_run(path, model=model)")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, OSError) as error:
        raise RecipeError(f"{config_path}: not a readable config ({error})") from None
    if not isinstance(config, dict):
        raise RecipeError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    try:
        model, in_shape = recipes.model_from_config(config)
        loss = losses.ALL[config.get("loss") or recipes.dataset(config["dataset"]).loss]
    except RecipeError as error:
        raise RecipeError(f"{config_path}: {error}") from None
    except KeyError as error:
        raise RecipeError(f"{config_path}: unknown loss {error}") from None
    checkpoint_path = run_dir / train.CHECKPOINT_NAME
    if not checkpoint_path.is_file():
        raise CheckpointError(f"{run_dir}: no {train.CHECKPOINT_NAME} here (did 'fnnet train' finish an epoch?)")

    like_params, like_state = jax.eval_shape(lambda: init_with_state(model, jax.random.PRNGKey(0), in_shape)[1:])
    params = checkpoint.load(checkpoint_path, like=like_params)
    model_state = checkpoint.load(checkpoint_path, like=like_state, prefix="model_state/") \
        if is_stateful(model) else ()
    metrics_path = run_dir / METRICS_NAME
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    except (ValueError, OSError) as error:
        raise RecipeError(f"{metrics_path}: not readable JSON ({error})") from None
    return Run(run_dir, config, model, params, loss, tuple(in_shape), metrics, model_state)
