"""Decoding audio: one decoder for whole files and for block-by-block streaming, with errors that name the file.

:func:`open_audio` checks a file's header before anything is decoded; :class:`FileReader` reads it in blocks (mixed
to mono) and :func:`load_audio` is the whole-file call built on the same reader, so both give identical samples.
:class:`ArrayReader` gives arrays and tensors the same interface. Rates are changed in :mod:`.resampling`.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from dcasenet_hub.errors import AudioLoadError, InputError

logger = logging.getLogger(__name__)

#: Extensions picked up when scanning folders: the formats libsndfile decodes (WAV/WAVEX, AIFF, AU, FLAC, OGG
#: Vorbis/Opus, MP3, CAF, W64, RF64, SD2, VOC, HTK, NIST Sphere), by their usual names. Other files can still be
#: passed one by one. (``.wv`` is WavPack, which libsndfile does not read, so it is not scanned.)
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf",
    ".w64", ".rf64", ".sd2", ".voc", ".htk", ".nist", ".sph",
})


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """``(sample_rate, channels, frames)`` of an audio file without decoding it.

    Raises:
        AudioLoadError: missing, unreadable or not audio.
    """
    with open_audio(path) as f:
        return int(f.samplerate), int(f.channels), int(f.frames)


def open_audio(path: str | Path) -> Any:
    """Open an audio file for block reading (a ``soundfile.SoundFile``), with errors that name the file.

    The header is checked before anything is decoded: the sample rate must lie in
    [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`] and, for uncompressed formats, the declared frames must fit in
    the file. A header that declares more data than the file holds (a truncated file) is read as the shorter file it
    is; :func:`header_warning` describes it.

    Raises:
        AudioLoadError: missing, a directory, empty, not a readable audio file, or a header that cannot be right.
    """
    import soundfile as sf

    path = Path(path)
    _check_file(path)
    try:
        f = sf.SoundFile(os.fsencode(path))  # bytes: a name that is not UTF-8 opens too
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        raise AudioLoadError(path, _undecodable(exc)) from None
    try:
        _check_header(path, f)
    except AudioLoadError:
        f.close()
        raise
    return f


#: Sample rates outside this range are taken for a corrupt header (a 1 Hz header makes 96 KB last 13 hours).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
#: Bytes per sample of the uncompressed subtypes (compressed formats have no fixed size and are not checked).
_SUBTYPE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
                  "FLOAT": 4, "DOUBLE": 8}
#: Containers that store those subtypes as is (FLAC also reports "PCM_16" but compresses).
_UNCOMPRESSED_FORMATS = frozenset({"WAV", "WAVEX", "AIFF", "AU", "RAW", "W64", "RF64", "CAF", "IRCAM", "NIST"})
_SHOULD_BE = re.compile(r"^\s*(?:data|Data Size)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _check_header(path: Path, f: Any) -> None:
    sr = int(f.samplerate)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioLoadError(path, f"header declares a sample rate of {sr} Hz, outside {MIN_SAMPLE_RATE}-"
                                   f"{MAX_SAMPLE_RATE} Hz: the header is corrupt; "
                                   "re-encode the file with its real rate")
    width = _SUBTYPE_BYTES.get(str(f.subtype)) if str(f.format) in _UNCOMPRESSED_FORMATS else None
    size = path.stat().st_size
    if width is not None and int(f.frames) * int(f.channels) * width > size:
        raise AudioLoadError(path, f"header declares {int(f.frames)} frames ({int(f.frames) / sr:.1f} s) but the "
                                   f"file has only {size} bytes: the header is corrupt; re-encode or repair the file")


def header_warning(f: Any) -> str:
    """A one-line warning when the open file's header declares more audio data than the file holds, else ``""``.

    libsndfile reads such a (truncated) file as the shorter file it is; the warning says how much is missing.

    Args:
        f: An open ``soundfile.SoundFile`` (from :func:`open_audio`).
    """
    try:
        info = str(f.extra_info)
    except (AttributeError, RuntimeError):  # pragma: no cover - extra_info is a libsndfile log
        return ""
    m = _SHOULD_BE.search(info)
    if m is None:
        return ""
    declared, present = int(m.group(1)), int(m.group(2))
    if declared <= present:
        return ""
    seconds = int(f.frames) / int(f.samplerate)
    declared_s = seconds * declared / present if present else float("inf")
    return (f"header declares {declared} bytes of audio but the file holds {present}: processed as {seconds:.3f} s "
            f"instead of {declared_s:.3f} s (truncated file?)")


def _check_file(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise AudioLoadError(path, "is a symlink loop or a broken symlink; fix or remove the link")
    if not path.exists():
        raise AudioLoadError(path, "file not found; check the path")
    if path.is_dir():
        raise AudioLoadError(path, "is a directory, not an audio file")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):  # a FIFO or a device: refused before anything reads it (a read could block forever)
        from dcasenet_hub._io import file_kind

        raise AudioLoadError(path, f"is {file_kind(mode)}, not a regular file; give an audio file")
    if path.stat().st_size == 0:
        raise AudioLoadError(path, "is empty (0 bytes); export it again or leave it out")
    try:  # libsndfile would say "System error" of a file it may not read
        with open(path, "rb"):
            pass
    except PermissionError:
        raise AudioLoadError(path, "permission denied; make the file readable (chmod a+r) or run as a user who may "
                                   "read it") from None


#: libsndfile's text for its "bad file" code. Its MP3 decoder gives that code for a file it cannot decode, and
#: :func:`_check_file` has just found the file to exist and be regular, so the text would send the user after the
#: wrong problem.
_BAD_FILE_TEXT = "does not exist or is not a regular file"


def _undecodable(exc: BaseException) -> str:
    """The reason and the fix for a file that exists (checked first) but that libsndfile cannot open."""
    reason = _short(exc)
    if _BAD_FILE_TEXT in reason:
        reason = "the decoder found no audio in it"
    return (f"not a readable audio file: it exists but could not be decoded as audio ({reason}); check that it "
            "really is audio and convert it to WAV or FLAC (e.g. `ffmpeg -i FILE out.wav`), or leave it out")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # libsndfile's "Error opening b'/the/path': Format not recognised." repeats the path (as bytes): keep the reason
    return re.sub(r"^Error(?: opening .*?)? ?: ", "", text[-1]) if text else type(exc).__name__


def _non_finite(values: np.ndarray) -> str:
    """Why samples are not finite, and the fix: NaN or infinity in the source, or values past float32's range."""
    if np.isfinite(values).all():
        return (f"has samples beyond the float32 range (|x| up to {float(np.abs(values).max()):.3g}); scale the "
                "audio to [-1, 1]")
    return "contains NaN or infinite samples; replace them (e.g. with 0) or export the audio again"




class Reader:
    """Random access to float32 samples of one input at its own rate (mono unless a reader says otherwise).

    Readers are context managers; ``close()`` releases the file.
    """

    name: str
    sample_rate: int
    num_frames: int
    warning: str = ""

    def read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Largest channel count taken from the last axis of a 2-D waveform (soundfile's ``(frames, channels)`` layout).
MAX_LAST_AXIS_CHANNELS = 64


class ArrayReader(Reader):
    """A waveform in memory: ``(samples,)``, ``(channels, samples)`` or ``(frames, channels)`` (channels averaged).

    A 2-D array is ``(channels, samples)`` when its first axis is the shorter one. When the first axis is longer and
    the last has at most :data:`MAX_LAST_AXIS_CHANNELS` entries it is ``(frames, channels)``, what
    ``soundfile.read`` returns: read the other way it would be at most 64 samples, far below the 0.1 s minimum at any
    rate, so the layout is unambiguous.
    """

    def __init__(self, waveform: Any, sample_rate: int, name: str) -> None:
        import torch

        if isinstance(waveform, torch.Tensor):
            waveform = waveform.detach().to("cpu", torch.float32).numpy()
        arr = np.asarray(waveform)
        if arr.dtype.kind not in "fiu":
            raise InputError(f"{name}: waveform must be numeric, got dtype {arr.dtype}")
        if arr.dtype.kind in "iu":  # integer PCM: scale to [-1, 1)
            info = np.iinfo(arr.dtype)
            arr = (arr.astype(np.float64) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2)
        #: Appended to a "too short" error: how a 2-D waveform was read and the fix if that was not meant.
        self.shape_hint = ""
        if arr.ndim == 2:
            rows, cols = arr.shape
            if rows > cols and cols <= MAX_LAST_AXIS_CHANNELS:
                arr = arr.mean(axis=1)  # (frames, channels), e.g. from soundfile.read
            else:
                if rows > cols:
                    self.shape_hint = (f"; a waveform of shape {tuple(arr.shape)} is read as (channels, samples) = "
                                       f"({rows} channels, {cols} samples): if it is (samples, channels), pass x.T")
                arr = arr.mean(axis=0)
        elif arr.ndim != 1:
            raise InputError(f"{name}: waveform must be (samples,) or (channels, samples), got shape {arr.shape}")
        with np.errstate(over="ignore"):  # values past float32's range become inf: said below
            self._data = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(self._data).all():
            raise InputError(f"{name}: {_non_finite(np.asarray(arr))}")
        if getattr(sample_rate, "ndim", None) == 0 and hasattr(sample_rate, "item"):  # a 0-d array or tensor
            sample_rate = sample_rate.item()
        whole = isinstance(sample_rate, numbers.Real) and not isinstance(sample_rate, bool) and math.isfinite(
            sample_rate) and int(sample_rate) == sample_rate
        if not whole or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            several = " (one rate for all arrays: give each its own as {'array': x, 'sampling_rate': sr})" if (
                isinstance(sample_rate, (list, tuple))) else ""
            raise InputError(f"{name}: sample_rate must be a whole number of Hz from {MIN_SAMPLE_RATE} to "
                             f"{MAX_SAMPLE_RATE}, got {sample_rate!r}{several}")
        self.name = name
        self.sample_rate = int(sample_rate)
        self.num_frames = int(self._data.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._data[start:stop]


class FileReader(Reader):
    """An audio file read block by block with soundfile (any libsndfile format, 8-bit to float, 1..N channels).

    The one decoder of the package: :func:`load_audio` reads whole files through it and the inference pipeline
    streams long files through it, so both see identical samples.

    Args:
        path: The file (checked by :func:`open_audio` before anything is decoded).
        mono: Average the channels (blocks of shape ``(n,)``); ``False`` keeps them (``(channels, n)``).
    """

    def __init__(self, path: str | Path, *, mono: bool = True) -> None:
        path = Path(path)
        self.name = str(path)
        self.mono = mono
        self._file = open_audio(path)
        #: Non-fatal problem of the file ("" if none), e.g. a header that declares more audio than the file holds.
        self.warning = header_warning(self._file)
        self.sample_rate = int(self._file.samplerate)
        self.num_frames = int(self._file.frames)
        self._pos = 0
        self._path = path

    def read(self, start: int, stop: int) -> np.ndarray:
        import soundfile as sf

        try:
            if start != self._pos:
                self._file.seek(start)
            data = self._file.read(stop - start, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
            raise AudioLoadError(self._path, f"decoding failed at frame {start} ({_short(exc)}): the file is "
                                             "damaged; repair or export it again") from None
        self._pos = start + data.shape[0]
        if data.shape[0] != stop - start:
            raise AudioLoadError(self._path, f"truncated: expected {self.num_frames} frames, got {self._pos}")
        if not self.mono:
            out = np.ascontiguousarray(data.T)
        else:
            out = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        if not np.isfinite(out).all():
            if str(self._file.subtype) == "DOUBLE":  # read again as stored: finite there means out of range
                self._file.seek(start)
                data = self._file.read(stop - start, dtype="float64", always_2d=True)
                self._pos = start + data.shape[0]
            raise AudioLoadError(self._path, _non_finite(data))
        return out

    def close(self) -> None:
        self._file.close()


def load_audio(
    path: str | Path,
    *,
    sample_rate: int | None = 24000,
    mono: bool = True,
    start: int = 0,
    frames: int = -1,
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 in [-1, 1), optionally mixed to mono and resampled.

    Any format libsndfile reads (wav, flac, ogg, mp3, ...), 8-bit to 32-bit float, any channel count and rate.
    Decoding is :class:`FileReader`'s, so a file read here and a file streamed by the pipeline give the same samples.

    Args:
        path: The file.
        sample_rate: Resample to this rate; ``None`` keeps the file's rate.
        mono: Average the channels (shape ``(samples,)``); ``False`` keeps them (shape ``(channels, samples)``).
        start: First frame to read (at the file's rate).
        frames: Number of frames to read (-1: to the end).

    Returns:
        ``(waveform, sample_rate)``.

    Raises:
        AudioLoadError: the file is missing, unreadable, not audio, empty or contains NaN/inf samples.

    Example:
        >>> wav, sr = load_audio("street.wav")  # doctest: +SKIP
    """
    from dcasenet_hub.audio.resampling import resample

    path = Path(path)
    with FileReader(path, mono=mono) as reader:
        if reader.warning:
            logger.warning("%s: %s", path, reader.warning)
        sr = reader.sample_rate
        first = min(max(0, start), reader.num_frames)
        stop = reader.num_frames if frames < 0 else min(reader.num_frames, first + frames)
        wav = reader.read(first, stop)
    if wav.size == 0:
        raise AudioLoadError(path, "contains no audio samples (empty file)")
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)
