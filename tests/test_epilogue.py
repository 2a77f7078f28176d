"""Batch norm's fused epilogue: y = act(bn(x) + residual), and its backward."""

import numpy as np
import pytest
from _helpers import assert_close, make

import fastbn
from fastbn import reference


def _ref_forward(x, w, b, res, relu, axis, training=True, rm=None, rv=None):
    if training:
        z = reference.batch_norm_train(x, w, b, axis=axis)[0]
    else:
        z = reference.batch_norm_inference(x, rm, rv, w, b, axis=axis)
    if res is not None:
        z = z + res
    return np.maximum(z, 0) if relu else z


CASES = [((4, 3, 40), 1), ((5, 3, 4, 2), 1), ((6, 4), 1), ((3, 5, 2, 4), -1)]


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "none"])
@pytest.mark.parametrize("with_res", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape,axis", CASES, ids=str)
def test_epilogue(rng, kernel_config, shape, axis, dtype, with_res, relu):
    x = make(rng, shape, dtype, loc=1.0, scale=2.0)
    dy = make(rng, shape, dtype)
    res = make(rng, shape, dtype) if with_res else None
    c = shape[axis]
    w, b = rng.normal(1, 0.3, c), rng.normal(0, 0.3, c)
    act = "relu" if relu else None

    y, mean, rstd = fastbn.batch_norm(x, w, b, axis=axis, activation=act, residual=res)
    assert_close(y, _ref_forward(x, w, b, res, relu, axis), dtype)

    rm, rv = rng.normal(size=c), rng.uniform(0.5, 2, c)
    yi, _, _ = fastbn.batch_norm(x, w, b, rm, rv, training=False, axis=axis, activation=act,
                                 residual=res)
    assert_close(yi, _ref_forward(x, w, b, res, relu, axis, False, rm, rv), dtype)

    g = dy * (y > 0) if relu else dy
    sums = np.sqrt(x.size / c)
    for training in (True, False):
        dres = np.empty_like(x) if with_res else None
        dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd, w, training=training,
                                                axis=axis, activation=act, y=y,
                                                dresidual=dres)
        oracle = (reference.batch_norm_backward_train if training
                  else reference.batch_norm_backward_frozen)
        dx_ref, dw_ref, db_ref = oracle(g, x, mean, rstd, w, axis=axis)
        assert_close(dx, dx_ref, dtype, scale=4)
        assert_close(dw, dw_ref, dtype, scale=sums)
        assert_close(db, db_ref, dtype, scale=sums)
        if with_res:
            assert np.array_equal(dres, g.astype(dtype))


def test_float16_and_strided_dresidual(rng):
    x = make(rng, (4, 3, 6), np.float16)
    res = make(rng, (4, 3, 6), np.float16)
    y, mean, rstd = fastbn.batch_norm(x, activation="relu", residual=res)
    assert y.dtype == np.float16
    assert_close(y, _ref_forward(x, None, None, res, True, 1), np.float16)
    big = np.zeros((4, 3, 12), np.float16)
    dres = big[..., ::2]
    dy = np.ones_like(x)
    fastbn.batch_norm_backward(dy, x, mean, rstd, activation="relu", y=y, dresidual=dres)
    assert np.array_equal(dres, (y > 0).astype(np.float16))
    assert not big[..., 1::2].any()


def test_relu_keeps_nan_in_its_channel(rng):
    x = make(rng, (6, 3, 40), np.float32)
    x[2, 1, 5] = np.nan
    y, _, _ = fastbn.batch_norm(x, activation="relu")
    assert np.all(np.isnan(y[:, 1])) and np.all(np.isfinite(y[:, [0, 2]]))
    assert np.all(y[:, [0, 2]] >= 0)


def test_epilogue_errors(rng):
    x = make(rng, (4, 3, 5), np.float32)
    with pytest.raises(ValueError, match="activation"):
        fastbn.batch_norm(x, activation="gelu")
    with pytest.raises(ValueError, match="residual"):
        fastbn.batch_norm(x, residual=x[:2])
    with pytest.raises(TypeError, match="residual"):
        fastbn.batch_norm(x, residual=x.astype(np.float64))
    _, mean, rstd = fastbn.batch_norm(x)
    with pytest.raises(ValueError, match="needs y"):
        fastbn.batch_norm_backward(x, x, mean, rstd, activation="relu")
    with pytest.raises(ValueError, match="dresidual"):
        fastbn.batch_norm_backward(x, x, mean, rstd, dresidual=np.empty((4, 3, 4), np.float32))
