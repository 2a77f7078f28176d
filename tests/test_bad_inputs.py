"""The bad-input table: every case raises before anything is written.

Each case builds fresh arrays, calls one public function with one thing wrong,
and checks the exception type and message, and that every array it was given
(running statistics, ``out``, ``dresidual``, inputs) is bit-for-bit unchanged.
``docs/bad-inputs.md`` is generated from this table
(``python tests/test_bad_inputs.py > docs/bad-inputs.md``) and a test keeps it
in step.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest

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
        return (lambda: fastbn.batch_norm(*args, **call_kw)), arrays
    return build


def _call(fn, *args, **kw):
    """A call whose arrays (positional and keyword) must all stay unchanged."""
    def build():
        arrays = {f"arg{i}": a for i, a in enumerate(args) if isinstance(a, np.ndarray)}
        arrays.update({k: v for k, v in kw.items() if isinstance(v, np.ndarray)})
        return (lambda: fn(*args, **kw)), arrays
    return build


def _running_overlapping_x():
    x = _x()
    rm, rv = x[0, :, 0], _stats()[1]
    return (lambda: fastbn.batch_norm(x, None, None, rm, rv)), {"x": x, "rv": rv}


def _out_overlapping_running_mean():
    x = _x()
    buf = np.zeros(x.size + C)
    out, rm = buf[:x.size].reshape(x.shape), buf[x.size - 1:x.size - 1 + C]
    rv = _stats()[1]
    return (lambda: fastbn.batch_norm(x, None, None, rm, rv, training=False, out=out)), \
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
        return (lambda: fastbn.batch_norm_backward(*args, **kw)), arrays
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
    Case("batch_norm", "running statistics not NumPy arrays", TypeError,
         "running_mean must be a NumPy array",
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
    Case("batch_norm", "a GPU array among host arrays", TypeError, "is a GPU array",
         None),  # built in the test (needs numba-cuda's simulator)
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


def _gpu_among_host():
    cuda = pytest.importorskip("numba.cuda")
    x, (rm, rv) = _x(), _stats()
    d_w = cuda.to_device(np.ones(C))
    return (lambda: fastbn.batch_norm(x, d_w, None, rm, rv)), {"x": x, "rm": rm, "rv": rv}


def _ids():
    return [f"{c.op}: {c.what}" for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=_ids())
def test_bad_input_raises_and_changes_nothing(case):
    build = case.build or _gpu_among_host
    call, arrays = build()
    before = {k: v.copy() for k, v in arrays.items()}
    with pytest.raises(case.exc, match=case.match):
        call()
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
        assert v.dtype == before[k].dtype


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


def _message(case) -> str:
    build = case.build or _gpu_among_host
    call, _ = build()
    try:
        call()
    except case.exc as exc:
        return str(exc)
    raise AssertionError(f"{case.op}: {case.what} did not raise")


def markdown() -> str:
    lines = [
        "# Bad inputs",
        "",
        "Every public function validates its arguments in Python before any kernel runs:",
        "each call below raises, and every array it was given (running statistics, `out`,",
        "`dresidual`, the inputs) is bit-for-bit unchanged afterwards.  Generated from",
        "`tests/test_bad_inputs.py` (`python tests/test_bad_inputs.py > docs/bad-inputs.md`),",
        "which tests each row.  The GPU backend checks the same conditions on device",
        "arrays; its messages are not yet all identical to these (issue 9).",
        "",
        "Not an error: NaN in `running_mean`/`running_var` at inference gives NaN in that",
        "channel only; NaN or inf in a training batch leaves that channel's running",
        "statistics unchanged, with a `RuntimeWarning`.",
        "",
        "| # | function | bad input | exception | message |",
        "|---|---|---|---|---|",
    ]
    for i, case in enumerate(CASES, 1):
        msg = _message(case).replace("|", "\\|")
        lines.append(f"| {i} | `{case.op}` | {case.what} | `{case.exc.__name__}` | {msg} |")
    return "\n".join(lines) + "\n"


def test_docs_table_is_current():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "bad-inputs.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == markdown(), "regenerate: python tests/test_bad_inputs.py > " \
                                       "docs/bad-inputs.md"


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    sys.stdout.write(markdown())
