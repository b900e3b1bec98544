"""Recipes: the data sets the command line trains on, and how a model and optimizer are built.

One place for these facts, shared by ``fnnet train``, :func:`fnnet.load_run` (which rebuilds
a trained model from its ``config.json``) and the examples:

* :data:`DATASETS`: per data set, a :class:`DatasetSpec` (loader, input shape, output
  width, loss and the default hyper-parameters);
* :func:`build_model`: ``Dense`` + activation per hidden width, then ``Dense(out_dim)``;
* :func:`build_cnn`: the convolutional networks for images (``"small"``, ``"cnn"`` and ``"resnet"``);
* :data:`CNN_RECIPES`: how ``--model cnn`` trains (``"fast"``: the small network, one-cycle Adam and
  shifted images, MNIST's default; ``"classic"``: the BatchNorm network with a cosine decay);
* :func:`build_optimizer`: Adam, SGD or momentum, weight decay, constant, cosine or one-cycle schedule.

Bad settings raise :class:`RecipeError` (a ``ValueError``) naming the setting; the command
line prints it as one line and exits with code 2.

Example:
  >>> from fnnet import recipes
  >>> spec = recipes.DATASETS["breast-cancer"]
  >>> spec.in_shape, spec.out_dim, spec.loss
  ((30,), 1, 'sigmoid_binary_cross_entropy')
  >>> model = recipes.build_model(recipes.parse_hidden("30"), "relu", spec.out_dim, spec.in_shape)
  >>> import fnnet
  >>> fnnet.summary(model, spec.in_shape).total_params     # 30*30 + 30 + 30*1 + 1
  961
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import optax

from fnnet import datasets, losses, train
from fnnet.app import char_rnn, choices
from fnnet.app.choices import ACTIVATIONS, CHAR_RNN_MODELS, CNN_RECIPE_NAMES, MODELS, OPTIMIZERS, SCHEDULES
from fnnet.combinators import Residual, serial
from fnnet.gpt import GPT, GPTConfig
from fnnet.initializers import glorot_uniform, he_uniform
from fnnet.layers import (BatchNorm, Conv, Dense, Dropout, Flatten, Gelu, Identity, LeakyRelu, MaxPool, Relu,
                          Reshape, Sigmoid, Tanh)


class RecipeError(ValueError):
    """A setting no recipe accepts (an unknown activation, a negative learning rate, a run
    folder without its config.json...); the message names it."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How the command line trains on one data set: loader, shapes, loss and defaults."""

    load: Callable[[int], tuple]          # seed -> ((x_train, y_train), (x_test, y_test))
    in_shape: tuple                       # one example as ``load`` gives it, no batch axis
    out_dim: int
    loss: str                             # a key of fnnet.losses.ALL
    hidden: str
    activation: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    class_names: tuple | None = None
    schedule: str = "constant"
    x_range: tuple | None = None          # (low, high) of the loader's inputs, when it scales them
    preprocessing: str = ""               # what the loader does to raw inputs (for prediction errors)
    image_shape: tuple | None = None      # (H, W, C) of an image data set: CNNs need it
    cnn_epochs: int = 0                   # default epochs for --model resnet and the classic cnn recipe
    cnn_lr: float = 2e-3                  # default Adam learning rate for --model resnet and the classic cnn recipe
    cnn_recipe: str = "classic"           # the CNN_RECIPES entry --model cnn uses by default


def _load_xor(seed):
    data = datasets.xor()
    return data, data


def _load_regression(seed):
    return datasets.regression(noise=0.0, seed=seed)


def _load_breast_cancer(seed):
    return datasets.breast_cancer(seed=seed)


def _load_digits(seed):
    return datasets.digits(seed=seed)


def _load_mnist(seed):
    return datasets.mnist("train", flatten=True), datasets.mnist("test", flatten=True)


def _load_fashion(seed):
    return datasets.fashion_mnist("train", flatten=True), datasets.fashion_mnist("test", flatten=True)


_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                    "Bag", "Ankle boot")
_PIXELS = "pixels scaled to [0, 1] (uint8 images / 255), as fnnet.datasets.{} returns them"

