"""Fixtures: a seeded generator and the kernel configurations every path runs under."""

import os

# The GPU tests run on numba-cuda's simulator unless a run asks for the real
# device (NUMBA_ENABLE_CUDASIM=0). Numba reads this once, on import, so it is
# set before anything imports numba (so pytest's own configuration, such as
# filterwarnings, must not name numba classes either).
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fastbn import config  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


#: Kernel configurations that change only how work is split, never the
#: result beyond rounding.  "default" runs the small test inputs on the serial
#: drivers.  The others force the parallel drivers with many small chunks and
#: narrow column blocks: "fused" through the one-task-per-channel/group/row
#: paths (with few row-block tasks, so tasks hold several and odd numbers of
#: rows), "split" through the chunked multi-pass paths (long layer-norm rows).
_SMALL_CHUNKS = dict(SERIAL_MAX_ELEMENTS=0, CHUNK_ELEMENTS=16, COLUMN_BLOCK=3, APPLY_WIDTH=5,
                     COLUMN_REDUCE_WIDTH=3, COLUMN_REDUCE_ROWS=1)
KERNEL_CONFIGS = {
    "default": {},
    "fused": dict(_SMALL_CHUNKS, FUSED_MIN_CHANNELS=1, ROW_BLOCK_TASKS=3),
    "split": dict(_SMALL_CHUNKS, FUSED_CHANNEL_MAX_BYTES=0, SHORT_ROW_MAX_BYTES=0),
}


@pytest.fixture(params=sorted(KERNEL_CONFIGS))
def kernel_config(request, monkeypatch):
    for name, value in KERNEL_CONFIGS[request.param].items():
        monkeypatch.setattr(config, name, value)
    return request.param
