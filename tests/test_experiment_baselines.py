"""Experiment baselines (the MNIST-1D paper's models and protocol), and the MNIST-1D runs of
convergence, learning-rate and init, on synthetic 1-D signals (the real generator is tested
in test_data.py)."""

import math
import re

import numpy as np
import pytest

from fastbn import cli, experiments
from fastbn.experiments import (
    baselines,
    convergence,
    data,
    init_scale,
    learning_rate,
    report,
    train,
)
from fastbn.nn import BatchNorm, Conv1d, Dense

CLAIM = re.compile(r"^Claim '[^']+'(?: \([^)]+\))?: (REPRODUCED|NOT REPRODUCED|"
                   r"PARTLY REPRODUCED)( \([^)]*\))? -- .+$")
COLUMNS = {"dataset", "model", "seed", "epoch", "train_loss", "val_loss", "val_accuracy",
           "diverged"}


@pytest.fixture(scope="module")
def signals():
    """A learnable stand-in for MNIST-1D: (N, 1, 40) signals whose class sets a bump's
    position, 300 training and 100 validation samples, named "mnist1d"."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n)
        t = np.arange(40)
        x = np.exp(-0.5 * ((t[None, :] - 3 - 3.5 * y[:, None]) / 2.0) ** 2)
        x = x + 0.3 * rng.standard_normal((n, 40))
        return x[:, None, :].astype(np.float32), y.astype(np.int64)

    x_train, y_train = make(300)
    x_val, y_val = make(100)
    return data.Dataset("mnist1d", x_train, y_train, x_val, y_val, 10)


@pytest.fixture(scope="module")
def tiny(signals):
    config = baselines.make_config("tiny", 0)
    with train.single_threaded_blas():
        rows = baselines.run(config, signals, progress=False)
    return config, rows


def test_models_are_the_papers():
    rng = np.random.default_rng(0)
    ds = data.Dataset("mnist1d", np.zeros((4, 1, 40), np.float32), np.zeros(4, np.int64),
                      np.zeros((4, 1, 40), np.float32), np.zeros(4, np.int64), 10)
    logreg = baselines.build("logistic regression", ds, rng=rng)
    assert [type(m).__name__ for m in logreg] == ["Dense"]
    assert logreg[0].params["weight"].shape == (10, 40)
    mlp = baselines.build("MLP", ds, rng=rng)
    assert [m.params["weight"].shape for m in mlp if isinstance(m, Dense)] == [
        (100, 40), (100, 100), (10, 100)]
    cnn = baselines.build("CNN", ds, rng=rng)
    convs = [m for m in cnn if isinstance(m, Conv1d)]
    assert [(c.params["weight"].shape, c.stride, c.padding) for c in convs] == [
        ((25, 1, 5), 2, 1), ((25, 25, 3), 2, 1), ((25, 25, 3), 2, 1)]
    assert all(c.use_bias for c in convs) and not any(isinstance(m, BatchNorm) for m in cnn)
    assert cnn[-1].params["weight"].shape == (10, 125)        # 25 channels x 5 positions
    assert cnn(np.zeros((3, 1, 40), np.float32)).shape == (3, 10)
    cnn_bn = baselines.build("CNN BN", ds, rng=rng)
    assert sum(isinstance(m, BatchNorm) for m in cnn_bn) == 3
    assert not any(c.use_bias for c in cnn_bn if isinstance(c, Conv1d))
    with pytest.raises(ValueError, match="unknown model"):
        baselines.build("GRU", ds)


def test_configs():
    full, quick = baselines.make_config("full"), baselines.make_config("quick", 3)
    assert (full.lr, full.batch_size, full.epochs, full.steps) == (1e-2, 100, 200, 8000)
    assert len(full.seeds) == 5 and quick.seeds == (3, 4) and quick.epochs < full.epochs
    assert experiments.default_data("baselines") == "mnist1d"
    assert experiments.default_data("convergence") is None


def test_tiny_table_summary_and_plot(tiny, tmp_path):
    config, rows = tiny
    assert rows and all(set(r) == COLUMNS for r in rows)
    assert {r["model"] for r in rows} == set(baselines.MODELS)
    assert {r["seed"] for r in rows} == {0, 1}
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in rows if not r["diverged"])
    table, verdicts = baselines.summarize(rows, config)
    assert [t["model"] for t in table] == list(baselines.MODELS)
    assert [t["paper %"] for t in table] == ["32", "68", "94", "68 (MLP)", "94 (CNN)"]
    assert len(verdicts) == 3 and all(CLAIM.match(v) for v in verdicts), verdicts
    baselines.plot(rows, config, tmp_path / "b.png", caption="test")
    assert (tmp_path / "b.png").stat().st_size > 1000


def _rows(model, finals, config):
    return [{"model": model, "seed": s, "epoch": config.epochs, "val_accuracy": a,
             "diverged": False} for s, a in zip(config.seeds, finals, strict=True)]


def test_verdict_thresholds():
    config = baselines.make_config("full")
    near = _rows("CNN", [0.93, 0.935, 0.94, 0.945, 0.95], config)
    assert ": REPRODUCED -- " in baselines._verdict(near, "CNN", config)
    low = _rows("CNN", [0.89, 0.895, 0.90, 0.895, 0.89], config)
    line = baselines._verdict(low, "CNN", config)
    assert "NOT REPRODUCED (lower)" in line and "-4.6 points" in line
    # a wide spread over seeds widens the match to twice the std
    wide = _rows("MLP", [0.55, 0.75, 0.55, 0.75, 0.65], config)
    m, s, _ = report.mean_std(r["val_accuracy"] for r in wide)
    assert 2 * s > 0.03 and ": REPRODUCED -- " in baselines._verdict(wide, "MLP", config)
    diverged = [dict(r, diverged=True) for r in near]
    assert "NOT REPRODUCED (diverged)" in baselines._verdict(diverged, "CNN", config)


def test_refuses_images(capsys, tmp_path):
    digits = data.load_digits()
    with pytest.raises(ValueError, match=r"needs 1-D signals .* shape \(1, 8, 8\)"):
        baselines.run(baselines.make_config("tiny"), digits, progress=False)
    assert cli.main(["experiment", "baselines", "--tiny", "--data", "digits",
                     "--out", str(tmp_path)]) == 2
    assert "1-D signals" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_defaults_to_mnist1d(signals, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(data, "load_mnist1d", lambda: signals)
    assert cli.main(["experiment", "baselines", "--tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fastbn experiment baselines --tiny --data mnist1d" in out
    assert {r["dataset"] for r in report.read_csv(tmp_path / "baselines.csv")} == {"mnist1d"}


# --- the re-runs on MNIST-1D -------------------------------------------------------------


def test_mnist1d_configs_of_the_reruns():
    conv = convergence.make_config("full", 0, "mnist1d")
    assert conv.models == convergence.MODELS + convergence.CNN_MODELS
    assert [p[0] for p in conv.pairs] == ["MLP", "CNN"]
    assert (conv.target("BN"), conv.target("CNN no BN")) == (0.6, 0.8)
    assert len(conv.seeds) == 10 and conv.max_train is None
    assert convergence.make_config("full", 0, "digits").pairs == [("MLP", "BN", "no BN")]
    for mod in (learning_rate, init_scale):
        cfg = mod.make_config("full", 0, "mnist1d")
        assert cfg.ok_accuracy == 0.6 and cfg.epochs == 30 and len(cfg.seeds) == 5
        assert cfg.max_train is None
        assert mod.make_config("full", 0, "mnist").ok_accuracy == 0.9


def test_convergence_trains_the_cnn_pair_on_signals(signals, tmp_path):
    config = convergence.make_config("tiny", 0, "mnist1d")
    with train.single_threaded_blas():
        rows = convergence.run(config, signals, progress=False)
    assert {r["model"] for r in rows} == {"BN", "no BN", "CNN BN", "CNN no BN"}
    table, verdicts = convergence.summarize(rows, config)
    assert [t["target"] for t in table] == ["60%", "60%", "80%", "80%"]
    tags = [re.match(r"Claim '[^']+' \((\w+)\)", v).group(1) for v in verdicts]
    assert tags == ["MLP", "MLP", "CNN", "CNN"]
    convergence.plot(rows, config, tmp_path / "c.png", caption="test")
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert all(math.isfinite(r["val_accuracy"]) for r in rows if not r["diverged"])
