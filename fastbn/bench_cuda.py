"""`fastbn bench --device cuda`: the kernel benchmark table for the GPU kernels.

The same grid as :mod:`fastbn.bench` (op x pass x layout x dtype x size) on
device arrays (``numba.cuda.to_device``): batch norm (training forward,
inference, backward; NCHW, NHWC, NC), layer and RMS norm (forward, backward)
and group norm (forward, backward).  For every case fastbn, torch's CUDA
kernels (when ``torch.cuda.is_available()``) and the CuPy formula (the NumPy
expression of :mod:`fastbn.formula` evaluated on CuPy arrays, when CuPy is
installed) are called in turn inside one loop, each timed call between two
``cuda.synchronize()`` (so a time includes the host's launch overhead, alike
for every backend), and the median of the repeats after a warm-up is reported.

Rows have the keys of :func:`fastbn.bench.rows` with ``"backend": "cuda"``, and:

* ``numpy_formula_*`` is the CuPy formula (null without CuPy);
* ``torch_*`` is torch CUDA (null without it; RMS norm backward has no torch
  kernel that takes the saved ``rstd``, so it stays null there);
* ``numpy_median_s`` / ``speedup_vs_numpy`` (the float64 oracle
  :mod:`fastbn.reference`, on the host) are null, except with ``smoke``, where
  the oracle's one call on the tiny inputs is timed;
* ``max_err``: every row checks fastbn's result once against the oracle: the
  largest, over every array the op returns, of ``max|out - ref|`` divided by
  ``max(1, max|ref|)`` (so the summed parameter gradients count relative to
  their size); :data:`TOL` is what :func:`failures` accepts;
* ``error``: null, or the exception of a case fastbn failed to run (its
  timing fields are then null).

The bandwidth probe is a device-to-device copy (``dst.copy_to_device(src)``),
read + write GB/s, measured before, between and after the cases.  The JSON is
``{"machine": {..., "device", "compute_capability", "simulator",
"bandwidth_gbps"}, "rows": [...]}``.

``smoke`` runs tiny shapes once each, with no warm-up (the times include
compilation and mean nothing): a check that every kernel runs and is right,
fast enough for the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, which must be
set before numba is imported; the simulator then runs with
``config.THREADS_PER_BLOCK = 8``).  Only ``smoke`` runs on the simulator.
``quick``: float32 only, fewer repeats.  The full run adds float16 (computed
in float32 by fastbn, see :mod:`fastbn.cuda._half`).

Run it as ``python -m fastbn.bench_cuda [--quick] [--smoke] [--ops ...] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from . import config
from . import formula as Fm
from . import functional as F
from . import reference as R
from .bench import BenchCase, _ms

OPS = ("batch_norm", "layer_norm", "rms_norm", "group_norm")

#: What :func:`failures` accepts as ``max_err`` per dtype (float16 output rounds at ~1e-3).
TOL = {"float16": 3e-2, "float32": 1e-3, "float64": 1e-8}

NO_GPU = ("fastbn bench --device cuda needs a usable CUDA GPU: install an NVIDIA driver and "
          "numba-cuda with its CUDA libraries (pip install 'numba-cuda[cu12]'), or set "
          "NUMBA_ENABLE_CUDASIM=1 (before starting Python) and pass --smoke to run on the "
          "CUDA simulator")


@dataclass
class CudaCase(BenchCase):
    """A :class:`fastbn.bench.BenchCase` on device arrays: ``numpy`` is the host oracle,
    ``formula`` the CuPy formula, ``torch`` torch CUDA."""

    max_err: float | None = None
    error: str | None = None
    skipped: list = field(default_factory=list)   # baselines that raised, with why


# --- the device --------------------------------------------------------------------------


def _gpu():
    """``numba.cuda`` and whether it is the simulator; RuntimeError when neither a GPU
    nor the simulator is usable (never waits for a device)."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise RuntimeError(NO_GPU + " (numba-cuda is not installed)")
    from numba import cuda

    from .cuda import SIMULATOR

    if not cuda.is_available():
        raise RuntimeError(NO_GPU)
    return cuda, SIMULATOR


