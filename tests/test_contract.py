"""What each backend accepts, per op and argument: one contract, two backends.

Each row is one accepted form of one argument of one public function (a
dtype, a layout, an alias, an empty batch ...).  The test runs the row's
call on NumPy arrays and on their device twins (numba-cuda's simulator in
CI; :class:`_mirror.Mirror` keeps layouts and aliasing) and requires the
GPU's results, and every array it updates in place, to match the CPU's.
``docs/backends.md`` is generated from the rows
(``python tests/test_contract.py > docs/backends.md``), and a test keeps it
in step, so the table's two columns are measured, not written.
"""

from __future__ import annotations

import importlib.util
import os
import sys

if __name__ == "__main__":  # the table is made on the simulator: set before numba loads
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _mirror import Mirror

import fastbn

HAVE_CUDA = importlib.util.find_spec("numba_cuda") is not None
C = 4


def _x(shape=(3, C, 5), dtype=np.float64, seed=0):
    return np.random.default_rng(seed).normal(1.0, 2.0, shape).astype(dtype)


def _stats(dtype=np.float64):
    return np.linspace(-0.5, 0.5, C).astype(dtype), np.linspace(0.5, 2.0, C).astype(dtype)


def _strided(a):
    """A non-contiguous view of a copy of ``a`` (every other element of a wider buffer)."""
    buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    view = buf[..., ::2]
    view[...] = a
    return view


def _bn(x=None, w=None, b=None, rm=None, rv=None, **kw):
    def build():
        xx = _x() if x is None else x()
        stats = _stats() if rm is None else (rm(), rv())
        args = (xx, None if w is None else w(), None if b is None else b(), *stats)
        return fastbn.batch_norm, args, kw, {"running_mean": stats[0], "running_var": stats[1]}
    return build


def _bwd(x=None, dy=None, **kw):
    def build():
        xx = _x() if x is None else x()
        _, mean, rstd = fastbn.batch_norm(np.ascontiguousarray(xx), axis=kw.get("axis", 1))
        ddy = _x(xx.shape, xx.dtype, seed=1) if dy is None else dy(xx)
        extra = {k: (v(xx, ddy) if callable(v) else v) for k, v in kw.items()}
        watched = {k: v for k, v in extra.items() if k == "dresidual"}
        return fastbn.batch_norm_backward, (ddy, xx, mean, rstd), extra, watched
    return build


def _call(fn, *make, watch=(), **kw):
    """``fn(*[m() for m in make], **kw)``; ``watch``: indices of arguments written in place."""
    def build():
        args = tuple(m() if callable(m) else m for m in make)
        kwargs = {k: (v(args) if callable(v) else v) for k, v in kw.items()}
        return fn, args, kwargs, {f"arg{i}": args[i] for i in watch}
    return build


def _out_is_x():
    x = _x()
    return fastbn.batch_norm, (x,), {"out": x}, {"x": x}


def _out_overlapping_weight():
    buf = _x((3 * C * 5 + C,))
    x = _x()
    out, w = buf[:x.size].reshape(x.shape), buf[x.size - 2:x.size - 2 + C]
    return fastbn.batch_norm, (x, w), {"out": out}, {"buf": buf}


def _dresidual_is_dy():
    x = _x()
    _, mean, rstd = fastbn.batch_norm(x)
    dy = _x(seed=1)
    return fastbn.batch_norm_backward, (dy, x, mean, rstd), {"dresidual": dy}, {"dy": dy}


def _merge(host_parts):
    def build():
        a = fastbn.moments(_x())
        b = fastbn.moments(_x(seed=2))
        parts = [a, b] if host_parts is None else host_parts(a, b)
        return fastbn.merge_moments, tuple(parts), {}, {}
    return build


