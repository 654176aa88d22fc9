"""The `spquant` command. Thin: every sub-command lives in the module that owns the concept and
registers itself through a `register(subparsers)` function listed in COMMAND_MODULES."""

from __future__ import annotations

import argparse
import importlib
import sys

from spquant.errors import SpquantError

# Each module defines register(subparsers) adding its sub-commands; handlers are set with
# parser.set_defaults(func=callable(args) -> int | None).
COMMAND_MODULES: list[str] = [
    "spquant.data.cli",
    "spquant.train.cli",
    "spquant.cost.cli",
    "spquant.deploy.cli",
    "spquant.detect.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spquant",
        description=(
            "Train fully quantized, sparse spiking neural networks (SpQuant-SNN), count their cost "
            "and deploy them as integer-only models. Run 'spquant COMMAND --help' for details."
        ),
    )
    from spquant import __version__

    parser.add_argument("--version", action="version", version=f"spquant {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from spquant.perf import configure_from_env

    configure_from_env()  # SPQUANT_FAST=1 / SPQUANT_THREADS=n (docs/performance.md)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SpquantError as e:  # bad input: one line, no traceback
        print(f"spquant {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing or unreadable file named on the command line
        if e.filename is None:
            raise
        print(f"spquant {args.command}: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    return int(result or 0)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
