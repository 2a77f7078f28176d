"""Stateful layers on fastbn's kernels, and a small NumPy network toolkit.

Every layer follows one protocol (API.md "Layers"): ``forward(x)`` /
``layer(x)``, ``backward(dy)`` from what the last forward saved,
``params``/``grads`` dicts under PyTorch's names, ``train()``/``eval()``,
``num_params()``, ``state_dict()``/``load_state_dict()``.
"""

from ._module import Module
from .norm import (
    BatchNorm,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    RMSNorm,
    from_keras,
    recompute_statistics,
    to_keras,
)

__all__ = [
    "Module",
    "BatchNorm",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm",
    "from_keras",
    "to_keras",
    "recompute_statistics",
]
