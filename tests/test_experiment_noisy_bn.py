"""Experiment noisy-bn (Santurkar et al. 2018, Figure 2) on a tiny configuration."""

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fastbn.experiments import data, report, santurkar, train
from fastbn.experiments import noisy_bn as nb

ROOT = Path(__file__).resolve().parents[1]
CLAIM = re.compile(r"^Claim '[^']+'(?: \([^)]+\))?: (REPRODUCED|NOT REPRODUCED|"
                   r"PARTLY REPRODUCED)( \([^)]*\))? -- .+$")


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def tiny(digits):
    config = nb.make_config("tiny", 0, digits.name)
    with train.single_threaded_blas():
        rows = nb.run(config, digits, progress=False)
    return config, rows


def test_configs():
    full, quick = nb.make_config("full"), nb.make_config("quick", 3)
    assert full.seeds == (0, 1, 2, 3, 4) and quick.seeds == (3, 4)
    assert nb.DATA == "mnist1d" and full.dataset == "mnist1d"
    for config in (full, quick, nb.make_config("tiny")):
        ck = config.checkpoints
        assert ck[0] == 0 and ck[-1] == config.steps and list(ck) == sorted(set(ck))
        starts = config.window_starts
        assert starts[0] == 0 and starts[-1] == config.steps - config.window
        assert all(b - a > config.window for a, b in zip(starts[:-1], starts[1:], strict=True))
        assert max(config.measured_steps) == config.steps
    assert quick.steps <= full.steps


def test_batch_noise_eval_is_its_expectation():
    noise = santurkar.BatchNoise(4, rng=0)
    x = np.random.default_rng(0).normal(size=(4000, 4))
    y = noise(x)                                     # training: s x + m
    np.testing.assert_allclose((y * x).mean(axis=0) / (x * x).mean(axis=0), noise.step_std,
                               atol=0.05)
    np.testing.assert_allclose(y.mean(axis=0), noise.step_mean, atol=0.05)
    noise.eval()
    np.testing.assert_allclose(noise(x), x * (1 + noise.std_range) / 2)
    np.testing.assert_allclose(noise.backward(x), x * noise.expected_scale)


