"""fastbn: fast normalization kernels for NumPy code.

Batch normalization on the CPU with Numba; plain NumPy arrays in and out.
``fastbn.reference`` holds the NumPy oracles every kernel is tested against.
Importing fastbn never imports CUDA.
"""

from . import config, reference
from .functional import (
    batch_norm,
    batch_norm_backward,
    merge_moments,
    moments,
    moments_to_stats,
)

__version__ = "0.1.0"

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "moments",
    "merge_moments",
    "moments_to_stats",
    "config",
    "reference",
]
