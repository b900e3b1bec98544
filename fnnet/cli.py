"""The ``fnnet`` command line."""

from __future__ import annotations

import argparse
import sys


def _gradcheck(args) -> int:
    from fnnet import gradcheck

    results = gradcheck.run_builtin(verbose=True)
    return 0 if all(report.passed for _, report in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fnnet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("gradcheck", help="check every hand-written backward pass")
    check.set_defaults(run=_gradcheck)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
