"""The ``dcasenet-hub`` command line. Each sub-command group is a module of this package (``infer``, ``hub``, ``finetune``, ``train``, ``data``,
``export``, ``bench``) that parses, makes one library call and prints.

Exit codes: 0 success, 1 some inputs failed (the others' results are written), 2 usage error, 3 the model could
not be fetched or loaded (unknown id, offline, download or checksum failure, unreadable checkpoint).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from dcasenet_hub.cli import bench, data, export, finetune, hub, infer, train
from dcasenet_hub.cli.common import EXIT_MODEL, ModelLoadError, model_errors

# sub-command modules; each defines ``register(subparsers)`` which adds its commands with ``func=`` defaults
_COMMAND_MODULES = (infer, hub, finetune, train, data, export, bench)

EPILOG = """examples:
  dcasenet-hub embed examples/audio -o embeddings/
  dcasenet-hub predict street.wav -o predictions/
  dcasenet-hub list
  dcasenet-hub bench --quick
  dcasenet-hub <command> --help

-v/--verbose and -q/--quiet work before or after the command; they set the level of dcasenet-hub's own log
(debug / warnings only), never that of other libraries.

exit codes: 0 success, 1 some inputs failed (the others' results are written), 2 usage error,
3 model could not be fetched or loaded
"""

class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (not the one at creation), so the handler can be installed once."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


_HANDLER: logging.Handler | None = None


def _configure_logging(*, verbose: bool, quiet: bool) -> None:
    """Level and handler of the package's logger only; the root logger (and matplotlib's, torch's ...) is untouched."""
    global _HANDLER
    log = logging.getLogger("dcasenet_hub")
    if _HANDLER is None:
        _HANDLER = _StderrHandler()
        _HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if _HANDLER not in log.handlers:
        log.addHandler(_HANDLER)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def _add_flags_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """Accept -v/--verbose and -q/--quiet after any (nested) sub-command too."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in set(action.choices.values()):
            known = sub._option_string_actions
            if "-v" not in known and "--verbose" not in known:
                sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="debug logging")
            quiet = [f for f in ("-q", "--quiet") if f not in known]
            if quiet:
                sub.add_argument(*quiet, dest="quiet", action="store_true", default=argparse.SUPPRESS,
                                 help="warnings only" if len(quiet) == 2 else argparse.SUPPRESS)
            _add_flags_to_subcommands(sub)


def build_parser() -> argparse.ArgumentParser:
    from dcasenet_hub import __version__

    parser = argparse.ArgumentParser(
        prog="dcasenet-hub",
        description="DcaseNet: acoustic scenes, audio tags and sound events from one pretrained network.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", dest="global_quiet", action="store_true",
                        help="warnings only (and no progress bars where a command has them)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(sub)
    _add_flags_to_subcommands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.global_quiet:
        args.quiet = True
    _configure_logging(verbose=args.verbose, quiet=bool(getattr(args, "quiet", False)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    errors = model_errors()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except errors as exc:
        if args.verbose:
            raise
        msg = str(exc) if isinstance(exc, ModelLoadError) else f"model could not be fetched or loaded: {exc}"
        print(f"dcasenet-hub {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_MODEL
    except (ValueError, OSError, RuntimeError) as exc:  # clear message, no traceback, for user errors
        if args.verbose:
            raise
        print(f"dcasenet-hub {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
