"""asv suite: one class per op and pass; params over backend, dtype, layout and size.

``numpy_formula`` is the vectorized NumPy expression in x's dtype that a user
writes (:mod:`fastbn.formula`), ``numpy`` the float64 oracle
(:mod:`fastbn.reference`), ``cpu`` the Numba kernels allocating their output
as a user's call does, ``cpu_out`` the same writing into a preallocated
``out=`` (forward passes only; a new output of more than 32 MB is a fresh
mmap whose pages fault on first touch, which ``cpu`` pays and ``cpu_out``
does not), ``cuda`` the numba-cuda kernels (skipped without a GPU).  Each class
has one ``time_`` method (one operation), a ``track_`` method reporting GB/s
from the minimal bytes moved, and ``peakmem_`` for forward passes.
"""

import time

import numpy as np

import fastbn
from fastbn import reference

try:  # absent before fastbn 0.1's formula baseline; asv continuous may build such commits
    from fastbn import formula
except ImportError:  # pragma: no cover
    formula = None

from .common import GROUPS, axis_of, cuda_or_skip, host_arrays, nbytes

BACKENDS = ["numpy_formula", "numpy", "cpu", "cpu_out", "cuda"]
#: The NumPy baselines: the same function names and signatures in both modules.
NUMPY = {"numpy": reference, "numpy_formula": formula}
if formula is None:  # pragma: no cover
    del NUMPY["numpy_formula"]
DTYPES = ["float32", "float64"]
SIZE = ["small", "large"]


class _Case:
    """Build inputs in setup, compile with one warm call, expose ``self.op``."""

    arrays = 2          # tensors of x's size a minimal kernel moves
    has_out = True      # the op takes out= (forward passes)
    layouts = ["NCHW", "NHWC"]
    param_names = ["backend", "dtype", "layout", "size"]
    timeout = 300

    def setup(self, backend, dtype, layout, size):
        x, dy, w, b = host_arrays(layout, size, dtype)
        self.axis = axis_of(layout)
        if backend == "cuda":
            cuda = cuda_or_skip()
            x, dy, w, b = (cuda.to_device(a) for a in (x, dy, w, b))
            self.sync = cuda.synchronize
        else:
            self.sync = lambda: None
        if backend == "numpy_formula" and formula is None:  # pragma: no cover
            raise NotImplementedError("this fastbn has no fastbn.formula")
        self.x, self.dy, self.w, self.b = x, dy, w, b
        self.out = {}
        if backend == "cpu_out":
            if not self.has_out:
                raise NotImplementedError("backward passes take no out=")
            self.out = {"out": np.empty_like(x)}
        self.op = self.make(backend)
        self.op()  # compile and page in
        self.sync()
        self.bytes = nbytes(layout, size, dtype, self.arrays)

    def run(self):
        self.op()
        self.sync()  # GPU timings stop after the kernels finish

    def track_gbps(self, *params):
        """GB/s from the minimal bytes moved, median of five timed calls."""
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            self.run()
            times.append(time.perf_counter() - t0)
        return self.bytes / float(np.median(times)) / 1e9

    track_gbps.unit = "GB/s"


def _params(layouts):
    return [BACKENDS, DTYPES, layouts, SIZE]


class BatchNormForwardTrain(_Case):
    params = _params(_Case.layouts)

    def make(self, backend):
        if backend in NUMPY:
            lib = NUMPY[backend]
            return lambda: lib.batch_norm_train(self.x, self.w, self.b, axis=self.axis)
        return lambda: fastbn.batch_norm(self.x, self.w, self.b, axis=self.axis, **self.out)

    def time_forward_train(self, *p):
        self.run()


    def peakmem_forward_train(self, *p):
        self.run()


class BatchNormInference(_Case):
    params = _params(_Case.layouts)

    def make(self, backend):
        rm, rv = self.b, self.w  # running mean 0, running variance 1
        if backend in NUMPY:
            lib = NUMPY[backend]
            return lambda: lib.batch_norm_inference(self.x, rm, rv, self.w, self.b,
                                                    axis=self.axis)
        return lambda: fastbn.batch_norm(self.x, self.w, self.b, rm, rv, training=False,
                                         axis=self.axis, **self.out)

    def time_inference(self, *p):
        self.run()


    def peakmem_inference(self, *p):
        self.run()


class BatchNormBackward(_Case):
    params = _params(_Case.layouts)
    arrays = 3
    has_out = False

    def make(self, backend):
        _, mean, rstd = fastbn.batch_norm(self.x, self.w, self.b, axis=self.axis)
        if backend in NUMPY:
            lib = NUMPY[backend]
            return lambda: lib.batch_norm_backward_train(self.dy, self.x, mean, rstd, self.w,
                                                         axis=self.axis)
        return lambda: fastbn.batch_norm_backward(self.dy, self.x, mean, rstd, self.w,
                                                  axis=self.axis)

    def time_backward(self, *p):
        self.run()



class LayerNormForward(_Case):
    params = _params(["rows"])

    def make(self, backend):
        d = self.x.shape[-1]
        if backend in NUMPY:
            lib = NUMPY[backend]
            return lambda: lib.layer_norm(self.x, d, self.w, self.b)
        return lambda: fastbn.layer_norm(self.x, d, self.w, self.b, **self.out)

    def time_forward(self, *p):
        self.run()


    def peakmem_forward(self, *p):
        self.run()


class LayerNormBackward(_Case):
    params = _params(["rows"])
    arrays = 3
    has_out = False

    def make(self, backend):
        d = self.x.shape[-1]
        _, mean, rstd = fastbn.layer_norm(self.x, d, self.w, self.b)
        if backend in NUMPY:
            lib = NUMPY[backend]
            return lambda: lib.layer_norm_backward(self.dy, self.x, d, mean, rstd, self.w)
        return lambda: fastbn.layer_norm_backward(self.dy, self.x, d, mean, rstd, self.w)

    def time_backward(self, *p):
        self.run()



class GroupNormForward(_Case):
    params = _params(_Case.layouts)

    def make(self, backend):
        g = min(GROUPS, self.w.shape[0])
        if backend in NUMPY:
            lib = NUMPY[backend]
            return lambda: lib.group_norm(self.x, g, self.w, self.b, axis=self.axis)
        return lambda: fastbn.group_norm(self.x, g, self.w, self.b, axis=self.axis, **self.out)

    def time_forward(self, *p):
        self.run()


    def peakmem_forward(self, *p):
        self.run()


class GroupNormBackward(_Case):
    params = _params(_Case.layouts)
    arrays = 3
    has_out = False

    def make(self, backend):
        g = min(GROUPS, self.w.shape[0])
        _, mean, rstd = fastbn.group_norm(self.x, g, self.w, self.b, axis=self.axis)
        if backend in NUMPY:
            lib = NUMPY[backend]
            return lambda: lib.group_norm_backward(self.dy, self.x, g, mean, rstd, self.w,
                                                   axis=self.axis)
        return lambda: fastbn.group_norm_backward(self.dy, self.x, g, mean, rstd, self.w,
                                                  axis=self.axis)

    def time_backward(self, *p):
        self.run()

