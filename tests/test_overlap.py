"""Output arguments that share memory with inputs: computed exactly or refused, never wrong.

Each aliased call is compared bit for bit with the same call on separate arrays
holding the same values.  ``out=x`` is computed in place; any other overlap of
``out`` or ``dresidual`` goes through a temporary; running statistics that
overlap anything are refused with ValueError and leave every array unchanged.
"""

import numpy as np
import pytest

import fastbn

DTYPES = [np.float32, np.float64]
SHAPE = (4, 3, 5)


def _data(rng, dtype, n_extra=0):
    """One buffer: x (SHAPE) at its start, then ``n_extra`` more values."""
    n = int(np.prod(SHAPE))
    buf = rng.normal(1.0, 2.0, n + n_extra).astype(dtype)
    return buf, buf[:n].reshape(SHAPE)


def _shifted(buf, k):
    """A SHAPE view of ``buf`` starting ``k`` elements in: overlaps x partly."""
    n = int(np.prod(SHAPE))
    return buf[k:k + n].reshape(SHAPE)


def _equal(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, e)


# --- out= ------------------------------------------------------------------------------

def _forward_calls():
    """(name, call(x, out, **arrays), needs) for every function with ``out=``."""
    return [
        ("batch_norm-train", lambda x, out, w, b, r: fastbn.batch_norm(
            x, w, b, out=out, residual=r, activation="relu")),
        ("batch_norm-train-last", lambda x, out, w, b, r: fastbn.batch_norm(
            x, np.ones(5, x.dtype), None, axis=-1, out=out)),
        ("batch_norm-eval", lambda x, out, w, b, r: fastbn.batch_norm(
            x, w, b, np.zeros(3, x.dtype), np.ones(3, x.dtype), training=False, out=out,
            residual=r)),
        ("layer_norm", lambda x, out, w, b, r: fastbn.layer_norm(
            x, 5, np.linspace(0.5, 1.5, 5).astype(x.dtype), None, out=out)),
        ("rms_norm", lambda x, out, w, b, r: fastbn.rms_norm(x, (3, 5), None, out=out)),
        ("group_norm", lambda x, out, w, b, r: fastbn.group_norm(x, 3, w, b, out=out)),
        ("instance_norm", lambda x, out, w, b, r: fastbn.instance_norm(x, w, None, out=out)),
    ]


FORWARD = {name: call for name, call, in _forward_calls()}


def _params(rng, dtype):
    return (rng.uniform(0.5, 1.5, 3).astype(dtype), rng.normal(0, 1, 3).astype(dtype),
            rng.normal(0, 1, SHAPE).astype(dtype))


def _expected(call, x, w, b, r):
    return call(x.copy(), None, w.copy(), b.copy(), r.copy())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_out_is_x_in_place(rng, name, dtype):
    buf, x = _data(rng, dtype)
    w, b, r = _params(rng, dtype)
    expected = _expected(FORWARD[name], x, w, b, r)
    result = FORWARD[name](x, x, w, b, r)
    assert result[0] is x
    _equal(result, expected)


