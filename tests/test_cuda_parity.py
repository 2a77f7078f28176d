"""GPU parity with the CPU on the device (issue 9, item 2): device moments and their
merge, strided device input and output, empty batches, float16 companions.

Each case runs the same call on NumPy arrays (the CPU backend) and compares.
Runs on the CUDA simulator with small blocks (see tests/test_cuda.py).
"""

import numpy as np
import pytest
from _cuda import TPB, d, h, small_blocks  # noqa: F401  (autouse fixture)
from _helpers import assert_close
from numba import cuda

import fastbn
from fastbn._checks import is_cuda_array  # noqa: E402


def strided(a, kind):
    """A non-C-contiguous device view holding ``a``'s values: 'sliced' (every other
    element of a wider array along the last axis) or 'transposed' (the last two
    axes of a contiguous array swapped)."""
    if kind == "sliced":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        v = cuda.to_device(wide)[..., ::2]
    else:
        axes = list(range(a.ndim))
        axes[-1], axes[-2] = axes[-2], axes[-1]
        v = cuda.to_device(np.ascontiguousarray(a.transpose(axes))).transpose(axes)
    assert not v.is_c_contiguous() and np.array_equal(v.copy_to_host(), a)
    return v


def close(got, want, dtype=np.float32):
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
            continue
        assert is_cuda_array(g)
        assert_close(h(g), np.asarray(w), dtype)


# --- moments ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axis", [((4, 3, 5), 1), ((7, 3), 1), ((3, 4, 3), -1),
                                        ((0, 3, 2), 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda t: np.dtype(t).name)
def test_moments_on_the_device(rng, shape, axis, dtype):
    """float64 results either way; the GPU sums float32 x in float32 per thread."""
    x = rng.normal(3, 2, shape).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    n, mean, m2 = fastbn.moments(d(x), axis)
    cn, cmean, cm2 = fastbn.moments(x, axis)
    assert isinstance(n, int) and n == cn
    assert is_cuda_array(mean) and mean.dtype == np.float64 and m2.dtype == np.float64
    np.testing.assert_allclose(h(mean), cmean, rtol=tol, atol=tol)
    np.testing.assert_allclose(h(m2), cm2, rtol=100 * tol, atol=100 * tol)


def test_merge_and_to_stats_on_the_device(rng):
    x = rng.normal(1, 2, (9, 4, 3))
    pa, pb = x[:4], x[4:]
    ga, gb = fastbn.moments(d(pa)), fastbn.moments(d(pb))
    ca, cb = fastbn.moments(pa), fastbn.moments(pb)
    merged = fastbn.merge_moments(ga, gb)
    want = fastbn.merge_moments(ca, cb)
    assert merged[0] == want[0] and all(is_cuda_array(a) for a in merged[1:])
    np.testing.assert_allclose(h(merged[1]), want[1], rtol=1e-13)
    np.testing.assert_allclose(h(merged[2]), want[2], rtol=1e-12)
    # the same as the whole array, and an empty part (host zeros or device) is allowed
    whole = fastbn.moments(x)
    np.testing.assert_allclose(h(merged[2]), whole[2], rtol=1e-12)
    for empty in ((0, np.zeros(4), np.zeros(4)), fastbn.moments(d(x[:0]))):
        for pair in ((empty, ga), (ga, empty)):
            got = fastbn.merge_moments(*pair)
            assert got[0] == ga[0] and is_cuda_array(got[1])
            np.testing.assert_array_equal(h(got[1]), h(ga[1]))
            np.testing.assert_array_equal(h(got[2]), h(ga[2]))
    stats = fastbn.moments_to_stats(*merged, eps=1e-3)
    cstats = fastbn.moments_to_stats(*want, eps=1e-3)
    for g, w in zip(stats, cstats, strict=True):
        assert is_cuda_array(g)
        np.testing.assert_allclose(h(g), w, rtol=1e-12)
    one = fastbn.moments_to_stats(1, d(np.ones(2)), d(np.zeros(2)))
    assert np.isnan(h(one[2])).all()
    with pytest.raises(ValueError, match="same shape"):
        fastbn.merge_moments(ga, (3, d(np.zeros(5)), d(np.zeros(5))))
    with pytest.raises(ValueError, match="count must be positive"):
        fastbn.moments_to_stats(0, merged[1], merged[2])


# --- strided input and output ----------------------------------------------------------

KINDS = ["sliced", "transposed"]


