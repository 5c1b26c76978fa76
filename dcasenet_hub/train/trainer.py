"""The paper's joint trainer (docs/facts.md §5.2 and §6) with recipes for every row of Table 2.

One iteration takes one batch of every active task (ASC 32, SED 24, TAG 32 as in the authors' ``train.sh``), runs a
forward pass per task with only that task's head, sums the losses (cross-entropy, BCE with logits, BCE on the event
probabilities truncated to the shorter of output and label length) and steps Adam once (lr 1e-3, no weight decay)
and the cosine schedule with warm restarts every 80 epochs (eta_min 1e-6, stepped per iteration). Mixup (alpha 0.1,
one lambda and one permutation per batch and task) starts at epoch index 6 (the authors' ``epoch > 5``). An epoch is
500 iterations; after every epoch the model is evaluated with the authors' metrics and the best checkpoint of each
metric is exported (ASC accuracy, TAG lwlrap, SED when the error rate or the F1 improves). Recipes with several tasks
then fine-tune each task alone from its best joint checkpoint, with the same hyper-parameters.

Run folder::

    RUN/recipe.json            the effective recipe (with overrides)
    RUN/joint/                 (``single/`` for one task) last.pt (full state), metrics.jsonl, best-asc/, ...
    RUN/finetune-asc/          fine-tuning stages, same layout
    RUN/best-asc/ ...          the final model of each task (fine-tuned if the recipe fine-tunes), loadable with
                               ``DcaseNet.from_pretrained("RUN/best-asc")``

Several processes (``torchrun``): the recipe's batch sizes are **global**; each of the N processes loads
``batch / N`` examples of every batch, gradients are averaged by DistributedDataParallel, batch-norm statistics are
per process. Evaluation and checkpoints happen on rank 0.

Example:
    >>> from dcasenet_hub.train.trainer import load_recipe
    >>> r = load_recipe("v3-asc-tag-sed")
    >>> r.arch, r.tasks, r.batch_size["sed"], r.stages()[1][0]
    ('v3', ('asc', 'tag', 'sed'), 24, 'finetune-asc')
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcasenet_hub import labels as _labels
from dcasenet_hub.config import ModelConfig
from dcasenet_hub.errors import TrainingDivergedError
from dcasenet_hub.train.torch_data import (
    ASC_EVAL_CROPS,
    MODEL_TASK,
    TASKS,
    BatchStream,
    EvalClips,
    FeatureStore,
    StreamSampler,
    TrainCrops,
    _seed_of,
    crop_frames,
)

logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).parent / "recipes"
STATE_FORMAT = "dcasenet-hub-train-state/1"
#: The authors' task order inside an iteration (ASC, SED, TAG).
TASK_ORDER = ("asc", "sed", "tag")
TASK_LABELS = {"asc": _labels.SCENES, "tag": _labels.TAGS, "sed": _labels.EVENTS}
#: Metric keys of the metrics log and of Table 2 (accuracy, lwlrap and F1 in percent).
METRICS = ("asc_acc", "tag_lwlrap", "sed_f1", "sed_er")
PRECISIONS = ("fp32", "amp", "bf16")
_DATA = {
    "asc": ("scene", "TAU Urban Acoustic Scenes 2020 Mobile, development (DCASE 2020 Task 1a)",
            "fold1_train; best checkpoint chosen on fold1_evaluate (3 crops)"),
    "tag": ("tags", "FSDKaggle2019 curated (DCASE 2019 Task 2)",
            "KFold(5, shuffle, seed 42) fold 0 train; best checkpoint chosen on its 20% evaluation part"),
    "sed": ("events", "TAU-NIGENS Spatial Sound Events 2020, development (DCASE 2020 Task 3)",
            "folds 3-6, each channel an example; best checkpoint chosen on fold 1 (4 channels averaged)"),
}


# ----------------------------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """A training recipe: one row of the paper's Table 2 (stored as JSON in ``dcasenet_hub/train/recipes``).

    Attributes:
        name: Recipe id, e.g. ``"v3-asc-tag-sed"``.
        arch: ``"v1"``, ``"v2"`` or ``"v3"``.
        tasks: Trained tasks, subset of ``("asc", "tag", "sed")``.
        finetune: Fine-tune every task alone from its best joint checkpoint after the joint stage.
        epochs: Epochs per stage (160).
        iterations_per_epoch: Iterations per epoch (500).
        batch_size: Global batch size per task (ASC 32, TAG 32, SED 24: the authors' ``train.sh``).
        crop_seconds: Training crop per task (5 s, 5 s, 30 s).
        mixup_alpha: Beta(alpha, alpha) of mixup, ``None`` = no mixup.
        mixup_from_epoch: First epoch index with mixup (6: the authors' ``epoch > 5``).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        amsgrad: Adam's AMSGrad variant.
        t0_epochs: Cosine restart period in epochs (T_0 = t0_epochs * iterations_per_epoch iterations).
        eta_min: Cosine schedule floor.
        loss_weights: Weight of each task's loss in the sum.
        sed_threshold: Event threshold of the SED evaluation.
        description: What the recipe is.
        paper: Table 2 numbers of this row (``joint`` and ``finetune`` dicts of ``asc_acc``, ``tag_lwlrap``,
            ``sed_f1``, ``sed_er``), for comparison.
    """

    name: str
    arch: str
    tasks: tuple[str, ...]
    finetune: bool = False
    epochs: int = 160
    iterations_per_epoch: int = 500
    batch_size: Mapping[str, int] = field(default_factory=lambda: {"asc": 32, "tag": 32, "sed": 24})
    crop_seconds: Mapping[str, float] = field(default_factory=lambda: {"asc": 5.0, "tag": 5.0, "sed": 30.0})
    mixup_alpha: float | None = 0.1
    mixup_from_epoch: int = 6
    lr: float = 1e-3
    weight_decay: float = 0.0
    amsgrad: bool = False
    t0_epochs: int = 80
    eta_min: float = 1e-6
    loss_weights: Mapping[str, float] = field(default_factory=lambda: {"asc": 1.0, "tag": 1.0, "sed": 1.0})
    sed_threshold: float = 0.3
    description: str = ""
    paper: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        tasks = tuple(self.tasks)
        object.__setattr__(self, "tasks", tuple(t for t in TASKS if t in tasks))
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown or not tasks:
            raise ValueError(f"Recipe {self.name!r}: tasks must be a non-empty subset of {TASKS}, got {list(tasks)}")
        if self.arch not in ("v1", "v2", "v3"):
            raise ValueError(f"Recipe {self.name!r}: unknown arch {self.arch!r} (v1, v2 or v3)")
        for name in ("batch_size", "crop_seconds", "loss_weights"):
            d = dict(getattr(self, name))
            missing = [t for t in self.tasks if t not in d]
            if missing:
                raise ValueError(f"Recipe {self.name!r}: {name} lacks {missing}")
            object.__setattr__(self, name, d)
        if self.epochs < 1 or self.iterations_per_epoch < 1:
            raise ValueError(f"Recipe {self.name!r}: epochs and iterations_per_epoch must be >= 1")
        if any(int(self.batch_size[t]) < 1 for t in self.tasks):
            raise ValueError(f"Recipe {self.name!r}: batch sizes must be >= 1, got {self.batch_size}")

    # -- serialisation ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        d["mixup"] = None if self.mixup_alpha is None else {"alpha": self.mixup_alpha,
                                                             "from_epoch": self.mixup_from_epoch}
        d["optimizer"] = {"name": "adam", "lr": self.lr, "weight_decay": self.weight_decay, "amsgrad": self.amsgrad}
        d["scheduler"] = {"name": "cosine_warm_restarts", "t0_epochs": self.t0_epochs, "eta_min": self.eta_min,
                          "step": "iteration"}
        for k in ("mixup_alpha", "mixup_from_epoch", "lr", "weight_decay", "amsgrad", "t0_epochs", "eta_min"):
            d.pop(k)
        order = ["name", "description", "arch", "tasks", "finetune", "epochs", "iterations_per_epoch", "batch_size",
                 "crop_seconds", "mixup", "optimizer", "scheduler", "loss_weights", "sed_threshold", "paper"]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        d = dict(data)
        kw: dict[str, Any] = {}
        mixup = d.pop("mixup", {"alpha": 0.1, "from_epoch": 6})
        kw["mixup_alpha"] = None if not mixup else float(mixup.get("alpha", 0.1))
        if mixup:
            kw["mixup_from_epoch"] = int(mixup.get("from_epoch", 6))
        opt = d.pop("optimizer", {}) or {}
        if opt.get("name", "adam") != "adam":
            raise ValueError(f"Recipe {d.get('name')!r}: only the Adam optimizer is supported")
        for k in ("lr", "weight_decay", "amsgrad"):
            if k in opt:
                kw[k] = opt[k]
        sched = d.pop("scheduler", {}) or {}
        for k in ("t0_epochs", "eta_min"):
            if k in sched:
                kw[k] = sched[k]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Recipe {d.get('name')!r}: unknown keys {unknown}")
        return cls(**d, **kw)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` (per-task dicts are merged, e.g. ``batch_size={"asc": 8}``)."""
        for name in ("batch_size", "crop_seconds", "loss_weights"):
            if name in changes and changes[name] is not None:
                changes[name] = {**dict(getattr(self, name)), **dict(changes[name])}
        return dataclasses.replace(self, **{k: v for k, v in changes.items()})

    def stages(self) -> list[tuple[str, tuple[str, ...], str | None]]:
        """``(stage name, tasks, task whose best joint checkpoint initialises it or None)`` in order."""
        first = "joint" if len(self.tasks) > 1 else "single"
        out: list[tuple[str, tuple[str, ...], str | None]] = [(first, self.tasks, None)]
        if self.finetune and len(self.tasks) > 1:
            out += [(f"finetune-{t}", (t,), t) for t in self.tasks]
        return out


def list_recipes() -> list[str]:
    """Names of the bundled recipes (one per row of the paper's Table 2)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.json"))


def load_recipe(name_or_path: str | Path | Recipe) -> Recipe:
    """A bundled recipe by name (see :func:`list_recipes`) or a recipe JSON file.

    Raises:
        ValueError: unknown name or invalid file (the message lists the bundled recipes).
    """
    if isinstance(name_or_path, Recipe):
        return name_or_path
    p = Path(name_or_path)
    if not (p.suffix == ".json" and p.exists()):
        p = RECIPE_DIR / f"{name_or_path}.json"
    if not p.exists():
        raise ValueError(f"Unknown recipe {str(name_or_path)!r}. Bundled recipes: {', '.join(list_recipes())} "
                         "(or give a path to a recipe .json)")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read recipe {p}: {exc}") from exc
    return Recipe.from_dict(data)


# ----------------------------------------------------------------------------------------------------------------
# Losses and the DDP-wrapped joint step
# ----------------------------------------------------------------------------------------------------------------


def _task_loss(task: str, out: Any, y: torch.Tensor) -> torch.Tensor:
    if task == "asc":
        return F.cross_entropy(out.scene_logits.float(), y)
    if task == "tag":
        return F.binary_cross_entropy_with_logits(out.tag_logits.float(), y)
    probs = out.event_probs.float()
    n = min(probs.shape[1], y.shape[1])  # 296 outputs for 300 labels of a 30 s crop
    return F.binary_cross_entropy(probs[:, :n], y[:, :n])


class _JointStep(nn.Module):
    """All task forwards and losses of one iteration in one ``forward`` (one DDP forward, one backward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batches: dict[str, tuple[torch.Tensor, torch.Tensor]],
                mixes: dict[str, tuple[float, torch.Tensor]], autocast: dict[str, Any]) -> dict[str, torch.Tensor]:
        losses = {}
        for task in TASK_ORDER:
            if task not in batches:
                continue
            x, y = batches[task]
            mix = mixes.get(task)
            if mix is not None:
                lam, perm = mix
                x = lam * x + (1.0 - lam) * x[perm]
            with torch.autocast(**autocast):
                out = self.model(x, tasks=(MODEL_TASK[task],))
            with torch.autocast(device_type=autocast["device_type"], enabled=False):
                if mix is None:
                    losses[task] = _task_loss(task, out, y)
                else:
                    losses[task] = lam * _task_loss(task, out, y) + (1.0 - lam) * _task_loss(task, out, y[perm])
        return losses


# ----------------------------------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def _init_distributed(device: str | None) -> _Dist:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return _Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return _Dist(rank=rank, world=world, local_rank=local, owns_group=True)


def _resolve_device(device: str | None, dist: _Dist) -> torch.device:
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but CUDA is not available; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", dist.local_rank if dist.world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def _average_batchnorm_statistics(model: nn.Module, world: int) -> None:
    """Average every batch-norm's running mean and variance over the processes (at the end of each epoch).

    DDP keeps parameters identical but leaves each process's running statistics updated by its own half-batches,
    so the evaluated and saved model would describe rank 0's data only and the ranks would disagree. Averaging them
    (as timm's ``distribute_bn(reduce=True)``) makes every rank hold the same full model before evaluation and
    checkpointing.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                torch.distributed.all_reduce(buf)
                buf.div_(world)


def _autocast_args(precision: str, device: torch.device) -> dict[str, Any]:
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "amp" and device.type != "cuda":
        raise ValueError("precision 'amp' (float16 autocast) needs a CUDA device; use fp32 or bf16 on CPU")
    if precision == "fp32":
        return {"device_type": device.type, "enabled": False}
    return {"device_type": device.type, "dtype": torch.float16 if precision == "amp" else torch.bfloat16,
            "enabled": True}


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------

#: Split names of :mod:`dcasenet_hub.train.datasets` readers.
TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"


def _roots_for(tasks: Sequence[str], roots: Mapping[str, str | Path | None]) -> dict[str, Path]:
    missing = [t for t in tasks if not roots.get(t)]
    if missing:
        hint = {"asc": "--asc-root (TAU Urban Acoustic Scenes 2020 Mobile development folder)",
                "tag": "--tag-root (FSDKaggle2019 folder with train_curated.csv)",
                "sed": "--sed-root (TAU-NIGENS Spatial Sound Events 2020 folder with metadata_dev/)"}
        raise ValueError("This recipe trains " + ", ".join(tasks) + "; also pass "
                         + "; ".join(hint[t] for t in missing))
    return {t: Path(roots[t]) for t in tasks}  # type: ignore[arg-type]


def _prepared_stores(roots: Mapping[str, Path], splits: Sequence[str], *, cache_dir: str | Path | None,
                     workers: int, progress: bool, memory: bool) -> tuple[dict[str, FeatureStore], dict[str, dict]]:
    """Item lists of ``splits`` per task and their (prepared) feature stores."""
    from dcasenet_hub.train.prepare import default_cache_root, prepare_items, task_items

    stores, items = {}, {}
    for task, root in roots.items():
        items[task] = {s: task_items(task, root, s) for s in splits}
        paths = [it.path for s in splits for it in items[task][s]]
        report = prepare_items(task, root, paths, cache_dir=cache_dir or default_cache_root(), workers=workers,
                               progress=progress)
        if report.failed:
            listed = "; ".join(f"{p}: {r}" for p, r in report.failed[:5])
            raise ValueError(f"{len(report.failed)} {task} files could not be prepared ({listed}). "
                             "Fix or remove them and run again.")
        stores[task] = FeatureStore(report.dirs[task], root, memory=memory)
    return stores, items


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


def _groups(ds: EvalClips, batch: int) -> Any:
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
def evaluate_sets(model: nn.Module, eval_sets: Mapping[str, EvalClips], *, device: torch.device | str = "cpu",
                  precision: str = "fp32", sed_threshold: float = 0.3, batch_size: int = 8,
                  progress: bool = False) -> dict[str, float]:
    """The authors' evaluation of ``model`` on prepared evaluation sets (Table 2 units).

    Returns:
        ``asc_acc`` (3-crop accuracy, %), ``tag_lwlrap`` (whole clips, %), ``sed_f1`` (%) and ``sed_er`` (paper
        protocol: 4 channels averaged, threshold ``sed_threshold``, 5 s blocks) for the tasks in ``eval_sets``.
    """
    from tqdm.auto import tqdm

    from dcasenet_hub import metrics

    device = torch.device(device)
    ac = _autocast_args(precision, device)
    was_training = model.training
    model.eval()
    res: dict[str, float] = {}
    try:
        for task, ds in eval_sets.items():
            bar = tqdm(total=len(ds), desc=f"evaluate {task}", leave=False, disable=not progress)
            if task == "asc":
                logits, labels = [], []
                for g in _groups(ds, max(1, batch_size // ASC_EVAL_CROPS)):
                    x = torch.cat([ex[0] for ex in g]).to(device)
                    with torch.autocast(**ac):
                        logits.append(model(x, tasks=("scene",)).scene_logits.float().cpu().numpy())
                    labels += [ex[1] for ex in g]
                    bar.update(len(g))
                res["asc_acc"] = metrics.asc_accuracy(np.concatenate(logits), labels, n_crops=ASC_EVAL_CROPS)
            elif task == "tag":
                scores, truth = [], []
                for g in _groups(ds, batch_size):
                    x = torch.cat([ex[0] for ex in g]).to(device)
                    with torch.autocast(**ac):
                        scores.append(torch.sigmoid(model(x, tasks=("tags",)).tag_logits.float()).cpu().numpy())
                    truth += [ex[1] for ex in g]
                    bar.update(len(g))
                res["tag_lwlrap"] = 100.0 * metrics.lwlrap(np.stack(truth), np.concatenate(scores))
            else:
                probs: dict[str, list[np.ndarray]] = {}
                truths: dict[str, np.ndarray] = {}
                for g in _groups(ds, batch_size):
                    x = torch.cat([ex[0] for ex in g]).to(device)
                    with torch.autocast(**ac):
                        p = model(x, tasks=("events",)).event_probs.float().cpu().numpy()
                    for ex, pk in zip(g, p):
                        probs.setdefault(ex[2], []).append(pk)
                        truths[ex[2]] = ex[1]
                    bar.update(len(g))
                preds, refs = [], []
                for name, chans in probs.items():
                    n = min(min(c.shape[0] for c in chans), truths[name].shape[0])
                    preds.append(np.mean([c[:n] for c in chans], axis=0))
                    refs.append(truths[name][:n])
                s = metrics.sed_scores(preds, refs, protocol="paper", threshold=sed_threshold)
                res["sed_f1"], res["sed_er"] = 100.0 * float(s.f1), float(s.er)
            bar.close()
    finally:
        model.train(was_training)
    return res


def evaluate(model: nn.Module, *, asc_root: str | Path | None = None, tag_root: str | Path | None = None,
             sed_root: str | Path | None = None, cache_dir: str | Path | None = None, device: str | None = None,
             precision: str = "fp32", sed_threshold: float | None = None, workers: int = 0,
             progress: bool = True) -> dict[str, float]:
    """Evaluate ``model`` on the authors' evaluation splits of the given datasets (a Table 2 row).

    The evaluation files are prepared (cached) first if needed.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        asc_root, tag_root, sed_root: Dataset folders; tasks without a root are skipped.
        cache_dir: Feature cache folder.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        precision: ``"fp32"``, ``"amp"`` or ``"bf16"``.
        sed_threshold: Event threshold (default: the model's ``event_threshold``, 0.3).
        workers: Processes for preparing features.
        progress: Show progress bars.

    Returns:
        ``{"asc_acc": %, "tag_lwlrap": %, "sed_f1": %, "sed_er": ...}`` for the given tasks.

    Example:
        >>> from dcasenet_hub import DcaseNet
        >>> from dcasenet_hub.train.trainer import evaluate
        >>> evaluate(DcaseNet.from_pretrained("dcasenet-v3"), asc_root="data/asc")     # doctest: +SKIP
        {'asc_acc': 70.3}
    """
    roots = {t: Path(r) for t, r in (("asc", asc_root), ("tag", tag_root), ("sed", sed_root)) if r}
    if not roots:
        raise ValueError("Give at least one of --asc-root, --tag-root, --sed-root")
    dev = _resolve_device(device, _Dist())
    stores, items = _prepared_stores(roots, [EVAL_SPLIT], cache_dir=cache_dir, workers=workers, progress=progress,
                                     memory=False)
    config: ModelConfig = getattr(model, "config", ModelConfig())
    eval_sets = {t: _eval_set(t, items[t][EVAL_SPLIT], stores[t], config=config) for t in roots}
    model = model.to(dev)
    threshold = config.event_threshold if sed_threshold is None else sed_threshold
    return evaluate_sets(model, eval_sets, device=dev, precision=precision, sed_threshold=threshold,
                         progress=progress)


def _task_labels(task: str, config: ModelConfig) -> tuple[str, ...]:
    return {"asc": config.scene_labels, "tag": config.tag_labels, "sed": config.event_labels}[task]


def _eval_set(task: str, items: Sequence[Any], store: FeatureStore, *, config: ModelConfig,
              asc_crop_s: float = 5.0) -> EvalClips:
    return EvalClips(task, items, store, labels=_task_labels(task, config),
                     asc_crop_frames=crop_frames("asc", asc_crop_s, config=config.frontend),
                     min_frames=config.windows.min_frames, std_floor=config.frontend.std_floor)


def format_row(metrics_: Mapping[str, float]) -> str:
    """A Table 2 style row: ``ASC Acc | TAG lwlrap | SED F1 | SED ER`` (``-`` where not evaluated)."""
    def f(k: str, fmt: str) -> str:
        return format(metrics_[k], fmt) if k in metrics_ and metrics_[k] is not None else "-"

    return (f"{'ASC Acc':>8} {'TAG lwlrap':>10} {'SED F1':>7} {'SED ER':>7}\n"
            f"{f('asc_acc', '8.2f')} {f('tag_lwlrap', '10.2f')} {f('sed_f1', '7.2f')} {f('sed_er', '7.4f')}")


# ----------------------------------------------------------------------------------------------------------------
# Export and checkpoints
# ----------------------------------------------------------------------------------------------------------------


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` onto ``final`` (the old one is removed only after the swap)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(model: nn.Module, directory: str | Path, *, recipe: Recipe, stage: str, tasks: Sequence[str],
                 selected_for: str, epoch: int, metrics_: Mapping[str, float], data_roots: Mapping[str, Path]) -> Path:
    """Save ``model`` in the hub format (config.json + model.safetensors + README.md model card), atomically.

    The config records the recipe, the stage, the epoch, the metrics and the data, and
    ``provenance = "trained by dcasenet-hub, recipe R, data D"``, so ``DcaseNet.from_pretrained(directory)`` works.
    """
    from dcasenet_hub.train.minidata import mini_dataset_marker

    directory = Path(directory)
    sources = {t: _DATA[t] for t in tasks}
    mini = {t: mini_dataset_marker(data_roots[t]) for t in tasks if t in data_roots}
    for t, params in mini.items():  # data made by `data make-mini`: say so, never the real dataset's name
        if params is not None:
            sources[t] = (_DATA[t][0], f"synthetic mini dataset made by `dcasenet-hub data make-mini` (seed "
                          f"{params.get('seed', '?')}) in the layout of {_DATA[t][1]}; not real recordings",
                          _DATA[t][2])
    synthetic = any(v is not None for v in mini.values())
    data = "; ".join(f"{sources[t][1]} ({sources[t][2]})" for t in tasks)
    provenance = (f"trained by dcasenet-hub, recipe {recipe.name} (stage {stage}, best {selected_for} at epoch "
                  f"{epoch + 1}), data {data}")
    values = {}
    for key, card_key in (("asc_acc", "scene_accuracy"), ("tag_lwlrap", "tag_lwlrap"), ("sed_f1", "event_f1"),
                          ("sed_er", "event_error_rate")):
        if key in metrics_ and math.isfinite(float(metrics_[key])):
            values[card_key] = round(float(metrics_[key]), 4)
    extra = {
        "description": (f"Trained with dcasenet-hub's retraining module, recipe `{recipe.name}` "
                        f"({recipe.description}), stage `{stage}`; checkpoint with the best {selected_for} "
                        f"metric, epoch {epoch + 1} of {recipe.epochs}."),
        "recipe": recipe.to_dict(),
        "stage": stage,
        "epoch": epoch + 1,
        "selected_for": selected_for,
        "best_metrics": _finite({k: float(v) for k, v in metrics_.items()}),
        "trained_on": [{"task": sources[t][0], "dataset": sources[t][1], "split": sources[t][2],
                        "folder": Path(data_roots[t]).name} for t in tasks if t in data_roots],
        "metrics": {"values": values, "reported_in": f"this training run ({stage}, epoch {epoch + 1})",
                    "note": "Measured with the authors' metrics on the evaluation splits that also selected the "
                            "checkpoint (as in the paper), so they are optimistic."},
        "name": directory.name,
    }
    if synthetic:
        extra["synthetic_data"] = True
        extra["metrics"]["note"] = ("Measured on synthetic mini data (`dcasenet-hub data make-mini`): they say the "
                                    "training ran, nothing about real recordings.")
    raw = model
    old_config = raw.config
    raw.config = old_config.replace(trained_tasks=tuple(MODEL_TASK[t] for t in tasks), provenance=provenance,
                                    model_id=None, extra=extra)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        raw.save_pretrained(tmp)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        raw.config = old_config
    return directory


def _finite(x: Any) -> Any:
    """``x`` with NaN/inf floats replaced by None (valid JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _rng_state(device: torch.device) -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    st["numpy"] = (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    name, keys, *rest = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    from dcasenet_hub._io import atomic_write

    atomic_write(path, lambda p: torch.save(state, p))


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise ValueError(f"Cannot read training state {path} ({exc}); it is damaged - remove it to restart the "
                         "stage from scratch") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a dcasenet-hub training state")
    return state


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        run_dir: The run folder.
        best: Final exported model folder per task (``RUN/best-asc`` ...).
        best_metrics: Metrics of those models at their selection epoch.
        history: Per stage, the per-epoch records of the metrics log.
    """

    run_dir: Path
    best: dict[str, Path] = field(default_factory=dict)
    best_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _improved(task: str, m: Mapping[str, float], best: Mapping[str, float]) -> bool:
    if task == "asc":
        return m["asc_acc"] >= best.get("asc_acc", -math.inf)
    if task == "tag":
        return m["tag_lwlrap"] >= best.get("tag_lwlrap", -math.inf)
    return m["sed_er"] <= best.get("sed_er", math.inf) or m["sed_f1"] >= best.get("sed_f1", -math.inf)


def train(recipe: str | Path | Recipe, *, out_dir: str | Path, asc_root: str | Path | None = None,
          tag_root: str | Path | None = None, sed_root: str | Path | None = None,
          cache_dir: str | Path | None = None, device: str | None = None, workers: int = 0,
          precision: str = "fp32", resume: bool = False, seed: int = 0, progress: bool = True,
          overrides: Mapping[str, Any] | None = None, stages: Sequence[str] | None = None,
          eval_batch_size: int = 8, in_memory: bool = False,
          on_epoch_end: Callable[[str, int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a recipe end to end (joint or single stage, then the fine-tuning stages).

    Args:
        recipe: Recipe name (:func:`list_recipes`), JSON path or :class:`Recipe`.
        out_dir: Run folder.
        asc_root, tag_root, sed_root: Dataset folders (needed for the recipe's tasks only).
        cache_dir: Feature cache folder (prepared automatically; default ``~/.cache/dcasenet_hub/features``).
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"`` ... (default CUDA when available; with torchrun the local rank).
        workers: DataLoader workers per task (and processes for preparing features).
        precision: ``"fp32"``, ``"amp"`` (float16 autocast + gradient scaling, CUDA) or ``"bf16"``.
        resume: Continue the run in ``out_dir`` from its last completed epoch (exactly: same losses as without the
            interruption on the same seed).
        seed: Seed of initialisation, data order, crops, mixup and dropout.
        progress: Progress bars.
        overrides: Recipe changes, e.g. ``{"epochs": 2, "iterations_per_epoch": 10, "batch_size": {"asc": 4}}``.
        stages: Run only these stages (default all of :meth:`Recipe.stages`).
        eval_batch_size: Examples per evaluation batch.
        in_memory: Keep the cached features in memory (small data).
        on_epoch_end: Called as ``on_epoch_end(stage, epoch, record)`` after each epoch's checkpoint is written.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainingDivergedError: a loss became NaN/inf (the message names the epoch, iteration and last checkpoint).
        ValueError: bad recipe/override, missing dataset root, or ``out_dir`` holds another run.
    """
    base = load_recipe(recipe)
    rec = base.replace(**dict(overrides or {})) if overrides else base
    rec = Recipe.from_dict(rec.to_dict())  # validate the overridden recipe
    out = Path(out_dir)
    roots = _roots_for(rec.tasks, {"asc": asc_root, "tag": tag_root, "sed": sed_root})
    dist = _init_distributed(device)
    try:
        dev = _resolve_device(device, dist)
        _autocast_args(precision, dev)
        for t in rec.tasks:
            if rec.batch_size[t] % dist.world:
                raise ValueError(f"The {t} batch size {rec.batch_size[t]} is global and must be divisible by the "
                                 f"{dist.world} processes; override it (--batch-size {t}=N)")
        run_file = out / "recipe.json"
        existed = run_file.exists()
        dist.barrier()  # every process has looked before rank 0 writes the file (else rank 1 sees rank 0's run)
        if existed:
            if not resume:
                raise ValueError(f"{out} already holds a training run; pass --resume to continue it or choose "
                                 "another output folder")
            have = json.loads(run_file.read_text())
            if have != json.loads(json.dumps(rec.to_dict())):
                raise ValueError(f"{out} was started with another recipe or other overrides ({run_file}); resume "
                                 "with the same options or choose another output folder")
        elif dist.main:
            from dcasenet_hub._io import atomic_write_text

            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_file, json.dumps(rec.to_dict(), indent=2) + "\n")
        dist.barrier()
        if dist.main:
            stores, items = _prepared_stores(roots, [TRAIN_SPLIT, EVAL_SPLIT], cache_dir=cache_dir, workers=workers,
                                             progress=progress, memory=in_memory)
        dist.barrier()
        if not dist.main:
            stores, items = _prepared_stores(roots, [TRAIN_SPLIT, EVAL_SPLIT], cache_dir=cache_dir, workers=0,
                                             progress=False, memory=in_memory)
        result = TrainResult(run_dir=out)
        wanted = list(stages) if stages else [s[0] for s in rec.stages()]
        unknown = sorted(set(wanted) - {s[0] for s in rec.stages()})
        if unknown:
            raise ValueError(f"Unknown stage(s) {unknown}; recipe {rec.name} has {[s[0] for s in rec.stages()]}")
        for stage, tasks, init_task in rec.stages():
            if stage not in wanted:
                continue
            result.history[stage] = _run_stage(
                rec, stage, tasks, init_task, out=out, roots=roots, stores=stores, items=items, dev=dev, dist=dist,
                workers=workers, precision=precision, resume=resume, seed=seed, progress=progress,
                eval_batch_size=eval_batch_size, on_epoch_end=on_epoch_end)
        if dist.main:
            _collect_final(rec, out, result)
        dist.barrier()
        return result
    finally:
        if dist.owns_group:
            torch.distributed.destroy_process_group()


def _collect_final(rec: Recipe, out: Path, result: TrainResult) -> None:
    """Copy each task's final model to ``RUN/best-<task>`` (fine-tuned one when the recipe fine-tunes)."""
    stages = {s[0]: s for s in rec.stages()}
    first = rec.stages()[0][0]
    for t in rec.tasks:
        stage = f"finetune-{t}" if f"finetune-{t}" in stages else first
        src = out / stage / f"best-{t}"
        if not src.exists():
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".best-{t}.", dir=out))
        shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        _replace_dir(tmp, out / f"best-{t}")
        result.best[t] = out / f"best-{t}"
        cfg = json.loads((src / "config.json").read_text())
        result.best_metrics[t] = (cfg.get("extra") or {}).get("best_metrics", {})


def _run_stage(rec: Recipe, stage: str, tasks: tuple[str, ...], init_task: str | None, *, out: Path,
               roots: Mapping[str, Path], stores: Mapping[str, FeatureStore], items: Mapping[str, Any],
               dev: torch.device, dist: _Dist, workers: int, precision: str, resume: bool, seed: int, progress: bool,
               eval_batch_size: int, on_epoch_end: Callable[..., None] | None) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from dcasenet_hub._io import atomic_write_text
    from dcasenet_hub.inference.model import build_model

    sdir = out / stage
    state_path = sdir / "last.pt"
    done_path = sdir / "done.json"
    if done_path.exists() and resume:
        logger.info("stage %s already finished; skipping", stage)
        return _load_state(state_path)["history"] if state_path.exists() else []
    if state_path.exists() and not resume:
        raise ValueError(f"{sdir} holds a training state; pass --resume to continue or choose another folder")

    # -- model, optimiser, schedule ----------------------------------------------------------------------------
    model = build_model(rec.arch, seed=seed)
    if init_task is not None:
        from safetensors.torch import load_file

        first = rec.stages()[0][0]
        src = out / first / f"best-{init_task}" / "model.safetensors"
        if not src.exists():
            raise ValueError(f"Fine-tuning {init_task} starts from {src}, which does not exist; run the {first} "
                             "stage first")
        model.load_state_dict_strict(load_file(str(src)), source=str(src))
    model.to(dev)
    step = _JointStep(model)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step = DDP(step, device_ids=[dev.index] if dev.type == "cuda" else None,
                   find_unused_parameters=set(tasks) != set(TASKS))
    optimizer = torch.optim.Adam(model.parameters(), lr=rec.lr, weight_decay=rec.weight_decay, amsgrad=rec.amsgrad)
    iters = rec.iterations_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=rec.t0_epochs * iters,
                                                                     eta_min=rec.eta_min)
    scaler = torch.amp.GradScaler("cuda", enabled=(precision == "amp"))
    ac = _autocast_args(precision, dev)

    start_epoch, history, best = 0, [], {t: {} for t in tasks}
    torch.manual_seed(_seed_of(seed, stage, "torch", dist.rank))
    if state_path.exists():
        st = _load_state(state_path)
        if st["stage"] != stage:
            raise ValueError(f"{state_path} belongs to stage {st['stage']}, not {stage}")
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        start_epoch, history, best = st["epoch"], st["history"], st["best"]
        rngs = st["rng"]
        _set_rng_state(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0], dev)
        logger.info("resuming %s at epoch %d", stage, start_epoch + 1)
    if start_epoch >= rec.epochs:
        return history

    # -- data ------------------------------------------------------------------------------------------------------
    fe = model.config.frontend
    loaders = {}
    for t in tasks:
        ds = TrainCrops(t, items[t][TRAIN_SPLIT], stores[t], crop_frames=crop_frames(t, rec.crop_seconds[t], config=fe),
                        labels=TASK_LABELS[t], std_floor=fe.std_floor)
        stream = BatchStream(len(ds), int(rec.batch_size[t]), seed, t, stage)
        sampler = StreamSampler(stream, start=start_epoch * iters, rank=dist.rank, world=dist.world)
        loaders[t] = iter(torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, num_workers=workers, pin_memory=dev.type == "cuda",
            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(_seed_of(seed, stage, t))))
    eval_sets = {t: _eval_set(t, items[t][EVAL_SPLIT], stores[t], config=model.config,
                              asc_crop_s=rec.crop_seconds.get("asc", 5.0)) for t in tasks}
    local_bs = {t: int(rec.batch_size[t]) // dist.world for t in tasks}

    # -- epochs ----------------------------------------------------------------------------------------------------
    for epoch in range(start_epoch, rec.epochs):
        t0 = time.time()
        model.train()
        mixup = rec.mixup_alpha is not None and rec.mixup_alpha > 0 and epoch >= rec.mixup_from_epoch
        mix_rng = np.random.default_rng(_seed_of(seed, stage, "mixup", epoch))
        sums = {t: 0.0 for t in tasks}
        bar = tqdm(total=iters, desc=f"{rec.name} {stage} {epoch + 1}/{rec.epochs}", leave=False,
                   disable=not (progress and dist.main), dynamic_ncols=True)
        for it in range(iters):
            batches, mixes = {}, {}
            for t in TASK_ORDER:
                if t not in tasks:
                    continue
                x, y = next(loaders[t])
                batches[t] = (x.to(dev, non_blocking=True), y.to(dev, non_blocking=True))
                if mixup:
                    lam = float(mix_rng.beta(rec.mixup_alpha, rec.mixup_alpha))
                    perm = torch.from_numpy(mix_rng.permutation(local_bs[t])).to(dev)
                    mixes[t] = (lam, perm)
            losses = step(batches, mixes, ac)
            total = sum(float(rec.loss_weights[t]) * losses[t] for t in tasks)
            values = torch.stack([losses[t].detach().float() for t in tasks])
            if dist.world > 1:
                torch.distributed.all_reduce(values)
                values /= dist.world
            vals = values.cpu().tolist()
            if not all(math.isfinite(v) for v in vals):
                bar.close()
                parts = ", ".join(f"{t} {v:.4g}" for t, v in zip(tasks, vals))
                last = f"{state_path} (end of epoch {start_epoch if not history else history[-1]['epoch']})" \
                    if state_path.exists() else "none yet"
                raise TrainingDivergedError(
                    f"Training diverged: the loss is not finite at {stage} epoch {epoch + 1}, iteration {it + 1} "
                    f"({parts}); stopped before updating the weights. Last checkpoint: {last}. Check the data "
                    "(NaN/inf features), lower the learning rate (--lr) or use --precision fp32, then --resume.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for t, v in zip(tasks, vals):
                sums[t] += v
            bar.update(1)
            bar.set_postfix({t: f"{sums[t] / (it + 1):.3f}" for t in tasks}, refresh=False)
        bar.close()
        if dist.world > 1:
            _average_batchnorm_statistics(model, dist.world)
        train_time = time.time() - t0

        record: dict[str, Any] = {"stage": stage, "epoch": epoch + 1, "iterations": (epoch + 1) * iters,
                                  "lr": optimizer.param_groups[0]["lr"], "mixup": mixup,
                                  "loss": {t: sums[t] / iters for t in tasks},
                                  "loss_total": sum(float(rec.loss_weights[t]) * sums[t] / iters for t in tasks),
                                  "train_s": round(train_time, 3)}
        if dist.main:
            m = evaluate_sets(model, eval_sets, device=dev, precision=precision, sed_threshold=rec.sed_threshold,
                              batch_size=eval_batch_size)
            record.update(m)
            record["improved"] = []
            for t in tasks:
                if _improved(t, m, best[t]):
                    record["improved"].append(t)
                    for k in METRICS:
                        if k.startswith(t) and k in m:
                            if t == "sed":
                                best[t][k] = min(best[t].get(k, math.inf), m[k]) if k == "sed_er" else \
                                    max(best[t].get(k, -math.inf), m[k])
                            else:
                                best[t][k] = m[k]
                    export_model(model, sdir / f"best-{t}", recipe=rec, stage=stage, tasks=tasks, selected_for=t,
                                 epoch=epoch, metrics_=m, data_roots=roots)
            record["eval_s"] = round(time.time() - t0 - train_time, 3)
            logger.info("%s epoch %d: %s", stage, epoch + 1,
                        ", ".join(f"{k} {record[k]:.4g}" for k in METRICS if k in record))
        history.append(record)
        rngs = [_rng_state(dev)]
        if dist.world > 1:
            gathered: list[Any] = [None] * dist.world
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if dist.main:
            _save_state(state_path, {
                "format": STATE_FORMAT, "recipe": rec.to_dict(), "stage": stage, "epoch": epoch + 1, "seed": seed,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": rngs, "best": best, "history": history})
            atomic_write_text(sdir / "metrics.jsonl", "".join(json.dumps(_finite(r)) + "\n" for r in history))
        dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(stage, epoch, record)
    if dist.main:
        atomic_write_text(done_path, json.dumps({"stage": stage, "epochs": rec.epochs, "best": best}, indent=2) + "\n")
    dist.barrier()
    return history
