"""What every command shares: loading the model named on the command line, and the exit code of each error area."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
           "exit_code", "load_model"]

#: Some inputs failed (the others' results are written), or the one input of a command could not be used.
EXIT_FAILED_INPUTS = 1
#: Bad arguments, option values or data; nothing was done.
EXIT_USAGE = 2
#: The model could not be fetched or loaded, or a download, upload or the network failed.
EXIT_MODEL = 3
#: An unexpected error (a bug or a device fault), not caused by the arguments or the inputs.
EXIT_INTERNAL = 4


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
    if isinstance(exc, (DcaseNetHubError, ValueError, OSError)):
        return EXIT_USAGE
    return EXIT_INTERNAL


def load_model(name: str, **kwargs: Any) -> DcaseNet:
    """``from_pretrained(name, **kwargs)`` for commands; every failure to get the model becomes :class:`ModelLoadError`.

    Raises:
        ModelLoadError: unknown id, offline, failed download or checksum, missing or unreadable checkpoint.
    """
    from dcasenet_hub.inference.model import from_pretrained

    try:
        return from_pretrained(name, **kwargs)
    except (DcaseNetHubError, ValueError, OSError, RuntimeError, KeyError) as exc:  # e.g. torch.load on a damaged file
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
