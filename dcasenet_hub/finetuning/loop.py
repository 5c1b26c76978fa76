"""Fine-tune a pretrained DcaseNet on your own labelled clips: linear probe or (partial) fine-tuning.

``finetune(model, data, task=...)`` reads the data (see :mod:`dcasenet_hub.finetuning.data` for the forms: a folder
per class, a ``path,label(s)`` table, strong labels ``filename,onset,offset,event_label``), replaces the head of the
matching task with a new one for your labels, trains it, validates after every epoch, keeps the best epoch and returns
a :class:`~dcasenet_hub.DcaseNet` whose config carries your label names. Saved with ``output_dir=``, the folder
(``config.json`` + ``model.safetensors`` + ``README.md`` model card + ``metrics.jsonl``) loads with
``from_pretrained(folder)`` and works with ``embed``, ``predict`` and ``plot`` like any other checkpoint.

Task -> replaced head (everything else is copied from the base model):

=================  ===========  ==============================================  ============================
task               model head   input of the head (what a linear probe sees)    validation metric (best by)
=================  ===========  ==============================================  ============================
classification     ``fc_ASC``   128-d scene code, per 5 s crop                  accuracy (+ macro F1)
tagging            last Linear  1024-d output of the tag MLP, per clip           lwlrap (+ mAP)
                   of
                   ``layer_TAG``
detection          ``event_fc`` recurrent event features, per 0.8 s step        segment F1, 1 s (+ error rate)
=================  ===========  ==============================================  ============================

``freeze`` chooses the mode: ``"all"`` is a linear probe (the body is frozen, the head inputs are computed once and
cached, only the head trains: fast on CPU); a block name (``"conv_block3"``, ...) freezes that block and all blocks
before it and fine-tunes the rest with ``lr * body_lr_scale``; ``"none"`` fine-tunes everything. Fine-tuning trains
on random crops (the authors' 5 s for clip tasks, 30 s for detection) and optionally mixup (the authors used
``alpha = 0.1``).

Example:
    >>> from dcasenet_hub import DcaseNet, finetune
    >>> base = DcaseNet.from_pretrained("dcasenet-v3")                                     # doctest: +SKIP
    >>> model = finetune(base, "my_sounds/", task="classification", output_dir="my-model")  # doctest: +SKIP
    >>> model.config.scene_labels                                                          # doctest: +SKIP
    ('dog', 'rain', 'siren')
    >>> DcaseNet.from_pretrained("my-model").predict("new.wav").top_scene                  # doctest: +SKIP
    'rain'
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dcasenet_hub.finetuning.data import TASKS, Clip, DataError, Dataset, read_dataset

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from dcasenet_hub.inference.model import DcaseNet

logger = logging.getLogger(__name__)

#: task -> the model's head name (``forward(tasks=...)``, ``config.trained_tasks``)
MODEL_TASK = {"classification": "scene", "tagging": "tags", "detection": "events"}
#: task -> the validation metric that picks the best epoch (higher is better)
PRIMARY_METRIC = {"classification": "accuracy", "tagging": "lwlrap", "detection": "f1"}
HEADS = ("new", "reuse")
#: Stages that feed only one head: training them leaves the other heads' outputs unchanged.
_TASK_ONLY_STAGES = frozenset({"layer_ASC", "asc_block", "code_ASC", "layer_TAG"})
_DEFAULT_CROP_S = {"classification": 5.0, "tagging": 5.0, "detection": 30.0}
_EVENT_HOP_S = 0.1
_LOG_NAME = "metrics.jsonl"
_PROBE_LR = 3e-3
_WARM_START_EPOCHS = 100

__all__ = ["PRIMARY_METRIC", "DataError", "finetune", "freeze_choices"]


# ----------------------------------------------------------------------------------------------------------------
# Model surgery
# ----------------------------------------------------------------------------------------------------------------


def _head(model: DcaseNet, task: str) -> nn.Linear:
    if task == "classification":
        return model.fc_ASC
    if task == "tagging":
        return model.layer_TAG[len(model.layer_TAG) - 1]
    return model.event_fc


def _head_prefix(model: DcaseNet, task: str) -> str:
    return {"classification": "fc_ASC", "tagging": f"layer_TAG.{len(model.layer_TAG) - 1}",
            "detection": "event_fc"}[task]


def _stages(model: DcaseNet, task: str) -> list[tuple[str, list[nn.Module]]]:
    """The blocks on ``task``'s path from the input to (not including) its head, in order."""
    m = model
    stages: list[tuple[str, list[Any]]] = [("conv_block1", [m.conv_block1]), ("conv_block2", [m.conv_block2]),
                                            ("conv_block3", [m.conv_block3])]
    if m.config.arch == "v3":
        if task == "classification":
            return stages + [("conv_block4", [m.conv_block4_2]), ("layer_ASC", [m.layer_ASC]),
                             ("code_ASC", [m.code_ASC])]
        stages.append(("conv_block4", [m.conv_block4_1, m.conv_block4_2]))
        if task == "detection":
            return stages + [("gru", [m.gru_2])]  # event features are gru_2's output
        return stages + [("gru", [m.gru_1, m.gru_2]), ("layer_TAG", list(m.layer_TAG)[:-1])]
    stages.append(("conv_block4", [m.conv_block4]))
    if task == "classification":
        if m.config.arch == "v1":
            stages.append(("gru", [m.gru]))
        return stages + [("asc_block", [m.asc_block]), ("code_ASC", [m.code_ASC])]
    stages.append(("gru", [m.gru]))
    if task == "tagging":
        stages.append(("layer_TAG", list(m.layer_TAG)[:-1]))
    return stages


