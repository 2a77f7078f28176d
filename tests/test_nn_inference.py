"""fold_batch_norm, FrozenBatchNorm and freeze_batch_norm (fastbn.nn.inference)."""

import numpy as np
import pytest

from fastbn import reference as R
from fastbn.experiments import train
from fastbn.nn import (
    SGD,
    BatchNorm,
    Conv1d,
    Conv2d,
    Dense,
    FrozenBatchNorm,
    LayerNorm,
    ReLU,
    Sequential,
    fold_batch_norm,
    freeze_batch_norm,
)


def _trained(model, x_fn, steps=4):
    """Give every BN distinct running statistics and affine, then eval mode."""
    rng = np.random.default_rng(1)
    for _ in range(steps):
        model(x_fn())
    for m in model.modules():
        if isinstance(m, BatchNorm) and m.affine:
            c = m.num_features
            m.params["weight"][...] = rng.uniform(0.5, 2.0, c)
            m.params["bias"][...] = rng.normal(0.0, 1.0, c)
    return model.eval()


def _mlp64():
    model = train.mlp(20, 10, bn=True, rng=np.random.default_rng(0))
    for m in model.modules():  # the tutorial's MLP in float64
        for d in (m.params, m.buffers):
            for k, v in d.items():
                if v.dtype == np.float32:
                    d[k] = v.astype(np.float64)
        m.grads = {k: np.zeros_like(v) for k, v in m.params.items()}
    return model


def test_fold_tutorial_mlp_exact_in_float64():
    rng = np.random.default_rng(0)
    model = _trained(_mlp64(), lambda: rng.normal(3.0, 2.0, (64, 20)))
    state = model.state_dict()
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, BatchNorm) for m in folded.modules())
    x = rng.normal(3.0, 2.0, (33, 20))
    np.testing.assert_allclose(folded(x), model(x), rtol=0, atol=1e-10)
    # the original is untouched, still in eval mode
    for k, v in model.state_dict().items():
        assert np.array_equal(v, state[k]), k
    assert not model.training


def test_fold_small_cnn_exact_in_float64():
    rng = np.random.default_rng(0)
    model = Sequential(
        Conv2d(2, 6, 3, padding=1, use_bias=False, rng=0, dtype=np.float64),
        BatchNorm(6, dtype=np.float64), ReLU(),
        Conv2d(6, 5, 3, stride=2, rng=1, dtype=np.float64),
        BatchNorm(5, activation="relu", dtype=np.float64), ReLU())
    model = _trained(model, lambda: rng.normal(1.0, 3.0, (8, 2, 9, 9)))
    folded = fold_batch_norm(model)
    assert [type(m).__name__ for m in folded] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "ReLU"]
    x = rng.normal(1.0, 3.0, (4, 2, 9, 9))
    np.testing.assert_allclose(folded(x), model(x), rtol=0, atol=1e-10)


def test_fold_nested_conv1d_and_unfoldable_kept():
    rng = np.random.default_rng(2)
    inner = Sequential(Conv1d(3, 4, 3, rng=0, dtype=np.float64), BatchNorm(4, dtype=np.float64))
    model = Sequential(inner, BatchNorm(4, dtype=np.float64),      # not after a Dense/Conv
                       LayerNorm((4, 6), dtype=np.float64))
    model = _trained(model, lambda: rng.normal(2.0, 1.0, (6, 3, 8)))
    folded = fold_batch_norm(model)
    assert [type(m).__name__ for m in folded[0]] == ["Conv1d"]
    assert isinstance(folded[1], BatchNorm) and folded[1] is not model[1]
    x = rng.normal(2.0, 1.0, (5, 3, 8))
    np.testing.assert_allclose(folded(x), model(x), rtol=0, atol=1e-10)


def test_fold_float32_and_a_wrong_axis_fold_would_fail():
    rng = np.random.default_rng(3)
    model = Sequential(Dense(6, 6, rng=0), BatchNorm(6))
    model = _trained(model, lambda: rng.normal(0.0, 1.0, (32, 6)).astype(np.float32) * 3 + 1)
    folded = fold_batch_norm(model)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    assert folded(x).dtype == np.float32
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-5, atol=1e-5)
    # the bug of ultralytics #25364 / onnx #106: the scale on W's input axis
    bn = model[1]
    s = bn.params["weight"] / np.sqrt(bn.buffers["running_var"] + bn.eps)
    wrong = model[0].params["weight"] * s[None, :]
    assert np.abs(wrong - folded[0].params["weight"]).max() > 1e-2


