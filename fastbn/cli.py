"""The ``fastbn`` command line: ``fastbn check`` and ``fastbn warmup``."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastbn", description="Fast normalization kernels for NumPy code.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check", help="run every op on built-in inputs against the NumPy reference")
    check.add_argument("--quick", action="store_true", help="smaller inputs")
    check.add_argument("--repeats", type=int, default=7, help="timed calls per case")
    sub.add_parser("warmup", help="compile and cache every CPU kernel ahead of time")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        from . import check

        return 0 if check.run(quick=args.quick, repeats=args.repeats) else 1
    if args.command == "warmup":
        from .warmup import warmup

        warmup()
        return 0
    return 2  # unreachable: argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
