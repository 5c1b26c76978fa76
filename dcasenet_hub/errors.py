"""Every exception dcasenet-hub raises on purpose: one family under :class:`DcaseNetHubError`, in a few areas.

Each message names the input, the problem and the fix. The areas, each also a built-in exception so that code
catching ``ValueError`` / ``OSError`` keeps working:

* :class:`InputError` (``ValueError``): an input (file or waveform) cannot be read or analysed. In batch work it
  marks that input as failed and the others go on.
* :class:`OptionsError` (``ValueError``): an option value is out of range or not one of the choices.
* :class:`ModelError`: a model or its weights cannot be found, fetched or loaded.
* :class:`DownloadError` (``OSError``, and ``RuntimeError``): a download or upload failed, the network cannot be
  used, or a file does not have its published hash.
* :class:`DataError` (``ValueError``): training or fine-tuning data has problems.
* :class:`MissingDependencyError` (``ImportError``): an optional dependency is not installed.

The command line turns each area into one exit code (docs/outputs.md, "Exit codes").

Example:
    >>> from dcasenet_hub.errors import AudioLoadError, InputError
    >>> err = AudioLoadError("a.wav", "file not found")
    >>> str(err), isinstance(err, InputError), isinstance(err, ValueError)
    ('a.wav: file not found', True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DcaseNetHubError(Exception):
    """Base of every error dcasenet-hub raises on purpose: ``except DcaseNetHubError`` catches them all."""


# ---- input / audio ----------------------------------------------------------------------------------------------


class InputError(DcaseNetHubError, ValueError):
    """A waveform or file that cannot be analysed (the message names it and the problem).

    The only errors (with running out of memory on one batch) that mark an input as failed while the others go on.
    """


class AudioLoadError(InputError):
    """An audio file could not be used; the message names the file and the problem.

    Attributes:
        path: The file.
        reason: What is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class InputTooShortError(InputError):
    """The input has fewer feature frames than the network's pooling allows (40 = 0.8 s)."""


class NotRegularFileError(DcaseNetHubError, OSError):
    """A path that must be a regular file is a FIFO, a device, a socket or a folder (refused before reading it).

    Raised by the one reader of such files (``dcasenet_hub._io.read_regular``); callers turn it into their area's
    error (a model file, a manifest, an input).

    Attributes:
        path: The path.
        kind: What it is (``"a FIFO"``, ``"a character device"``, ...).
    """

    def __init__(self, path: str | Path, kind: str) -> None:
        self.path = str(path)
        self.kind = kind
        super().__init__(f"{path} is {kind}, not a regular file")


# ---- options ----------------------------------------------------------------------------------------------------


class OptionsError(DcaseNetHubError, ValueError):
    """An option value is invalid (the message names the option, the value and what is allowed)."""


# ---- model / weights --------------------------------------------------------------------------------------------


class ModelError(DcaseNetHubError):
    """A model or its weights cannot be found or loaded (the download failures are :class:`DownloadError`)."""


class UnknownModelError(ModelError, ValueError):
    """The name is neither a manifest id, an existing local path, nor a Hugging Face repo id."""


class WeightsNotPublishedError(ModelError, ValueError):
    """The manifest knows the model but no weights were ever published for it (DcaseNet v1, v2)."""


class ModelFileError(ModelError, ValueError):
    """A local file given as a model is not a readable DcaseNet checkpoint (the message says what is expected)."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A local model path (file or folder) does not exist or lacks its weights file."""


class CheckpointMismatchError(ModelError, ValueError):
    """A checkpoint's keys or shapes do not match the architecture it is loaded into."""


class ModelConfigError(ModelError, ValueError):
    """A model configuration field has a value the model cannot run with (the message names field, value, allowed).

    Attributes:
        field: Dotted name of the field (``"frontend.hop_length"``, ``"scene_labels[3]"``).
        value: The value found.
        allowed: What is allowed, in words.
        source: The file the config came from, when it was read from one.
    """

    def __init__(self, field: str, value: object, allowed: str, *, source: str | Path | None = None) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = None if source is None else str(source)
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = f"{source}: " if source is not None else ""
        super().__init__(f"{where}model config field '{field}' is {shown}; allowed: {allowed}")

    def with_source(self, source: str | Path) -> ModelConfigError:
        """The same error, naming the file the config was read from."""
        return ModelConfigError(self.field, self.value, self.allowed, source=source)


class ManifestError(ModelError, ValueError):
    """A weights manifest does not follow the schema of docs/weights.md."""


class CacheNotWritableError(ModelError, OSError):
    """The weights cache cannot be written (read-only, not a folder, no permission); the message names the folder
    and the fix. Like any model that cannot be had, exit code 3."""


