"""Throughput of fastbn.dask.moments against fastbn.moments in memory.

    python scripts/dask_moments.py [--samples N] [--csv PATH]

(N, 64, 56, 56) float32, chunks of 16 samples: in memory as a NumPy array
(``fastbn.moments``), as a Dask array over that NumPy array, and as a Dask
array over an ``np.memmap`` of a file (read chunk by chunk; the file is in
the page cache after the first round, so this measures the reduction, not
the disk).  Medians of 5 interleaved rounds, threaded scheduler.
``--csv PATH`` appends one row per case (the documentation's Dask table is
generated from ``docs/experiments/dask-moments.csv``).
"""

import argparse
import datetime
import os
import tempfile
import time

import dask
import dask.array as da
import numpy as np

import fastbn
import fastbn.dask
from fastbn.experiments.report import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--csv", metavar="PATH", help="append one row per case to a CSV")
    args = parser.parse_args()
    shape = (args.samples, 64, 56, 56)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.f32")
        mm = np.memmap(path, dtype=np.float32, mode="w+", shape=shape)
        mm[:] = x
        mm.flush()
        ro = np.memmap(path, dtype=np.float32, mode="r", shape=shape)
        chunks = (16, -1, -1, -1)
        # built once, outside the timing (from_array hashes a NumPy array's bytes for
        # the graph's name unless name=False: 20 ms per 100 MB)
        d_numpy = da.from_array(x, chunks=chunks, name=False)
        d_memmap = da.from_array(ro, chunks=chunks, name=False)
        cases = {
            "fastbn.moments (in memory)": lambda: fastbn.moments(x),
            "fastbn.dask.moments (NumPy-backed)": lambda: fastbn.dask.moments(d_numpy),
            "fastbn.dask.moments (memmap file)": lambda: fastbn.dask.moments(d_memmap),
        }
        for f in cases.values():
            f()
        times = {k: [] for k in cases}
        with dask.config.set(scheduler="threads"):
            for _ in range(5):
                for k, f in cases.items():
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
    gb = x.nbytes / 1e9
    base = float(np.median(times["fastbn.moments (in memory)"]))
    print(f"{shape} float32 = {1e3 * gb:.0f} MB, chunks of 16 samples, threads scheduler, "
          f"{os.cpu_count()} cores")
    rows = []
    for k, t in times.items():
        med = float(np.median(t))
        print(f"  {k:38s} {1e3 * med:8.1f} ms  {gb / med:6.2f} GB/s  ({base / med:.2f}x in-memory)")
        rows.append({"samples": args.samples, "megabytes": round(1e3 * gb), "case": k,
                     "median_ms": 1e3 * med, "gbps": gb / med, "vs_in_memory": base / med,
                     "cpu": cpu_name(), "cores": os.cpu_count(), "rounds": len(t),
                     "date": datetime.date.today().isoformat()})
    if args.csv:
        from fastbn.experiments.report import read_csv, write_csv

        old = read_csv(args.csv) if os.path.exists(args.csv) else []
        write_csv(old + rows, args.csv)


if __name__ == "__main__":
    main()
