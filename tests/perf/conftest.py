"""pytest-benchmark runs: excluded from the default test run (marker ``perf``).

Run them with ``pytest tests/perf -m perf`` (add ``--benchmark-disable`` for a
one-call smoke run).  Each case puts fastbn, the NumPy reference and torch (if
installed, on the same thread count) in one benchmark group, so one run shows
the ratios.
"""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/perf" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.perf)
