"""`fastbn bench --device cuda` (fastbn.bench_cuda) and scripts/gpu-check.sh.

On the CUDA simulator in CI (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1),
where only the smoke grid runs; importing _cuda skips without numba-cuda.
"""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import _cuda  # noqa: F401  (skips this module without numba-cuda)
import numpy as np
import pytest

from fastbn import bench, bench_cuda, config
from fastbn.cuda import SIMULATOR

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench-cuda.json"
    tpb = config.THREADS_PER_BLOCK
    report = bench_cuda.run(smoke=True, json_path=str(path), stream=io.StringIO())
    assert config.THREADS_PER_BLOCK == tpb  # the simulator's small blocks are undone
    return report, path


def _cpu_row_keys() -> set:
    case = bench.BenchCase("op", "forward", "NC", np.dtype(np.float32), (2, 2), 2,
                           print, print, results={"fastbn": 1.0, "numpy": 2.0})
    return set(bench.rows([case], 1.0)[0])


def test_smoke_rows(smoke):
    report, _ = smoke
    rows = report["rows"]
    assert rows and all(r["backend"] == "cuda" for r in rows)
    for r in rows:
        assert set(r) == _cpu_row_keys() | {"max_err", "error"}, r
        assert r["error"] is None, r
        assert r["median_s"] > 0 and r["gbps"] > 0
        assert r["numpy_median_s"] > 0  # the oracle is timed in the smoke run
        assert r["max_err"] < bench_cuda.TOL[r["dtype"]], r
    assert bench_cuda.failures(report) == []
    seen = {(r["op"].split()[0], r["pass"], r["layout"]) for r in rows}
    for layout in ("NCHW", "NHWC", "NC"):
        for pass_ in ("forward-train", "inference", "backward"):
            assert ("batch_norm", pass_, layout) in seen
    for op in ("layer_norm", "rms_norm"):
        assert {(op, "forward", "rows"), (op, "backward", "rows")} <= seen
    for layout in ("NCHW", "NHWC"):
        assert {("group_norm", "forward", layout), ("group_norm", "backward", layout)} <= seen
    assert {r["dtype"] for r in rows} == {"float32", "float16"}


def test_smoke_json(smoke):
    report, path = smoke
    loaded = json.loads(path.read_text())
    assert loaded["rows"] == json.loads(json.dumps(report["rows"]))
    m = loaded["machine"]
    assert m["simulator"] is SIMULATOR and m["bandwidth_gbps"] > 0
    assert isinstance(m["device"], str) and len(m["compute_capability"]) == 2
    assert "max err" in bench_cuda.table(report)


def test_max_err_sees_a_wrong_result():
    ref = (np.ones((3, 4)), np.full(4, 10.0))
    assert bench_cuda.max_err((ref[0].astype(np.float32), ref[1]), ref) == 0
    assert bench_cuda.max_err((ref[0] + 0.5, ref[1]), ref) == pytest.approx(0.5)
    assert bench_cuda.max_err((ref[0], ref[1] + 1), ref) == pytest.approx(0.1)  # relative


def test_a_failing_case_is_reported():
    report = {"rows": [{"op": "batch_norm", "pass": "forward-train", "layout": "NC",
                        "dtype": "float32", "shape": [2, 2], "error": None, "max_err": 0.5}]}
    assert len(bench_cuda.failures(report)) == 1


@pytest.mark.skipif(not SIMULATOR, reason="the simulator's refusal")
def test_the_simulator_runs_only_smoke():
    with pytest.raises(RuntimeError, match="--smoke"):
        bench_cuda.run(quick=True)
    with pytest.raises(ValueError, match="unknown op"):
        bench_cuda.run(smoke=True, ops=["nope"])


def test_no_gpu_and_no_simulator_says_what_to_do():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    proc = subprocess.run([sys.executable, "-m", "fastbn.bench_cuda", "--smoke", "--ops",
                           "rms_norm"], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode == 0:
        pytest.skip("a real GPU is usable here")
    assert proc.returncode == 2, proc.stderr
    assert "numba-cuda[cu12]" in proc.stderr and "NUMBA_ENABLE_CUDASIM=1" in proc.stderr


def test_gpu_check_script_parses():
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT)], check=True)


def test_the_command_line_runs_the_gpu_bench(tmp_path, capsys):
    from fastbn.cli import main

    path = tmp_path / "cli.json"
    assert main(["bench", "--device", "cuda", "--smoke", "--ops", "rms_norm",
                 "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert rows and {r["op"] for r in rows} == {"rms_norm"}
    assert all(r["backend"] == "cuda" for r in rows)
    assert "rms_norm" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["bench", "--smoke"],
                                  ["bench", "--device", "cuda", "--smoke", "--cold"],
                                  ["bench", "--device", "cuda", "--smoke", "--ops", "nope"]])
def test_the_command_line_refuses_a_bad_mix(argv, capsys):
    from fastbn.cli import main

    assert main(argv) == 2
    assert "fastbn bench" in capsys.readouterr().err
