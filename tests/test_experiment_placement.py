"""Experiment ``placement``: the models, the bias-gradient measure, a tiny run, the verdicts."""

import dataclasses
import math
import re

import numpy as np
import pytest

from fastbn.experiments import data, placement, report, train
from fastbn.nn import BatchNorm, Dense, Dropout, ReLU, SoftmaxCrossEntropy

COLUMNS = {"dataset", "variant", "seed", "epoch", "train_loss", "train_eval_loss",
           "train_accuracy", "val_loss", "val_accuracy", "bias_ratio_max", "bias_ratio_min",
           "bias_abs_max", "diverged"}

#: generate.parse_claim's pattern: every verdict line must fit it.
CLAIM = re.compile(r"^Claim '(?P<claim>[^']+)'(?: \((?P<tag>[^)]+)\))?: (?P<word>.+?) -- .*$")


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def tiny_rows(digits):
    config = placement.make_config("tiny", seed=5, dataset="digits")
    with train.single_threaded_blas():
        return config, placement.run(config, digits, progress=False)


def test_configs():
    full, quick = placement.make_config("full"), placement.make_config("quick")
    assert (len(full.seeds), full.epochs) == (5, 20)
    assert (len(quick.seeds), quick.epochs) == (2, 3)
    assert full.variants == quick.variants == tuple(v.name for v in placement.VARIANTS)
    assert placement.make_config("full", 3).seeds == (3, 4, 5, 6, 7)
    assert placement.make_config("full", dataset="mnist1d").epochs == 30
    mnist = placement.make_config("quick", dataset="mnist")
    assert mnist.max_train == 2000
    assert len(placement.make_config("full", dataset="mnist").seeds) == 3
    assert full.hidden == (256, 128, 64) and full.lr == 1e-3 and full.batch_size == 32
    for names in placement.COMPARISONS.values():
        assert set(names) <= set(full.variants)


def test_models_share_initial_weights_and_have_the_right_layers():
    kinds = {}
    weights = {}
    for v in placement.VARIANTS:
        init_rng, drop_rng = train.seed_rngs(7, "init", "dropout")
        model = placement.build(v, 64, 10, rng=init_rng, dropout_rng=drop_rng)
        assert model(np.zeros((4, 64), np.float32)).shape == (4, 10)
        kinds[v.name] = [type(m).__name__ for m in model][:4]
        dense = [m for m in model if isinstance(m, Dense)]
        assert [d.use_bias for d in dense] == [v.bias] * 3 + [True]
        assert sum(isinstance(m, Dropout) for m in model) == (3 if v.dropout else 0)
        assert all(m.p == 0.3 for m in model if isinstance(m, Dropout))
        weights[v.name] = [d.params["weight"] for d in dense]
    assert kinds["no norm"] == ["Dense", "ReLU", "Dense", "ReLU"]
    assert kinds["BN -> ReLU"] == ["Dense", "BatchNorm", "Dense", "BatchNorm"]
    assert kinds["ReLU -> BN"] == ["Dense", "ReLU", "BatchNorm", "Dense"]
    assert kinds["ReLU -> BN -> Dropout"] == ["Dense", "ReLU", "BatchNorm", "Dropout"]
    assert kinds["BN -> ReLU -> Dropout"] == ["Dense", "BatchNorm", "Dropout", "Dense"]
    first = weights["no norm"]
    for name, ws in weights.items():       # the same weights in every variant
        assert all(np.array_equal(a, b) for a, b in zip(ws, first, strict=True)), name
    fused = placement.build("BN -> ReLU", 64, 10)
    assert [m.activation for m in fused if isinstance(m, BatchNorm)] == ["relu"] * 3
    assert isinstance(placement.build("ReLU -> BN", 64, 10)[1], ReLU)
    assert placement.BY_NAME["BN -> ReLU -> Dropout"].layers == (
        "Dense(use_bias=False) -> BN -> ReLU -> Dropout(0.3)")
    with pytest.raises(ValueError, match="unknown order"):
        placement.build(placement.Variant("x", "bn-bn", True), 64, 10)


