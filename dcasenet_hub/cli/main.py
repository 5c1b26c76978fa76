"""The ``dcasenet-hub`` command line. Each sub-command group is a module of this package (``infer``, ``score``, ``hub``,
``finetune``, ``train``, ``data``, ``export``, ``bench``) that parses, makes one library call and prints.

Exit codes (one per area of :mod:`dcasenet_hub.errors`, :func:`dcasenet_hub.cli.common.exit_code`): 0 success,
1 some inputs failed (the others' results are written), 2 usage error, 3 the model could not be fetched or loaded
or a download, upload or the network failed, 4 unexpected error (a bug or a device fault).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from dcasenet_hub.cli import bench, data, export, finetune, hub, infer, score, train
from dcasenet_hub.cli.common import EXIT_INTERNAL, environment_fix, exit_code, flag_message
from dcasenet_hub.cli.vocabulary import NOTES
from dcasenet_hub.errors import ModelError, ModelLoadError, OptionsError

# sub-command modules; each defines ``register(subparsers)`` which adds its commands with ``func=`` defaults
_COMMAND_MODULES = (infer, score, hub, finetune, train, data, export, bench)

EPILOG = """examples:
  dcasenet-hub embed examples/audio -o embeddings/
  dcasenet-hub predict street.wav -o predictions/
  dcasenet-hub score predictions/ --truth annotations.tsv
  dcasenet-hub list
  dcasenet-hub bench --quick
  dcasenet-hub <command> --help

-v/--verbose and -q/--quiet work before or after the command; they set the level of dcasenet-hub's own log
(debug / warnings and errors only: no progress bars, no summary of a run that went well), never that of other
libraries; results a command exists to print (evaluate's metrics, list's table) stay. Every command writes to
-o/--output.

exit codes: 0 success, 1 some inputs failed (the others' results are written), 2 usage error,
3 model could not be fetched or loaded, or a download or the network failed, 4 unexpected error (a bug),
130 interrupted (Ctrl-C; the message says how to continue), 143 the same after SIGTERM
"""

#: What -q/--quiet means for every command.
QUIET_HELP = ("warnings and errors only: no progress bars, no summary of a run that went well (results a command "
              "exists to print, such as evaluate's metrics, stay)")


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


_CHOICE = re.compile(r"invalid choice: '(?P<given>.*?)' \(choose from (?P<choices>.*)\)$", re.S)


def _did_you_mean(given: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(given, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error on one line naming the fix (``--help``, a close spelling), not the whole usage
    block first."""

    #: The command line being parsed (set on every parser by :func:`_main`): a missing argument's error also names
    #: a mistyped flag, which argparse reports only once everything required is there.
    given: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        m = _CHOICE.search(message)
        hint = _did_you_mean(m["given"], [c.strip().strip("'") for c in m["choices"].split(",")]) if m else ""
        if hint:  # the close spelling instead of the whole list
            message = f"{message[:m.start()]}invalid choice: {m['given']!r}{hint}"
        elif "required" in message:
            unknown = [t for t in self.given if t.startswith("--") and t.split("=", 1)[0] not in
                       self._option_string_actions and t not in ("--version", "--help")]
            if unknown:
                message += f"; {self._unrecognized(unknown)}"
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def unknown(self, extras: Sequence[str]) -> NoReturn:
        """Arguments this (sub-)command does not take: named by its own usage error, with a close flag."""
        self.error(self._unrecognized(extras))

    def _unrecognized(self, tokens: Sequence[str]) -> str:
        flags = [f for f in self._option_string_actions if f.startswith("--")]
        hints = "".join(_did_you_mean(t.split("=", 1)[0], flags) for t in tokens if t.startswith("-"))
        return f"unrecognized arguments: {' '.join(tokens)}{hints}"


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


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser`` 's own sub-commands (one each, aliases aside)."""
    return [sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for sub in dict.fromkeys(action.choices.values())]


def _add_flags_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """Accept -v/--verbose and -q/--quiet after any (nested) sub-command too."""
    for sub in _subcommands(parser):
        known = sub._option_string_actions
        if "-v" not in known and "--verbose" not in known:
            sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="debug logging")
        quiet = [f for f in ("-q", "--quiet") if f not in known]
        if quiet:
            sub.add_argument(*quiet, dest="quiet", action="store_true", default=argparse.SUPPRESS,
                             help=QUIET_HELP if len(quiet) == 2 else argparse.SUPPRESS)
        sub.set_defaults(parser_=sub)  # the deepest sub-command's parser: the one that names its unknown flags
        _add_flags_to_subcommands(sub)


