"""`fastbn warmup`: compile every CPU kernel once so later processes load it from cache.

Numba compiles lazily, per dtype, on first call, and fastbn caches the
machine code in its compile cache (:mod:`fastbn._cache`: under
``NUMBA_CACHE_DIR`` when set, else the per-user cache directory, never the
package).  Running this once after installing makes every later first call a
cache load.  ``fastbn cache`` shows the cache, ``fastbn cache --clear``
empties it.

Compiling is single-threaded, so with ``jobs=2`` (the default on a machine
with two or more cores) the float32 and the float64 kernels are compiled in
two processes at once, into the same cache: :mod:`fastbn._cache` updates each
kernel's index under a file lock, so neither process loses the other's
entries.  A last pass in this process then loads every kernel from the cache
(and compiles whatever is missing), so the call ends with all of them ready.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import numpy as np

from . import _cache, config
from . import functional as F


@contextlib.contextmanager
def _patched(**values):
    old = {k: getattr(config, k) for k in values}
    for k, v in values.items():
        setattr(config, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(config, k, v)


#: Settings that route a tiny input through each driver and loop order.
_PATHS = (
    dict(),                                                    # serial drivers
    dict(SERIAL_MAX_ELEMENTS=0, FUSED_MIN_CHANNELS=1,           # parallel, fused rows
         FUSED_COLUMN_WIDTH=1),                                 # and fused columns
    dict(SERIAL_MAX_ELEMENTS=0, FUSED_CHANNEL_MAX_BYTES=0),     # parallel, split rows
    dict(FUSED_MIN_CHANNELS=1),                                 # serial, fused rows
    dict(SERIAL_MAX_ELEMENTS=0, SHORT_ROW_MAX_BYTES=0),         # parallel, long rows
)


def _exercise(dtype) -> None:
    rng = np.random.default_rng(0)
    for shape, axis in (((2, 3, 8, 8), 1), ((2, 4, 4, 3), -1)):
        x = rng.standard_normal(shape).astype(dtype)
        c = shape[axis]
        rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
        _, mean, rstd = F.batch_norm(x, running_mean=rm, running_var=rv, axis=axis)
        F.batch_norm(x, running_mean=rm, running_var=rv, training=False, axis=axis)
        for training in (True, False):
            F.batch_norm_backward(x, x, mean, rstd, training=training, axis=axis)
        F.moments(x, axis=axis)
        mask = np.ones(shape[:axis % 4] + shape[axis % 4 + 1:], bool)
        mask.reshape(-1)[-1] = False  # a masked call (all True is the unmasked one)
        _, mm, mr = F.batch_norm(x, running_mean=rm, running_var=rv, axis=axis, mask=mask)
        F.batch_norm_backward(x, x, mm, mr, axis=axis, mask=mask)
        for groups in (1, c):
            _, gm, gr = F.group_norm(x, groups, axis=axis)
            F.group_norm_backward(x, x, groups, gm, gr, axis=axis)
    for shape in ((16, 8), (2, 4096)):
        x = rng.standard_normal(shape).astype(dtype)
        _, mean, rstd = F.layer_norm(x, shape[-1])
        F.layer_norm_backward(x, x, shape[-1], mean, rstd)
        _, rstd = F.rms_norm(x, shape[-1])
        F.rms_norm_backward(x, x, shape[-1], rstd)


DTYPES = ("float32", "float64")


def _warm(dtype: str) -> None:
    for path in _PATHS:
        with _patched(**path):
            _exercise(np.dtype(dtype))


def default_jobs() -> int:
    """Processes for :func:`warmup`: one per dtype, at most one per core."""
    return max(1, min(len(DTYPES), os.cpu_count() or 1))


def warmup(verbose: bool = True, jobs: int | None = None) -> float:
    """Compile (or load from cache) every CPU kernel; returns the seconds it took.

    ``jobs`` > 1 compiles float32 and float64 in two processes first (see the
    module docstring; more than 2 jobs still uses 2); the pass in this
    process then only loads.  ``jobs=1`` compiles everything here.
    """
    jobs = default_jobs() if jobs is None else max(1, int(jobs))
    t0 = time.perf_counter()
    if jobs > 1 and _cache.active_root() is not None:
        procs = [subprocess.Popen([sys.executable, "-m", "fastbn.warmup", dtype])
                 for dtype in DTYPES]
        for proc in procs:
            proc.wait()
    for dtype in DTYPES:
        _warm(dtype)
    seconds = time.perf_counter() - t0
    if verbose:
        root = _cache.active_root()
        if root is None:
            print(f"fastbn: CPU kernels compiled in {seconds:.1f} s, not cached: no writable "
                  "cache directory (set NUMBA_CACHE_DIR)")
        else:
            print(f"fastbn: CPU kernels compiled and cached in {seconds:.1f} s "
                  f"({os.path.join(root, _cache.cache_key())})")
    return seconds


if __name__ == "__main__":  # one dtype, in a process of its own (see warmup(jobs=...))
    _warm(sys.argv[1])
