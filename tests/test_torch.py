"""Agreement with PyTorch's batch norm and autograd (skipped without torch)."""

import numpy as np
import pytest
from _helpers import assert_close, make

import fastbn

torch = pytest.importorskip("torch")


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", [((8, 6), 1), ((4, 6, 10), 1), ((4, 6, 5, 7), 1),
                                        ((2, 6, 3, 4, 5), 1), ((4, 5, 7, 6), -1)], ids=str)
def test_matches_torch(rng, shape, axis, dtype, training):
    x = make(rng, shape, dtype, loc=2.0, scale=3.0)
    dy = make(rng, shape, dtype)
    c = shape[axis]
    w = make(rng, c, dtype, loc=1.0)
    b = make(rng, c, dtype)
    rm = make(rng, c, dtype)
    rv = rng.uniform(0.5, 2, c).astype(dtype)

    # torch wants channels on axis 1
    xt = _t(np.moveaxis(x, axis, 1)).requires_grad_()
    wt, bt = _t(w).requires_grad_(), _t(b).requires_grad_()
    rmt, rvt = _t(rm.copy()), _t(rv.copy())
    yt = torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training=training,
                                        momentum=0.1, eps=1e-5)
    yt.backward(_t(np.moveaxis(dy, axis, 1)))

    y, mean, rstd = fastbn.batch_norm(x, w, b, rm, rv, training=training, axis=axis)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd, w, training=training, axis=axis)

    assert_close(np.moveaxis(y, axis, 1), yt.detach().numpy(), dtype)
    assert_close(rm, rmt.numpy(), dtype)
    assert_close(rv, rvt.numpy(), dtype)
    sums = np.sqrt(x.size / c)
    assert_close(np.moveaxis(dx, axis, 1), xt.grad.numpy(), dtype, scale=4)
    assert_close(dw, wt.grad.numpy(), dtype, scale=sums)
    assert_close(db, bt.grad.numpy(), dtype, scale=sums)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,ns", [((8, 16), 16), ((4, 6, 10), (6, 10)), ((2, 3, 4, 40), 40)],
                         ids=str)
def test_layer_and_rms_norm_match_torch(rng, shape, ns, dtype):
    nshape = (ns,) if isinstance(ns, int) else ns
    x = make(rng, shape, dtype, loc=1.0, scale=2.0)
    dy = make(rng, shape, dtype)
    w = make(rng, nshape, dtype, loc=1.0)
    b = make(rng, nshape, dtype)
    sums = np.sqrt(x.size / np.prod(nshape))

    xt, wt, bt = _t(x).requires_grad_(), _t(w).requires_grad_(), _t(b).requires_grad_()
    torch.nn.functional.layer_norm(xt, nshape, wt, bt, eps=1e-5).backward(_t(dy))
    y, mean, rstd = fastbn.layer_norm(x, ns, w, b)
    dx, dw, db = fastbn.layer_norm_backward(dy, x, ns, mean, rstd, w)
    assert_close(y, torch.nn.functional.layer_norm(_t(x), nshape, _t(w), _t(b)).numpy(), dtype)
    assert_close(dx, xt.grad.numpy(), dtype, scale=4)
    assert_close(dw, wt.grad.numpy(), dtype, scale=sums)
    assert_close(db, bt.grad.numpy(), dtype, scale=sums)

    xt, wt = _t(x).requires_grad_(), _t(w).requires_grad_()
    yt = torch.nn.functional.rms_norm(xt, nshape, wt, eps=1e-6)
    yt.backward(_t(dy))
    y, rstd = fastbn.rms_norm(x, ns, w)
    dx, dw = fastbn.rms_norm_backward(dy, x, ns, rstd, w)
    assert_close(y, yt.detach().numpy(), dtype)
    assert_close(dx, xt.grad.numpy(), dtype, scale=4)
    assert_close(dw, wt.grad.numpy(), dtype, scale=sums)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,groups,axis", [((4, 6, 10), 3, 1), ((2, 8, 5, 7), 4, 1),
                                               ((2, 5, 7, 8), 2, -1), ((3, 6, 2, 3, 4), 6, 1)],
                         ids=str)
def test_group_norm_matches_torch(rng, shape, groups, axis, dtype):
    x = make(rng, shape, dtype, loc=-1.0, scale=3.0)
    dy = make(rng, shape, dtype)
    c = shape[axis]
    w = make(rng, c, dtype, loc=1.0)
    b = make(rng, c, dtype)
    xt = _t(np.moveaxis(x, axis, 1)).requires_grad_()
    wt, bt = _t(w).requires_grad_(), _t(b).requires_grad_()
    yt = torch.nn.functional.group_norm(xt, groups, wt, bt, eps=1e-5)
    yt.backward(_t(np.moveaxis(dy, axis, 1)))

    y, mean, rstd = fastbn.group_norm(x, groups, w, b, axis=axis)
    dx, dw, db = fastbn.group_norm_backward(dy, x, groups, mean, rstd, w, axis=axis)
    sums = np.sqrt(x.size / c)
    assert_close(np.moveaxis(y, axis, 1), yt.detach().numpy(), dtype)
    assert_close(np.moveaxis(dx, axis, 1), xt.grad.numpy(), dtype, scale=4)
    assert_close(dw, wt.grad.numpy(), dtype, scale=sums)
    assert_close(db, bt.grad.numpy(), dtype, scale=sums)
    if groups == c:
        yi = torch.nn.functional.instance_norm(_t(np.moveaxis(x, axis, 1)), weight=_t(w),
                                               bias=_t(b), eps=1e-5)
        assert_close(np.moveaxis(fastbn.instance_norm(x, w, b, axis=axis)[0], axis, 1),
                     yi.numpy(), dtype)
