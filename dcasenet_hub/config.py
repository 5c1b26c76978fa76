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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcasenet_hub import labels as _labels

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown front-end settings {unknown}; known: {sorted(known)}")
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowConfig:
        return cls(**data)


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

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"Unknown architecture {self.arch!r}. Known: {', '.join(ARCHS)}")
        for name in ("scene_labels", "tag_labels", "event_labels", "trained_tasks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.frontend, dict):
            object.__setattr__(self, "frontend", FrontendConfig.from_dict(self.frontend))
        if isinstance(self.windows, dict):
            object.__setattr__(self, "windows", WindowConfig.from_dict(self.windows))

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
        data = dict(data)
        data.pop("library", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        from dcasenet_hub._io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"Cannot read model config {path}: {exc}") from exc
        return cls.from_dict(data)
