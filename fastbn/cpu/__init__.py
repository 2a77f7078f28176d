"""Numba CPU kernels, one module per op.

Importing this package picks Numba's threading layer (see
:data:`fastbn.config.THREADING_LAYER`) before any parallel kernel runs.
"""

import importlib
import os

import numba

from .. import config


def _select_threading_layer() -> str:
    """Ask Numba for a layer that survives concurrent calls from Python threads.

    An explicit ``NUMBA_THREADING_LAYER`` in the environment is respected.
    Otherwise ``tbb`` is taken if installed (thread- and fork-safe), else
    ``omp`` (thread-safe).  If neither library can be loaded, Numba's
    ``workqueue`` remains and :mod:`fastbn.cpu._jit` serialises parallel
    launches with a lock instead of letting Numba abort the process.
    """
    if "NUMBA_THREADING_LAYER" in os.environ:
        return os.environ["NUMBA_THREADING_LAYER"]
    if config.THREADING_LAYER not in ("threadsafe", "safe"):
        numba.config.THREADING_LAYER = config.THREADING_LAYER
        return config.THREADING_LAYER
    candidates = ("tbb",) if config.THREADING_LAYER == "safe" else ("tbb", "omp")
    for layer in candidates:
        try:
            importlib.import_module(f"numba.np.ufunc.{layer}pool")
        except Exception:  # missing library: ImportError, OSError, ...
            continue
        numba.config.THREADING_LAYER = layer
        return layer
    numba.config.THREADING_LAYER = "workqueue"
    return "workqueue"


THREADING_LAYER = _select_threading_layer()
