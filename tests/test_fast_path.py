"""The fast path of the common call gives bit-for-bit what the general path gives.

``fastbn.functional`` skips the general preparation when a call is plainly
valid (host, C-contiguous float32/float64, matching contiguous parameters,
no out=/residual/activation).  Each case here runs once normally (fast path
taken, as asserted) and once with the fast path switched off, and compares
every output and every updated running statistic bit for bit.
"""

import itertools

import numpy as np
import pytest

from fastbn import functional as F


def _both(monkeypatch, call):
    """(fast result, general result, whether the fast path ran)."""
    taken = []
    real = F._plain_x

    def spy(x):
        ok = real(x)
        taken.append(ok)
        return ok

    monkeypatch.setattr(F, "_plain_x", spy)
    fast = call()
    monkeypatch.setattr(F, "_plain_x", lambda x: False)
    general = call()
    monkeypatch.setattr(F, "_plain_x", real)
    return fast, general, any(taken)


def _same(a, b):
    for u, v in zip(a, b, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(u, v)


CASES = list(itertools.product(
    [((32, 8), 1), ((6, 5, 7), 1), ((4, 3, 5, 6), -1), ((2, 3, 4, 5, 3), 1), ((300, 40), 1)],
    [np.float32, np.float64], [False, True]))


@pytest.mark.parametrize("shape_axis,dtype,affine", CASES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(monkeypatch, shape_axis, dtype, affine, training):
    shape, axis = shape_axis
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, shape).astype(dtype)
    c = shape[axis]
    w = rng.normal(1, 0.1, c).astype(dtype) if affine else None
    b = rng.normal(0, 0.1, c).astype(dtype) if affine else None
    stats = {}

    def call():
        rm, rv = np.linspace(-1, 1, c).astype(dtype), np.linspace(0.5, 2, c).astype(dtype)
        out = F.batch_norm(x, w, b, rm, rv, training=training, axis=axis, momentum=0.3)
        stats.setdefault("all", []).append((rm, rv))
        return out

    fast, general, took = _both(monkeypatch, call)
    assert took
    _same(fast, general)
    _same(*stats["all"])
    dy = rng.normal(size=shape).astype(dtype)
    fast, general, took = _both(monkeypatch, lambda: F.batch_norm_backward(
        dy, x, fast[1], fast[2], w, training=training, axis=axis))
    assert took
    _same(fast, general)


@pytest.mark.parametrize("shape_axis", [((32, 8), 1), ((4, 3, 5, 6), -1)])
@pytest.mark.parametrize("variant", ["no running", "float64 running", "nan channel"])
def test_batch_norm_small_training(monkeypatch, shape_axis, variant):
    """The one-call small training forward: without running statistics, with
    running statistics of another dtype, and with a channel that skips its update."""
    shape, axis = shape_axis
    rng = np.random.default_rng(2)
    x = rng.normal(3, 2, shape).astype(np.float32)
    c = shape[axis]
    if variant == "nan channel":
        np.moveaxis(x, axis, 0)[1].flat[3] = np.nan
    stats = []

    def call():
        if variant == "no running":
            return F.batch_norm(x, axis=axis)
        sdtype = np.float64 if variant == "float64 running" else np.float32
        rm, rv = np.linspace(-1, 1, c).astype(sdtype), np.linspace(0.5, 2, c).astype(sdtype)
        stats.append((rm, rv))
        if variant == "nan channel":
            with pytest.warns(RuntimeWarning, match="1 of"):
                return F.batch_norm(x, None, None, rm, rv, axis=axis)
        return F.batch_norm(x, None, None, rm, rv, axis=axis)

    fast, general, took = _both(monkeypatch, call)
    assert took
    _same(fast, general)
    if stats:
        _same(*stats)
    if variant == "nan channel":
        assert stats[0][0][1] == np.linspace(-1, 1, c).astype(np.float32)[1]


@pytest.mark.parametrize("shape", [(8, 768), (3, 4, 20), (2, 5000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("center", [True, False])
def test_layer_and_rms_norm(monkeypatch, shape, dtype, center):
    rng = np.random.default_rng(1)
    x = rng.normal(2, 3, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    d = shape[-1]
    w, b = rng.normal(1, 0.1, d).astype(dtype), rng.normal(0, 0.1, d).astype(dtype)
    if center:
        fast, general, took = _both(monkeypatch, lambda: F.layer_norm(x, d, w, b))
        assert took
        _same(fast, general)
        fast, general, took = _both(monkeypatch, lambda: F.layer_norm_backward(
            dy, x, d, fast[1], fast[2], w))
    else:
        fast, general, took = _both(monkeypatch, lambda: F.rms_norm(x, d, w))
        assert took
        _same(fast, general)
        fast, general, took = _both(monkeypatch, lambda: F.rms_norm_backward(dy, x, d, fast[1], w))
    assert took
    _same(fast, general)


def test_anything_unusual_takes_the_general_path(monkeypatch):
    """Strided x, float16, a float32 weight with float64 x, an int eps, out=: general."""
    x = np.ones((8, 4)) + np.arange(8)[:, None]
    calls = []
    real = F._fast_batch_norm
    monkeypatch.setattr(F, "_fast_batch_norm", lambda *a: calls.append(1) or real(*a))
    for kwargs in ({"eps": 1}, {"out": np.empty_like(x)}):
        F.batch_norm(x, **kwargs)
    F.batch_norm(x[:, ::2])
    F.batch_norm(x.astype(np.float16))
    assert calls == []
    assert F._fast_batch_norm(x, np.ones(4, np.float32), None, None, None, True, 0.1, 1e-5,
                              1) is None
