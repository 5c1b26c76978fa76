"""The ``dcasenet-hub`` command line. Each sub-command lives in a ``_cli_*`` module that calls the public API only.

Exit codes: 0 success, 1 some inputs failed (the others' results are written), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# sub-command modules; each defines ``register(subparsers)`` which adds its commands with ``func=`` defaults
_COMMAND_MODULES = ("_cli_infer", "_cli_hub", "_cli_finetune", "_cli_train", "_cli_data", "_cli_export")

EPILOG = """examples:
  dcasenet-hub embed examples/audio -o embeddings/
  dcasenet-hub predict street.wav -o predictions/
  dcasenet-hub list
  dcasenet-hub <command> --help
"""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="dcasenet-hub",
        description="DcaseNet: acoustic scenes, audio tags and sound events from one pretrained network.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # clear message, no traceback, for user errors
        if args.verbose:
            raise
        print(f"dcasenet-hub {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