class ModelLoadError(ModelError):
    """The model named on the command line could not be fetched or loaded, whatever the cause.

    Attributes:
        name: What ``--model`` (or the command's model argument) said.
        cause: The underlying error.
    """

    def __init__(self, name: str, cause: BaseException) -> None:
        self.name = str(name)
        self.cause = cause
        text = str(cause) if isinstance(cause, OfflineError) else " ".join(str(cause).split())  # fixes: a list
        super().__init__(f"model could not be fetched or loaded ({self.name}): {text}")


# ---- download / network -----------------------------------------------------------------------------------------


class DownloadError(DcaseNetHubError, OSError, RuntimeError):
    """A file could not be downloaded (or uploaded), or it is not the published file (the message says which).

    Raised by both downloaders (weights and datasets). Also a ``RuntimeError``, so ``except RuntimeError`` around
    :func:`dcasenet_hub.train.data_download.download_dataset` keeps working.
    """


class OfflineError(DownloadError, ConnectionError):
    """The network may not or cannot be used (offline mode, no network, DNS failure, refused or timed-out connection).

    For weights that are not cached, the message names the fixes (copy a cache, a mirror, a local file).
    """


#: The same error: the host could not be reached.
NetworkUnavailableError = OfflineError


class ChecksumMismatchError(DownloadError):
    """A downloaded or cached file does not have the size or hash that was published (it was deleted)."""


class DownloadTooLargeError(ChecksumMismatchError):
    """A response body is larger than the file can be (the published size, or a bound from the architecture)."""


class HubAccessError(DownloadError, PermissionError):
    """The Hugging Face Hub cannot be written to: no token, a rejected token, or the Hub cannot be reached."""


# ---- data (fine-tuning and training) ----------------------------------------------------------------------------

#: Problems a :class:`DataError` message lists before "... and N more".
MAX_LISTED_PROBLEMS = 60


class DataError(DcaseNetHubError, ValueError):
    """The data has problems; all of them are listed (file names, rows) so they can be fixed in one go.

    Attributes:
        source: The folder, table or archive that was read.
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


class _OneProblem(DataError):
    """A data error with one complete message (no list): ``source`` is empty and ``problems`` holds the message."""

    def __init__(self, message: str) -> None:
        self.source = ""
        self.problems = [message]
        Exception.__init__(self, message)


class DatasetLayoutError(_OneProblem, FileNotFoundError):
    """A dataset folder does not have the expected layout (the message names what is missing and the layout)."""


class UnsafeArchiveError(_OneProblem):
    """An archive member would be written outside the destination folder (nothing was extracted)."""


class AnnotationError(_OneProblem):
    """Annotations or predictions cannot be scored: an unreadable file, bad rows (all listed with their lines) or no
    file in common (the message names the file and the fix)."""


class UnknownLabelError(AnnotationError):
    """Annotations use labels the model does not know; the message lists them, the model's labels and the mapping
    option.

    Attributes:
        unknown: The unknown labels, sorted.
        known: The model's labels of the task.
    """

    def __init__(self, source: str, unknown: Sequence[str], known: Sequence[str], task: str) -> None:
        self.unknown = sorted(unknown)
        self.known = list(known)
        super().__init__(
            f"{source}: {len(self.unknown)} label(s) the model does not know for {task}: {', '.join(self.unknown)}. "
            f"The model's {task} labels: {', '.join(self.known)}. Map each one to a model label "
            f"(--map YOURS=MODEL, or label_map={{'YOURS': 'MODEL'}}), or leave it out of the evaluation "
            f"with --map YOURS= (label_map={{'YOURS': None}})"
        )


# ---- other ------------------------------------------------------------------------------------------------------


class MissingDependencyError(DcaseNetHubError, ImportError):
    """An optional dependency is not installed (the message names the ``pip install`` that adds it)."""


class OnnxUnavailableError(MissingDependencyError):
    """onnx / onnxruntime are not installed."""


class MissingMatplotlibError(MissingDependencyError):
    """matplotlib is not installed."""

    MESSAGE = 'plotting needs matplotlib, which is not installed: pip install "dcasenet-hub[plot]"'


class SedScoresEvalUnavailableError(MissingDependencyError):
    """sed_scores_eval (the PSDS reference implementation) is not installed."""

    MESSAGE = ('PSDS needs sed_scores_eval, which is not installed: pip install "dcasenet-hub[score]" '
               "(the other scores do not need it)")


class TrainingDivergedError(DcaseNetHubError, RuntimeError):
    """The training loss became NaN or infinite; training stopped before the update."""


class DiskSpaceError(DcaseNetHubError, OSError):
    """Not enough free disk space for a download or an extraction (checked before writing; nothing was written)."""
