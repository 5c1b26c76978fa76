"""Every public exception of dcasenet-hub, in one place (each message names the input, the problem and the fix).

The modules that raise them import them from here; ``dcasenet_hub.errors.X`` is the one import path to catch them.

Example:
    >>> from dcasenet_hub.errors import AudioLoadError
    >>> str(AudioLoadError("a.wav", "file not found"))
    'a.wav: file not found'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# ---- options -----------------------------------------------------------------------------------------------------


class OptionsError(ValueError):
    """An option has a value it does not allow; the message names the option, the value and what is allowed.

    Attributes:
        option: The option's name (``"threshold"``); the command line shows it as its flag (``--threshold``).
        value: The value given.
        allowed: What the option allows, or why this value cannot be used (``"a probability between 0 and 1"``).

    Example:
        >>> str(OptionsError("threshold", 1.5, "must be a probability between 0 and 1"))
        'threshold=1.5: must be a probability between 0 and 1'
    """

    def __init__(self, option: str, value: object, allowed: str) -> None:
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option}={value!r}: {allowed}")


# ---- audio ------------------------------------------------------------------------------------------------------


class AudioLoadError(ValueError):
    """An audio file could not be used; the message names the file and the problem.

    Attributes:
        path: The file.
        reason: What is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class InputError(ValueError):
    """A waveform or file that cannot be analysed (the message names it and the problem)."""


# ---- models -----------------------------------------------------------------------------------------------------


class InputTooShortError(ValueError):
    """The input has fewer feature frames than the network's pooling allows (40 = 0.8 s)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the architecture it is loaded into."""


# ---- hub --------------------------------------------------------------------------------------------------------


class ManifestError(ValueError):
    """A weights manifest does not follow the schema of docs/weights.md."""


class NetworkUnavailableError(OSError):
    """The host could not be reached (no network, DNS failure, refused or timed-out connection)."""


class ChecksumMismatchError(OSError):
    """A downloaded file does not have the hash the manifest promises."""


class DownloadTooLargeError(ChecksumMismatchError):
    """A response body is larger than the file can be (the manifest size, or a bound from the architecture)."""


class UnknownModelError(ValueError):
    """The name is neither a manifest id, an existing local path, nor a Hugging Face repo id."""


class WeightsNotPublishedError(ValueError):
    """The manifest knows the model but no weights were ever published for it (DcaseNet v1, v2)."""


class OfflineError(ConnectionError):
    """The weights are not cached and the network may not or cannot be used."""


class ModelFileError(ValueError):
    """A local file given as a model is not a readable DcaseNet checkpoint (the message says what is expected)."""


class ModelNotFoundError(FileNotFoundError):
    """A local model path (file or folder) does not exist or lacks its weights file."""


class HubAccessError(PermissionError):
    """The Hugging Face Hub cannot be written to: no token, a rejected token, or the Hub cannot be reached."""


# ---- export / integrations --------------------------------------------------------------------------------------


class OnnxUnavailableError(ImportError):
    """onnx / onnxruntime are not installed."""


class MissingMatplotlibError(ImportError):
    """matplotlib is not installed."""

    MESSAGE = 'plotting needs matplotlib, which is not installed: pip install "dcasenet-hub[plot]"'


# ---- fine-tuning and training -----------------------------------------------------------------------------------

#: Problems a :class:`DataError` message lists before "... and N more".
MAX_LISTED_PROBLEMS = 60


class DataError(ValueError):
    """The data has problems; all of them are listed (file names, rows) so they can be fixed in one go.

    Attributes:
        source: The folder or table that was read.
        problems: One line per problem.
    """

    def __init__(self, source: str | Path, problems: Sequence[str]) -> None:
        self.source = str(source)
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED_PROBLEMS]
        head = (f"{len(self.problems)} problem(s) in the data {self.source}; fix them and run again "
                "(nothing was trained):")
        lines = [head]
        lines += [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; training stopped before the update."""


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder does not have the expected layout (the message names what is missing and the layout)."""


class DownloadError(RuntimeError):
    """A download failed, or a file did not match its published size or MD5 (the message says which)."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder (nothing was extracted)."""


class DiskSpaceError(OSError):
    """Not enough free disk space for a download or an extraction (checked before writing; nothing was written)."""
