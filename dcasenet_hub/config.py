"""Configuration objects that travel with every checkpoint (``config.json`` beside ``model.safetensors``).

Example:
    >>> from dcasenet_hub.config import FrontendConfig, ModelConfig
    >>> cfg = ModelConfig(arch="v3")
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> FrontendConfig().hop_length
    480
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcasenet_hub import labels as _labels
from dcasenet_hub.errors import ModelConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ARCHS = ("v1", "v2", "v3")
#: The package's one task vocabulary: the network's outputs. Heads are the first three.
TASKS = ("scene", "tags", "events", "embeddings")
HEAD_TASKS = ("scene", "tags", "events")
#: Other names of the three heads that are accepted everywhere a task is named (fine-tuning's words, the paper's
#: abbreviations, singulars); :func:`canonical_task` maps them to :data:`TASKS`.
TASK_ALIASES = {
    "classification": "scene", "asc": "scene", "scenes": "scene",
    "tagging": "tags", "tag": "tags",
    "detection": "events", "sed": "events", "event": "events",
    "embedding": "embeddings",
}
#: Feature frames per trunk output step (pooling 2 * 2 * 2 * 5 = 40 frames = 800 ms).
TIME_REDUCTION = 40
#: Event outputs per trunk step (800 ms -> 100 ms), as the authors' ``repeat_interleave(8)``.
EVENT_REPEAT = 8


#: Largest FFT size a config may ask for (2**16 = 2.7 s at 24 kHz): larger ones make every input "too short".
MAX_N_FFT = 65536
#: The sample rates a config may name (Hz).
SAMPLE_RATE_RANGE = (1000, 768000)
#: Longest label name (characters): labels head columns of tables and lines of model cards.
MAX_LABEL_LENGTH = 200
#: Top-level key of a written ``config.json`` that records the sha256 of the ``model.safetensors`` beside it.
WEIGHTS_SHA256_KEY = "weights_sha256"


def label_problem(label: object) -> str | None:
    """Why ``label`` cannot name an output (``None`` when it can): it heads a column of ``.scores.tsv`` and CSV files.

    Example:
        >>> label_problem("dog"), label_problem("a\\tb")
        (None, 'contains a control character (U+0009)')
    """
    if not isinstance(label, str):
        return f"is a {type(label).__name__}, not a string"
    if not label.strip():
        return "is empty"
    if label != label.strip():
        return "has leading or trailing spaces"
    if len(label) > MAX_LABEL_LENGTH:
        return f"is longer than {MAX_LABEL_LENGTH} characters"
    for ch in label:
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):  # tab, newline, NUL, surrogates, line separators
            return f"contains a control character (U+{ord(ch):04X})"
    return None


#: What a label may be, in the words every refusal uses (config fields and fine-tuning data alike).
LABEL_RULE = (f"a non-empty name of at most {MAX_LABEL_LENGTH} characters without tabs, newlines or other control "
              "characters and without leading or trailing spaces")


def check_labels(name: str, labels: Sequence[Any]) -> tuple[str, ...]:
    """``labels`` as a tuple after checking each name and that they are unique and at least one.

    Raises:
        ModelConfigError: names the field (``scene_labels[3]``), the value and what is allowed.
    """
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise ModelConfigError(name, labels, "a list of label names")
    out = tuple(labels)
    if not out:
        raise ModelConfigError(name, labels, "at least one label (one per output of the head)")
    seen: dict[str, int] = {}
    for i, label in enumerate(out):
        if label_problem(label) is not None:
            raise ModelConfigError(f"{name}[{i}]", label, LABEL_RULE)
        if label in seen:
            raise ModelConfigError(f"{name}[{i}]", label, f"unique labels ({label!r} is also {name}[{seen[label]}])")
        seen[label] = i
    return out


def _int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ModelConfigError(name, value, f"an integer from {lo} to {hi}")


def _number(name: str, value: Any, allowed: str, ok: Any) -> None:
    """``value`` must be a finite int or float (not a bool) for which ``ok(value)`` holds."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not ok(value)):
        raise ModelConfigError(name, value, allowed)


def _choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices or isinstance(value, bool) != any(isinstance(c, bool) for c in choices):
        raise ModelConfigError(name, value, "one of " + ", ".join(repr(c) for c in choices))


