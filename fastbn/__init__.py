"""fastbn: fast normalization kernels for NumPy code.

Batch, layer, RMS, group and instance normalization on the CPU with Numba
and on NVIDIA GPUs with numba-cuda; plain NumPy arrays in and out (device
arrays on the GPU).  Stateful layers and a small network toolkit are in
``fastbn.nn``; the tutorial's experiments in ``fastbn.experiments``.
``fastbn.reference`` holds the NumPy oracles every kernel is tested against,
``fastbn.formula`` the NumPy formulas the benchmarks compare with.
``fastbn.distributed`` (MPI) and ``fastbn.dask`` reach past one machine; they
load on first use, as do ``fastbn.nn`` and ``fastbn.experiments``.
Importing fastbn never imports CUDA, MPI or Dask.
"""

import importlib
from types import ModuleType

from . import config, reference
from .functional import (
    batch_norm,
    batch_norm_backward,
    group_norm,
    group_norm_backward,
    instance_norm,
    instance_norm_backward,
    layer_norm,
    layer_norm_backward,
    merge_moments,
    moments,
    moments_to_stats,
    rms_norm,
    rms_norm_backward,
)

__version__ = "0.1.0"

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "moments",
    "merge_moments",
    "moments_to_stats",
    "layer_norm",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_backward",
    "group_norm",
    "group_norm_backward",
    "instance_norm",
    "instance_norm_backward",
    "config",
    "reference",
]

#: Submodules loaded on first attribute access (``fastbn.distributed.moments``).
_LAZY = ("distributed", "dask", "formula", "nn", "experiments")


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fastbn' has no attribute {name!r}")