def freeze_choices(model: DcaseNet, task: str) -> tuple[str, ...]:
    """Valid ``freeze`` values for ``model`` and ``task``: ``"all"``, ``"none"`` and the block names in order.

    Example:
        >>> from dcasenet_hub import build_model
        >>> freeze_choices(build_model("v3"), "classification")
        ('all', 'none', 'conv_block1', 'conv_block2', 'conv_block3', 'conv_block4', 'layer_ASC', 'code_ASC')
    """
    _check_task(task)
    return ("all", "none", *(name for name, _ in _stages(model, task)))


def _trainable_stages(model: DcaseNet, task: str, freeze: str) -> list[tuple[str, list[nn.Module]]]:
    stages = _stages(model, task)
    names = [n for n, _ in stages]
    if freeze == "all":
        return []
    if freeze == "none":
        return stages
    if freeze not in names:
        raise ValueError(f"freeze={freeze!r} is not a block of DcaseNet-{model.config.arch} on the {task} path; "
                         f"choose one of {', '.join(freeze_choices(model, task))}")
    return stages[names.index(freeze) + 1:]


def _new_model(base: DcaseNet, task: str, labels: tuple[str, ...], head: str, seed: int) -> DcaseNet:
    """A DcaseNet with ``labels`` on ``task``'s head and every other weight copied from ``base``."""
    import torch

    from dcasenet_hub.inference.model import DcaseNet

    field_name = {"classification": "scene_labels", "tagging": "tag_labels", "detection": "event_labels"}[task]
    config = base.config.replace(**{field_name: labels})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DcaseNet(config)
        new_head = _head(model, task)
        torch.nn.init.xavier_uniform_(new_head.weight)
        torch.nn.init.zeros_(new_head.bias)
    prefix = _head_prefix(model, task) + "."
    base_sd = base.state_dict()
    state = model.state_dict()
    for key in state:
        if not key.startswith(prefix):
            state[key] = base_sd[key].detach().clone()
    if head == "reuse":
        old_labels = getattr(base.config, field_name)
        old_w, old_b = base_sd[prefix + "weight"], base_sd[prefix + "bias"]
        reused = []
        for i, name in enumerate(labels):
            if name in old_labels:
                j = old_labels.index(name)
                state[prefix + "weight"][i] = old_w[j]
                state[prefix + "bias"][i] = old_b[j]
                reused.append(name)
        logger.info("Reused the base head's weights for %d of %d labels", len(reused), len(labels))
    model.load_state_dict_strict(state, source="fine-tuning copy")
    return model


# ----------------------------------------------------------------------------------------------------------------
# Audio -> windows -> log-mel (the same windows as dcasenet_hub.inference.pipeline)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Audio:
    """A clip's pre-emphasised 24 kHz waveform and its targets."""

    wave: np.ndarray
    target: np.ndarray  # (n,) class one-hot / multi-hot, or (frames_100ms, n) event roll
    label_index: int = -1


def _preemphasis(wave: np.ndarray, coefficient: float) -> np.ndarray:
    if not coefficient:
        return wave.astype(np.float32, copy=False)
    return (wave[1:] - np.float32(coefficient) * wave[:-1]).astype(np.float32, copy=False)


def _event_roll(clip: Clip, labels: tuple[str, ...]) -> np.ndarray:
    n = max(1, math.ceil((clip.duration or 0.0) / _EVENT_HOP_S - 1e-9))
    roll = np.zeros((n, len(labels)), dtype=np.float32)
    index = {name: i for i, name in enumerate(labels)}
    for onset, offset, label in clip.events:
        a = math.floor(onset / _EVENT_HOP_S + 1e-9)
        b = math.ceil(offset / _EVENT_HOP_S - 1e-9)
        roll[a:max(a + 1, b), index[label]] = 1.0
    return roll


def _load_clips(clips: list[Clip], dataset: Dataset, config: Any, progress: bool, what: str) -> list[_Audio]:
    from dcasenet_hub.audio import AudioLoadError, load_audio

    out: list[_Audio] = []
    problems: list[str] = []
    index = {name: i for i, name in enumerate(dataset.labels)}
    for clip in _bar(clips, progress, desc=f"Loading {what} audio", unit="clip"):
        try:
            wave, _ = load_audio(clip.path, sample_rate=config.frontend.sample_rate)
        except AudioLoadError as exc:
            problems.append(str(exc))
            continue
        wave = _preemphasis(wave, config.frontend.preemphasis)
        if dataset.task == "detection":
            target = _event_roll(clip, dataset.labels)
            out.append(_Audio(wave, target))
        else:
            target = np.zeros(len(dataset.labels), dtype=np.float32)
            for label in clip.labels:
                target[index[label]] = 1.0
            out.append(_Audio(wave, target, index[clip.labels[0]] if dataset.task == "classification" else -1))
    if problems:
        raise DataError(dataset.source, problems)
    return out


def _window_bounds(task: str, n: int, config: Any) -> list[tuple[int, int]]:
    """Windows of a pre-emphasised signal of ``n`` samples: 5 s crops / 2.5 s hop for scenes, else 60 s windows."""
    sr = config.frontend.sample_rate
    if task == "classification":
        length = round(config.windows.scene_window_s * sr)
        hop = round(config.windows.scene_hop_s * sr)
        if n <= length:
            return [(0, n)]
        starts = list(range(0, n - length + 1, hop))
        if starts[-1] + length < n:
            starts.append(n - length)
        return [(s, s + length) for s in starts]
    length = round(config.windows.event_window_s * sr)
    return [(s, min(n, s + length)) for s in range(0, n, length)]


