"""Fixtures: a seeded generator and the kernel configurations every path runs under."""

import numpy as np
import pytest

from fastbn import config


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
