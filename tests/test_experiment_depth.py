"""The depth experiment: the probe at init, the tiny run, the summary's verdicts."""

import math
import re

import numpy as np
import pytest

from fastbn.experiments import data, depth, report, train

CLAIM = re.compile(r"^Claim '[^']+'(?: \([^)]+\))?: [A-Z][A-Z ]+(?: \(.+?\))? -- .+$")

INIT_COLUMNS = {"dataset", "part", "model", "depth", "init_scale", "seed", "layer", "act_std",
                "grad_norm"}
TRAIN_COLUMNS = {"dataset", "part", "model", "depth", "init_scale", "seed", "epoch", "step",
                 "train_loss", "val_loss", "val_accuracy", "diverged"}


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def tiny(digits):
    config = depth.make_config("tiny", seed=5, dataset="digits")
    return config, depth.run(config, digits, progress=False)


def test_configs():
    full = depth.make_config("full", 0, "digits")
    assert full.depths == (2, 5, 10, 20, 50) and full.probe_depth == 10
    assert full.scales == (0.5, 0.8, 1.0, 1.25, 2.0)
    assert 64 <= full.width <= 128 and full.batch_size == 64 and len(full.seeds) == 5
    quick = depth.make_config("quick", 3, "digits")
    assert quick.depths == (2, 10, 20) and quick.seeds == (3, 4) and quick.epochs <= 2
    assert depth.make_config("full", 0, "mnist1d").target_accuracy == 0.5
    assert depth.make_config("full", 0, "mnist").max_train == 20000


def test_tiny_rows(tiny):
    config, rows = tiny
    init = [r for r in rows if r["part"] == "init"]
    trained = [r for r in rows if r["part"] == "train"]
    assert len(init) == 2 * len(config.scales) * 2 * config.probe_depth
    assert len(trained) == 2 * len(config.depths) * 2 * (config.epochs + 1)
    assert all(set(r) == INIT_COLUMNS for r in init)
    assert {frozenset(r) for r in trained} == {
        frozenset(TRAIN_COLUMNS | {"act_std_ratio", "grad_ratio"}), frozenset(TRAIN_COLUMNS)}
    assert all(("grad_ratio" in r) == (r["epoch"] == 0) for r in trained)
    assert {r["seed"] for r in rows} == {5, 6}
    for r in rows:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float)), r
        assert r.get("val_accuracy", 0.5) <= 1.0


def test_tiny_summary_plot_and_csv_round_trip(tiny, tmp_path):
    config, rows = tiny
    table, verdicts = depth.summarize(rows, config)
    assert len(table) == 2 * (len(config.scales) + len(config.depths))
    assert len(verdicts) == 3 and all(CLAIM.match(v) for v in verdicts), verdicts
    report.write_csv(rows, tmp_path / "depth.csv")
    back = report.read_csv(tmp_path / "depth.csv")
    assert depth.summarize(back, config) == (table, verdicts)
    depth.plot(back, config, tmp_path / "depth.png", caption="test")
    assert (tmp_path / "depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probe_follows_the_theory(digits):
    """Without BN (zero biases, ReLU), scaling every weight by a scales layer l's output
    by exactly a ** l; with BN the hidden outputs do not depend on the scale."""
    x = digits.x_train[:64].reshape(64, -1)
    y = digits.y_train[:64]

    def probe(bn, scale):
        model = train.mlp(64, 10, bn=bn, hidden=(32,) * 6, init_scale=scale,
                          rng=np.random.default_rng(0))
        return depth.probe(model, x, y)

    for scale in (0.5, 2.0):
        base, scaled = probe(False, 1.0)[0], probe(False, scale)[0]
        assert np.allclose(np.array(scaled) / base, scale ** np.arange(1, 7), rtol=1e-4)
        assert np.allclose(probe(True, scale)[0], probe(True, 1.0)[0], rtol=1e-3)
    stds, grads, loss = probe(True, 1.0)
    assert len(stds) == len(grads) == 6 and math.isfinite(loss)
    assert all(s > 0 for s in stds) and all(g > 0 for g in grads)


def test_helpers():
    assert depth.gain(8.0, 4) == pytest.approx(2.0)
    assert math.isnan(depth.gain(3.0, 1)) and math.isnan(depth.gain(0.0, 5))
    assert [depth.num(v) for v in (0.00213, 0.5, 1.0, 4.56, 506.3, 1.2e7, 2e-5)] == [
        "0.0021", "0.50", "1.0", "4.6", "506", "1.2e+07", "2.0e-05"]


def _train_rows(acc: dict, seeds=(0, 1), epochs=2) -> list[dict]:
    """Synthetic part-2 rows: ``acc[(model, depth)]`` is the accuracy of every epoch >= 1."""
    rows = []
    for (model, d), a in acc.items():
        for seed in seeds:
            rows.append({"part": "train", "model": model, "depth": d, "seed": seed, "epoch": 0,
                         "train_loss": math.nan, "val_accuracy": 0.1, "act_std_ratio": 1.0,
                         "grad_ratio": 2.0, "diverged": False})
            rows += [{"part": "train", "model": model, "depth": d, "seed": seed, "epoch": e,
                      "train_loss": 1.0, "val_accuracy": a, "diverged": False}
                     for e in range(1, epochs + 1)]
    return rows


@pytest.mark.parametrize("bn_deep, no_deep, word", [
    (0.95, 0.30, "REPRODUCED"),
    (0.95, 0.95, "NOT REPRODUCED (both train at every depth)"),
    (0.30, 0.30, "NOT REPRODUCED (both train at the same depths)"),
    (0.30, 0.95, "NOT REPRODUCED (no BN trains deeper)"),
])
def test_depth_verdict(bn_deep, no_deep, word):
    config = depth.Config(depths=(2, 50), epochs=2, seeds=(0, 1))
    rows = _train_rows({("BN", 2): 0.95, ("no BN", 2): 0.95,
                        ("BN", 50): bn_deep, ("no BN", 50): no_deep})
    stats = {(m, d): depth.train_stats(rows, m, d, config)
             for d in config.depths for m in depth.MODELS}
    line = depth._depth_verdict(stats, {}, config)
    assert line.split(": ", 1)[1].startswith(word + " -- "), line
    assert stats[("BN", 2)]["epochs"][:2] == (1.0, 0.0)