def _mel(samples: np.ndarray, config: Any) -> tuple[torch.Tensor, int]:
    """Normalised log-mel ``(n_mels, F')`` of pre-emphasised samples (tiled to >= 40 frames) and the frame count F."""
    import dataclasses

    import torch

    from dcasenet_hub.audio import log_mel, normalize

    cfg = dataclasses.replace(config.frontend, preemphasis=0.0)
    x = samples
    min_len = cfg.n_fft // 2 + 2
    while x.shape[-1] < min_len:  # too short even for the STFT's reflect padding
        x = np.concatenate([x, x], axis=-1)
    mel = log_mel(torch.from_numpy(np.ascontiguousarray(x)), config=cfg, normalize=False)
    frames = int(mel.shape[-1]) if x is samples else int(1 + (samples.shape[-1] - 1) // cfg.hop_length)
    while mel.shape[-1] < config.windows.min_frames:
        mel = torch.cat([mel, mel], dim=-1)
    return normalize(mel, std_floor=cfg.std_floor), frames


@dataclass
class _WindowFeatures:
    """Head inputs of every window of one clip."""

    feats: list[Any] = field(default_factory=list)  # (D,) per window, or (steps, D) for detection
    starts: list[int] = field(default_factory=list)  # first sample
    lengths: list[int] = field(default_factory=list)  # samples
    frames: list[int] = field(default_factory=list)  # untiled feature frames


def _head_inputs(model: DcaseNet, task: str, mel: torch.Tensor) -> torch.Tensor:
    """What the task's head receives for ``mel`` (B, 1, n_mels, F): the forward pass with a pre-hook on the head."""
    captured: dict[str, Any] = {}
    handle = _head(model, task).register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))
    try:
        model(mel, tasks=(MODEL_TASK[task],))
    finally:
        handle.remove()
    return captured["x"]


def _extract(model: DcaseNet, task: str, audio: list[_Audio], *, batch_size: int, device: Any,
             progress: bool, desc: str) -> list[_WindowFeatures]:
    """Head inputs of all windows of all clips, batched by window length, under ``torch.inference_mode``."""
    import torch

    config = model.config
    out = [_WindowFeatures() for _ in audio]
    jobs: dict[int, list[tuple[int, int, int]]] = {}
    for ci, a in enumerate(audio):
        for start, stop in _window_bounds(task, a.wave.shape[-1], config):
            jobs.setdefault(stop - start, []).append((ci, start, stop))
            out[ci].feats.append(None)
            out[ci].starts.append(start)
            out[ci].lengths.append(stop - start)
            out[ci].frames.append(0)
    slot = {ci: {s: k for k, s in enumerate(out[ci].starts)} for ci in range(len(audio))}
    total = sum(len(v) for v in jobs.values())
    was_training = model.training
    model.eval()
    from dcasenet_hub.inference.runner import inference_runner

    runner = inference_runner(model, device=device)  # exact fast path (folded batch-norm, channels-last)
    bar = _bar(None, progress, total=total, desc=desc, unit="window")
    try:
        with torch.inference_mode():
            for length in sorted(jobs):
                items = jobs[length]
                for b in range(0, len(items), batch_size):
                    chunk = items[b:b + batch_size]
                    mels, frames = zip(*(_mel(audio[ci].wave[s:e], config) for ci, s, e in chunk))
                    x = torch.stack(mels).unsqueeze(1).to(device)
                    feats = _head_inputs(runner, task, x).float().cpu()
                    for (ci, s, _e), f, nf in zip(chunk, feats, frames):
                        k = slot[ci][s]
                        out[ci].feats[k] = f.clone()
                        out[ci].frames[k] = nf
                    bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return out


def _steps_and_frames(frames: int, length: int, config: Any) -> tuple[int, int]:
    """Valid trunk steps and 100 ms event frames of a window (as dcasenet_hub.inference.pipeline cuts them)."""
    if frames < config.windows.min_frames:  # tiled short input: one step, cut to the input's duration
        n_ev = max(1, min(8, math.ceil(length / (_EVENT_HOP_S * config.frontend.sample_rate) - 1e-9)))
        return 1, n_ev
    steps = frames // 40
    return steps, steps * 8


def _clip_scores(task: str, head: nn.Module, wf: _WindowFeatures, config: Any, n_frames: int = 0) -> np.ndarray:
    """Clip-level probabilities (or the (frames, n) event probabilities) from the head inputs of one clip."""
    import torch

    with torch.inference_mode():
        if task == "classification":
            probs = torch.softmax(head(torch.stack(wf.feats)), dim=-1)
            return probs.mean(dim=0).numpy()
        if task == "tagging":
            probs = torch.sigmoid(head(torch.stack(wf.feats))).numpy()
            w = np.asarray(wf.lengths, dtype=np.float64)
            return (probs * w[:, None]).sum(axis=0) / w.sum()
        pieces = []
        for f, nf, length in zip(wf.feats, wf.frames, wf.lengths):
            steps, n_ev = _steps_and_frames(nf, length, config)
            p = torch.sigmoid(head(f[:steps])).repeat_interleave(8, dim=0)[:n_ev]
            pieces.append(p.numpy())
        ev = np.concatenate(pieces)
        if ev.shape[0] < n_frames:
            ev = np.pad(ev, ((0, n_frames - ev.shape[0]), (0, 0)))
        return ev[:n_frames]


