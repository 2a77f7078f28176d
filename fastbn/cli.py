"""The ``fastbn`` command line: ``bench``, ``check``, ``warmup``, ``cache`` and ``experiment``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from .bench import OPS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastbn", description="Fast normalization kernels for NumPy code.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check", help="run every op on built-in inputs against the NumPy reference")
    check.add_argument("--quick", action="store_true", help="smaller inputs")
    check.add_argument("--repeats", type=int, default=7, help="timed calls per case")
    warm = sub.add_parser("warmup", help="compile and cache every CPU kernel ahead of time")
    warm.add_argument("--jobs", metavar="N", type=int, default=None,
                      help="compile in N processes (the two dtypes at once; default: "
                           "2 on a machine with 2 or more cores, 1 compiles in this process)")
    cache = sub.add_parser(
        "cache", help="show where the compiled kernels are cached, their number and size",
        description="Show fastbn's compile cache: the directory (under NUMBA_CACHE_DIR when "
                    "set, else the per-user cache directory), its files and size.")
    cache.add_argument("--clear", action="store_true",
                       help="remove fastbn's compiled kernels (all versions); the next call "
                            "or `fastbn warmup` compiles them again")
    bench = sub.add_parser(
        "bench", help="benchmark every kernel against the NumPy reference and torch")
    bench.add_argument("--quick", action="store_true",
                       help="float32 only, fewer repeats (under 2 minutes on 2 cores)")
    bench.add_argument("--ops", nargs="+", metavar="OP", help="subset of: " + ", ".join(OPS))
    bench.add_argument("--json", metavar="PATH", help="write the results as JSON")
    bench.add_argument("--plot", metavar="PATH", help="write a bar chart (needs matplotlib)")
    bench.add_argument("--cold", action="store_true",
                       help="also time every call after flushing the caches (a 64 MB copy); "
                            "the table shows the cold medians, the JSON both.  Default: warm, "
                            "each timed call follows one on the same inputs, so an input "
                            "that fits the last-level cache is read from it")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cpu (default): the Numba CPU kernels; cuda: the GPU kernels "
                            "with synchronized timings (needs numba-cuda and a GPU, or "
                            "NUMBA_ENABLE_CUDASIM=1 with --smoke)")
    bench.add_argument("--smoke", action="store_true",
                       help="with --device cuda: tiny shapes, one call each (a check that "
                            "every GPU kernel runs and matches the oracle)")
    experiment = sub.add_parser(
        "experiment", help="run one of the tutorial's experiments; write NAME.csv and NAME.png",
        description="Run one of the tutorial's batch-normalization experiments on "
                    "scikit-learn's digits (or MNIST or MNIST-1D with --data), write "
                    "DIR/NAME.csv and DIR/NAME.png and print the summary (mean ± std over "
                    "seeds).")
    # NAME is checked by hand, not with argparse choices, so a bad name is one line.
    experiment.add_argument("name", metavar="NAME",
                            help="the experiment: convergence, learning-rate, init, small-batch, "
                                 "placement, depth, covariate-shift, noisy-bn, ics, landscape "
                                 "or sync-bn")
    experiment.add_argument("--quick", action="store_true",
                            help="2 seeds, fewer epochs and grid points (seconds, not minutes)")
    experiment.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    experiment.add_argument("--out", metavar="DIR", default=".",
                            help="output directory, created if missing (default: .)")
    experiment.add_argument("--seed", metavar="N", type=int, default=0,
                            help="first seed; runs use N, N+1, ... (default: 0)")
    experiment.add_argument("--data", metavar="PATH",
                            help="a directory of MNIST IDX files (train-images-idx3-ubyte, "
                                 "... raw or .gz) instead of the digits, or 'mnist1d': "
                                 "MNIST-1D's 4,000 + 1,000 signals of length 40, generated "
                                 "in memory by the mnist1d package (MLP experiments only; "
                                 "a directory of that name is ./mnist1d), or 'digits' "
                                 "(the default of most); never downloads")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        from . import check

        return 0 if check.run(quick=args.quick, repeats=args.repeats) else 1
    if args.command == "bench":
        from . import bench

        ops = tuple(args.ops or OPS)
        unknown = set(ops) - set(OPS)
        if unknown:
            print(f"fastbn bench: unknown op(s) {sorted(unknown)}; choose from {OPS}",
                  file=sys.stderr)
            return 2
        if args.device == "cuda":
            if args.plot or args.cold:
                print("fastbn bench: --plot and --cold are CPU options; drop them with "
                      "--device cuda", file=sys.stderr)
                return 2
            from . import bench_cuda

            try:
                report = bench_cuda.run(quick=args.quick, smoke=args.smoke, ops=ops,
                                        json_path=args.json)
            except (RuntimeError, ValueError) as exc:
                print(f"fastbn bench --device cuda: {exc}", file=sys.stderr)
                return 2
            return 1 if bench_cuda.failures(report) else 0
        if args.smoke:
            print("fastbn bench: --smoke goes with --device cuda", file=sys.stderr)
            return 2
        bench.run(quick=args.quick, ops=ops, json_path=args.json, plot_path=args.plot,
                  cold=args.cold)
        return 0
    if args.command == "warmup":
        from .warmup import warmup

        warmup(jobs=args.jobs)
        return 0
    if args.command == "cache":
        from . import _cache

        print(_cache.clear() if args.clear else _cache.report())
        return 0
    if args.command == "experiment":
        return _experiment(args)
    return 2  # unreachable: argparse enforces the choices


def _experiment(args: argparse.Namespace) -> int:
    """``fastbn experiment``: any problem with the request is one line on stderr, exit 2."""
    from . import experiments

    def fail(message: str) -> int:
        print(f"fastbn experiment: {message}", file=sys.stderr)
        return 2

    if args.name not in experiments.EXPERIMENTS:
        return fail(f"unknown experiment {args.name!r}; choose from "
                    f"{', '.join(experiments.EXPERIMENTS)}")
    if args.seed < 0:
        return fail(f"--seed must be >= 0; got {args.seed}")
    if args.quick and args.tiny:
        return fail("--quick and --tiny exclude each other")
    data_path = args.data if args.data is not None else experiments.default_data(args.name)
    missing = experiments.missing_extras(need_sklearn=data_path is None)
    if args.name == "sync-bn" and importlib.util.find_spec("mpi4py") is None:
        return fail("sync-bn needs mpi4py: pip install \"fastbn[mpi,experiments]\" and run it "
                    "as mpiexec -n 2 fastbn experiment sync-bn")
    if missing:
        return fail(f"needs {', '.join(missing)}: pip install \"fastbn[experiments]\"")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        return fail(f"cannot create --out {args.out}: {exc}")
    from .experiments import data as data_mod

    try:
        dataset = data_mod.load(data_path)
    except ImportError as exc:
        return fail(str(exc))
    except (OSError, ValueError) as exc:
        return fail(f"--data: {exc}" if args.data else str(exc))
    try:
        experiments.check_data(args.name, dataset)
    except ValueError as exc:
        return fail(f"--data {args.data}: {exc}")
    mode = "quick" if args.quick else "tiny" if args.tiny else "full"
    experiments.run_experiment(args.name, mode=mode, out=args.out, seed=args.seed,
                               data=dataset, data_path=data_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
