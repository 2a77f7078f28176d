"""The NumPy network toolkit of fastbn.nn: layers, loss, optimizers, Sequential.

Gradients against central finite differences in float64; layers, loss and
optimizers against PyTorch where it is installed (those tests skip without it).
"""

import re
import warnings

import numpy as np
import pytest
from _helpers import assert_close, numerical_grad

from fastbn.nn._module import Module
from fastbn.nn.layers import (
    Conv1d,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from fastbn.nn.losses import SoftmaxCrossEntropy, accuracy
from fastbn.nn.optim import SGD, Adam
from fastbn.nn.sequential import Sequential

DTYPES = [np.float32, np.float64]
dtype_ids = lambda d: np.dtype(d).name  # noqa: E731

#: Analytic vs central-difference gradients (h = 1e-6, float64).
GRAD_TOL = dict(rtol=1e-6, atol=1e-8)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


class FakeNorm(Module):
    """A per-feature affine layer with batch-norm's parameters and buffers (and keys)."""

    def __init__(self, features, dtype=np.float32):
        super().__init__()
        self._add_param("weight", np.ones(features, dtype))
        self._add_param("bias", np.zeros(features, dtype))
        self.buffers["running_mean"] = np.zeros(features, dtype)
        self.buffers["running_var"] = np.ones(features, dtype)
        self.buffers["num_batches_tracked"] = np.zeros((), np.int64)

    def forward(self, x):
        self._x = x
        return x * self.params["weight"] + self.params["bias"]

    def backward(self, dy):
        self.grads["weight"][...] = (dy * self._x).sum(0)
        self.grads["bias"][...] = dy.sum(0)
        return dy * self.params["weight"]

    def output_shape(self, input_shape):
        return tuple(input_shape)


def check_grads(layer, x, rng):
    """dx and every parameter gradient of sum(layer(x) * R) against finite differences."""
    r = rng.normal(size=layer.forward(x).shape)

    def loss():
        return float(np.sum(layer.forward(x) * r))

    layer.forward(x)
    grads_before = {k: g for k, g in layer.grads.items()}
    dx = layer.backward(r)
    assert dx.shape == x.shape
    for name, g in layer.grads.items():
        assert g is grads_before[name]  # overwritten in place, not rebound
    np.testing.assert_allclose(dx, numerical_grad(loss, x), **GRAD_TOL)
    for name, p in layer.params.items():
        np.testing.assert_allclose(layer.grads[name], numerical_grad(loss, p), **GRAD_TOL,
                                   err_msg=name)


# ---------------------------------------------------------------------------
# Finite-difference gradients (float64)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_dense_grad(rng, use_bias):
    layer = Dense(5, 3, use_bias=use_bias, rng=rng, dtype=np.float64)
    if use_bias:
        layer.params["bias"][...] = rng.normal(size=3)
    assert ("bias" in layer.params) == ("bias" in layer.grads) == use_bias
    check_grads(layer, rng.normal(size=(4, 5)), rng)


CONV_CASES = [
    # (in, out, kernel, stride, padding, H, W)
    (3, 4, 3, 1, 0, 7, 6),
    (3, 4, 3, 1, 1, 7, 6),
    (2, 3, (3, 2), 2, 0, 7, 6),
    (2, 3, (2, 3), 2, 1, 7, 5),
    (2, 3, (3, 2), (1, 2), (1, 0), 6, 7),
    (2, 3, (3, 1), 1, (0, 2), 5, 3),
    (2, 2, 1, 1, 0, 3, 4),
    (1, 2, 5, 1, 0, 5, 5),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_grad(rng, case):
    cin, cout, k, s, p, h, w = case
    layer = Conv2d(cin, cout, k, stride=s, padding=p, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.normal(size=cout)
    check_grads(layer, rng.normal(size=(2, cin, h, w)), rng)


def test_conv2d_grad_nobias(rng):
    layer = Conv2d(2, 3, 3, padding=1, use_bias=False, rng=rng, dtype=np.float64)
    assert set(layer.params) == set(layer.grads) == {"weight"}
    check_grads(layer, rng.normal(size=(3, 2, 4, 5)), rng)


CONV1D_CASES = [
    # (in, out, kernel, stride, padding, L)
    (3, 4, 3, 1, 0, 9),
    (3, 4, 3, 1, 1, 9),
    (2, 3, 3, 2, 0, 9),
    (2, 3, 4, 2, 1, 8),
    (2, 3, 2, 3, 2, 7),
    (2, 2, 1, 1, 0, 4),
    (1, 2, 5, 1, 0, 5),
    (2, 3, 5, 1, 2, 1),
]


@pytest.mark.parametrize("case", CONV1D_CASES, ids=str)
def test_conv1d_grad(rng, case):
    cin, cout, k, s, p, length = case
    layer = Conv1d(cin, cout, k, stride=s, padding=p, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.normal(size=cout)
    check_grads(layer, rng.normal(size=(2, cin, length)), rng)


def test_conv1d_grad_nobias(rng):
    layer = Conv1d(2, 3, 3, padding=1, use_bias=False, rng=rng, dtype=np.float64)
    assert set(layer.params) == set(layer.grads) == {"weight"}
    check_grads(layer, rng.normal(size=(3, 2, 6)), rng)


def test_sigmoid_grad(rng):
    x = rng.normal(size=(4, 6)) * 3
    x[0, :3] = [-30.0, 25.0, 0.0]
    layer = Sigmoid()
    np.testing.assert_allclose(layer(x), 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)
    check_grads(layer, x, rng)


def test_tanh_grad(rng):
    x = rng.normal(size=(3, 2, 5)) * 2
    layer = Tanh()
    np.testing.assert_array_equal(layer(x), np.tanh(x))
    check_grads(layer, x, rng)


@pytest.mark.parametrize("kernel,stride,hw", [(2, None, (6, 4)), (2, None, (7, 5)),
                                              ((3, 2), (2, 1), (7, 5)), (3, 1, (5, 5))],
                         ids=str)
def test_maxpool_grad(rng, kernel, stride, hw):
    # distinct values 0.01 apart: no ties within h of each other
    x = rng.permutation(2 * 3 * hw[0] * hw[1]).reshape(2, 3, *hw) * 0.01
    check_grads(MaxPool2d(kernel, stride), x, rng)


def test_global_avg_pool_grad(rng):
    layer = GlobalAvgPool2d()
    x = rng.normal(size=(2, 3, 4, 5))
    np.testing.assert_allclose(layer(x), x.mean(axis=(2, 3)))
    check_grads(layer, x, rng)


def test_flatten_grad(rng):
    layer = Flatten()
    x = rng.normal(size=(2, 3, 2, 2))
    assert layer(x).shape == (2, 12)
    check_grads(layer, x, rng)


def test_relu_grad(rng):
    x = rng.normal(size=(4, 6))
    x[np.abs(x) < 0.1] = 0.5  # away from the kink
    layer = ReLU()
    np.testing.assert_array_equal(layer(x), np.maximum(x, 0))
    check_grads(layer, x, rng)


def test_dropout_grad(rng):
    x = rng.normal(size=(5, 7))
    r = rng.normal(size=x.shape)

    def loss():  # a fresh layer with the same seed draws the same mask
        return float(np.sum(Dropout(0.3, rng=7).forward(x) * r))

    layer = Dropout(0.3, rng=7)
    y = layer(x)
    dx = layer.backward(r)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), **GRAD_TOL)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    np.testing.assert_allclose(dx, np.where(kept, r / 0.7, 0))


def test_cross_entropy_grad(rng):
    logits = rng.normal(size=(5, 4)) * 2
    labels = np.array([0, 3, 1, 1, 2])
    crit = SoftmaxCrossEntropy()
    crit(logits, labels)
    g = crit.backward()
    np.testing.assert_allclose(g, numerical_grad(lambda: crit.forward(logits, labels), logits),
                               **GRAD_TOL)


def test_sequential_grad(rng):
    model = Sequential(Dense(4, 6, rng=rng, dtype=np.float64), ReLU(),
                       Dense(6, 3, rng=rng, dtype=np.float64))
    x = rng.normal(size=(5, 4))
    r = rng.normal(size=(5, 3))

    def loss():
        return float(np.sum(model(x) * r))

    model(x)
    dx = model.backward(r)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), **GRAD_TOL)
    for layer in (model[0], model[2]):
        for name, p in layer.params.items():
            np.testing.assert_allclose(layer.grads[name], numerical_grad(loss, p), **GRAD_TOL)