F32, F16 = np.float32, np.float16
ROWS = [
    # (op, argument, accepted form, build)
    ("batch_norm", "x", "float64", _bn()),
    ("batch_norm", "x", "float32", _bn(x=lambda: _x(dtype=F32), rm=lambda: _stats(F32)[0],
                                       rv=lambda: _stats(F32)[1])),
    ("batch_norm", "x", "float16 (computed in float32)", _bn(x=lambda: _x(dtype=F16))),
    ("batch_norm", "x", "2-D (N, C)", _bn(x=lambda: _x((6, C)))),
    ("batch_norm", "x", "5-D, axis=-1 (channels last)",
     _bn(x=lambda: _x((2, 3, 2, 3, C)), axis=-1)),
    ("batch_norm", "x", "any strides (a non-contiguous view)", _bn(x=lambda: _strided(_x()))),
    ("batch_norm", "x", "empty batch (N = 0), inference", _bn(x=lambda: _x((0, C, 5)),
                                                                training=False)),
    ("batch_norm", "weight, bias", "(C,) float64", _bn(w=lambda: _stats()[1],
                                                       b=lambda: _stats()[0])),
    ("batch_norm", "weight, bias", "float16 next to float32 x",
     _bn(x=lambda: _x(dtype=F32), w=lambda: _stats(F16)[1], b=lambda: _stats(F16)[0])),
    ("batch_norm", "weight, bias", "strided views", _bn(w=lambda: _strided(_stats()[1]),
                                                        b=lambda: _strided(_stats()[0]))),
    ("batch_norm", "running_mean, running_var", "float16, updated in place",
     _bn(x=lambda: _x(dtype=F32), rm=lambda: _stats(F16)[0], rv=lambda: _stats(F16)[1])),
    ("batch_norm", "running_mean, running_var", "strided views, updated in place",
     _bn(rm=lambda: _strided(_stats()[0]), rv=lambda: _strided(_stats()[1]))),
    ("batch_norm", "running_mean, running_var", "inference statistics", _bn(training=False)),
    ("batch_norm", "running_mean, running_var", "momentum=0 and momentum=1",
     _bn(momentum=1.0)),
    ("batch_norm", "out", "x itself (in place)", _out_is_x),
    ("batch_norm", "out", "overlapping weight (through a temporary)", _out_overlapping_weight),
    ("batch_norm", "out", "a strided view", _call(
        fastbn.batch_norm, _x, out=lambda a: _strided(np.zeros_like(a[0])), watch=())),
    ("batch_norm", "activation, residual", "'relu' with a residual",
     _call(fastbn.batch_norm, _x, activation="relu", residual=lambda a: a[0][::-1].copy())),
    ("batch_norm", "activation", "'relu' at inference with -inf and +inf in x (0 and inf)",
     _bn(x=lambda: np.where(_x() > 2, np.inf, np.where(_x() < 0, -np.inf, _x())),
         training=False, activation="relu")),
    ("batch_norm_backward", "dy", "any strides", _bwd(dy=lambda x: _strided(_x(x.shape)))),
    ("batch_norm_backward", "x", "float16", _bwd(x=lambda: _x(dtype=F16))),
    ("batch_norm_backward", "x", "channels last (axis=-1)",
     _bwd(x=lambda: _x((2, 3, C)), axis=-1)),
    ("batch_norm_backward", "training", "False (frozen statistics)", _bwd(training=False)),
    ("batch_norm_backward", "activation, y", "'relu' with the forward's y",
     _bwd(activation="relu", y=lambda x, dy: fastbn.batch_norm(x, activation="relu")[0])),
    ("batch_norm_backward", "dresidual", "dy itself (through a temporary)", _dresidual_is_dy),
    ("moments", "x", "float32, channels last", _call(fastbn.moments, lambda: _x((2, 3, C), F32),
                                                     axis=-1)),
    ("moments", "x", "empty batch", _call(fastbn.moments, lambda: _x((0, C)))),
    ("merge_moments", "a, b", "two parts' moments", _merge(None)),
    ("merge_moments", "a, b", "an empty part", _merge(lambda a, b: [a, fastbn.moments(
        _x((0, C, 5)))])),
    ("moments_to_stats", "count, mean, m2", "a part's moments",
     _call(fastbn.moments_to_stats, 15, lambda: _x((C,)), lambda: np.abs(_x((C,))), eps=1e-3)),
    ("layer_norm", "x", "float32, normalized_shape int", _call(fastbn.layer_norm,
                                                               lambda: _x(dtype=F32), 5)),
    ("layer_norm", "normalized_shape", "a tuple of two trailing dims",
     _call(fastbn.layer_norm, _x, (C, 5))),
    ("layer_norm", "weight, bias", "float16 next to float32 x", _call(
        fastbn.layer_norm, lambda: _x(dtype=F32), 5, lambda: _x((5,), F16),
        lambda: _x((5,), F16, seed=3))),
    ("layer_norm", "x", "empty (no rows)", _call(fastbn.layer_norm, lambda: _x((0, 5)), 5)),
    ("layer_norm_backward", "dy, x", "strided", _call(
        fastbn.layer_norm_backward, lambda: _strided(_x()), lambda: _strided(_x(seed=1)), 5,
        lambda: _x((3, C), seed=2), lambda: np.abs(_x((3, C), seed=3)))),
    ("rms_norm", "x", "float16", _call(fastbn.rms_norm, lambda: _x(dtype=F16), 5)),
    ("rms_norm_backward", "weight", "(D,)", _call(
        fastbn.rms_norm_backward, lambda: _x(seed=1), _x, 5, lambda: np.abs(_x((3, C))),
        lambda: _x((5,), seed=4))),
    ("group_norm", "num_groups", "1 and C", _call(fastbn.group_norm, _x, C)),
    ("group_norm", "x", "channels last (axis=-1), float32",
     _call(fastbn.group_norm, lambda: _x((2, 5, C), F32), 2, axis=-1)),
    ("group_norm", "x", "empty batch", _call(fastbn.group_norm, lambda: _x((0, C, 5)), 2)),
    ("group_norm_backward", "x, dy", "strided", _call(
        fastbn.group_norm_backward, lambda: _strided(_x(seed=1)), lambda: _strided(_x()), 2,
        lambda: _x((3, 2)), lambda: np.abs(_x((3, 2), seed=5)))),
    ("instance_norm", "x", "float64", _call(fastbn.instance_norm, _x)),
    ("instance_norm_backward", "weight", "(C,)", _call(
        fastbn.instance_norm_backward, lambda: _x(seed=1), _x, lambda: _x((3, C)),
        lambda: np.abs(_x((3, C), seed=6)), lambda: _stats()[1])),
]