@pytest.mark.parametrize("shift", [1, 7, -3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_out_partly_overlapping_x(rng, name, dtype, shift):
    buf, _ = _data(rng, dtype, n_extra=16)
    x = _shifted(buf, 8)
    out = _shifted(buf, 8 + shift)
    w, b, r = _params(rng, dtype)
    expected = _expected(FORWARD[name], x, w, b, r)
    result = FORWARD[name](x, out, w, b, r)
    assert result[0] is out
    _equal(result, expected)


@pytest.mark.parametrize("alias", ["residual", "residual-shifted", "weight", "bias"])
@pytest.mark.parametrize("name", ["batch_norm-train", "batch_norm-eval", "group_norm"])
def test_out_overlapping_other_inputs(rng, name, alias):
    if "residual" in alias and name == "group_norm":
        pytest.skip("group norm has no residual")
    dtype = np.float64  # weight and bias are used as given (no float64 copy)
    n = int(np.prod(SHAPE))
    x = rng.normal(1.0, 2.0, SHAPE).astype(dtype)
    w, b, r = _params(rng, dtype)
    buf = rng.normal(0.0, 1.0, n + 8).astype(dtype)
    out = buf[4:4 + n].reshape(SHAPE)
    if alias == "residual":
        r = out
    elif alias == "residual-shifted":
        r = buf[:n].reshape(SHAPE)
    elif alias == "weight":
        w = buf[n + 1:n + 4]  # inside out's last elements
        w[:] = [0.7, 1.1, 1.3]
    else:
        b = buf[2:5]
    expected = _expected(FORWARD[name], x, w, b, r)
    result = FORWARD[name](x, out, w, b, r)
    assert result[0] is out
    _equal(result, expected)


# --- running statistics: refused --------------------------------------------------------

def _unchanged(*arrays):
    return [a.copy() for a in arrays]


def test_out_overlapping_running_stats_in_inference_is_refused(rng):
    x = rng.normal(size=SHAPE)
    buf = np.zeros(int(np.prod(SHAPE)) + 3)
    out = buf[:-3].reshape(SHAPE)
    rm, rv = buf[-4:-1], np.ones(3)
    before = _unchanged(x, buf, rv)
    with pytest.raises(ValueError, match="out shares memory with running_mean"):
        fastbn.batch_norm(x, None, None, rm, rv, training=False, out=out)
    _equal((x, buf, rv), before)


@pytest.mark.parametrize("case", ["rm-in-x", "rm-rv", "rm-is-weight", "rv-in-out",
                                  "rv-in-residual"])
def test_running_stats_overlapping_anything_in_training_is_refused(rng, case):
    x = rng.normal(size=SHAPE)
    rm, rv, w = np.zeros(3), np.ones(3), np.ones(3)
    out, res = None, None
    if case == "rm-in-x":
        rm = x[0, :, 0]
    elif case == "rm-rv":
        both = np.ones(4)
        rm, rv = both[:3], both[1:]
    elif case == "rm-is-weight":
        rm = w
    elif case == "rv-in-out":
        out = np.zeros(SHAPE)
        rv = out[1, 1, :3]
    else:
        res = np.zeros(SHAPE)
        rv = res[0, 0, 2:]
    arrays = [a for a in (x, rm, rv, w, out, res) if a is not None]
    before = _unchanged(*arrays)
    with pytest.raises(ValueError, match="shares memory"):
        fastbn.batch_norm(x, w, None, rm, rv, out=out, residual=res)
    _equal(arrays, before)


# --- dresidual= --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("alias", ["x", "dy", "y", "x-shifted", "dy-shifted"])
@pytest.mark.parametrize("axis", [1, -1])
def test_dresidual_overlapping_inputs(rng, alias, dtype, axis):
    """Issue 9's silent wrong result: dresidual=x gave a wrong dx (max error 0.11)."""
    n = int(np.prod(SHAPE))
    c = SHAPE[axis]
    w = rng.uniform(0.5, 1.5, c).astype(dtype)
    buf = rng.normal(0.5, 1.0, 3 * n + 8).astype(dtype)
    x = buf[:n].reshape(SHAPE)
    dy = buf[n:2 * n].reshape(SHAPE)
    skip = rng.normal(size=SHAPE).astype(dtype)
    y, mean, rstd = fastbn.batch_norm(x, w, None, residual=skip, activation="relu", axis=axis)
    dres = {"x": x, "dy": dy, "y": y, "x-shifted": buf[3:3 + n].reshape(SHAPE),
            "dy-shifted": buf[n + 5:2 * n + 5].reshape(SHAPE)}[alias]
    kw = dict(activation="relu", axis=axis)
    expected_dres = np.empty_like(x)
    expected = fastbn.batch_norm_backward(dy.copy(), x.copy(), mean, rstd, w, y=y.copy(),
                                          dresidual=expected_dres, **kw)
    result = fastbn.batch_norm_backward(dy, x, mean, rstd, w, y=y, dresidual=dres, **kw)
    _equal(result, expected)
    np.testing.assert_array_equal(dres, expected_dres)
