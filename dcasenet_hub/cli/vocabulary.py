"""One spelling per meaning across every command, and the old spellings that are still accepted.

Every command writes its result where ``-o/--output`` says, is quiet with ``-q/--quiet`` (warnings and errors only:
no progress bars, no summary of a run that went well; results a command exists to print stay), reads weights from
``--cache-dir`` and training features from ``--feature-cache``. Old spellings (``--output-dir``, ``--out``,
``--dest``, ``--no-progress``, ``--precision``, ``--cache-dir`` of the feature cache) still work: they are hidden
from ``--help`` and the command notes the new spelling once.
"""

from __future__ import annotations

import argparse
from typing import Any

#: Attribute of the parsed arguments that collects the notes about old spellings (printed once by ``main``).
NOTES = "deprecated_spellings"


class _OldSpelling(argparse.Action):
    """Stores its value exactly as the new spelling does, and records a note naming the new spelling."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        notes = getattr(namespace, NOTES, None) or []
        note = f"{option_string} is deprecated; use {self.new}"
        if note not in notes:
            notes.append(note)
        setattr(namespace, NOTES, notes)


def add_old_spelling(parser: Any, old: str, *, dest: str, new: str, flag: bool = False, **kwargs: Any) -> None:
    """Accept ``old`` as a hidden spelling of the option stored in ``dest`` (``new`` is named in the note).

    Args:
        parser: The parser or argument group of the new spelling.
        old: The old option string, e.g. ``"--output-dir"``.
        dest: The new option's ``dest``.
        new: The new spelling as the note shows it, e.g. ``"-o/--output"``.
        flag: The option takes no value (``store_true``).
        kwargs: ``type`` / ``metavar`` of a valued option.
    """
    if flag:
        kwargs.update(nargs=0, const=True)
    parser.add_argument(old, dest=dest, action=_OldSpelling, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


def add_output(parser: argparse.ArgumentParser, *, help: str, metavar: str, required: bool = False,
               old: tuple[str, ...] = (), type: Any = None) -> None:
    """``-o/--output`` (stored in ``args.output``), with the command's old spellings hidden beside it."""
    group: Any = parser.add_mutually_exclusive_group(required=True) if required else parser
    group.add_argument("-o", "--output", dest="output", type=type, default=None, metavar=metavar, help=help)
    for spelling in old:
        add_old_spelling(group, spelling, dest="output", new="-o/--output", type=type, metavar=metavar)


def add_feature_cache(parser: argparse.ArgumentParser) -> None:
    """``--feature-cache`` (the training features), with the old ``--cache-dir`` spelling hidden beside it."""
    from pathlib import Path

    parser.add_argument("--feature-cache", type=Path, default=None, metavar="DIR",
                        help="feature cache (default $DCASENET_HUB_FEATURES or ~/.cache/dcasenet_hub/features)")
    add_old_spelling(parser, "--cache-dir", dest="feature_cache", new="--feature-cache", type=Path)


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """The old ``--no-progress`` spelling of ``-q/--quiet``."""
    add_old_spelling(parser, "--no-progress", dest="quiet", new="-q/--quiet", flag=True)