def _host(v):
    if isinstance(v, tuple):
        return tuple(_host(u) for u in v)
    if isinstance(v, np.ndarray) or not hasattr(v, "shape"):
        return v
    inner = getattr(v, "_ary", None)
    return np.array(inner) if inner is not None else v.copy_to_host()


def _flat(v):
    return [u for w in v for u in _flat(w)] if isinstance(v, (tuple, list)) else [v]


def run(build, backend: str):
    """The call's results with its watched (in-place) arrays, as host arrays, and the
    narrowest float width among its inputs and results."""
    fn, args, kw, watched = build()
    inputs = _flat(args) + list(kw.values())
    if backend == "cpu":
        result = (fn(*args, **kw), tuple(watched.values()))
    else:
        mirror = Mirror()
        for a in watched.values():
            mirror.array(a)
        out = fn(*mirror(args), **{k: mirror(v) for k, v in kw.items()})
        result = (_host(out), tuple(mirror.host(v) for v in watched.values()))
    widths = [a.dtype.itemsize for a in inputs + _flat(result)
              if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    return result, min(widths, default=8)


def _same(cpu, gpu, width) -> None:
    """Equal shapes and dtypes, values within the rounding of the call's narrowest float
    dtype (float32 data feeds float64 statistics, for instance)."""
    tol = {2: 2e-3, 4: 2e-5}.get(width, 1e-12)
    for a, b in zip(_flat(cpu), _flat(gpu), strict=True):
        if not isinstance(a, np.ndarray):
            assert a == b
            continue
        b = np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)


IDS = [f"{op}: {arg}: {form}" for op, arg, form, _ in ROWS]


