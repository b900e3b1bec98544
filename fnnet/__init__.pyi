# The facade's names for type checkers and editors: fnnet/__init__.py imports each on first use
# (PEP 562), so that `import fnnet` loads nothing. tests/test_layering.py keeps this list and
# fnnet/__init__.py's table (_LAZY_MODULES and _FROM, whence __all__) equal.
from typing import Any

from fnnet import (app, checkpoint, datasets, distributed, gpt, gradcheck, initializers, interop, layers, losses,
                   tracing, train, xla_options)
from fnnet.app import recipes
from fnnet.app.runs import Run, load_run
from fnnet.checkpoint import load, save
from fnnet.combinators import FanInConcat, FanInSum, FanOut, Residual, parallel, serial
from fnnet.diagnosis import Diagnosis, doctor
from fnnet.explanation import explain
from fnnet.gradients import autodiff_value_and_grad, objective, per_example_grads, value_and_grad
from fnnet.layer import Layer, Spec, apply_with_state, forward_with_state, init_with_state, is_stateful, layer_name
from fnnet.layers import (GRU, LSTM, RNN, AvgPool, BatchNorm, Bidirectional, CausalSelfAttention, Conv, Conv1D, Dense,
                          Dropout, Embedding, Flatten, Gelu, GlobalAvgPool, Identity, LayerNorm, LeakyRelu, MaxPool,
                          PositionalEmbedding, Relu, ReluSquared, Reshape, RMSNorm, Sigmoid, Softmax, SoftCap, Tanh,
                          Unembed)
from fnnet.layers.recurrent import Sequences
from fnnet.losses import Loss
from fnnet.nans import NonFinite, debug_nans
from fnnet.summaries import Summary, summary
from fnnet.tied import Tied
from fnnet.tracing import LayerTrace, Trace, trace

__version__: str
__all__: list[str]

def __getattr__(name: str) -> Any: ...
