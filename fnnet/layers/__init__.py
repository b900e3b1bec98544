"""The built-in layers, one file per kind, each backward beside its forward.

* :mod:`~fnnet.layers.dense`: ``Dense``;
* :mod:`~fnnet.layers.activations`: ``Relu``, ``Sigmoid``, ``Tanh``, ``Softmax``, ``Gelu``,
  ``LeakyRelu``, ``Identity``, ``ReluSquared``, ``SoftCap`` (a logit cap);
* :mod:`~fnnet.layers.conv`: ``Conv`` (2-D), ``Conv1D``;
* :mod:`~fnnet.layers.pooling`: ``MaxPool``, ``AvgPool``, ``GlobalAvgPool``;
* :mod:`~fnnet.layers.normalization`: ``BatchNorm`` (state: running statistics), ``LayerNorm``,
  ``RMSNorm``;
* :mod:`~fnnet.layers.dropout`: ``Dropout`` (a key and the train/eval mode);
* :mod:`~fnnet.layers.reshape`: ``Flatten``, ``Reshape``;
* :mod:`~fnnet.layers.embedding`: ``Embedding`` (integer ids), ``PositionalEmbedding``, ``Unembed``
  (the table read backwards: a tied output head);
* :mod:`~fnnet.layers.attention`: ``CausalSelfAttention`` (options: rotary positions, QK-norm);
* :mod:`~fnnet.layers.recurrent`: ``RNN``, ``LSTM``, ``GRU`` (backprop through time by hand, one
  file each: :mod:`~fnnet.layers.rnn`, :mod:`~fnnet.layers.lstm`, :mod:`~fnnet.layers.gru`),
  ``Bidirectional``, and ``Sequences`` (a padded batch: lengths and an initial carry).

Combinators (``serial``, ``parallel``, ``FanOut``, ``FanInSum``, ``FanInConcat``,
``Residual``, ``Tied``) are in :mod:`fnnet.combinators`.
"""

from fnnet.layers.attention import CausalSelfAttention
from fnnet.layers.activations import Gelu, Identity, LeakyRelu, Relu, ReluSquared, Sigmoid, Softmax, SoftCap, Tanh
from fnnet.layers.conv import Conv, Conv1D
from fnnet.layers.dense import Dense
from fnnet.layers.dropout import Dropout
from fnnet.layers.embedding import Embedding, PositionalEmbedding, Unembed
from fnnet.layers.normalization import BatchNorm, LayerNorm, RMSNorm
from fnnet.layers.pooling import AvgPool, GlobalAvgPool, MaxPool
from fnnet.layers.recurrent import GRU, LSTM, RNN, Bidirectional, Sequences
from fnnet.layers.reshape import Flatten, Reshape

__all__ = ["AvgPool", "BatchNorm", "Bidirectional", "CausalSelfAttention", "Conv", "Conv1D", "Dense", "Dropout", "Embedding",
           "Flatten", "GRU", "Gelu", "GlobalAvgPool", "Identity", "LSTM", "LayerNorm", "LeakyRelu", "MaxPool",
           "PositionalEmbedding", "RMSNorm", "RNN", "Relu", "ReluSquared", "Reshape", "Sequences", "Sigmoid", "SoftCap",
           "Softmax", "Tanh", "Unembed"]