def canonical_task(name: str, *, heads_only: bool = False) -> str:
    """The :data:`TASKS` name of a task given in any accepted spelling (case-insensitive).

    Raises:
        ValueError: an unknown name (the message lists the accepted ones).

    Example:
        >>> canonical_task("classification"), canonical_task("SED"), canonical_task("tags")
        ('scene', 'events', 'tags')
    """
    known = HEAD_TASKS if heads_only else TASKS
    key = str(name).strip().lower()
    key = TASK_ALIASES.get(key, key)
    if key not in known:
        aliases = sorted(a for a, t in TASK_ALIASES.items() if t in known)
        raise ValueError(f"Unknown task {name!r}. Known: {', '.join(known)} (also accepted: {', '.join(aliases)})")
    return key


def normalise_arch(arch: str) -> str:
    """``"v3"`` from ``"v3"``, ``"V3"``, ``"dcasenet-v3"`` or ``"dcasenet_v3"``.

    Raises:
        ValueError: not an architecture (the message lists them).

    Example:
        >>> normalise_arch("DcaseNet-v2")
        'v2'
    """
    a = str(arch).strip().lower().removeprefix("dcasenet-").removeprefix("dcasenet_")
    if a not in ARCHS:
        raise ValueError(f"Unknown architecture {arch!r}. Known: {', '.join(ARCHS)}")
    return a


