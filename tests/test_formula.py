"""fastbn.formula (the benchmark's NumPy-formula baseline) computes what the reference does."""

import numpy as np
import pytest

from fastbn import formula as Fm
from fastbn import reference as R


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(1.0, 2.0, shape), rng.normal(size=shape)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a).ravel(), np.asarray(b).ravel(), rtol=1e-9,
                               atol=1e-10)


@pytest.mark.parametrize("shape,axis", [((6, 3, 4, 5), 1), ((6, 4, 5, 3), -1), ((9, 3), 1)])
def test_batch_norm(shape, axis):
    x, dy = _data(shape)
    c = shape[axis]
    w, b = np.linspace(0.5, 1.5, c), np.linspace(-1, 1, c)
    for got, want in zip(Fm.batch_norm_train(x, w, b, axis=axis),
                         R.batch_norm_train(x, w, b, axis=axis), strict=True):
        _close(got, want)
    rm, rv = np.linspace(-1, 1, c), np.linspace(0.5, 2, c)
    _close(Fm.batch_norm_inference(x, rm, rv, w, b, axis=axis),
           R.batch_norm_inference(x, rm, rv, w, b, axis=axis))
    _, mean, rstd = R.batch_norm_train(x, w, b, axis=axis)
    for got, want in zip(Fm.batch_norm_backward_train(dy, x, mean, rstd, w, axis=axis),
                         R.batch_norm_backward_train(dy, x, mean, rstd, w, axis=axis),
                         strict=True):
        _close(got, want)


def test_layer_and_rms_norm():
    x, dy = _data((4, 6, 8))
    w, b = np.linspace(0.5, 1.5, 8), np.linspace(-1, 1, 8)
    for got, want in zip(Fm.layer_norm(x, 8, w, b), R.layer_norm(x, 8, w, b), strict=True):
        _close(got, want)
    _, mean, rstd = R.layer_norm(x, 8, w, b)
    for got, want in zip(Fm.layer_norm_backward(dy, x, 8, mean, rstd, w),
                         R.layer_norm_backward(dy, x, 8, mean, rstd, w), strict=True):
        _close(got, want)
    for got, want in zip(Fm.rms_norm(x, 8, w), R.rms_norm(x, 8, w), strict=True):
        _close(got, want)
    _, rstd = R.rms_norm(x, 8, w)
    for got, want in zip(Fm.rms_norm_backward(dy, x, 8, rstd, w),
                         R.rms_norm_backward(dy, x, 8, rstd, w), strict=True):
        _close(got, want)


@pytest.mark.parametrize("shape,axis", [((3, 8, 4, 5), 1), ((3, 4, 5, 8), -1)])
def test_group_norm(shape, axis):
    x, dy = _data(shape)
    w, b = np.linspace(0.5, 1.5, 8), np.linspace(-1, 1, 8)
    for got, want in zip(Fm.group_norm(x, 4, w, b, axis=axis),
                         R.group_norm(x, 4, w, b, axis=axis), strict=True):
        _close(got, want)
    _, mean, rstd = R.group_norm(x, 4, w, b, axis=axis)
    for got, want in zip(Fm.group_norm_backward(dy, x, 4, mean, rstd, w, axis=axis),
                         R.group_norm_backward(dy, x, 4, mean, rstd, w, axis=axis), strict=True):
        _close(got, want)


def test_float32_stays_float32():
    x = _data((16, 4, 3))[0].astype(np.float32)
    y, mean, rstd = Fm.batch_norm_train(x, np.ones(4, np.float32), np.zeros(4, np.float32))
    assert y.dtype == mean.dtype == rstd.dtype == np.float32
