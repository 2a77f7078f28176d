"""Shared tolerances and data makers for the kernel tests."""

import numpy as np

#: One tolerance table for every kernel test: result vs float64 reference.
TOL = {
    np.dtype(np.float16): dict(rtol=1e-2, atol=2e-2),
    np.dtype(np.float32): dict(rtol=1e-4, atol=2e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-11),
}


def assert_close(actual, expected, dtype, scale=1.0):
    """Compare with the dtype's tolerance; ``scale`` widens atol for sums of many terms."""
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=tol["rtol"], atol=tol["atol"] * scale)


def make(rng, shape, dtype, loc=0.0, scale=1.0):
    return rng.normal(loc, scale, shape).astype(dtype)


def numerical_grad(f, a, h=1e-6):
    """Central differences of the scalar ``f()`` with respect to every element of ``a``."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        fp = f()
        a[i] = old - h
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def per_set(a, axes_first):
    """``a`` with the given axes moved first and the rest flattened: one column per set."""
    a = np.asarray(a)
    rest = [i for i in range(a.ndim) if i not in axes_first]
    return np.transpose(a, list(axes_first) + rest).reshape(
        int(np.prod([a.shape[i] for i in axes_first])), -1)
