"""Block-level reductions for the CUDA kernels.

``block_sum2(a, b, sa, sb)`` adds two float64 values over the threads of a
block and returns the totals in thread 0.  On hardware it reduces within
each warp with ``shfl_down_sync`` and then across warps through shared
memory; the CUDA simulator has no warp shuffles, so there (and wherever
``NUMBA_ENABLE_CUDASIM`` is on when this module is imported) the same
function is a shared-memory tree.  Both sum in a fixed order, so a kernel's
result does not depend on scheduling.

``sa``/``sb`` are ``cuda.shared.array(config.CUDA_MAX_THREADS, float64)``
buffers owned by the calling kernel.  Every thread of the block must call it
the same number of times (the grid-stride loops over blocks are uniform
across a block); a barrier on entry makes the buffers safe to reuse.
"""

from numba import cuda
from numba.core import config as numba_config

_FULL_MASK = 0xFFFFFFFF


@cuda.jit(device=True)
def _tree_sum2(a, b, sa, sb):
    tid = cuda.threadIdx.x
    n = cuda.blockDim.x
    cuda.syncthreads()  # every thread has read the previous call's totals
    sa[tid] = a
    sb[tid] = b
    cuda.syncthreads()
    width = 1
    while width < n:
        width *= 2
    s = width // 2
    while s > 0:
        if tid < s and tid + s < n:
            sa[tid] += sa[tid + s]
            sb[tid] += sb[tid + s]
        cuda.syncthreads()
        s //= 2
    return sa[0], sb[0]


@cuda.jit(device=True)
def _shuffle_sum2(a, b, sa, sb):
    tid = cuda.threadIdx.x
    lane = tid % 32
    warp = tid // 32
    cuda.syncthreads()  # warp 0 has read the previous call's partials
    offset = 16
    while offset > 0:
        a += cuda.shfl_down_sync(_FULL_MASK, a, offset)
        b += cuda.shfl_down_sync(_FULL_MASK, b, offset)
        offset //= 2
    if lane == 0:
        sa[warp] = a
        sb[warp] = b
    cuda.syncthreads()
    nwarps = (cuda.blockDim.x + 31) // 32
    if warp == 0:
        a = sa[lane] if lane < nwarps else 0.0
        b = sb[lane] if lane < nwarps else 0.0
        offset = 16
        while offset > 0:
            a += cuda.shfl_down_sync(_FULL_MASK, a, offset)
            b += cuda.shfl_down_sync(_FULL_MASK, b, offset)
            offset //= 2
    return a, b


#: The block reduction every kernel uses: warp shuffles on hardware, a shared
#: memory tree under the simulator.  (The shuffle version needs a block size
#: that is a multiple of 32; :func:`fastbn.cuda.launch` guarantees it.)
SIMULATOR = bool(numba_config.ENABLE_CUDASIM)
block_sum2 = _tree_sum2 if SIMULATOR else _shuffle_sum2