def test_fold_against_torch():
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    rng = np.random.default_rng(4)
    model = Sequential(Conv2d(3, 4, 3, rng=0, dtype=np.float64), BatchNorm(4, dtype=np.float64))
    model = _trained(model, lambda: rng.normal(1.0, 2.0, (8, 3, 6, 6)))
    conv = torch.nn.Conv2d(3, 4, 3).double()
    bn = torch.nn.BatchNorm2d(4).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(model[0].params["weight"]))
        conv.bias.copy_(torch.tensor(model[0].params["bias"]))
    bn.load_state_dict({k: torch.tensor(v) for k, v in model[1].state_dict().items()})
    fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
    folded = fold_batch_norm(model)
    np.testing.assert_allclose(folded[0].params["weight"], fused.weight.detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(folded[0].params["bias"], fused.bias.detach().numpy(),
                               rtol=1e-12, atol=1e-14)


def test_fold_errors():
    model = Sequential(Dense(3, 4, rng=0), BatchNorm(4))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(model)
    nostats = Sequential(Dense(3, 4, rng=0), BatchNorm(4, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match="running statistics"):
        fold_batch_norm(nostats)
    with pytest.raises(TypeError, match="Module"):
        fold_batch_norm([Dense(3, 4)])


# --- FrozenBatchNorm ------------------------------------------------------------------


def test_frozen_is_eval_batch_norm_in_every_mode(rng):
    c = 5
    frozen = FrozenBatchNorm(c, dtype=np.float64)
    b = frozen.buffers
    b["weight"][...] = rng.uniform(0.5, 2, c)
    b["bias"][...] = rng.normal(size=c)
    b["running_mean"][...] = rng.normal(size=c)
    b["running_var"][...] = rng.uniform(0.5, 2, c)
    x = rng.normal(size=(6, c, 4))
    expect = R.batch_norm_inference(x, b["running_mean"], b["running_var"], b["weight"],
                                    b["bias"])
    rstd = 1.0 / np.sqrt(b["running_var"] + 1e-5)
    before = {k: v.copy() for k, v in b.items()}
    for mode in (True, False):
        frozen.train(mode)
        np.testing.assert_allclose(frozen(x), expect, rtol=1e-12, atol=1e-12)
        dy = rng.normal(size=x.shape)
        dx = frozen.backward(dy)
        np.testing.assert_allclose(dx, dy * (b["weight"] * rstd)[None, :, None], rtol=1e-12)
    assert frozen.params == {} and frozen.grads == {}
    assert frozen.num_params() == (0, 4 * c)
    for k, v in before.items():
        assert np.array_equal(b[k], v)
    # an optimizer has nothing to update
    opt = SGD(frozen, lr=0.1)
    opt.step()
    assert np.array_equal(b["weight"], before["weight"])


def test_frozen_against_torchvision_semantics_and_state_dict(rng):
    torch = pytest.importorskip("torch")
    c = 4
    bn = torch.nn.BatchNorm2d(c).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    state = {k: v.numpy() for k, v in bn.state_dict().items()}
    frozen = FrozenBatchNorm(c, dtype=np.float64)
    frozen.load_state_dict(state)  # num_batches_tracked dropped, as torchvision does
    # torchvision's FrozenBatchNorm2d.forward, written out
    scale = bn.weight * (bn.running_var + 1e-5).rsqrt()
    shift = bn.bias - bn.running_mean * scale
    x = rng.normal(size=(3, c, 5, 5))
    tx = torch.tensor(x, requires_grad=True)
    ty = tx * scale.detach().reshape(1, -1, 1, 1) + shift.detach().reshape(1, -1, 1, 1)
    np.testing.assert_allclose(frozen.train()(x), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(frozen(x), bn.eval()(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    dy = rng.normal(size=x.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(frozen.backward(dy), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert sorted(frozen.state_dict()) == ["bias", "running_mean", "running_var", "weight"]
    with pytest.raises(ValueError, match="shape"):
        frozen.load_state_dict({**state, "weight": np.ones(c + 1)})


def test_from_batch_norm_and_freeze_model(rng):
    model = Sequential(Dense(4, 6, rng=0), BatchNorm(6, activation="relu"),
                       Sequential(Dense(6, 6, rng=1), BatchNorm(6, eps=1e-3)),
                       Dense(6, 2, rng=2))
    model = _trained(model, lambda: rng.normal(2.0, 3.0, (16, 4)).astype(np.float32))
    frozen = freeze_batch_norm(model)
    assert [type(m).__name__ for m in frozen] == ["Dense", "FrozenBatchNorm", "ReLU",
                                                  "Sequential", "Dense"]
    assert frozen[3][1].eps == 1e-3
    x = rng.normal(2.0, 3.0, (7, 4)).astype(np.float32)
    expect = model(x)
    np.testing.assert_array_equal(frozen.train()(x), expect)
    assert model[1].training is False  # the original is untouched
    assert frozen[0] is not model[0]
    assert frozen.num_params()[0] == model.num_params()[0] - 2 * (6 + 6)
    one = FrozenBatchNorm.from_batch_norm(model[2][1])
    np.testing.assert_array_equal(one.buffers["running_var"], model[2][1].buffers["running_var"])
    with pytest.raises(ValueError, match="fuses"):
        FrozenBatchNorm.from_batch_norm(model[1])
    with pytest.raises(ValueError, match="running statistics"):
        FrozenBatchNorm.from_batch_norm(BatchNorm(3, track_running_stats=False))
    with pytest.raises(TypeError, match="BatchNorm"):
        FrozenBatchNorm.from_batch_norm(Dense(2, 2))


def test_fold_a_frozen_model(rng):
    model = Sequential(Dense(4, 6, rng=0, dtype=np.float64), BatchNorm(6, dtype=np.float64))
    model = _trained(model, lambda: rng.normal(2.0, 3.0, (16, 4)))
    folded = fold_batch_norm(freeze_batch_norm(model).eval())
    assert [type(m).__name__ for m in folded] == ["Dense"]
    x = rng.normal(size=(3, 4))
    np.testing.assert_allclose(folded(x), model(x), rtol=0, atol=1e-10)
