"""Which device an array lives on: the one test every layer shares.

A leaf module: it imports nothing from fastbn, so :mod:`fastbn._checks`,
:mod:`fastbn.functional` and the array primitives of both backends
(:mod:`fastbn.cpu._arrays`, :mod:`fastbn.cuda._arrays`) can all import it
without an import cycle.  It never imports numba-cuda.
"""

import numpy as np


def is_cuda_array(a) -> bool:
    """Device arrays: ``__cuda_array_interface__`` (numba, CuPy, torch CUDA), or the
    CUDA simulator's arrays (which do not carry the interface)."""
    if isinstance(a, np.ndarray) or a is None:
        return False
    return (hasattr(a, "__cuda_array_interface__")
            or type(a).__module__.startswith("numba.cuda.simulator"))
