"""`fastbn bench`: the kernel benchmark table, measured so that ratios can be trusted.

For every case of the grid (op x pass x layout x dtype x size), fastbn, the
NumPy formula a user writes (:mod:`fastbn.formula`, in x's dtype), the
float64 NumPy oracle (:mod:`fastbn.reference`) and torch (when installed, on
fastbn's thread count) are called in turn inside one loop, so machine drift
hits all of them alike, and the median of the repeats after a warm-up is
reported.  A memory-bandwidth
probe (a parallel Numba copy) is measured in the same run, between the cases;
each kernel's GB/s counts the minimal traffic (forward: read x, write y;
backward: read x and dy, write dx) and is reported as a fraction of the probe.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numba
import numpy as np
from numba import prange

from . import _cache
from . import formula as Fm
from . import functional as F
from . import reference as R
from .cpu._jit import jit


@dataclass
class BenchCase:
    op: str
    pass_: str
    layout: str
    dtype: np.dtype
    shape: tuple
    arrays: int                     # arrays of x's size a minimal kernel moves
    fastbn: Callable[[], object]
    numpy: Callable[[], object]
    formula: Callable[[], object] | None = None   # the NumPy formula in x's dtype
    torch: Callable[[], object] | None = None
    results: dict = field(default_factory=dict)
    cold_results: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return self.arrays * math.prod(self.shape) * self.dtype.itemsize


# --- the bandwidth probe -----------------------------------------------------------------


@jit(parallel=True, cache=True, nogil=True)
def _copy(src, dst, chunk):
    n = src.size
    for t in prange((n + chunk - 1) // chunk):
        a = src[t * chunk:min(t * chunk + chunk, n)]
        b = dst[t * chunk:min(t * chunk + chunk, n)]
        for i in range(a.size):
            b[i] = a[i]


class BandwidthProbe:
    """Read + write GB/s of a parallel copy of ``megabytes`` MB (median of repeats)."""

    def __init__(self, megabytes: int = 256):
        n = megabytes * (1 << 20) // 4
        self.src = np.ones(n, np.float32)
        self.dst = np.empty_like(self.src)
        _copy(self.src, self.dst, 1 << 16)
        self.samples: list[float] = []

    def measure(self, repeats: int = 3) -> None:
        for _ in range(repeats):
            t0 = time.perf_counter()
            _copy(self.src, self.dst, 1 << 16)
            self.samples.append(2 * self.src.nbytes / (time.perf_counter() - t0) / 1e9)

    @property
    def gbps(self) -> float:
        return float(np.median(self.samples))


class CacheFlush:
    """Evicts the caches: one thread copies ``megabytes`` MB (twice the 32 MB L3 of the
    machines this project measures on, by default), so the next call reads its inputs
    from memory.

    NumPy's single-threaded copy, not a Numba kernel: a parallel flush would
    leave Numba's pool spinning, charged to the next backend.  What the other
    core's private L2 (1-2 MB) held of an input may survive; on inputs of 8 MB
    and more that is a few percent of the bytes.
    """

    def __init__(self, megabytes: int = 64):
        n = megabytes * (1 << 20) // 8
        self.src = np.ones(n)
        self.dst = np.empty_like(self.src)
        np.copyto(self.dst, self.src)

    def __call__(self) -> None:
        np.copyto(self.dst, self.src)
        self.src, self.dst = self.dst, self.src


# --- the grid ----------------------------------------------------------------------------


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(numba.get_num_threads())  # same thread count as fastbn
    return torch


def _channels_first(torch, a, axis):
    t = torch.from_numpy(a)
    return t if axis == 1 else t.movedim(-1, 1)


def _batch_norm_cases(torch, layout, shape, axis, dtype, rng):
    x = rng.standard_normal(shape, dtype)
    dy = rng.standard_normal(shape, dtype)
    c = shape[axis]
    w, b = np.ones(c, dtype), np.zeros(c, dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    _, mean, rstd = Fm.batch_norm_train(x, w, b, axis=axis)  # compiles nothing (grid)
    grad = (dy, x, mean, rstd, w)
    cases = [
        BenchCase("batch_norm", "forward-train", layout, dtype, shape, 2,
                  partial(F.batch_norm, x, w, b, axis=axis),
                  partial(R.batch_norm_train, x, w, b, axis=axis),
                  partial(Fm.batch_norm_train, x, w, b, axis=axis)),
        BenchCase("batch_norm", "inference", layout, dtype, shape, 2,
                  partial(F.batch_norm, x, w, b, rm, rv, training=False, axis=axis),
                  partial(R.batch_norm_inference, x, rm, rv, w, b, axis=axis),
                  partial(Fm.batch_norm_inference, x, rm, rv, w, b, axis=axis)),
        BenchCase("batch_norm", "backward", layout, dtype, shape, 3,
                  partial(F.batch_norm_backward, *grad, axis=axis),
                  partial(R.batch_norm_backward_train, *grad, axis=axis),
                  partial(Fm.batch_norm_backward_train, *grad, axis=axis)),
    ]
    if torch is not None:
        t = torch.from_numpy
        xt, dyt = _channels_first(torch, x, axis), _channels_first(torch, dy, axis)
        fb = torch.nn.functional.batch_norm
        cases[0].torch = partial(_no_grad, torch, fb, xt, None, None, t(w), t(b), True)
        cases[1].torch = partial(_no_grad, torch, fb, xt, t(rm), t(rv), t(w), t(b), False)
        cases[2].torch = partial(torch.ops.aten.native_batch_norm_backward, dyt, xt, t(w),
                                 None, None, t(mean), t(rstd), True, 1e-5, [True] * 3)
    return cases


def _epilogue_cases(torch, shape, dtype, rng):
    """Batch norm fused with the residual add and ReLU, against the same three ops unfused."""
    x = rng.standard_normal(shape, dtype)
    dy = rng.standard_normal(shape, dtype)
    res = rng.standard_normal(shape, dtype)
    c = shape[1]
    w, b = np.ones(c, dtype), np.zeros(c, dtype)
    y, mean, rstd = Fm.batch_norm_train(x, w, b)
    y = np.maximum(y + res, 0)
    dres = np.empty_like(x)

    def numpy_forward():
        return np.maximum(R.batch_norm_train(x, w, b)[0] + res, 0)

    def numpy_backward():
        g = dy * (y > 0)
        return R.batch_norm_backward_train(g, x, mean, rstd, w), g

    def formula_forward():
        return np.maximum(Fm.batch_norm_train(x, w, b)[0] + res, 0)

    def formula_backward():
        g = dy * (y > 0)
        return Fm.batch_norm_backward_train(g, x, mean, rstd, w), g

    cases = [
        BenchCase("bn+add+relu", "forward-train", "NCHW", dtype, shape, 3,
                  partial(F.batch_norm, x, w, b, activation="relu", residual=res), numpy_forward,
                  formula_forward),
        BenchCase("bn+add+relu", "backward", "NCHW", dtype, shape, 5,
                  partial(F.batch_norm_backward, dy, x, mean, rstd, w, activation="relu", y=y,
                          dresidual=dres), numpy_backward, formula_backward),
    ]
    if torch is not None:
        t = torch.from_numpy
        xt, rt, dyt, yt = t(x), t(res), t(dy), t(y)

        def torch_forward():
            with torch.no_grad():
                out = torch.nn.functional.batch_norm(xt, None, None, t(w), t(b), True)
                return torch.relu_(out.add_(rt))

        def torch_backward():
            g = torch.ops.aten.threshold_backward(dyt, yt, 0)
            return torch.ops.aten.native_batch_norm_backward(
                g, xt, t(w), None, None, t(mean), t(rstd), True, 1e-5, [True] * 3), g

        cases[0].torch = torch_forward
        cases[1].torch = torch_backward
    return cases


#: The masked rows: padded sequences (N, C, T) and their channels-last twin (N, T, C).
MASKED_SHAPE = (32, 256, 200)


def _sequence_mask(rng, n, t):
    """Padded sequences: lengths uniform in [0.6 t, t], so 80% of positions are valid
    on average; the padding at the end of each sequence."""
    lengths = rng.integers(int(0.6 * t), t + 1, size=n)
    return np.arange(t)[None, :] < lengths[:, None]


def _masked_cases(torch, layout, shape, axis, dtype, rng):
    """Masked batch norm, forward-train and backward, with the unmasked calls on the same
    data (op ``batch_norm``) for the masked/unmasked ratio.  torch has no masked batch
    norm: the masked rows have no torch column."""
    x = rng.standard_normal(shape, dtype)
    dy = rng.standard_normal(shape, dtype)
    ax = axis % len(shape)
    c = shape[ax]
    n, t = (shape[0], shape[2]) if ax == 1 else (shape[0], shape[1])
    mask = _sequence_mask(rng, n, t)
    w, b = np.ones(c, dtype), np.zeros(c, dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    m = np.expand_dims(mask, ax)  # broadcasts against x
    axes = tuple(i for i in range(len(shape)) if i != ax)
    bshape = [1] * len(shape)
    bshape[ax] = c
    mv = dtype.type(mask.sum())
    eps = dtype.type(1e-5)

    def formula_stats():
        mean = np.where(m, x, 0).sum(axes, keepdims=True) / mv
        var = np.where(m, (x - mean) ** 2, 0).sum(axes, keepdims=True) / mv
        return mean, 1 / np.sqrt(var + eps)

    def formula_forward():
        mean, rstd = formula_stats()
        return (x - mean) * rstd * w.reshape(bshape) + b.reshape(bshape)

    _, mean, rstd = R.batch_norm_train_masked(x, mask, w, b, axis=axis)
    mean, rstd = mean.astype(dtype), rstd.astype(dtype)
    fmean, frstd = mean.reshape(bshape), rstd.reshape(bshape)

    def formula_backward():
        xhat = (x - fmean) * frstd
        dyh = dy * w.reshape(bshape)
        c1 = (dyh * xhat).sum(axes, keepdims=True) / mv
        c2 = dyh.sum(axes, keepdims=True) / mv
        return (dyh - np.where(m, xhat * c1 + c2, 0)) * frstd, (dy * xhat).sum(axes)

    masked = [
        BenchCase("batch_norm_masked", "forward-train", layout, dtype, shape, 2,
                  partial(F.batch_norm, x, w, b, rm, rv, axis=axis, mask=mask),
                  partial(R.batch_norm_train_masked, x, mask, w, b, axis=axis),
                  formula_forward),
        BenchCase("batch_norm_masked", "backward", layout, dtype, shape, 3,
                  partial(F.batch_norm_backward, dy, x, mean, rstd, w, axis=axis, mask=mask),
                  partial(R.batch_norm_backward_train_masked, dy, x, mask, mean, rstd, w,
                          axis=axis),
                  formula_backward),
    ]
    plain = [case for case in _batch_norm_cases(torch, layout, shape, axis, dtype, rng)
             if case.pass_ in ("forward-train", "backward")]
    return masked + plain


def masked_ratios(report: dict) -> list[tuple[dict, float]]:
    """Each masked row with ``median_s`` over that of the unmasked row of the same pass,
    layout, dtype and shape."""
    plain = {(r["pass"], r["layout"], r["dtype"], tuple(r["shape"])): r["median_s"]
             for r in report["rows"] if r["op"] == "batch_norm"}
    out = []
    for r in report["rows"]:
        key = (r["pass"], r["layout"], r["dtype"], tuple(r["shape"]))
        if r["op"] == "batch_norm_masked" and key in plain:
            out.append((r, r["median_s"] / plain[key]))
    return out


def _no_grad(torch, fn, *args):
    with torch.no_grad():
        return fn(*args)


def _layer_norm_cases(torch, shape, dtype, rng, dims=1):
    """Layer and RMS norm over the last ``dims`` dimensions of ``shape``."""
    x = rng.standard_normal(shape, dtype)
    dy = rng.standard_normal(shape, dtype)
    d = tuple(shape[-dims:])
    lead = shape[:-dims]
    w, b = np.ones(d, dtype), np.zeros(d, dtype)
    _, mean, rstd = Fm.layer_norm(x, d, w, b)
    mean, rstd = mean.reshape(lead), rstd.reshape(lead)
    rms_rstd = Fm.rms_norm(x, d, w)[1].reshape(lead)
    cases = [
        BenchCase("layer_norm", "forward", "rows", dtype, shape, 2,
                  partial(F.layer_norm, x, d, w, b), partial(R.layer_norm, x, d, w, b),
                  partial(Fm.layer_norm, x, d, w, b)),
        BenchCase("layer_norm", "backward", "rows", dtype, shape, 3,
                  partial(F.layer_norm_backward, dy, x, d, mean, rstd, w),
                  partial(R.layer_norm_backward, dy, x, d, mean, rstd, w),
                  partial(Fm.layer_norm_backward, dy, x, d, mean, rstd, w)),
        BenchCase("rms_norm", "forward", "rows", dtype, shape, 2,
                  partial(F.rms_norm, x, d, w), partial(R.rms_norm, x, d, w),
                  partial(Fm.rms_norm, x, d, w)),
        BenchCase("rms_norm", "backward", "rows", dtype, shape, 3,
                  partial(F.rms_norm_backward, dy, x, d, rms_rstd, w),
                  partial(R.rms_norm_backward, dy, x, d, rms_rstd, w),
                  partial(Fm.rms_norm_backward, dy, x, d, rms_rstd, w)),
    ]
    if torch is not None:
        t = torch.from_numpy
        stat = lead + (1,) * dims
        cases[0].torch = partial(torch.nn.functional.layer_norm, t(x), d, t(w), t(b))
        cases[1].torch = partial(torch.ops.aten.native_layer_norm_backward, t(dy), t(x), list(d),
                                 t(mean).reshape(stat), t(rstd).reshape(stat), t(w), t(b),
                                 [True] * 3)
        cases[2].torch = partial(torch.nn.functional.rms_norm, t(x), d, t(w), 1e-6)
        # RMS norm backward: torch has no CPU kernel that takes the saved rstd
        # (autograd would recompute the forward), so no torch column.
    return cases


def _group_norm_cases(torch, layout, shape, axis, groups, dtype, rng):
    x = rng.standard_normal(shape, dtype)
    dy = rng.standard_normal(shape, dtype)
    c = shape[axis]
    w, b = np.ones(c, dtype), np.zeros(c, dtype)
    _, mean, rstd = Fm.group_norm(x, groups, w, b, axis=axis)
    op = f"group_norm G={groups}"
    cases = [
        BenchCase(op, "forward", layout, dtype, shape, 2,
                  partial(F.group_norm, x, groups, w, b, axis=axis),
                  partial(R.group_norm, x, groups, w, b, axis=axis),
                  partial(Fm.group_norm, x, groups, w, b, axis=axis)),
        BenchCase(op, "backward", layout, dtype, shape, 3,
                  partial(F.group_norm_backward, dy, x, groups, mean, rstd, w, axis=axis),
                  partial(R.group_norm_backward, dy, x, groups, mean, rstd, w, axis=axis),
                  partial(Fm.group_norm_backward, dy, x, groups, mean, rstd, w, axis=axis)),
    ]
    if torch is not None:
        t = torch.from_numpy
        xt, dyt = _channels_first(torch, x, axis), _channels_first(torch, dy, axis)
        n = shape[0]
        cases[0].torch = partial(torch.nn.functional.group_norm, xt, groups, t(w), t(b))
        cases[1].torch = partial(torch.ops.aten.native_group_norm_backward, dyt, xt, t(mean),
                                 t(rstd), t(w), n, c, x.size // (n * c), groups, [True] * 3)
    return cases


OPS = ("batch_norm", "layer_norm", "rms_norm", "group_norm", "epilogue", "batch_norm_masked")


#: Layouts of the grid (a layer norm's are "rows").
LAYOUTS = ("NCHW", "NHWC", "NC", "rows", "NCL", "NLC")


def _compile_group(case: BenchCase) -> int:
    """Which of two compiling processes takes a case (:func:`precompile`): 0, the column
    kernels of channels-last and 2-D batch norm and channels-last group norm backward;
    1, the rest (channels-last group norm forward has kernels of its own).  Of the
    splits tried on 2 cores this one ended a cold quick run soonest (31-33 s with the
    install, against 36 s for splitting by layout alone)."""
    columns = case.layout in ("NHWC", "NC", "NLC") and not (
        case.op.startswith("group_norm") and case.pass_ == "forward")
    return 0 if columns else 1


def grid(quick: bool = False, ops=OPS, dtypes=None, with_torch: bool = True,
         layouts=LAYOUTS) -> list[BenchCase]:
    """The benchmark cases: large (>= 8 MB per float32 tensor) and small latency ones.

    The backward cases' saved statistics come from the NumPy formula, so
    building the grid compiles no kernel (:func:`precompile` runs meanwhile).
    """
    rng = np.random.default_rng(0)
    torch = _torch() if with_torch else None
    dtypes = dtypes or ([np.dtype(np.float32)] if quick
                        else [np.dtype(np.float32), np.dtype(np.float64)])
    cases: list[BenchCase] = []
    for dtype in dtypes:
        if "batch_norm" in ops:
            for layout, shape, axis in (("NCHW", (32, 64, 56, 56), 1),
                                        ("NHWC", (32, 56, 56, 64), -1),
                                        ("NC", (4096, 1024), 1), ("NC", (512, 256), 1),
                                        ("NC", (256, 1024), 1), ("NC", (32, 256), 1)):
                if layout in layouts:
                    cases += _batch_norm_cases(torch, layout, shape, axis, dtype, rng)
        if "batch_norm_masked" in ops:
            n, c, t = MASKED_SHAPE
            for layout, shape, axis in (("NCL", (n, c, t), 1), ("NLC", (n, t, c), -1)):
                if layout in layouts:
                    cases += _masked_cases(torch, layout, shape, axis, dtype, rng)
        if "epilogue" in ops and "NCHW" in layouts:
            cases += _epilogue_cases(torch, (32, 64, 56, 56), dtype, rng)
        if ("layer_norm" in ops or "rms_norm" in ops) and "rows" in layouts:
            for shape, dims in (((4096, 1024), 1), ((8, 512, 768), 1), ((8, 768), 1),
                                ((16, 64, 56, 56), 3)):
                cases += [c for c in _layer_norm_cases(torch, shape, dtype, rng, dims)
                          if c.op in ops]
        if "group_norm" in ops:
            for layout, shape, axis in (("NCHW", (32, 64, 56, 56), 1),
                                        ("NHWC", (32, 56, 56, 64), -1),
                                        ("NCHW", (2, 64, 56, 56), 1),
                                        ("NHWC", (2, 56, 56, 64), -1)):
                if layout in layouts:
                    cases += _group_norm_cases(torch, layout, shape, axis, 32, dtype, rng)
    if quick:  # the out= variants only in the full run
        return cases
    return cases + [_into_out(c) for c in cases if _large(c) and c.pass_ in FORWARD_PASSES]


FORWARD_PASSES = ("forward-train", "inference", "forward")
OUT = " out="


def _large(case: BenchCase) -> bool:
    return math.prod(case.shape) * case.dtype.itemsize >= 8 * (1 << 20)


def _into_out(case: BenchCase) -> BenchCase:
    """The same forward call writing into a preallocated ``out=`` (pass ``"... out="``).

    A new output array of more than 32 MB is a fresh ``mmap`` on every call
    (glibc's largest malloc threshold), so the allocating call also pays the
    kernel's zeroing and page faults of its output on first touch; the ``out=``
    variant shows the kernel alone.  The baselines still allocate, so these
    rows stay out of the geometric means.
    """
    out = np.empty(case.shape, case.dtype)
    return BenchCase(case.op, case.pass_ + OUT, case.layout, case.dtype, case.shape,
                     case.arrays, partial(case.fastbn, out=out), case.numpy, case.formula,
                     case.torch)


# --- measuring ---------------------------------------------------------------------------


def _repeats(case: BenchCase, quick: bool) -> int:
    """Enough repeats for a stable median, fewer for slow cases; fixed per case."""
    big = case.nbytes >= 8 * (1 << 20)
    if quick:
        return 3 if big else 15
    return 15 if big else 100


def measure(case: BenchCase, quick: bool, flush: Callable[[], object] | None = None) -> None:
    """Median seconds of each backend, their calls interleaved in one loop.

    The warm samples (``case.results``) follow an untimed call on the same
    inputs, so whatever of them fits the last-level cache is there.  With a
    ``flush`` (:class:`CacheFlush`, ``fastbn bench --cold``) each warm sample
    is followed by a flush and a cold sample (``case.cold_results``), so the
    two states are measured interleaved, in the same loop.

    Before each timed call of a threaded backend one untimed call lets the
    other backend's thread pool go idle: Numba's OpenMP workers and torch's
    keep spinning for a while after a parallel region, and on a machine with
    few cores the spinning pool of one would be charged to the other.
    """
    backends = {"fastbn": case.fastbn, "numpy": case.numpy}
    if case.formula is not None:
        backends["numpy_formula"] = case.formula
    if case.torch is not None:
        backends["torch"] = case.torch
    for name, fn in backends.items():
        # warm-up: compile, allocate, page in.  With --quick the NumPy baselines of a
        # large case go without (the oracle is timed once, the formula's median of
        # three takes the first call's page faults): their temporaries (25-100 MB)
        # are mostly fresh mmaps, page faults included, on every call anyway
        if not (quick and name in ("numpy", "numpy_formula") and _large(case)):
            fn()
    samples = {k: [] for k in backends}
    cold_samples = {k: [] for k in backends}
    for i in range(_repeats(case, quick)):
        for name, fn in backends.items():
            # the reference is 10-100x slower: time it on rounds 0-2 and every 4th
            # (--quick: round 0 only)
            if name == "numpy" and (i >= 1 if quick else i >= 3 and i % 4):
                continue
            if name != "numpy" and not (quick and name == "numpy_formula" and _large(case)):
                # settle: the previous backend's pool stops spinning meanwhile.  (--quick
                # skips it for the single-threaded formula on large cases: 10-130 ms a
                # call, against a pool that spins for well under a millisecond)
                fn()
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
            if flush is not None:
                flush()  # evicts the inputs; the backend's pool stops spinning meanwhile
                t0 = time.perf_counter()
                fn()
                cold_samples[name].append(time.perf_counter() - t0)
    case.results = {k: float(np.median(v)) for k, v in samples.items()}
    if flush is not None:
        case.cold_results = {k: float(np.median(v)) for k, v in cold_samples.items()}


def _machine(bandwidth: float, cold: bool = False) -> dict:
    torch = _torch()
    return {
        "cache": "cold" if cold else "warm",
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": numba.get_num_threads(),
        "threading_layer": numba.threading_layer(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": None if torch is None else torch.__version__,
        "bandwidth_gbps": bandwidth,
        "date": time.strftime("%Y-%m-%d"),
    }


def _timings(results: dict, nbytes: int, bandwidth: float) -> dict:
    """The timing fields of a row from one cache state's medians."""
    fastbn = results["fastbn"]
    gbps = nbytes / fastbn / 1e9
    torch_s = results.get("torch")
    formula_s = results.get("numpy_formula")
    return {
        "median_s": fastbn, "gbps": gbps, "bandwidth_fraction": gbps / bandwidth,
        "numpy_median_s": results["numpy"], "speedup_vs_numpy": results["numpy"] / fastbn,
        "torch_median_s": torch_s,
        "speedup_vs_torch": None if torch_s is None else torch_s / fastbn,
        "numpy_formula_median_s": formula_s,
        "speedup_vs_numpy_formula": None if formula_s is None else formula_s / fastbn,
    }


def rows(cases: list[BenchCase], bandwidth: float) -> list[dict]:
    """One row per case.  After a cold run (``case.cold_results`` set) the row's timing
    fields are the cold ones and ``"warm"`` holds the same fields measured warm."""
    out = []
    for c in cases:
        row = {"op": c.op, "pass": c.pass_, "layout": c.layout, "dtype": c.dtype.name,
               "shape": list(c.shape), "backend": "cpu"}
        if c.cold_results:
            row.update(_timings(c.cold_results, c.nbytes, bandwidth))
            row["warm"] = _timings(c.results, c.nbytes, bandwidth)
        else:
            row.update(_timings(c.results, c.nbytes, bandwidth))
        out.append(row)
    return out


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}" if s < 1 else f"{s * 1e3:.0f}"