def _evaluate(task: str, head: nn.Module, feats: list[_WindowFeatures], audio: list[_Audio],
              config: Any) -> dict[str, float]:
    from dcasenet_hub import metrics

    scores = [_clip_scores(task, head, wf, config, a.target.shape[0]) for wf, a in zip(feats, audio)]
    if task == "classification":
        probs = np.stack(scores)
        y = np.array([a.label_index for a in audio])
        # macro F1 over the classes that occur in the validation labels or predictions
        return {"accuracy": metrics.asc_accuracy(probs, y, n_crops=1, from_logits=False) / 100.0,
                "macro_f1": metrics.macro_f1(probs, y)}
    if task == "tagging":
        probs = np.stack(scores)
        truth = np.stack([a.target for a in audio])
        return {"lwlrap": metrics.lwlrap(truth, probs), "mAP": metrics.mean_average_precision(truth, probs)}
    s = metrics.sed_scores(scores, [a.target for a in audio], protocol="segment",
                           threshold=config.event_threshold, frame_hop=_EVENT_HOP_S, segment_length=1.0)
    return {"f1": float(s.f1), "error_rate": float(s.er), "precision": float(s.precision),
            "recall": float(s.recall)}


# ----------------------------------------------------------------------------------------------------------------
# Training pieces
# ----------------------------------------------------------------------------------------------------------------


def _loss(task: str, out: torch.Tensor, target: torch.Tensor, *, probabilities: bool = False) -> torch.Tensor:
    import torch.nn.functional as F

    if task == "classification":
        return F.cross_entropy(out, target)  # soft targets: mixup gives lam * CE(a) + (1 - lam) * CE(b)
    if probabilities:
        return F.binary_cross_entropy(out.clamp(1e-7, 1 - 1e-7), target)
    return F.binary_cross_entropy_with_logits(out, target)


def _mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator) -> tuple[Any, Any]:
    """One lambda ~ Beta(alpha, alpha) and one permutation per batch (the authors' mixup)."""
    import torch

    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def _tile(wave: np.ndarray, length: int) -> np.ndarray:
    while wave.shape[-1] < length:
        wave = np.concatenate([wave, wave])
    return wave


def _clip_crop(a: _Audio, length: int, rng: np.random.Generator) -> np.ndarray:
    """The authors' clip-task crop: tile short clips by doubling, then a uniformly random start."""
    wave = _tile(a.wave, length)
    start = int(rng.integers(0, wave.shape[-1] - length + 1))
    return wave[start:start + length]


