"""Weights on disk: Module.save_weights / load_weights (.npz of state_dict(), all or nothing)."""

import io

import numpy as np
import pytest

from fastbn.nn import BatchNorm, Dense, Sequential


def _data(n=120, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(dtype)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return x, y


def _model(dtype=np.float32, seed=0):
    return Sequential(Dense(5, 16, use_bias=False, rng=seed, dtype=dtype),
                      BatchNorm(16, activation="relu", dtype=dtype),
                      Dense(16, 3, rng=seed + 1, dtype=dtype))


def test_save_and_load_weights_round_trip(tmp_path):
    x, y = _data(40)
    model = _model()
    model.compile()
    model.fit(x, y, epochs=2, verbose=0, seed=0)
    model.save_weights(tmp_path / "w")  # .npz appended, as np.savez does
    assert (tmp_path / "w.npz").exists()
    with np.load(tmp_path / "w.npz") as data:
        assert sorted(data.files) == sorted(model.state_dict())
    clone = _model(seed=9)
    clone.load_weights(str(tmp_path / "w.npz"))
    for k, v in model.state_dict().items():
        assert np.array_equal(clone.state_dict()[k], v), k
        assert clone.state_dict()[k].dtype == v.dtype
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    buf = io.BytesIO()
    model.save_weights(buf)
    buf.seek(0)
    third = _model(seed=3)
    third.load_weights(buf)
    np.testing.assert_array_equal(third.predict(x), model.predict(x))


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_load_weights_is_all_or_nothing(tmp_path, change):
    model = _model()
    state = model.state_dict()
    if change == "missing":
        del state["2.bias"]
    elif change == "extra":
        state["3.weight"] = np.ones(2, np.float32)
    else:
        state["2.bias"] = np.ones(4, np.float32)
    for k in state:
        if k.endswith("weight") and state[k].ndim == 2:
            state[k] = state[k] + 1  # would change the model if anything were written
    np.savez(tmp_path / "bad.npz", **state)
    target = _model(seed=5)
    before = target.state_dict()
    with pytest.raises(ValueError, match="2.bias|3.weight"):
        target.load_weights(tmp_path / "bad.npz")
    for k, v in target.state_dict().items():
        assert np.array_equal(v, before[k]), k


def test_load_weights_from_torch(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.nn.Sequential(torch.nn.Linear(5, 16, bias=False), torch.nn.BatchNorm1d(16),
                            torch.nn.Linear(16, 3))
    t(torch.randn(8, 5))  # running statistics
    np.savez(tmp_path / "t.npz", **{k: v.numpy() for k, v in t.state_dict().items()})
    model = _model()
    model.load_weights(tmp_path / "t.npz")
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    model.eval()
    t.eval()
    relu_between = torch.nn.Sequential(t[0], t[1], torch.nn.ReLU(), t[2])
    np.testing.assert_allclose(model(x), relu_between(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_load_weights_appends_npz_and_reads_file_objects(tmp_path):
    model = _model(seed=2)
    model.save_weights(str(tmp_path / "m"))
    clone = _model(seed=4)
    clone.load_weights(tmp_path / "m")  # .npz appended on load too
    for k, v in model.state_dict().items():
        assert np.array_equal(clone.state_dict()[k], v), k
    buf = io.BytesIO()
    np.savez(buf, **model.state_dict())
    buf.seek(0)
    third = _model(seed=6)
    third.load_weights(buf)
    for k, v in model.state_dict().items():
        assert np.array_equal(third.state_dict()[k], v), k


def test_float64_file_loads_into_float32_model(tmp_path):
    source = _model(dtype=np.float64, seed=1)
    source.save_weights(tmp_path / "f64.npz")
    target = _model(seed=3)
    target.load_weights(tmp_path / "f64.npz")
    for k, v in target.state_dict().items():
        assert v.dtype == _model().state_dict()[k].dtype, k
        np.testing.assert_array_equal(v, source.state_dict()[k].astype(v.dtype))


def test_wrong_dtype_counter_is_a_type_error_and_changes_nothing(tmp_path):
    model = _model()
    state = model.state_dict()
    key = next(k for k in state if k.endswith("num_batches_tracked"))
    state[key] = np.asarray(1.5)
    state["0.weight"] = state["0.weight"] + 1
    np.savez(tmp_path / "bad.npz", **state)
    before = model.state_dict()
    with pytest.raises(TypeError, match="num_batches_tracked"):
        model.load_weights(tmp_path / "bad.npz")
    for k, v in model.state_dict().items():
        assert np.array_equal(v, before[k]), k
