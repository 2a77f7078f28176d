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