def build_parser() -> argparse.ArgumentParser:
    from dcasenet_hub import __version__

    parser = _Parser(
        prog="dcasenet-hub",
        description="DcaseNet: acoustic scenes, audio tags and sound events from one pretrained network.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", dest="global_quiet", action="store_true", help=QUIET_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(sub)
    _add_flags_to_subcommands(parser)
    return parser


#: What to do after Ctrl-C or SIGTERM, per command (the others: their finished work is kept).
_AFTER_INTERRUPT = {
    "embed": "finished inputs are kept: rerun the same command to do the rest",
    "predict": "finished inputs are kept: rerun the same command to do the rest",
    "finetune": "rerun the same command with --resume to continue from the last finished epoch",
    "train": "rerun the same command with --resume to continue from the last finished epoch",
}


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit), ended like Ctrl-C: the work in flight is abandoned, the rest
    recorded."""


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated


def _deliver_again(unraisable: Any) -> None:
    """``sys.unraisablehook`` while a command runs: an interrupt that landed in a finalizer or a weak-reference
    callback is ignored there (and printed as "Exception ignored in ..."); send it again, so that it ends the command
    from ordinary code."""
    import signal

    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM if isinstance(unraisable.exc_value, _Terminated) else signal.SIGINT)
    else:
        sys.__unraisablehook__(unraisable)


def _open_closed_descriptors() -> None:
    """Put /dev/null on standard descriptors the command was started without (``2>&-``).

    Python then leaves ``sys.stderr`` (or ``sys.stdout``) None, and the next file the command opens would take the
    free descriptor and receive what C libraries print to it.
    """
    import os

    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: fd itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # open as long as the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    from dcasenet_hub._io import fail_safe

    _open_closed_descriptors()
    # a reader that went away (`dcasenet-hub embed ... 2>&1 | head`) never stops the work or changes the exit code
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err = fail_safe(sys.stdout), fail_safe(sys.stderr)
    on_term = None
    if threading.current_thread() is threading.main_thread():
        on_term = signal.signal(signal.SIGTERM, _terminate)
    unraisable, sys.unraisablehook = sys.unraisablehook, _deliver_again
    try:
        return _main(argv)
    finally:
        sys.unraisablehook = unraisable
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
        sys.stdout, sys.stderr = saved
        for stream in (out, err):
            stream.flush()  # now, where a failure is caught, rather than at exit
            if stream.broken:  # what is left in its buffer would fail again at exit (and set exit code 120)
                _silence(stream)


def _silence(stream: Any) -> None:
    import os

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # not a real file: nothing is flushed to a descriptor at exit
        pass


def _remember(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Give every (sub-)parser the command line, for :meth:`_Parser.error`."""
    if isinstance(parser, _Parser):
        parser.given = argv
    for sub in _subcommands(parser):
        _remember(sub, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    _remember(parser, list(sys.argv[1:] if argv is None else argv))
    args, extras = parser.parse_known_args(argv)
    if extras:
        getattr(args, "parser_", parser).unknown(extras)
    args.quiet = bool(args.global_quiet or getattr(args, "quiet", False))
    _configure_logging(verbose=args.verbose, quiet=args.quiet)
    for note in getattr(args, NOTES, None) or ():  # old spellings still work; each is noted once
        print(f"dcasenet-hub {args.command}: note: {note}", file=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        after = _AFTER_INTERRUPT.get(args.command, "finished work is kept")
        terminated = isinstance(exc, _Terminated)
        print(f"dcasenet-hub {args.command}: {'terminated' if terminated else 'interrupted'}; {after}",
              file=sys.stderr)
        return 143 if terminated else 130
    except Exception as exc:  # one line, no traceback (-v shows it); the exit code says which area failed
        if args.verbose:
            raise
        code = exit_code(exc)
        text = (flag_message(exc, args, flag_names=getattr(args, "flag_names", None),
                             none_as=getattr(args, "none_as", None)) if isinstance(exc, OptionsError) else str(exc))
        if isinstance(exc, ModelError) and not isinstance(exc, ModelLoadError):
            text = f"model could not be fetched or loaded: {text}"
        elif fix := environment_fix(exc, then=_AFTER_INTERRUPT.get(args.command, "run the command again")):
            text = f"{' '.join(text.split()) or type(exc).__name__}; {fix}"
        elif code == EXIT_INTERNAL:
            text = (f"unexpected {type(exc).__name__}: {' '.join(text.split())} (a bug or a device fault, not the "
                    "arguments or inputs; run again with -v for the traceback)")
        print(f"dcasenet-hub {args.command}: error: {text}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
