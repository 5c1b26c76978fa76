"""The paper's joint trainer (docs/facts.md §5.2 and §6): :func:`train` runs every stage of a recipe.

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
per process and averaged at the end of every epoch. Evaluation and checkpoints happen on rank 0.

Example:
    >>> from dcasenet_hub.train import train
    >>> res = train("v3-asc", out_dir="runs/try", asc_root="mini/asc",
    ...             overrides={"epochs": 1, "iterations_per_epoch": 5, "batch_size": {"scene": 4}})  # doctest: +SKIP
"""

from __future__ import annotations

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

from dcasenet_hub._progress import progress_bar
from dcasenet_hub.errors import TrainingDivergedError
from dcasenet_hub.hub.folder import copy_folder
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
from dcasenet_hub.train.export import export_model, json_safe
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
          cache_dir: str | Path | None = None, device: str | None = "auto", workers: int = 0,
          dtype: str = "fp32", resume: bool = False, seed: int = 0, progress: bool = True,
          overrides: Mapping[str, Any] | None = None, stages: Sequence[str] | None = None,
          eval_batch_size: int = 8, in_memory: bool = False,
          on_epoch_end: Callable[[str, int, dict[str, Any]], None] | None = None,
          precision: str | None = None) -> TrainResult:
    """Train a recipe end to end (joint or single stage, then the fine-tuning stages).

    Args:
        recipe: Recipe name (:func:`list_recipes`), JSON path or :class:`Recipe`.
        out_dir: Run folder.
        asc_root, tag_root, sed_root: Dataset folders (needed for the recipe's tasks only).
        cache_dir: Feature cache folder (prepared automatically; default ``~/.cache/dcasenet_hub/features``).
        device: ``"auto"`` (default; also ``None``: CUDA when available), ``"cuda"``, ``"cpu"``, ``"cuda:1"`` ...
            (a bare ``"cuda"`` under torchrun is the process's local rank).
        workers: DataLoader workers per task (and processes for preparing features).
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (float16 autocast + gradient scaling, CUDA).
        resume: Continue the run in ``out_dir`` from its last completed epoch (exactly: same losses as without the
            interruption on the same seed).
        seed: Seed of initialisation, data order, crops, mixup and dropout.
        progress: Progress bars.
        overrides: Recipe changes, e.g. ``{"epochs": 2, "iterations_per_epoch": 10, "batch_size": {"scene": 4}}``
            (tasks as ``scene``/``tags``/``events`` or ``asc``/``tag``/``sed``).
        stages: Run only these stages (default all of :meth:`Recipe.stages`).
        eval_batch_size: Examples per evaluation batch.
        in_memory: Keep the cached features in memory (small data).
        on_epoch_end: Called as ``on_epoch_end(stage, epoch, record)`` after each epoch's checkpoint is written.
        precision: Deprecated spelling of ``dtype`` (``"amp"`` is fp16); warns.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainingDivergedError: a loss became NaN/inf (the message names the epoch, iteration and last checkpoint).
        ValueError: bad recipe/override, missing dataset root, or ``out_dir`` holds another run.
    """
    dtype = deprecated_precision(dtype, precision, "train")
    base = load_recipe(recipe)
    rec = base.replace(**dict(overrides or {})) if overrides else base  # per-task keys: scene/tags/events or asc/...
    rec = Recipe.from_dict(rec.to_dict())  # validate the overridden recipe
    out = Path(out_dir)
    roots = checked_roots(rec.tasks, {"asc": asc_root, "tag": tag_root, "sed": sed_root})
    dist = init_distributed(device)
    try:
        dev = training_device(device, dist)
        autocast_args(dtype, dev)  # refuse a bad dtype before any work
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
            stores, items = prepared_stores(roots, [TRAIN_SPLIT, EVAL_SPLIT], cache_dir=cache_dir, workers=workers,
                                             progress=progress, memory=in_memory)
        dist.barrier()
        if not dist.main:
            stores, items = prepared_stores(roots, [TRAIN_SPLIT, EVAL_SPLIT], cache_dir=cache_dir, workers=0,
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
                workers=workers, dtype=dtype, resume=resume, seed=seed, progress=progress,
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
        copy_folder(src, out / f"best-{t}")  # one unit: a kill leaves the previous copy or the new one
        result.best[t] = out / f"best-{t}"
        cfg = json.loads((src / "config.json").read_text())
        result.best_metrics[t] = (cfg.get("extra") or {}).get("best_metrics", {})


def _run_stage(rec: Recipe, stage: str, tasks: tuple[str, ...], init_task: str | None, *, out: Path,
               roots: Mapping[str, Path], stores: Mapping[str, FeatureStore], items: Mapping[str, Any],
               dev: torch.device, dist: Ranks, workers: int, dtype: str, resume: bool, seed: int, progress: bool,
               eval_batch_size: int, on_epoch_end: Callable[..., None] | None) -> list[dict[str, Any]]:

    from dcasenet_hub._io import atomic_write_text
    from dcasenet_hub.inference.model import build_model

    sdir = out / stage
    state_path = sdir / "last.pt"
    done_path = sdir / "done.json"
    if done_path.exists() and resume:
        logger.info("stage %s already finished; skipping", stage)
        return load_state(state_path)["history"] if state_path.exists() else []
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
    step = JointStep(model)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step = DDP(step, device_ids=[dev.index] if dev.type == "cuda" else None,
                   find_unused_parameters=set(tasks) != set(TASKS))
    optimizer = torch.optim.Adam(model.parameters(), lr=rec.lr, weight_decay=rec.weight_decay, amsgrad=rec.amsgrad)
    iters = rec.iterations_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=rec.t0_epochs * iters,
                                                                     eta_min=rec.eta_min)
    ac = autocast_args(dtype, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=ac.get("dtype") == torch.float16)

    start_epoch, history, best = 0, [], {t: {} for t in tasks}
    torch.manual_seed(seed_of(seed, stage, "torch", dist.rank))
    if state_path.exists():
        st = load_state(state_path)
        if st["stage"] != stage:
            raise ValueError(f"{state_path} belongs to stage {st['stage']}, not {stage}")
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        start_epoch, history, best = st["epoch"], st["history"], st["best"]
        rngs = st["rng"]
        set_rng_state(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0], dev)
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
            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed_of(seed, stage, t))))
    # scene crops as long as the training crops, half of that apart: the authors' three 5 s crops of a 10 s clip
    eval_sets = {t: eval_set(t, items[t][EVAL_SPLIT], stores[t], config=model.config,
                              scene_window_s=rec.crop_seconds.get("asc", 5.0)) for t in tasks}
    local_bs = {t: int(rec.batch_size[t]) // dist.world for t in tasks}

    # -- epochs ----------------------------------------------------------------------------------------------------
    for epoch in range(start_epoch, rec.epochs):
        t0 = time.time()
        model.train()
        mixup = rec.mixup_alpha is not None and rec.mixup_alpha > 0 and epoch >= rec.mixup_from_epoch
        mix_rng = np.random.default_rng(seed_of(seed, stage, "mixup", epoch))
        sums = {t: 0.0 for t in tasks}
        bar = progress_bar(enabled=progress and dist.main, total=iters,
                           desc=f"{rec.name} {stage} {epoch + 1}/{rec.epochs}", dynamic_ncols=True)
        for it in range(iters):
            batches, mixes = {}, {}
            for t in TASK_ORDER:
                if t not in tasks:
                    continue
                x, y = next(loaders[t])
                batches[t] = (x.to(dev, non_blocking=True), y.to(dev, non_blocking=True))
                if mixup:
                    mixes[t] = draw_mixup(mix_rng, rec.mixup_alpha, local_bs[t], dev)
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
                    "(NaN/inf features), lower the learning rate (--lr) or use --dtype fp32, then --resume.")
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
            average_batchnorm_statistics(model, dist.world)
        train_time = time.time() - t0

        record: dict[str, Any] = {"stage": stage, "epoch": epoch + 1, "iterations": (epoch + 1) * iters,
                                  "lr": optimizer.param_groups[0]["lr"], "mixup": mixup,
                                  "loss": {t: sums[t] / iters for t in tasks},
                                  "loss_total": sum(float(rec.loss_weights[t]) * sums[t] / iters for t in tasks),
                                  "train_s": round(train_time, 3)}
        if dist.main:
            m = evaluate_sets(model, eval_sets, device=dev, dtype=dtype, sed_threshold=rec.sed_threshold,
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
        rngs = [rng_state(dev)]
        if dist.world > 1:
            gathered: list[Any] = [None] * dist.world
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if dist.main:
            save_state(state_path, {
                "format": STATE_FORMAT, "recipe": rec.to_dict(), "stage": stage, "epoch": epoch + 1, "seed": seed,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": rngs, "best": best, "history": history})
            atomic_write_text(sdir / "metrics.jsonl", "".join(json.dumps(json_safe(r)) + "\n" for r in history))
        dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(stage, epoch, record)
    if dist.main:
        atomic_write_text(done_path, json.dumps({"stage": stage, "epochs": rec.epochs, "best": best}, indent=2) + "\n")
    dist.barrier()
    return history