def _event_crop(a: _Audio, length: int, config: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A detection crop starting on the 100 ms label grid, with its 100 ms targets."""
    hop = round(_EVENT_HOP_S * config.frontend.sample_rate)
    n_frames = length // hop
    wave, roll = a.wave, a.target
    if wave.shape[-1] < length:  # shorter than the crop: pad (silence, no events)
        wave = np.pad(wave, (0, length - wave.shape[-1]))
    max_start = (wave.shape[-1] - length) // hop
    s = int(rng.integers(0, max_start + 1))
    target = roll[s:s + n_frames]
    if target.shape[0] < n_frames:
        target = np.pad(target, ((0, n_frames - target.shape[0]), (0, 0)))
    return wave[s * hop:s * hop + length], target


def _bar(iterable: Any, enabled: bool, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, leave=False, **kwargs)


def _resolve_device(device: Any) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}")


# ----------------------------------------------------------------------------------------------------------------
# The helper
# ----------------------------------------------------------------------------------------------------------------


def finetune(
    model: DcaseNet | str | Path,
    data: str | Path | Dataset,
    *,
    task: str,
    head: str = "new",
    freeze: str = "all",
    epochs: int | None = None,
    batch_size: int = 32,
    lr: float | None = None,
    body_lr_scale: float = 0.1,
    weight_decay: float = 0.0,
    crop_s: float | None = None,
    mixup: float | None = None,
    warm_start: bool = False,
    batch_norm: str = "train",
    patience: int | None = 10,
    labels: Sequence[str] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    delimiter: str | None = None,
    label_delimiter: str = ",",
    audio_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> DcaseNet:
    """Fine-tune ``model`` on labelled clips and return the new model (best validation epoch).

    Args:
        model: The base: a :class:`~dcasenet_hub.DcaseNet` or anything ``from_pretrained`` takes
            (``"dcasenet-v3"``, a folder, a file). It is not modified.
        data: A folder with one sub-folder per class, a ``.csv``/``.tsv`` table (``path,label``, ``path,labels``,
            or ``filename,onset,offset,event_label``), or a dataset from
            :func:`dcasenet_hub.finetuning.data.read_dataset`. All data problems are reported together
            (:class:`DataError`) before training.
        task: ``"classification"`` (one label per clip; replaces the scene head), ``"tagging"`` (several labels per
            clip; replaces the tag head's last layer) or ``"detection"`` (events with onset/offset; replaces the
            event head).
        head: ``"new"`` (a freshly initialised head) or ``"reuse"`` (start the rows of labels the base model
            already knows from its weights).
        freeze: ``"all"`` = linear probe on cached head inputs; a block name (see :func:`freeze_choices`) = freeze
            it and everything before it, fine-tune the rest; ``"none"`` = fine-tune everything.
        epochs: Maximum epochs (default 100 for a probe, 15 for fine-tuning).
        batch_size: Clips (probe: windows or steps) per step.
        lr: Learning rate of the head (Adam; default 3e-3 for a probe, 1e-3 for fine-tuning), cosine-annealed to
            1 % over the run.
        body_lr_scale: The unfrozen pretrained blocks learn at ``lr * body_lr_scale``.
        weight_decay: Adam weight decay.
        crop_s: Training crop in seconds (fine-tuning only; default 5 s for classification/tagging as the authors,
            30 s for detection, shortened to the shortest clip and to a multiple of 0.8 s).
        mixup: Mixup ``alpha`` (the authors used 0.1) for fine-tuning; ``None`` = off.
        warm_start: Fine-tuning only: train the new head as a linear probe first (up to 100 epochs on cached
            inputs, early-stopped), then fine-tune from it ("LP-FT", Kumar et al. 2022).
        batch_norm: Fine-tuning only: ``"train"`` = batch-norm layers of the unfrozen blocks use batch statistics
            while training and their running statistics are re-estimated on the training crops after every epoch
            (so validation and inference normalise like training did); ``"frozen"`` = they keep the base model's
            statistics (their scale and shift still learn).
        patience: Stop after this many epochs without a better validation score (``None``: never).
        labels: Label names in the wanted output order (default: those found, sorted); others are problems.
        validation_fraction: Share of clips drawn (stratified, with ``seed``) for validation when the data names no
            split.
        seed: Seed of the split, the head's initialisation, crops, mixup and shuffling.
        delimiter: Column separator of a table (default: guessed).
        label_delimiter: Separator of several labels in one cell (tagging).
        audio_dir: Folder the table's paths are relative to (default: the table's folder).
        output_dir: Write ``config.json``, ``model.safetensors``, ``README.md`` and ``metrics.jsonl`` here.
        overwrite: Replace a model already in ``output_dir``.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        progress: Show progress bars.

    Returns:
        The fine-tuned model in eval mode on ``device``. ``model.config.extra["finetune"]`` records the base model,
        data summary, recipe, best epoch, validation metrics and the per-epoch history.

    Raises:
        DataError: problems in the data (all listed, with file names).
        ValueError: invalid options (the message lists the valid ones).
        FileExistsError: ``output_dir`` already holds a model and ``overwrite`` is False.

    Example:
        >>> model = finetune("dcasenet-v3", "sounds.csv", task="tagging", output_dir="tagger")  # doctest: +SKIP
        >>> model.config.extra["finetune"]["validation"]                                       # doctest: +SKIP
        {'lwlrap': 0.83, 'mAP': 0.79}
    """
    import torch

    from dcasenet_hub.inference.model import DcaseNet

    _check_task(task)
    if head not in HEADS:
        raise ValueError(f"head={head!r}; choose one of {', '.join(HEADS)}")
    probe = freeze == "all"
    epochs = int(epochs if epochs is not None else (100 if probe else 15))
    lr = float(lr if lr is not None else (_PROBE_LR if probe else 1e-3))
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs ({epochs}), batch_size ({batch_size}) and lr ({lr}) must be positive")
    if mixup is not None and mixup <= 0:
        raise ValueError(f"mixup alpha must be positive (the authors used 0.1), got {mixup}")
    if batch_norm not in ("train", "frozen"):
        raise ValueError(f"batch_norm={batch_norm!r}; choose 'train' or 'frozen'")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 or None, got {patience}")
    out_dir = Path(output_dir).expanduser() if output_dir is not None else None
    if out_dir is not None and (out_dir / "model.safetensors").exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a model (model.safetensors); choose another output folder "
                              "or pass overwrite=True (--overwrite)")
    # the data first: its problems are reported before a model is downloaded or loaded
    dataset = data if isinstance(data, Dataset) else read_dataset(
        data, task=task, labels=labels, delimiter=delimiter, label_delimiter=label_delimiter, audio_dir=audio_dir,
        validation_fraction=validation_fraction, seed=seed)
    if dataset.task != task:
        raise ValueError(f"The dataset was read for task {dataset.task!r}, not {task!r}")
    if isinstance(model, (str, Path)):
        from dcasenet_hub.inference.model import from_pretrained

        model = from_pretrained(model)
    if not isinstance(model, DcaseNet):
        raise TypeError(f"model must be a DcaseNet or a name/path for from_pretrained, got {type(model).__name__}")
    base = model
    trainable = _trainable_stages(base, task, freeze)
    if mixup is not None and probe:
        raise ValueError("mixup mixes training crops, so it needs fine-tuning: pass freeze='none' or a block name "
                         f"({', '.join(freeze_choices(base, task)[2:])}), or drop mixup for a linear probe")
    dev = _resolve_device(device)
    logger.info("Fine-tuning DcaseNet-%s on %s: %s", base.config.arch, dataset.summary(),
                "linear probe" if probe else f"fine-tuning after {freeze}")

    new = _new_model(base, task, dataset.labels, head, seed).to(dev)
    config = new.config
    train_audio = _load_clips(dataset.train, dataset, config, progress, "training")
    val_audio = _load_clips(dataset.validation, dataset, config, progress, "validation")

    crop = None
    if not probe:
        crop = float(crop_s if crop_s is not None else _DEFAULT_CROP_S[task])
        if task == "detection":
            shortest = min(a.wave.shape[-1] for a in train_audio) / config.frontend.sample_rate
            crop = max(0.8, math.floor(min(crop, shortest) / 0.8 + 1e-9) * 0.8)
        if crop < 0.8:
            raise ValueError(f"crop_s={crop} is shorter than DcaseNet's 0.8 s minimum")

    recipe = {
        "mode": "linear probe" if probe else ("full fine-tuning" if freeze == "none" else "partial fine-tuning"),
        "freeze": freeze, "trained_blocks": [n for n, _ in trainable], "head": head, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "body_lr": lr * body_lr_scale if trainable else None,
        "weight_decay": weight_decay, "optimizer": "Adam, cosine annealing to 1% of lr per step",
        "crop_s": crop, "mixup_alpha": mixup, "warm_start": bool(warm_start and not probe),
        "batch_norm": batch_norm if not probe else None, "patience": patience, "seed": seed, "device": str(dev),
        "selection": f"best validation {PRIMARY_METRIC[task]}",
    }
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        run = _Run(new, task, dataset, train_audio, val_audio, recipe, rng, dev, progress, out_dir)
        if probe:
            run.probe(epochs, lr)
        else:
            if warm_start:  # LP-FT: a linear probe first, so fine-tuning starts from a head that fits the features
                run.probe(_WARM_START_EPOCHS, _PROBE_LR, phase="warm-start probe")
            run.finetune(_trainable_stages(new, task, freeze), body_lr_scale)
    recipe["seconds"] = round(time.perf_counter() - started, 2)
    result = run.finish(base)
    if out_dir is not None:
        _save(result, out_dir, run.history)
        logger.info("Saved the fine-tuned model to %s", out_dir)
    return result


class _Standardised:
    """``head((x - mean) / std)``: the probe's head during training, before :func:`_fold`."""

    def __init__(self, head: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.head, self.mean, self.std = head, mean, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.mean) / self.std)


