"""fastbn.nn normalization layers: state, modes, extras, errors; step by step against torch."""

import numpy as np
import pytest
from _helpers import TOL, assert_close, make, numerical_grad

import fastbn
from fastbn import reference
from fastbn.nn import (
    BatchNorm,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    Module,
    RMSNorm,
    from_keras,
    recompute_statistics,
    to_keras,
)

try:
    import torch
except ImportError:  # the torch comparisons skip; everything else runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
DTYPES = [np.float32, np.float64]
dtype_ids = lambda d: np.dtype(d).name  # noqa: E731


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _state_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a[k].dtype == b[k].dtype


class Chain(Module):
    """A minimal container (the toolkit's Sequential is tested on its own)."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = layers

    def modules(self):
        yield self
        for layer in self.layers:
            yield from layer.modules()

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy


# --- BatchNorm against torch, step by step ---------------------------------------------

_TORCH_BN = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape,axis", [((8, 5), 1), ((4, 5, 7), 1), ((4, 5, 3, 6), 1),
                                        ((2, 5, 3, 2, 4), 1), ((4, 3, 6, 5), -1)], ids=str)
@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False},
                                {"track_running_stats": False}, {"momentum": 0.3}],
                         ids=["default", "cumulative", "no-affine", "no-running", "m0.3"])
def test_batch_norm_matches_torch_step_by_step(rng, shape, axis, dtype, kw):
    c = shape[axis]
    layer = BatchNorm(c, axis=axis, dtype=dtype, **kw)
    module = getattr(torch.nn, _TORCH_BN[len(shape)])(c, dtype=torch.from_numpy(
        np.zeros(0, dtype)).dtype, **kw)
    if layer.affine:  # non-trivial parameters, the same on both sides
        w, b = make(rng, c, dtype, loc=1.0), make(rng, c, dtype)
        layer.params["weight"][...] = w
        layer.params["bias"][...] = b
        with torch.no_grad():
            module.weight.copy_(_t(w))
            module.bias.copy_(_t(b))
    for step in range(4):
        training = step < 3
        layer.train(training)
        module.train(training)
        x = make(rng, shape, dtype, loc=step - 1.0, scale=1.0 + step)
        dy = make(rng, shape, dtype)
        xt = _t(np.moveaxis(x, axis, 1)).requires_grad_()
        yt = module(xt)
        yt.backward(_t(np.moveaxis(dy, axis, 1)))
        y = layer(x)
        dx = layer.backward(dy)
        assert y.dtype == dx.dtype == np.dtype(dtype)
        assert_close(np.moveaxis(y, axis, 1), yt.detach().numpy(), dtype)
        assert_close(np.moveaxis(dx, axis, 1), xt.grad.numpy(), dtype, scale=10)
        if layer.affine:
            assert layer.grads["weight"].dtype == np.dtype(dtype)
            assert_close(layer.grads["weight"], module.weight.grad.numpy(), dtype, scale=100)
            assert_close(layer.grads["bias"], module.bias.grad.numpy(), dtype, scale=100)
            module.zero_grad()
        torch_state = {k: v.numpy() for k, v in module.state_dict().items()}
        assert set(layer.state_dict()) == set(torch_state)
        for k, v in layer.state_dict().items():
            if k == "num_batches_tracked":
                assert int(v) == int(torch_state[k]) == min(step + 1, 3)
            else:
                assert v.dtype == np.dtype(dtype)
                assert_close(v, torch_state[k], dtype)


@needs_torch
def test_torch_state_dict_loads_as_is(rng):
    module = torch.nn.BatchNorm2d(6)
    for _ in range(3):
        module(torch.randn(4, 6, 5, 5) * 3 + 2)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-1, 1)
    layer = BatchNorm(6)
    layer.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    assert int(layer.buffers["num_batches_tracked"]) == 3
    x = make(rng, (4, 6, 5, 5), np.float32, loc=2.0, scale=3.0)
    module.eval()
    assert_close(layer.eval()(x), module(_t(x)).detach().numpy(), np.float32)


# --- the other norm layers against torch -----------------------------------------------

def _torch_case(kind, dtype, shape):
    tdtype = torch.from_numpy(np.zeros(0, dtype)).dtype
    if kind == "layer":
        return LayerNorm(shape[-2:], dtype=dtype), torch.nn.LayerNorm(shape[-2:], dtype=tdtype)
    if kind == "rms":
        return (RMSNorm(shape[-1], eps=1e-6, dtype=dtype),
                torch.nn.RMSNorm(shape[-1], eps=1e-6, dtype=tdtype))
    if kind == "group":
        return GroupNorm(3, shape[1], dtype=dtype), torch.nn.GroupNorm(3, shape[1], dtype=tdtype)
    return (InstanceNorm(shape[1], dtype=dtype),
            torch.nn.InstanceNorm2d(shape[1], affine=True, dtype=tdtype))


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("kind", ["layer", "rms", "group", "instance"])
def test_other_norms_match_torch(rng, kind, dtype):
    shape = (3, 6, 4, 5)
    layer, module = _torch_case(kind, dtype, shape)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(_t(make(rng, p.shape, dtype, loc=1.0 if name == "weight" else 0.0)))
    layer.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        getattr(module, mode)()
        x = make(rng, shape, dtype, loc=3.0, scale=2.0)
        dy = make(rng, shape, dtype)
        xt = _t(x).requires_grad_()
        module(xt).backward(_t(dy))
        y = layer(x)
        dx = layer.backward(dy)
        assert y.dtype == dx.dtype == np.dtype(dtype)
        assert_close(y, module(_t(x)).detach().numpy(), dtype)
        assert_close(dx, xt.grad.numpy(), dtype, scale=10)
        for name, p in module.named_parameters():
            assert layer.grads[name].dtype == np.dtype(dtype)
            assert_close(layer.grads[name], p.grad.numpy(), dtype, scale=100)
        module.zero_grad()


def test_channels_last_group_and_instance_norm(rng):
    x = make(rng, (2, 4, 3, 6), np.float64)
    dy = make(rng, x.shape, np.float64)
    for last, first in ((GroupNorm(3, 6, axis=-1), GroupNorm(3, 6)),
                        (InstanceNorm(6, axis=-1), InstanceNorm(6))):
        y = last(x)
        dx = last.backward(dy)
        np.testing.assert_allclose(np.moveaxis(y, -1, 1), first(np.moveaxis(x, -1, 1)),
                                   **TOL[np.dtype(np.float64)])
        np.testing.assert_allclose(np.moveaxis(dx, -1, 1),
                                   first.backward(np.moveaxis(dy, -1, 1)),
                                   **TOL[np.dtype(np.float64)])


# --- finite differences (float64) ------------------------------------------------------

_FD_LAYERS = {
    "batch": lambda: BatchNorm(3, dtype=np.float64),
    "batch-last": lambda: BatchNorm(3, axis=-1, dtype=np.float64),
    "ghost": lambda: BatchNorm(3, virtual_batch_size=2, dtype=np.float64),
    "relu": lambda: BatchNorm(3, activation="relu", dtype=np.float64),
    "batch-eval": lambda: BatchNorm(3, dtype=np.float64).eval(),
    "layer": lambda: LayerNorm((3, 4), dtype=np.float64),
    "rms": lambda: RMSNorm(4, dtype=np.float64),
    "group": lambda: GroupNorm(3, 3, dtype=np.float64),
    "instance-last": lambda: InstanceNorm(3, axis=-1, dtype=np.float64),
}


@pytest.mark.parametrize("name", sorted(_FD_LAYERS))
def test_gradients_match_finite_differences(rng, name):
    layer = _FD_LAYERS[name]()
    shape = (5, 3, 3) if "last" in name else (4, 3, 4)
    x = make(rng, shape, np.float64, loc=1.0, scale=2.0)
    r = make(rng, shape, np.float64)
    for k, p in layer.params.items():
        p[...] = make(rng, p.shape, np.float64, loc=1.0 if k == "weight" else 0.3)
    buffers = {k: v.copy() for k, v in layer.buffers.items()}

    def loss():
        for k, v in buffers.items():  # running statistics must not drift between calls
            layer.buffers[k][...] = v
        return float(np.sum(layer(x) * r))

    loss()
    dx = layer.backward(r)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)
    for k, p in layer.params.items():
        loss()
        layer.backward(r)
        np.testing.assert_allclose(layer.grads[k], numerical_grad(loss, p), rtol=1e-6,
                                   atol=1e-7, err_msg=k)


# --- ghost batch norm ------------------------------------------------------------------

def test_ghost_batch_norm_is_batch_norm_per_sub_batch(rng):
    x = make(rng, (12, 4, 3), np.float64, loc=2.0)
    dy = make(rng, x.shape, np.float64)
    ghost = BatchNorm(4, virtual_batch_size=4, dtype=np.float64)
    plain = BatchNorm(4, dtype=np.float64)
    y = ghost(x)
    dx = ghost.backward(dy)
    dw = np.zeros(4)
    for s in (slice(0, 4), slice(4, 8), slice(8, 12)):  # sequential running updates
        np.testing.assert_allclose(y[s], plain(x[s]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx[s], plain.backward(dy[s]), rtol=1e-12, atol=1e-12)
        dw += plain.grads["weight"]
    np.testing.assert_allclose(ghost.grads["weight"], dw, rtol=1e-12)
    _state_equal_close(ghost.state_dict(), plain.state_dict())
    assert int(ghost.buffers["num_batches_tracked"]) == 3
    # inference is unchanged by the virtual batch size
    np.testing.assert_array_equal(ghost.eval()(x), plain.eval()(x))


def _state_equal_close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-13, err_msg=k)


def test_ghost_batch_norm_uneven_split(rng):
    x = make(rng, (10, 3), np.float64)
    ghost = BatchNorm(3, virtual_batch_size=4, dtype=np.float64)
    y = ghost(x)
    # two sub-batches of 5 (10 // 4 = 2, nearly equal sizes)
    np.testing.assert_allclose(y[:5], reference.batch_norm_train(x[:5])[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y[5:], reference.batch_norm_train(x[5:])[0], rtol=1e-12, atol=1e-12)
    assert int(ghost.buffers["num_batches_tracked"]) == 2


# --- batch renormalization -------------------------------------------------------------

def test_renorm_with_unit_clip_is_batch_norm(rng):
    renorm = BatchNorm(4, renorm=True, rmax=1.0, dmax=0.0, dtype=np.float64)
    plain = BatchNorm(4, dtype=np.float64)
    for p in (renorm, plain):
        p.params["weight"][...] = np.arange(1.0, 5.0)
    for step in range(3):
        x = make(rng, (6, 4, 5), np.float64, loc=step, scale=step + 1)
        dy = make(rng, x.shape, np.float64)
        np.testing.assert_allclose(renorm(x), plain(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(renorm.backward(dy), plain.backward(dy), rtol=1e-10,
                                   atol=1e-12)
        for k in ("weight", "bias"):
            np.testing.assert_allclose(renorm.grads[k], plain.grads[k], rtol=1e-10)
        _state_equal_close(renorm.state_dict(), plain.state_dict())


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_renorm_matches_the_paper_with_constant_r_and_d(rng, dtype):
    """Ioffe (2017), Algorithm 1, written in torch with r and d detached."""
    c, eps, momentum, rmax, dmax = 4, 1e-5, 0.1, 1.5, 0.5
    layer = BatchNorm(c, renorm=True, rmax=rmax, dmax=dmax, dtype=dtype)
    w, b = make(rng, c, dtype, loc=1.0), make(rng, c, dtype)
    layer.params["weight"][...] = w
    layer.params["bias"][...] = b
    rm = np.zeros(c)
    rv = np.ones(c)
    for step in range(3):
        x = make(rng, (8, c, 3), dtype, loc=2.0 * step, scale=0.5 + step)  # r, d clip
        dy = make(rng, x.shape, dtype)
        xt, wt, bt = (_t(a.astype(np.float64)).requires_grad_() for a in (x, w, b))
        mu = xt.mean(dim=(0, 2), keepdim=True)
        var = xt.var(dim=(0, 2), unbiased=False, keepdim=True)
        sigma_b = torch.sqrt(var + eps)
        sigma = torch.sqrt(_t(rv).view(1, c, 1) + eps)
        r = (sigma_b / sigma).clamp(1 / rmax, rmax).detach()
        d = ((mu - _t(rm).view(1, c, 1)) / sigma).clamp(-dmax, dmax).detach()
        yt = wt.view(1, c, 1) * ((xt - mu) / sigma_b * r + d) + bt.view(1, c, 1)
        yt.backward(_t(dy.astype(np.float64)))
        y = layer(x)
        dx = layer.backward(dy)
        assert y.dtype == dx.dtype == np.dtype(dtype)
        assert_close(y, yt.detach().numpy(), dtype)
        assert_close(dx, xt.grad.numpy(), dtype, scale=10)
        assert_close(layer.grads["weight"], wt.grad.numpy(), dtype, scale=100)
        assert_close(layer.grads["bias"], bt.grad.numpy(), dtype, scale=100)
        m = x.size // c
        rm = (1 - momentum) * rm + momentum * mu.detach().numpy().ravel()
        rv = (1 - momentum) * rv + momentum * var.detach().numpy().ravel() * m / (m - 1)
        assert_close(layer.buffers["running_mean"], rm, dtype)
        assert_close(layer.buffers["running_var"], rv, dtype)
    assert int(layer.buffers["num_batches_tracked"]) == 3


def test_renorm_eval_is_batch_norm_inference(rng):
    layer = BatchNorm(3, renorm=True, dtype=np.float64)
    layer(make(rng, (8, 3), np.float64, loc=4.0))
    x = make(rng, (5, 3), np.float64)
    y, _, _ = fastbn.batch_norm(x, layer.params["weight"], layer.params["bias"],
                                layer.buffers["running_mean"], layer.buffers["running_var"],
                                training=False)
    np.testing.assert_array_equal(layer.eval()(x), y)


# --- fused activation ------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
def test_fused_relu_is_bn_then_relu(rng, training):
    fused = BatchNorm(4, activation="relu", dtype=np.float64).train(training)
    plain = BatchNorm(4, dtype=np.float64).train(training)
    x = make(rng, (6, 4, 3), np.float64, loc=0.5)
    dy = make(rng, x.shape, np.float64)
    z = plain(x)
    np.testing.assert_allclose(fused(x), np.maximum(z, 0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fused.backward(dy), plain.backward(dy * (z > 0)), rtol=1e-12,
                               atol=1e-14)
    for k in ("weight", "bias"):
        np.testing.assert_allclose(fused.grads[k], plain.grads[k], rtol=1e-12, atol=1e-14)


# --- Keras interop ---------------------------------------------------------------------

def test_from_keras_inference_and_round_trip(rng):
    c = 5
    gamma, beta = make(rng, c, np.float32, loc=1.0), make(rng, c, np.float32)
    mm, mv = make(rng, c, np.float32), rng.uniform(0.5, 2.0, c).astype(np.float32)
    layer = from_keras(gamma, beta, mm, mv, momentum=0.99, epsilon=1e-3)
    assert layer.axis == -1 and layer.eps == 1e-3
    assert layer.momentum == pytest.approx(0.01)
    x = make(rng, (4, 3, 3, c), np.float32)
    expected = gamma * (x - mm) / np.sqrt(mv + 1e-3) + beta  # Keras' inference formula
    assert_close(layer.eval()(x), expected, np.float32)
    k = to_keras(layer)
    for name, a in (("gamma", gamma), ("beta", beta), ("moving_mean", mm),
                    ("moving_variance", mv)):
        np.testing.assert_array_equal(k[name], a)
    assert k["momentum"] == pytest.approx(0.99) and k["epsilon"] == 1e-3
    # scale=False / center=False Keras layers drop gamma / beta
    no_scale = BatchNorm.from_keras(None, beta, mm, mv)
    np.testing.assert_array_equal(no_scale.params["weight"], np.ones(c, np.float32))


def test_keras_momentum_mapping_in_training(rng):
    """Keras: moving = k * moving + (1 - k) * batch; ours with momentum 1 - k is the same
    rule (for the mean; the variance differs by Keras' biased batch variance)."""
    layer = from_keras(None, None, np.zeros(3), np.ones(3), momentum=0.9, axis=1,
                       dtype=np.float64)
    x = make(rng, (16, 3), np.float64, loc=2.0)
    layer(x)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.9 * 0 + 0.1 * x.mean(0),
                               rtol=1e-12)


