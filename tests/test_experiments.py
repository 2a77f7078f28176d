"""The tutorial's experiments: the command line, each experiment on a tiny config, profile."""

import csv
import math
import subprocess
import sys

import numpy as np
import pytest
from test_data import write_mnist

from fastbn import cli, experiments
from fastbn import functional as F
from fastbn.experiments import data, profile, report, train

COLUMNS = {
    "convergence": {"dataset", "model", "seed", "epoch", "train_loss", "val_loss",
                    "val_accuracy", "epoch_s", "elapsed_s", "diverged"},
    "learning-rate": {"dataset", "optimizer", "model", "lr", "seed", "epochs_run",
                      "train_loss", "val_accuracy", "diverged"},
    "init": {"dataset", "model", "init_scale", "seed", "epochs_run", "epoch1_accuracy",
             "train_loss", "val_accuracy", "diverged"},
    "small-batch": {"dataset", "model", "norm", "batch_size", "seed", "lr", "bn_pool_min",
                    "bn_pool_max", "epochs_run", "steps", "train_loss", "val_accuracy",
                    "val_error_pct", "diverged", "seconds"},
    "placement": {"dataset", "variant", "seed", "epoch", "train_loss", "train_eval_loss",
                  "train_accuracy", "val_loss", "val_accuracy", "bias_ratio_max",
                  "bias_ratio_min", "bias_abs_max", "diverged"},
}


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fastbn experiment: ")
    return lines[0]


# --- the command line -----------------------------------------------------------------------


def test_cli_unknown_name(capsys):
    line = one_line_error(capsys, ["experiment", "nope"])
    assert "unknown experiment 'nope'" in line and "small-batch" in line


def test_cli_unreadable_data(capsys, tmp_path):
    line = one_line_error(capsys, ["experiment", "init", "--data", str(tmp_path / "nowhere")])
    assert "no such directory" in line
    line = one_line_error(capsys, ["experiment", "init", "--data", str(tmp_path)])
    assert "train-images-idx3-ubyte" in line and "not found" in line


