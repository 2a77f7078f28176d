"""Output arguments that overlap inputs on the GPU (issue 9, item 3), on the simulator.

API.md: an output argument (``out=``, ``dresidual=``) that overlaps an input is
either handled exactly or refused with ValueError.  The GPU follows the CPU's
policy: ``out`` identical to x runs in place, any other overlap of ``out`` (or
any overlap of ``dresidual``) goes through a device temporary, and running
statistics that overlap anything are refused before a byte is written.  Each
aliased call is compared bit for bit with the same call on separate arrays.
"""

import numpy as np
import pytest
from _cuda import TPB, d, h, small_blocks  # noqa: F401  (autouse fixture)
from numba import cuda

import fastbn
from fastbn import _checks  # noqa: E402
from fastbn._checks import may_overlap
from fastbn.cuda import _arrays as XP  # noqa: E402

DTYPES = [np.float32, np.float64]
ids = lambda t: np.dtype(t).name  # noqa: E731








class Buffer:
    """One device buffer holding several arrays at chosen element offsets (which may overlap).

    ``place(name, a, at)`` writes ``a`` into the host image at offset ``at``; ``view(name)``
    is the device view at that offset, after :meth:`upload`.  Later placements win where
    they overlap earlier ones, so the last array placed holds its values exactly.
    """

    def __init__(self, size, dtype, rng):
        self.host = rng.normal(size=size).astype(dtype)  # garbage where nothing is placed
        self.slots = {}

    def place(self, name, a, at):
        a = np.asarray(a, self.host.dtype)
        self.host[at:at + a.size] = a.ravel()
        self.slots[name] = (at, a.shape)

    def upload(self):
        self.dev = cuda.to_device(self.host)
        return self

    def view(self, name):
        at, shape = self.slots[name]
        n = int(np.prod(shape))
        return self.dev[at:at + n].reshape(shape)


def assert_same(actual, expected):
    np.testing.assert_array_equal(h(actual), h(expected) if not isinstance(expected, np.ndarray)
                                  else expected)


# --- forward: out= ---------------------------------------------------------------------------

def _bn_train(x, w, b, res, out, axis):
    return fastbn.batch_norm(x, w, b, axis=axis, residual=res, activation="relu", out=out)[0]


def _bn_eval(x, w, b, res, out, axis):
    c, dtype = tuple(x.shape)[axis], x.dtype
    rm, rv = np.linspace(-0.5, 0.5, c).astype(dtype), np.linspace(0.5, 2, c).astype(dtype)
    return fastbn.batch_norm(x, w, b, d(rm), d(rv), training=False, axis=axis, residual=res,
                             out=out)[0]


def _layer(x, w, b, res, out, axis):
    return fastbn.layer_norm(x, w.shape, w, b, out=out)[0]


def _rms(x, w, b, res, out, axis):
    return fastbn.rms_norm(x, w.shape, w, out=out)[0]


def _group(x, w, b, res, out, axis):
    return fastbn.group_norm(x, 2, w, b, axis=axis, out=out)[0]


def _instance(x, w, b, res, out, axis):
    return fastbn.instance_norm(x, w, b, axis=axis, out=out)[0]


# name: (x shape, channel axes (None: the last dim is normalized), aliases of out tried)
FORWARD = {
    "batch_norm": ((2, 2, 3), (1, -1), ("x", "x_shift", "x_back", "residual",
                                        "residual_shift", "weight", "bias")),
    "batch_norm_eval": ((2, 2, 3), (1, -1), ("x", "x_shift", "residual", "weight", "bias")),
    "layer_norm": ((3, 4), (None,), ("x", "x_shift", "x_back", "weight", "bias")),
    "rms_norm": ((3, 4), (None,), ("x", "x_shift", "weight")),
    "group_norm": ((2, 2, 2), (1, -1), ("x", "x_shift", "weight", "bias")),
    "instance_norm": ((2, 2, 3), (1, -1), ("x", "x_shift", "weight")),
}
CASES = [(f, a) for f, (_, _, aliases) in FORWARD.items() for a in aliases]


