"""Shared set-up of the GPU test modules (on numba-cuda's simulator in CI).

Importing this skips the importing test module when numba-cuda is missing.
Its ``small_blocks`` fixture (autouse where imported) runs the kernels with
:data:`TPB` threads per block and small chunks, so small inputs span several
blocks and a partial last block.
"""

import importlib.util

import numpy as np
import pytest

from fastbn import config
from fastbn._checks import is_cuda_array

if importlib.util.find_spec("numba_cuda") is None:
    pytest.skip("numba-cuda is not installed", allow_module_level=True)

from numba import cuda  # noqa: E402

TPB = 8


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", TPB)
    monkeypatch.setattr(config, "CUDA_CHUNK", 3 * TPB + 1)   # several blocks per set
    monkeypatch.setattr(config, "CUDA_TILE_ROWS", 3)         # several row blocks per tile


def d(a):
    """A host array on the device (None stays None)."""
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def h(a):
    """A device array back on the host (host arrays pass through)."""
    return a.copy_to_host() if is_cuda_array(a) else a