def test_cli_corrupt_idx(capsys, tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    line = one_line_error(capsys, ["experiment", "convergence", "--tiny", "--data",
                                   str(tmp_path), "--out", str(tmp_path / "out")])
    assert "truncated" in line and "t10k-images-idx3-ubyte" in line
    assert not (tmp_path / "out" / "convergence.csv").exists()


def test_cli_missing_extras(capsys, monkeypatch):
    monkeypatch.setattr(experiments, "missing_extras", lambda **kw: ["matplotlib"])
    line = one_line_error(capsys, ["experiment", "init"])
    assert 'pip install "fastbn[experiments]"' in line


def test_cli_bad_seed_and_out(capsys, tmp_path):
    assert "--seed" in one_line_error(capsys, ["experiment", "init", "--seed", "-1"])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "--out" in one_line_error(capsys, ["experiment", "init", "--out", str(blocker)])


def test_cli_writes_csv_png_and_summary(capsys, tmp_path):
    out = tmp_path / "new" / "dir"
    assert cli.main(["experiment", "init", "--tiny", "--out", str(out), "--seed", "3"]) == 0
    stdout = capsys.readouterr().out
    assert "fastbn experiment init --tiny --seed 3" in stdout
    assert "BN final acc %" in stdout and "±" in stdout and "Claim" in stdout
    with open(out / "init.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert COLUMNS["init"] <= set(rows[0])
    assert {int(r["seed"]) for r in rows} == {3, 4}
    assert (out / "init.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_mnist_end_to_end(capsys, tmp_path):
    """A tiny synthetic MNIST in IDX files (gzip), through the MLP and the CNN."""
    write_mnist(tmp_path, n_train=64, n_val=30, compress=True)
    for name in ("convergence", "small-batch"):
        assert cli.main(["experiment", name, "--tiny", "--data", str(tmp_path),
                         "--out", str(tmp_path / "out")]) == 0
        rows = report.read_csv(tmp_path / "out" / f"{name}.csv")
        assert {r["dataset"] for r in rows} == {"mnist"}
        assert all(math.isfinite(r["val_accuracy"]) for r in rows if not r["diverged"])
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 1000
    assert f"--data {tmp_path}" in capsys.readouterr().out


def test_importing_does_not_import_the_extras():
    code = ("import sys, fastbn, fastbn.cli, fastbn.experiments; "
            "bad = [m for m in ('matplotlib', 'sklearn', 'tqdm') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- each experiment, config -> table -------------------------------------------------------


#: Columns that are NaN where they do not apply (a variant without a bias has no bias ratio).
NOT_APPLICABLE = {"placement": {"bias_ratio_max", "bias_ratio_min", "bias_abs_max"}}

#: The training-curve experiments on digits (sync-bn, an MPI run, has its own tests below;
#: baselines needs 1-D signals; the tables of the others hold rows of several kinds with their
#: own columns; each is tested in its own file).
CURVES = [name for name in experiments.EXPERIMENTS
          if name not in ("sync-bn", "depth", "covariate-shift", "baselines", "noisy-bn",
                          "ics", "landscape")]


@pytest.mark.parametrize("name", CURVES)
def test_experiment_tiny_table(name, digits, tmp_path):
    module = experiments.get(name)
    config = module.make_config("tiny", seed=5, dataset="digits")
    assert config.seeds == (5, 6)
    rows = module.run(config, digits, progress=False)
    assert rows and all(set(r) == COLUMNS[name] for r in rows)
    assert {r["seed"] for r in rows} == {5, 6}
    for r in rows:
        if not r["diverged"]:
            assert all(math.isfinite(v) for k, v in r.items() if isinstance(v, float)
                       and k not in NOT_APPLICABLE.get(name, ())), r
            assert 0.0 <= r["val_accuracy"] <= 1.0
    summary, verdicts = module.summarize(rows, config)
    assert summary and all(isinstance(line, str) for line in verdicts)
    module.plot(rows, config, tmp_path / "fig.png", caption="test")
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_configs_quick_and_full_are_sane():
    for name in CURVES:
        module = experiments.get(name)
        quick, full = module.make_config("quick", 0), module.make_config("full", 0)
        assert len(quick.seeds) == 2 and len(full.seeds) >= 3
        assert quick.epochs <= full.epochs
    lr = experiments.get("learning-rate")
    assert len(lr.make_config("full").lrs) == 9 and len(lr.make_config("quick").lrs) == 5
    assert lr.make_config("full").lrs[0] == 1e-4 and lr.make_config("full").lrs[-1] == 1.0
    sb = experiments.get("small-batch").make_config("full")
    assert sb.batch_sizes == (2, 4, 8, 16, 32) and len(sb.seeds) == 5
    assert sb.models == ("cnn", "mlp")
    assert set(sb.norms) == {"BN", "GN", "LN", "IN", "BRN", "GBN", "none"}
    assert set(sb.mlp_norms) == set(sb.norms) - {"IN"}
    assert sb.lr(8) == pytest.approx(sb.base_lr / 4)
    assert sb.lr(8, "mlp") == pytest.approx(sb.mlp_base_lr / 4)
    assert 0.01 <= sb.mlp_base_lr <= 0.1
    assert len(experiments.get("convergence").make_config("full").seeds) == 10


# --- the training loop ----------------------------------------------------------------------


def test_divergence_is_recorded_not_raised(digits):
    small = digits.subset(200, 50)
    init_rng, order_rng = train.seed_rngs(0, "init", "order")
    model = train.mlp(64, 10, bn=False, init_scale=10.0, rng=init_rng)
    run = train.fit(model, train.optimizer("SGD", model, 10.0), small, epochs=3,
                    batch_size=32, rng=order_rng, flatten=True)
    assert run.diverged and run.diverged_epoch == 1 and run.history == []
    assert math.isnan(run.final["val_accuracy"])


def test_fit_trains_and_seeds_reproduce(digits):
    small = digits.subset(300, 100)

    def once():
        init_rng, order_rng = train.seed_rngs(1, "init", "order")
        model = train.mlp(64, 10, bn=True, rng=init_rng)
        return train.fit(model, train.optimizer("Adam", model, 1e-3), small, epochs=3,
                         batch_size=32, rng=order_rng, flatten=True)

    a, b = once(), once()
    assert not a.diverged and a.steps == 3 * (300 // 32)
    assert a.history[-1]["val_accuracy"] > 0.5
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_cnn_shapes_and_norms():
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    for norm in train.NORMS:
        model = train.cnn((1, 8, 8), 10, norm=norm, rng=np.random.default_rng(0))
        assert model(x).shape == (4, 10)
    big = train.cnn((1, 28, 28), 10, norm="GN", rng=np.random.default_rng(0))
    assert big(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def test_mlp_norms():
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    for norm in train.MLP_NORMS:
        model = train.mlp(64, 10, norm=norm, rng=np.random.default_rng(0))
        assert model(x).shape == (4, 10)
        assert [type(m).__name__ for m in model][:3] == {
            "BN": ["Dense", "BatchNorm", "Dense"],
            "GN": ["Dense", "GroupNorm", "ReLU"],
            "LN": ["Dense", "LayerNorm", "ReLU"],
            "BRN": ["Dense", "BatchNorm", "ReLU"],
            "GBN": ["Dense", "BatchNorm", "ReLU"],
            "none": ["Dense", "ReLU", "Dense"]}[norm]
    assert model[0].params.keys() == {"weight", "bias"}             # "none": biased
    assert train.mlp(64, 10, norm="GN")[1].num_groups == 64
    # bn=True / False are norm="BN" / "none", weights included
    for bn, norm in ((True, "BN"), (False, "none")):
        a = train.mlp(64, 10, bn=bn, rng=np.random.default_rng(1))
        b = train.mlp(64, 10, norm=norm, rng=np.random.default_rng(1))
        assert repr(a) == repr(b)
        assert all(np.array_equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert train.mlp(64, 10, bn=True)[1].activation == "relu"
    assert train.mlp(64, 10, bn=True)[0].params.keys() == {"weight"}
    for kwargs in ({}, {"bn": True, "norm": "BN"}, {"norm": "IN"}):
        with pytest.raises(ValueError):
            train.mlp(64, 10, **kwargs)


def test_norm_positions():
    assert train.norm_positions(train.cnn((1, 8, 8), 10, norm="BN"), (1, 8, 8)) == [64, 16]
    assert train.norm_positions(train.cnn((1, 28, 28), 10, norm="BN"), (1, 28, 28)) == [
        196, 49]
    assert train.norm_positions(train.mlp(64, 10, norm="BN"), (64,)) == [1, 1, 1]
    assert train.norm_positions(train.cnn((1, 8, 8), 10, norm="GN"), (1, 8, 8)) == []


def test_small_batch_models_and_summary(digits):
    sb = experiments.get("small-batch")
    config = sb.make_config("tiny", seed=0)
    rows = sb.run(config, digits, progress=False)
    assert [(m, len([r for r in rows if r["model"] == m])) for m in ("cnn", "mlp")] == [
        ("cnn", 3 * 2 * 2), ("mlp", 3 * 2 * 2)]
    for r in rows:
        per_sample = (64, 16) if r["model"] == "cnn" else (1, 1)
        assert (r["bn_pool_max"], r["bn_pool_min"]) == tuple(
            r["batch_size"] * p for p in per_sample)
        assert r["lr"] == pytest.approx(config.lr(r["batch_size"], r["model"]))
    assert {r["norm"] for r in rows if r["model"] == "mlp"} == set(config.mlp_norms)
    summary, verdicts = sb.summarize(rows, config)
    assert [(r["model"], r["norm"]) for r in summary] == [
        ("CNN", "BN"), ("CNN", "GN"), ("CNN", "BRN"), ("MLP", "BN"), ("MLP", "GN"),
        ("MLP", "LN")]
    assert verdicts[0].startswith("GN paper")
    assert verdicts[1] == ("CNN -- at batch 4, a BN channel pools 256 (block 1) / 64 "
                           "(block 2) values:")
    mlp = verdicts.index("MLP -- at batch 4, a BN channel pools 4 values:")
    assert sum("Claim" in line for line in verdicts[mlp:]) == 3     # BN, GN, LN
    assert sum("Claim" in line for line in verdicts[:mlp]) == 2     # BN, GN


def test_renorm_warmup_schedule():
    w = train.RenormWarmup()
    assert w.values(0, 100) == (1.0, 0.0)
    assert w.values(4, 100) == (1.0, 0.0)
    assert w.values(30, 100)[0] == pytest.approx(3.0)
    assert w.values(20, 100)[1] == pytest.approx(5.0)
    r, d = w.values(12, 100)
    assert 1.0 < r < 3.0 and 0.0 < d < 5.0
    assert w.values(100, 100) == (3.0, 5.0)
    model = train.cnn((1, 8, 8), 10, norm="BRN")
    w(model, 100, 100)
    assert [(m.rmax, m.dmax) for m in train.renorm_layers(model)] == [(3.0, 5.0)] * 2


def test_report_helpers(tmp_path):
    rows = [{"a": "x", "v": 1.0, "ok": True}, {"a": "x", "v": 3.0, "ok": False},
            {"a": "y", "v": float("nan"), "ok": True}]
    agg = report.aggregate(rows, ["a"], "v")
    assert agg[0] == {"a": "x", "mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2,
                      "total": 2}
    assert agg[1]["n"] == 0 and math.isnan(agg[1]["mean"])
    report.write_csv(rows, tmp_path / "t.csv")
    back = report.read_csv(tmp_path / "t.csv")
    assert back[1] == {"a": "x", "v": 3.0, "ok": 0.0} and math.isnan(back[2]["v"])
    assert report.pm(0.1234, 0.01, ".2f", 100) == "12.34 ± 1.00"
    assert "a" in report.format_table(rows).splitlines()[0]


# --- profile --------------------------------------------------------------------------------

TOL = dict(rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("shape", [(16, 8), (6, 8, 5, 5)])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_numpy_formula_batch_norm_matches_fastbn(shape, activation):
    rng = np.random.default_rng(0)
    x = rng.normal(1, 2, shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    w, b = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    for training in (True, False):
        rm1, rv1 = np.full(8, 0.5, np.float32), np.full(8, 2.0, np.float32)
        rm2, rv2 = rm1.copy(), rv1.copy()
        y1, m1, r1 = F.batch_norm(x, w, b, rm1, rv1, training=training, activation=activation)
        y2, m2, r2 = profile.batch_norm(x, w, b, rm2, rv2, training=training,
                                        activation=activation)
        for p, q in ((y1, y2), (m1, m2), (r1, r2), (rm1, rm2), (rv1, rv2)):
            np.testing.assert_allclose(q, p, **TOL)
        assert y2.dtype == np.float32 and m2.dtype == np.float32
        g1 = F.batch_norm_backward(dy, x, m1, r1, w, training=training,
                                   activation=activation, y=y1)
        g2 = profile.batch_norm_backward(dy, x, m1, r1, w, training=training,
                                         activation=activation, y=y1)
        for p, q in zip(g1, g2, strict=True):
            np.testing.assert_allclose(q, p, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("axis", [1, -1])
def test_numpy_formula_group_norm_matches_fastbn(axis):
    rng = np.random.default_rng(1)
    shape = (3, 8, 4, 5) if axis == 1 else (3, 4, 5, 8)
    x = rng.normal(-1, 3, shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    w, b = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    y1, m1, r1 = F.group_norm(x, 2, w, b, axis=axis)
    y2, m2, r2 = profile.group_norm(x, 2, w, b, axis=axis)
    for p, q in ((y1, y2), (m1, m2), (r1, r2)):
        np.testing.assert_allclose(q, p, **TOL)
    g1 = F.group_norm_backward(dy, x, 2, m1, r1, w, axis=axis)
    g2 = profile.group_norm_backward(dy, x, 2, m1, r1, w, axis=axis)
    for p, q in zip(g1, g2, strict=True):
        np.testing.assert_allclose(q, p, rtol=1e-3, atol=1e-4)


def test_numpy_backend_patches_and_restores():
    from fastbn.nn import norm as norm_module

    before = norm_module.F
    with profile.numpy_backend() as calls:
        assert norm_module.F is not before
        model = train.cnn((1, 8, 8), 10, norm="BN", rng=np.random.default_rng(0))
        model.backward(np.ones_like(model(np.ones((4, 1, 8, 8), np.float32))))
    assert norm_module.F is before
    assert calls["batch_norm"] == 2 and calls["batch_norm_backward"] == 2


def test_profile_rows_and_main(capsys):
    rows = profile.profile(("BN", "GN"), batch_size=8, steps=3, warmup=1)
    assert [(r["norm"], r["backend"]) for r in rows] == [
        ("BN", "fastbn"), ("BN", "numpy formula"), ("GN", "fastbn"), ("GN", "numpy formula")]
    for r in rows:
        assert 0 < r["norm_ms"] < r["step_ms"] and 0 < r["norm_share_pct"] < 100
        assert r["norm_layers"] == 2
    assert profile.main(["--steps", "2", "--warmup", "1", "--batch-size", "4",
                         "--norms", "GN"]) == 0
    out = capsys.readouterr().out
    assert "norm share %" in out and "numpy formula" in out


# --- sync-bn ----------------------------------------------------------------------------------


def test_sync_bn_in_one_process_equals_batch_norm(digits, tmp_path):
    """Without mpiexec (one rank) the data-parallel run is the one-process run."""
    pytest.importorskip("mpi4py")
    module = experiments.get("sync-bn")
    config = module.make_config("tiny", seed=3)
    rows = module.run(config, digits, progress=False)
    assert {r["seed"] for r in rows} == {3, 4} and {r["dtype"] for r in rows} == {
        "float64", "float32"}
    assert len(rows) == 2 * 2 * config.steps
    assert all(r["ranks"] == 1 and r["rel_diff"] == 0.0 for r in rows)
    summary, verdicts = module.summarize(rows, config)
    assert len(summary) == 2 and all("REPRODUCED --" in v for v in verdicts)
    module.plot(rows, config, tmp_path / "fig.png", caption="test")
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_sync_bn_under_mpiexec_writes_its_outputs(tmp_path):
    """``mpiexec -n 2 fastbn experiment sync-bn --tiny``: rank 0 reports; the float64
    curves agree to ~1e-12."""
    pytest.importorskip("mpi4py")
    import os
    import shutil

    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec")
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "fastbn", "experiment",
                           "sync-bn", "--tiny", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("wrote ") == 1  # rank 0 only
    rows = report.read_csv(tmp_path / "sync-bn.csv")
    assert {r["ranks"] for r in rows} == {2}
    assert max(r["rel_diff"] for r in rows if r["dtype"] == "float64") < 1e-12
    assert (tmp_path / "sync-bn.png").stat().st_size > 1000
