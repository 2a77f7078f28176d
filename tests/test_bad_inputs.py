"""The bad-input table: every case raises before anything is written, on both backends.

Each case builds fresh NumPy arrays, calls one public function with one thing
wrong, and checks the exception type and message, and that every array it
was given (running statistics, ``out``, ``dresidual``, inputs) is bit-for-bit
unchanged.  The same call then runs on device arrays (numba-cuda's simulator
in CI): every array argument is mirrored on the device with its layout, its
read-only flag and its aliasing (views of one buffer stay views of one device
buffer), and the exception and message must be identical.
``docs/bad-inputs.md`` is generated from this table
(``python tests/test_bad_inputs.py > docs/bad-inputs.md``) and a test keeps it
in step.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

if __name__ == "__main__":  # the table is made on the simulator: set before numba loads
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _mirror import Mirror, OtherDevice

import fastbn

C = 3


def _x(shape=(4, C, 5), dtype=np.float64):
    return np.random.default_rng(7).normal(1.0, 2.0, shape).astype(dtype)


def _stats(dtype=np.float64):
    return np.array([0.1, -0.2, 0.3], dtype), np.array([1.5, 0.5, 2.0], dtype)


@dataclass
class Case:
    op: str
    what: str
    exc: type
    match: str
    build: object  # () -> (call, arrays that must stay unchanged)


def _bn(**given):
    def build():
        kw = dict(given)  # each build starts from the case's own arguments
        x = kw.pop("x", None)
        x = _x() if x is None else x
        rm, rv = _stats()
        arrays = {"x": x, "running_mean": rm, "running_var": rv, **kw.pop("arrays", {})}
        args = kw.pop("args", None)
        call_kw = dict(kw)
        for k, v in list(call_kw.items()):
            if isinstance(v, str) and v.startswith("@"):
                call_kw[k] = arrays[v[1:]]
        if args is None:
            args = (arrays["x"], None, None, arrays["running_mean"], arrays["running_var"])
        return (fastbn.batch_norm, args, call_kw), arrays
    return build


def _call(fn, *args, **kw):
    """A call whose arrays (positional and keyword) must all stay unchanged."""
    def build():
        arrays = {f"arg{i}": a for i, a in enumerate(args) if isinstance(a, np.ndarray)}
        arrays.update({k: v for k, v in kw.items() if isinstance(v, np.ndarray)})
        return (fn, args, kw), arrays
    return build


def _running_overlapping_x():
    x = _x()
    rm, rv = x[0, :, 0], _stats()[1]
    return (fastbn.batch_norm, (x, None, None, rm, rv), {}), {"x": x, "rv": rv}


def _out_overlapping_running_mean():
    x = _x()
    buf = np.zeros(x.size + C)
    out, rm = buf[:x.size].reshape(x.shape), buf[x.size - 1:x.size - 1 + C]
    rv = _stats()[1]
    return (fastbn.batch_norm, (x, None, None, rm, rv), {"training": False, "out": out}), \
        {"x": x, "buf": buf, "rv": rv}


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _backward(**given):
    def build():
        kw = dict(given)
        x = _x()
        _, mean, rstd = fastbn.batch_norm(x)
        dy = kw.pop("dy", None)
        dy = np.ones_like(x) if dy is None else dy
        mean = kw.pop("mean", mean)
        args = (dy, x, mean, rstd)
        arrays = {"dy": dy, "x": x, **{k: v for k, v in kw.items() if isinstance(v, np.ndarray)}}
        return (fastbn.batch_norm_backward, args, kw), arrays
    return build


X = _x()
X2 = _x((4, C))
RM, RV = _stats()

CASES = [
    # --- batch_norm ------------------------------------------------------------------
    Case("batch_norm", "x with one dimension", ValueError, "at least 2 dimensions",
         _bn(x=np.ones(5), args=(np.ones(5),))),
    Case("batch_norm", "integer x", TypeError, "floating-point array",
         _bn(args=(np.ones((4, C), np.int64),))),
    Case("batch_norm", "big-endian x", TypeError, "non-native byte order",
         _bn(args=(X.astype(">f8"),))),
    Case("batch_norm", "axis not an integer", TypeError, "axis must be an integer",
         _bn(axis=1.0)),
    Case("batch_norm", "axis out of range", ValueError, "axis 3 is out of range",
         _bn(axis=3)),
    Case("batch_norm", "weight of the wrong length", ValueError, r"weight must have shape \(3,\)",
         _bn(args=(X, np.ones(4)))),
    Case("batch_norm", "bias of the wrong length", ValueError, r"bias must have shape \(3,\)",
         _bn(args=(X, None, np.ones(2)))),
    Case("batch_norm", "integer weight", TypeError, "weight must be a floating-point",
         _bn(args=(X, np.ones(C, np.int32)))),
    Case("batch_norm", "running_mean without running_var", ValueError,
         "running_var is None", _bn(args=(X, None, None, RM.copy(), None))),
    Case("batch_norm", "running statistics of the wrong length", ValueError,
         r"running_mean must have shape \(3,\)",
         _bn(args=(X, None, None, np.zeros(4), np.ones(4)))),
    Case("batch_norm", "running statistics not arrays (lists)", TypeError,
         "running_mean is updated in place, so it must be an array",
         _bn(args=(X, None, None, [0.0] * C, [1.0] * C))),
    Case("batch_norm", "inference without running statistics", ValueError,
         "required when training=False", _bn(args=(X,), training=False)),
    Case("batch_norm", "read-only running statistics in training", ValueError,
         "running_mean is read-only",
         _bn(args=(X, None, None, _read_only(RM), RV.copy()))),
    Case("batch_norm", "eps = 0", ValueError, "eps must be positive", _bn(eps=0.0)),
    Case("batch_norm", "eps = NaN", ValueError, "eps must be positive", _bn(eps=float("nan"))),
    Case("batch_norm", "eps not a number", TypeError, "eps must be a positive number",
         _bn(eps="small")),
    Case("batch_norm", "momentum outside [0, 1]", ValueError, r"momentum must be in \[0, 1\]",
         _bn(momentum=1.5)),
    Case("batch_norm", "one value per channel in training", ValueError,
         "expected more than 1 value per channel",
         _bn(args=(np.ones((1, C)), None, None, RM.copy(), RV.copy()))),
    Case("batch_norm", "unknown activation", ValueError, "activation must be None or 'relu'",
         _bn(activation="gelu")),
    Case("batch_norm", "residual of the wrong shape", ValueError,
         "residual must have x's shape", _bn(residual=np.ones((4, C)))),
    Case("batch_norm", "out of the wrong shape", ValueError, "out must have shape",
         _bn(out=np.zeros((4, C)))),
    Case("batch_norm", "out of the wrong dtype", ValueError, "dtype float64",
         _bn(out=np.zeros(X.shape, np.float32))),
    Case("batch_norm", "read-only out", ValueError, "out is read-only",
         _bn(out="@ro", arrays={"ro": _read_only(np.zeros(X.shape))})),
    Case("batch_norm", "running_mean overlapping x in training", ValueError,
         "running_mean shares memory with x", _running_overlapping_x),
    Case("batch_norm", "out overlapping running_mean in inference", ValueError,
         "out shares memory with running_mean", _out_overlapping_running_mean),
    Case("batch_norm", "weight on the other device than x", TypeError,
         "but x is on the", None),  # built per backend: needs numba-cuda
    # --- batch_norm_backward --------------------------------------------------------
    Case("batch_norm_backward", "dy of another shape", ValueError, "dy must have x's shape",
         _backward(dy=np.ones((4, C)))),
    Case("batch_norm_backward", "dy of another dtype", TypeError, "dy must have x's dtype",
         _backward(dy=np.ones(X.shape, np.float32))),
    Case("batch_norm_backward", "mean of the wrong length", ValueError,
         r"mean must have shape \(3,\)", _backward(mean=np.zeros(4))),
    Case("batch_norm_backward", "activation='relu' without y", ValueError,
         "needs y, the forward's saved output", _backward(activation="relu")),
    Case("batch_norm_backward", "read-only dresidual", ValueError, "dresidual is read-only",
         _backward(dresidual=_read_only(np.zeros(X.shape)))),
    # --- layer / RMS norm ----------------------------------------------------------
    Case("layer_norm", "normalized_shape not matching x's trailing dims", ValueError,
         "must match the trailing dimensions", _call(fastbn.layer_norm, X, (4,))),
    Case("layer_norm", "normalized_shape a string", TypeError,
         "normalized_shape must be an int or a tuple of ints", _call(fastbn.layer_norm, X, "5")),
    Case("layer_norm", "weight of the wrong shape", ValueError,
         r"weight must have normalized_shape \(5,\)",
         _call(fastbn.layer_norm, X, 5, np.ones(4))),
    Case("layer_norm", "out read-only", ValueError, "out is read-only",
         _call(fastbn.layer_norm, X, 5, out=_read_only(np.zeros(X.shape)))),
    Case("rms_norm", "eps = 0", ValueError, "eps must be positive",
         _call(fastbn.rms_norm, X, 5, eps=0.0)),
    Case("layer_norm_backward", "rstd of the wrong shape", ValueError,
         r"rstd must have shape \(4, 3\)",
         _call(fastbn.layer_norm_backward, X, X, 5, np.zeros((4, C)), np.ones(3))),
    # --- group / instance norm -------------------------------------------------------
    Case("group_norm", "num_groups not dividing C", ValueError, "must divide the 3 channels",
         _call(fastbn.group_norm, X, 2)),
    Case("group_norm", "num_groups not an integer", TypeError,
         "num_groups must be an integer", _call(fastbn.group_norm, X, 1.0)),
    Case("group_norm", "num_groups = 0", ValueError, "num_groups must be positive",
         _call(fastbn.group_norm, X, 0)),
    Case("group_norm", "axis neither 1 nor -1", ValueError, "axis must be 1",
         _call(fastbn.group_norm, _x((2, 4, C, 5)), 1, axis=2)),
    Case("group_norm", "one value per group", ValueError, "more than 1 value per group",
         _call(fastbn.group_norm, X2, C)),
    Case("instance_norm", "weight of the wrong length", ValueError,
         r"weight must have shape \(3,\)", _call(fastbn.instance_norm, X, np.ones(5))),
    Case("group_norm_backward", "dy of another shape", ValueError, "dy must have x's shape",
         _call(fastbn.group_norm_backward, np.ones((4, C)), X, 1, np.zeros((4, 1)),
               np.ones((4, 1)))),
    # --- mergeable statistics ----------------------------------------------------------
    Case("moments", "integer x", TypeError, "floating-point array",
         _call(fastbn.moments, np.ones((4, C), np.int64))),
    Case("merge_moments", "moments of different lengths", ValueError,
         "moments to merge must have the same shape",
         _call(fastbn.merge_moments, (2, np.zeros(3), np.zeros(3)),
               (2, np.zeros(4), np.zeros(4)))),
    Case("merge_moments", "a negative count", ValueError, "counts must be >= 0",
         _call(fastbn.merge_moments, (-1, np.zeros(3), np.zeros(3)),
               (2, np.zeros(3), np.zeros(3)))),
    Case("moments_to_stats", "count 0", ValueError, "count must be positive",
         _call(fastbn.moments_to_stats, 0, np.zeros(3), np.zeros(3))),
]


HAVE_CUDA = importlib.util.find_spec("numba_cuda") is not None


def _mixed():
    """x and the running statistics on one device, weight on the other (the GPU run
    mirrors everything but weight, so weight ends up on the host)."""
    x, (rm, rv) = _x(), _stats()
    return (fastbn.batch_norm, (x, OtherDevice(np.ones(C)), None, rm, rv), {}), \
        {"x": x, "rm": rm, "rv": rv}


def _run(case, backend: str):
    """Run ``case`` on ``backend``; return (exception, arrays before, arrays after)."""
    if case.build is None and not HAVE_CUDA:
        pytest.skip("needs numba-cuda")
    (fn, args, kw), arrays = (case.build or _mixed)()
    before = {k: v.copy() for k, v in arrays.items()}
    def unwrap(v):
        if isinstance(v, OtherDevice):
            from numba import cuda

            return cuda.to_device(v.value)
        return tuple(unwrap(u) for u in v) if isinstance(v, tuple) else v

    if backend == "cpu":
        mirror = None
        args, kw = unwrap(args), {k: unwrap(v) for k, v in kw.items()}
    else:
        mirror = Mirror()
        for a in arrays.values():  # every buffer the case watches, mirrored first
            mirror.array(a)
        args, kw = mirror(args), {k: mirror(v) for k, v in kw.items()}
    with pytest.raises(case.exc, match=case.match) as info:
        fn(*args, **kw)
    after = {k: (v if mirror is None else mirror.host(v)) for k, v in arrays.items()}
    return info.value, before, after


def _ids():
    return [f"{c.op}: {c.what}" for c in CASES]


BACKENDS = ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(
    not HAVE_CUDA, reason="numba-cuda is not installed"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=_ids())
def test_bad_input_raises_and_changes_nothing(case, backend):
    _, before, after = _run(case, backend)
    for k, v in after.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
        assert v.dtype == before[k].dtype


@pytest.mark.skipif(not HAVE_CUDA, reason="numba-cuda is not installed")
@pytest.mark.parametrize("case", CASES, ids=_ids())
def test_gpu_message_is_the_cpu_message(case):
    """One validation layer: the same words on both backends (the device-mixing case
    names the two devices, the other way round)."""
    cpu, gpu = str(_run(case, "cpu")[0]), str(_run(case, "gpu")[0])
    if case.build is None:
        assert cpu.replace("GPU array", "@").replace("NumPy (host) array", "GPU array") \
            .replace("@", "NumPy (host) array").replace("on the host", "on the GPU") \
            .split(";")[0] == gpu.split(";")[0]
    else:
        assert gpu == cpu


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


def _message(case, backend="cpu") -> str:
    return str(_run(case, backend)[0])


def markdown() -> str:
    lines = [
        "# Bad inputs",
        "",
        "Every public function validates its arguments in Python before any kernel runs,",
        "in one layer (`fastbn.functional` with `fastbn._checks`) shared by the CPU and",
        "the GPU backend: each call below raises, and every array it was given (running",
        "statistics, `out`, `dresidual`, the inputs) is bit-for-bit unchanged afterwards,",
        "on NumPy arrays and on device arrays alike.  Generated from",
        "`tests/test_bad_inputs.py` (`python tests/test_bad_inputs.py > docs/bad-inputs.md`),",
        "which runs each row on both backends (device arrays on numba-cuda's simulator in",
        "CI) and checks that the GPU raises the same exception with the same message.",
        "",
        "Not an error: NaN in `running_mean`/`running_var` at inference gives NaN in that",
        "channel only; NaN or inf in a training batch leaves that channel's running",
        "statistics unchanged, with a `RuntimeWarning`.",
        "",
        "| # | function | bad input | exception | message (CPU) | GPU |",
        "|---|---|---|---|---|---|",
    ]
    for i, case in enumerate(CASES, 1):
        msg = _message(case).replace("|", "\\|")
        if not HAVE_CUDA:
            gpu = "not run"
        elif case.build is None:
            gpu = "the devices named the other way round"
        else:
            gpu = "same" if _message(case, "gpu") == _message(case) else "DIFFERENT"
        lines.append(f"| {i} | `{case.op}` | {case.what} | `{case.exc.__name__}` | {msg} | {gpu} |")
    return "\n".join(lines) + "\n"


def test_docs_table_is_current():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "bad-inputs.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == markdown(), "regenerate: python tests/test_bad_inputs.py > " \
                                       "docs/bad-inputs.md"


if __name__ == "__main__":
    sys.stdout.write(markdown())
