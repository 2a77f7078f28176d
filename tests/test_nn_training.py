"""The Keras-style training loop on Sequential, and weights on disk."""

import io
import sys

import numpy as np
import pytest

from fastbn.nn import (
    SGD,
    BatchNorm,
    Dense,
    Dropout,
    History,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
)
from fastbn.nn import training as T


def _data(n=120, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(dtype)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return x, y


def _model(dtype=np.float32, seed=0):
    return Sequential(Dense(5, 16, use_bias=False, rng=seed, dtype=dtype),
                      BatchNorm(16, activation="relu", dtype=dtype),
                      Dense(16, 3, rng=seed + 1, dtype=dtype))


def test_fit_learns_and_returns_history():
    x, y = _data()
    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=("accuracy",))
    history = model.fit(x, y, epochs=8, batch_size=16, validation_split=0.25, seed=0,
                        verbose=0)
    assert isinstance(history, History)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 8 for v in history.history.values())
    assert history.epoch == list(range(8))
    assert history.params == {"epochs": 8, "steps": 6, "batch_size": 16}
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]
    assert model.training  # the mode it had


def test_validation_split_takes_the_last_samples_before_shuffling():
    x, y = _data(100)
    model = _model()
    model.compile(optimizer="sgd")
    history = model.fit(x, y, epochs=1, batch_size=10, validation_split=0.2, seed=3, verbose=0)
    expect = model.evaluate(x[80:], y[80:], batch_size=10)
    assert history.history["val_loss"][0] == pytest.approx(expect["loss"], rel=1e-6)
    assert history.history["val_accuracy"][0] == pytest.approx(expect["accuracy"])
    # validation_data takes precedence
    h2 = model.fit(x[:50], y[:50], epochs=1, validation_data=(x[:7], y[:7]), verbose=0)
    assert h2.history["val_loss"][0] == pytest.approx(model.evaluate(x[:7], y[:7])["loss"],
                                                      rel=1e-6)


def test_the_same_seed_gives_the_same_run():
    x, y = _data()
    runs = []
    for _ in range(2):
        model = _model(seed=4)
        model.compile(optimizer="adam")
        h = model.fit(x, y, epochs=3, batch_size=8, validation_split=0.2, seed=11, verbose=0)
        runs.append((h.history, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        assert np.array_equal(v, runs[1][1][k]), k
    model = _model(seed=4)
    model.compile(optimizer="adam")
    other = model.fit(x, y, epochs=3, batch_size=8, validation_split=0.2, seed=12, verbose=0)
    assert other.history != runs[0][0]


def test_modes_restored_by_fit_evaluate_predict():
    x, y = _data(40)
    model = _model()
    model.compile()
    model.eval()
    model[1].train()  # mixed modes come back as they were
    modes = [m.training for m in model.modules()]
    model.fit(x, y, epochs=1, verbose=0)
    assert [m.training for m in model.modules()] == modes
    model.train()
    seen = []
    original = model[1].forward

    def spy(x, *args, **kwargs):
        seen.append(model[1].training)
        return original(x, *args, **kwargs)

    model[1].forward = spy
    model.evaluate(x, y)
    model.predict(x)
    assert seen and not any(seen)
    assert all(m.training for m in model.modules())


def test_predict_and_evaluate_match_the_eval_forward():
    x, y = _data(70)
    model = _model(dtype=np.float64)
    model.compile()
    model.fit(x.astype(np.float64), y, epochs=2, verbose=0, seed=0)
    model.eval()
    logits = model(x.astype(np.float64))
    model.train()
    out = model.predict(x.astype(np.float64), batch_size=32)
    np.testing.assert_allclose(out, logits, rtol=1e-12, atol=1e-12)
    loss = SoftmaxCrossEntropy()(logits, y)
    got = model.evaluate(x.astype(np.float64), y, batch_size=16)
    assert got["loss"] == pytest.approx(loss, rel=1e-10)
    assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == y).mean()))


def test_fit_against_torch_same_loop():
    torch = pytest.importorskip("torch")
    x, y = _data(64, dtype=np.float64)
    model = Sequential(Dense(5, 8, rng=0, dtype=np.float64), BatchNorm(8, dtype=np.float64),
                       ReLU(), Dense(8, 3, rng=1, dtype=np.float64))
    t = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                            torch.nn.Linear(8, 3)).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    model.compile(optimizer=SGD(model, lr=0.1), metrics=())
    history = model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    opt = torch.optim.SGD(t.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        total = 0.0
        for start in range(0, 64, 16):
            xb, yb = torch.tensor(x[start:start + 16]), torch.tensor(y[start:start + 16])
            loss = torch.nn.functional.cross_entropy(t(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * 16
        losses.append(total / 64)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-10)
    for k, v in t.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=k)


def test_last_batch_of_one_joins_the_one_before():
    assert T._batches(33, 16) == [slice(0, 16), slice(16, 33)]
    assert T._batches(34, 16) == [slice(0, 16), slice(16, 32), slice(32, 34)]
    assert T._batches(1, 16) == [slice(0, 1)]
    x, y = _data(33)
    model = _model()
    model.compile()
    h = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert h.params["steps"] == 2


def test_errors():
    x, y = _data(20)
    model = _model()
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y, verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        model.evaluate(x, y)
    with pytest.raises(ValueError, match="optimizer"):
        model.compile(optimizer="rmsprop")
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="metrics"):
        model.compile(metrics=("auc",))
    with pytest.raises(ValueError, match="not in this model"):
        model.compile(optimizer=SGD(Dense(2, 2), lr=0.1))
    model.compile()
    with pytest.raises(ValueError, match="same length"):
        model.fit(x, y[:-1], verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=1.0, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="integer"):
        model.fit(x, y.astype(np.float32), verbose=0)
    with pytest.raises(ValueError, match="verbose"):
        model.fit(x, y, verbose=3)


def test_verbose_output(capsys):
    pytest.importorskip("tqdm")
    x, y = _data(40)
    model = _model()
    model.compile()
    model.fit(x, y, epochs=2, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    model.fit(x, y, epochs=2, verbose=1)
    out = capsys.readouterr()
    assert "Epoch 1/2" in out.err and "Epoch 2/2" in out.err and "loss=" in out.err
    model.fit(x, y, epochs=2, verbose=2, validation_split=0.25)
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("Epoch 2/2 - loss: ")
    assert "val_accuracy" in lines[1]


def test_blas_limited_once_per_fit(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    calls = []

    class Limits:
        def __init__(self, limits=None, user_api=None):
            calls.append((limits, user_api))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", Limits)
    x, y = _data(64)
    model = _model()
    model.compile()
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert calls == [(1, "blas")]
    monkeypatch.setattr(T, "FIT_BLAS_THREADS", None)  # the opt-out
    model.fit(x, y, epochs=1, verbose=0)
    assert calls == [(1, "blas")]


def test_fit_without_threadpoolctl(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    x, y = _data(32)
    model = _model()
    model.compile()
    assert len(model.fit(x, y, epochs=1, verbose=0).history["loss"]) == 1


def test_dropout_seeded_run_is_reproducible():
    x, y = _data(48)
    results = []
    for _ in range(2):
        model = Sequential(Dense(5, 8, rng=0), ReLU(), Dropout(0.3, rng=5), Dense(8, 3, rng=1))
        model.compile()
        results.append(model.fit(x, y, epochs=2, seed=1, verbose=0).history)
    assert results[0] == results[1]


# --- weights on disk -----------------------------------------------------------------


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
