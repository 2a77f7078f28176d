"""Masked batch norm (Keras 3's ``mask=``): the functional API on the CPU."""

import numba
import numpy as np
import pytest
from _helpers import assert_close, make, numerical_grad

import fastbn
from fastbn import reference as R

# (shape, axis): both loop orders (row kernels for B >= 32, column kernels below),
# channels-last, 2-D (mask (N,)), ndim 2-5, odd sizes.
CASES = [((4, 6, 50), 1), ((4, 50, 6), -1), ((7, 5), 1), ((3, 4, 5, 6), 1),
         ((3, 5, 6, 4), -1), ((5, 3, 7), 1), ((2, 3, 2, 3, 5), 1), ((2, 33, 3), 1)]


def _mask(rng, x_shape, axis, p=0.7):
    ax = axis % len(x_shape)
    m = rng.random(x_shape[:ax] + x_shape[ax + 1:]) < p
    m.reshape(-1)[:2] = True  # at least 2 valid values
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape,axis", CASES, ids=str)
def test_matches_reference(rng, shape, axis, dtype, affine):
    x = make(rng, shape, dtype, loc=3, scale=2)
    dy = make(rng, shape, dtype)
    c = shape[axis]
    w = make(rng, c, dtype) if affine else None
    b = make(rng, c, dtype) if affine else None
    mask = _mask(rng, shape, axis)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    y, mean, rstd = fastbn.batch_norm(x, w, b, rm, rv, axis=axis, mask=mask)
    yr, mr, rr = R.batch_norm_train_masked(x, mask, w, b, axis=axis)
    assert y.dtype == x.dtype and y.shape == shape
    assert_close(y, yr, dtype)
    assert_close(mean, mr, dtype)
    assert_close(rstd, rr, dtype)
    erm, erv = R.update_running_stats_masked(np.zeros(c), np.ones(c), x, mask, axis=axis)
    assert_close(rm, erm, dtype)
    assert_close(rv, erv, dtype)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd, w, axis=axis, mask=mask)
    ex, ew, eb = R.batch_norm_backward_train_masked(dy, x, mask, mean, rstd, w, axis=axis)
    assert_close(dx, ex, dtype)
    assert_close(dw, ew, dtype, scale=10)
    assert_close(db, eb, dtype, scale=10)


@pytest.mark.parametrize("shape,axis", [((3, 4, 40), 1), ((6, 5, 4), -1)], ids=str)
def test_non_contiguous_views(rng, shape, axis):
    big = make(rng, tuple(2 * s for s in shape), np.float64)
    x = big[::2, ::2, ::2]
    dy = make(rng, tuple(2 * s for s in shape), np.float64)[1::2, ::2, 1::2]
    mask = _mask(rng, shape, axis)
    mbig = np.repeat(mask, 2, axis=-1)
    mview = mbig[:, ::2]  # a strided bool view
    y, mean, rstd = fastbn.batch_norm(x, axis=axis, mask=mview)
    yr, _, _ = R.batch_norm_train_masked(x, mask, axis=axis)
    assert_close(y, yr, np.float64)
    dx, _, _ = fastbn.batch_norm_backward(dy, x, mean, rstd, axis=axis, mask=mview)
    ex, _, _ = R.batch_norm_backward_train_masked(dy, x, mask, mean, rstd, axis=axis)
    assert_close(dx, ex, np.float64)


@pytest.mark.parametrize("shape,axis", [((3, 4, 40), 1), ((5, 6, 3), -1), ((9, 3), 1)],
                         ids=str)
def test_finite_differences(rng, shape, axis):
    x = make(rng, shape, np.float64)
    c = shape[axis]
    w, b = make(rng, c, np.float64), make(rng, c, np.float64)
    probe = make(rng, shape, np.float64)
    mask = _mask(rng, shape, axis, p=0.6)

    def loss():
        return float((fastbn.batch_norm(x, w, b, axis=axis, mask=mask)[0] * probe).sum())

    _, mean, rstd = fastbn.batch_norm(x, w, b, axis=axis, mask=mask)
    dx, dw, db = fastbn.batch_norm_backward(probe, x, mean, rstd, w, axis=axis, mask=mask)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-5, atol=1e-7)


