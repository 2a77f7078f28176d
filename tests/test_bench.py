"""`fastbn bench` as a user runs it: the table, the JSON schema of API.md, the plot."""

import json

import pytest

from fastbn import bench, cli

ROW_KEYS = {"op", "pass", "layout", "dtype", "shape", "backend", "median_s", "gbps",
            "bandwidth_fraction", "numpy_median_s", "speedup_vs_numpy", "torch_median_s",
            "speedup_vs_torch", "numpy_formula_median_s", "speedup_vs_numpy_formula"}


@pytest.fixture
def small_grid(monkeypatch):
    """The real grid code on small shapes, so the test takes a second."""
    real = bench.grid

    def grid(quick=False, ops=bench.OPS, dtypes=None):
        cases = real(quick, ops, dtypes)
        return [c for c in cases if c.nbytes < (1 << 20)]

    monkeypatch.setattr(bench, "grid", grid)
    monkeypatch.setattr(bench, "precompile", lambda quick, ops: [])
    monkeypatch.setattr(bench, "BandwidthProbe", lambda mb: _Probe())


class _Probe:
    gbps = 10.0

    def measure(self, repeats=3):
        pass


def test_bench_json_schema_and_table(small_grid, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert cli.main(["bench", "--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["bandwidth_gbps"] == 10.0
    assert report["rows"], "no rows"
    for row in report["rows"]:
        assert set(row) == ROW_KEYS
        assert row["median_s"] > 0 and row["speedup_vs_numpy"] > 0
        assert (row["torch_median_s"] is None) == (row["speedup_vs_torch"] is None)
        assert row["numpy_formula_median_s"] > 0 and row["speedup_vs_numpy_formula"] > 0
    ops = {r["op"] for r in report["rows"]}
    assert {"batch_norm", "layer_norm", "rms_norm"} <= ops
    table = capsys.readouterr().out
    assert "bandwidth probe" in table and "vs numpy" in table and "vs formula" in table
    assert "geometric mean vs the NumPy formula" in table


def test_bench_cold_carries_both_cache_states(small_grid, tmp_path, monkeypatch, capsys):
    flushes = []

    class Flush(bench.CacheFlush):
        def __call__(self):
            flushes.append(1)
            super().__call__()

    monkeypatch.setattr(bench, "CacheFlush", lambda: Flush(megabytes=1))
    out = tmp_path / "cold.json"
    assert cli.main(["bench", "--quick", "--cold", "--ops", "layer_norm",
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["cache"] == "cold"
    for row in report["rows"]:
        assert set(row) == ROW_KEYS | {"warm"}
        assert set(row["warm"]) == ROW_KEYS - {"op", "pass", "layout", "dtype", "shape",
                                               "backend"}
        assert row["median_s"] > 0 and row["warm"]["median_s"] > 0
    assert flushes  # one per cold sample
    assert "caches: cold" in capsys.readouterr().out


def test_bench_default_is_warm_and_says_so(small_grid, capsys):
    report = bench.run(quick=True, ops=("rms_norm",))
    assert report["machine"]["cache"] == "warm"
    assert all("warm" not in r for r in report["rows"])
    assert "caches: warm" in capsys.readouterr().out


def test_cache_flush_swaps_its_buffers():
    flush = bench.CacheFlush(megabytes=1)
    src = flush.src
    flush()
    assert flush.dst is src and flush.src.nbytes == 1 << 20


def test_bench_ops_filter_and_plot(small_grid, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    report = bench.run(quick=True, ops=("layer_norm",), plot_path=str(png))
    assert {r["op"] for r in report["rows"]} == {"layer_norm"}
    assert png.stat().st_size > 1000


def test_bench_rejects_unknown_ops(capsys):
    assert cli.main(["bench", "--ops", "nope"]) == 2
    assert "unknown op" in capsys.readouterr().err


def test_bandwidth_probe_measures_something():
    probe = bench.BandwidthProbe(8)
    probe.measure(2)
    assert probe.gbps > 0.1


def test_out_variant_writes_into_a_preallocated_array():
    import numpy as np

    case = next(c for c in bench.grid(True, ("layer_norm",)) if c.shape == (8, 768)
                and c.pass_ == "forward")
    out_case = bench._into_out(case)
    assert out_case.pass_ == "forward out=" and out_case.numpy is case.numpy
    y = out_case.fastbn()[0]
    np.testing.assert_allclose(y, case.fastbn()[0])
    assert y is out_case.fastbn.keywords["out"]


def test_masked_rows_and_their_unmasked_twins():
    import numpy as np

    cases = bench.grid(True, ("batch_norm_masked",), with_torch=False)
    got = sorted((c.op, c.pass_, c.layout) for c in cases)
    assert got == sorted((op, p, layout) for op in ("batch_norm", "batch_norm_masked")
                         for p in ("forward-train", "backward") for layout in ("NCL", "NLC"))
    for c in cases:
        assert c.shape in ((32, 256, 200), (32, 200, 256)) and c.formula is not None
        if c.op == "batch_norm_masked":
            assert c.torch is None  # torch has no masked batch norm
            out = c.fastbn()[0]
            np.testing.assert_allclose(out, c.numpy()[0], rtol=1e-3, atol=1e-3)
            f = c.formula()
            f = f[0] if isinstance(f, tuple) else f
            np.testing.assert_allclose(f, c.numpy()[0], rtol=1e-3, atol=1e-3)
    mask = bench._sequence_mask(np.random.default_rng(0), 32, 200)
    assert 0.75 < mask.mean() < 0.85 and mask[:, 0].all()
    report = {"rows": [
        {"op": "batch_norm", "pass": "backward", "layout": "NCL", "dtype": "float32",
         "shape": [2, 3, 4], "median_s": 2.0},
        {"op": "batch_norm_masked", "pass": "backward", "layout": "NCL", "dtype": "float32",
         "shape": [2, 3, 4], "median_s": 3.0}]}
    [(row, ratio)] = bench.masked_ratios(report)
    assert row["op"] == "batch_norm_masked" and ratio == 1.5
