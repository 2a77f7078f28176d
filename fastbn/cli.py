"""The ``fastbn`` command line: ``bench``, ``check`` and ``warmup``."""

from __future__ import annotations

import argparse
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
    sub.add_parser("warmup", help="compile and cache every CPU kernel ahead of time")
    bench = sub.add_parser(
        "bench", help="benchmark every kernel against the NumPy reference and torch")
    bench.add_argument("--quick", action="store_true",
                       help="float32 only, fewer repeats (under 2 minutes on 2 cores)")
    bench.add_argument("--ops", nargs="+", metavar="OP", help="subset of: " + ", ".join(OPS))
    bench.add_argument("--json", metavar="PATH", help="write the results as JSON")
    bench.add_argument("--plot", metavar="PATH", help="write a bar chart (needs matplotlib)")
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
        bench.run(quick=args.quick, ops=ops, json_path=args.json, plot_path=args.plot)
        return 0
    if args.command == "warmup":
        from .warmup import warmup

        warmup()
        return 0
    return 2  # unreachable: argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