def test_padded_positions_get_frozen_gradient(rng):
    x = make(rng, (4, 3, 40), np.float64)
    dy = make(rng, x.shape, np.float64)
    w = make(rng, 3, np.float64)
    mask = np.ones((4, 40), bool)
    mask[:, 30:] = False
    _, mean, rstd = fastbn.batch_norm(x, w, mask=mask)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd, w, mask=mask)
    np.testing.assert_allclose(dx[:, :, 30:], dy[:, :, 30:] * (w * rstd)[None, :, None],
                               rtol=1e-12)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2)), rtol=1e-12)


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = make(rng, (4, 5, 12), np.float64)
    dy = make(rng, x.shape, np.float64)
    w, b = make(rng, 5, np.float64), make(rng, 5, np.float64)
    mask = _mask(rng, (4, 5, 12), 1)
    y, mean, rstd = fastbn.batch_norm(x, w, b, mask=mask)
    # statistics: torch's batch norm on the valid positions gathered
    valid = torch.tensor(x.transpose(0, 2, 1)[mask])  # (mv, C)
    bn = torch.nn.BatchNorm1d(5, dtype=torch.float64)
    bn(valid)
    rm, rv = np.zeros(5), np.ones(5)
    fastbn.batch_norm(x, w, b, rm, rv, mask=mask)
    np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-12)
    # gradient: autograd of the masked definition
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    tm = torch.tensor(mask)[:, None, :].to(torch.float64)
    mv = tm.sum()
    mu = (tx * tm).sum(dim=(0, 2), keepdim=True) / mv
    var = (((tx - mu) ** 2) * tm).sum(dim=(0, 2), keepdim=True) / mv
    ty = (tx - mu) / torch.sqrt(var + 1e-5) * tw[None, :, None] + tb[None, :, None]
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    ty.backward(torch.tensor(dy))
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd, w, mask=mask)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape,axis", [((4, 6, 50), 1), ((4, 50, 6), -1)], ids=str)
def test_all_true_and_none_are_bitwise_unmasked(rng, shape, axis):
    x = make(rng, shape, np.float32, loc=2)
    dy = make(rng, shape, np.float32)
    ones = np.ones(shape[:axis % 3] + shape[axis % 3 + 1:], bool)
    base = fastbn.batch_norm(x, axis=axis)
    for m in (None, ones):
        for a, e in zip(fastbn.batch_norm(x, axis=axis, mask=m), base, strict=True):
            assert np.array_equal(a, e)
        gb = fastbn.batch_norm_backward(dy, x, base[1], base[2], axis=axis)
        for a, e in zip(fastbn.batch_norm_backward(dy, x, base[1], base[2], axis=axis, mask=m),
                        gb, strict=True):
            assert np.array_equal(a, e)


def test_inference_ignores_mask(rng):
    x = make(rng, (4, 3, 10), np.float32)
    rm, rv = make(rng, 3, np.float32), np.abs(make(rng, 3, np.float32)) + 0.5
    mask = np.zeros((4, 10), bool)  # no valid position: fine in inference
    a = fastbn.batch_norm(x, None, None, rm, rv, training=False, mask=mask)
    e = fastbn.batch_norm(x, None, None, rm, rv, training=False)
    for u, v in zip(a, e, strict=True):
        assert np.array_equal(u, v)
    dy = make(rng, x.shape, np.float32)
    for u, v in zip(fastbn.batch_norm_backward(dy, x, a[1], a[2], training=False, mask=mask),
                    fastbn.batch_norm_backward(dy, x, a[1], a[2], training=False), strict=True):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("shape,axis", [((64, 16, 300), 1), ((6000, 48), 1),
                                        ((40, 50, 40), -1)], ids=str)
def test_identical_for_any_thread_count(rng, shape, axis):
    x = make(rng, shape, np.float32, loc=5)
    dy = make(rng, shape, np.float32)
    mask = _mask(rng, shape, axis, p=0.8)
    results = []
    before = numba.get_num_threads()
    try:
        for n in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            y, mean, rstd = fastbn.batch_norm(x, axis=axis, mask=mask)
            results.append((y, mean, rstd, *fastbn.batch_norm_backward(
                dy, x, mean, rstd, axis=axis, mask=mask)))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)


def test_large_offset_and_constant_channel(rng):
    x = make(rng, (8, 2, 40), np.float32, loc=1e4)
    x[:, 1] = 7.0
    mask = _mask(rng, (8, 2, 40), 1)
    b = np.array([0.5, -1.5], np.float32)
    y, mean, rstd = fastbn.batch_norm(x, None, b, mask=mask)
    _, mr, rr = R.batch_norm_train_masked(x, mask, None, b)
    assert_close(mean, mr, np.float32, scale=1e3)
    np.testing.assert_allclose(rstd[0], rr[0], rtol=1e-4)
    assert np.all(y[:, 1] == b[1])


