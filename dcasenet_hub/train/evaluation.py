"""The authors' evaluation (Table 2 metrics) on prepared evaluation splits, and the data preparation it shares with
the trainer.

* ASC: the scene crops of each clip (:func:`dcasenet_hub.train.torch_data.scene_crops`, the inputs ``predict``
  builds; three 5 s crops of a 10 s clip), softmax per crop, mean, argmax: :func:`scene_probabilities` gives the
  per-file probabilities, which equal ``DcaseNet.predict(file).scene_probs`` on the same 24 kHz 16-bit audio.
* TAG: each whole clip (tiled to 40 frames), sigmoid scores, lwlrap.
* SED: each whole channel, the 4 channels' probabilities averaged per recording, threshold 0.3, paper protocol.

Example:
    >>> from dcasenet_hub import DcaseNet
    >>> from dcasenet_hub.train import evaluate, format_row
    >>> m = evaluate(DcaseNet.from_pretrained("dcasenet-v3"), asc_root="data/asc")     # doctest: +SKIP
    >>> print(format_row(m))                                                          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dcasenet_hub._progress import progress_bar, show_progress
from dcasenet_hub.config import ModelConfig
from dcasenet_hub.train.distributed import Ranks, autocast_args, deprecated_precision, training_device
from dcasenet_hub.train.tasks import task_key
from dcasenet_hub.train.torch_data import EvalClips, FeatureStore

#: Split names of :mod:`dcasenet_hub.train.datasets` readers.
TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def checked_roots(tasks: Sequence[str], roots: Mapping[str, str | Path | None]) -> dict[str, Path]:
    missing = [t for t in tasks if not roots.get(t)]
    if missing:
        hint = {"asc": "--asc-root (TAU Urban Acoustic Scenes 2020 Mobile development folder)",
                "tag": "--tag-root (FSDKaggle2019 folder with train_curated.csv)",
                "sed": "--sed-root (TAU-NIGENS Spatial Sound Events 2020 folder with metadata_dev/)"}
        raise ValueError("This recipe trains " + ", ".join(tasks) + "; also pass "
                         + "; ".join(hint[t] for t in missing))
    return {t: Path(roots[t]) for t in tasks}  # type: ignore[arg-type]


def prepared_stores(roots: Mapping[str, Path], splits: Sequence[str], *, cache_dir: str | Path | None,
                     workers: int, progress: bool, memory: bool) -> tuple[dict[str, FeatureStore], dict[str, dict]]:
    """Item lists of ``splits`` per task and their (prepared) feature stores."""
    from dcasenet_hub.train.prepare import default_cache_root, prepare_splits

    stores, items = {}, {}
    for task, root in roots.items():
        report, items[task] = prepare_splits(task, root, splits, cache_dir=cache_dir or default_cache_root(),
                                             workers=workers, progress=progress)
        if report.failed:
            listed = "; ".join(f"{p}: {r}" for p, r in report.failed[:5])
            raise ValueError(f"{len(report.failed)} {task} files could not be prepared ({listed}). "
                             "Fix or remove them and run again.")
        stores[task] = FeatureStore(report.dirs[task], root, memory=memory)
    return stores, items


def _task_labels(task: str, config: ModelConfig) -> tuple[str, ...]:
    return {"asc": config.scene_labels, "tag": config.tag_labels, "sed": config.event_labels}[task_key(task)]


def eval_set(task: str, items: Sequence[Any], store: FeatureStore, *, config: ModelConfig,
              scene_window_s: float | None = None) -> EvalClips:
    """The evaluation set of ``task``; scene crops of ``scene_window_s`` at half that hop (default: the model's
    ``windows``, as ``predict``)."""
    w = config.windows
    length, hop = (w.scene_window_s, w.scene_hop_s) if scene_window_s is None else (scene_window_s,
                                                                                    scene_window_s / 2)
    return EvalClips(task, items, store, labels=_task_labels(task, config), scene_window_s=length,
                     scene_hop_s=hop, frontend=config.frontend, min_frames=w.min_frames)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


def _groups(ds: EvalClips, batch: int) -> Iterator[list[Any]]:
    """Consecutive evaluation examples grouped into batches of equal shape."""
    group: list[Any] = []
    for i in range(len(ds)):
        ex = ds[i]
        if group and (len(group) >= batch or group[0][0].shape != ex[0].shape):
            yield group
            group = []
        group.append(ex)
    if group:
        yield group


@torch.no_grad()
def scene_probabilities(model: nn.Module, ds: EvalClips, *, device: torch.device | str = "cpu",
                        dtype: str = "fp32", batch_size: int = 8,
                        progress: bool = False) -> tuple[np.ndarray, list[int], list[str]]:
    """Per-file scene probabilities (mean of the crops' softmax), labels and file names of a scene evaluation set.

    The model must be in eval mode (:func:`evaluate_sets` does it).

    Returns:
        ``(probabilities (files, scenes) float64, label indices, file names)``.
    """
    from dcasenet_hub import metrics

    device = torch.device(device)
    ac = autocast_args(dtype, device)
    probs, labels, names = [], [], []
    bar = progress_bar(enabled=progress, total=len(ds), desc="evaluate asc")
    crops = int(ds[0][0].shape[0])  # crops per file (clips of one dataset share a length; groups keep shapes equal)
    for g in _groups(ds, max(1, batch_size // crops)):
        x = torch.cat([ex[0] for ex in g]).to(device)
        with torch.autocast(**ac):
            logits = model(x, tasks=("scene",)).scene_logits.float().cpu().numpy()
        n = int(g[0][0].shape[0])  # crops per file (equal within a group)
        probs.append(metrics.average_crops(logits, n_crops=n))
        labels += [ex[1] for ex in g]
        names += [ex[2] for ex in g]
        bar.update(len(g))
    bar.close()
    return np.concatenate(probs), labels, names


@torch.no_grad()
def _tag_scores(model: nn.Module, ds: EvalClips, *, device: torch.device, ac: dict[str, Any], batch_size: int,
                progress: bool) -> float:
    from dcasenet_hub import metrics

    scores, truth = [], []
    bar = progress_bar(enabled=progress, total=len(ds), desc="evaluate tag")
    for g in _groups(ds, batch_size):
        x = torch.cat([ex[0] for ex in g]).to(device)
        with torch.autocast(**ac):
            scores.append(torch.sigmoid(model(x, tasks=("tags",)).tag_logits.float()).cpu().numpy())
        truth += [ex[1] for ex in g]
        bar.update(len(g))
    bar.close()
    return 100.0 * metrics.lwlrap(np.stack(truth), np.concatenate(scores))


@torch.no_grad()
def _event_scores(model: nn.Module, ds: EvalClips, *, device: torch.device, ac: dict[str, Any], batch_size: int,
                  threshold: float, progress: bool) -> tuple[float, float]:
    from dcasenet_hub import metrics

    probs: dict[str, list[np.ndarray]] = {}
    truths: dict[str, np.ndarray] = {}
    bar = progress_bar(enabled=progress, total=len(ds), desc="evaluate sed")
    for g in _groups(ds, batch_size):
        x = torch.cat([ex[0] for ex in g]).to(device)
        with torch.autocast(**ac):
            p = model(x, tasks=("events",)).event_probs.float().cpu().numpy()
        for ex, pk in zip(g, p):
            probs.setdefault(ex[2], []).append(pk)
            truths[ex[2]] = ex[1]
        bar.update(len(g))
    bar.close()
    preds, refs = [], []
    for name, chans in probs.items():
        n = min(min(c.shape[0] for c in chans), truths[name].shape[0])
        preds.append(np.mean([c[:n] for c in chans], axis=0))
        refs.append(truths[name][:n])
    s = metrics.sed_scores(preds, refs, protocol="paper", threshold=threshold)
    return 100.0 * float(s.f1), float(s.er)


def evaluate_sets(model: nn.Module, eval_sets: Mapping[str, EvalClips], *, device: torch.device | str = "cpu",
                  dtype: str = "fp32", sed_threshold: float = 0.3, batch_size: int = 8,
                  progress: bool = False) -> dict[str, float]:
    """The authors' evaluation of ``model`` on prepared evaluation sets (Table 2 units).

    Returns:
        ``asc_acc`` (crop-averaged accuracy, %), ``tag_lwlrap`` (whole clips, %), ``sed_f1`` (%) and ``sed_er``
        (paper protocol: 4 channels averaged, threshold ``sed_threshold``, 5 s blocks) for the tasks in
        ``eval_sets``.
    """
    device = torch.device(device)
    ac = autocast_args(dtype, device)
    was_training = model.training
    model.eval()
    res: dict[str, float] = {}
    try:
        for task, ds in eval_sets.items():
            task = task_key(task)
            if task == "asc":
                probs, labels, _ = scene_probabilities(model, ds, device=device, dtype=dtype,
                                                       batch_size=batch_size, progress=progress)
                res["asc_acc"] = float(100.0 * np.mean(probs.argmax(axis=1) == np.asarray(labels)))
            elif task == "tag":
                res["tag_lwlrap"] = _tag_scores(model, ds, device=device, ac=ac, batch_size=batch_size,
                                                progress=progress)
            else:
                res["sed_f1"], res["sed_er"] = _event_scores(model, ds, device=device, ac=ac, batch_size=batch_size,
                                                             threshold=sed_threshold, progress=progress)
    finally:
        model.train(was_training)
    return res


def evaluate(model: nn.Module, *, asc_root: str | Path | None = None, tag_root: str | Path | None = None,
             sed_root: str | Path | None = None, cache_dir: str | Path | None = None, device: str | None = "auto",
             dtype: str = "fp32", sed_threshold: float | None = None, workers: int = 0,
             progress: bool | None = True, precision: str | None = None) -> dict[str, float]:
    """Evaluate ``model`` on the authors' evaluation splits of the given datasets (a Table 2 row).

    The evaluation files are prepared (cached) first if needed. Scene crops are the model's ``windows`` (5 s every
    2.5 s, the last aligned to the end), so the scene accuracy is that of ``model.predict`` on the same files.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        asc_root, tag_root, sed_root: Dataset folders; tasks without a root are skipped.
        cache_dir: Feature cache folder.
        device: ``"auto"`` (CUDA when available; also ``None``), ``"cpu"``, ``"cuda"``, ...
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA).
        sed_threshold: Event threshold (default: the model's ``event_threshold``, 0.3).
        workers: Processes for preparing features.
        progress: Show progress bars (``None``: when stderr is a terminal).
        precision: Deprecated spelling of ``dtype`` (``"amp"`` is fp16); warns.

    Returns:
        ``{"asc_acc": %, "tag_lwlrap": %, "sed_f1": %, "sed_er": ...}`` for the given tasks.

    Example:
        >>> from dcasenet_hub import DcaseNet
        >>> from dcasenet_hub.train import evaluate
        >>> evaluate(DcaseNet.from_pretrained("dcasenet-v3"), asc_root="data/asc")     # doctest: +SKIP
        {'asc_acc': 70.3}
    """
    progress = show_progress(progress)
    dtype = deprecated_precision(dtype, precision, "evaluate")
    roots = {t: Path(r) for t, r in (("asc", asc_root), ("tag", tag_root), ("sed", sed_root)) if r}
    if not roots:
        raise ValueError("Give at least one of --asc-root, --tag-root, --sed-root")
    dev = training_device(device, Ranks())
    stores, items = prepared_stores(roots, [EVAL_SPLIT], cache_dir=cache_dir, workers=workers, progress=progress,
                                     memory=False)
    config: ModelConfig = getattr(model, "config", ModelConfig())
    eval_sets = {t: eval_set(t, items[t][EVAL_SPLIT], stores[t], config=config) for t in roots}
    model = model.to(dev)
    threshold = config.event_threshold if sed_threshold is None else sed_threshold
    return evaluate_sets(model, eval_sets, device=dev, dtype=dtype, sed_threshold=threshold,
                         progress=progress)


def format_row(metrics_: Mapping[str, float]) -> str:
    """A Table 2 style row: ``ASC Acc | TAG lwlrap | SED F1 | SED ER`` (``-`` where not evaluated, ``n/a`` where
    undefined, e.g. the error rate of a file shorter than its 5 s block).

    Example:
        >>> print(format_row({"asc_acc": 70.25}))
         ASC Acc TAG lwlrap   SED F1   SED ER
           70.25          -        -        -
    """
    columns = (("ASC Acc", "asc_acc", ".2f"), ("TAG lwlrap", "tag_lwlrap", ".2f"), ("SED F1", "sed_f1", ".2f"),
               ("SED ER", "sed_er", ".4f"))
    widths = [max(len(title), 8) for title, _, _ in columns]
    cells = ["-" if metrics_.get(k) is None else format(metrics_[k], fmt) if math.isfinite(metrics_[k]) else "n/a"
             for _, k, fmt in columns]
    return (" ".join(title.rjust(w) for (title, _, _), w in zip(columns, widths)) + "\n"
            + " ".join(c.rjust(w) for c, w in zip(cells, widths)))
