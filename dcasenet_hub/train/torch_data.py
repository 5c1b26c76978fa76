"""Torch datasets of the joint trainer: the authors' crops (docs/facts.md §5.2) on cached log-mel features.

* :class:`TrainCrops`: random training crops read from the feature cache of :func:`dcasenet_hub.train.prepare.prepare`
  (the whole clip's un-normalised log-mel), so an epoch never decodes audio.
* :class:`EvalClips`: evaluation inputs. Scene crops are cut from the prepared 24 kHz waveform exactly as
  :meth:`dcasenet_hub.DcaseNet.predict` cuts them, because crops of the cached features differ at the edges
  (docs/training.md, "Deliberate differences from the authors' code").
* :class:`BatchStream`: each example is addressed by ``(index, crop_seed)``, so a crop is a pure function of the batch
  stream and runs are reproducible with any number of loader workers and resume exactly.

Example:
    >>> from dcasenet_hub.train.torch_data import BatchStream
    >>> stream = BatchStream(n_items=5, batch_size=4, seed=0, task="asc")
    >>> len(stream.batch(0)), len(stream.batch(1))
    (4, 4)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dcasenet_hub.audio import (
    features,
    normalize,
    preemphasis,
    scene_starts,
    tile_frames,
)
from dcasenet_hub.config import FrontendConfig
from dcasenet_hub.train.tasks import MODEL_TASK, TASKS, task_key

logger = logging.getLogger(__name__)

__all__ = ["MODEL_TASK", "SED_FRAMES_PER_LABEL", "TASKS", "BatchStream", "EvalClips", "FeatureStore",
           "StreamSampler", "TrainCrops", "crop_frames", "item_target", "scene_crops"]

#: Feature frames per SED label frame (20 ms features, 100 ms labels).
SED_FRAMES_PER_LABEL = 5


def crop_frames(task: str, seconds: float, *, config: FrontendConfig | None = None) -> int:
    """Number of feature frames of a ``seconds`` training crop, as the authors counted them.

    ASC and TAG cropped ``seconds * 24000`` samples of the waveform, which gives ``seconds * 50 + 1`` frames (251 for
    5 s); SED cropped ``seconds * 50`` frames of the cached features (1500 for 30 s), rounded to whole label frames.

    Example:
        >>> crop_frames("asc", 5.0), crop_frames("sed", 30.0)
        (251, 1500)
    """
    task = task_key(task)
    rate = (config or FrontendConfig()).frame_rate
    if seconds <= 0:
        raise ValueError(f"Crop length must be positive, got {seconds} s for {task}")
    if task == "sed":
        labels = max(1, round(seconds * rate / SED_FRAMES_PER_LABEL))
        frames = labels * SED_FRAMES_PER_LABEL
    else:
        frames = round(seconds * rate) + 1
    if frames < 40:
        raise ValueError(f"A {seconds} s {task} crop gives {frames} frames; DcaseNet needs at least 40 (0.8 s)")
    return frames


# ----------------------------------------------------------------------------------------------------------------
# Feature store
# ----------------------------------------------------------------------------------------------------------------


class FeatureStore:
    """Read-only access to the un-normalised log-mel cache of one dataset root (written by ``prepare``).

    Args:
        cache_dir: The task's cache folder (``prepare.feature_dir(cache_root, task, root)``).
        root: The dataset root the item paths live under.
        memory: Keep every array read in memory (useful for small data; the real data relies on the OS page cache).
    """

    def __init__(self, cache_dir: str | Path, root: str | Path, *, memory: bool = False) -> None:
        from dcasenet_hub.train.prepare import audio_file, cache_file

        self.cache_dir = Path(cache_dir)
        self.root = Path(root)
        self._cache_file = cache_file
        self._audio_file = audio_file
        self._memory: dict[str, np.ndarray] | None = {} if memory else None
        self._paths: dict[str, Path] = {}

    def path_for(self, audio_path: str | Path) -> Path:
        """The cache file of ``audio_path``."""
        key = str(audio_path)
        if key not in self._paths:
            self._paths[key] = self._cache_file(self.cache_dir, self.root, audio_path)
        return self._paths[key]

    def load(self, audio_path: str | Path) -> np.ndarray:
        """``(channels, n_mels, frames)`` float32 log-mel of the whole file.

        Raises:
            FileNotFoundError: the file was not prepared (run ``dcasenet-hub data prepare``).
        """
        key = str(audio_path)
        if self._memory is not None and key in self._memory:
            return self._memory[key]
        path = self.path_for(audio_path)
        try:
            arr = np.load(path, mmap_mode=None if self._memory is not None else "r")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"No cached features for {audio_path} (expected {path}). Run `dcasenet-hub data prepare` with the "
                "same dataset root and cache folder, or let `dcasenet-hub train` prepare them."
            ) from None
        if self._memory is not None:
            arr = np.asarray(arr, dtype=np.float32)
            self._memory[key] = arr
        return arr

    def waveform(self, audio_path: str | Path) -> np.ndarray:
        """``(samples,)`` float32 24 kHz 16-bit mono audio of ``audio_path`` as ``prepare`` converted it.

        Kept for the scene evaluation files only (read with :func:`dcasenet_hub.audio.load_audio`).

        Raises:
            FileNotFoundError: the file was not prepared with its audio (run ``dcasenet-hub data prepare``).
        """
        from dcasenet_hub.audio import load_audio

        path = self._audio_file(self.cache_dir, self.root, audio_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No prepared 24 kHz audio for {audio_path} (expected {path}). Run `dcasenet-hub data prepare` "
                "with the same dataset root and cache folder, or let `dcasenet-hub train` prepare it.")
        wav, _ = load_audio(path, sample_rate=None)
        return wav


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------


def _scene_target(target: Any, labels: Sequence[str]) -> int:
    if isinstance(target, str):
        try:
            return labels.index(target)
        except ValueError:
            raise ValueError(f"Unknown scene label {target!r}; known: {', '.join(labels)}") from None
    return int(target)


def _tag_target(target: Any, labels: Sequence[str]) -> np.ndarray:
    arr = np.asarray(target)
    if arr.ndim == 1 and arr.shape[0] == len(labels) and arr.dtype != object and not np.issubdtype(arr.dtype, np.str_):
        return arr.astype(np.float32)
    out = np.zeros(len(labels), dtype=np.float32)
    for t in (target if isinstance(target, (list, tuple)) else list(arr.reshape(-1))):
        out[labels.index(t) if isinstance(t, str) else int(t)] = 1.0
    return out


def _event_target(target: Any, n_events: int) -> np.ndarray:
    arr = np.asarray(target, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != n_events:
        raise ValueError(f"SED target must be a (frames, {n_events}) activity matrix, got shape {arr.shape}")
    return arr


def item_target(task: str, item: Any, *, labels: Sequence[str]) -> Any:
    """The training target of ``item`` for ``task`` (scene index, multi-hot tags or event activity matrix)."""
    task = task_key(task)
    if task == "asc":
        return _scene_target(item.target, labels)
    if task == "tag":
        return _tag_target(item.target, labels)
    return _event_target(item.target, len(labels))


def _channel(item: Any) -> int:
    ch = getattr(item, "channel", None)
    return 0 if ch is None else int(ch)


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A float32 tensor owning a copy of ``x`` (cached features may be read-only memory maps)."""
    return torch.from_numpy(np.array(x, dtype=np.float32, copy=True))


