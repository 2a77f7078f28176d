"""Every tunable of fastbn in one place.

Values here are read when a kernel is launched, so tests and users may patch
them at run time (``fastbn.config.SERIAL_MAX_ELEMENTS = 0``).  None of them
changes a numerical result: chunk sizes are fixed numbers of elements, never a
function of the thread count, so results are identical for any
``numba.set_num_threads`` value.
"""


#: Numba compile options shared by every CPU kernel.  ``fastmath`` is a set of
#: LLVM flags, not ``True``: reassociation lets reductions vectorize and
#: contraction forms FMAs, while NaN and inf keep their IEEE meaning (``True``
#: would add ``nnan``/``ninf`` and NaN could no longer be relied on to stay in
#: its channel).
FASTMATH = {"reassoc", "contract", "arcp"}
JIT_OPTIONS = dict(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)

#: Inputs with at most this many elements run a serial kernel.  A parallel
#: launch costs thread wake-ups, and right after a NumPy matrix product it can
#: cost milliseconds: OpenBLAS's threads keep spinning for a while and hold
#: the cores Numba's threads need.  Measured on 2 shared cores (Intel Xeon),
#: (512, 256) float32 batch-norm training forward: 85 us parallel vs 74 us
#: serial alone, 2282 vs 203 us right after a (512, 784) @ (784, 256)
#: product on OpenBLAS's 2 threads; the tutorial's MLP at batch 512 steps in
#: 5.8 ms instead of 16.3 ms (``python scripts/network_step.py``).  Above
#: about 256K elements (1 MB of float32) the second core's bandwidth pays:
#: (2, 64, 56, 56) group norm is faster in parallel.
SERIAL_MAX_ELEMENTS = 1 << 18

#: Elements per work chunk of a reduction.  Each chunk's shifted sums are
#: turned into (count, mean, M2) and chunks are merged in index order with
#: Chan's formula; the chunk size also bounds the shift's cancellation error.
CHUNK_ELEMENTS = 1 << 14

#: Inner (spatial) sizes at least this large use the row kernels, whose unit
#: of work is one contiguous (sample, channel) row; smaller inner sizes,
#: channels-last and 2-D inputs use the column kernels, which stream whole
#: rows of the (outer, C * inner) matrix and accumulate per column.
ROW_KERNEL_MIN_INNER = 32

#: Column blocks of layer norm's long rows (the output and ``dx`` passes, the
#: weight gradients' partial sums) hold at most this many columns.
COLUMN_BLOCK = 256

#: Columns per task of the column reductions (channels-last and 2-D
#: statistics and gradient sums): whole rows up to this many columns, whose
#: float64 accumulators (16 bytes a column, 16 KB) stay in L1.  Narrower
#: blocks cut each row into short strided runs that the prefetchers follow
#: badly: (4096, 1024) float32 gradient sums, 2 threads, 0.71 ms in 64 x 1024
#: blocks vs 0.80-0.91 ms in 64 x 256.
COLUMN_REDUCE_WIDTH = 1024

#: Rows per task of the column reductions: at least this many, and
#: ``CHUNK_ELEMENTS // width`` when that is more, so the per-task partials
#: stay few (16 x 1024 blocks: 0.79 ms, and four times the partials to fold).
COLUMN_REDUCE_ROWS = 64

#: Column blocks of the elementwise column passes (output, dx) hold at most
#: this many columns: whole rows of most 2-D and channels-last inputs.
APPLY_WIDTH = 4096

#: A channel whose data (x, plus dy in backward) is at most this many bytes is
#: processed start to finish by one thread: statistics first, then the output
#: pass re-reads the channel from L2 instead of memory.
FUSED_CHANNEL_MAX_BYTES = 1 << 20

#: Columns per task of the fused column forward (2-D and channels-last batch
#: norm, training): a task takes its columns over all rows, statistics then
#: output, when that block of x fits in half of ``FUSED_CHANNEL_MAX_BYTES``.
#: (256, 1024) float32: 55.8 us fused vs 61.1 us in two passes (interleaved,
#: 2 threads, this project's 2-core VM).
FUSED_COLUMN_WIDTH = 64

#: The fused per-channel path needs at least this many channels to keep every
#: core busy (a fixed number, not the thread count, so the path taken depends
#: only on the shape).
FUSED_MIN_CHANNELS = 8

#: Layer/RMS norm rows of at most this many bytes are "short": one task takes
#: whole rows, reads each once from memory and writes y (or dx) from L1.
SHORT_ROW_MAX_BYTES = 1 << 16

#: Short-row layer/RMS norm backward splits the rows into at most this many
#: tasks, each with its own (D,) dweight/dbias partials summed in task order.
ROW_BLOCK_TASKS = 64


# --- GPU (numba-cuda) launch configuration ------------------------------------------------

#: Threads per block of every CUDA kernel (at most ``CUDA_MAX_THREADS``).
#: Tests patch it down (e.g. 8) so small inputs span several blocks.
THREADS_PER_BLOCK = 256

#: Upper bound on ``THREADS_PER_BLOCK``: the size of the kernels' shared
#: reduction buffers, fixed when they compile.
CUDA_MAX_THREADS = 1024

#: Elements of one normalized set that one block reduces (row kernels):
#: per-thread float32 sums over CUDA_CHUNK / THREADS_PER_BLOCK values, then
#: float64 across threads and blocks.
CUDA_CHUNK = 8192

#: Rows of one column tile (column kernels): each thread sums its column
#: down this many rows.
CUDA_TILE_ROWS = 64

#: Elementwise kernels launch at most this many blocks per SM (grid-stride loops).
CUDA_BLOCKS_PER_SM = 8

#: CUDA's grid limits, blocks per grid dimension (compute capability >= 3.0):
#: x up to 2**31 - 1, y and z up to 65,535.  Every launch stays within them:
#: kernels loop over their blocks with grid-stride loops
#: (``blockIdx.y + k * gridDim.y``), so a problem bigger than the grid is
#: covered by fewer, busier blocks.  Read at every launch; tests patch them
#: down (e.g. 2) so small inputs exercise the loops.
CUDA_MAX_GRID_X = 2**31 - 1
CUDA_MAX_GRID_Y = 65535
CUDA_MAX_GRID_Z = 65535