def _bn_case(rng, axis):
    shape = (4, 3, 6) if axis == 1 else (4, 6, 3)
    c = shape[axis]
    return (rng.normal(1, 2, shape).astype(np.float32), rng.normal(size=shape).astype(np.float32),
            rng.normal(1, .3, c).astype(np.float32), rng.normal(0, .3, c).astype(np.float32))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_strided(rng, kind, axis):
    x, dy, w, b = _bn_case(rng, axis)
    res = rng.normal(size=x.shape).astype(np.float32)
    c = x.shape[axis]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    crm, crv = rm.copy(), rv.copy()
    # strided parameters and running statistics too (every other element)
    d_rm, d_rv = (cuda.to_device(np.repeat(a, 2))[::2] for a in (rm, rv))
    got = fastbn.batch_norm(strided(x, kind), strided(w[None], "sliced")[0], d(b), d_rm, d_rv,
                            axis=axis, activation="relu", residual=strided(res, kind))
    want = fastbn.batch_norm(x, w, b, crm, crv, axis=axis, activation="relu", residual=res)
    close(got, want)
    assert_close(d_rm.copy_to_host(), crm, np.float32)
    assert_close(d_rv.copy_to_host(), crv, np.float32)
    y = want[0]
    dres = cuda.to_device(np.zeros(x.shape[:-1] + (2 * x.shape[-1],), np.float32))[..., ::2]
    got = fastbn.batch_norm_backward(strided(dy, kind), strided(x, kind), got[1], got[2],
                                     d(w), axis=axis, activation="relu", y=strided(y, kind),
                                     dresidual=dres)
    cdres = np.empty_like(x)
    want = fastbn.batch_norm_backward(dy, x, want[1], want[2], w, axis=axis,
                                      activation="relu", y=y, dresidual=cdres)
    close(got, want)
    assert_close(dres.copy_to_host(), cdres, np.float32)
    # eval, into a strided out
    out = strided(np.zeros_like(x), kind)
    got = fastbn.batch_norm(strided(x, kind), d(w), d(b), d(crm), d(crv), training=False,
                            axis=axis, out=out)
    want = fastbn.batch_norm(x, w, b, crm, crv, training=False, axis=axis)
    assert got[0] is out
    close(got, want)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("axis", [1, -1])
def test_group_norm_strided(rng, kind, axis):
    shape = (3, 4, 5) if axis == 1 else (3, 5, 4)
    x = rng.normal(1, 2, shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    w, b = rng.normal(1, .3, 4).astype(np.float32), rng.normal(0, .3, 4).astype(np.float32)
    out = strided(np.zeros_like(x), kind)
    got = fastbn.group_norm(strided(x, kind), 2, d(w), d(b), axis=axis, out=out)
    want = fastbn.group_norm(x, 2, w, b, axis=axis)
    assert got[0] is out
    close(got, want)
    got = fastbn.group_norm_backward(strided(dy, kind), strided(x, kind), 2, got[1], got[2],
                                     d(w), axis=axis)
    close(got, fastbn.group_norm_backward(dy, x, 2, want[1], want[2], w, axis=axis))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rms", [False, True], ids=["layer", "rms"])
def test_layer_norm_strided(rng, kind, rms):
    x = rng.normal(1, 2, (3, 4, 6)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    w, b = rng.normal(1, .3, (4, 6)).astype(np.float32), rng.normal(0, .3, (4, 6)).astype(
        np.float32)
    out = strided(np.zeros_like(x), kind)
    if rms:
        got = fastbn.rms_norm(strided(x, kind), (4, 6), strided(w, kind), out=out)
        want = fastbn.rms_norm(x, (4, 6), w)
        close(got, want)
        close(fastbn.rms_norm_backward(strided(dy, kind), strided(x, kind), (4, 6), got[1],
                                       strided(w, kind)),
              fastbn.rms_norm_backward(dy, x, (4, 6), want[1], w))
    else:
        got = fastbn.layer_norm(strided(x, kind), (4, 6), strided(w, kind), d(b), out=out)
        want = fastbn.layer_norm(x, (4, 6), w, b)
        close(got, want)
        close(fastbn.layer_norm_backward(strided(dy, kind), strided(x, kind), (4, 6), got[1],
                                         got[2], d(w)),
              fastbn.layer_norm_backward(dy, x, (4, 6), want[1], want[2], w))
    assert got[0] is out


def test_strided_out_overlapping_x(rng):
    """out a strided view of x's own memory: exact (x is gathered first)."""
    x = rng.normal(size=(4, 3, 6)).astype(np.float32)
    wide = np.zeros((4, 3, 12), np.float32)
    wide[..., ::2] = x
    d_wide = cuda.to_device(wide)
    view = d_wide[..., ::2]
    y, _, _ = fastbn.group_norm(view, 3, out=view)
    want, _, _ = fastbn.group_norm(x, 3)
    assert_close(d_wide.copy_to_host()[..., ::2], want, np.float32)
    assert (d_wide.copy_to_host()[..., 1::2] == 0).all()


# --- empty batches ---------------------------------------------------------------------


def _same_empty(got, want):
    for g, w in zip(got, want, strict=True):
        assert is_cuda_array(g) and tuple(g.shape) == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(h(g), w)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64],
                         ids=lambda t: np.dtype(t).name)
