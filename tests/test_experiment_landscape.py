"""Experiment landscape (Santurkar et al. 2018, Figure 4) on a tiny configuration."""

import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fastbn.experiments import data, report, santurkar, train
from fastbn.experiments import landscape as ls

ROOT = Path(__file__).resolve().parents[1]
CLAIM = re.compile(r"^Claim '[^']+'(?: \([^)]+\))?: (REPRODUCED|NOT REPRODUCED|"
                   r"PARTLY REPRODUCED)( \([^)]*\))? -- .+$")
PROBE_COLUMNS = {"dataset", "model", "lr", "seed", "kind", "step", "loss", "loss_min",
                 "loss_max", "loss_range", "grad_norm", "grad_change_min", "grad_change_max",
                 "beta"}
FINAL_COLUMNS = {"dataset", "model", "lr", "seed", "kind", "step", "val_accuracy",
                 "val_loss", "train_loss", "diverged"}


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def tiny(digits):
    config = ls.make_config("tiny", 0, digits.name)
    with train.single_threaded_blas():
        rows = ls.run(config, digits, progress=False)
    return config, rows


# --- the measures on cases with a known answer ------------------------------------------------


def _quadratic(a):
    """f(theta) = 1/2 sum_i a_i theta_i^2 over two arrays (3 and 2 x 2); gradient a * theta."""
    def fn(params):
        flat = np.concatenate([p.ravel() for p in params])
        grad = a * flat
        return 0.5 * float(flat @ grad), [grad[:3].reshape(3), grad[3:].reshape(2, 2)]
    return fn


def test_along_gradient_on_a_quadratic_eigenvector():
    # theta along the eigenvector of a = 3: g = 3 theta, g(theta - eta g) = (1 - 3 eta) g
    a = np.array([3.0, 3.0, 1.0, 0.5, 2.0, 1.0, 4.0])
    theta = [np.array([1.0, -2.0, 0.0]), np.zeros((2, 2))]
    etas = (0.05, 0.1, 0.2, 0.4)
    m = ls.along_gradient(_quadratic(a), theta, etas)
    g = 3 * np.sqrt(5.0)
    assert m["grad_norm"] == pytest.approx(g)
    assert m["loss"] == pytest.approx(0.5 * 3 * 5)
    np.testing.assert_allclose(m["grad_changes"], 3 * np.array(etas) * g)
    assert m["beta"] == pytest.approx(3.0)       # the curvature along g, for every eta
    # f(theta - eta g) = f - eta |g|^2 + eta^2 / 2 * 3 |g|^2
    expected = 7.5 - np.array(etas) * g ** 2 + 0.5 * np.array(etas) ** 2 * 3 * g ** 2
    np.testing.assert_allclose(m["losses"], expected)
    everything = np.append(expected, 7.5)
    assert m["loss_range"] == pytest.approx(everything.max() - everything.min())


def test_along_gradient_on_a_general_quadratic():
    # g(theta - eta g) - g = -eta A g: the change is linear in eta, beta = |A g| / |g|
    a = np.array([4.0, 1.0, 0.25, 2.0, 0.5, 1.5, 3.0])
    theta = [np.array([1.0, 1.0, -1.0]), np.array([[0.5, -2.0], [1.0, 0.0]])]
    etas = (0.1, 0.3)
    m = ls.along_gradient(_quadratic(a), theta, etas)
    flat = np.concatenate([p.ravel() for p in theta])
    g = a * flat
    np.testing.assert_allclose(m["grad_changes"], np.array(etas) * np.linalg.norm(a * g))
    assert m["beta"] == pytest.approx(np.linalg.norm(a * g) / np.linalg.norm(g))
    assert m["beta"] <= a.max()                   # never above the largest curvature
    with pytest.raises(ValueError):
        ls.along_gradient(_quadratic(a), theta, (0.0, 0.1))


def test_along_gradient_at_a_stationary_point():
    m = ls.along_gradient(_quadratic(np.ones(7)), [np.zeros(3), np.zeros((2, 2))], (0.1,))
    assert m["grad_norm"] == 0 and m["loss_range"] == 0 and math.isnan(m["beta"])