def _torch_cuda(simulator: bool):
    if simulator:  # the simulator's arrays are host arrays: nothing to compare with
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _cupy(simulator: bool):
    if simulator or importlib.util.find_spec("cupy") is None:
        return None
    try:
        return importlib.import_module("cupy")
    except Exception:  # noqa: BLE001  (a CuPy without its CUDA libraries)
        return None


class DeviceBandwidthProbe:
    """Read + write GB/s of a device-to-device copy of ``megabytes`` MB."""

    def __init__(self, cuda, sync, megabytes: int):
        n = max(megabytes * (1 << 20) // 4, 1024)
        self.src = cuda.to_device(np.ones(n, np.float32))
        self.dst = cuda.device_array_like(self.src)
        self.sync = sync
        self.dst.copy_to_device(self.src)
        self.samples: list[float] = []

    def measure(self, repeats: int = 3) -> None:
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            self.dst.copy_to_device(self.src)
            self.sync()
            self.samples.append(2 * self.src.nbytes / (time.perf_counter() - t0) / 1e9)

    @property
    def gbps(self) -> float:
        return float(np.median(self.samples))


# --- the grid ----------------------------------------------------------------------------


class _Env:
    """What building the cases needs: the device, the baselines, a seeded generator."""

    def __init__(self, cuda, torch, cupy, seed: int = 0):
        self.cuda, self.torch, self.cupy = cuda, torch, cupy
        self.rng = np.random.default_rng(seed)

    def bare(self) -> _Env:
        """The same device and generator, without baselines."""
        env = _Env(self.cuda, None, None)
        env.rng = self.rng
        return env

    def normal(self, shape, dtype):
        return self.rng.standard_normal(shape, np.float32).astype(dtype)

    def d(self, a):
        return self.cuda.to_device(np.ascontiguousarray(a))

    def t(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).cuda()

    def c(self, a):
        return self.cupy.asarray(a)


def _channels_first(env, a, axis):
    t = env.t(a)
    return t if axis % a.ndim == 1 else t.movedim(-1, 1)


def _no_grad(torch, fn, *args):
    with torch.no_grad():
        return fn(*args)


def _batch_norm_cases(env, layout, shape, axis, dtype):
    x, dy = env.normal(shape, dtype), env.normal(shape, dtype)
    c = shape[axis]
    w, b = np.ones(c, dtype), np.zeros(c, dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    dx_, ddy, dw, db, drm, drv = map(env.d, (x, dy, w, b, rm, rv))
    _, d_mean, d_rstd = F.batch_norm(dx_, dw, db, axis=axis)  # the saved statistics
    mean, rstd = d_mean.copy_to_host(), d_rstd.copy_to_host()
    cases = [
        CudaCase("batch_norm", "forward-train", layout, dtype, shape, 2,
                 partial(F.batch_norm, dx_, dw, db, axis=axis),
                 partial(R.batch_norm_train, x, w, b, axis=axis)),
        CudaCase("batch_norm", "inference", layout, dtype, shape, 2,
                 partial(F.batch_norm, dx_, dw, db, drm, drv, training=False, axis=axis),
                 partial(R.batch_norm_inference, x, rm, rv, w, b, axis=axis)),
        CudaCase("batch_norm", "backward", layout, dtype, shape, 3,
                 partial(F.batch_norm_backward, ddy, dx_, d_mean, d_rstd, dw, axis=axis),
                 partial(R.batch_norm_backward_train, dy, x, mean, rstd, w, axis=axis)),
    ]
    if env.cupy is not None:
        cx, cdy, cw, cb, crm, crv = map(env.c, (x, dy, w, b, rm, rv))
        _, cmean, crstd = Fm.batch_norm_train(cx, cw, cb, axis=axis)
        cases[0].formula = partial(Fm.batch_norm_train, cx, cw, cb, axis=axis)
        cases[1].formula = partial(Fm.batch_norm_inference, cx, crm, crv, cw, cb, axis=axis)
        cases[2].formula = partial(Fm.batch_norm_backward_train, cdy, cx, cmean, crstd, cw,
                                   axis=axis)
    torch = env.torch
    if torch is not None:
        xt, dyt = _channels_first(env, x, axis), _channels_first(env, dy, axis)
        wt, bt, rmt, rvt = map(env.t, (w, b, rm, rv))
        fb = torch.nn.functional.batch_norm
        cases[0].torch = partial(_no_grad, torch, fb, xt, None, None, wt, bt, True)
        cases[1].torch = partial(_no_grad, torch, fb, xt, rmt, rvt, wt, bt, False)

        # torch's own saved statistics (float32 for float16 x, as its kernels want)
        _, smean, sinvstd = torch.ops.aten.native_batch_norm(xt, wt, bt, None, None, True, 0.1,
                                                             1e-5)
        cases[2].torch = partial(torch.ops.aten.native_batch_norm_backward, dyt, xt, wt, None,
                                 None, smean, sinvstd, True, 1e-5, [True] * 3)
    return cases


def _layer_norm_cases(env, shape, dtype):
    """Layer and RMS norm over the last dimension of ``shape``."""
    x, dy = env.normal(shape, dtype), env.normal(shape, dtype)
    d = (shape[-1],)
    w, b = np.ones(d, dtype), np.zeros(d, dtype)
    dx_, ddy, dw, db = map(env.d, (x, dy, w, b))
    _, d_mean, d_rstd = F.layer_norm(dx_, d, dw, db)
    _, d_rms = F.rms_norm(dx_, d, dw)
    mean, rstd, rms = (a.copy_to_host() for a in (d_mean, d_rstd, d_rms))
    cases = [
        CudaCase("layer_norm", "forward", "rows", dtype, shape, 2,
                 partial(F.layer_norm, dx_, d, dw, db), partial(R.layer_norm, x, d, w, b)),
        CudaCase("layer_norm", "backward", "rows", dtype, shape, 3,
                 partial(F.layer_norm_backward, ddy, dx_, d, d_mean, d_rstd, dw),
                 partial(R.layer_norm_backward, dy, x, d, mean, rstd, w)),
        CudaCase("rms_norm", "forward", "rows", dtype, shape, 2,
                 partial(F.rms_norm, dx_, d, dw), partial(R.rms_norm, x, d, w)),
        CudaCase("rms_norm", "backward", "rows", dtype, shape, 3,
                 partial(F.rms_norm_backward, ddy, dx_, d, d_rms, dw),
                 partial(R.rms_norm_backward, dy, x, d, rms, w)),
    ]
    if env.cupy is not None:
        cx, cdy, cw, cb = map(env.c, (x, dy, w, b))
        lead = shape[:-1]
        _, cmean, crstd = Fm.layer_norm(cx, d, cw, cb)
        cmean, crstd = cmean.reshape(lead), crstd.reshape(lead)
        crms = Fm.rms_norm(cx, d, cw)[1].reshape(lead)
        cases[0].formula = partial(Fm.layer_norm, cx, d, cw, cb)
        cases[1].formula = partial(Fm.layer_norm_backward, cdy, cx, d, cmean, crstd, cw)
        cases[2].formula = partial(Fm.rms_norm, cx, d, cw)
        cases[3].formula = partial(Fm.rms_norm_backward, cdy, cx, d, crms, cw)
    torch = env.torch
    if torch is not None:
        xt, dyt, wt, bt = map(env.t, (x, dy, w, b))
        _, tmean, trstd = torch.ops.aten.native_layer_norm(xt, list(d), wt, bt, 1e-5)
        cases[0].torch = partial(_no_grad, torch, torch.nn.functional.layer_norm, xt, d, wt, bt)
        cases[1].torch = partial(torch.ops.aten.native_layer_norm_backward, dyt, xt, list(d),
                                 tmean, trstd, wt, bt, [True] * 3)
        if hasattr(torch.nn.functional, "rms_norm"):  # torch >= 2.4
            cases[2].torch = partial(_no_grad, torch, torch.nn.functional.rms_norm, xt, d, wt,
                                     1e-6)
        # RMS norm backward: no torch kernel takes the saved rstd, so no torch column
    return cases


def _group_norm_cases(env, layout, shape, axis, groups, dtype):
    x, dy = env.normal(shape, dtype), env.normal(shape, dtype)
    c = shape[axis]
    w, b = np.ones(c, dtype), np.zeros(c, dtype)
    dx_, ddy, dw, db = map(env.d, (x, dy, w, b))
    _, d_mean, d_rstd = F.group_norm(dx_, groups, dw, db, axis=axis)
    mean, rstd = d_mean.copy_to_host(), d_rstd.copy_to_host()
    op = f"group_norm G={groups}"
    cases = [
        CudaCase(op, "forward", layout, dtype, shape, 2,
                 partial(F.group_norm, dx_, groups, dw, db, axis=axis),
                 partial(R.group_norm, x, groups, w, b, axis=axis)),
        CudaCase(op, "backward", layout, dtype, shape, 3,
                 partial(F.group_norm_backward, ddy, dx_, groups, d_mean, d_rstd, dw, axis=axis),
                 partial(R.group_norm_backward, dy, x, groups, mean, rstd, w, axis=axis)),
    ]
    if env.cupy is not None:
        cx, cdy, cw, cb = map(env.c, (x, dy, w, b))
        _, cmean, crstd = Fm.group_norm(cx, groups, cw, cb, axis=axis)
        cases[0].formula = partial(Fm.group_norm, cx, groups, cw, cb, axis=axis)
        cases[1].formula = partial(Fm.group_norm_backward, cdy, cx, groups, cmean, crstd, cw,
                                   axis=axis)
    torch = env.torch
    if torch is not None:
        xt, dyt = _channels_first(env, x, axis), _channels_first(env, dy, axis)
        wt, bt = env.t(w), env.t(b)
        n, hw = shape[0], x.size // (shape[0] * c)
        _, tmean, trstd = torch.ops.aten.native_group_norm(xt, wt, bt, n, c, hw, groups, 1e-5)
        cases[0].torch = partial(_no_grad, torch, torch.nn.functional.group_norm, xt, groups,
                                 wt, bt)
        cases[1].torch = partial(torch.ops.aten.native_group_norm_backward, dyt, xt, tmean,
                                 trstd, wt, n, c, hw, groups, [True] * 3)
    return cases


#: The shapes: (layout, shape, channel axis) for batch norm, shapes for the row norms,
#: (layout, shape, axis, groups) for group norm.  The large ones are the CPU grid's.
SHAPES: dict[str, dict[str, tuple]] = {
    "smoke": {
        "batch_norm": (("NCHW", (4, 3, 5, 5), 1), ("NHWC", (4, 5, 5, 3), -1),
                       ("NC", (6, 5), 1)),
        "rows": ((6, 5),),
        "group_norm": (("NCHW", (4, 4, 5, 5), 1, 2), ("NHWC", (4, 5, 5, 4), -1, 2)),
    },
    "grid": {
        "batch_norm": (("NCHW", (32, 64, 56, 56), 1), ("NHWC", (32, 56, 56, 64), -1),
                       ("NC", (4096, 1024), 1), ("NC", (256, 1024), 1), ("NC", (32, 256), 1)),
        "rows": ((4096, 1024), (8, 512, 768), (8, 768)),
        "group_norm": (("NCHW", (32, 64, 56, 56), 1, 32), ("NHWC", (32, 56, 56, 64), -1, 32),
                       ("NCHW", (2, 64, 56, 56), 1, 32)),
    },
}


def dtypes_of(quick: bool, smoke: bool) -> list[np.dtype]:
    """float32 with ``quick``; float32 and float16 otherwise (smoke included: tiny)."""
    return [np.dtype(np.float32)] if quick else [np.dtype(np.float32), np.dtype(np.float16)]


def groups(smoke: bool, dtypes, ops=OPS) -> Iterator[tuple[tuple, Callable]]:
    """The grid, as ``((op, layout, dtype, shape), build)`` per group of cases that share
    their inputs; ``build(env)`` makes the group's device arrays and cases, so each
    group's arrays live only while it is measured."""
    shapes = SHAPES["smoke" if smoke else "grid"]
    for dtype in dtypes:
        if "batch_norm" in ops:
            for layout, shape, axis in shapes["batch_norm"]:
                yield (("batch_norm", layout, dtype, shape),
                       partial(_call, _batch_norm_cases, layout, shape, axis, dtype))
        if "layer_norm" in ops or "rms_norm" in ops:
            for shape in shapes["rows"]:
                yield (("layer_norm", "rows", dtype, shape),
                       partial(_only, ops, _layer_norm_cases, shape, dtype))
        if "group_norm" in ops:
            for layout, shape, axis, g in shapes["group_norm"]:
                yield ((f"group_norm G={g}", layout, dtype, shape),
                       partial(_call, _group_norm_cases, layout, shape, axis, g, dtype))


def _call(build, *args, env):
    return build(env, *args)


def _only(ops, build, *args, env):
    return [c for c in build(env, *args) if c.op in ops]


def _build(build, env: _Env, label: tuple, skipped: list) -> list[CudaCase]:
    """A group's cases.  When setting up a baseline raises, the group is built again
    without baselines (noted in ``skipped``); when fastbn's own set-up raises, one
    row of pass ``"setup"`` carries the error."""
    try:
        return build(env=env)
    except Exception as exc:  # noqa: BLE001
        why = f"{type(exc).__name__}: {exc}"
        op, layout, dtype, shape = label
        if env.torch is None and env.cupy is None:
            case = CudaCase(op, "setup", layout, dtype, shape, 0, _none, _none)
            case.error = why
            return [case]
        skipped.append(f"{op} {layout} {dtype.name} {shape}: setting up a baseline: {why}")
        return _build(build, env.bare(), label, skipped)


def _none():
    return None


# --- measuring ---------------------------------------------------------------------------


def _repeats(case: BenchCase, quick: bool, smoke: bool) -> tuple[int, int]:
    """(warm-up calls, timed repeats) per backend."""
    if smoke:
        return 0, 1
    big = case.nbytes >= 8 * (1 << 20)
    if quick:
        return 2, (10 if big else 30)
    return 3, (50 if big else 200)


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def max_err(out, ref) -> float:
    """The largest, over the arrays both return, of ``max|out - ref| / max(1, max|ref|)``."""
    outs = out if isinstance(out, tuple) else (out,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    err = 0.0
    for o, r in zip(outs, refs, strict=False):
        if o is None or r is None:
            continue
        o = _host(o).astype(np.float64).ravel()
        r = np.asarray(r, np.float64).ravel()
        if o.size != r.size:
            raise ValueError(f"fastbn returned {o.size} values where the oracle has {r.size}")
        if r.size:
            err = max(err, float(np.max(np.abs(o - r))) / max(1.0, float(np.max(np.abs(r)))))
    return err


def measure(case: CudaCase, sync: Callable[[], object], quick: bool, smoke: bool) -> None:
    """Median seconds of fastbn and each baseline, their calls interleaved in one loop, each
    between two ``sync()``; then fastbn's last result against the oracle (``max_err``).
    A baseline that raises on its first call is dropped (``case.skipped``)."""
    warmup, repeats = _repeats(case, quick, smoke)
    backends = {"fastbn": case.fastbn}
    for name, fn in (("numpy_formula", case.formula), ("torch", case.torch)):
        if fn is None:
            continue
        try:
            fn()  # first call: a baseline that cannot run this case is dropped
            sync()
        except Exception as exc:  # noqa: BLE001
            case.skipped.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        backends[name] = fn
    for fn in backends.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in backends}
    out = None
    for _ in range(repeats):
        for name, fn in backends.items():
            sync()
            t0 = time.perf_counter()
            res = fn()
            sync()
            samples[name].append(time.perf_counter() - t0)
            if name == "fastbn":
                out = res
    t0 = time.perf_counter()
    ref = case.numpy()
    numpy_s = time.perf_counter() - t0
    case.results = {k: float(np.median(v)) for k, v in samples.items()}
    if smoke:
        case.results["numpy"] = numpy_s
    case.max_err = max_err(out, ref)


def row(case: CudaCase, bandwidth: float) -> dict:
    """One row: :func:`fastbn.bench.rows`' keys, ``"backend": "cuda"``, ``max_err``, ``error``."""
    r = {"op": case.op, "pass": case.pass_, "layout": case.layout, "dtype": case.dtype.name,
         "shape": list(case.shape), "backend": "cuda"}
    res = case.results
    fastbn = res.get("fastbn")
    gbps = None if fastbn is None else case.nbytes / fastbn / 1e9

    def vs(name):
        s = res.get(name)
        return s, (None if s is None or fastbn is None else s / fastbn)

    numpy_s, vs_numpy = vs("numpy")
    torch_s, vs_torch = vs("torch")
    formula_s, vs_formula = vs("numpy_formula")
    r.update({
        "median_s": fastbn, "gbps": gbps,
        "bandwidth_fraction": None if gbps is None else gbps / bandwidth,
        "numpy_median_s": numpy_s, "speedup_vs_numpy": vs_numpy,
        "torch_median_s": torch_s, "speedup_vs_torch": vs_torch,
        "numpy_formula_median_s": formula_s, "speedup_vs_numpy_formula": vs_formula,
        "max_err": case.max_err, "error": case.error,
    })
    return r


def _version(module: str):
    try:
        return importlib.import_module(module).__version__
    except Exception:  # noqa: BLE001
        return None


def _machine(cuda, simulator: bool, torch, cupy, bandwidth: float) -> dict:
    import numba

    from .cuda import sm_count, threads

    dev = cuda.get_current_device()
    name = getattr(dev, "name", "CUDA simulator" if simulator else "unknown")
    name = name.decode() if isinstance(name, bytes) else str(name)
    try:
        runtime = None if simulator else ".".join(map(str, cuda.runtime.get_version()))
    except Exception:  # noqa: BLE001  (no runtime library found)
        runtime = None
    return {
        "device": name,
        "compute_capability": list(getattr(dev, "compute_capability", ())),
        "simulator": bool(simulator),
        "sm_count": sm_count(),
        "threads_per_block": threads(),
        "cuda_runtime": runtime,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_cuda": _version("numba_cuda"),
        "torch": None if torch is None else torch.__version__,
        "cupy": None if cupy is None else cupy.__version__,
        "bandwidth_gbps": bandwidth,
        "date": time.strftime("%Y-%m-%d"),
    }


def failures(report: dict) -> list[str]:
    """The rows that failed to run or whose ``max_err`` exceeds :data:`TOL`."""
    out = []
    for r in report["rows"]:
        what = f"{r['op']} {r['pass']} {r['layout']} {r['dtype']} {r['shape']}"
        if r.get("error"):
            out.append(f"{what}: {r['error']}")
        elif r["max_err"] is None or r["max_err"] > TOL.get(r["dtype"], 1e-3):
            out.append(f"{what}: max_err {r['max_err']}")
    return out


def _cell(s, fmt) -> str:
    return "" if s is None else fmt(s)


def table(report: dict) -> str:
    """The table, as :func:`fastbn.bench.table` with the GPU's header and a max_err column
    (that one formats the float64 oracle's time, null here outside ``smoke``)."""
    m = report["machine"]
    lines = [
        f"fastbn bench --device cuda, {m['date']}: {m['device']} (compute capability "
        f"{'.'.join(map(str, m['compute_capability']))}"
        f"{', CUDA SIMULATOR: times mean nothing' if m['simulator'] else ''}), "
        f"numba-cuda {m['numba_cuda']}, torch {m['torch'] or 'no CUDA'}, "
        f"cupy {m['cupy'] or 'not installed'}",
        f"bandwidth probe (device-to-device copy, read + write): {m['bandwidth_gbps']:.1f} GB/s",
        "",
        f"{'op':<16} {'pass':<13} {'layout':<6} {'dtype':<7} {'shape':<16} {'ms':>8} "
        f"{'GB/s':>7} {'of bw':>6} {'max err':>8} {'cupy ms':>8} {'vs cupy':>7} "
        f"{'torch ms':>8} {'vs torch':>8} {'numpy ms':>8}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in report["rows"]:
        head = (f"{r['op']:<16} {r['pass']:<13} {r['layout']:<6} {r['dtype']:<7} "
                f"{'x'.join(map(str, r['shape'])):<16} ")
        if r.get("error"):
            lines.append(head + f"FAILED: {r['error']}")
            continue
        lines.append(
            head + f"{_ms(r['median_s']):>8} {r['gbps']:>7.1f} {r['bandwidth_fraction']:>6.2f} "
            f"{r['max_err']:>8.1e} {_cell(r['numpy_formula_median_s'], _ms):>8} "
            f"{_cell(r['speedup_vs_numpy_formula'], lambda v: f'{v:.2f}x'):>7} "
            f"{_cell(r['torch_median_s'], _ms):>8} "
            f"{_cell(r['speedup_vs_torch'], lambda v: f'{v:.2f}x'):>8} "
            f"{_cell(r['numpy_median_s'], _ms):>8}")
    lines.append("")
    for key, name in (("speedup_vs_numpy_formula", "the CuPy formula"),
                      ("speedup_vs_torch", "torch CUDA")):
        speedups = [r[key] for r in report["rows"] if r.get(key)]
        if speedups:
            lines.append(f"geometric mean vs {name}: "
                         f"{math.exp(np.mean(np.log(speedups))):.2f}x over {len(speedups)} "
                         f"cases; lowest {min(speedups):.2f}x")
    for s in report["machine"].get("skipped_baselines", []):
        lines.append(f"baseline skipped: {s}")
    for f in failures(report):
        lines.append(f"CHECK FAILED: {f}")
    return "\n".join(lines)


def run(quick: bool = False, smoke: bool = False, ops=None, json_path: str | None = None,
        stream=None) -> dict:
    """Run the GPU grid, print the table, optionally write JSON; return the report.

    Raises
    ------
    RuntimeError
        Without a usable GPU and without the simulator (:data:`NO_GPU`), and on the
        simulator without ``smoke``.
    ValueError
        For an op not in :data:`OPS`.
    """
    stream = stream or sys.stdout
    ops = tuple(ops or OPS)
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown op(s) {sorted(unknown)}; choose from {OPS}")
    cuda, simulator = _gpu()
    if simulator and not smoke:
        raise RuntimeError("the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs only "
                           "fastbn bench --device cuda --smoke: its full grid would take hours")
    torch, cupy = _torch_cuda(simulator), _cupy(simulator)

    def sync():
        cuda.synchronize()
        if torch is not None:
            torch.cuda.synchronize()

    saved_tpb = config.THREADS_PER_BLOCK
    if simulator:  # a Python thread per CUDA thread: small blocks, same results
        config.THREADS_PER_BLOCK = 8
    try:
        probe = DeviceBandwidthProbe(cuda, sync, 1 if smoke else 64 if quick else 256)
        probe.measure(1 if smoke else 3)
        env = _Env(cuda, torch, cupy)
        out_rows: list[CudaCase] = []
        skipped: list[str] = []
        for i, (label, build) in enumerate(groups(smoke, dtypes_of(quick, smoke), ops)):
            for case in _build(build, env, label, skipped):
                try:
                    if case.error is None:
                        measure(case, sync, quick, smoke)
                except Exception as exc:  # noqa: BLE001  (the row says what failed)
                    case.results, case.error = {}, f"{type(exc).__name__}: {exc}"
                skipped += [f"{case.op} {case.pass_} {case.layout} {case.dtype.name}: {s}"
                            for s in case.skipped]
                out_rows.append(case)
            if not smoke and i % 4 == 3:
                probe.measure(1)  # the probe's samples spread over the whole run
        if not smoke:
            probe.measure()
        machine = _machine(cuda, simulator, torch, cupy, probe.gbps)
        machine["skipped_baselines"] = skipped
        report = {"machine": machine, "rows": [row(c, probe.gbps) for c in out_rows]}
    finally:
        config.THREADS_PER_BLOCK = saved_tpb
    print(table(report), file=stream)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    return report


def main(argv=None) -> int:
    """``python -m fastbn.bench_cuda``: 0 when every row ran and matched the oracle,
    1 when a check failed, 2 without a usable GPU."""
    p = argparse.ArgumentParser(prog="python -m fastbn.bench_cuda", description=__doc__.split(
        "\n")[0])
    p.add_argument("--quick", action="store_true", help="float32 only, fewer repeats")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes once each (for the CUDA simulator)")
    p.add_argument("--ops", nargs="+", metavar="OP", help="subset of: " + ", ".join(OPS))
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = p.parse_args(argv)
    try:
        report = run(quick=args.quick, smoke=args.smoke, ops=args.ops, json_path=args.json)
    except (RuntimeError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    return 1 if failures(report) else 0


if __name__ == "__main__":
    sys.exit(main())
