"""Numba CPU kernels, one module per op.

Importing this package changes no Numba setting.  The threading layer is
Numba's (or the user's) choice: Numba's default priority already prefers the
layers that tolerate concurrent launches (``tbb``, then ``omp``), and when the
layer in use turns out to be ``workqueue`` the drivers serialise their
parallel launches (:mod:`fastbn.cpu._jit`) instead of letting it abort the
process.
"""
