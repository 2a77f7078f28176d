"""CPU layer norm and RMS norm against fastbn.reference."""

import numba
import numpy as np
import pytest
from _helpers import assert_close, make, numerical_grad

import fastbn
from fastbn import reference

# (x shape, normalized_shape): ndim 2-5, one or several normalized dims,
# row lengths on both sides of the chunk size the "split" config uses.
CASES = [
    ((6, 5), 5),
    ((4, 3, 40), 40),
    ((4, 3, 7), (3, 7)),
    ((2, 3, 4, 5), (4, 5)),
    ((2, 2, 3, 4, 5), (3, 4, 5)),
    ((9, 33), (33,)),
]
ODD = [
    ((2, 1), 1),          # one value per row: y = bias
    ((1, 9), 9),          # a single row
    ((3, 1, 1, 2), (1, 1, 2)),
    ((5, 2), 2),
]
DTYPES = [np.float32, np.float64]
ids = str


def _params(rng, shape, dtype, affine):
    if not affine:
        return None, None
    return make(rng, shape, dtype, 1.0, 0.5), make(rng, shape, dtype, 0.0, 0.5)


def _nshape(ns):
    return (ns,) if isinstance(ns, int) else tuple(ns)


def _rows(x, ns):
    return int(np.prod(x.shape)) // int(np.prod(_nshape(ns)))


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,ns", CASES + ODD, ids=ids)
def test_layer_norm(rng, kernel_config, shape, ns, dtype, affine):
    x = make(rng, shape, dtype, loc=3.0, scale=2.0)
    dy = make(rng, shape, dtype)
    w, b = _params(rng, _nshape(ns), dtype, affine)
    lead = shape[:len(shape) - len(_nshape(ns))]

    y, mean, rstd = fastbn.layer_norm(x, ns, w, b)
    y_ref, mean_ref, rstd_ref = reference.layer_norm(x, ns, w, b)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert mean.shape == rstd.shape == lead and mean.dtype == x.dtype
    assert_close(y, y_ref, dtype)
    assert_close(mean, mean_ref, dtype)
    assert_close(rstd, rstd_ref, dtype, scale=10)  # rstd is large for tiny variances

    dx, dw, db = fastbn.layer_norm_backward(dy, x, ns, mean, rstd, w)
    dx_ref, dw_ref, db_ref = reference.layer_norm_backward(dy, x, ns, mean, rstd, w)
    assert dx.shape == x.shape and dw.shape == db.shape == _nshape(ns)
    sums = np.sqrt(_rows(x, ns))
    assert_close(dx, dx_ref, dtype, scale=4)
    assert_close(dw, dw_ref, dtype, scale=sums)
    assert_close(db, db_ref, dtype, scale=sums)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,ns", CASES + ODD, ids=ids)
def test_rms_norm(rng, kernel_config, shape, ns, dtype, affine):
    x = make(rng, shape, dtype, loc=1.0, scale=2.0)
    dy = make(rng, shape, dtype)
    w, _ = _params(rng, _nshape(ns), dtype, affine)

    y, rstd = fastbn.rms_norm(x, ns, w)
    y_ref, rstd_ref = reference.rms_norm(x, ns, w)
    assert y.dtype == x.dtype and rstd.shape == shape[:len(shape) - len(_nshape(ns))]
    assert_close(y, y_ref, dtype)
    assert_close(rstd, rstd_ref, dtype)

    dx, dw = fastbn.rms_norm_backward(dy, x, ns, rstd, w)
    dx_ref, dw_ref = reference.rms_norm_backward(dy, x, ns, rstd, w)
    assert_close(dx, dx_ref, dtype, scale=4)
    assert_close(dw, dw_ref, dtype, scale=np.sqrt(_rows(x, ns)))


