"""The command line as a user runs it."""

import subprocess
import sys

from fastbn import cli


def test_check_prints_a_table_and_passes(capsys):
    assert cli.main(["check", "--quick", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "max error" in out and "fastbn ms" in out and "numpy ms" in out
    assert "batch_norm backward frozen" in out
    assert "all within tolerance" in out


def test_warmup(capsys):
    assert cli.main(["warmup"]) == 0
    assert "compiled and cached" in capsys.readouterr().out


def test_cache_shows_where_the_kernels_are(capsys):
    from fastbn import _cache

    assert cli.main(["cache"]) == 0  # --clear runs in tests/test_cache.py, on a private cache
    out = capsys.readouterr().out
    assert _cache.cache_key() in out and " files, " in out and "--clear" in out


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "fastbn", "--help"], capture_output=True,
                            text=True, check=True)
    assert "check" in result.stdout and "warmup" in result.stdout and "cache" in result.stdout
