"""What every command shares: loading the model named on the command line, and the exit code when that fails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dcasenet_hub.errors import (
    CacheNotWritableError,
    CheckpointMismatchError,
    ChecksumMismatchError,
    ModelFileError,
    ModelNotFoundError,
    NetworkUnavailableError,
    OfflineError,
    UnknownModelError,
    WeightsNotPublishedError,
)

if TYPE_CHECKING:  # pragma: no cover
    from dcasenet_hub.inference.model import DcaseNet

#: Exit code when the model could not be fetched or loaded (2 is kept for usage errors).
EXIT_MODEL = 3


class ModelLoadError(Exception):
    """The model named on the command line could not be fetched or loaded (exit code :data:`EXIT_MODEL`).

    Attributes:
        name: What ``--model`` (or the command's model argument) said.
        cause: The underlying error.
    """

    def __init__(self, name: str, cause: BaseException) -> None:
        self.name = str(name)
        self.cause = cause
        text = str(cause) if isinstance(cause, OfflineError) else " ".join(str(cause).split())  # fixes: a list
        super().__init__(f"model could not be fetched or loaded ({self.name}): {text}")


def load_model(name: str, **kwargs: Any) -> DcaseNet:
    """``from_pretrained(name, **kwargs)`` for commands; every failure becomes :class:`ModelLoadError`.

    Raises:
        ModelLoadError: unknown id, offline, failed download or checksum, missing or unreadable checkpoint.
    """
    from dcasenet_hub.inference.model import from_pretrained

    try:
        return from_pretrained(name, **kwargs)
    except CacheNotWritableError:  # its message is complete: the folder and the fix
        raise
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(name, exc) from None


def model_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the model could not be fetched or loaded" wherever a command raises them."""
    return (ModelLoadError, CacheNotWritableError, OfflineError, NetworkUnavailableError, ChecksumMismatchError, UnknownModelError,
            WeightsNotPublishedError, CheckpointMismatchError, ModelFileError, ModelNotFoundError)