def test_empty_batches_match_the_cpu(dtype):
    x = np.zeros((0, 4, 3), dtype)
    w, b = np.ones(4, dtype), np.zeros(4, dtype)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    _same_empty(fastbn.batch_norm(d(x), d(w), d(b), d(rm), d(rv), training=False),
                fastbn.batch_norm(x, w, b, rm, rv, training=False))
    for xx in (x, np.zeros((0, 3, 4), dtype)):  # channels first / last
        axis = 1 if xx.shape[1] == 4 else -1
        mean, rstd = np.zeros(4, dtype), np.ones(4, dtype)
        _same_empty(fastbn.batch_norm_backward(d(xx), d(xx), d(mean), d(rstd), d(w), axis=axis),
                    fastbn.batch_norm_backward(xx, xx, mean, rstd, w, axis=axis))
        with pytest.raises(ValueError, match="more than 1 value"):
            fastbn.batch_norm(d(xx), axis=axis)
        gy = fastbn.group_norm(d(xx), 2, d(w), d(b), axis=axis)
        cy = fastbn.group_norm(xx, 2, w, b, axis=axis)
        assert [tuple(a.shape) for a in gy] == [a.shape for a in cy]
        assert [a.dtype for a in gy] == [a.dtype for a in cy]
        gm = np.zeros((0, 2), cy[1].dtype)
        _same_empty(fastbn.group_norm_backward(d(xx), d(xx), 2, d(gm), d(gm), d(w), axis=axis),
                    fastbn.group_norm_backward(xx, xx, 2, gm, gm, w, axis=axis))
        im = np.zeros((0, 4), cy[1].dtype)
        _same_empty(fastbn.instance_norm_backward(d(xx), d(xx), d(im), d(im), axis=axis),
                    fastbn.instance_norm_backward(xx, xx, im, im, axis=axis))
    with pytest.raises(ValueError, match="more than 1 value"):
        fastbn.group_norm(d(np.zeros((2, 4, 0), dtype)), 2)
    # layer / RMS norm: empty leading dims, and an empty normalized dim (NaN statistics)
    for xx, ns in ((np.zeros((0, 5), dtype), 5), (np.zeros((3, 0), dtype), 0)):
        _same_empty(fastbn.layer_norm(d(xx), ns), fastbn.layer_norm(xx, ns))
        got = fastbn.layer_norm(d(xx), ns)
        assert got[1] is not got[2]
        _same_empty(fastbn.rms_norm(d(xx), ns), fastbn.rms_norm(xx, ns))
        stat = fastbn.layer_norm(xx, ns)[1]
        _same_empty(fastbn.layer_norm_backward(d(xx), d(xx), ns, d(stat), d(stat)),
                    fastbn.layer_norm_backward(xx, xx, ns, stat, stat))
        _same_empty(fastbn.rms_norm_backward(d(xx), d(xx), ns, d(stat)),
                    fastbn.rms_norm_backward(xx, xx, ns, stat))


# --- float16 companions ----------------------------------------------------------------