def table(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"fastbn bench, {m['date']}: {m['processor']}, {m['threads']} threads "
        f"({m['threading_layer']}), numpy {m['numpy']}, numba {m['numba']}, "
        f"torch {m['torch'] or 'not installed'}",
        f"bandwidth probe (parallel copy, read + write): {m['bandwidth_gbps']:.1f} GB/s",
        ("caches: cold, flushed before every timed call (rows' warm medians in the JSON)"
         if m.get("cache") == "cold" else
         "caches: warm, every timed call follows a call on the same inputs (--cold flushes)"),
        "",
        f"{'op':<16} {'pass':<19} {'layout':<6} {'dtype':<7} {'shape':<18} {'ms':>8} "
        f"{'GB/s':>6} {'of bw':>6} {'formula ms':>10} {'vs formula':>10} {'numpy ms':>9} "
        f"{'vs numpy':>8} {'torch ms':>9} {'vs torch':>8}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in report["rows"]:
        torch = ("" if r["torch_median_s"] is None else _ms(r["torch_median_s"]))
        vs_torch = ("" if r["speedup_vs_torch"] is None else f"{r['speedup_vs_torch']:.2f}x")
        formula = ("" if r.get("numpy_formula_median_s") is None
                   else _ms(r["numpy_formula_median_s"]))
        vs_formula = ("" if r.get("speedup_vs_numpy_formula") is None
                      else f"{r['speedup_vs_numpy_formula']:.1f}x")
        lines.append(
            f"{r['op']:<16} {r['pass']:<19} {r['layout']:<6} {r['dtype']:<7} "
            f"{'x'.join(map(str, r['shape'])):<18} {_ms(r['median_s']):>8} "
            f"{r['gbps']:>6.1f} {r['bandwidth_fraction']:>6.2f} {formula:>10} {vs_formula:>10} "
            f"{_ms(r['numpy_median_s']):>9} {r['speedup_vs_numpy']:>7.1f}x {torch:>9} "
            f"{vs_torch:>8}")
    lines.append("")
    for r, ratio in masked_ratios(report):
        lines.append(f"masked / unmasked, {r['pass']} {r['layout']} {r['dtype']} "
                     f"{'x'.join(map(str, r['shape']))}: {ratio:.2f}x")
    for key, name in (("speedup_vs_numpy_formula", "the NumPy formula (x's dtype)"),
                      ("speedup_vs_numpy", "the float64 NumPy oracle"),
                      ("speedup_vs_torch", "torch")):
        speedups = [r[key] for r in report["rows"]
                    if r.get(key) and not r["pass"].endswith(OUT)]
        if speedups:
            lines.append(f"geometric mean vs {name}: "
                         f"{math.exp(np.mean(np.log(speedups))):.2f}x over {len(speedups)} "
                         f"cases (out= rows excluded); lowest {min(speedups):.2f}x")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = report["rows"]
    labels = [f"{r['op']} {r['pass']}\n{r['layout']} {'x'.join(map(str, r['shape']))} "
              f"{r['dtype']}" for r in rs]
    y = np.arange(len(rs))
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rs) + 1.5))
    ax.barh(y - 0.2, [r["bandwidth_fraction"] for r in rs], 0.4, label="fastbn")
    if any(r["speedup_vs_torch"] for r in rs):
        # torch moving the same minimal bytes in its own time
        ax.barh(y + 0.2, [r["bandwidth_fraction"] / r["speedup_vs_torch"]
                          if r["speedup_vs_torch"] else 0 for r in rs], 0.4, label="torch")
    ax.set_yticks(y, labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel(f"fraction of measured copy bandwidth "
                  f"({report['machine']['bandwidth_gbps']:.1f} GB/s)")
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.legend()
    ax.set_title(f"fastbn bench, {report['machine']['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _progress(cases):
    try:
        from tqdm import tqdm
    except ImportError:
        return cases
    return tqdm(cases, desc="fastbn bench", unit="case", file=sys.stderr)


def precompile(quick: bool, ops=OPS) -> list[subprocess.Popen]:
    """With an empty compile cache, start two processes that compile the grid's kernels.

    Numba compiles on one core; on a fresh install the kernels the grid needs
    take most of a quick run.  Each process builds the grid and calls fastbn
    once per case of its half (:func:`_compile_group`), so exactly the kernels
    and paths the grid takes land in the cache, where the measuring process
    then loads them (:mod:`fastbn._cache` merges concurrent writers' entries).
    Nothing is started with a warm or no cache, or on one core.
    """
    root = _cache.active_root()
    if (root is None or (os.cpu_count() or 1) < 2
            or _cache.Usage.of(os.path.join(root, _cache.cache_key()), "*.nbi").files):
        return []
    flags = ["--quick"] if quick else []
    return [subprocess.Popen([sys.executable, "-m", "fastbn.bench", str(group), *flags, *ops])
            for group in (0, 1)]


def _compile(group: int, quick: bool, ops) -> None:
    if group == 0:
        parts = [(ops, ("NHWC", "NC"))]
    else:  # build only what this half calls: data for the grid costs seconds
        parts = [(ops, ("NCHW", "rows")), ([op for op in ops if op == "group_norm"], ("NHWC",))]
    for part_ops, layouts in parts:
        for case in grid(quick, tuple(part_ops), with_torch=False, layouts=layouts):
            if _compile_group(case) == group:
                case.fastbn()


def run(quick: bool = False, ops=OPS, json_path: str | None = None,
        plot_path: str | None = None, stream=None, cold: bool = False) -> dict:
    """Run the grid, print the table, optionally write JSON and a plot; return the report.

    ``cold``: time every call after a cache flush as well (:func:`measure`); the
    table and the rows' fields are then the cold medians, each row's ``"warm"`` the
    warm ones.
    """
    stream = stream or sys.stdout
    compiling = precompile(quick, ops)
    cases = grid(quick, ops)  # compiles nothing: overlaps the compiling
    probe = BandwidthProbe(64 if quick else 256)
    flush = CacheFlush() if cold else None
    for proc in compiling:
        proc.wait()
    probe.measure()
    for i, case in enumerate(_progress(cases)):
        measure(case, quick, flush)
        if i % 4 == 3:
            probe.measure(1)  # the probe's samples spread over the whole run
    probe.measure()
    report = {"machine": _machine(probe.gbps, cold), "rows": rows(cases, probe.gbps)}
    print(table(report), file=stream)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    if plot_path:
        plot(report, plot_path)
    return report


if __name__ == "__main__":  # compile one group of ops in a process of its own (precompile)
    _compile(int(sys.argv[1]), "--quick" in sys.argv, [a for a in sys.argv[2:] if a != "--quick"])
