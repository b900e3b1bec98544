"""The command line's choices, in a module that imports nothing: ``fnnet --help`` and argument
errors are answered from these without loading JAX. :mod:`fnnet.app.recipes` builds on them
(its ``DATASETS`` has exactly these names, in this order)."""

DATASETS = ("xor", "regression", "breast-cancer", "digits", "mnist", "fashion-mnist")
"""The data sets ``fnnet train`` trains on (each a :class:`fnnet.app.recipes.DatasetSpec`)."""

TEXT = "shakespeare"
"""The text data set: a character-level GPT (:mod:`fnnet.app.shakespeare`) or char-rnn (:mod:`fnnet.app.char_rnn`)."""

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "identity")
OPTIMIZERS = ("adam", "sgd", "momentum")
SCHEDULES = ("constant", "cosine", "onecycle")
MODELS = ("mlp", "cnn", "resnet")
"""What ``fnnet train --model`` builds: an MLP (:func:`fnnet.app.recipes.build_model`), or a CNN or a
ResNet (:func:`fnnet.app.recipes.build_cnn`)."""
CHAR_RNN_MODELS = ("rnn", "lstm", "gru")
"""The char-rnns ``fnnet train shakespeare --model`` builds (:mod:`fnnet.app.char_rnn`)."""
TEXT_MODELS = ("gpt",) + CHAR_RNN_MODELS
"""What ``fnnet train shakespeare --model`` builds: the GPT (the default) or a char-rnn."""
WINDOWS = ("random", "streams")
"""How a char-rnn's training windows are drawn (``--windows``; :data:`fnnet.train.language.WINDOWS`)."""
CNN_RECIPE_NAMES = ("fast", "classic")
"""How ``--model cnn`` trains (``--recipe``; :data:`fnnet.app.recipes.CNN_RECIPES`)."""
TEXT_RECIPE_NAMES = ("nanogpt", "speedrun")
"""How ``fnnet train shakespeare``'s GPT trains (``--recipe``; :data:`fnnet.app.shakespeare.RECIPES`)."""

CHECKPOINT_EVERY = 10.0
"""``fnnet train``'s seconds between checkpoints (``--checkpoint-every``): an MNIST epoch takes
about that long, so most are saved, while XOR's 1,000 tiny epochs write one checkpoint, not 1,000."""
