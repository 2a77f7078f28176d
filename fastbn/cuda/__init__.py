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


def threads() -> int:
    """Threads per block: ``config.THREADS_PER_BLOCK``, a whole number of warps on hardware."""
    tpb = min(int(config.THREADS_PER_BLOCK), config.CUDA_MAX_THREADS)
    if not SIMULATOR:
        tpb = max(32, tpb - tpb % 32)
    return tpb


def sm_count() -> int:
    dev = cuda.get_current_device()
    return int(getattr(dev, "MULTIPROCESSOR_COUNT", 2))


def grid_limits() -> tuple[int, int, int]:
    """CUDA's blocks per grid dimension (x, y, z), read from ``config`` at every launch."""
    return int(config.CUDA_MAX_GRID_X), int(config.CUDA_MAX_GRID_Y), int(config.CUDA_MAX_GRID_Z)


def _dims(grid) -> tuple[int, ...]:
    return tuple(int(g) for g in grid) if isinstance(grid, (tuple, list)) else (int(grid),)


def clamp_grid(grid) -> tuple[int, ...]:
    """``grid`` as a tuple with every dimension capped at its limit (0 stays 0).

    Exact only for kernels that grid-stride along every dimension they use,
    as all of :mod:`fastbn.cuda._kernels` do.
    """
    dims = _dims(grid)
    if len(dims) > 3:
        raise ValueError(f"a CUDA grid has at most 3 dimensions; got {dims}")
    return tuple(min(max(g, 0), lim) for g, lim in zip(dims, grid_limits(), strict=False))


def check_launch(grid, block) -> None:
    """AssertionError unless every grid dimension is in ``1..limit`` (``config``) and the
    block holds ``1..CUDA_MAX_THREADS`` threads.  Every kernel launch passes here (tests
    wrap it to record the grids)."""
    dims = _dims(grid)
    limits = grid_limits()
    assert 1 <= len(dims) <= 3, f"grid {dims} must have 1 to 3 dimensions"
    for axis, g, lim in zip("xyz", dims, limits, strict=False):
        assert 0 < g <= lim, f"grid {dims}: {axis} = {g} is outside 1..{lim}"
    threads_ = math.prod(_dims(block))
    assert 0 < threads_ <= config.CUDA_MAX_THREADS, (
        f"block {_dims(block)} has {threads_} threads, outside 1..{config.CUDA_MAX_THREADS}")


def _no_launch(*args) -> None:
    """Stands in for a launch with no blocks: there is no work, so nothing runs."""


class Kernel:
    """A ``cuda.jit`` kernel whose launches always have a legal geometry.

    ``kernel[grid, block](...)`` as with numba, but the grid is first capped at
    CUDA's limits (:func:`clamp_grid`; the kernels grid-stride, so fewer blocks
    cover the same work), a grid with a zero dimension launches nothing (no
    work: an empty input or an empty set of sets), and every launch that does
    run is checked by :func:`check_launch`.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.__name__ = getattr(kernel, "__name__", "kernel")
        self.__doc__ = getattr(kernel, "__doc__", None)

    def __getitem__(self, launch):
        grid, block, *rest = launch
        dims = clamp_grid(grid)
        if 0 in dims:
            return _no_launch
        check_launch(dims, block)
        return self.kernel[(dims if len(dims) > 1 else dims[0], block, *rest)]

    def __getattr__(self, name):
        return getattr(self.kernel, name)

    def __repr__(self) -> str:
        return f"Kernel({self.__name__})"


def kernel(fn) -> Kernel:
    """``@cuda.jit`` for launchable kernels, wrapped in :class:`Kernel`."""
    return Kernel(cuda.jit(fn))


def grid_1d(n: int) -> tuple[int, int]:
    """(blocks, threads) for a thread per item, grid-strided: 0 blocks when ``n == 0``
    (the launch is skipped), at most ``CUDA_MAX_GRID_X``."""
    tpb = threads()
    return min(math.ceil(max(n, 0) / tpb), grid_limits()[0]), tpb


def grid_blocks(blocks: int) -> tuple[int, int]:
    """(blocks, threads) for a block per unit of work, at most ``CUDA_MAX_GRID_X``
    (the kernel loops over ``blockIdx.x + k * gridDim.x``)."""
    return min(max(blocks, 0), grid_limits()[0]), threads()


def grid_stride(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop: at most CUDA_BLOCKS_PER_SM per SM
    (0 when ``n == 0``)."""
    blocks, tpb = grid_1d(n)
    return min(blocks, sm_count() * config.CUDA_BLOCKS_PER_SM), tpb


def grid_2d(nx: int, ny: int) -> tuple[tuple[int, int], int]:
    """((blocks x, blocks y), threads) for ``ceil(nx / threads)`` column blocks by ``ny``
    row blocks, each capped at its limit (the kernels grid-stride along both)."""
    tpb = threads()
    bx, by = clamp_grid((math.ceil(max(nx, 0) / tpb), ny))[:2]
    return (bx, by), tpb
