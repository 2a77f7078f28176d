"""Numba compilation helpers shared by the CPU kernels.

``worker`` compiles a serial per-channel/row/chunk function; ``driver`` compiles
a chunked driver twice from one source: a ``parallel=True`` version whose
``prange`` loops run on Numba's thread pool, and a serial version (``prange``
is then plain ``range``) for inputs too small to pay for waking threads.
Both produce identical results: chunking never depends on the thread count.

Compile time is paid per distinct signature of every worker, so the call
sites keep argument types uniform: a ``prange`` index is uint64 in the
parallel build and int64 in the serial one, so each loop converts it with
``np.int64`` before passing it on; a literal argument (``0``, ``False``) is a
``Literal`` type of its own, so call sites pass ``np.int64(0)`` where the value is
only an index; and arrays are passed C-contiguous where a slice would be
typed ``'A'``.  A literal flag is kept where it lets a loop drop a branch,
and literal zero indices in the one-call small batch-norm backward
(``cols_backward_small``), where folding the slice arithmetic of every short
row saved 30% of the call ((1568, 16): 24.5 -> 17.1 us).  (The same in the
small training forward saved 22% of a (1568, 16) call but cost a second
compile of two workers, which the 40 s cold-compile budget did not have.)

``cache=True`` here means fastbn's compile cache (:mod:`fastbn._cache`): a
per-user directory keyed by fastbn's version and kernel sources, never the
package directory.
"""

import threading
import types

import numba
from numba import njit

from .. import _cache, config


def jit(**options):
    """``numba.njit(**options)``, with ``cache=True`` meaning fastbn's cache directory."""
    options = dict(options)
    cache = options.pop("cache", False)

    def decorate(fn):
        dispatcher = njit(**options)(fn)
        if cache:
            _cache.enable(dispatcher)
        return dispatcher

    return decorate


worker = jit(**config.JIT_OPTIONS)

#: Scalar helpers of the elementwise inner loops (the ReLU mask, the output
#: epilogue): inlined into the caller's Numba IR, like a CUDA device function,
#: so the loop they sit in still vectorizes.
inline = jit(inline="always", **config.JIT_OPTIONS)

#: For the few scalar formulas that must round identically wherever they are
#: inlined (Chan's merge): plain IEEE arithmetic, no fastmath flags.
exact = jit(cache=True, nogil=True, error_model="numpy")


class Driver:
    """A chunked kernel compiled twice; call ``.parallel`` or ``.serial``.

    ``serial=False`` compiles the parallel version only, for drivers that are
    called only above ``config.SERIAL_MAX_ELEMENTS`` (half the compile time).
    """

    def __init__(self, fn, serial: bool = True):
        self.parallel = jit(parallel=True, **config.JIT_OPTIONS)(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.serial = None
        if not serial:
            return
        # A distinct qualname gives the serial twin its own on-disk cache
        # entry (Numba keys cache files by qualname, not by compile flags).
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                  fn.__defaults__, fn.__closure__)
        twin.__qualname__ = fn.__qualname__ + "_serial"
        twin.__module__ = fn.__module__
        twin.__doc__ = fn.__doc__
        self.serial = jit(parallel=False, **config.JIT_OPTIONS)(twin)

    def __call__(self, size, *args):
        """Run the serial twin when ``size`` elements are too few for threads.

        Parallel launches are serialised until Numba's threading layer is
        known (it is chosen at the first launch, by Numba's priority or the
        user's setting) and for good when it is ``workqueue``, which aborts
        the process on concurrent launches; ``tbb`` and ``omp`` run freely.
        """
        if size <= config.SERIAL_MAX_ELEMENTS and self.serial is not None:
            return self.serial(*args)
        if _LAYER["concurrent"]:
            return self.parallel(*args)
        with _LAUNCH_LOCK:
            result = self.parallel(*args)
            _LAYER["concurrent"] = numba.threading_layer() != "workqueue"
        return result


_LAUNCH_LOCK = threading.Lock()
#: Whether the threading layer in use takes concurrent launches (known after one).
_LAYER = {"concurrent": False}


def driver(fn):
    return Driver(fn)


def parallel_driver(fn):
    """A :class:`Driver` without the serial twin."""
    return Driver(fn, serial=False)