def test_bias_gradient_is_rounding_under_bn_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 64)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    crit = SoftmaxCrossEntropy()
    ratios = {}
    for name in ("BN -> ReLU, bias", "ReLU -> BN", "no norm", "BN -> ReLU"):
        model = placement.build(name, 64, 10, rng=np.random.default_rng(1))
        crit(model(x), y)
        model.backward(crit.backward())
        ratios[name] = placement.bias_grad_ratios(model)
    assert ratios["BN -> ReLU"] == []                       # no bias at all
    assert len(ratios["BN -> ReLU, bias"]) == 3
    assert max(ratios["BN -> ReLU, bias"]) < placement.ROUNDING_RATIO
    assert min(ratios["ReLU -> BN"]) > 1e-3 and min(ratios["no norm"]) > 1e-3


def test_tiny_run_table_summary_and_figure(tiny_rows, tmp_path):
    config, rows = tiny_rows
    assert len(rows) == len(config.variants) * len(config.seeds) * config.epochs
    assert all(set(r) == COLUMNS for r in rows)
    assert {r["seed"] for r in rows} == {5, 6}
    for r in rows:
        assert not r["diverged"]
        assert 0.0 <= r["val_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0
        biased = placement.BY_NAME[r["variant"]].bias
        assert math.isfinite(r["bias_ratio_max"]) == biased
        if r["variant"] == "BN -> ReLU, bias":
            assert r["bias_ratio_max"] < placement.ROUNDING_RATIO
    table, verdicts = placement.summarize(rows, config)
    assert [t["variant"] for t in table] == list(config.variants)
    assert len(verdicts) == 5
    claims = [CLAIM.match(v) for v in verdicts]
    assert all(claims), verdicts
    assert [c["claim"] for c in claims] == [
        "BN before the activation", "the bias before BN is redundant",
        "the bias before BN is redundant", "BN and dropout combine", "BN and dropout combine"]
    assert claims[1]["word"] == "REPRODUCED"            # zero gradient, even in a tiny run
    assert "±" in report.format_table(table)
    placement.plot(rows, config, tmp_path / "fig.png", caption="test")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_round_trip_gives_the_same_summary(tiny_rows, tmp_path):
    config, rows = tiny_rows
    report.write_csv(rows, tmp_path / "placement.csv")
    back = report.read_csv(tmp_path / "placement.csv")
    for r in back:
        r["seed"], r["epoch"] = int(r["seed"]), int(r["epoch"])
    assert placement.summarize(back, config) == placement.summarize(rows, config)


def test_one_dimensional_signals():
    """MNIST-1D's shape, (N, 1, 40): the MLP flattens it."""
    rng = np.random.default_rng(0)
    ds = data.Dataset("mnist1d", rng.normal(size=(96, 1, 40)).astype(np.float32),
                      rng.integers(0, 10, 96), rng.normal(size=(40, 1, 40)).astype(np.float32),
                      rng.integers(0, 10, 40), 10)
    config = dataclasses.replace(placement.make_config("tiny", dataset="mnist1d"),
                                 variants=("BN -> ReLU", "no norm"), epochs=1)
    rows = placement.run(config, ds, progress=False)
    assert len(rows) == 4 and {r["dataset"] for r in rows} == {"mnist1d"}


def _rows(acc: dict[str, list[float]], train_acc: dict[str, list[float]] | None = None,
          ratio: float = 1e-7) -> list[dict]:
    """Synthetic final-epoch rows: per variant, one validation accuracy per seed."""
    rows = []
    for name, values in acc.items():
        for seed, a in enumerate(values):
            t = train_acc[name][seed] if train_acc else 1.0
            biased = placement.BY_NAME[name].bias
            r = ratio if name == "BN -> ReLU, bias" else 0.5
            rows.append({"dataset": "digits", "variant": name, "seed": seed, "epoch": 1,
                         "train_loss": 0.1, "train_eval_loss": 0.05, "train_accuracy": t,
                         "val_loss": 0.1 + (t - a), "val_accuracy": a,
                         "bias_ratio_max": r if biased else math.nan,
                         "bias_ratio_min": r / 2 if biased else math.nan,
                         "bias_abs_max": 0.01 if biased else math.nan, "diverged": False})
    return rows


def _words(rows) -> list[str]:
    config = placement.make_config("tiny")
    return [CLAIM.match(v)["word"] for v in placement.summarize(rows, config)[1]]


def test_verdict_words():
    base = {"no norm": [0.95, 0.96, 0.95], "BN -> ReLU": [0.97, 0.975, 0.972],
            "BN -> ReLU, bias": [0.97, 0.975, 0.972], "ReLU -> BN": [0.96, 0.962, 0.961],
            "ReLU -> BN -> Dropout": [0.965, 0.968, 0.966],
            "BN -> ReLU -> Dropout": [0.95, 0.952, 0.951]}
    train_acc = {n: [1.0] * 3 for n in base}
    train_acc["BN -> ReLU -> Dropout"] = [0.96, 0.963, 0.961]   # a narrower gap
    words = _words(_rows(base, train_acc))
    assert words == ["REPRODUCED", "REPRODUCED", "REPRODUCED", "REPRODUCED",
                     "PARTLY REPRODUCED (a narrower gap, a lower accuracy)"]
    # ReLU -> BN ahead; the bias's gradient above rounding; the bias changes the accuracy
    worse = dict(base, **{"ReLU -> BN": [0.98, 0.985, 0.981],
                          "BN -> ReLU, bias": [0.96, 0.961, 0.962]})
    words = _words(_rows(worse, train_acc, ratio=1e-2))
    assert words[:3] == ["NOT REPRODUCED (ReLU -> BN is better)",
                         "NOT REPRODUCED (the gradient is above rounding)",
                         "NOT REPRODUCED (the bias hurts)"]
    assert words[3] == "NOT REPRODUCED (lower accuracy, no narrower gap)"
    # equal within the spread; dropout neither hurts nor narrows the gap
    same = dict(base, **{"ReLU -> BN": [0.97, 0.976, 0.971],
                         "ReLU -> BN -> Dropout": [0.97, 0.976, 0.971]})
    words = _words(_rows(same, train_acc))
    assert words[0] == "NOT REPRODUCED (within the spread over seeds)"
    assert words[3] == "PARTLY REPRODUCED (no harm, but the gap is not narrower)"


def _gen_placement():
    import importlib
    import sys
    from pathlib import Path

    ext = str(Path(__file__).resolve().parents[1] / "docs" / "_ext")
    if ext not in sys.path:
        sys.path.insert(0, ext)
    return importlib.import_module("gen_placement")


def test_page_snippets_from_the_committed_csv():
    from pathlib import Path

    csv = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "placement.csv"
    if not csv.exists():
        pytest.skip("no committed placement.csv")
    gen = _gen_placement()
    out, claims = gen.snippets(report.read_csv(csv))
    assert set(out) == {"placement-table.md", "placement-verdict.md", "placement-output.md"}
    assert out["placement-table.md"].count("\n") == 2 + len(placement.VARIANTS)
    assert out["placement-verdict.md"].count("\n- ") == 4 and "****" not in out[
        "placement-verdict.md"]
    assert out["placement-output.md"].startswith("```text\n") and "Claim 'BN" in out[
        "placement-output.md"]
    assert len(claims) == 5
    assert all(set(c) == {"claim", "page", "verdict", "measured"} for c in claims)
    assert {c["page"] for c in claims} == {"placement"}
    assert all(c["verdict"].startswith("**") for c in claims)


def test_page_snippets_refuse_another_runs_seeds(tiny_rows):
    gen = _gen_placement()
    with pytest.raises(ValueError, match="seeds"):
        gen.snippets(tiny_rows[1])