@pytest.fixture
def small_blocks(monkeypatch):
    """Few threads per block: the simulator runs each thread in Python."""
    from fastbn import config

    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(config, "CUDA_CHUNK", 25)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_cpu_accepts(row):
    run(row[3], "cpu")


@pytest.mark.skipif(not HAVE_CUDA, reason="numba-cuda is not installed")
@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_gpu_accepts_and_matches_the_cpu(row, small_blocks):
    (cpu, width), (gpu, _) = run(row[3], "cpu"), run(row[3], "gpu")
    _same(cpu, gpu, width)


def _cell(build, backend) -> str:
    try:
        cpu, width = run(build, "cpu")
        if backend == "gpu":
            _same(cpu, run(build, "gpu")[0], width)
    except Exception as exc:  # noqa: BLE001  (the table reports it)
        return f"no ({type(exc).__name__})"
    return "yes"


def markdown(measure: bool = True) -> str:
    """The table; ``measure=False`` writes what the tests above assert (every cell
    "yes") without running the calls again."""
    lines = [
        "# What each backend accepts",
        "",
        "One validation layer (`fastbn.functional` with `fastbn._checks`) serves both",
        "backends, and `fastbn.cpu` and `fastbn.cuda` mirror each other (modules",
        "`batch_norm`, `group_norm`, `layer_norm`, `moments`, `_arrays`; the same functions",
        "with the same signatures).  Each row below was run by",
        "`tests/test_contract.py` on NumPy arrays and on device arrays (numba-cuda's",
        "simulator), the GPU's results and in-place updates compared with the CPU's;",
        "regenerate with `python tests/test_contract.py > docs/backends.md`.  Device input",
        "that is strided or float16 is copied into a contiguous float32/float64 array on",
        "the device first (one extra read and write of it); nothing goes through the host.",
        "What each backend refuses, and with which words, is in",
        "[bad-inputs.md](bad-inputs.md).",
        "",
        "| function | argument | accepted form | CPU (NumPy) | GPU (device arrays) |",
        "|---|---|---|---|---|",
    ]
    for op, arg, form, build in ROWS:
        cpu = _cell(build, "cpu") if measure else "yes"
        gpu = _cell(build, "gpu") if measure else "yes"
        lines.append(f"| `{op}` | {arg} | {form} | {cpu} | {gpu} |")
    return "\n".join(lines) + "\n"


def test_docs_table_is_current():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "backends.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == markdown(measure=False), "regenerate: python tests/test_contract.py > " \
                                       "docs/backends.md"


if __name__ == "__main__":
    from fastbn import config

    config.THREADS_PER_BLOCK, config.CUDA_CHUNK = 8, 25  # the simulator's pace
    sys.stdout.write(markdown())


MIRRORED = ["_arrays", "batch_norm", "group_norm", "layer_norm", "moments"]


@pytest.mark.skipif(not HAVE_CUDA, reason="numba-cuda is not installed")
@pytest.mark.parametrize("name", MIRRORED)
def test_cpu_and_cuda_modules_mirror_each_other(name):
    """The same module names, the same functions (``__all__``), the same signatures."""
    import importlib
    import inspect

    cpu = importlib.import_module(f"fastbn.cpu.{name}")
    gpu = importlib.import_module(f"fastbn.cuda.{name}")
    assert cpu.__all__ == gpu.__all__
    for fn in cpu.__all__:
        sig_cpu = inspect.signature(getattr(cpu, fn))
        sig_gpu = inspect.signature(getattr(gpu, fn))
        assert sig_cpu == sig_gpu, f"{name}.{fn}: {sig_cpu} != {sig_gpu}"


@pytest.mark.parametrize("call", [
    lambda: fastbn.layer_norm(np.ones((0, 5)), 5),
    lambda: fastbn.group_norm(np.ones((0, C, 5)), 2),
], ids=["layer_norm", "group_norm"])
def test_empty_input_gives_separate_statistics_arrays(call):
    """Writing into the returned mean must not change rstd."""
    _, mean, rstd = call()[:3]
    assert mean is not rstd and not np.shares_memory(mean, rstd)