@pytest.mark.parametrize("op", ["layer", "rms"])
@pytest.mark.parametrize("shape,ns", [((3, 4), 4), ((2, 3, 4), (3, 4))], ids=ids)
def test_gradients_match_finite_differences(rng, op, shape, ns):
    x = rng.normal(size=shape)
    w = rng.normal(size=_nshape(ns))
    b = rng.normal(size=_nshape(ns))
    g = rng.normal(size=shape)
    if op == "layer":
        def loss():
            return np.sum(g * fastbn.layer_norm(x, ns, w, b)[0])
        _, mean, rstd = fastbn.layer_norm(x, ns, w, b)
        dx, dw, db = fastbn.layer_norm_backward(g, x, ns, mean, rstd, w)
        np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-5, atol=1e-7)
    else:
        def loss():
            return np.sum(g * fastbn.rms_norm(x, ns, w)[0])
        _, rstd = fastbn.rms_norm(x, ns, w)
        dx, dw = fastbn.rms_norm_backward(g, x, ns, rstd, w)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("view", ["transposed", "strided", "negative"])
def test_non_contiguous_views(rng, view):
    base = make(rng, (6, 8, 10), np.float32, loc=2.0)
    x = {"transposed": base.transpose(1, 0, 2), "strided": base[::2, :, ::2],
         "negative": base[:, ::-1, ::-1]}[view]
    assert not x.flags.c_contiguous
    ns = x.shape[-1]
    y, mean, rstd = fastbn.layer_norm(x, ns)
    assert_close(y, reference.layer_norm(x, ns)[0], np.float32)
    dy = make(rng, x.shape, np.float32)[::-1]
    dx, dw, _ = fastbn.layer_norm_backward(dy, x, ns, mean, rstd)
    dx_ref, dw_ref, _ = reference.layer_norm_backward(dy, x, ns, mean, rstd)
    assert_close(dx, dx_ref, np.float32, scale=4)
    assert_close(dw, dw_ref, np.float32, scale=8)
    y2, r2 = fastbn.rms_norm(x, ns)
    assert_close(y2, reference.rms_norm(x, ns)[0], np.float32)


def test_float16(rng):
    x = make(rng, (4, 6, 16), np.float16, loc=1.0)
    w = make(rng, 16, np.float16, loc=1.0, scale=0.1)
    y, mean, rstd = fastbn.layer_norm(x, 16, w)
    assert y.dtype == np.float16 and mean.dtype == np.float32
    assert_close(y, reference.layer_norm(x, 16, w)[0], np.float16)
    dx, dw, db = fastbn.layer_norm_backward(np.ones_like(x), x, 16, mean, rstd, w)
    assert dx.dtype == np.float16 and dw.dtype == np.float32
    y2, r2 = fastbn.rms_norm(x, 16, w)
    assert y2.dtype == np.float16
    assert_close(y2, reference.rms_norm(x, 16, w)[0], np.float16)


def test_out_argument(rng):
    x = make(rng, (5, 7, 9), np.float32)
    expected = fastbn.layer_norm(x, 9)[0]
    out = np.empty_like(x)
    assert fastbn.layer_norm(x, 9, out=out)[0] is out and np.array_equal(out, expected)
    x2 = x.copy()
    assert fastbn.layer_norm(x2, 9, out=x2)[0] is x2 and np.array_equal(x2, expected)
    out = np.empty_like(x)
    assert fastbn.rms_norm(x, 9, out=out)[0] is out
    assert np.array_equal(out, fastbn.rms_norm(x, 9)[0])


@pytest.mark.parametrize("d", [64, 3000])
def test_large_offset_and_constant_rows(kernel_config, rng, d):
    x = (1e4 + rng.normal(size=(8, d))).astype(np.float32)
    y, _, _ = fastbn.layer_norm(x, d)
    assert np.abs(y - reference.layer_norm(x, d)[0]).max() < 1e-5
    const = np.full((3, d), 7.25, np.float32)
    bias = np.linspace(-1, 1, d).astype(np.float32)
    y, mean, _ = fastbn.layer_norm(const, d, None, bias)
    assert np.array_equal(y, np.broadcast_to(bias, y.shape)) and np.all(mean == 7.25)
    dx, dw, _ = fastbn.layer_norm_backward(np.ones_like(const), const, d, *fastbn.layer_norm(
        const, d)[1:])
    assert np.all(np.isfinite(dx)) and np.all(dw == 0)


