"""Experiment covariate-shift (Ioffe & Szegedy 2015, Figure 1) on a tiny configuration."""

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fastbn.experiments import covariate_shift as cs
from fastbn.experiments import data, report, train
from fastbn.nn import Dense

ROOT = Path(__file__).resolve().parents[1]
CLAIM = re.compile(r"^Claim '[^']+'(?: \([^)]+\))?: (REPRODUCED|NOT REPRODUCED|"
                   r"PARTLY REPRODUCED)( \([^)]*\))? -- .+$")


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def tiny(digits):
    config = cs.make_config("tiny", 0, digits.name)
    with train.single_threaded_blas():
        rows = cs.run(config, digits, progress=False)
    return config, rows


def test_network_layers_and_init():
    rng = np.random.default_rng(0)
    bn = cs.network(784, 10, bn=True, init_std=0.1, rng=rng)
    assert [type(m).__name__ for m in bn] == ["Dense", "BatchNorm", "Sigmoid"] * 3 + ["Dense"]
    assert all(not m.use_bias for m in bn.layers[:-1] if isinstance(m, Dense))
    plain = cs.network(784, 10, bn=False, init_std=0.1, rng=rng)
    assert [type(m).__name__ for m in plain] == ["Dense", "Sigmoid"] * 3 + ["Dense"]
    assert all(m.use_bias for m in plain if isinstance(m, Dense))
    for m in plain:
        if isinstance(m, Dense):   # N(0, 0.1**2) whatever the fan-in
            assert abs(float(m.params["weight"].std()) - 0.1) < 0.01


def test_sigmoid_input_leaves_the_model_unchanged():
    rng = np.random.default_rng(1)
    model = cs.network(20, 3, bn=True, hidden=(8, 6), init_std=1.0, rng=rng).eval()
    x = rng.normal(size=(50, 20)).astype(np.float32)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    z = cs.sigmoid_input(model, x)
    assert z.shape == (50, 6) and not model.training
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # batch statistics, gamma=1, beta=0: each unit has mean 0, variance var / (var + eps)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.var(axis=0), 1, rtol=1e-3)
    plain = cs.network(20, 3, bn=False, hidden=(8, 6), rng=rng)
    h = plain.layers[1](plain.layers[0](x))
    np.testing.assert_allclose(cs.sigmoid_input(plain, x), plain.layers[2](h), rtol=1e-6)


def test_checkpoints():
    config = cs.make_config("full")
    ck = config.checkpoints
    assert ck[0] == 0 and ck[-1] == config.steps == cs.PAPER_STEPS
    assert list(ck) == sorted(set(ck)) and config.early_step in ck
    assert config.half == 25_000 and config.half in ck
    assert cs.make_config("full", dataset="mnist").seeds == (0, 1, 2)
    assert cs.make_config("quick", 3).seeds == (3, 4)


def test_run_rows(tiny):
    config, rows = tiny
    kinds = {r["kind"] for r in rows}
    assert kinds == {"accuracy", "percentile", "drift", "spread"}
    n = len(config.seeds) * len(cs.MODELS)
    ck = config.checkpoints
    acc = [r for r in rows if r["kind"] == "accuracy"]
    assert len(acc) == n * len(ck) and not any(r["diverged"] for r in acc)
    assert all(0 <= r["val_accuracy"] <= 1 for r in acc)
    pct = [r for r in rows if r["kind"] == "percentile"]
    assert len(pct) == n * len(ck) * 3 and {r["unit"] for r in pct} == {config.unit}
    for model in cs.MODELS:
        for step in ck:
            p = [r["value"] for r in sorted(pct, key=lambda r: r["percentile"])
                 if r["model"] == model and r["step"] == step and r["seed"] == 0]
            assert p == sorted(p)
    drift = [r for r in rows if r["kind"] == "drift"]
    assert {r["unit"] for r in drift} == {"all"} and {r["since"] for r in drift} == {0,
                                                                                    config.half}
    assert all(r["value"] == 0 for r in drift if r["step"] == r["since"])
    spread = [r for r in rows if r["kind"] == "spread"]
    assert all(r["value"] == 1 for r in spread if r["step"] == r["since"])
    # same seed, same batches and init stream: the run is deterministic
    again = cs.run(config, data.load_digits(), progress=False)
    assert again == rows