def scene_crops(waveform: np.ndarray, *, length: int, hop: int, frontend: FrontendConfig,
                min_frames: int) -> torch.Tensor:
    """The scene crops of a 24 kHz waveform as :meth:`dcasenet_hub.DcaseNet.predict` builds them.

    Pre-emphasis over the whole signal, crops of ``length`` samples at
    :func:`~dcasenet_hub.audio.windows.scene_starts` (``hop`` apart, the last one aligned to the end), each turned
    into its normalised log-mel by :func:`~dcasenet_hub.audio.features`.

    Returns:
        ``(crops, 1, n_mels, frames)``.

    Example:
        >>> import numpy as np
        >>> x = scene_crops(np.zeros(240000, "float32"), length=120000, hop=60000, frontend=FrontendConfig(),
        ...                 min_frames=40)
        >>> tuple(x.shape)
        (3, 1, 128, 251)
    """
    samples = np.asarray(waveform, dtype=np.float32)
    if frontend.preemphasis:
        samples = preemphasis(samples, frontend.preemphasis)
    crops = [features(samples[s:s + length], frontend=frontend, min_frames=min_frames)[0]
             for s in scene_starts(samples.shape[-1], length, hop)]
    return torch.cat(crops).unsqueeze(1)


# ----------------------------------------------------------------------------------------------------------------
# Training datasets
# ----------------------------------------------------------------------------------------------------------------