# ---------------------------------------------------------------------------
# Forward values and layer behaviour
# ---------------------------------------------------------------------------
def test_dense_forward(rng):
    layer = Dense(4, 3, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = [1.0, -2.0, 0.5]
    x = rng.normal(size=(2, 4))
    np.testing.assert_allclose(layer(x), x @ layer.params["weight"].T + [1.0, -2.0, 0.5])
    assert layer.params["weight"].shape == (3, 4)
    assert layer.output_shape((None, 4)) == (None, 3)


def test_conv2d_forward_direct(rng):
    """A direct six-loop convolution, independent of torch."""
    layer = Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.normal(size=3)
    x = rng.normal(size=(2, 2, 5, 4))
    w, b = layer.params["weight"], layer.params["bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    ho, wo = (5 + 2 - 3) // 2 + 1, 4 - 2 + 1
    ref = np.empty((2, 3, ho, wo))
    for n in range(2):
        for o in range(3):
            for i in range(ho):
                for j in range(wo):
                    ref[n, o, i, j] = b[o] + np.sum(w[o] * xp[n, :, 2 * i:2 * i + 3, j:j + 2])
    y = layer(x)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert y.flags.c_contiguous
    assert layer.output_shape((None, 2, 5, 4)) == (None, 3, ho, wo)
    # any input strides give the same result
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    np.testing.assert_allclose(layer(xt), ref, rtol=1e-12, atol=1e-12)


def test_conv1d_forward_direct(rng):
    """A direct four-loop convolution, independent of torch."""
    layer = Conv1d(2, 3, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.normal(size=3)
    x = rng.normal(size=(2, 2, 8))
    w, b = layer.params["weight"], layer.params["bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    lo = (8 + 2 - 3) // 2 + 1
    ref = np.empty((2, 3, lo))
    for n in range(2):
        for o in range(3):
            for i in range(lo):
                ref[n, o, i] = b[o] + np.sum(w[o] * xp[n, :, 2 * i:2 * i + 3])
    y = layer(x)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert y.flags.c_contiguous
    assert layer.params["weight"].shape == (3, 2, 3) and layer.params["bias"].shape == (3,)
    assert layer.output_shape((None, 2, 8)) == (None, 3, lo)
    # any input strides give the same result
    xt = np.ascontiguousarray(x.transpose(2, 1, 0)).transpose(2, 1, 0)
    np.testing.assert_allclose(layer(xt), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer(x[:, :, ::-1].copy()[:, :, ::-1]), ref, rtol=1e-12,
                               atol=1e-12)
    # torch's 1-tuple forms; an empty batch
    conv = Conv1d(2, 3, (3,), stride=(2,), padding=(1,), dtype=np.float64)
    assert (conv.kernel_size, conv.stride, conv.padding) == (3, 2, 1)
    assert layer(np.zeros((0, 2, 8))).shape == (0, 3, lo)
    assert layer.backward(np.zeros((0, 3, lo))).shape == (0, 2, 8)
    assert repr(Conv1d(2, 3, 3, use_bias=False)) == (
        "Conv1d(2, 3, kernel_size=3, stride=1, padding=0, bias=False)")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=dtype_ids)
def test_sigmoid_tanh_stable_and_keep_dtype(dtype):
    x = np.array([-1e4, -800.0, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 800.0, 1e4,
                  np.inf, -np.inf]).astype(dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        sig, tanh = Sigmoid(), Tanh()
        ys, yt = sig(x), tanh(x)
        dxs = sig.backward(np.ones_like(x))
        dxt = tanh.backward(np.ones_like(x))
    for a in (ys, yt, dxs, dxt):
        assert a.dtype == dtype and a.shape == x.shape
        assert not np.any(np.isnan(a))
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # the textbook forms, in float64
        ref = np.where(x64 >= 0, 1 / (1 + np.exp(-x64)), np.exp(x64) / (1 + np.exp(x64)))
        dref = np.exp(-np.abs(x64)) / (1 + np.exp(-np.abs(x64))) ** 2
    tol = dict(rtol={np.float16: 1e-3}.get(dtype, 10 * np.finfo(dtype).eps),
               atol=np.finfo(dtype).tiny)  # below tiny: subnormals, flushed or not
    np.testing.assert_allclose(ys, ref.astype(dtype), **tol)
    np.testing.assert_allclose(dxs, dref.astype(dtype), **tol)  # accurate where ys rounds to 1
    assert ys[0] == 0 and ys[10] == 1 and ys[5] == 0.5
    assert yt[0] == -1 and yt[10] == 1 and yt[5] == 0 and dxt[5] == 1
    assert dxs[0] == dxt[0] == dxs[-1] == dxt[-1] == 0


def test_sigmoid_tanh_backward_uses_the_saved_forward(rng):
    x = rng.normal(size=(5, 4))
    for layer, d in [(Sigmoid(), lambda y: y * (1 - y)), (Tanh(), lambda y: 1 - y * y)]:
        y = layer(x)
        expected = d(y.copy())
        y[...] = 0  # the caller changing the returned output does not change the gradient
        layer.forward(rng.normal(size=(2, 2)))  # ... a new forward does
        assert layer.backward(np.ones((2, 2))).shape == (2, 2)
        layer.forward(x)
        np.testing.assert_allclose(layer.backward(np.ones_like(x)), expected, rtol=1e-12)
        assert layer.params == layer.grads == layer.buffers == {}
        assert layer.num_params() == (0, 0) and layer.state_dict() == {}
        assert layer.output_shape((None, 3, 7)) == (None, 3, 7)
    # non-float input is computed in float64
    assert Sigmoid()(np.arange(-2, 3)).dtype == Tanh()(np.arange(3)).dtype == np.float64
    np.testing.assert_allclose(Sigmoid()(np.array([0, 0])), [0.5, 0.5])


def test_maxpool_forward_and_ties(rng):
    x = np.arange(2 * 16, dtype=np.float64).reshape(1, 2, 4, 4)
    y = MaxPool2d(2)(x)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    # ties: the whole window's gradient goes to one element, the first maximum
    pool = MaxPool2d(2)
    pool(np.ones((1, 1, 2, 4)))
    dx = pool.backward(np.array([[[[3.0, 4.0]]]]))
    np.testing.assert_array_equal(dx, [[[[3, 0, 4, 0], [0, 0, 0, 0]]]])
    # floor output size; rows/cols past the last window get no gradient
    pool = MaxPool2d(2)
    assert pool(rng.normal(size=(1, 1, 5, 3))).shape == (1, 1, 2, 1)
    assert np.all(pool.backward(np.ones((1, 1, 2, 1)))[:, :, 4, :] == 0)
    assert MaxPool2d(3, 2).output_shape((None, 4, 7, 8)) == (None, 4, 3, 3)


def test_relu_and_dropout_modes(rng):
    x = rng.normal(size=(64, 64)).astype(np.float32)
    drop = Dropout(0.25, rng=0)
    y = drop(x)
    assert y.dtype == np.float32
    assert abs(np.mean(y == 0) - 0.25) < 0.02
    y2 = drop(x)
    assert not np.array_equal(y, y2)  # a fresh mask each forward
    drop.eval()
    assert drop(x) is x
    dy = rng.normal(size=x.shape).astype(np.float32)
    assert drop.backward(dy) is dy
    drop.train()
    assert drop.training
    np.testing.assert_array_equal(Dropout(0.0)(x), x)
    relu = ReLU()
    relu(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(relu.backward(np.ones(3)), [0, 0, 1])


def test_cross_entropy_values(rng):
    logits = rng.normal(size=(6, 5))
    labels = rng.integers(0, 5, 6)
    crit = SoftmaxCrossEntropy()
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = -np.mean(np.log(p[np.arange(6), labels]))
    assert crit(logits, labels) == pytest.approx(ref, rel=1e-12)
    onehot = np.eye(5)[labels]
    np.testing.assert_allclose(crit.backward(), (p - onehot) / 6, rtol=1e-12, atol=1e-15)
    # stable for huge logits
    big = SoftmaxCrossEntropy()(logits + 1e4, labels)
    assert big == pytest.approx(ref, rel=1e-6)
    assert np.isfinite(SoftmaxCrossEntropy()(np.array([[1e4, -1e4]]), np.array([1])))
    # float32 in, float32 gradient out
    crit32 = SoftmaxCrossEntropy()
    loss32 = crit32(logits.astype(np.float32), labels)
    assert isinstance(loss32, float) and loss32 == pytest.approx(ref, rel=1e-5)
    assert crit32.backward().dtype == np.float32


def test_accuracy():
    logits = np.array([[0.1, 0.9], [2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert accuracy(logits, np.array([1, 0, 0, 1])) == 0.5
    assert isinstance(accuracy(logits, np.array([1, 0, 1, 0])), float)


# ---------------------------------------------------------------------------
# Initialization
# ---------------------------------------------------------------------------
def test_he_init_statistics():
    w = Dense(1000, 500, rng=0).params["weight"]
    assert w.dtype == np.float32 and w.shape == (500, 1000)
    assert abs(w.std() / np.sqrt(2 / 1000) - 1) < 0.03
    assert abs(w.mean()) < 0.01 * np.sqrt(2 / 1000)
    w = Conv2d(16, 64, 3, rng=1).params["weight"]  # fan_in = 16 * 3 * 3
    assert abs(w.std() / np.sqrt(2 / 144) - 1) < 0.03
    w = Conv1d(16, 64, 9, rng=1).params["weight"]  # fan_in = 16 * 9
    assert w.dtype == np.float32 and w.shape == (64, 16, 9)
    assert abs(w.std() / np.sqrt(2 / 144) - 1) < 0.03
    assert np.all(Conv1d(2, 3, 3, rng=0).params["bias"] == 0)
    w = Dense(1000, 500, scale=0.5, rng=0).params["weight"]
    assert abs(w.std() / (0.5 * np.sqrt(2 / 1000)) - 1) < 0.03
    assert np.all(Dense(10, 7, rng=0).params["bias"] == 0)


def test_glorot_init_statistics():
    limit = np.sqrt(6 / (300 + 200))
    w = Dense(300, 200, init="glorot", rng=0, dtype=np.float64).params["weight"]
    assert w.dtype == np.float64
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert abs(w.std() / (limit / np.sqrt(3)) - 1) < 0.03
    w = Conv2d(8, 16, (3, 2), init="glorot", rng=0).params["weight"]
    assert np.abs(w).max() <= np.sqrt(6 / (8 * 6 + 16 * 6))
    w = Conv1d(8, 16, 5, init="glorot", scale=0.5, rng=0, dtype=np.float64).params["weight"]
    limit = 0.5 * np.sqrt(6 / (8 * 5 + 16 * 5))
    assert w.dtype == np.float64
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    np.testing.assert_array_equal(Conv1d(2, 3, 3, rng=5).params["weight"],
                                  Conv1d(2, 3, 3, rng=np.random.default_rng(5)).params["weight"])


def test_init_rng_forms():
    a = Dense(6, 4, rng=3).params["weight"]
    b = Dense(6, 4, rng=np.random.default_rng(3)).params["weight"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, Dense(6, 4, rng=4).params["weight"])
    assert Dense(6, 4).params["weight"].shape == (4, 6)  # rng=None


def test_unknown_init_raises():
    with pytest.raises(ValueError, match="init"):
        Dense(4, 3, init="unknown")
    with pytest.raises(ValueError, match="init"):
        Conv2d(4, 3, 3, init="xavier")
    with pytest.raises(TypeError, match="dtype"):
        Dense(4, 3, dtype=np.int32)
    with pytest.raises(ValueError, match="init"):
        Conv1d(4, 3, 3, init="xavier")
    with pytest.raises(TypeError, match="dtype"):
        Conv1d(4, 3, 3, dtype=np.float16)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
def test_bad_shapes_raise(rng):
    dense = Dense(4, 3)
    with pytest.raises(ValueError, match=re.escape("(2, 5)")):
        dense(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError):
        dense(np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        dense.output_shape((None, 5))
    with pytest.raises(RuntimeError):
        Dense(4, 3).backward(np.zeros((2, 3)))
    dense(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="dy"):
        dense.backward(np.zeros((2, 4), np.float32))

    conv = Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=re.escape("(2, 2, 5, 5)")):
        conv(np.zeros((2, 2, 5, 5)))
    with pytest.raises(ValueError):
        conv(np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        conv(np.zeros((1, 3, 2, 5)))
    for bad in [0, (1, 2, 3), (2, 0), 1.5, True]:
        with pytest.raises(ValueError, match="kernel_size"):
            Conv2d(3, 4, bad)
    with pytest.raises(ValueError, match="padding"):
        Conv2d(3, 4, 3, padding=-1)
    with pytest.raises(ValueError, match="stride"):
        Conv2d(3, 4, 3, stride=0)

    conv1 = Conv1d(3, 4, 3)
    with pytest.raises(ValueError, match=r"Conv1d: .*\(N, 3, L\).*" + re.escape("(2, 2, 5)")):
        conv1(np.zeros((2, 2, 5)))  # wrong channel count
    for shape in [(3, 5), (2, 3, 5, 5), (3,)]:  # wrong ndim
        with pytest.raises(ValueError, match="Conv1d: .*" + re.escape(str(shape))):
            conv1(np.zeros(shape))
    with pytest.raises(ValueError, match="Conv1d: .*shorter than the kernel"):
        conv1(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="Conv1d"):
        conv1.output_shape((None, 4, 8))
    with pytest.raises(ValueError, match="Conv1d"):
        Conv1d(0, 4, 3)
    with pytest.raises(RuntimeError, match="Conv1d"):
        Conv1d(3, 4, 3).backward(np.zeros((1, 4, 3)))
    conv1(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"Conv1d\.backward: .*\(2, 4, 3\).*\(2, 4, 4\)"):
        conv1.backward(np.zeros((2, 4, 4), np.float32))
    for bad in [0, (3, 3), (2, 0), 1.5, True, (True,)]:
        with pytest.raises(ValueError, match="kernel_size"):
            Conv1d(3, 4, bad)
    with pytest.raises(ValueError, match="padding"):
        Conv1d(3, 4, 3, padding=-1)
    with pytest.raises(ValueError, match="stride"):
        Conv1d(3, 4, 3, stride=0)
    for act in (Sigmoid(), Tanh()):
        name = type(act).__name__
        with pytest.raises(RuntimeError, match=name):
            act.backward(np.zeros(3))
        act(np.zeros((2, 3)))
        with pytest.raises(ValueError, match=name + r"\.backward: .*\(2, 3\)"):
            act.backward(np.zeros((3, 2)))

    with pytest.raises(ValueError, match="smaller than the kernel"):
        MaxPool2d(3)(np.zeros((1, 1, 2, 4)))
    with pytest.raises(ValueError):
        MaxPool2d(2)(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError):
        GlobalAvgPool2d()(np.zeros((2, 3)))
    for p in [1.0, -0.1, 1.5]:
        with pytest.raises(ValueError, match="p must be"):
            Dropout(p)


def test_cross_entropy_bad_input():
    crit = SoftmaxCrossEntropy()
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match="shape"):
        crit(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        crit(logits, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match="integer"):
        crit(logits, np.array([0.0, 1.0, 2.0]))
    for bad in ([0, 1, 4], [0, -1, 2]):
        with pytest.raises(ValueError, match=re.escape("[0, 4)")):
            crit(logits, np.array(bad))
    with pytest.raises(ValueError):
        crit(np.zeros(4), np.array([0]))
    with pytest.raises(RuntimeError):
        SoftmaxCrossEntropy().backward()


# ---------------------------------------------------------------------------
# float32 end to end
# ---------------------------------------------------------------------------
def _cnn(rng, dtype=np.float32):
    return Sequential(
        Conv2d(1, 4, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),
        Conv2d(4, 6, (3, 2), stride=(2, 1), rng=rng, dtype=dtype), ReLU(),
        GlobalAvgPool2d(), Dropout(0.2, rng=rng),
        Dense(6, 8, rng=rng, dtype=dtype), ReLU(), Flatten(),
        Dense(8, 3, init="glorot", rng=rng, dtype=dtype))


@pytest.mark.parametrize("opt_cls", [SGD, Adam], ids=["SGD", "Adam"])
def test_float32_stays_float32(rng, opt_cls):
    model = _cnn(rng)
    x = rng.normal(size=(5, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 5)
    h = x
    for layer in model:
        h = layer(h)
        assert h.dtype == np.float32, type(layer).__name__
    crit = SoftmaxCrossEntropy()
    kwargs = dict(momentum=0.9, weight_decay=1e-3) if opt_cls is SGD else dict(weight_decay=1e-3)
    opt = opt_cls(model, 1e-2, **kwargs)
    params = {(id(m), k): p for m in model.modules() for k, p in m.params.items()}
    losses = []
    for _ in range(3):
        losses.append(crit(model(x), labels))
        dlogits = crit.backward()
        assert dlogits.dtype == np.float32
        dx = model.backward(dlogits)
        assert dx.dtype == np.float32 and dx.shape == x.shape
        for m in model.modules():
            for k, g in m.grads.items():
                assert g.dtype == np.float32, (type(m).__name__, k)
        opt.step()
    for m in model.modules():
        for k, p in m.params.items():
            assert p.dtype == np.float32
            assert params[(id(m), k)] is p  # updated in place
    for state in opt.state.values():
        for v in state.values():
            assert not isinstance(v, np.ndarray) or v.dtype == np.float32


def test_conv1d_float32_stays_float32(rng):
    model = Sequential(Conv1d(2, 4, 3, padding=1, rng=rng), Tanh(),
                       Conv1d(4, 3, 2, stride=2, use_bias=False, rng=rng), Sigmoid(),
                       Flatten(), Dense(12, 2, rng=rng))
    x = rng.normal(size=(5, 2, 8)).astype(np.float32)
    h = x
    for layer in model:
        h = layer(h)
        assert h.dtype == np.float32, type(layer).__name__
    dx = model.backward(np.ones_like(h))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    for m in model.modules():
        for k, g in m.grads.items():
            assert g.dtype == np.float32, (type(m).__name__, k)


def test_training_reduces_loss(rng):
    model = _cnn(rng)
    x = rng.normal(size=(16, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 16)
    crit = SoftmaxCrossEntropy()
    opt = Adam(model, 1e-2)
    first = crit(model.eval()(x), labels)
    model.train()
    for _ in range(60):
        crit(model(x), labels)
        model.backward(crit.backward())
        opt.step()
    assert crit(model.eval()(x), labels) < 0.7 * first


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------
def test_zero_grad_and_lr(rng):
    model = Sequential(Dense(3, 2, rng=rng), FakeNorm(2))
    for m in model.modules():
        for g in m.grads.values():
            g[...] = 1.0
    opt = SGD(model, 0.1)
    assert len(opt.slots) == 4
    opt.zero_grad()
    assert all(np.all(g == 0) for m in model.modules() for g in m.grads.values())
    w = model[0].params["weight"].copy()
    model[0].grads["weight"][...] = 1.0
    opt.lr = 0.5
    opt.step()
    np.testing.assert_allclose(model[0].params["weight"], w - 0.5, rtol=1e-6)
    with pytest.raises(ValueError):
        SGD(model, -1.0)
    with pytest.raises(ValueError):
        Adam(model, betas=(0.9, 1.0))


def _torch_pair(torch, model):
    """torch leaf tensors holding copies of every (module, name) parameter."""
    pairs = [(m, k) for m in model.modules() for k in m.params]
    tensors = [torch.tensor(m.params[k].copy(), requires_grad=True) for m, k in pairs]
    return pairs, tensors


OPT_CASES = [
    ("sgd", dict()),
    ("sgd", dict(momentum=0.9)),
    ("sgd", dict(momentum=0.8, weight_decay=0.05)),
    ("adam", dict()),
    ("adam", dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("name,kwargs", OPT_CASES,
                         ids=lambda c: c if isinstance(c, str) else
                         ",".join(f"{k}={v}" for k, v in c.items()) or "plain")
def test_optimizers_match_torch(torch, rng, name, kwargs, dtype):
    model = Sequential(Dense(4, 3, rng=rng, dtype=dtype), FakeNorm(3, dtype),
                       Dense(3, 2, use_bias=False, rng=rng, dtype=dtype))
    pairs, tensors = _torch_pair(torch, model)
    if name == "sgd":
        ours, theirs = SGD(model, 0.1, **kwargs), torch.optim.SGD(tensors, lr=0.1, **kwargs)
    else:
        ours, theirs = Adam(model, 0.01, **kwargs), torch.optim.Adam(tensors, lr=0.01, **kwargs)
    for step in range(6):
        if step == 3:  # a schedule changes the learning rate
            ours.lr = ours.lr * 0.3
            for group in theirs.param_groups:
                group["lr"] = group["lr"] * 0.3
        for (m, k), t in zip(pairs, tensors, strict=True):
            g = rng.normal(size=t.shape).astype(dtype)
            m.grads[k][...] = g
            t.grad = torch.tensor(g)
        ours.step()
        theirs.step()
    for (m, k), t in zip(pairs, tensors, strict=True):
        assert m.params[k].dtype == dtype
        assert_close(m.params[k], t.detach().numpy().astype(np.float64), dtype, scale=5)


# ---------------------------------------------------------------------------
# Against PyTorch: layers and loss
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("case", CONV_CASES[:6], ids=str)
def test_conv2d_matches_torch(torch, rng, case, dtype):
    cin, cout, k, s, p, h, w = case
    layer = Conv2d(cin, cout, k, stride=s, padding=p, rng=rng, dtype=dtype)
    layer.params["bias"][...] = rng.normal(size=cout)
    x = rng.normal(size=(3, cin, h, w)).astype(dtype)
    y = layer(x)
    dy = rng.normal(size=y.shape).astype(dtype)
    dx = layer.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=s, padding=p)
    yt.backward(torch.tensor(dy))
    assert y.dtype == dx.dtype == dtype
    assert_close(y, yt.detach().double().numpy(), dtype, scale=5)
    assert_close(dx, xt.grad.double().numpy(), dtype, scale=5)
    assert_close(layer.grads["weight"], wt.grad.double().numpy(), dtype, scale=20)
    assert_close(layer.grads["bias"], bt.grad.double().numpy(), dtype, scale=20)


def test_conv2d_state_dict_from_torch(torch, rng):
    tconv = torch.nn.Conv2d(2, 3, (3, 2), stride=2, padding=1).double()
    conv = Conv2d(2, 3, (3, 2), stride=2, padding=1, dtype=np.float64)
    conv.load_state_dict({k: v.detach().numpy() for k, v in tconv.state_dict().items()})
    x = rng.normal(size=(2, 2, 6, 5))
    np.testing.assert_allclose(conv(x), tconv(torch.tensor(x)).detach().numpy(), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("case", CONV1D_CASES, ids=str)
def test_conv1d_matches_torch(torch, rng, case, dtype):
    cin, cout, k, s, p, length = case
    layer = Conv1d(cin, cout, k, stride=s, padding=p, rng=rng, dtype=dtype)
    layer.params["bias"][...] = rng.normal(size=cout)
    x = rng.normal(size=(3, cin, length)).astype(dtype)
    y = layer(x)
    dy = rng.normal(size=y.shape).astype(dtype)
    dx = layer.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True)
    yt = torch.nn.functional.conv1d(xt, wt, bt, stride=s, padding=p)
    yt.backward(torch.tensor(dy))
    assert y.dtype == dx.dtype == dtype
    assert y.shape == tuple(yt.shape)
    assert_close(y, yt.detach().double().numpy(), dtype, scale=5)
    assert_close(dx, xt.grad.double().numpy(), dtype, scale=5)
    assert_close(layer.grads["weight"], wt.grad.double().numpy(), dtype, scale=20)
    assert_close(layer.grads["bias"], bt.grad.double().numpy(), dtype, scale=20)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_conv1d_state_dict_from_torch(torch, rng, use_bias):
    tconv = torch.nn.Conv1d(2, 3, 4, stride=2, padding=1, bias=use_bias).double()
    conv = Conv1d(2, 3, 4, stride=2, padding=1, use_bias=use_bias, dtype=np.float64)
    tstate = {k: v.detach().numpy() for k, v in tconv.state_dict().items()}
    assert list(conv.state_dict()) == list(tstate)
    conv.load_state_dict(tstate)
    x = rng.normal(size=(2, 2, 9))
    np.testing.assert_allclose(conv(x), tconv(torch.tensor(x)).detach().numpy(), rtol=1e-12,
                               atol=1e-12)
    # a Sequential of the new layers has torch.nn.Sequential's keys
    model = Sequential(Conv1d(2, 3, 3, rng=rng), Sigmoid(), Tanh(), Flatten(), Dense(9, 2))
    tmodel = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.Sigmoid(), torch.nn.Tanh(),
                                 torch.nn.Flatten(), torch.nn.Linear(9, 2))
    tstate = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    assert list(model.state_dict()) == list(tstate)
    model.load_state_dict(tstate)
    x = rng.normal(size=(4, 2, 5)).astype(np.float32)
    assert_close(model(x), tmodel(torch.tensor(x)).detach().double().numpy(), np.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("name", ["Sigmoid", "Tanh"])
def test_sigmoid_tanh_match_torch(torch, rng, name, dtype):
    x = (rng.normal(size=(4, 3, 5)) * 4).astype(dtype)
    x[0, 0, :4] = [-200.0, 200.0, 0.0, -0.0]
    layer = {"Sigmoid": Sigmoid, "Tanh": Tanh}[name]()
    y = layer(x)
    dy = rng.normal(size=x.shape).astype(dtype)
    dx = layer.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn, name)()(xt)
    yt.backward(torch.tensor(dy))
    assert y.dtype == dx.dtype == dtype
    assert_close(y, yt.detach().double().numpy(), dtype)
    assert_close(dx, xt.grad.double().numpy(), dtype)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_dense_matches_torch(torch, rng, dtype, use_bias):
    tlin = torch.nn.Linear(7, 5, bias=use_bias).to(getattr(torch, np.dtype(dtype).name))
    layer = Dense(7, 5, use_bias=use_bias, dtype=dtype)
    layer.load_state_dict({k: v.detach().numpy() for k, v in tlin.state_dict().items()})
    x = rng.normal(size=(4, 7)).astype(dtype)
    dy = rng.normal(size=(4, 5)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = tlin(xt)
    yt.backward(torch.tensor(dy))
    y = layer(x)
    dx = layer.backward(dy)
    assert y.dtype == dx.dtype == dtype
    assert_close(y, yt.detach().double().numpy(), dtype)
    assert_close(dx, xt.grad.double().numpy(), dtype)
    assert_close(layer.grads["weight"], tlin.weight.grad.double().numpy(), dtype)
    if use_bias:
        assert_close(layer.grads["bias"], tlin.bias.grad.double().numpy(), dtype)


@pytest.mark.parametrize("kernel,stride,ties", [(2, None, False), (2, None, True),
                                                (3, 2, False), (3, 2, True), ((2, 3), 1, True)],
                         ids=str)
def test_maxpool_matches_torch(torch, rng, kernel, stride, ties):
    if ties:  # few distinct values: many ties, overlapping windows share them
        x = rng.integers(0, 3, size=(2, 3, 7, 6)).astype(np.float32)
    else:
        x = rng.normal(size=(2, 3, 7, 6)).astype(np.float32)
    pool = MaxPool2d(kernel, stride)
    y = pool(x)
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx = pool.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, kernel, stride)
    yt.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_cross_entropy_matches_torch(torch, rng, dtype):
    logits = (rng.normal(size=(8, 5)) * 3).astype(dtype)
    labels = rng.integers(0, 5, 8)
    crit = SoftmaxCrossEntropy()
    loss = crit(logits, labels)
    lt = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(lt, torch.tensor(labels))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(crit.backward(), lt.grad.double().numpy(), dtype)


# ---------------------------------------------------------------------------
# Sequential
# ---------------------------------------------------------------------------
def _mlp(rng, dtype=np.float32):
    return Sequential(Dense(4, 3, rng=rng, dtype=dtype), FakeNorm(3, dtype), ReLU(),
                      Dense(3, 2, use_bias=False, rng=rng, dtype=dtype))


def test_sequential_chain(rng):
    model = _mlp(rng, np.float64)
    x = rng.normal(size=(5, 4))
    h = x
    for layer in model.layers:
        h = layer.forward(h)
    np.testing.assert_array_equal(model(x), h)
    dy = rng.normal(size=(5, 2))
    d = dy
    for layer in reversed(model.layers):
        d = layer.backward(d)
    np.testing.assert_array_equal(model.backward(dy), d)

    assert len(model) == 4
    assert isinstance(model[1], FakeNorm) and model[-1] is model.layers[3]
    assert list(model) == model.layers
    assert isinstance(model[1:3], Sequential) and model[1:3][0] is model[1]
    assert [type(m).__name__ for m in model.modules()] == [
        "Sequential", "Dense", "FakeNorm", "ReLU", "Dense"]
    assert model.params == model.grads == model.buffers == {}
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    assert model.output_shape((None, 4)) == (None, 2)
    assert model.num_params() == (4 * 3 + 3 + 3 + 3 + 3 * 2, 6)
    assert "(0): Dense(in_features=4" in repr(model)
    with pytest.raises(TypeError):
        Sequential(Dense(2, 2), "relu")


def test_sequential_state_dict_keys_match_torch(torch, rng):
    model = Sequential(_mlp(rng), Dense(2, 2, rng=rng))
    tmodel = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(),
                            torch.nn.Linear(3, 2, bias=False)),
        torch.nn.Linear(2, 2))
    tstate = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    assert list(model.state_dict()) == list(tstate)
    model.load_state_dict(tstate)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, tstate[key])


def test_sequential_state_dict_round_trip(rng):
    a, b = _mlp(np.random.default_rng(0)), _mlp(np.random.default_rng(1))
    a[1].buffers["running_mean"][...] = [1, 2, 3]
    a[1].buffers["num_batches_tracked"][...] = 7
    state = a.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                           "1.running_var", "1.num_batches_tracked", "3.weight"]
    state["0.weight"][...] = 99  # a copy: the model is untouched
    assert not np.any(a[0].params["weight"] == 99)
    state = a.state_dict()
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    assert not np.allclose(a(x), b(x))
    b.load_state_dict(state)
    np.testing.assert_array_equal(a(x), b(x))
    np.testing.assert_array_equal(b[1].buffers["running_mean"], [1, 2, 3])
    assert int(b[1].buffers["num_batches_tracked"]) == 7


def test_sequential_load_state_dict_all_or_nothing(rng):
    model = _mlp(np.random.default_rng(0))
    before = model.state_dict()
    good = {k: v + 1 for k, v in _mlp(np.random.default_rng(1)).state_dict().items()}

    def unchanged():
        after = model.state_dict()
        assert list(after) == list(before)
        for k in before:
            np.testing.assert_array_equal(after[k], before[k])

    missing = dict(good)
    del missing["3.weight"]
    with pytest.raises(KeyError, match="3.weight"):
        model.load_state_dict(missing)
    unchanged()
    extra = dict(good, **{"4.weight": np.zeros((2, 2))})
    with pytest.raises(KeyError, match="4.weight"):
        model.load_state_dict(extra)
    unchanged()
    wrong = dict(good, **{"3.weight": np.zeros((3, 2))})  # the last key: all others are valid
    with pytest.raises(ValueError, match="3.weight"):
        model.load_state_dict(wrong)
    unchanged()
    model.load_state_dict(good)
    np.testing.assert_array_equal(model[0].params["weight"], good["0.weight"])


def test_summary(capsys):
    model = Sequential(Dense(64, 256, use_bias=False, rng=0), FakeNorm(256), ReLU(),
                       Dense(256, 10, rng=0))
    lines = []
    text = model.summary((None, 64), print_fn=lines.append)
    assert text == "\n".join(lines)
    assert capsys.readouterr().out == ""
    rows = {line.split()[0]: line for line in lines if "(" in line and ")" in line}
    assert re.search(r"^dense \(Dense\)\s+\(None, 256\)\s+16384$", rows["dense"])
    assert re.search(r"^fake_norm \(FakeNorm\)\s+\(None, 256\)\s+1024$", rows["fake_norm"])
    assert re.search(r"^re_lu \(ReLU\)\s+\(None, 256\)\s+0$", rows["re_lu"])
    assert re.search(r"^dense_1 \(Dense\)\s+\(None, 10\)\s+2570$", rows["dense_1"])
    assert "Total params: 19978" in lines
    assert "Trainable params: 19466" in lines
    assert "Non-trainable params: 512" in lines
    assert text.index("dense (Dense)") < text.index("fake_norm") < text.index("dense_1")
    # the batch axis shows as None whatever it is given as; print_fn defaults to print
    text = Sequential(Dense(784, 128), FakeNorm(128)).summary((32, 784))
    out = capsys.readouterr().out
    assert out.strip() == text.strip()
    assert re.search(r"dense \(Dense\)\s+\(None, 128\)\s+100480", text)
    assert re.search(r"fake_norm \(FakeNorm\)\s+\(None, 128\)\s+512", text)
    assert model.summary((None, 64), print_fn=None) == "\n".join(lines)
    with pytest.raises(ValueError):
        model.summary((None, 63), print_fn=None)


def test_summary_cnn(rng):
    text = _cnn(rng).summary((None, 1, 8, 8), print_fn=None)
    assert re.search(r"conv2d \(Conv2d\)\s+\(None, 4, 8, 8\)\s+40\b", text)
    assert re.search(r"max_pool2d \(MaxPool2d\)\s+\(None, 4, 4, 4\)\s+0\b", text)
    assert re.search(r"conv2d_1 \(Conv2d\)\s+\(None, 6, 1, 3\)\s+150\b", text)
    assert re.search(r"global_avg_pool2d \(GlobalAvgPool2d\)\s+\(None, 6\)", text)
    assert re.search(r"flatten \(Flatten\)\s+\(None, 8\)", text)


def test_summary_conv1d():
    model = Sequential(Conv1d(3, 8, 5, padding=2, rng=0), Tanh(),
                       Conv1d(8, 4, 3, stride=2, use_bias=False, rng=0), Sigmoid(), Flatten(),
                       Dense(36, 2, rng=0))
    text = model.summary((None, 3, 20), print_fn=None)
    assert re.search(r"^conv1d \(Conv1d\)\s+\(None, 8, 20\)\s+128$", text, re.M)
    assert re.search(r"^tanh \(Tanh\)\s+\(None, 8, 20\)\s+0$", text, re.M)
    assert re.search(r"^conv1d_1 \(Conv1d\)\s+\(None, 4, 9\)\s+96$", text, re.M)
    assert re.search(r"^sigmoid \(Sigmoid\)\s+\(None, 4, 9\)\s+0$", text, re.M)
    assert re.search(r"^flatten \(Flatten\)\s+\(None, 36\)\s+0$", text, re.M)
    assert "Total params: 298" in text.splitlines()  # 128 + 96 + 36 * 2 + 2
    with pytest.raises(ValueError, match="Conv1d"):
        model.summary((None, 4, 20), print_fn=None)
    with pytest.raises(ValueError, match="Conv1d: .*shorter than the kernel"):
        model.summary((None, 3, 2), print_fn=None)


def test_summary_with_batch_norm():
    norm = pytest.importorskip("fastbn.nn.norm")
    model = Sequential(Dense(784, 128, use_bias=False, rng=0), norm.BatchNorm(128), ReLU(),
                       Dense(128, 10, rng=0))
    text = model.summary((None, 784), print_fn=None)
    assert re.search(r"batch_norm \(BatchNorm\)\s+\(None, 128\)\s+512$", text, re.M)
    assert model[1].num_params() == (256, 256)
    assert "Non-trainable params: 256" in text.splitlines()