@pytest.mark.parametrize("axis", [1, -1])
def test_fused_epilogue(rng, axis):
    shape = (4, 6, 40) if axis == 1 else (4, 40, 6)
    x = make(rng, shape, np.float64)
    res = make(rng, shape, np.float64)
    dy = make(rng, shape, np.float64)
    mask = _mask(rng, shape, axis)
    y, mean, rstd = fastbn.batch_norm(x, axis=axis, mask=mask, activation="relu", residual=res)
    yr, _, _ = R.batch_norm_train_masked(x, mask, axis=axis)
    np.testing.assert_allclose(y, np.maximum(yr + res, 0), rtol=1e-12, atol=1e-12)
    dres = np.empty_like(x)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd, axis=axis, mask=mask,
                                            activation="relu", y=y, dresidual=dres)
    g = dy * (y > 0)
    np.testing.assert_array_equal(dres, g)
    ex, ew, eb = R.batch_norm_backward_train_masked(g, x, mask, mean, rstd, axis=axis)
    np.testing.assert_allclose(dx, ex, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, eb, rtol=1e-10, atol=1e-12)


def test_bad_masks_raise_and_change_nothing(rng):
    x = make(rng, (4, 3, 10), np.float32)
    rm, rv = make(rng, 3, np.float32), np.abs(make(rng, 3, np.float32)) + 0.5
    before = rm.copy(), rv.copy()
    with pytest.raises(ValueError, match=r"mask.*\(4, 10\).*\(4, 3\)"):
        fastbn.batch_norm(x, None, None, rm, rv, mask=np.ones((4, 3), bool))
    with pytest.raises(TypeError, match="mask.*dtype float64"):
        fastbn.batch_norm(x, None, None, rm, rv, mask=np.ones((4, 10)))
    one = np.zeros((4, 10), bool)
    one[2, 3] = True
    with pytest.raises(ValueError, match="more than 1 valid value"):
        fastbn.batch_norm(x, None, None, rm, rv, mask=one)
    with pytest.raises(ValueError, match="mask"):
        fastbn.batch_norm(x, None, None, rm, rv, training=False, mask=np.ones(10, bool))
    assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1])
    _, mean, rstd = fastbn.batch_norm(x)
    with pytest.raises(ValueError, match="mask"):
        fastbn.batch_norm_backward(x, x, mean, rstd, mask=np.ones((4, 3), bool))
    with pytest.raises(TypeError, match="mask"):
        fastbn.batch_norm_backward(x, x, mean, rstd, mask=np.ones((4, 10), np.int8))
    with pytest.raises(ValueError, match="more than 1 valid value"):
        fastbn.batch_norm_backward(x, x, mean, rstd, mask=one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_channels_last_forward(rng, monkeypatch, dtype):
    """The fused column forward (valid-row runs, one block of columns per task) on a
    small input, forced by the tunables, equals the oracle; also with the epilogue."""
    from fastbn import config

    monkeypatch.setattr(config, "SERIAL_MAX_ELEMENTS", 0)
    monkeypatch.setattr(config, "FUSED_MIN_CHANNELS", 1)
    monkeypatch.setattr(config, "FUSED_COLUMN_WIDTH", 3)
    shape = (5, 9, 7)  # (N, T, C): 7 channels in blocks of 3
    x = make(rng, shape, dtype, loc=1e3)
    res = make(rng, shape, dtype)
    mask = _mask(rng, shape, -1, p=0.6)
    mask[1] = False  # a sequence of padding only
    w, b = make(rng, 7, dtype), make(rng, 7, dtype)
    y, mean, rstd = fastbn.batch_norm(x, w, b, axis=-1, mask=mask)
    yr, mr, rr = R.batch_norm_train_masked(x, mask, w, b, axis=-1)
    assert_close(y, yr, dtype)
    assert_close(mean, mr, dtype, scale=1e3)
    assert_close(rstd, rr, dtype)
    y2, _, _ = fastbn.batch_norm(x, w, b, axis=-1, mask=mask, activation="relu", residual=res)
    assert_close(y2, np.maximum(yr + res, 0), dtype)
