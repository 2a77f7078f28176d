"""The layer options PyTorch users expect, and the masked BatchNorm layer."""

import numpy as np
import pytest
from _helpers import make

import fastbn
from fastbn.nn import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm


def test_layer_norm_without_bias(rng):
    ln = LayerNorm((3, 4), bias=False, dtype=np.float64)
    assert sorted(ln.params) == ["weight"] and ln.num_params() == (12, 0)
    ln.params["weight"][...] = rng.uniform(0.5, 2, (3, 4))
    x = make(rng, (5, 3, 4), np.float64, loc=2)
    y = ln(x)
    expect, _, _ = fastbn.layer_norm(x, (3, 4), ln.params["weight"], None)
    np.testing.assert_array_equal(y, expect)
    dx = ln.backward(np.ones_like(y))
    assert dx.shape == x.shape and sorted(ln.grads) == ["weight"]
    assert "bias=False" in repr(ln)


def test_layer_norm_bias_false_against_torch(rng):
    torch = pytest.importorskip("torch")
    t = torch.nn.LayerNorm(6, bias=False, dtype=torch.float64)
    assert sorted(t.state_dict()) == sorted(LayerNorm(6, bias=False).state_dict())
    ln = LayerNorm(6, bias=False, dtype=np.float64)
    with torch.no_grad():
        t.weight.uniform_(0.5, 2)
    ln.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    x = make(rng, (4, 6), np.float64)
    tx = torch.tensor(x, requires_grad=True)
    ty = t(tx)
    np.testing.assert_allclose(ln(x), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = make(rng, x.shape, np.float64)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(ln.backward(dy), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ln.grads["weight"], t.weight.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rms_norm_eps_none_is_machine_epsilon(dtype):
    assert RMSNorm(4, eps=None, dtype=dtype).eps == float(np.finfo(dtype).eps)
    assert RMSNorm(4).eps == 1e-6  # the default is unchanged


def test_rms_norm_eps_none_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = make(rng, (3, 8), np.float32, scale=1e-4)  # tiny values: eps matters
    t = torch.nn.RMSNorm(8)  # eps=None: torch.finfo(x.dtype).eps
    ours = RMSNorm(8, eps=None)
    np.testing.assert_allclose(ours(x), t(torch.tensor(x)).detach().numpy(), rtol=1e-5)
    assert not np.allclose(RMSNorm(8)(x), ours(x), rtol=1e-3)


def test_reset_running_stats_and_parameters_as_torch(rng):
    torch = pytest.importorskip("torch")
    bn = BatchNorm(3)
    t = torch.nn.BatchNorm1d(3)
    x = make(rng, (8, 3), np.float32, loc=2)
    bn(x)
    t(torch.tensor(x))
    bn.params["weight"][...] = 2.0
    with torch.no_grad():
        t.weight.fill_(2.0)
    bn.reset_running_stats()
    t.reset_running_stats()
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(bn.state_dict()[k], v.numpy(), err_msg=k)
    assert bn.params["weight"][0] == 2.0  # reset_running_stats keeps the affine
    bn(x)
    t(torch.tensor(x))
    bn.reset_parameters()
    t.reset_parameters()
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(bn.state_dict()[k], v.numpy(), err_msg=k)


@pytest.mark.parametrize("layer", [LayerNorm(4), LayerNorm(4, bias=False), RMSNorm(4),
                                   GroupNorm(2, 4), InstanceNorm(4),
                                   BatchNorm(4, track_running_stats=False),
                                   BatchNorm(4, affine=False)], ids=repr)
def test_reset_parameters_on_every_norm(layer):
    for v in layer.params.values():
        v[...] = 7.0
    layer.reset_parameters()
    for k, v in layer.params.items():
        assert np.all(v == (0.0 if k == "bias" else 1.0)), k


# --- the masked BatchNorm layer ------------------------------------------------------


@pytest.mark.parametrize("axis,shape", [(1, (4, 3, 30)), (-1, (4, 30, 3))])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_masked_layer_equals_functional(rng, axis, shape, activation):
    x = make(rng, shape, np.float64, loc=2)
    dy = make(rng, shape, np.float64)
    mask = rng.random((4, 30)) < 0.7
    bn = BatchNorm(3, axis=axis, activation=activation, dtype=np.float64)
    bn.params["weight"][...] = [0.5, 1.0, 2.0]
    rm, rv = np.zeros(3), np.ones(3)
    y = bn(x, mask=mask)
    ey, mean, rstd = fastbn.batch_norm(x, bn.params["weight"], bn.params["bias"], rm, rv,
                                       axis=axis, mask=mask, activation=activation)
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(bn.buffers["running_mean"], rm)
    np.testing.assert_array_equal(bn.buffers["running_var"], rv)
    dx = bn.backward(dy)
    ex, ew, eb = fastbn.batch_norm_backward(dy, x, mean, rstd, bn.params["weight"], axis=axis,
                                            mask=mask, activation=activation, y=ey)
    np.testing.assert_array_equal(dx, ex)
    np.testing.assert_array_equal(bn.grads["weight"], ew)
    np.testing.assert_array_equal(bn.grads["bias"], eb)


def test_masked_layer_ghost_batches(rng):
    x = make(rng, (8, 3, 20), np.float64)
    mask = rng.random((8, 20)) < 0.8
    bn = BatchNorm(3, virtual_batch_size=4, dtype=np.float64)
    y = bn(x, mask=mask)
    for rows in (slice(0, 4), slice(4, 8)):
        ey, _, _ = fastbn.batch_norm(x[rows], axis=1, mask=mask[rows])
        np.testing.assert_allclose(y[rows], ey, rtol=1e-12, atol=1e-12)
    assert int(bn.buffers["num_batches_tracked"]) == 2
    assert bn.backward(np.ones_like(y)).shape == x.shape


def test_masked_layer_bad_masks_change_nothing(rng):
    x = make(rng, (4, 3, 10), np.float32)
    bn = BatchNorm(3)
    bn(x)
    before = bn.state_dict()
    one = np.zeros((4, 10), bool)
    one[0, 0] = True
    for bad, err in ((np.ones((4, 3), bool), ValueError), (np.ones((4, 10)), TypeError),
                     (one, ValueError)):
        with pytest.raises(err, match="mask|valid"):
            bn(x, mask=bad)
        for k, v in bn.state_dict().items():
            assert np.array_equal(v, before[k]), k
    with pytest.raises(ValueError, match="renorm"):
        BatchNorm(3, renorm=True)(x, mask=np.ones((4, 10), bool))


def test_masked_layer_eval_ignores_mask(rng):
    x = make(rng, (4, 3, 10), np.float32)
    bn = BatchNorm(3)
    bn(x)
    bn.eval()
    mask = np.zeros((4, 10), bool)
    np.testing.assert_array_equal(bn(x, mask=mask), bn(x))
    with pytest.raises(ValueError, match="mask"):
        bn(x, mask=np.ones(3, bool))
