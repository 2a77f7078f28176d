"""numba-cuda kernels: the GPU twins of :mod:`fastbn.cpu`.

Imported lazily, on the first call with a device array, so ``import fastbn``
never touches CUDA.  Device arrays are anything with
``__cuda_array_interface__`` (numba device arrays, CuPy arrays, torch CUDA
tensors), taken zero-copy; results are numba device arrays on the same
device.  Nothing is copied to or from the host inside an op.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from .. import config

# Numba still ships its deprecated built-in CUDA target as numba.cuda; the
# NVIDIA-maintained numba-cuda package replaces it when installed.  Never run
# on the deprecated one.
if importlib.util.find_spec("numba_cuda") is None:
    raise ImportError(
        "fastbn's GPU backend needs the numba-cuda package: pip install 'fastbn[cuda]' "
        "(or pip install numba-cuda)")

from numba import cuda  # noqa: E402

from ._reduce import SIMULATOR  # noqa: E402  (NUMBA_ENABLE_CUDASIM, read at import)


def _require_gpu() -> None:
    if not cuda.is_available():
        raise RuntimeError(
            "fastbn was given GPU arrays but no CUDA GPU is usable: install a CUDA driver and "
            "numba-cuda with its CUDA libraries (pip install 'numba-cuda[cu12]'), or set "
            "NUMBA_ENABLE_CUDASIM=1 to run on the CUDA simulator")


def device(a, name: str):
    """A numba device array over ``a``'s memory (zero-copy), or TypeError."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        raise TypeError(
            f"{name} is a NumPy (host) array but x is on the GPU; pass all arrays on the same "
            "device (numba.cuda.to_device copies a host array over)")
    if not hasattr(a, "__cuda_array_interface__"):
        return a  # the simulator's device arrays carry no interface
    return cuda.as_cuda_array(a)


def threads() -> int:
    """Threads per block: ``config.THREADS_PER_BLOCK``, a whole number of warps on hardware."""
    tpb = min(int(config.THREADS_PER_BLOCK), config.CUDA_MAX_THREADS)
    if not SIMULATOR:
        tpb = max(32, tpb - tpb % 32)
    return tpb


def sm_count() -> int:
    dev = cuda.get_current_device()
    return int(getattr(dev, "MULTIPROCESSOR_COUNT", 2))


def grid_1d(n: int) -> tuple[int, int]:
    """(blocks, threads) for one thread per item."""
    tpb = threads()
    return max(1, math.ceil(n / tpb)), tpb


def grid_stride(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop: at most CUDA_BLOCKS_PER_SM per SM."""
    tpb = threads()
    return max(1, min(math.ceil(n / tpb), sm_count() * config.CUDA_BLOCKS_PER_SM)), tpb