@pytest.mark.parametrize("xdtype", [np.float32, np.float16], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("axis", [1, -1])
def test_float16_weight_and_running_stats(rng, xdtype, axis):
    x, dy, w, b = _bn_case(rng, axis)
    x, dy = x.astype(xdtype), dy.astype(xdtype)
    w, b = w.astype(np.float16), b.astype(np.float16)
    c = x.shape[axis]
    rm = rng.normal(size=c).astype(np.float16)
    rv = rng.uniform(.5, 2, c).astype(np.float16)
    crm, crv = rm.copy(), rv.copy()
    d_rm, d_rv = d(rm), d(rv)
    got = fastbn.batch_norm(d(x), d(w), d(b), d_rm, d_rv, axis=axis, momentum=0.3)
    want = fastbn.batch_norm(x, w, b, crm, crv, axis=axis, momentum=0.3)
    close(got, want, xdtype)
    # running statistics: bit-for-bit the CPU's float16 update (on the simulator)
    assert d_rm.dtype == np.float16 and d_rv.dtype == np.float16
    np.testing.assert_array_equal(d_rm.copy_to_host(), crm)
    np.testing.assert_array_equal(d_rv.copy_to_host(), crv)
    got_e = fastbn.batch_norm(d(x), d(w), d(b), d_rm, d_rv, training=False, axis=axis)
    want_e = fastbn.batch_norm(x, w, b, crm, crv, training=False, axis=axis)
    close(got_e, want_e, xdtype)
    np.testing.assert_array_equal(d_rm.copy_to_host(), crm)  # untouched in eval
    close(fastbn.batch_norm_backward(d(dy), d(x), got[1], got[2], d(w), axis=axis),
          fastbn.batch_norm_backward(dy, x, want[1], want[2], w, axis=axis), xdtype)
    # float16 saved statistics in the backward pass as well
    m16, r16 = want[1].astype(np.float16), want[2].astype(np.float16)
    close(fastbn.batch_norm_backward(d(dy), d(x), d(m16), d(r16), d(w), axis=axis),
          fastbn.batch_norm_backward(dy, x, m16, r16, w, axis=axis), xdtype)


def test_float16_params_group_and_layer_norm(rng):
    x = rng.normal(1, 2, (3, 4, 5)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    w, b = rng.normal(1, .3, 4).astype(np.float16), rng.normal(0, .3, 4).astype(np.float16)
    got = fastbn.group_norm(d(x), 2, d(w), d(b))
    want = fastbn.group_norm(x, 2, w, b)
    close(got, want)
    close(fastbn.group_norm_backward(d(dy), d(x), 2, got[1], got[2], d(w)),
          fastbn.group_norm_backward(dy, x, 2, want[1], want[2], w))
    lw, lb = rng.normal(1, .3, 5).astype(np.float16), rng.normal(0, .3, 5).astype(np.float16)
    got = fastbn.layer_norm(d(x), 5, d(lw), d(lb))
    want = fastbn.layer_norm(x, 5, lw, lb)
    close(got, want)
    close(fastbn.layer_norm_backward(d(dy), d(x), 5, got[1], got[2], d(lw)),
          fastbn.layer_norm_backward(dy, x, 5, want[1], want[2], lw))


def test_float16_running_stats_skip_non_finite_like_the_cpu(rng):
    x = rng.normal(size=(6, 3)).astype(np.float32)
    x[2, 1] = np.nan
    rm, rv = np.full(3, 0.5, np.float16), np.full(3, 2.0, np.float16)
    crm, crv = rm.copy(), rv.copy()
    d_rm, d_rv = d(rm), d(rv)
    with pytest.warns(RuntimeWarning):
        fastbn.batch_norm(d(x), None, None, d_rm, d_rv)
    with pytest.warns(RuntimeWarning):
        fastbn.batch_norm(x, None, None, crm, crv)
    np.testing.assert_array_equal(d_rm.copy_to_host(), crm)
    np.testing.assert_array_equal(d_rv.copy_to_host(), crv)


@pytest.mark.parametrize("kind", KINDS)
def test_moments_strided(rng, kind):
    x = rng.normal(2, 1, (5, 3, 4))
    for axis in (1, -1):
        n, mean, m2 = fastbn.moments(strided(x, kind), axis)
        cn, cmean, cm2 = fastbn.moments(x, axis)
        assert n == cn
        np.testing.assert_allclose(h(mean), cmean, rtol=1e-12)
        np.testing.assert_allclose(h(m2), cm2, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_float16_strided_in_and_out(rng, kind):
    x, dy, w, b = (a.astype(np.float16) for a in _bn_case(rng, 1))
    out = strided(np.zeros_like(x), kind)
    got = fastbn.batch_norm(strided(x, kind), strided(w[None], "sliced")[0], d(b), out=out)
    want = fastbn.batch_norm(x, w, b)
    assert got[0] is out
    close(got, want, np.float16)
    dres = strided(np.zeros_like(x), kind)
    got = fastbn.batch_norm_backward(strided(dy, kind), strided(x, kind), got[1], got[2],
                                     d(w), dresidual=dres)
    cdres = np.empty_like(x)
    close(got, fastbn.batch_norm_backward(dy, x, want[1], want[2], w, dresidual=cdres),
          np.float16)
    assert_close(dres.copy_to_host(), cdres, np.float16)
