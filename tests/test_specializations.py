"""Each CPU kernel compiles one specialization per dtype and call pattern.

Compile time is paid per distinct signature (``fastbn.cpu._jit``): a
``prange`` index passed on as uint64 by the parallel build and int64 by the
serial one, or a literal ``0`` index, compiled whole extra copies of the
workers (122 compilations of the float32 kernels instead of 97).  The check
compiles from an empty cache in a child process and records every
compilation, the inlined workers' included.
"""

import os
import subprocess
import sys

import pytest

CHILD = r"""
import numpy as np
from numba.core import event

seen = []

class Listener(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        d = ev.data["dispatcher"]
        if d.py_func.__module__.startswith("fastbn."):
            seen.append((d.py_func.__qualname__, " ".join(map(str, ev.data["args"]))))

event.register("numba:compile", Listener())
from fastbn import warmup

for path in warmup._PATHS[:3]:          # serial, parallel fused, parallel split
    with warmup._patched(**path):
        warmup._exercise(np.dtype(np.float32))
assert len(seen) > 40, seen
for name, sig in seen:
    print(name, "|", sig)
"""


@pytest.mark.slow
def test_no_index_compiles_twice(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    # the small one-call backward passes literal zeros on purpose (fastbn.cpu._jit), to
    # these workers only, each compiled once more for it
    deliberate = ("block_grad_sums |", "block_grad_apply |")
    bad = [line for line in out.stdout.splitlines()
           if "uint64" in line or ("Literal[int]" in line
                                   and not line.startswith(deliberate))]
    assert not bad, "compiled for a uint64 or literal index:\n" + "\n".join(bad)
