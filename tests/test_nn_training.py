"""The Keras-style training loop on Sequential, and weights on disk."""

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
    # batches of 24, 24 and a partial 16: Keras trains the partial batch and weights
    # each batch's mean loss by its size in the epoch's loss
    history = model.fit(x, y, epochs=3, batch_size=24, shuffle=False, verbose=0)
    opt = torch.optim.SGD(t.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        total = 0.0
        for start in range(0, 64, 24):
            xb, yb = torch.tensor(x[start:start + 24]), torch.tensor(y[start:start + 24])
            loss = torch.nn.functional.cross_entropy(t(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(yb)
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