CALLS = {"batch_norm": _bn_train, "batch_norm_eval": _bn_eval, "layer_norm": _layer,
         "rms_norm": _rms, "group_norm": _group, "instance_norm": _instance}


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("name,alias", CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_out_overlapping_an_input_is_exact(rng, name, alias, dtype):
    _run_out(rng, name, alias, dtype)


@pytest.mark.parametrize("name,alias", [("batch_norm", "x"), ("batch_norm", "x_shift"),
                                        ("batch_norm", "residual_shift"),
                                        ("group_norm", "x_shift"), ("layer_norm", "weight")])
def test_out_overlap_float16(rng, name, alias):
    _run_out(rng, name, alias, np.float16)


def _run_out(rng, name, alias, dtype):
    """``out`` aliased with one input of ``name``, bit for bit the call on separate arrays."""
    shape, axes, _ = FORWARD[name]
    call = CALLS[name]
    n = int(np.prod(shape))
    for axis in axes:
        pshape = (shape[-1],) if axis is None else (shape[axis],)
        x = rng.normal(2, 3, shape).astype(dtype)
        w = rng.normal(1, 0.3, pshape).astype(dtype)
        b = rng.normal(0, 0.3, pshape).astype(dtype)
        res = rng.normal(size=shape).astype(dtype) if name.startswith("batch_norm") else None
        expected = call(d(x), d(w), d(b), d(res), None, axis)

        # out at [2n, 3n); the inputs elsewhere, except the one aliased with out
        buf = Buffer(7 * n, dtype, rng)
        buf.place("out", np.zeros(shape), 2 * n)
        names = {"x": x, "w": w, "b": b, "res": res}
        at = {"x": 0, "res": 4 * n, "w": 5 * n, "b": 6 * n}
        target = {"x": "x", "x_shift": "x", "x_back": "x", "residual": "res",
                  "residual_shift": "res", "weight": "w", "bias": "b"}[alias]
        # where the aliased input starts relative to out (0: the very same array)
        shift = {"x": 0, "x_shift": -3, "x_back": 5, "residual": 0, "residual_shift": -7,
                 "weight": n // 2, "bias": 1}[alias]
        at[target] = 2 * n + shift
        for k in ("x", "w", "b", "res"):
            if names[k] is not None and k != target:
                buf.place(k, names[k], at[k])
        buf.place(target, names[target], at[target])  # last: it holds its values exactly
        buf.upload()
        views = {k: (buf.view(k) if names[k] is not None else None) for k in names}
        out = views["x"] if alias == "x" else (
            views["res"] if alias == "residual" else buf.view("out"))
        y = call(views["x"], views["w"], views["b"], views["res"], out, axis)
        assert y is out
        assert_same(y, expected)


def _direct(out, x3, src, *inputs):
    """Whether the kernels would write straight into ``out`` (no temporary)."""
    buffer = _checks.result_buffer(XP, out, x3, src, *inputs)
    return out is not None and _checks.byte_range(buffer) == _checks.byte_range(out)


def test_result_buffer_in_place_only_for_out_identical_to_x(rng):
    """``out=x`` is written straight into (no temporary); any other overlap is not."""
    buf = cuda.to_device(rng.normal(size=40))
    x, w = buf[:24].reshape(2, 3, 4), buf[30:33]
    assert _direct(x, x, x, None, w)
    assert _direct(buf[:24].reshape(2, 3, 4), x, x)  # same memory
    assert not _direct(buf[:24].reshape(2, 12), x, x)  # other layout
    for out, inputs in [(buf[1:25].reshape(2, 3, 4), ()), (buf[6:30].reshape(2, 3, 4), (w,)),
                        (x, (x,)), (buf[9:33].reshape(2, 3, 4), (None, w))]:
        tmp = _checks.result_buffer(XP, out, x, x, *inputs)
        assert not may_overlap(tmp, buf)
    # dresidual (no src): even the identical array goes through a temporary
    assert not _direct(x, x, None, x)
    fresh = _checks.result_buffer(XP, None, x, x, x)
    assert tuple(fresh.shape) == (2, 3, 4) and not may_overlap(fresh, buf)


def test_deliver_copies_on_the_device(rng):
    buf = cuda.to_device(np.zeros(10))
    tmp = cuda.to_device(np.arange(1.0, 7.0))
    assert _checks.deliver(XP, tmp, buf[2:8], (6,), np.float64) is not tmp
    np.testing.assert_array_equal(h(buf), [0, 0, 1, 2, 3, 4, 5, 6, 0, 0])
    same = _checks.deliver(XP, tmp, None, (6,), np.float64)  # no copy: tmp's memory
    assert _checks.byte_range(same) == _checks.byte_range(tmp)
    empty = buf[3:3]
    assert _checks.deliver(XP, cuda.device_array(0), empty, (0,), np.float64) is empty


def test_out_is_x_runs_in_place(rng):
    x = d(rng.normal(size=(3, 4, 5)))
    expected = h(fastbn.batch_norm(d(h(x)))[0])
    y = fastbn.batch_norm(x, out=x)[0]
    assert y is x
    np.testing.assert_array_equal(h(x), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
def test_zero_size_out_is_x(dtype):
    x = d(np.zeros((0, 4), dtype))
    assert fastbn.layer_norm(x, 4, out=x)[0] is x
    x3 = d(np.zeros((0, 3, 2), dtype))
    rm, rv = d(np.zeros(3, dtype)), d(np.ones(3, dtype))
    assert fastbn.batch_norm(x3, None, None, rm, rv, training=False, out=x3)[0] is x3
    buf = cuda.to_device(np.zeros(4, dtype))
    assert fastbn.layer_norm(buf[:0].reshape(0, 4), 4, out=buf[1:1].reshape(0, 4))[0].size == 0


# --- running statistics: refused ----------------------------------------------------------------

def _host_twin(buf_host, slots):
    """The same aliasing on the host: views of one NumPy buffer."""
    return {k: buf_host[at:at + int(np.prod(s))].reshape(s) for k, (at, s) in slots.items()}


RUNNING = {
    # training: running stats may overlap nothing
    "rm_in_x": (True, {"x": 0, "rm": 7, "rv": 70}, "running_mean shares memory with x"),
    "rm_rv": (True, {"x": 0, "rm": 70, "rv": 72}, "running_mean shares memory with running_var"),
    "rv_weight": (True, {"x": 0, "rm": 70, "rv": 80, "w": 82},
                  "running_var shares memory with weight"),
    "rv_in_out": (True, {"x": 0, "rm": 70, "rv": 100, "out": 90},
                  "running_var shares memory with out"),
    "rm_in_residual": (True, {"x": 0, "rm": 95, "rv": 70, "res": 90},
                       "running_mean shares memory with residual"),
    # inference: out may not overlap the running stats
    "out_rm": (False, {"x": 0, "rm": 100, "rv": 70, "out": 90},
               "out shares memory with running_mean"),
    "out_rv": (False, {"x": 0, "rm": 70, "rv": 95, "out": 90},
               "out shares memory with running_var"),
}


@pytest.mark.parametrize("dtype", DTYPES + [np.float16], ids=ids)
@pytest.mark.parametrize("case", sorted(RUNNING))
def test_running_stats_overlap_is_refused_before_anything_is_written(rng, case, dtype):
    training, at, message = RUNNING[case]
    shape, c = (3, 4, 5), 4                          # x: 60 elements, out/res: 60 from 90 on
    shapes = {"x": shape, "rm": (c,), "rv": (c,), "w": (c,), "out": shape, "res": shape}
    values = {"x": rng.normal(size=shape), "rm": rng.normal(size=c),
              "rv": rng.uniform(0.5, 2, c), "w": rng.normal(1, 0.3, c),
              "out": rng.normal(size=shape), "res": rng.normal(size=shape)}
    buf = Buffer(160, dtype, rng)
    for k in sorted(at, key=lambda k: k in ("rm", "rv")):    # the running stats hold theirs
        buf.place(k, values[k].reshape(shapes[k]), at[k])
    buf.upload()
    before = h(buf.dev).tobytes()
    v = {k: buf.view(k) for k in at}
    kw = dict(training=training, out=v.get("out"), residual=v.get("res"))
    with pytest.raises(ValueError, match=message) as gpu_err:
        fastbn.batch_norm(v["x"], v.get("w"), None, v["rm"], v["rv"], **kw)
    assert h(buf.dev).tobytes() == before   # running stats, out and every input untouched

    host = buf.host.copy()
    t = _host_twin(host, {k: buf.slots[k] for k in at})
    with pytest.raises(ValueError) as cpu_err:
        fastbn.batch_norm(t["x"], t.get("w"), None, t["rm"], t["rv"], training=training,
                          out=t.get("out"), residual=t.get("res"))
    assert str(gpu_err.value) == str(cpu_err.value)
    assert host.tobytes() == buf.host.tobytes()


# --- backward: dresidual= -----------------------------------------------------------------------

# dresidual aliasing: which input, and where it starts relative to dresidual
DRES = {"x": ("x", 0), "dy": ("dy", 0), "y": ("y", 0), "x_shift": ("x", -5),
        "x_back": ("x", 3), "dy_shift": ("dy", 4), "mean": ("mean", 6), "rstd": ("rstd", 11),
        "weight": ("w", 10)}


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("alias", list(DRES))
@pytest.mark.parametrize("axis", [1, -1])
def test_dresidual_overlapping_an_input_is_exact(rng, alias, axis, dtype):
    _run_dresidual(rng, alias, axis, dtype, training=True)


@pytest.mark.parametrize("alias", ["x", "dy", "x_shift"])
def test_dresidual_overlap_frozen_statistics(rng, alias):
    _run_dresidual(rng, alias, 1, np.float64, training=False)


@pytest.mark.parametrize("alias", ["x", "x_shift", "y"])
def test_dresidual_overlap_float16(rng, alias):
    _run_dresidual(rng, alias, 1, np.float16, training=True)


def _run_dresidual(rng, alias, axis, dtype, training):
    shape = (2, 2, 3)
    c = shape[axis]
    x = rng.normal(1, 2, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    w = rng.normal(1, 0.3, c).astype(dtype)
    # the saved forward results, from the CPU (cheaper than the simulator)
    y, mean, rstd = fastbn.batch_norm(x, w, None, axis=axis, activation="relu",
                                      residual=rng.normal(size=shape).astype(dtype))
    kw = dict(training=training, axis=axis, activation="relu")
    d_dres = cuda.device_array(shape, dtype)
    ex = fastbn.batch_norm_backward(d(dy), d(x), d(mean), d(rstd), d(w), y=d(y),
                                    dresidual=d_dres, **kw)
    ex = [h(a) for a in ex] + [h(d_dres)]

    target, shift = DRES[alias]
    values = {"x": x, "dy": dy, "y": y, "mean": mean, "rstd": rstd, "w": w}
    at = {"x": 0, "dy": 100, "y": 200, "mean": 300, "rstd": 310, "w": 320}
    at["dres"] = 400
    at[target] = at["dres"] + shift
    # float16 x: mean and rstd are float32, so they keep arrays of their own
    own = ("mean", "rstd") if dtype == np.float16 else ()
    buf = Buffer(500, dtype, rng)
    for k, a in values.items():
        if k != target and k not in own:
            buf.place(k, a, at[k])
    buf.place("dres", np.zeros(shape), at["dres"])
    buf.place(target, values[target], at[target])
    buf.upload()
    v = {k: d(values[k]) if k in own else buf.view(k) for k in values}
    dres = buf.view("dres")
    got = fastbn.batch_norm_backward(v["dy"], v["x"], v["mean"], v["rstd"], v["w"], y=v["y"],
                                     dresidual=dres, **kw)
    for a, e in zip([h(a) for a in got] + [h(dres)], ex, strict=True):
        np.testing.assert_array_equal(a, e)
