"""What every command shares: loading the model named on the command line, and the exit code of each error area."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dcasenet_hub._io import OUT_OF_MEMORY_FIX, disk_full, out_of_memory
from dcasenet_hub.errors import (
    DcaseNetHubError,
    DownloadError,
    InputError,
    ModelError,
    ModelLoadError,
)

if TYPE_CHECKING:  # pragma: no cover
    from dcasenet_hub.inference.model import DcaseNet

__all__ = ["EXIT_FAILED_INPUTS", "EXIT_INTERNAL", "EXIT_MODEL", "EXIT_USAGE", "ModelLoadError", "check_model_name",
           "environment_fix", "exit_code", "flag_message", "load_model"]

#: Some inputs failed (the others' results are written), or the one input of a command could not be used.
EXIT_FAILED_INPUTS = 1
#: Bad arguments, option values or data; nothing was done.
EXIT_USAGE = 2
#: The model could not be fetched or loaded, or a download, upload or the network failed.
EXIT_MODEL = 3
#: An unexpected error (a bug or a device fault), not caused by the arguments or the inputs.
EXIT_INTERNAL = 4


class Names(argparse.Action):
    """Class names given as ``--labels dog Bark`` or ``--labels dog,Bark``: one spelling for every command."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        names = [n.strip() for v in values for n in v.split(",") if n.strip()]
        if not names:
            parser.error(f"{option_string} {' '.join(values)}: give at least one class name")
        setattr(namespace, self.dest, names)


def exit_code(exc: BaseException) -> int:
    """The exit code of an error that ends a command: one per area of :mod:`dcasenet_hub.errors`.

    Built-in ``ValueError`` / ``OSError`` raised outside the family (a missing input folder, a bad argument) are
    usage errors; anything else is unexpected.

    Example:
        >>> from dcasenet_hub.errors import OfflineError
        >>> exit_code(OfflineError("no network")), exit_code(ValueError("bad")), exit_code(TypeError("bug"))
        (3, 2, 4)
    """
    if isinstance(exc, InputError):
        return EXIT_FAILED_INPUTS
    if isinstance(exc, (ModelError, DownloadError)):
        return EXIT_MODEL
    if isinstance(exc, (DcaseNetHubError, ValueError, OSError)) or out_of_memory(exc):
        return EXIT_USAGE
    return EXIT_INTERNAL


def _errno_fixes() -> dict[int, str]:
    import errno

    elsewhere = "choose another output (-o) or fix the folder's permissions"
    return {errno.EACCES: f"it cannot be written there: {elsewhere}",
            errno.EPERM: f"it cannot be written there: {elsewhere}",
            errno.EROFS: "the file system is read-only: choose another output (-o)",
            errno.EEXIST: "it is a file where a folder is needed: choose another output (-o)",
            errno.ENOTDIR: "a part of that path is a file, not a folder: choose another output (-o)",
            errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter output name (-o)",
            errno.EFBIG: "the file is larger than the file system or `ulimit -f` allows: write to another disk or "
                         "raise the limit"}


#: What to do about the system's errors of writing an output, which name no fix themselves.
_ERRNO_FIXES = _errno_fixes()


def environment_fix(exc: BaseException, *, then: str = "run the command again") -> str | None:
    """What to do about ``exc`` where the machine, not the arguments, caused it: a full disk (``then`` says how to go
    on), memory that ran out, an output the system refused to write (permissions, read-only, a file in the path, a
    name too long, a file too large). None for anything else, and for the package's own errors, which say it.

    Example:
        >>> environment_fix(OSError(30, "Read-only file system", "out.json"))
        'the file system is read-only: choose another output (-o)'
    """
    if isinstance(exc, DcaseNetHubError):
        return None
    if disk_full(exc):
        return f"the disk is full: free space on it (or write to another disk), then {then}"
    if out_of_memory(exc):
        return OUT_OF_MEMORY_FIX
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FIXES:
        return _ERRNO_FIXES[exc.errno]
    return None


def load_model(name: str, **kwargs: Any) -> DcaseNet:
    """``from_pretrained(name, **kwargs)`` for commands; every failure to get the model becomes :class:`ModelLoadError`.

    Raises:
        ModelLoadError: unknown id, offline, failed download or checksum, missing or unreadable checkpoint.
    """
    from dcasenet_hub.inference.model import from_pretrained

    try:
        return from_pretrained(name, **kwargs)
    except (DcaseNetHubError, ValueError, OSError, RuntimeError, KeyError) as exc:  # e.g. torch.load on a damaged file
        if out_of_memory(exc):  # the machine's fault, not the model's
            raise
        raise ModelLoadError(name, exc) from None


def check_model_name(name: str) -> None:
    """Refuse at once (exit code 3) a ``--model`` path that is a FIFO, a device or a socket: nothing reads it.

    Raises:
        ModelLoadError: the path is neither a folder nor a regular file.
    """
    from dcasenet_hub.errors import ModelFileError
    from dcasenet_hub.hub.checkpoint import check_model_path

    try:
        check_model_path(name)
    except ModelFileError as exc:
        raise ModelLoadError(name, exc) from None


#: How every options check words a rejected value (:func:`~dcasenet_hub.inference.options.options_error`); a
#: mapping's value is its repr, whose ": " is not the end of the value.
_OPTION_MESSAGE = re.compile(r"(?P<name>[a-z_]+)=(?P<value>\{.*?\}|.*?): (?P<problem>.*)", re.S)


def flag_message(exc: BaseException, args: Any, *, flag_names: Mapping[str, str] | None = None,
                 typed: Callable[[str, str], str | None] | None = None,
                 none_as: Mapping[str, str] | None = None) -> str:
    """One line for an error; a rejected option value (``epochs=0: must be ...``) names the flag and the value as
    typed (``--epochs 0: must be ...``), so the message speaks the command line's language.

    Args:
        exc: The error.
        args: The parsed arguments (the typed value is the attribute of the option's name).
        flag_names: Options whose flag is not ``--`` plus the name with dashes.
        typed: ``typed(name, value)``: the value as typed, for options parsed from several flags.
        none_as: Options whose ``None`` the command line spells otherwise (``{"patience": "0 (never stop)"}``).

    Example:
        >>> from types import SimpleNamespace
        >>> from dcasenet_hub.errors import OptionsError
        >>> flag_message(OptionsError("epochs=0: must be >= 1"), SimpleNamespace(epochs=0))
        '--epochs 0: must be >= 1'
    """
    from dcasenet_hub.batch.index import one_line
    from dcasenet_hub.errors import OptionsError

    match = _OPTION_MESSAGE.fullmatch(str(exc)) if isinstance(exc, OptionsError) else None
    if match is None:
        return one_line(exc)
    name = match["name"]
    flag = (flag_names or {}).get(name, "--" + name.replace("_", "-"))
    value = typed(name, match["value"]) if typed is not None else None
    if value is None:
        value = getattr(args, name, None)
        if value is None:  # an option whose flag has another name (crop_s: --crop)
            value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if isinstance(value, list):  # a flag that takes several values (--labels A B)
            value = " ".join(map(str, value))
    # None is Python's: a command line cannot type it, or types it otherwise
    spelled = (none_as or {}).get(name)
    problem = match["problem"]
    if spelled is not None:
        problem = re.sub(r"\bNone\b", spelled, problem)
    problem = re.sub(r",? or None$", "", re.sub(r"\bNone or ", "", problem))
    return one_line(f"{flag} {match['value'] if value is None else value}: {problem}")