def _fold(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make ``head(x)`` equal ``old_head((x - mean) / std)``."""
    import torch

    with torch.no_grad():
        head.weight.div_(std)
        head.bias.sub_(head.weight @ mean)


def _unfold(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Inverse of :func:`_fold`: express a head on raw inputs as a head on standardised inputs."""
    import torch

    with torch.no_grad():
        head.bias.add_(head.weight @ mean)
        head.weight.mul_(std)


class _Run:
    """State of one fine-tuning run: epochs, validation, early stopping, best weights, history."""

    def __init__(self, model: DcaseNet, task: str, dataset: Dataset, train_audio: list[_Audio],
                 val_audio: list[_Audio], recipe: dict[str, Any], rng: np.random.Generator, device: Any,
                 progress: bool, out_dir: Path | None) -> None:
        self.model, self.task, self.dataset = model, task, dataset
        self.train_audio, self.val_audio = train_audio, val_audio
        self.recipe, self.rng, self.device, self.progress, self.out_dir = recipe, rng, device, progress, out_dir
        self.head = _head(model, task)
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self.best_target: Any = None  # the module best_state belongs to (the head for a probe, else the model)
        self.best_metrics: dict[str, float] = {}
        self.stale = 0
        self.best_phase = ""

    # -- shared --------------------------------------------------------------------------------------------------

    def _epoch_done(self, phase: str, epoch: int, train_loss: float, metrics: dict[str, float], lr: float,
                    seconds: float, target: Any) -> bool:
        """Record an epoch; keep the best weights; True when early stopping says stop."""
        score = metrics[PRIMARY_METRIC[self.task]]
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.best_metrics = score, epoch, dict(metrics)
            self.best_phase = phase
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in target.state_dict().items()}
            self.best_target = target
            self.stale = 0
        else:
            self.stale += 1
        row = {"phase": phase, "epoch": epoch, "train_loss": round(train_loss, 6),
               "validation": {k: round(float(v), 6) for k, v in metrics.items()},
               "lr": lr, "seconds": round(seconds, 3), "best": improved}
        self.history.append(row)
        logger.info("%s epoch %d: train loss %.4f, validation %s%s", phase, epoch, train_loss,
                    ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), " (best)" if improved else "")
        if self.out_dir is not None:
            _write_log(self.out_dir, self.history)
        patience = self.recipe["patience"]
        return patience is not None and self.stale >= patience

    def _optimizer(self, groups: list[dict[str, Any]], steps: int, lr: float) -> tuple[Any, Any]:
        import torch

        opt = torch.optim.Adam(groups, lr=lr, weight_decay=self.recipe["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps))))
        return opt, sched

    # -- linear probe --------------------------------------------------------------------------------------------

    def probe(self, epochs: int, lr: float, phase: str = "probe") -> None:
        """Train the head on cached head inputs of the frozen body (the best epoch's head is kept in place)."""
        import torch

        task, cfg, bs = self.task, self.model.config, self.recipe["batch_size"]
        feats_train = _extract(self.model, task, self.train_audio, batch_size=bs, device=self.device,
                               progress=self.progress, desc="Head inputs (training)")
        feats_val = _extract(self.model, task, self.val_audio, batch_size=bs, device=self.device,
                             progress=self.progress, desc="Head inputs (validation)")
        x, y = self._probe_samples(feats_train)
        # Train on standardised inputs (pretrained features can have any scale; Adam then needs no tuning) and fold
        # the standardisation into the head's weights at the end, so the saved head takes the raw inputs.
        mean = x.mean(dim=0)
        std = x.std(dim=0) if x.shape[0] > 1 else torch.ones_like(mean)
        std = std.clamp_min(max(float(std.mean()) * 1e-2, 1e-12))
        head = self.head.to("cpu")
        if self.recipe["head"] == "reuse":
            _unfold(head, mean, std)  # the reused rows keep their meaning on the standardised inputs
        scaled = _Standardised(head, mean, std)
        xs = (x - mean) / std
        head.train()
        steps_per_epoch = math.ceil(x.shape[0] / bs)
        opt, sched = self._optimizer([{"params": head.parameters()}], epochs * steps_per_epoch, lr)
        self.recipe["probe_samples"] = int(x.shape[0])
        bar = _bar(range(1, epochs + 1), self.progress, desc="Epochs (probe)", unit="epoch")
        for epoch in bar:
            t0 = time.perf_counter()
            perm = torch.from_numpy(self.rng.permutation(x.shape[0]))
            total = 0.0
            for b in range(0, x.shape[0], bs):
                idx = perm[b:b + bs]
                loss = _loss(task, head(xs[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            metrics = _evaluate(task, scaled, feats_val, self.val_audio, cfg)
            bar.set_postfix({PRIMARY_METRIC[task]: f"{metrics[PRIMARY_METRIC[task]]:.3f}"})
            stop = self._epoch_done(phase, epoch, total / x.shape[0], metrics, opt.param_groups[0]["lr"],
                                    time.perf_counter() - t0, head)
            if stop:
                break
        bar.close()
        if self.best_state is not None:
            head.load_state_dict(self.best_state, strict=True)
        _fold(head, mean, std)
        self.model.to(self.device)
        # from now on the best weights are the whole model with the folded head
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.best_target = self.model
        self.stale = 0

    def _probe_samples(self, feats: list[_WindowFeatures]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training samples of the probe: one per window (clip tasks) or per 0.8 s step (detection)."""
        import torch

        xs, ys = [], []
        cfg = self.model.config
        for wf, a in zip(feats, self.train_audio):
            if self.task != "detection":
                xs.append(torch.stack(wf.feats))
                ys.append(torch.from_numpy(np.repeat(a.target[None], len(wf.feats), axis=0)))
                continue
            hop = round(_EVENT_HOP_S * cfg.frontend.sample_rate)
            for f, nf, start, length in zip(wf.feats, wf.frames, wf.starts, wf.lengths):
                steps, _ = _steps_and_frames(nf, length, cfg)
                first = start // hop
                roll = a.target[first:first + steps * 8]
                if roll.shape[0] < steps * 8:
                    roll = np.pad(roll, ((0, steps * 8 - roll.shape[0]), (0, 0)))
                # BCE of a step repeated over its 8 frames == BCE against the mean of the 8 targets (+ const)
                xs.append(f[:steps])
                ys.append(torch.from_numpy(roll.reshape(steps, 8, -1).mean(axis=1)))
        return torch.cat(xs).float(), torch.cat(ys).float()

    # -- fine-tuning ---------------------------------------------------------------------------------------------

    def finetune(self, trainable: list[tuple[str, list[nn.Module]]], body_lr_scale: float) -> None:
        import torch

        model, task, cfg = self.model, self.task, self.model.config
        bs, epochs, lr = self.recipe["batch_size"], self.recipe["epochs"], self.recipe["lr"]
        body_modules = [m for _, mods in trainable for m in mods]
        for p in model.parameters():
            p.requires_grad_(False)
        body_params = [p for m in body_modules for p in m.parameters()]
        for p in body_params + list(self.head.parameters()):
            p.requires_grad_(True)
        groups = [{"params": list(self.head.parameters()), "lr": lr}]
        if body_params:
            groups.append({"params": body_params, "lr": lr * body_lr_scale})
        n = len(self.train_audio)
        steps_per_epoch = math.ceil(n / bs)
        opt, sched = self._optimizer(groups, epochs * steps_per_epoch, lr)
        sr = cfg.frontend.sample_rate
        crop_len = round(self.recipe["crop_s"] * sr)
        alpha = self.recipe["mixup_alpha"]

        bn_train = self.recipe["batch_norm"] == "train"
        bn_layers = [m for mod in body_modules for m in mod.modules()
                     if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

        def set_modes() -> None:
            model.eval()  # frozen blocks (and the other heads) keep their batch-norm statistics
            for m in body_modules + [self.head]:
                m.train()
            if not bn_train:  # "frozen": the base model's statistics stay; scale and shift still learn
                for m in bn_layers:
                    m.eval()

        def batch(idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
            if task == "detection":
                pairs = [_event_crop(self.train_audio[i], crop_len, cfg, self.rng) for i in idx]
                waves = [w for w, _ in pairs]
                y = torch.from_numpy(np.stack([t for _, t in pairs]))
            else:
                waves = [_clip_crop(self.train_audio[i], crop_len, self.rng) for i in idx]
                y = torch.from_numpy(np.stack([self.train_audio[i].target for i in idx]))
            x = torch.stack([_mel(w, cfg)[0] for w in waves]).unsqueeze(1).to(self.device)
            return x, y.to(self.device)

        def recalibrate() -> None:
            """Batch-norm statistics of the trained blocks re-estimated on the training crops (exact average)."""
            momenta = [m.momentum for m in bn_layers]
            for m in bn_layers:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            with torch.no_grad():
                for b in range(0, n, bs):
                    model(batch(range(b, min(n, b + bs)))[0], tasks=(MODEL_TASK[task],))
            for m, mom in zip(bn_layers, momenta):
                m.momentum = mom

        bar = _bar(range(1, epochs + 1), self.progress, desc="Epochs (fine-tuning)", unit="epoch")
        for epoch in bar:
            t0 = time.perf_counter()
            set_modes()
            perm = self.rng.permutation(n)
            total = 0.0
            for b in _bar(range(0, n, bs), self.progress, desc=f"Epoch {epoch}", unit="batch"):
                idx = perm[b:b + bs]
                x, y = batch(idx)
                if alpha is not None and len(idx) > 1:
                    x, y = _mixup(x, y, alpha, self.rng)
                out = model(x, tasks=(MODEL_TASK[task],))
                if task == "classification":
                    loss = _loss(task, out.scene_logits, y)
                elif task == "tagging":
                    loss = _loss(task, out.tag_logits, y)
                else:
                    probs = out.event_probs[:, :y.shape[1]]
                    loss = _loss(task, probs, y[:, :probs.shape[1]], probabilities=True)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            if bn_train and bn_layers:
                recalibrate()
            feats_val = _extract(model, task, self.val_audio, batch_size=bs, device=self.device,
                                 progress=False, desc="Validation")
            head_cpu = copy.deepcopy(self.head).to("cpu").eval()
            metrics = _evaluate(task, head_cpu, feats_val, self.val_audio, cfg)
            bar.set_postfix({PRIMARY_METRIC[task]: f"{metrics[PRIMARY_METRIC[task]]:.3f}"})
            stop = self._epoch_done("fine-tune", epoch, total / n, metrics, opt.param_groups[0]["lr"],
                                    time.perf_counter() - t0, model)
            if stop:
                break
        bar.close()
        for p in model.parameters():
            p.requires_grad_(True)

    # -- result --------------------------------------------------------------------------------------------------

    def finish(self, base: DcaseNet) -> DcaseNet:
        """Restore the best epoch's weights and write the fine-tuning record into the config."""
        model = self.model
        if self.best_state is not None:
            self.best_target.load_state_dict(self.best_state, strict=True)
        model.eval()
        task_name = MODEL_TASK[self.task]
        body_changed = any(name not in _TASK_ONLY_STAGES for name in self.recipe["trained_blocks"])
        others = {"scene", "tags", "events"} - {task_name}
        kept = [t for t in base.config.trained_tasks if t != task_name and not (body_changed and t in others)]
        trained = tuple(sorted(set(kept) | {task_name}, key=("scene", "tags", "events", "embeddings").index))
        base_id = _public_id(base.config.model_id) or f"DcaseNet-{base.config.arch} ({base.config.provenance})"
        dropped = sorted(set(base.config.trained_tasks) & others - set(trained))
        data = self.dataset.to_dict()
        record = {
            "base_model": base_id,
            "base_provenance": base.config.provenance,
            "task": self.task,
            "head": task_name,
            "labels": list(self.dataset.labels),
            "data": data,
            "recipe": self.recipe,
            "best_epoch": self.best_epoch,
            "best_phase": self.best_phase,
            "validation": {k: round(float(v), 6) for k, v in self.best_metrics.items()},
            "history": self.history,
            "heads_no_longer_trained": dropped,
        }
        extra = {k: v for k, v in (base.config.extra or {}).items() if k not in ("metrics", "description")}
        extra["trained_on"] = list(extra.get("trained_on") or []) + [
            {"task": self.task, "dataset": self.dataset.summary(), "split": self.dataset.split}]
        extra["finetune"] = record
        extra["description"] = _card_section(record, self.dataset)
        model.config = model.config.replace(
            trained_tasks=trained, model_id=None,
            provenance=f"fine-tuned by dcasenet-hub from {base_id} on {self.dataset.summary()}",
            extra=json.loads(json.dumps(extra, default=str)),
        )
        if dropped:
            logger.warning("Fine-tuning changed blocks shared with the %s head(s): they are no longer marked as "
                           "trained (freeze up to a task-specific block to keep them)", ", ".join(dropped))
        return model


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------


def _public_id(model_id: str | None) -> str | None:
    """A manifest or Hugging Face id as it is; a local path reduced to its name (no local paths in a model card)."""
    if model_id and Path(model_id).expanduser().exists():
        return Path(model_id).name
    return model_id


def _card_section(record: dict[str, Any], dataset: Dataset) -> str:
    r = record["recipe"]
    lines = [
        "## Fine-tuning\n",
        (f"Fine-tuned with `dcasenet_hub.finetune` from **{record['base_model']}** for **{record['task']}** "
         f"(the `{record['head']}` head now predicts the labels below).\n"),
        f"- **Data:** {dataset.summary()}; split: {dataset.split}",
        (f"- **Mode:** {r['mode']} (freeze={r['freeze']}; trained blocks: "
         f"{', '.join(r['trained_blocks']) or 'head only'}); head: {r['head']}"),
        f"- **Recipe:** {r['epochs']} epochs max, batch {r['batch_size']}, lr {r['lr']:g}"
        + (f" (body {r['body_lr']:g})" if r.get("body_lr") else "")
        + f", {r['optimizer']}" + (f", {r['crop_s']:g} s crops" if r.get("crop_s") else "")
        + (f", mixup alpha {r['mixup_alpha']:g}" if r.get("mixup_alpha") else "")
        + f", early stopping patience {r['patience']}, seed {r['seed']}",
        (f"- **Best epoch:** {record['best_phase']} epoch {record['best_epoch']} ({r['selection']}; "
         f"{len(record['history'])} epochs run)\n"),
        "| validation metric | value |",
        "| --- | --- |",
        *(f"| {k} | {v:.4f} |" for k, v in record["validation"].items()),
        "",
        "| label | training clips | validation clips |",
        "| --- | --- | --- |",
        *(f"| `{label}` | {record['data']['clips_per_label']['train'][label]} | "
          f"{record['data']['clips_per_label']['validation'][label]} |" for label in dataset.labels),
        "",
        "Per-epoch metrics: `metrics.jsonl`; the full record: `config.json` -> `extra.finetune`.",
    ]
    if record["heads_no_longer_trained"]:
        lines.append(f"\nThe {', '.join(record['heads_no_longer_trained'])} head(s) share blocks that were "
                     "fine-tuned, so they are marked untrained.")
    return "\n".join(lines) + "\n"


def _write_log(out_dir: Path, history: list[dict[str, Any]]) -> None:
    from dcasenet_hub._io import atomic_write_text

    atomic_write_text(out_dir / _LOG_NAME, "".join(json.dumps(row) + "\n" for row in history))


def _save(model: DcaseNet, out_dir: Path, history: list[dict[str, Any]]) -> None:
    # named after its folder (the model card's title and the id in predictions), not after the base model
    model.config = model.config.replace(model_id=out_dir.resolve().name)
    model.save_pretrained(out_dir)
    _write_log(out_dir, history)
