"""The paper's joint trainer (docs/facts.md §5.2 and §6): :func:`train` runs every stage of a recipe.

One iteration takes one batch of every active task, runs each through the network with only that task's head (so
batch-norm statistics are per task batch, as in the authors' code), sums the losses and makes one optimiser step.
After every epoch the model is evaluated with the authors' metrics and the best checkpoint of each metric exported;
recipes with several tasks then fine-tune each task alone from its best joint checkpoint. Under torchrun the recipe's
batch sizes are global (each of N processes loads ``batch / N``) and rank 0 evaluates and writes the checkpoints.
Hyper-parameters, run folder layout and resume: docs/training.md, "What one iteration does" and "Running a training".

Example:
    >>> from dcasenet_hub.train import train
    >>> res = train("v3-asc", out_dir="runs/try", asc_root="mini/asc",
    ...             overrides={"epochs": 1, "iterations_per_epoch": 5, "batch_size": {"scene": 4}})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dcasenet_hub._io import atomic_write_text, json_text
from dcasenet_hub._progress import progress_bar, show_progress
from dcasenet_hub.errors import TrainingDivergedError
from dcasenet_hub.hub.folder import copy_folder
from dcasenet_hub.inference.options import options_error
from dcasenet_hub.models.losses import draw_mixup, mix_inputs, mixed_loss
from dcasenet_hub.train.distributed import (
    STATE_FORMAT,
    average_batchnorm_statistics,
    Ranks,
    init_distributed,
    load_state,
    training_device,
    rng_state,
    save_state,
    set_rng_state,
    autocast_args,
    deprecated_precision,
)
from dcasenet_hub.train.evaluation import (
    EVAL_SPLIT,
    TRAIN_SPLIT,
    eval_set,
    prepared_stores,
    checked_roots,
    evaluate_sets,
)
from dcasenet_hub.train.export import export_model
from dcasenet_hub.train.options import TrainOptions
from dcasenet_hub.train.prepare import data_sha256
from dcasenet_hub.train.recipes import Recipe, load_recipe
from dcasenet_hub.train.tasks import METRICS, MODEL_TASK, TASK_LABELS, TASK_ORDER, TASKS
from dcasenet_hub.train.torch_data import (
    BatchStream,
    FeatureStore,
    StreamSampler,
    TrainCrops,
    seed_of,
    crop_frames,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Losses and the DDP-wrapped joint step
# ----------------------------------------------------------------------------------------------------------------


class JointStep(nn.Module):
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
                x = mix_inputs(x, mix)
            with torch.autocast(**autocast):
                out = self.model(x, tasks=(MODEL_TASK[task],))
            with torch.autocast(device_type=autocast["device_type"], enabled=False):
                losses[task] = mixed_loss(MODEL_TASK[task], out, y, mix)
        return losses



# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        run_dir: The run folder.
        best: Final exported model folder per task, keyed ``"scene"``, ``"tags"``, ``"events"`` (the folders are
            ``RUN/best-asc``, ``best-tag``, ``best-sed``: file names keep the trainer's keys).
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
          overrides: Mapping[str, Any] | None = None, options: TrainOptions | None = None,
          on_epoch_end: Callable[[str, int, dict[str, Any]], None] | None = None,
          device: str | None = TrainOptions.unset("device"), dtype: str = TrainOptions.unset("dtype"),
          workers: int = TrainOptions.unset("workers"), seed: int = TrainOptions.unset("seed"),
          resume: bool = TrainOptions.unset("resume"), stages: Sequence[str] | None = TrainOptions.unset("stages"),
          cache_dir: str | Path | None = TrainOptions.unset("cache_dir"),
          in_memory: bool = TrainOptions.unset("in_memory"),
          eval_batch_size: int = TrainOptions.unset("eval_batch_size"), progress: bool = TrainOptions.unset("progress"),
          precision: str | None = None) -> TrainResult:
    """Train a recipe end to end (joint or single stage, then the fine-tuning stages).

    Args:
        recipe: Recipe name (:func:`list_recipes`), JSON path or :class:`Recipe`: *what* is trained.
        out_dir: Run folder.
        asc_root, tag_root, sed_root: Dataset folders (needed for the recipe's tasks only).
        overrides: Recipe changes, e.g. ``{"epochs": 2, "iterations_per_epoch": 10, "batch_size": {"scene": 4}}``
            (tasks as ``scene``/``tags``/``events`` or ``asc``/``tag``/``sed``).
        options: A :class:`TrainOptions`: *how* this run goes (default: all defaults).
        on_epoch_end: Called as ``on_epoch_end(stage, epoch, record)`` after each epoch's checkpoint is written.
        device, dtype, workers, seed, resume, stages, cache_dir, in_memory, eval_batch_size, progress: The
            :class:`TrainOptions` field of that name, over ``options``.
        precision: Deprecated spelling of ``dtype`` (``"amp"`` is fp16); warns.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainingDivergedError: a loss became NaN/inf (the message names the epoch, iteration and last checkpoint).
        OptionsError: a bad option value.
        ValueError: bad recipe/override, missing dataset root, or ``out_dir`` holds another run.

    Example:
        >>> train("v3-asc", out_dir="runs/try", asc_root="mini/asc", seed=1,
        ...       overrides={"epochs": 1, "iterations_per_epoch": 5})  # doctest: +SKIP
    """
    given = TrainOptions.given(locals())
    if precision is not None:
        given["dtype"] = deprecated_precision(given.get("dtype", "fp32"), precision, "train")
    opts = TrainOptions.merge(options, given, caller="train")
    opts = opts.replace(progress=show_progress(opts.progress))  # None: bars when stderr is a terminal
    base = load_recipe(recipe)
    rec = base.replace(**dict(overrides or {})) if overrides else base  # per-task keys: scene/tags/events or asc/...
    rec = Recipe.from_dict(rec.to_dict())  # validate the overridden recipe
    out = Path(out_dir)
    roots = checked_roots(rec.tasks, {"asc": asc_root, "tag": tag_root, "sed": sed_root})
    known_stages = [s[0] for s in rec.stages()]
    unknown = sorted(set(opts.stages or ()) - set(known_stages))
    if unknown:
        raise ValueError(f"Unknown stage(s) {unknown}; recipe {rec.name} has {known_stages}")
    dist = init_distributed(opts.device)
    try:
        dev = training_device(opts.device, dist)
        autocast_args(opts.dtype, dev)  # refuse fp16 off CUDA before any work
        for t in rec.tasks:
            if rec.batch_size[t] % dist.world:
                raise ValueError(f"The {t} batch size {rec.batch_size[t]} is global and must be divisible by the "
                                 f"{dist.world} processes; override it (--batch-size {t}=N)")
        created = _claim_run_folder(out, rec, dist, resume=opts.resume)
        try:
            stores, items = _prepared_data(roots, opts, dist)
            _check_run_data(out, {t: data_sha256(t, roots[t], stores[t].cache_dir, items[t]) for t in roots}, dist)
            run = _Run(rec=rec, out=out, roots=roots, stores=stores, items=items, dev=dev, dist=dist,
                       options=opts, on_epoch_end=on_epoch_end)
            result = TrainResult(run_dir=out)
            for stage, tasks, init_task in rec.stages():
                if opts.stages is None or stage in opts.stages:
                    result.history[stage] = _Stage(run, stage, tasks, init_task).run()
        except BaseException:
            if created and dist.main:
                _release_run_folder(out)
            raise
        if dist.main:
            _collect_final(rec, out, result)
        dist.barrier()
        return result
    finally:
        if dist.owns_group:
            torch.distributed.destroy_process_group()


def _claim_run_folder(out: Path, rec: Recipe, dist: Ranks, *, resume: bool) -> bool:
    """Write ``RUN/recipe.json`` for a new run; for an existing one, insist on ``resume`` and the same recipe.

    Returns:
        Whether this call started the run (wrote ``recipe.json``).
    """
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
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_file, json.dumps(rec.to_dict(), indent=2) + "\n")
    dist.barrier()
    return not existed


def _check_run_data(out: Path, data: dict[str, str], dist: Ranks) -> None:
    """Record the data a run trains on (``RUN/data.json``: :func:`~dcasenet_hub.train.prepare.data_sha256` per
    task), and refuse to continue a run on other data."""
    path = out / "data.json"
    have = json.loads(path.read_text()) if path.exists() else None
    dist.barrier()  # every process has read the file before rank 0 writes it
    if have is not None:
        differ = [t for t in data if have.get(t) not in (None, data[t])]
        if differ:
            raise ValueError(f"{out} was trained on other {' and '.join(differ)} data (its files, labels or audio "
                             f"differ from those recorded in {path}); resume with the data it started on, or choose "
                             "another output folder")
    if dist.main and have != data:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    dist.barrier()


def _release_run_folder(out: Path) -> None:
    """Undo :func:`_claim_run_folder` for a run that stopped before writing anything else (a missing dataset, a bad
    value found late), so that the corrected command can start it again; a run with checkpoints is kept."""
    with contextlib.suppress(OSError):
        if {p.name for p in out.iterdir()} == {"recipe.json"}:
            (out / "recipe.json").unlink()
            out.rmdir()


def _prepared_data(roots: Mapping[str, Path], opts: TrainOptions, dist: Ranks) -> tuple[Any, Any]:
    """The feature stores and item lists of the train and evaluation splits (rank 0 prepares, the others read)."""
    kw = dict(cache_dir=opts.cache_dir, memory=opts.in_memory)
    if dist.main:
        stores, items = prepared_stores(roots, [TRAIN_SPLIT, EVAL_SPLIT], workers=opts.workers,
                                         progress=opts.progress, **kw)
    dist.barrier()
    if not dist.main:
        stores, items = prepared_stores(roots, [TRAIN_SPLIT, EVAL_SPLIT], workers=0, progress=False, **kw)
    return stores, items


def _collect_final(rec: Recipe, out: Path, result: TrainResult) -> None:
    """Copy each task's final model to ``RUN/best-<task>`` (fine-tuned one when the recipe fine-tunes)."""
    stages = {s[0]: s for s in rec.stages()}
    first = rec.stages()[0][0]
    for t in rec.tasks:
        stage = f"finetune-{t}" if f"finetune-{t}" in stages else first
        src = out / stage / f"best-{t}"
        if not src.exists():
            continue
        copy_folder(src, out / f"best-{t}")  # one unit: a kill leaves the previous copy or the new one
        result.best[MODEL_TASK[t]] = out / f"best-{t}"  # the API's task names; the folders keep the file keys
        cfg = json.loads((src / "config.json").read_text())
        result.best_metrics[MODEL_TASK[t]] = (cfg.get("extra") or {}).get("best_metrics", {})


@dataclass
class _Run:
    """What every stage of one :func:`train` call shares."""

    rec: Recipe
    out: Path
    roots: Mapping[str, Path]
    stores: Mapping[str, FeatureStore]
    items: Mapping[str, Any]
    dev: torch.device
    dist: Ranks
    options: TrainOptions
    on_epoch_end: Callable[..., None] | None


class _Stage:
    """One stage of a recipe (``joint``, ``single`` or ``finetune-<task>``): build, restore, then per epoch train,
    evaluate and export the best, and checkpoint. ``run()`` reads as those steps."""

    def __init__(self, run: _Run, stage: str, tasks: tuple[str, ...], init_task: str | None) -> None:
        self.run_, self.rec, self.stage, self.tasks, self.init_task = run, run.rec, stage, tasks, init_task
        self.dir = run.out / stage
        self.state_path = self.dir / "last.pt"
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, dict[str, float]] = {t: {} for t in tasks}
        self.start_epoch = 0

    def run(self) -> list[dict[str, Any]]:
        """Train the stage's remaining epochs; its per-epoch records."""
        opts = self.run_.options
        if (self.dir / "done.json").exists() and opts.resume:
            logger.info("stage %s already finished; skipping", self.stage)
            return load_state(self.state_path)["history"] if self.state_path.exists() else []
        if self.state_path.exists() and not opts.resume:
            raise ValueError(f"{self.dir} holds a training state; pass --resume to continue or choose another "
                             "folder")
        self._build()
        self._restore()
        if self.start_epoch >= self.rec.epochs:
            return self.history
        self._open_data()
        for epoch in range(self.start_epoch, self.rec.epochs):
            record = self._train_epoch(epoch)
            if self.run_.dist.main:
                self._evaluate(epoch, record)
            self.history.append(record)
            self._checkpoint(epoch)
            if self.run_.on_epoch_end is not None:
                self.run_.on_epoch_end(self.stage, epoch, record)
        if self.run_.dist.main:
            atomic_write_text(self.dir / "done.json", json.dumps(
                {"stage": self.stage, "epochs": self.rec.epochs, "best": self.best}, indent=2) + "\n")
        self.run_.dist.barrier()
        return self.history

    # -- steps -------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        """Model (from the joint stage's best for a fine-tuning stage), optimiser, schedule, autocast, scaler."""
        from dcasenet_hub.inference.model import build_model

        rec, run = self.rec, self.run_
        model = build_model(rec.arch, seed=run.options.seed)
        if self.init_task is not None:
            from safetensors.torch import load_file

            first = rec.stages()[0][0]
            src = run.out / first / f"best-{self.init_task}" / "model.safetensors"
            if not src.exists():
                raise ValueError(f"Fine-tuning {self.init_task} starts from {src}, which does not exist; run the "
                                 f"{first} stage first")
            model.load_state_dict_strict(load_file(str(src)), source=str(src))
        model.to(run.dev)
        step: nn.Module = JointStep(model)
        if run.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            step = DDP(step, device_ids=[run.dev.index] if run.dev.type == "cuda" else None,
                       find_unused_parameters=set(self.tasks) != set(TASKS))
        self.model, self.step = model, step
        self.optimizer = torch.optim.Adam(model.parameters(), lr=rec.lr, weight_decay=rec.weight_decay,
                                          amsgrad=rec.amsgrad)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=rec.t0_epochs * rec.iterations_per_epoch, eta_min=rec.eta_min)
        self.autocast = autocast_args(run.options.dtype, run.dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast.get("dtype") == torch.float16)

    def _restore(self) -> None:
        """Seed this stage, then continue from ``last.pt`` when there is one (weights, optimiser, schedule, RNGs)."""
        run = self.run_
        torch.manual_seed(seed_of(run.options.seed, self.stage, "torch", run.dist.rank))
        if not self.state_path.exists():
            return
        st = load_state(self.state_path)
        if st["stage"] != self.stage:
            raise ValueError(f"{self.state_path} belongs to stage {st['stage']}, not {self.stage}")
        if st.get("seed", run.options.seed) != run.options.seed:  # the rest of the run would follow other draws
            raise options_error("seed", run.options.seed, f"the run in {run.out} was started with seed "
                                f"{st['seed']}, which its data order, crops and mixup follow: resume with --seed "
                                f"{st['seed']}, or start a new run in another folder")
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.start_epoch, self.history, self.best = st["epoch"], st["history"], st["best"]
        rngs = st["rng"]
        set_rng_state(rngs[run.dist.rank] if run.dist.rank < len(rngs) else rngs[0], run.dev)
        logger.info("resuming %s at epoch %d", self.stage, self.start_epoch + 1)

    def _open_data(self) -> None:
        """One endless loader per task, positioned at the start epoch, and the evaluation sets."""
        rec, run, seed = self.rec, self.run_, self.run_.options.seed
        fe = self.model.config.frontend
        workers = run.options.workers
        self.loaders = {}
        for t in self.tasks:
            ds = TrainCrops(t, run.items[t][TRAIN_SPLIT], run.stores[t],
                            crop_frames=crop_frames(t, rec.crop_seconds[t], config=fe), labels=TASK_LABELS[t],
                            std_floor=fe.std_floor)
            stream = BatchStream(len(ds), int(rec.batch_size[t]), seed, t, self.stage)
            sampler = StreamSampler(stream, start=self.start_epoch * rec.iterations_per_epoch, rank=run.dist.rank,
                                    world=run.dist.world)
            self.loaders[t] = iter(torch.utils.data.DataLoader(
                ds, batch_sampler=sampler, num_workers=workers, pin_memory=run.dev.type == "cuda",
                persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed_of(seed, self.stage, t))))
        # scene crops as long as the training crops, half of that apart: the authors' three 5 s crops of a 10 s clip
        self.eval_sets = {t: eval_set(t, run.items[t][EVAL_SPLIT], run.stores[t], config=self.model.config,
                                      scene_window_s=rec.crop_seconds.get("asc", 5.0)) for t in self.tasks}

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        """``iterations_per_epoch`` joint steps; the epoch's record (losses, learning rate, mixup, time)."""
        rec, run, tasks = self.rec, self.run_, self.tasks
        iters, dev, dist = rec.iterations_per_epoch, run.dev, run.dist
        local_bs = {t: int(rec.batch_size[t]) // dist.world for t in tasks}
        t0 = time.time()
        self.model.train()
        mixup = rec.mixup_alpha is not None and rec.mixup_alpha > 0 and epoch >= rec.mixup_from_epoch
        mix_rng = np.random.default_rng(seed_of(run.options.seed, self.stage, "mixup", epoch))
        sums = {t: 0.0 for t in tasks}
        bar = progress_bar(enabled=run.options.progress and dist.main, total=iters,
                           desc=f"{rec.name} {self.stage} {epoch + 1}/{rec.epochs}", dynamic_ncols=True)
        for it in range(iters):
            batches, mixes = {}, {}
            for t in TASK_ORDER:
                if t not in tasks:
                    continue
                x, y = next(self.loaders[t])
                batches[t] = (x.to(dev, non_blocking=True), y.to(dev, non_blocking=True))
                if mixup:
                    mixes[t] = draw_mixup(mix_rng, rec.mixup_alpha, local_bs[t], dev)
            losses = self.step(batches, mixes, self.autocast)
            total = sum(float(rec.loss_weights[t]) * losses[t] for t in tasks)
            values = torch.stack([losses[t].detach().float() for t in tasks])
            if dist.world > 1:
                torch.distributed.all_reduce(values)
                values /= dist.world
            vals = values.cpu().tolist()
            if not all(math.isfinite(v) for v in vals):
                bar.close()
                raise self._diverged(epoch, it, vals)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            for t, v in zip(tasks, vals):
                sums[t] += v
            bar.update(1)
            bar.set_postfix({t: f"{sums[t] / (it + 1):.3f}" for t in tasks}, refresh=False)
        bar.close()
        if dist.world > 1:
            average_batchnorm_statistics(self.model, dist.world)
        self._t0 = t0
        return {"stage": self.stage, "epoch": epoch + 1, "iterations": (epoch + 1) * iters,
                "lr": self.optimizer.param_groups[0]["lr"], "mixup": mixup,
                "loss": {t: sums[t] / iters for t in tasks},
                "loss_total": sum(float(rec.loss_weights[t]) * sums[t] / iters for t in tasks),
                "train_s": round(time.time() - t0, 3)}

    def _diverged(self, epoch: int, it: int, vals: list[float]) -> TrainingDivergedError:
        parts = ", ".join(f"{t} {v:.4g}" for t, v in zip(self.tasks, vals))
        last = (f"{self.state_path} (end of epoch {self.start_epoch if not self.history else self.history[-1]['epoch']})"
                if self.state_path.exists() else "none yet")
        return TrainingDivergedError(
            f"Training diverged: the loss is not finite at {self.stage} epoch {epoch + 1}, iteration {it + 1} "
            f"({parts}); stopped before updating the weights. Last checkpoint: {last}. Check the data "
            "(NaN/inf features), lower the learning rate (--lr) or use --dtype fp32, then --resume.")

    def _evaluate(self, epoch: int, record: dict[str, Any]) -> None:
        """The authors' metrics on the evaluation sets (rank 0); export each task's model when it improved."""
        run, opts = self.run_, self.run_.options
        m = evaluate_sets(self.model, self.eval_sets, device=run.dev, dtype=opts.dtype,
                          sed_threshold=self.rec.sed_threshold, batch_size=opts.eval_batch_size)
        record.update(m)
        record["improved"] = []
        for t in self.tasks:
            if not _improved(t, m, self.best[t]):
                continue
            record["improved"].append(t)
            best = self.best[t]
            for k in METRICS:
                if k.startswith(t) and k in m:
                    if t != "sed":
                        best[k] = m[k]
                    elif k == "sed_er":
                        best[k] = min(best.get(k, math.inf), m[k])
                    else:
                        best[k] = max(best.get(k, -math.inf), m[k])
            export_model(self.model, self.dir / f"best-{t}", recipe=self.rec, stage=self.stage, tasks=self.tasks,
                         selected_for=t, epoch=epoch, metrics_=m, data_roots=run.roots)
        record["eval_s"] = round(time.time() - self._t0 - record["train_s"], 3)
        logger.info("%s epoch %d: %s", self.stage, epoch + 1,
                    ", ".join(f"{k} {record[k]:.4g}" for k in METRICS if k in record))

    def _checkpoint(self, epoch: int) -> None:
        """``last.pt`` (everything resuming needs, every rank's RNG state) and ``metrics.jsonl``, on rank 0."""
        run, dist = self.run_, self.run_.dist
        rngs = [rng_state(run.dev)]
        if dist.world > 1:
            gathered: list[Any] = [None] * dist.world
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if dist.main:
            save_state(self.state_path, {
                "format": STATE_FORMAT, "recipe": self.rec.to_dict(), "stage": self.stage, "epoch": epoch + 1,
                "seed": run.options.seed, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "rng": rngs, "best": self.best, "history": self.history})
            atomic_write_text(self.dir / "metrics.jsonl",
                              "".join(json_text(r) + "\n" for r in self.history))
        dist.barrier()