def test_summarize_verdicts_and_csv_round_trip(tiny, tmp_path):
    config, rows = tiny
    table, verdicts = cs.summarize(rows, config)
    assert [r["model"] for r in table] == list(cs.MODELS)
    assert len(verdicts) == 3
    for line in verdicts:
        assert CLAIM.match(line), line
    path = tmp_path / "cs.csv"
    report.write_csv(rows, path)
    back = report.read_csv(path)
    assert cs.summarize(back, config) == (table, verdicts)


def test_verdict_words():
    config = cs.make_config("tiny")

    def rows_for(bn_acc, no_acc, bn_drift, no_drift, bn_spread, no_spread):
        out = []
        for seed in config.seeds:
            for model, a, d, s in (("BN", bn_acc, bn_drift, bn_spread),
                                   ("no BN", no_acc, no_drift, no_spread)):
                base = {"model": model, "seed": seed}
                for step in config.checkpoints:
                    frac = step / config.steps
                    out.append({**base, "kind": "accuracy", "step": step,
                                "val_accuracy": a * frac})
                    for since in (0, config.half):
                        if step < since:
                            continue
                        for q in cs.PERCENTILES:
                            out.append({**base, "kind": "drift", "step": step, "since": since,
                                        "percentile": q, "unit": "all", "value": d * frac})
                        out.append({**base, "kind": "spread", "step": step, "since": since,
                                    "unit": "all", "value": s ** frac})
        return out

    _, v = cs.summarize(rows_for(0.95, 0.5, 0.05, 0.8, 1.2, 50.0), config)
    assert v[0].split(" -- ")[0].endswith(": REPRODUCED")
    assert v[1].split(" -- ")[0].endswith(": REPRODUCED")
    _, v = cs.summarize(rows_for(0.5, 0.95, 0.5, 0.5, 2.0, 2.0), config)
    assert ": NOT REPRODUCED" in v[0] and ": NOT REPRODUCED" in v[1]
    _, v = cs.summarize(rows_for(0.9, 0.9, 0.05, 0.8, 2.0, 2.0), config)
    assert "PARTLY REPRODUCED (the median drifts" in v[1]


def test_plot(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    config, rows = tiny
    path = tmp_path / "cs.png"
    cs.plot(rows, config, str(path), caption="fastbn experiment covariate-shift --tiny")
    assert path.stat().st_size > 10_000


def test_docs_snippets_from_the_committed_csv():
    csv = ROOT / "docs" / "experiments" / "covariate-shift.csv"
    if not csv.exists():
        pytest.skip("no committed covariate-shift.csv")
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import gen_covariate_shift
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    out, summary = gen_covariate_shift.snippets(report.read_csv(csv))
    assert set(out) == {f"covariate-shift-{k}.md" for k in ("table", "verdict", "output")}
    assert len(summary) == 2 and all(s["page"] == "covariate-shift" for s in summary)
    assert all(not math.isnan(float(x)) for x in re.findall(r"\d+\.\d+", out[
        "covariate-shift-table.md"]))


def test_tiny_on_mnist_files(tmp_path):
    from test_data import write_mnist

    write_mnist(tmp_path, n_train=120, n_val=30)
    mnist = data.load(str(tmp_path))
    config = cs.make_config("tiny", 0, mnist.name)
    rows = cs.run(config, mnist, progress=False)
    assert {r["dataset"] for r in rows} == {mnist.name}
    table, verdicts = cs.summarize(rows, config)
    assert len(table) == 2 and all(CLAIM.match(v) for v in verdicts)