class TrainCrops(Dataset):
    """Random training crops of one task; ``dataset[(index, crop_seed)] -> (features (1, 128, F), target)``.

    ASC and TAG: a random crop of ``crop_frames`` frames, normalised per crop. SED: the whole channel is normalised
    first (as the authors did), then the crop starts on the label grid. Clips shorter than the crop are tiled by
    doubling (:func:`dcasenet_hub.audio.tile_frames`).

    Args:
        task: ``"asc"``, ``"tag"`` or ``"sed"``.
        items: Items of the training split (``path``, ``target``, ``channel``, ``name``).
        store: Their feature cache.
        crop_frames: Crop length in feature frames (:func:`crop_frames`).
        labels: The task's label names (targets given as names are mapped through them).
        std_floor: Normalisation floor (the front-end's).
    """

    def __init__(self, task: str, items: Sequence[Any], store: FeatureStore, *, crop_frames: int,
                 labels: Sequence[str], std_floor: float = 0.001) -> None:
        task = task_key(task)
        if not items:
            raise ValueError(f"The {task} training split is empty")
        self.task = task
        self.items = list(items)
        self.store = store
        self.crop_frames = int(crop_frames)
        self.labels = tuple(labels)
        self.std_floor = std_floor
        self._targets = [item_target(task, it, labels=self.labels) for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, Any]:
        index, seed = key
        rng = np.random.default_rng(seed)
        item = self.items[index]
        feats = self.store.load(item.path)[_channel(item)]
        target = self._targets[index]
        if self.task == "sed":
            return self._sed_crop(feats, target, rng)
        if feats.shape[-1] < self.crop_frames:
            feats = tile_frames(_tensor(feats), self.crop_frames).numpy()
        start = int(rng.integers(0, feats.shape[-1] - self.crop_frames + 1))
        x = normalize(_tensor(feats[:, start:start + self.crop_frames]), std_floor=self.std_floor)
        y = torch.tensor(target, dtype=torch.long) if self.task == "asc" else torch.tensor(target)
        return x.unsqueeze(0), y

    def _sed_crop(self, feats: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, Any]:
        crop_labels = self.crop_frames // SED_FRAMES_PER_LABEL
        n_labels = min(target.shape[0], feats.shape[-1] // SED_FRAMES_PER_LABEL)
        x = normalize(_tensor(feats[:, :n_labels * SED_FRAMES_PER_LABEL]), std_floor=self.std_floor).numpy()
        y = target[:n_labels]
        if n_labels < crop_labels:
            x = tile_frames(torch.from_numpy(x), self.crop_frames).numpy()
            y = tile_frames(_tensor(y).T, crop_labels).T.numpy()  # labels in time: (labels, classes)
            n_labels = y.shape[0]
        # the authors' randint(0, 1500) // 5 for 600 labels and a 300-label crop: uniform over 0 ... 299
        stt = int(rng.integers(0, max(n_labels - crop_labels, 1)))
        f0 = stt * SED_FRAMES_PER_LABEL
        xc = torch.from_numpy(np.array(x[:, f0:f0 + self.crop_frames], dtype=np.float32, copy=True))
        yc = torch.from_numpy(np.array(y[stt:stt + crop_labels], dtype=np.float32, copy=True))
        return xc.unsqueeze(0), yc


def seed_of(*parts: int | str) -> int:
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class BatchStream:
    """The endless, deterministic stream of training batches of one task (the authors' ``cycle(DataLoader)``).

    Passes over the data follow each other, each in a fresh random order; batch ``b`` holds positions
    ``[b * batch_size, (b + 1) * batch_size)`` of the concatenated passes (so no example is dropped, and datasets
    smaller than a batch work). Every entry is ``(index, crop_seed)``. With several processes, rank ``r`` of ``world``
    takes its contiguous share of each global batch.

    Attributes:
        n_items: Size of the training split.
        batch_size: Global batch size.
        seed: Run seed.
        task: Task key (decorrelates the tasks' streams).
        stage: Stage name (decorrelates joint training and fine-tuning).
    """

    n_items: int
    batch_size: int
    seed: int
    task: str
    stage: str = "joint"

    def __post_init__(self) -> None:
        if self.n_items < 1 or self.batch_size < 1:
            raise ValueError(f"Need at least one item and a positive batch size (got {self.n_items}, {self.batch_size})")
        self._perm_cache: dict[int, np.ndarray] = {}

    def _perm(self, p: int) -> np.ndarray:
        if p not in self._perm_cache:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            rng = np.random.default_rng(seed_of(self.seed, self.stage, self.task, "pass", p))
            self._perm_cache[p] = rng.permutation(self.n_items)
        return self._perm_cache[p]

    def batch(self, b: int, *, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
        """Entries of global batch ``b`` that process ``rank`` of ``world`` loads."""
        if self.batch_size % world:
            raise ValueError(f"Batch size {self.batch_size} of {self.task} is not divisible by {world} processes")
        local = self.batch_size // world
        out = []
        for j in range(rank * local, (rank + 1) * local):
            pos = b * self.batch_size + j
            p, k = divmod(pos, self.n_items)
            out.append((int(self._perm(p)[k]), seed_of(self.seed, self.stage, self.task, "crop", b, j)))
        return out


class StreamSampler(Sampler):
    """Batch sampler over a :class:`BatchStream` starting at global batch ``start`` (for ``DataLoader(batch_sampler=)``)."""

    def __init__(self, stream: BatchStream, *, start: int = 0, rank: int = 0, world: int = 1,
                 count: int | None = None) -> None:
        self.stream, self.start, self.rank, self.world, self.count = stream, start, rank, world, count

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b = self.start
        while self.count is None or b < self.start + self.count:
            yield self.stream.batch(b, rank=self.rank, world=self.world)
            b += 1

    def __len__(self) -> int:  # pragma: no cover - only for DataLoader's bookkeeping
        return self.count if self.count is not None else 2**62


# ----------------------------------------------------------------------------------------------------------------
# Evaluation datasets
# ----------------------------------------------------------------------------------------------------------------


class EvalClips(Dataset):
    """Evaluation inputs of one task, as the authors built them (docs/facts.md §5.2).

    * ASC: ``(crops, 1, 128, F)`` - :func:`scene_crops` of the prepared 24 kHz waveform (the inputs of
      :meth:`~dcasenet_hub.DcaseNet.predict`; three 5 s crops of a 10 s clip: start, middle, end).
    * TAG: ``(1, 1, 128, T)`` - the whole clip tiled to at least ``min_frames`` frames, normalised.
    * SED: ``(1, 1, 128, T)`` - the whole channel, normalised, with its ``(labels, 14)`` activity.

    ``dataset[i] -> (features, target, recording key, channel)``; the key is the audio file's path, shared by the
    channels of one SED recording.

    Args:
        task: ``"scene"``/``"asc"``, ``"tags"``/``"tag"`` or ``"events"``/``"sed"``.
        items: Items of the evaluation split.
        store: Their prepared cache.
        labels: The task's label names.
        scene_window_s: Scene crop length (seconds).
        scene_hop_s: Scene crop hop (seconds); the last crop is aligned to the end.
        frontend: Front-end settings.
        min_frames: Inputs shorter than this are tiled by doubling.
    """

    def __init__(self, task: str, items: Sequence[Any], store: FeatureStore, *, labels: Sequence[str],
                 scene_window_s: float = 5.0, scene_hop_s: float = 2.5, frontend: FrontendConfig | None = None,
                 min_frames: int = 40) -> None:
        task = task_key(task)
        if not items:
            raise ValueError(f"The {task} evaluation split is empty")
        self.task = task
        self.items = list(items)
        self.store = store
        self.labels = tuple(labels)
        self.frontend = frontend or FrontendConfig()
        sr = self.frontend.sample_rate
        self.scene_length = round(scene_window_s * sr)
        self.scene_hop = round(scene_hop_s * sr)
        if self.scene_length < 1 or self.scene_hop < 1:
            raise ValueError(f"Scene crops need a positive length and hop, got {scene_window_s} s / {scene_hop_s} s")
        self.min_frames = min_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any, str, int]:
        item = self.items[index]
        target = item_target(self.task, item, labels=self.labels)
        name = str(item.path)
        if self.task == "asc":
            x = scene_crops(self.store.waveform(item.path), length=self.scene_length, hop=self.scene_hop,
                            frontend=self.frontend, min_frames=self.min_frames)
            return x, target, name, _channel(item)
        feats = _tensor(self.store.load(item.path)[_channel(item)])
        if self.task == "tag":
            feats = tile_frames(feats, self.min_frames)
        x = normalize(feats, std_floor=self.frontend.std_floor)
        return x[None, None], target, name, _channel(item)
