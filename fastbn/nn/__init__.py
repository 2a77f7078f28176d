"""Stateful layers on fastbn's kernels, and a small NumPy network toolkit.

Every layer follows one protocol (API.md "Layers"): ``forward(x)`` /
``layer(x)``, ``backward(dy)`` from what the last forward saved,
``params``/``grads`` dicts under PyTorch's names, ``train()``/``eval()``,
``num_params()``, ``state_dict()``/``load_state_dict()``.

- Normalization layers (:mod:`fastbn.nn.norm`): ``BatchNorm`` (with ghost
  batch norm, batch renormalization, the fused ReLU and Keras interop),
  ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm``, and
  ``recompute_statistics`` (precise BN).
- Inference and fine-tuning (:mod:`fastbn.nn.inference`):
  ``fold_batch_norm``, ``FrozenBatchNorm``, ``freeze_batch_norm``.
- The toolkit, just enough for the tutorial's experiments and small networks:
  ``Dense``, ``Conv1d``, ``Conv2d``, ``ReLU``, ``Sigmoid``, ``Tanh``,
  ``Dropout``, ``MaxPool2d``, ``GlobalAvgPool2d``, ``Flatten``,
  ``Sequential`` (with a Keras-style ``summary()`` and ``compile``/``fit``/
  ``evaluate``/``predict``, whose ``fit`` returns a ``History``),
  ``SoftmaxCrossEntropy``, ``SGD`` and ``Adam``.
"""

from ._module import Module
from .inference import FrozenBatchNorm, fold_batch_norm, freeze_batch_norm
from .layers import (
    Conv1d,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import SoftmaxCrossEntropy, accuracy
from .norm import (
    BatchNorm,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    RMSNorm,
    SyncBatchNorm,
    from_keras,
    recompute_statistics,
    to_keras,
)
from .optim import SGD, Adam
from .sequential import Sequential
from .training import History

__all__ = [
    "Module",
    "BatchNorm",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm",
    "SyncBatchNorm",
    "from_keras",
    "to_keras",
    "recompute_statistics",
    "fold_batch_norm",
    "FrozenBatchNorm",
    "freeze_batch_norm",
    "Dense",
    "Conv1d",
    "Conv2d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "MaxPool2d",
    "GlobalAvgPool2d",
    "Flatten",
    "Sequential",
    "SoftmaxCrossEntropy",
    "accuracy",
    "SGD",
    "Adam",
    "History",
]