def test_moments_and_step_changes_by_hand():
    z = np.array([[0.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(nb.moments(z), [[1.0, 2.0], [1.0, 0.0]])
    series = np.array([nb.moments(z), nb.moments(z + [1.0, -3.0]), nb.moments(2 * z)])
    # mean: (|1| + |-3|) / 2 then (|2 - 2| + |4 - -1|) / 2  -> (2 + 2.5) / 2
    # std:  0, then (|2 - 1| + 0) / 2                        -> (0 + 0.5) / 2
    np.testing.assert_allclose(nb.step_changes(series), [2.25, 0.25])
    with pytest.raises(ValueError):
        nb.step_changes(series[:1])


def _state(model):
    return ([v.copy() for v in model.state_dict().values()],
            [m.rng.bit_generator.state for m in model.modules()
             if isinstance(m, santurkar.BatchNoise)])


def test_layer_inputs_change_nothing_and_are_exact():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 12)).astype(np.float32)
    for kind in santurkar.KINDS:
        init, noise = train.seed_rngs(0, "init", "noise")
        model = santurkar.network(12, 3, kind=kind, hidden=(8, 6), rng=init,
                                  noise_rng=noise).eval()
        before = _state(model)
        acts = nb.layer_inputs(model, x)
        again = nb.layer_inputs(model, x)            # same noise: the generators rewound
        assert not model.training and len(acts) == 2
        params, rngs = _state(model)
        for a, b in zip(params, before[0], strict=True):
            np.testing.assert_array_equal(a, b)
        assert rngs == before[1]
        for (pre, post), (pre2, _) in zip(acts, again, strict=True):
            assert pre.shape == (2000, post.shape[1])
            np.testing.assert_array_equal(post, np.maximum(pre, 0))
            np.testing.assert_array_equal(pre, pre2)
        pre = acts[1][0]
        if kind == "BN":        # batch statistics, gamma 1, beta 0
            np.testing.assert_allclose(pre.mean(axis=0), 0, atol=1e-4)
            np.testing.assert_allclose(pre.std(axis=0), 1, rtol=1e-3)
        elif kind == "noisy BN":    # the unit leaves with the step's drawn mean and scale
            last = [m for m in model.modules() if isinstance(m, santurkar.BatchNoise)][-1]
            np.testing.assert_allclose(pre.mean(axis=0), last.step_mean, atol=0.03)
            # std of s x + m with x standardized: sqrt(sigma^2 + 2 delta^2)
            expect = np.sqrt(last.step_std ** 2 + 2 * last.jitter ** 2)
            np.testing.assert_allclose(pre.std(axis=0), expect, atol=0.06)
        else:
            dense = santurkar.weight_layers(model)
            h = np.maximum(x @ dense[0].params["weight"].T + dense[0].params["bias"], 0)
            np.testing.assert_allclose(acts[0][1], h, rtol=1e-5, atol=1e-6)


def test_run_rows(tiny):
    config, rows = tiny
    assert {r["kind"] for r in rows} == {"accuracy", "step_change", "drift", "percentile"}
    assert {r["seed"] for r in rows} == set(config.seeds)
    n = len(config.seeds) * len(nb.MODELS)
    ck, nl = config.checkpoints, len(config.layers)
    acc = [r for r in rows if r["kind"] == "accuracy"]
    assert len(acc) == n * len(ck) and not any(r["diverged"] for r in acc)
    assert set(acc[0]) == {"dataset", "model", "seed", "kind", "step", "val_accuracy",
                           "val_loss", "train_accuracy", "train_loss", "diverged"}
    assert all(0 <= r["val_accuracy"] <= 1 and 0 <= r["train_accuracy"] <= 1 for r in acc)
    assert all(math.isnan(r["train_loss"]) == (r["step"] == 0) for r in acc)
    change = [r for r in rows if r["kind"] == "step_change"]
    assert len(change) == n * len(config.window_starts) * nl * 2
    assert {r["step"] for r in change} == set(config.window_starts)
    assert all(r["value"] >= 0 and r["relative"] >= 0 for r in change)
    drift = [r for r in rows if r["kind"] == "drift"]
    assert len(drift) == n * len(ck) * nl * 2
    assert all(r["value"] == 0 for r in drift if r["step"] == 0)
    pct = [r for r in rows if r["kind"] == "percentile"]
    assert len(pct) == n * len(ck) * nl * 3 and {r["unit"] for r in pct} == {config.unit}
    # the noise moves noisy BN's inputs at every step, far more than SGD moves BN's
    noisy = nb.mean_change(rows, "noisy BN", config.layers[0], "mean", config)
    plain = nb.mean_change(rows, "BN", config.layers[0], "mean", config)
    assert min(noisy) > 10 * max(plain)
    # same seed, same init, batches and noise: the run is deterministic
    assert nb.run(config, data.load_digits(), progress=False) == rows


def test_summarize_verdicts_and_csv_round_trip(tiny, tmp_path):
    config, rows = tiny
    table, verdicts = nb.summarize(rows, config)
    assert [r["model"] for r in table] == list(nb.MODELS)
    assert len(verdicts) == 3
    for line in verdicts:
        assert CLAIM.match(line), line
    path = tmp_path / "nb.csv"
    report.write_csv(rows, path)
    back = [{k: int(v) if k in ("seed", "step", "layer", "unit", "percentile", "diverged")
             and isinstance(v, float) else v for k, v in r.items()}
            for r in report.read_csv(path)]
    assert nb.summarize(back, config) == (table, verdicts)


def _fake(config, acc, change):
    """Rows with final/best accuracy ``acc[model]`` and per-step change ``change[model]``."""
    out = []
    for seed in config.seeds:
        for model in nb.MODELS:
            base = {"model": model, "seed": seed}
            for step in config.checkpoints:
                out.append({**base, "kind": "accuracy", "step": step, "diverged": False,
                            "val_accuracy": acc[model] * step / config.steps + 0.001 * seed,
                            "train_accuracy": 0.9, "train_loss": 0.1})
                for layer in config.layers:
                    for stat in nb.STATS:
                        out.append({**base, "kind": "drift", "step": step, "layer": layer,
                                    "stat": stat, "value": 0.1})
            for start in config.window_starts:
                for layer in config.layers:
                    for stat in nb.STATS:
                        v = change[model][layer] if isinstance(change[model], dict) else \
                            change[model]
                        out.append({**base, "kind": "step_change", "step": start,
                                    "layer": layer, "stat": stat, "value": v,
                                    "relative": v})
    return out


def test_verdict_words():
    config = nb.make_config("tiny")
    words = [v.split(" -- ")[0].split(": ", 1)[1] for v in nb.summarize(_fake(
        config, {"standard": 0.6, "BN": 0.7, "noisy BN": 0.71},
        {"standard": 0.02, "BN": 0.001, "noisy BN": 0.2}), config)[1]]
    assert words == ["REPRODUCED"] * 3
    _, v = nb.summarize(_fake(
        config, {"standard": 0.6, "BN": 0.7, "noisy BN": 0.5},
        {"standard": 0.02, "BN": 0.015, "noisy BN": {3: 0.05, 5: 0.03}}), config)
    assert ": NOT REPRODUCED --" in v[0] and ": NOT REPRODUCED --" in v[2]
    assert "PARTLY REPRODUCED (the mean of layer 3, the std of layer 3 only" in v[1]


def test_plot(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    config, rows = tiny
    path = tmp_path / "nb.png"
    nb.plot(rows, config, str(path), caption="fastbn experiment noisy-bn --tiny")
    assert path.stat().st_size > 10_000


def test_docs_snippets_from_the_committed_csv():
    csv = ROOT / "docs" / "experiments" / "noisy-bn.csv"
    if not csv.exists():
        pytest.skip("no committed noisy-bn.csv")
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import gen_noisy_bn
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    out, summary = gen_noisy_bn.snippets(report.read_csv(csv))
    assert set(out) == {f"noisy-bn-{k}.md" for k in ("table", "verdict", "output")}
    assert len(summary) == 2 and all(s["page"] == "noisy-bn" for s in summary)
    assert all(not math.isnan(float(x)) for x in re.findall(r"\d+\.\d+",
                                                            out["noisy-bn-table.md"]))


def test_tiny_on_mnist1d_shaped_signals():
    rng = np.random.default_rng(0)
    signals = data.Dataset("mnist1d", rng.normal(size=(120, 1, 40)).astype(np.float32),
                           rng.integers(0, 10, 120), rng.normal(size=(40, 1, 40)).astype(
                               np.float32), rng.integers(0, 10, 40), 10)
    config = nb.make_config("tiny", 0, signals.name)
    rows = nb.run(config, signals, progress=False)
    assert {r["dataset"] for r in rows} == {"mnist1d"}
    table, verdicts = nb.summarize(rows, config)
    assert len(table) == 3 and all(CLAIM.match(v) for v in verdicts)
