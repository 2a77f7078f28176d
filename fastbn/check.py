"""`fastbn check`: every implemented op on built-in inputs, against the reference.

Batch norm (train, inference, backward, frozen backward, the fused
residual + ReLU epilogue), layer norm, RMS norm, group norm and instance norm
(forward and backward).

Prints one row per case: the largest absolute difference from
:mod:`fastbn.reference` (float64), whether it is within the dtype's
tolerance, and median times of fastbn and of the NumPy reference measured
interleaved in the same loop.  Exits non-zero if any case is out of tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from . import functional as F
from . import reference as R

#: Largest acceptable |fastbn - reference| for outputs of order 1.
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@dataclass
class Case:
    op: str
    layout: str
    dtype: np.dtype
    shape: tuple
    run: Callable[[], tuple]        # fastbn: returns the arrays to compare
    oracle: Callable[[], tuple]     # reference: same arrays, float64


def _max_error(got, want) -> float:
    err = 0.0
    for g, w in zip(got, want, strict=True):
        w = np.asarray(w, dtype=np.float64)
        # sums (dweight, dbias) are compared relative to their size
        scale = max(1.0, float(np.abs(w).max(initial=0.0))) if w.ndim == 1 else 1.0
        err = max(err, float(np.abs(np.asarray(g, dtype=np.float64) - w).max(initial=0.0))
                  / scale)
    return err


def _median_times(fns, repeats: int) -> list[float]:
    """Median seconds of each function, calls interleaved so drift hits all alike."""
    for fn in fns:
        fn()  # warm-up: compile, page in
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for fn, s in zip(fns, samples, strict=True):
            t0 = time.perf_counter()
            fn()
            s.append(time.perf_counter() - t0)
    return [float(np.median(s)) for s in samples]


def _batch_norm_cases(layout, shape, axis, dtype, rng) -> list[Case]:
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[axis]
    w = rng.normal(1, 0.2, c).astype(dtype)
    b = rng.normal(0, 0.2, c).astype(dtype)
    rm = rng.normal(0, 1, c).astype(dtype)
    rv = rng.uniform(0.5, 2, c).astype(dtype)
    _, mean, rstd = F.batch_norm(x, w, b, axis=axis)
    grad = (dy, x, mean, rstd, w)

    def first(fn, *args, **kw):
        return fn(*args, **kw)[:1]

    def single(fn, *args, **kw):
        return (fn(*args, **kw),)

    res = rng.standard_normal(shape).astype(dtype)
    y_epi = F.batch_norm(x, w, b, axis=axis, activation="relu", residual=res)[0]
    g_epi = dy * (y_epi > 0)

    def epilogue_ref():
        return (np.maximum(R.batch_norm_train(x, w, b, axis=axis)[0] + res, 0),)

    return [
        Case("batch_norm train", layout, dtype, shape,
             partial(F.batch_norm, x, w, b, axis=axis),
             partial(R.batch_norm_train, x, w, b, axis=axis)),
        Case("batch_norm inference", layout, dtype, shape,
             partial(first, F.batch_norm, x, w, b, rm, rv, training=False, axis=axis),
             partial(single, R.batch_norm_inference, x, rm, rv, w, b, axis=axis)),
        Case("batch_norm backward", layout, dtype, shape,
             partial(F.batch_norm_backward, *grad, axis=axis),
             partial(R.batch_norm_backward_train, *grad, axis=axis)),
        Case("batch_norm backward frozen", layout, dtype, shape,
             partial(F.batch_norm_backward, *grad, training=False, axis=axis),
             partial(R.batch_norm_backward_frozen, *grad, axis=axis)),
        Case("batch_norm +residual relu", layout, dtype, shape,
             partial(first, F.batch_norm, x, w, b, axis=axis, activation="relu", residual=res),
             epilogue_ref),
        Case("batch_norm +residual relu bwd", layout, dtype, shape,
             partial(F.batch_norm_backward, dy, x, mean, rstd, w, axis=axis, activation="relu",
                     y=y_epi),
             partial(R.batch_norm_backward_train, g_epi, x, mean, rstd, w, axis=axis)),
    ]


def _layer_norm_cases(shape, dtype, rng) -> list[Case]:
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    d = shape[-1]
    w = rng.normal(1, 0.2, d).astype(dtype)
    b = rng.normal(0, 0.2, d).astype(dtype)
    _, mean, rstd = F.layer_norm(x, d, w, b)
    _, rms_rstd = F.rms_norm(x, d, w)
    layout = "rows"
    return [
        Case("layer_norm", layout, dtype, shape,
             partial(F.layer_norm, x, d, w, b), partial(R.layer_norm, x, d, w, b)),
        Case("layer_norm backward", layout, dtype, shape,
             partial(F.layer_norm_backward, dy, x, d, mean, rstd, w),
             partial(R.layer_norm_backward, dy, x, d, mean, rstd, w)),
        Case("rms_norm", layout, dtype, shape,
             partial(F.rms_norm, x, d, w), partial(R.rms_norm, x, d, w)),
        Case("rms_norm backward", layout, dtype, shape,
             partial(F.rms_norm_backward, dy, x, d, rms_rstd, w),
             partial(R.rms_norm_backward, dy, x, d, rms_rstd, w)),
    ]


def _group_norm_cases(layout, shape, axis, groups, dtype, rng) -> list[Case]:
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[axis]
    w = rng.normal(1, 0.2, c).astype(dtype)
    b = rng.normal(0, 0.2, c).astype(dtype)
    _, mean, rstd = F.group_norm(x, groups, w, b, axis=axis)
    _, imean, irstd = F.instance_norm(x, w, b, axis=axis)
    return [
        Case(f"group_norm G={groups}", layout, dtype, shape,
             partial(F.group_norm, x, groups, w, b, axis=axis),
             partial(R.group_norm, x, groups, w, b, axis=axis)),
        Case(f"group_norm G={groups} backward", layout, dtype, shape,
             partial(F.group_norm_backward, dy, x, groups, mean, rstd, w, axis=axis),
             partial(R.group_norm_backward, dy, x, groups, mean, rstd, w, axis=axis)),
        Case("instance_norm", layout, dtype, shape,
             partial(F.instance_norm, x, w, b, axis=axis),
             partial(R.instance_norm, x, w, b, axis=axis)),
        Case("instance_norm backward", layout, dtype, shape,
             partial(F.instance_norm_backward, dy, x, imean, irstd, w, axis=axis),
             partial(R.instance_norm_backward, dy, x, imean, irstd, w, axis=axis)),
    ]


def cases(quick: bool = False) -> list[Case]:
    """Every op and pass, float32 and float64, in NCHW, NHWC and 2-D layouts."""
    rng = np.random.default_rng(0)
    n, c, hw = (8, 16, 14) if quick else (16, 32, 28)
    layouts = (("NCHW", (n, c, hw, hw), 1), ("NHWC", (n, hw, hw, c), -1),
               ("NC", (64 * n, 4 * c), 1))
    out = []
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        for layout, shape, axis in layouts:
            out += _batch_norm_cases(layout, shape, axis, dtype, rng)
        out += _layer_norm_cases((64 * n, 8 * c), dtype, rng)
        for layout, shape, axis in layouts[:2]:
            out += _group_norm_cases(layout, shape, axis, 8, dtype, rng)
    return out


def run(quick: bool = False, repeats: int = 7, stream=None) -> bool:
    """Run every case, print the table, return True when all are within tolerance."""
    import sys

    stream = stream or sys.stdout
    header = (f"{'op':<30} {'layout':<6} {'dtype':<8} {'shape':<18} {'max error':>10} "
              f"{'ok':>3} {'fastbn ms':>10} {'numpy ms':>10} {'speedup':>8}")
    print(header, file=stream)
    print("-" * len(header), file=stream)
    all_ok = True
    for case in cases(quick):
        err = _max_error(case.run(), case.oracle())
        ok = err <= TOLERANCE[case.dtype]
        all_ok &= ok
        t_fast, t_ref = _median_times([case.run, case.oracle], repeats)
        print(f"{case.op:<30} {case.layout:<6} {case.dtype.name:<8} {str(case.shape):<18} "
              f"{err:>10.2e} {'yes' if ok else 'NO':>3} {t_fast * 1e3:>10.3f} "
              f"{t_ref * 1e3:>10.3f} {t_ref / t_fast:>7.1f}x", file=stream)
    print("all within tolerance" if all_ok else "SOME CASES OUT OF TOLERANCE", file=stream)
    return all_ok
