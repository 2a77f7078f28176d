"""The ics experiment: Santurkar et al.'s gradient-based internal covariate shift."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fastbn.experiments import data, ics, report, santurkar, train
from fastbn.nn import Dense, Sequential

ROOT = Path(__file__).resolve().parents[1]
CLAIM = re.compile(r"^Claim '[^']+'(?: \([^)]+\))?: (REPRODUCED|NOT REPRODUCED|"
                   r"PARTLY REPRODUCED)( \([^)]*\))? -- .+$")


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def tiny(digits):
    config = ics.make_config("tiny", 0, digits.name)
    with train.single_threaded_blas():
        rows = ics.run(config, digits, progress=False)
    return config, rows


def _model(kind, seed=0, hidden=(8, 7, 6)):
    init, noise = train.seed_rngs(seed, "init", "noise")
    return santurkar.network(12, 5, kind=kind, hidden=hidden, rng=init, noise_rng=noise)


def _batch(seed=0, n=32):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 5, n)


def _state(model):
    noise = [m.rng.bit_generator.state for m in model.modules()
             if isinstance(m, santurkar.BatchNoise)]
    return {k: v.copy() for k, v in model.state_dict().items()}, noise


# --- the measure on cases with a known answer -------------------------------------------


@pytest.mark.parametrize("kind", santurkar.KINDS)
def test_no_update_of_the_preceding_layers_gives_no_shift(kind):
    model = _model(kind)
    x, y = _batch()
    out = ics.ics(model, x, y, lr=0.0)
    assert [r["layer"] for r in out] == [2, 3, 4]
    for r in out:
        assert r["diff"] == 0 and r["rel_diff"] == 0 and r["g_norm"] > 0
        assert r["g_prime_norm"] == r["g_norm"] and r["cos"] == pytest.approx(1, abs=1e-12)


def test_two_layer_linear_network_by_hand():
    rng = np.random.default_rng(3)
    model = Sequential(Dense(6, 4, rng=rng, dtype=np.float64),
                       Dense(4, 3, rng=rng, dtype=np.float64))
    model.layers[0].params["bias"][...] = rng.normal(size=4)
    model.layers[1].params["bias"][...] = rng.normal(size=3)
    x, y = rng.normal(size=(10, 6)), rng.integers(0, 3, 10)
    lr = 0.3
    w1, b1 = (model.layers[0].params[k].copy() for k in ("weight", "bias"))
    w2, b2 = (model.layers[1].params[k].copy() for k in ("weight", "bias"))

    def grads(w1, b1):       # softmax cross-entropy, mean over the batch
        h = x @ w1.T + b1
        z = h @ w2.T + b2
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d = (p - np.eye(3)[y]) / len(y)
        dh = d @ w2
        return d.T @ h, dh.T @ x, dh.sum(0)

    g2, g1w, g1b = grads(w1, b1)
    g2_prime, _, _ = grads(w1 - lr * g1w, b1 - lr * g1b)
    (r,) = ics.ics(model, x, y, lr)
    assert r["layer"] == 2
    assert r["g_norm"] == pytest.approx(np.linalg.norm(g2), rel=1e-10)
    assert r["g_prime_norm"] == pytest.approx(np.linalg.norm(g2_prime), rel=1e-10)
    assert r["diff"] == pytest.approx(np.linalg.norm(g2 - g2_prime), rel=1e-8)
    cos = np.sum(g2 * g2_prime) / np.linalg.norm(g2) / np.linalg.norm(g2_prime)
    assert r["cos"] == pytest.approx(cos, rel=1e-10)
    assert r["diff"] > 0
    # the bias of layer 1 is a preceding parameter: without its update G' differs
    no_bias, _, _ = grads(w1 - lr * g1w, b1)
    assert np.linalg.norm(g2 - no_bias) != pytest.approx(r["diff"], rel=1e-3)
    np.testing.assert_array_equal(model.layers[0].params["weight"], w1)


@pytest.mark.parametrize("kind", ["BN", "noisy BN"])
def test_preceding_layers_include_batch_norm_and_nothing_after(kind):
    """G' of Dense i is the gradient of a copy whose Dense and BatchNorm parameters before
    Dense i (only those) took the SGD step; the model itself is left as it was."""
    model = _model(kind)
    x, y = _batch(1)
    lr = 0.5
    before = _state(model)
    out = ics.ics(model, x, y, lr)
    after = _state(model)
    assert before[1] == after[1]
    for k, v in before[0].items():
        np.testing.assert_array_equal(after[0][k], v)
    _, grads = santurkar.loss_and_grads(model, x, y)
    dense = santurkar.weight_layers(model)
    for r in out:
        target = dense[r["layer"] - 1]
        other = copy.deepcopy(model)
        pairs = list(zip(santurkar.parameters(model), santurkar.parameters(other),
                         grads, strict=True))
        stop = model._unique_modules().index(target)
        for (m, name), (m2, name2), g in pairs:
            if model._unique_modules().index(m) < stop:
                m2.params[name2][...] = m.params[name] - lr * g
        _, moved = santurkar.loss_and_grads(other, x, y)
        k = [i for i, (m, n) in enumerate(santurkar.parameters(model))
             if m is target and n == "weight"][0]
        expect = ics.compare(grads[k], moved[k])
        for key in ics.MEASURES:
            assert r[key] == pytest.approx(expect[key], rel=1e-6, abs=1e-12), (r, key)
        assert r["diff"] > 0 and -1 <= r["cos"] <= 1


@pytest.mark.parametrize("kind", santurkar.KINDS)
def test_measuring_does_not_change_the_trajectory(kind, digits):
    small = digits.subset(200, 50)
    x = small.x_train.reshape(len(small.y_train), -1)
    finals, seen = [], []
    for measure in (False, True):
        init, order, noise = train.seed_rngs(2, "init", "order", "noise")
        model = santurkar.network(64, 10, kind=kind, hidden=(16, 16), rng=init,
                                  noise_rng=noise)
        got = []
        ics.train_run(model, x, small.y_train, lr=0.1, steps=8, batch_size=32,
                      order_rng=order, measure_at=tuple(range(9)) if measure else (),
                      on_measure=lambda step, loss, rows, got=got: got.append((step, loss)))
        finals.append(_state(model))
        seen.append(got)
    assert seen[0] == [] and [s for s, _ in seen[1]] == list(range(9))
    assert finals[0][1] == finals[1][1]
    for k, v in finals[0][0].items():
        np.testing.assert_array_equal(finals[1][0][k], v)


# --- the configuration and the run ------------------------------------------------------


def test_configs():
    full, quick = ics.make_config("full"), ics.make_config("quick", 3)
    assert full.seeds == (0, 1, 2, 3, 4) and quick.seeds == (3, 4)
    assert full.dataset == ics.DATA == "mnist1d" and full.batch_size == 64
    assert quick.steps < full.steps and quick.lrs == full.lrs
    for c in (full, quick):
        ck = c.checkpoints
        assert ck[0] == 0 and ck[-1] == c.steps and list(ck) == sorted(set(ck))
        assert set(c.linear) <= set(ck) and len(c.linear) == c.n_linear
    assert full.layers == (2, 3, 4, 5, 6)


def test_run_rows(tiny):
    config, rows = tiny
    assert {r["kind"] for r in rows} == {"ics", "train"}
    measured = [r for r in rows if r["kind"] == "ics"]
    n = len(config.lrs) * len(config.seeds) * len(ics.MODELS) * len(config.checkpoints)
    assert len(measured) == n * len(config.layers)
    assert set(measured[0]) == {"dataset", "lr", "model", "seed", "kind", "step", "layer",
                                *ics.MEASURES}
    assert {r["seed"] for r in rows} == set(config.seeds)
    assert {r["model"] for r in rows} == set(ics.MODELS)
    assert {r["layer"] for r in measured} == set(config.layers)
    for r in measured:
        assert all(math.isfinite(r[k]) for k in ics.MEASURES)
        assert -1 <= r["cos"] <= 1 and r["diff"] >= 0
        assert r["rel_diff"] == pytest.approx(r["diff"] / r["g_norm"], rel=1e-4)
    trained = [r for r in rows if r["kind"] == "train"]
    assert len(trained) == n and not any(r["diverged"] for r in trained)
    assert all(0 <= r["val_accuracy"] <= 1 for r in trained)


def test_summarize_verdicts_and_csv_round_trip(tiny, tmp_path):
    config, rows = tiny
    table, verdicts = ics.summarize(rows, config)
    assert len(table) == len(config.lrs) * len(config.layers) * len(ics.MODELS)
    assert [r["model"] for r in table[:3]] == list(ics.MODELS)
    assert table[-1]["layer"] == "output"
    assert len(verdicts) == 2 * len(config.lrs)
    for line in verdicts:
        assert CLAIM.match(line), line
    path = tmp_path / "ics.csv"
    report.write_csv(rows, path)
    assert ics.summarize(report.read_csv(path), config) == (table, verdicts)


def _synthetic(config, values):
    """ics rows with constant values per (model, measure); ``values[model] = (diff, rel,
    cos)``, seed noise +-1 %."""
    out = []
    for lr in config.lrs:
        for seed in config.seeds:
            for model in ics.MODELS:
                diff, rel, cos = values[model]
                jitter = 1 + 0.01 * (seed - config.seeds[0])
                for step in config.checkpoints:
                    out.append({"lr": lr, "model": model, "seed": seed, "kind": "train",
                                "step": step, "train_loss": 1.0, "val_accuracy": 0.5,
                                "diverged": False})
                    for layer in config.layers:
                        out.append({"lr": lr, "model": model, "seed": seed, "kind": "ics",
                                    "step": step, "layer": layer, "diff": diff * jitter,
                                    "rel_diff": rel * jitter, "cos": cos * jitter ** -0.01,
                                    "g_norm": 1.0, "g_prime_norm": 1.0})
    return out


def test_verdict_words():
    config = ics.make_config("tiny")
    same = (0.1, 0.1, 0.9)

    def words(bn):
        _, v = ics.summarize(_synthetic(config, {"standard": same, "BN": bn,
                                                 "noisy BN": same}), config)
        return [line.split(" -- ")[0].split(": ", 1)[1] for line in v]

    assert words((0.3, 0.3, 0.5)) == ["REPRODUCED"] * 4          # BN: more shift
    assert words((0.1, 0.1, 0.9)) == ["REPRODUCED"] * 4          # BN: the same
    w = words((0.02, 0.3, 0.99))
    assert w[0].startswith("PARTLY REPRODUCED (lower in absolute terms")
    assert w[2] == "NOT REPRODUCED"
    assert words((0.3, 0.02, 0.9))[0].startswith("PARTLY REPRODUCED (not lower in absolute")
    assert words((0.02, 0.02, 0.9))[0] == "NOT REPRODUCED"


def test_the_common_window_ends_when_a_batch_loss_falls_below_the_floor():
    config = ics.make_config("tiny")
    rows = _synthetic(config, {m: (0.1, 0.1, 0.9) for m in ics.MODELS})
    cut = config.linear[-2]
    for r in rows:     # the standard network of seed 0 fits its batches from ``cut`` on
        if r["model"] == "standard" and r["seed"] == config.seeds[0] and r["step"] >= cut:
            if r["kind"] == "train":
                r["train_loss"] = 0.01
            else:
                r["diff"], r["rel_diff"], r["cos"] = 0.0, 0.0, 1.0
    ends = ics.window_ends(rows, config)
    assert ends[(config.lrs[0], config.seeds[0])] == cut
    assert ends[(config.lrs[0], config.seeds[1])] == config.steps + 1
    meds = ics.seed_medians(rows, config)
    whole = ics.seed_medians(rows, config, whole=True)
    key = (config.lrs[0], "standard", 2, "diff")
    assert meds[key][0] == pytest.approx(0.1)          # the fitted steps are left out
    assert whole[key][0] < 0.1
    assert "before step" in ics.window_text(rows, config.lrs[0], config)
    assert ics.window_text(rows, config.lrs[0], config).endswith("(1 never did)")
    _, verdicts = ics.summarize(rows, config)
    assert "Over the whole run" in verdicts[0]


def test_plot(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    config, rows = tiny
    path = tmp_path / "ics.png"
    one = dataclasses.replace(config, lrs=config.lrs[:1])    # half the panels: faster
    ics.plot(rows, one, str(path), caption="fastbn experiment ics --tiny")
    assert path.stat().st_size > 10_000


def test_docs_snippets_from_the_committed_csv():
    csv = ROOT / "docs" / "experiments" / "ics.csv"
    if not csv.exists():
        pytest.skip("no committed ics.csv")
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import gen_ics
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    out, summary = gen_ics.snippets(report.read_csv(csv))
    assert set(out) == {f"ics-{k}.md" for k in ("table", "accuracy", "verdict", "output")}
    assert len(summary) == 2 and all(s["page"] == "ics" for s in summary)
    assert "nan" not in out["ics-table.md"]