@dataclass(frozen=True)
class FrontendConfig:
    """Every number of the authors' log-mel front-end (docs/facts.md §5.1).

    Attributes:
        sample_rate: Rate the network was trained at (Hz); audio is resampled to it.
        preemphasis: Coefficient of ``y[n] = x[n+1] - c * x[n]`` (the first sample is dropped, as the authors did).
        n_fft: FFT size of the STFT.
        win_length: Window length in samples (40 ms), zero-padded to ``n_fft`` centred.
        hop_length: Hop in samples (20 ms).
        window: ``"hamming"`` (periodic, ``torch.hamming_window``).
        center: Centre frames with ``n_fft // 2`` padding on each side.
        pad_mode: Padding mode when centring.
        power: Exponent of the magnitude spectrogram (2 = power).
        n_mels: Number of mel bands.
        f_min: Lowest mel frequency (Hz).
        f_max: Highest mel frequency (Hz); ``sample_rate / 2``.
        mel_scale: ``"htk"`` (2595 log10(1 + f/700)).
        mel_norm: Filter normalisation; ``None`` = plain triangles (torchaudio's default).
        zero_floor: Exact zeros of the mel power are replaced by this value before the log (one rule for all
            tasks; the authors applied it only on the tagging path and let scene/event paths give ``-inf``).
        std_floor: Floor of the per-band standard deviation (unbiased) in the per-utterance normalisation.
        resample_lowpass_filter_width: Zero crossings of the windowed-sinc resampler (torchaudio default 6).
        resample_rolloff: Cut-off of the resampler relative to the lower Nyquist frequency (0.99).
    """

    sample_rate: int = 24000
    preemphasis: float = 0.97
    n_fft: int = 2048
    win_length: int = 960
    hop_length: int = 480
    window: str = "hamming"
    center: bool = True
    pad_mode: str = "reflect"
    power: float = 2.0
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 12000.0
    mel_scale: str = "htk"
    mel_norm: str | None = None
    zero_floor: float = 1e-7
    std_floor: float = 0.001
    resample_lowpass_filter_width: int = 6
    resample_rolloff: float = 0.99

    def __post_init__(self) -> None:
        """Check every field (:class:`~dcasenet_hub.errors.ModelConfigError` names the first that is wrong)."""
        f = "frontend."
        _int(f + "sample_rate", self.sample_rate, *SAMPLE_RATE_RANGE)
        _number(f + "preemphasis", self.preemphasis, "a number from 0 to below 1 (the authors' 0.97)",
                lambda v: 0 <= v < 1)
        _int(f + "n_fft", self.n_fft, 16, MAX_N_FFT)
        _int(f + "win_length", self.win_length, 1, self.n_fft)
        _int(f + "hop_length", self.hop_length, 1, self.n_fft)
        _choice(f + "window", self.window, ("hamming",))
        _choice(f + "center", self.center, (True, False))
        _choice(f + "pad_mode", self.pad_mode, ("reflect", "constant", "replicate", "circular"))
        _number(f + "power", self.power, "a number above 0 and at most 2 (2 = power spectrogram)",
                lambda v: 0 < v <= 2)
        _int(f + "n_mels", self.n_mels, 1, self.n_fft // 2 + 1)
        nyquist = self.sample_rate / 2
        _number(f + "f_min", self.f_min, f"a frequency from 0 to below sample_rate / 2 ({nyquist:g} Hz)",
                lambda v: 0 <= v < nyquist)
        _number(f + "f_max", self.f_max, f"a frequency above f_min ({self.f_min:g} Hz) and at most sample_rate / 2 "
                f"({nyquist:g} Hz)", lambda v: self.f_min < v <= nyquist)
        _choice(f + "mel_scale", self.mel_scale, ("htk",))
        _choice(f + "mel_norm", self.mel_norm, (None,))
        _number(f + "zero_floor", self.zero_floor, "a number above 0 and below 1", lambda v: 0 < v < 1)
        _number(f + "std_floor", self.std_floor, "a number above 0 and below 1", lambda v: 0 < v < 1)
        _int(f + "resample_lowpass_filter_width", self.resample_lowpass_filter_width, 1, 64)
        _number(f + "resample_rolloff", self.resample_rolloff, "a number above 0 and at most 1",
                lambda v: 0 < v <= 1)

    @property
    def frame_rate(self) -> float:
        """Feature frames per second (50 for the defaults)."""
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Feature frames that :func:`~dcasenet_hub.log_mel` gives for ``num_samples`` raw samples.

        Pre-emphasis drops one sample, so the authors' 5 s crop (120000 samples of the *pre-emphasised* signal) is
        120001 raw samples and 251 frames.
        """
        n = max(int(num_samples) - 1, 0) if self.preemphasis else int(num_samples)
        return 1 + n // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendConfig:
        return _section(cls, "frontend", data, "an object of front-end settings")


def _section(cls: type[Any], section: str, data: Any, what: str) -> Any:
    """``cls(**data)`` for one section of ``config.json``; a non-object or an unknown key is a
    :class:`~dcasenet_hub.errors.ModelConfigError` naming ``section.key``."""
    if not isinstance(data, dict):
        raise ModelConfigError(section, data, what)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelConfigError(f"{section}.{unknown[0]}", data[unknown[0]],
                               f"no such setting; known: {', '.join(sorted(known))}")
    return cls(**data)


@dataclass(frozen=True)
class WindowConfig:
    """How audio of any length is cut into the crops the network was trained on (docs/outputs.md).

    Attributes:
        scene_window_s: Crop length for scene and tag outputs (the authors' 5 s training crop).
        scene_hop_s: Hop between scene crops. 2.5 s makes a 10 s clip give exactly the authors' three
            test-time crops ``[0, 5)``, ``[2.5, 7.5)``, ``[5, 10)``.
        event_window_s: Window length for event probabilities and frame embeddings (the authors evaluated events on
            whole 60 s recordings normalised as a whole; a multiple of 0.8 s keeps windows on the 800 ms output grid).
        min_frames: Inputs shorter than this many feature frames are tiled in time to reach it (the authors'
            tagging evaluation tiled to 40 frames).
    """

    scene_window_s: float = 5.0
    scene_hop_s: float = 2.5
    event_window_s: float = 60.0
    min_frames: int = 40

    def __post_init__(self) -> None:
        """Check every field (:class:`~dcasenet_hub.errors.ModelConfigError` names the first that is wrong)."""
        for name in ("scene_window_s", "scene_hop_s", "event_window_s"):
            _number(f"windows.{name}", getattr(self, name), "a duration in seconds above 0 and at most 86400",
                    lambda v: 0 < v <= 86400)
        _int("windows.min_frames", self.min_frames, TIME_REDUCTION, 100 * TIME_REDUCTION)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowConfig:
        return _section(cls, "windows", data, "an object of window settings")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and interpret its outputs.

    Attributes:
        arch: ``"v1"``, ``"v2"`` or ``"v3"``.
        scene_labels: Names of the scene head's outputs (its size follows).
        tag_labels: Names of the tag head's outputs.
        event_labels: Names of the event head's outputs.
        frontend: Front-end settings.
        windows: Windowing of long inputs at inference.
        event_threshold: Default threshold for event lists (the authors' 0.3).
        trained_tasks: Heads that were trained (others are random and ``predict`` marks them so).
        model_id: Manifest id or path the weights came from.
        provenance: Free text: where the weights come from (``"authors' checkpoint ... converted"``,
            ``"dcasenet-hub trainer, recipe ..."``, ``"random initialisation"``).
        extra: Free-form metadata (recipe, metrics, base model of a fine-tune).
    """

    arch: str = "v3"
    scene_labels: tuple[str, ...] = _labels.SCENES
    tag_labels: tuple[str, ...] = _labels.TAGS
    event_labels: tuple[str, ...] = _labels.EVENTS
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    event_threshold: float = 0.3
    trained_tasks: tuple[str, ...] = ()
    model_id: str | None = None
    provenance: str = "random initialisation"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        """One line: what the model is and how many classes each head has (``to_dict()`` has everything)."""
        return (f"ModelConfig(arch={self.arch!r}, model_id={self.model_id!r}, {len(self.scene_labels)} scenes, "
                f"{len(self.tag_labels)} tags, {len(self.event_labels)} events, trained_tasks={self.trained_tasks!r})")

    def __post_init__(self) -> None:
        """Check every field (:class:`~dcasenet_hub.errors.ModelConfigError` names the first that is wrong)."""
        _choice("arch", self.arch, ARCHS)
        for name in ("scene_labels", "tag_labels", "event_labels"):
            object.__setattr__(self, name, check_labels(name, getattr(self, name)))
        if isinstance(self.trained_tasks, (str, bytes)) or not isinstance(self.trained_tasks, Sequence):
            raise ModelConfigError("trained_tasks", self.trained_tasks, f"a list of {', '.join(HEAD_TASKS)}")
        object.__setattr__(self, "trained_tasks", tuple(self.trained_tasks))
        for i, task in enumerate(self.trained_tasks):
            if task not in HEAD_TASKS or task in self.trained_tasks[:i]:
                raise ModelConfigError(f"trained_tasks[{i}]", task, f"each of {', '.join(HEAD_TASKS)} at most once")
        if isinstance(self.frontend, dict):
            object.__setattr__(self, "frontend", FrontendConfig.from_dict(self.frontend))
        if isinstance(self.windows, dict):
            object.__setattr__(self, "windows", WindowConfig.from_dict(self.windows))
        if not isinstance(self.frontend, FrontendConfig):
            raise ModelConfigError("frontend", self.frontend, "a FrontendConfig or an object of front-end settings")
        if not isinstance(self.windows, WindowConfig):
            raise ModelConfigError("windows", self.windows, "a WindowConfig or an object of window settings")
        # one network output step (40 frames, 0.8 s) is the shortest input the network takes
        step_s = TIME_REDUCTION * self.frontend.hop_length / self.frontend.sample_rate
        _number("windows.event_window_s", self.windows.event_window_s,
                f"a duration in seconds of at least one network output step ({step_s:g} s) and at most 86400",
                lambda v: step_s - 1e-9 <= v <= 86400)
        _number("event_threshold", self.event_threshold, "a probability above 0 and below 1 (the authors' 0.3)",
                lambda v: 0 < v < 1)
        if self.model_id is not None and not isinstance(self.model_id, str):
            raise ModelConfigError("model_id", self.model_id, "a string or null")
        if not isinstance(self.provenance, str):
            raise ModelConfigError("provenance", self.provenance, "a string")
        if not isinstance(self.extra, dict) or not all(isinstance(k, str) for k in self.extra):
            raise ModelConfigError("extra", self.extra, "an object with string keys")

    def replace(self, **changes: Any) -> ModelConfig:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["frontend"] = self.frontend.to_dict()
        d["windows"] = self.windows.to_dict()
        for k in ("scene_labels", "tag_labels", "event_labels", "trained_tasks"):
            d[k] = list(d[k])
        d["library"] = "dcasenet-hub"
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The config of a ``config.json`` object; the file-level keys ``library`` and ``weights_sha256`` are skipped.

        Raises:
            ModelConfigError: an unknown key or a field out of range (names the field, the value, what is allowed).
        """
        if not isinstance(data, dict):
            raise ModelConfigError("(config)", data, "a JSON object of model settings")
        data = dict(data)
        data.pop("library", None)
        data.pop(WEIGHTS_SHA256_KEY, None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(unknown[0], data[unknown[0]], f"no such key; known: {', '.join(sorted(known))}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        from dcasenet_hub._io import atomic_write_text, json_text

        atomic_write_text(Path(path), json_text(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read and check a ``config.json``; errors name the file.

        Raises:
            ModelConfigError: a field out of range.
            ValueError: not readable as JSON.
        """
        from dcasenet_hub._io import read_regular

        path = Path(path)
        try:
            data = json.loads(read_regular(path))
        except (OSError, ValueError) as exc:
            raise ValueError(f"Cannot read model config {path}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ModelConfigError as exc:
            raise exc.with_source(path) from None