@pytest.mark.parametrize("kind", ls.MODELS)
def test_probe_leaves_the_model_unchanged_and_matches_the_loss(kind):
    rng = np.random.default_rng(0)
    model = santurkar.network(12, 4, kind=kind, hidden=(16, 16), rng=rng)
    x = rng.normal(size=(32, 12)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    etas = (0.05, 0.2)
    m = ls.probe(model, x, y, etas)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    loss, g = santurkar.loss_and_grads(model, x, y)
    assert m["loss"] == loss and m["grad_norm"] == pytest.approx(ls._norm(g))
    # by hand: the loss and the gradient change at theta - eta g
    theta = santurkar.snapshot(model)
    for i, eta in enumerate(etas):
        santurkar.restore(model, [p - np.float32(eta) * d for p, d in zip(theta, g, strict=True)])
        loss_e, g_e = santurkar.loss_and_grads(model, x, y)
        assert m["losses"][i] == pytest.approx(loss_e, rel=1e-6)
        change = ls._norm([a.astype(np.float64) - b for a, b in zip(g_e, g, strict=True)])
        assert m["grad_changes"][i] == pytest.approx(change, rel=1e-6)
    santurkar.restore(model, theta)
    ratio = m["grad_changes"] / (np.array(etas) * m["grad_norm"])
    assert m["beta"] == pytest.approx(ratio.max())


@pytest.mark.parametrize("kind", ls.MODELS)
def test_gradient_by_finite_differences_along_g(kind):
    # d/d eps L(theta - eps g) at 0 = -|g|^2: the gradient that the probe steps along is right
    rng = np.random.default_rng(3)
    model = santurkar.network(10, 3, kind=kind, hidden=(12, 12), rng=rng)
    x = rng.normal(size=(24, 10)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    theta = santurkar.snapshot(model)
    _, g = santurkar.loss_and_grads(model, x, y)
    gg = ls._norm(g) ** 2
    eps = 1e-2 / math.sqrt(gg)            # a step of length 0.01

    def loss_at(t):
        santurkar.restore(model, [p - np.float32(t) * d for p, d in zip(theta, g, strict=True)])
        return santurkar.loss_and_grads(model, x, y)[0]

    slope = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    santurkar.restore(model, theta)
    assert slope == pytest.approx(-gg, rel=2e-2)


def test_measuring_does_not_change_training(digits):
    config = ls.make_config("tiny", 0, digits.name)
    sub = digits.subset(config.max_train, config.max_val)
    for kind in ls.MODELS:
        probed = ls.train_run(config, sub, kind, 0.1, 0)
        plain = ls.train_run(config, sub, kind, 0.1, 0, measure=False)
        assert len(probed.probes) == len(config.checkpoints) and not plain.probes
        assert probed.losses == plain.losses and probed.steps == config.steps
        after, reference = probed.model.state_dict(), plain.model.state_dict()
        assert list(after) == list(reference)
        for a, b in zip(after.values(), reference.values(), strict=True):
            np.testing.assert_array_equal(a, b)      # parameters and running statistics


def test_the_probe_uses_the_training_steps_batch_and_gradient(digits):
    # at step 0 the probe's loss is the first training loss
    config = replace(ls.make_config("tiny", 0, digits.name), steps=1, every=1)
    result = ls.train_run(config, digits.subset(200, 100), "BN", 0.1, 0)
    assert result.probes[0]["loss"] == pytest.approx(result.losses[0], rel=1e-5)


# --- the experiment ---------------------------------------------------------------------------


def test_configs():
    full, quick = ls.make_config("full"), ls.make_config("quick", 3)
    assert len(full.seeds) == 5 and quick.seeds == (3, 4)
    assert full.lrs == quick.lrs == (0.1, 0.4)
    assert min(full.etas) == ls.PAPER_ETAS[0] and max(full.etas) == ls.PAPER_ETAS[1]
    assert full.checkpoints[0] == 0 and full.checkpoints[-1] < full.steps
    assert full.steps >= 2000 and quick.steps < full.steps
    assert ls.DATA == "mnist1d"


def test_run_rows(tiny, digits):
    config, rows = tiny
    probes = [r for r in rows if r["kind"] == "probe"]
    final = [r for r in rows if r["kind"] == "final"]
    assert all(set(r) == PROBE_COLUMNS for r in probes)
    assert all(set(r) == FINAL_COLUMNS for r in final)
    runs = len(config.seeds) * len(config.lrs) * len(ls.MODELS)
    assert len(final) == runs and len(probes) == runs * len(config.checkpoints)
    assert {r["seed"] for r in rows} == set(config.seeds)
    assert {r["step"] for r in probes} == set(config.checkpoints)
    for r in probes:
        assert r["loss_min"] <= r["loss_max"] and r["grad_change_min"] <= r["grad_change_max"]
        assert r["loss_range"] == pytest.approx(max(r["loss"], r["loss_max"])
                                                - min(r["loss"], r["loss_min"]), abs=2e-5)
        assert r["beta"] >= r["grad_change_max"] / (max(config.etas) * r["grad_norm"]) * 0.999
    for r in final:
        assert not r["diverged"] and r["step"] == config.steps
        assert 0 <= r["val_accuracy"] <= 1
    assert ls.run(config, digits, progress=False) == rows          # deterministic


def test_divergence_is_recorded_not_raised(digits):
    config = replace(ls.make_config("tiny", 0, digits.name), lrs=(200.0,), seeds=(0,))
    rows = ls.run(config, digits, progress=False)
    final = {r["model"]: r for r in rows if r["kind"] == "final"}
    assert final["standard"]["diverged"] and final["standard"]["step"] < config.steps
    assert math.isnan(final["standard"]["val_accuracy"])
    table, verdicts = ls.summarize(rows, config)
    assert len(table) == 4 and all(CLAIM.match(v) for v in verdicts)
    assert "diverged" in table[0]["val acc %"] and table[0]["model"] == "standard"
    assert any("diverged in 1/1" in v for v in verdicts)


def test_summarize_verdicts_and_csv_round_trip(tiny, tmp_path):
    config, rows = tiny
    table, verdicts = ls.summarize(rows, config)
    assert [(r["lr"], r["model"], r["steps"]) for r in table] == [
        (f"{lr:g}", m, w) for lr in config.lrs for m in ls.MODELS
        for w in ("all", f"< {config.early}")]
    assert all(r["val acc %"] == "" for r in table if r["steps"] != "all")
    assert len(verdicts) == 2 * len(ls.MEASURES) * len(config.lrs)
    for line in verdicts:
        assert CLAIM.match(line), line
    path = tmp_path / "landscape.csv"
    report.write_csv(rows, path)
    back = report.read_csv(path)
    assert ls.summarize(back, config) == (table, verdicts)


def test_verdict_words():
    config = ls.make_config("tiny")

    def rows_for(bn, std, noise=0.0):
        out = []
        for lr in config.lrs:
            for seed in config.seeds:
                for model, v in (("BN", bn), ("standard", std)):
                    base = {"model": model, "lr": lr, "seed": seed}
                    for step in config.checkpoints:
                        value = v * (1 + noise * (seed - 0.5))
                        out.append({**base, "kind": "probe", "step": step, "loss_range": value,
                                    "grad_change_max": value, "beta": value})
                    out.append({**base, "kind": "final", "step": config.steps,
                                "val_accuracy": 0.5, "diverged": False})
        return out

    _, v = ls.summarize(rows_for(1.0, 3.0), config)
    assert all(line.split(" -- ")[0].endswith(": REPRODUCED") for line in v)
    assert "standard / BN = 3.00x" in v[0]
    _, v = ls.summarize(rows_for(3.0, 1.0), config)
    assert all(": NOT REPRODUCED (BN higher by more than 2 SE)" in line for line in v)
    _, v = ls.summarize(rows_for(1.0, 1.1, noise=1.0), config)   # lower, but within 2 SE
    assert all(": NOT REPRODUCED (no difference beyond 2 SE)" in line for line in v)


def test_plot(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    config, rows = tiny
    path = tmp_path / "landscape.png"
    ls.plot(rows, config, str(path), caption="fastbn experiment landscape --tiny")
    assert path.stat().st_size > 10_000


def test_docs_snippets_from_the_committed_csv():
    csv = ROOT / "docs" / "experiments" / "landscape.csv"
    if not csv.exists():
        pytest.skip("no committed landscape.csv")
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import gen_landscape
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    out, summary = gen_landscape.snippets(report.read_csv(csv))
    assert set(out) == {f"landscape-{k}.md" for k in ("table", "training", "verdict",
                                                            "output")}
    assert len(summary) == 3 and all(s["page"] == "landscape" for s in summary)
    assert "nan" not in out["landscape-table.md"]


def test_tiny_on_mnist_files(tmp_path):
    from test_data import write_mnist

    write_mnist(tmp_path, n_train=120, n_val=30)
    mnist = data.load(str(tmp_path))
    config = replace(ls.make_config("tiny", 0, mnist.name), lrs=(0.1,), steps=10, every=5)
    rows = ls.run(config, mnist, progress=False)
    assert {r["dataset"] for r in rows} == {mnist.name}
    table, verdicts = ls.summarize(rows, config)
    assert len(table) == 4 and all(CLAIM.match(v) for v in verdicts)