def test_nan_stays_in_its_row(kernel_config, rng):
    x = make(rng, (6, 40), np.float32)
    x[2, 5] = np.nan
    y, mean, rstd = fastbn.layer_norm(x, 40)
    assert np.all(np.isnan(y[2])) and np.all(np.isfinite(np.delete(y, 2, axis=0)))
    dx, dw, _ = fastbn.layer_norm_backward(np.ones_like(x), x, 40, mean, rstd)
    assert np.all(np.isfinite(np.delete(dx, 2, axis=0)))
    y2, _ = fastbn.rms_norm(x, 40)
    assert np.all(np.isnan(y2[2])) and np.all(np.isfinite(np.delete(y2, 2, axis=0)))


@pytest.mark.parametrize("shape", [(4096, 96), (3, 70000)], ids=str)
def test_identical_for_any_thread_count(rng, shape):
    x = make(rng, shape, np.float32, loc=2)
    dy = make(rng, shape, np.float32)
    w = make(rng, shape[-1], np.float32, loc=1)
    before = numba.get_num_threads()
    results = []
    try:
        for n in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            y, mean, rstd = fastbn.layer_norm(x, shape[-1], w)
            r = (y, mean, rstd, *fastbn.layer_norm_backward(dy, x, shape[-1], mean, rstd, w))
            y2, r2 = fastbn.rms_norm(x, shape[-1], w)
            results.append(r + (y2, r2, *fastbn.rms_norm_backward(dy, x, shape[-1], r2, w)))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)


BAD = [
    (dict(normalized_shape=()), ValueError, ["at least one"]),
    (dict(normalized_shape=5), ValueError, ["(5,)", "(4, 6, 8)"]),
    (dict(normalized_shape=(4, 8)), ValueError, ["(4, 8)"]),
    (dict(normalized_shape=(3, 4, 6, 8)), ValueError, ["(3, 4, 6, 8)"]),
    (dict(normalized_shape="8"), TypeError, ["normalized_shape"]),
    (dict(weight=np.ones(7, np.float32)), ValueError, ["weight", "(7,)", "(8,)"]),
    (dict(bias=np.ones((1, 8), np.float32)), ValueError, ["bias", "(1, 8)"]),
    (dict(x=np.ones((4, 6, 8), np.int32)), TypeError, ["x", "int32"]),
    (dict(eps=0), ValueError, ["eps"]),
    (dict(out=np.empty((4, 6, 8), np.float64)), ValueError, ["out"]),
]


@pytest.mark.parametrize("changes,exc,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input(rng, changes, exc, words):
    kwargs = dict(x=make(rng, (4, 6, 8), np.float32), normalized_shape=8)
    kwargs.update(changes)
    x = kwargs.pop("x")
    ns = kwargs.pop("normalized_shape")
    with pytest.raises(exc) as info:
        fastbn.layer_norm(x, ns, **kwargs)
    for word in words:
        assert word in str(info.value)
    if "bias" not in kwargs:
        with pytest.raises(exc):
            fastbn.rms_norm(x, ns, **kwargs)


def test_bad_backward_input(rng):
    x = make(rng, (4, 8), np.float32)
    _, mean, rstd = fastbn.layer_norm(x, 8)
    with pytest.raises(ValueError, match="mean"):
        fastbn.layer_norm_backward(x, x, 8, mean[:3], rstd)
    with pytest.raises(ValueError, match="dy"):
        fastbn.layer_norm_backward(x[:3], x, 8, mean, rstd)
    with pytest.raises(TypeError, match="dy"):
        fastbn.rms_norm_backward(x.astype(np.float64), x, 8, rstd)
    with pytest.raises(ValueError, match="rstd"):
        fastbn.rms_norm_backward(x, x, 8, rstd[:, None])