DATASETS = {
    "xor": DatasetSpec(_load_xor, (2,), 1, "sigmoid_binary_cross_entropy", "4", "tanh", "sgd", 1.0, 1000, 4),
    "regression": DatasetSpec(_load_regression, (4,), 4, "mse", "", "identity", "sgd", 0.5, 300, 32),
    "breast-cancer": DatasetSpec(
        _load_breast_cancer, (30,), 1, "sigmoid_binary_cross_entropy", "30", "relu", "adam", 1e-3, 100, 32,
        preprocessing="features standardised with the training split's mean and standard deviation, "
                      "as fnnet.datasets.breast_cancer returns them"),
    "digits": DatasetSpec(_load_digits, (64,), 10, "softmax_cross_entropy", "64", "relu", "adam", 1e-3, 60, 32,
                          class_names=tuple(str(d) for d in range(10)), x_range=(0.0, 1.0),
                          preprocessing="8x8 images scaled to [0, 1] (scikit-learn's values / 16), "
                                        "as fnnet.datasets.digits returns them"),
    "mnist": DatasetSpec(_load_mnist, (784,), 10, "softmax_cross_entropy", "512,512", "relu", "adam", 1e-3,
                         12, 128, class_names=tuple(str(d) for d in range(10)), schedule="cosine",
                         x_range=(0.0, 1.0), preprocessing=_PIXELS.format("mnist"), image_shape=(28, 28, 1),
                         cnn_epochs=12, cnn_recipe="fast"),
    "fashion-mnist": DatasetSpec(_load_fashion, (784,), 10, "softmax_cross_entropy", "512,512", "relu", "adam",
                                 1e-3, 15, 128, class_names=_FASHION_CLASSES, schedule="cosine",
                                 x_range=(0.0, 1.0), preprocessing=_PIXELS.format("fashion_mnist"),
                                 image_shape=(28, 28, 1), cnn_epochs=16),  # 92.74% (12 epochs: 92.36%)
}
if tuple(DATASETS) != choices.DATASETS:
    raise RuntimeError(f"fnnet.app.choices.DATASETS {choices.DATASETS} must name the recipes, in order: {tuple(DATASETS)}")


@dataclasses.dataclass(frozen=True)
class CNNRecipe:
    """How ``fnnet train --model cnn`` trains: the network and its settings (a flag given on the
    command line overrides the setting). ``None``: the data set's ``cnn_epochs`` / ``cnn_lr``."""

    net: str                              # build_cnn's kind
    epochs: int | None
    batch_size: int
    lr: float | None
    schedule: str
    betas: tuple[float, float]            # Adam's (b1, b2)
    augment: int                          # random translation of the training images, in pixels (0: none)


CNN_RECIPES = {
    # MNIST to 99.4% in under a minute on 2 CPU cores: a network shaped for CPU throughput (no
    # BatchNorm passes over the 24x24 maps), a large one-cycle learning rate with Adam's short
    # memory (b1 0.7, b2 0.9, as in tuomaso/train_mnist_fast), images shifted by up to one pixel
    "fast": CNNRecipe(net="small", epochs=8, batch_size=128, lr=0.005, schedule="onecycle", betas=(0.7, 0.9),
                      augment=1),
    # the earlier default (MNIST 99.29-99.34% in 12 epochs, Fashion-MNIST 92.66-92.75% in 16)
    "classic": CNNRecipe(net="cnn", epochs=None, batch_size=128, lr=None, schedule="cosine", betas=(0.9, 0.999),
                         augment=0),
}
if tuple(CNN_RECIPES) != CNN_RECIPE_NAMES:
    raise RuntimeError(f"fnnet.app.choices.CNN_RECIPE_NAMES must name CNN_RECIPES, in order: {tuple(CNN_RECIPES)}")


def cnn_net(config: dict) -> str:
    """The :func:`build_cnn` kind of a run's ``config.json``: ``resnet``, or the network of its
    ``--model cnn`` recipe (``classic`` for runs saved before recipes were recorded)."""
    if config.get("model") == "resnet":
        return "resnet"
    name = config.get("recipe") or "classic"
    if name not in CNN_RECIPES:
        raise RecipeError(f"recipe must be one of {', '.join(CNN_RECIPES)}, got {name!r}")
    return CNN_RECIPES[name].net


def dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``; :class:`RecipeError` listing the known ones."""
    if name not in DATASETS:
        raise RecipeError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


_dataset = dataset  # for settings(), whose argument is called dataset


SETTING_NAMES = ("hidden", "activation", "epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay",
                 "grad", "seed", "limit", "monitor", "augment")
"""The settings :func:`settings` takes as overrides (each a flag of ``fnnet train``: ``--batch-size``...)."""


def settings(dataset: str, model: str = "mlp", recipe: str | None = None, **overrides) -> dict:
    """The settings ``fnnet train DATASET`` trains with (its ``config.json`` before the data is loaded): the
    data set's defaults (:class:`DatasetSpec`), for ``model="cnn"`` those of its recipe (:data:`CNN_RECIPES`;
    ``None``: the data set's), and each override that is not ``None`` (``epochs=3``, ``hidden="64"``...).
    A setting no recipe accepts, or one the model does not use, is a :class:`RecipeError` naming its flag.

    Example:
      >>> from fnnet import recipes
      >>> config = recipes.settings("mnist", "cnn")
      >>> config["recipe"], config["epochs"], config["lr"], config["augment"]
      ('fast', 8, 0.005, 1)
    """
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise RecipeError(f"unknown setting {unknown[0]!r}; known: {', '.join(SETTING_NAMES)}")
    given = {name: value for name, value in overrides.items() if value is not None}
    if model != "mlp":
        flags = [name for name in ("hidden", "activation") if name in given]
        if flags:
            raise RecipeError(f"--{flags[0]} is for --model mlp; --model {model} is a fixed "
                              f"convolutional network (fnnet.app.recipes.build_cnn): drop --{flags[0]}")
    spec = _dataset(dataset)
    if recipe is not None and model != "cnn":
        raise RecipeError(f"--recipe is for --model cnn ({', '.join(CNN_RECIPES)}), not --model {model}"
                          if spec.image_shape is not None else
                          f"--recipe is for --model cnn, which needs an image data set (mnist, fashion-mnist), "
                          f"not {dataset}")
    hidden = given.get("hidden", spec.hidden)
    hidden = list(parse_hidden(hidden) if isinstance(hidden, str) else hidden)
    defaults = {"activation": spec.activation, "epochs": spec.epochs,
                "batch_size": spec.batch_size, "lr": spec.lr, "optimizer": spec.optimizer, "schedule": spec.schedule,
                "weight_decay": 0.0, "grad": "manual", "seed": 0, "limit": None, "monitor": None,
                "augment": 0}  # pixels: the fast CNN recipe's shifted images
    if model != "mlp":
        if spec.image_shape is None:
            raise RecipeError(f"--model {model} needs an image data set (mnist, fashion-mnist), not {dataset}")
        defaults.update(epochs=spec.cnn_epochs, lr=spec.cnn_lr)
        if model == "cnn":  # the recipe's settings where no flag is given
            if recipe is not None and recipe not in CNN_RECIPES:
                raise RecipeError(f"--recipe {recipe} is not a recipe of --model cnn ({', '.join(CNN_RECIPES)}); "
                                  f"it is for {choices.TEXT}'s GPT")
            recipe = recipe or spec.cnn_recipe
            chosen = CNN_RECIPES[recipe]
            defaults.update(epochs=chosen.epochs or spec.cnn_epochs, lr=chosen.lr or spec.cnn_lr,
                            batch_size=chosen.batch_size, schedule=chosen.schedule, augment=chosen.augment)
    pick = dict(defaults, **given)
    config = {"dataset": dataset, "hidden": hidden}
    config.update((name, pick[name]) for name in ("activation", "epochs", "batch_size", "lr", "optimizer", "schedule",
                                                  "weight_decay", "grad", "seed", "limit", "monitor"))
    config.update(loss=spec.loss, model=model)
    if model == "cnn":
        config["recipe"] = recipe
        if config["optimizer"] == "adam" and CNN_RECIPES[recipe].betas != (0.9, 0.999):
            config["betas"] = list(CNN_RECIPES[recipe].betas)
    augment = pick["augment"]
    if augment < 0:
        raise RecipeError(f"--augment must be >= 0 (pixels), got {augment}")
    if spec.image_shape is not None:
        if augment >= min(spec.image_shape[:2]):
            raise RecipeError(f"--augment {augment} would shift {dataset}'s {spec.image_shape[0]}x"
                              f"{spec.image_shape[1]} images out of the frame; give fewer pixels (the fast "
                              f"recipe shifts by 1)")
        config["augment"] = augment  # runs saved before it was recorded resume as 0
    elif augment:
        raise RecipeError(f"--augment shifts images: {dataset} has none (mnist, fashion-mnist)")
    for name in ("epochs", "batch_size", "limit"):
        if config[name] is not None and config[name] < 1:
            raise RecipeError(f"--{name.replace('_', '-')} must be >= 1, got {config[name]}")
    if config["monitor"] is not None and (config["monitor"] < 1 or config["grad"] != "manual"):
        raise RecipeError(f"--monitor must be >= 1, got {config['monitor']}" if config["monitor"] < 1 else
                          "--monitor reads the hand-written backward's values: drop --grad autodiff")
    return config


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"512,512"`` -> ``(512, 512)``; ``""`` or ``"none"`` -> ``()`` (a single-layer model)."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise RecipeError(f"hidden must be comma-separated positive ints like 512,512, got {text!r}") from None
    if any(w <= 0 for w in widths):
        raise RecipeError(f"hidden widths must be positive, got {text!r}")
    return widths


def build_model(hidden, activation: str, out_dim: int, in_shape):
    """``Flatten`` (for images) + (``Dense(h)``, activation) per hidden width + ``Dense(out_dim)``.

    Args:
      hidden: the hidden widths, e.g. ``(512, 512)`` (or a string for :func:`parse_hidden`).
      activation: one of :data:`ACTIVATIONS`; ReLU-like ones get He-uniform weights, the
        others Glorot-uniform (the output layer always Glorot-uniform).
      out_dim: the width of the last ``Dense`` (logits, or regression outputs).
      in_shape: one example's shape; a ``Flatten`` comes first when it has more than one axis.
    """

    if isinstance(hidden, str):
        hidden = parse_hidden(hidden)
    layer_of = {"relu": Relu, "tanh": Tanh, "sigmoid": Sigmoid, "gelu": Gelu, "leaky_relu": LeakyRelu(0.01),
                "identity": Identity}
    if activation not in layer_of:
        raise RecipeError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
        raise RecipeError(f"hidden widths must be positive ints, got {list(hidden)}")
    init = he_uniform if activation in ("relu", "leaky_relu", "gelu") else glorot_uniform
    layers = [Flatten] if len(in_shape) > 1 else []
    for width in hidden:
        layers += [Dense(width, w_init=init), layer_of[activation]]
    layers.append(Dense(out_dim))
    return serial(*layers)


def build_cnn(out_dim: int, image_shape, in_shape=None, *, kind: str = "cnn", width: int = 32,
              dropout: float = 0.4):
    """A small convolutional network for ``(H, W, C)`` images, ending in ``Dense(out_dim)`` logits.

    ``kind="small"`` (the ``fast`` recipe's): ``Conv 5x5 (24, valid) → Relu → MaxPool 2x2 →
    Conv 3x3 (32, valid) → Relu → MaxPool 2x2 → Flatten → Dense(256) → Relu → Dense``, the
    network of tuomaso/train_mnist_fast: under a third of the classic network's arithmetic
    (1.24M against 4.24M multiply-adds per 28x28 image), no BatchNorm (``width`` and ``dropout``
    do not apply).
    ``kind="cnn"``: two blocks of ``Conv 3x3 (no bias) → BatchNorm → Relu → MaxPool 2x2``
    (``width`` then ``2·width`` channels), ``Flatten → Dropout → Dense(128) → Relu → Dense``.
    ``kind="resnet"``: the same, each block followed by a residual ``x + Conv(Relu(Conv(x)))``.
    A ``Reshape`` to ``image_shape`` comes first when ``in_shape`` (one example as the
    loader gives it) is flat, so the MLP's data (``(N, 784)``) feeds the CNN as it is.

    Example:
      >>> from fnnet import recipes
      >>> import fnnet
      >>> model = recipes.build_cnn(10, (28, 28, 1), (784,))
      >>> fnnet.summary(model, (784,)).total_params
      421738
    """

    if kind not in ("small", "cnn", "resnet"):
        raise RecipeError(f"a CNN kind must be 'small', 'cnn' or 'resnet', got {kind!r}")
    image_shape = tuple(image_shape)
    if len(image_shape) != 3:
        raise RecipeError(f"a CNN needs images of shape (H, W, C), got {image_shape}")
    layers = [] if in_shape is None or tuple(in_shape) == image_shape else [Reshape(image_shape)]
    if kind == "small":
        if min(image_shape[:2]) < 14:
            raise RecipeError(f"the small CNN needs images of at least 14x14 pixels, got {image_shape}")
        return serial(*layers, Conv(24, 5, padding="VALID"), Relu, MaxPool(2), Conv(32, 3, padding="VALID"), Relu,
                      MaxPool(2), Flatten, Dense(256, w_init=he_uniform), Relu, Dense(out_dim))
    for channels in (width, 2 * width):
        layers += [Conv(channels, 3, use_bias=False), BatchNorm(), Relu]
        if kind == "resnet":
            layers.append(Residual(serial(Conv(channels, 3), Relu, Conv(channels, 3))))
        layers.append(MaxPool(2))
    layers += [Flatten, Dropout(dropout), Dense(128, w_init=he_uniform), Relu, Dense(out_dim)]
    return serial(*layers)


def build_optimizer(name: str, lr: float, weight_decay: float = 0.0, *, schedule: str = "constant",
                    total_steps: int | None = None, betas=None):
    """An optax optimizer; ``weight_decay`` adds ``λ·w`` to the gradient of each weight matrix
    (``J = L + λ/2 Σ w²``), biases excluded. ``schedule="cosine"`` decays the learning rate
    from ``lr`` to ``lr/20`` over ``total_steps``; ``schedule="onecycle"`` warms it up from
    ``lr/25`` to ``lr`` over the first quarter of ``total_steps``, then anneals it to ``lr/10⁴``
    (cosine both ways, ``optax.cosine_onecycle_schedule``). ``betas``: Adam's ``(b1, b2)``
    (default ``(0.9, 0.999)``)."""

    if lr <= 0:
        raise RecipeError(f"lr must be positive, got {lr}")
    if weight_decay < 0:
        raise RecipeError(f"weight_decay must be >= 0, got {weight_decay}")
    if schedule in ("cosine", "onecycle") and not total_steps:
        raise RecipeError(f"schedule {schedule} needs the number of training steps")
    if schedule == "cosine":
        rate = optax.cosine_decay_schedule(lr, decay_steps=total_steps, alpha=0.05)
    elif schedule == "onecycle":
        rate = optax.cosine_onecycle_schedule(total_steps, lr, pct_start=0.25)
    elif schedule == "constant":
        rate = lr
    else:
        raise RecipeError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    b1, b2 = (0.9, 0.999) if betas is None else betas
    if betas is not None and name != "adam":
        raise RecipeError(f"betas are Adam's; optimizer {name!r} takes none")
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise RecipeError(f"Adam's betas must be in [0, 1), got {tuple(betas)}")
    base = {"adam": lambda: optax.adam(rate, b1=b1, b2=b2), "sgd": lambda: optax.sgd(rate),
            "momentum": lambda: optax.sgd(rate, momentum=0.9)}
    if name not in base:
        raise RecipeError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if weight_decay:
        return optax.chain(optax.add_decayed_weights(weight_decay, mask=train.weight_decay_mask),
                           base[name]())
    return base[name]()


GPT_FORM = {"bias": True, "tie_embeddings": False, "gelu_approximate": True, "norm": "layer", "rope": False,
            "qk_norm": False, "mlp_activation": "gelu", "logit_cap": 0.0, "zero_init": False}
"""The :class:`fnnet.gpt.GPTConfig` fields a GPT run's ``config.json`` may record beyond its size, with the
value of a run that does not (fnnet's own GPT: nanoGPT's recipe)."""


def gpt_config(config: dict) -> GPTConfig:
    """The :class:`fnnet.gpt.GPTConfig` of a GPT run's ``config.json`` (``fnnet train shakespeare``;
    a run ``fnnet convert nanogpt`` wrote also records ``bias``, ``tie_embeddings`` and
    ``gelu_approximate``, a ``--recipe speedrun`` run its form: :data:`GPT_FORM`)."""
    form = {field: config.get(field, default) for field, default in GPT_FORM.items()}
    return GPTConfig(vocab_size=len(config["vocab"]), block_size=int(config["block_size"]),
                     num_layers=int(config["layers"]), num_heads=int(config["heads"]),
                     features=int(config["features"]), dropout=float(config["dropout"]), **form).check()


def model_from_config(config: dict):
    """``(model, in_shape)`` rebuilt from a run's ``config.json`` (as written by ``fnnet train``).

    Configs written before ``in_shape``, ``out_dim`` and ``model`` were recorded fall back to
    the data set's :class:`DatasetSpec` and an MLP.
    """
    if config.get("model") in CHAR_RNN_MODELS:  # fnnet train shakespeare --model lstm
        try:
            return char_rnn.build(config)
        except KeyError as error:
            raise RecipeError(f"config has no {error.args[0]!r} entry") from None
        except (TypeError, ValueError) as error:
            raise RecipeError(str(error)) from None
    if config.get("model") == "gpt":

        missing = [key for key in ("vocab", "block_size", "layers", "heads", "features", "dropout")
                   if key not in config]
        if missing:
            raise RecipeError(f"config has no {missing[0]!r} entry")
        try:
            return GPT(gpt_config(config)), (int(config["block_size"]),)
        except (TypeError, ValueError) as error:
            raise RecipeError(str(error)) from None
    missing = [key for key in ("dataset", "hidden", "activation") if key not in config]
    if missing:
        raise RecipeError(f"config has no {missing[0]!r} entry")
    spec = dataset(config["dataset"])
    in_shape = tuple(config.get("in_shape") or spec.in_shape)
    out_dim = int(config.get("out_dim") or spec.out_dim)
    kind = config.get("model", "mlp")
    if kind not in MODELS:
        raise RecipeError(f"model must be one of {', '.join(MODELS)}, got {kind!r}")
    if kind != "mlp":
        if spec.image_shape is None:
            raise RecipeError(f"--model {kind} needs an image data set (mnist, fashion-mnist), "
                              f"not {config['dataset']!r}")
        return build_cnn(out_dim, spec.image_shape, in_shape, kind=cnn_net(config)), in_shape
    return build_model(tuple(config["hidden"]), config["activation"], out_dim, in_shape), in_shape


TUTORIAL_XOR_W1 = ((0.13806544, 0.60864744, 0.29065872), (0.12694881, -0.21593684, 0.41265087))
TUTORIAL_XOR_W2 = ((-0.17653002,), (1.10810138,), (1.31143633,))
"""The weights a from-scratch NumPy XOR tutorial (the seed tutorials' 2-3-1 network) starts from."""


def tutorial_xor():
    """``(model, params, loss, x, y)``: the tutorials' 2-3-1 XOR network (Dense(3) → ReLU →
    Dense(1) → sigmoid, binary cross-entropy on the probabilities, whose delta at the output is
    ``(ŷ − y) / N``), with their published starting weights and zero biases, on the 4 XOR
    examples, in float64 as NumPy computes (call it inside ``jax.enable_x64(True)``)."""
    model = serial(Dense(3), Relu, Dense(1), Sigmoid)
    params = ({"w": jnp.asarray(TUTORIAL_XOR_W1, jnp.float64), "b": jnp.zeros(3, jnp.float64)}, (),
              {"w": jnp.asarray(TUTORIAL_XOR_W2, jnp.float64), "b": jnp.zeros(1, jnp.float64)}, ())
    x, y = datasets.xor()
    return model, params, losses.binary_cross_entropy, jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
