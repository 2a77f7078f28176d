"""Shared tolerances, data makers and kernel-configuration fixtures."""

import numpy as np
import pytest

from fastbn import config

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


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


#: Kernel configurations that change only how work is split, never the
#: result beyond rounding.  "default" runs the small test inputs on the serial
#: drivers; the others force the parallel drivers with many chunks and narrow
#: column blocks, through the fused per-channel row path or the split one.
_SMALL_CHUNKS = dict(SERIAL_MAX_ELEMENTS=0, CHUNK_ELEMENTS=16, COLUMN_BLOCK=3)
KERNEL_CONFIGS = {
    "default": {},
    "fused": dict(_SMALL_CHUNKS, FUSED_MIN_CHANNELS=1),
    "split": dict(_SMALL_CHUNKS, FUSED_CHANNEL_MAX_BYTES=0),
}


@pytest.fixture(params=sorted(KERNEL_CONFIGS))
def kernel_config(request, monkeypatch):
    for name, value in KERNEL_CONFIGS[request.param].items():
        monkeypatch.setattr(config, name, value)
    return request.param