# --- precise BN ------------------------------------------------------------------------

def test_recompute_statistics_gives_population_statistics(rng):
    first, second = BatchNorm(4, dtype=np.float64), BatchNorm(4, dtype=np.float64)
    first.params["weight"][...] = [1.0, 2.0, 0.5, 1.5]
    model = Chain(first, second).train()
    data = [make(rng, (n, 4, 3), np.float64, loc=3.0, scale=2.0) for n in (5, 8, 3)]
    before = {"weight": first.params["weight"].copy(),
              "nbt": first.buffers["num_batches_tracked"].copy()}
    assert recompute_statistics(model, iter(data)) == 3  # a generator: streamed
    allx = np.concatenate(data)
    np.testing.assert_allclose(first.buffers["running_mean"], allx.mean(axis=(0, 2)),
                               rtol=1e-12)
    np.testing.assert_allclose(first.buffers["running_var"],
                               allx.var(axis=(0, 2), ddof=1), rtol=1e-12)
    # the second layer saw the first's output normalized with batch statistics
    seen = np.concatenate([reference.batch_norm_train(x, first.params["weight"],
                                                first.params["bias"])[0] for x in data])
    np.testing.assert_allclose(second.buffers["running_mean"], seen.mean(axis=(0, 2)),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(second.buffers["running_var"], seen.var(axis=(0, 2), ddof=1),
                               rtol=1e-10)
    np.testing.assert_array_equal(first.params["weight"], before["weight"])
    np.testing.assert_array_equal(first.buffers["num_batches_tracked"], before["nbt"])
    assert model.training and first.training and "forward" not in vars(first)


def test_recompute_statistics_failure_changes_nothing(rng):
    bn = BatchNorm(4).eval()
    bn(make(rng, (3, 4), np.float32))
    state = bn.state_dict()
    with pytest.raises(ValueError, match="channels"):
        recompute_statistics(bn, [make(rng, (3, 4), np.float32), make(rng, (3, 5), np.float32)])
    _state_equal(bn.state_dict(), state)
    assert not bn.training and "forward" not in vars(bn)


# --- layer protocol --------------------------------------------------------------------

def test_param_counts_and_dtypes():
    assert BatchNorm(128).num_params() == (256, 256)
    assert BatchNorm(128, affine=False).num_params() == (0, 256)
    assert BatchNorm(128, track_running_stats=False).num_params() == (256, 0)
    assert LayerNorm(768).num_params() == (1536, 0)
    assert RMSNorm(768).num_params() == (768, 0)
    assert GroupNorm(32, 64).num_params() == (128, 0)
    assert InstanceNorm(8, affine=False).num_params() == (0, 0)
    for layer in (BatchNorm(3, dtype=np.float64), LayerNorm(3, dtype=np.float64)):
        assert all(a.dtype == np.float64 for a in layer.params.values())
    assert BatchNorm(3).buffers["num_batches_tracked"].dtype == np.int64
    assert BatchNorm(3).eval().training is False and BatchNorm(3).train().training is True


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_float32_stays_float32(rng, dtype):
    for layer, shape in ((BatchNorm(4, dtype=dtype), (6, 4, 3)),
                         (BatchNorm(4, renorm=True, virtual_batch_size=3, dtype=dtype),
                          (6, 4, 3)),
                         (GroupNorm(2, 4, dtype=dtype), (6, 4, 3)),
                         (LayerNorm(3, dtype=dtype), (6, 4, 3)),
                         (RMSNorm(3, dtype=dtype), (6, 4, 3))):
        x = make(rng, shape, dtype)
        assert layer(x).dtype == np.dtype(dtype)
        assert layer.backward(x).dtype == np.dtype(dtype)
        assert all(a.dtype == np.dtype(dtype) for a in layer.grads.values())
        assert all(a.dtype == np.dtype(dtype) for k, a in layer.buffers.items()
                   if k != "num_batches_tracked")


# --- bad input: errors raise and change nothing ----------------------------------------

@pytest.mark.parametrize("make_layer,x_shape,match", [
    (lambda: BatchNorm(4), (3, 5, 2), "4 channels"),
    (lambda: BatchNorm(4, affine=False), (3, 5), "4 channels"),
    (lambda: BatchNorm(4), (4,), "at least 2 dimensions"),
    (lambda: BatchNorm(4), (1, 4), "more than 1 value per channel"),
    (lambda: BatchNorm(4, virtual_batch_size=1), (4, 4), "more than 1 value per channel"),
    (lambda: BatchNorm(4, renorm=True), (1, 4), "more than 1 value per channel"),
    (lambda: BatchNorm(4, axis=-1), (3, 4, 5), "4 channels"),
])
def test_bad_input_leaves_state_unchanged(rng, make_layer, x_shape, match):
    layer = make_layer()
    # non-trivial running statistics first (2 values per channel and sample)
    layer(np.moveaxis(make(rng, (6, 4, 2), np.float32, loc=1.0), 1, layer.axis))
    state = layer.state_dict()
    with pytest.raises(ValueError, match=match):
        layer(make(rng, x_shape, np.float32))
    _state_equal(layer.state_dict(), state)


def test_other_layers_reject_wrong_shapes(rng):
    with pytest.raises(ValueError, match="6 channels"):
        GroupNorm(3, 6, affine=False)(make(rng, (2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm(5)(make(rng, (2, 4), np.float32))
    with pytest.raises(ValueError, match="divide"):
        GroupNorm(4, 6)
    with pytest.raises(TypeError):
        BatchNorm(4)(np.ones((3, 4), np.int64))
    with pytest.raises(ValueError, match="activation"):
        BatchNorm(4, activation="tanh")
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(4, momentum=1.5)
    with pytest.raises(ValueError, match="rmax"):
        BatchNorm(4, renorm=True, rmax=0.5)
    with pytest.raises(RuntimeError, match="before forward"):
        LayerNorm(3).backward(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "integer"])
def test_load_state_dict_is_all_or_nothing(change):
    layer = BatchNorm(3)
    state = layer.state_dict()
    bad = {k: v + 1 for k, v in state.items()}
    if change == "missing":
        del bad["running_var"]
    elif change == "extra":
        bad["running_std"] = np.ones(3)
    elif change == "shape":
        bad["running_var"] = np.ones(4)
    else:
        bad["num_batches_tracked"] = np.array(1.5)
    with pytest.raises((KeyError, ValueError, TypeError)):
        layer.load_state_dict(bad)
    _state_equal(layer.state_dict(), state)


def test_state_dict_returns_copies():
    layer = BatchNorm(3)
    state = layer.state_dict()
    state["running_mean"][:] = 7
    assert not layer.buffers["running_mean"].any()


def test_shared_layer_counted_once():
    bn = BatchNorm(3)
    assert Chain(bn, bn).num_params() == (6, 6)


@pytest.mark.parametrize("make_layer", [lambda: BatchNorm(3, dtype=np.float64),
                                        lambda: BatchNorm(3, virtual_batch_size=2,
                                                          dtype=np.float64),
                                        lambda: GroupNorm(3, 3, dtype=np.float64),
                                        lambda: LayerNorm(5, dtype=np.float64)],
                         ids=["bn", "ghost", "group", "layer"])
def test_non_contiguous_views(rng, make_layer):
    big = make(rng, (8, 6, 10), np.float64, loc=2.0)
    x = big[::2, ::2, ::2]  # (4, 3, 5), strided in every axis
    dy = make(rng, (8, 6, 10), np.float64)[::2, ::2, ::2]
    strided, contiguous = make_layer(), make_layer()
    np.testing.assert_allclose(strided(x), contiguous(np.ascontiguousarray(x)), rtol=1e-13)
    np.testing.assert_allclose(strided.backward(dy),
                               contiguous.backward(np.ascontiguousarray(dy)), rtol=1e-12,
                               atol=1e-14)
    _state_equal_close(strided.state_dict(), contiguous.state_dict())


@pytest.mark.parametrize("renorm", [False, True], ids=["bn", "renorm"])
def test_layer_skips_non_finite_channels(rng, renorm):
    layer = BatchNorm(3, renorm=renorm)
    layer(make(rng, (8, 3), np.float32))
    state = layer.state_dict()
    x = make(rng, (8, 3), np.float32)
    x[2, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="1 of 3 channels"):
        layer(x)
    for k in ("running_mean", "running_var"):
        assert layer.buffers[k][0] == state[k][0]
        assert np.all(layer.buffers[k][1:] != state[k][1:])
    assert int(layer.buffers["num_batches_tracked"]) == 2  # the batch still counts
