"""Fine-tune a pretrained DcaseNet on your own labelled clips: a linear probe or (partial) fine-tuning.

:func:`finetune` reads the data (:mod:`dcasenet_hub.finetuning.data`), replaces the head of the task with one for
your labels, trains it, keeps the epoch that validates best and returns a :class:`~dcasenet_hub.DcaseNet` that loads,
embeds and predicts like any other checkpoint. Validation runs the windows and features ``predict`` uses, so the
reported metrics are what ``predict`` gives. ``freeze`` picks what trains: ``"all"`` = the head only (its inputs are
computed once: fast on CPU), a block name = the blocks after it too, ``"none"`` = everything. docs/finetuning.md has
the heads, their inputs and metrics per task.

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

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dcasenet_hub._progress import progress_bar, show_progress
from dcasenet_hub.config import TIME_REDUCTION
from dcasenet_hub.devices import resolve_device, resolve_dtype, short_dtype_name
from dcasenet_hub.errors import DataError, OptionsError
from dcasenet_hub.finetuning import features as F
from dcasenet_hub.finetuning import heads as H
from dcasenet_hub.finetuning import record as R
from dcasenet_hub.finetuning.data import Dataset, read_dataset
from dcasenet_hub.finetuning.heads import PRIMARY_METRIC, freeze_choices
from dcasenet_hub.finetuning.options import (
    TASK_WORDS,
    FinetuneOptions,
    finetune_task,
    merge_options,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from dcasenet_hub.inference.model import DcaseNet

logger = logging.getLogger(__name__)

#: task -> default training crop in seconds (the authors' 5 s clip crops; 30 s for events)
_DEFAULT_CROP_S = {"scene": 5.0, "tags": 5.0, "events": 30.0}
#: The linear probe run before fine-tuning with ``warm_start`` (LP-FT).
_WARM_START_EPOCHS = 100
_WARM_START_LR = 3e-3

__all__ = ["PRIMARY_METRIC", "DataError", "FinetuneOptions", "finetune", "freeze_choices"]


def finetune(
    model: DcaseNet | str | Path,
    data: str | Path | Dataset,
    *,
    task: str,
    options: FinetuneOptions | None = None,
    **overrides: Any,
) -> DcaseNet:
    """Fine-tune ``model`` on labelled clips and return the new model (best validation epoch).

    Args:
        model: The base: a :class:`~dcasenet_hub.DcaseNet` or anything ``from_pretrained`` takes
            (``"dcasenet-v3"``, a folder, a file). It is not modified.
        data: A folder with one sub-folder per class, a ``.csv``/``.tsv`` table (``path,label``, ``path,labels``,
            or ``filename,onset,offset,event_label``), or a dataset from
            :func:`dcasenet_hub.finetuning.data.read_dataset`. All data problems are reported together
            (:class:`DataError`) before training.
        task: ``"classification"`` or ``"scene"`` (one label per clip; replaces the scene head), ``"tagging"`` or
            ``"tags"`` (several labels per clip; replaces the tag head's last layer), ``"detection"`` or
            ``"events"`` (events with onset/offset; replaces the event head).
        options: A :class:`FinetuneOptions` (default: all defaults).
        **overrides: Any :class:`FinetuneOptions` field by name (``freeze="conv_block3"``, ``epochs=15``,
            ``output_dir="my-model"``, ``device="auto"``, ...), applied over ``options``.

    Returns:
        The fine-tuned model in eval mode on the training device. ``model.config.extra["finetune"]`` records the
        base model, data summary, recipe, best epoch, validation metrics and the per-epoch history.

    Raises:
        DataError: problems in the data (all listed, with file names).
        ValueError: invalid options (the message lists the valid ones).
        TypeError: a keyword that is not an option (the message lists them).
        FileExistsError: ``output_dir`` already holds a model and ``overwrite`` is False.

    Example:
        >>> model = finetune("dcasenet-v3", "sounds.csv", task="tagging", output_dir="tagger")  # doctest: +SKIP
        >>> model.config.extra["finetune"]["validation"]                                       # doctest: +SKIP
        {'lwlrap': 0.83, 'mAP': 0.79, 'loss': 0.21}
        >>> opts = FinetuneOptions(freeze="conv_block3", epochs=15, device="auto")            # doctest: +SKIP
        >>> finetune("dcasenet-v3", "my_sounds/", task="classification", options=opts)        # doctest: +SKIP
    """
    task = finetune_task(task)
    opts = merge_options(options, overrides)
    epochs, lr = opts.resolved_epochs(), opts.resolved_lr()
    out_dir = Path(opts.output_dir).expanduser() if opts.output_dir is not None else None
    with _claimed(out_dir):  # one run at a time per output folder
        return _finetune(model, data, task, opts, out_dir, epochs, lr)


def _finetune(model: DcaseNet | str | Path, data: str | Path | Dataset, task: str, opts: FinetuneOptions,
              out_dir: Path | None, epochs: int, lr: float) -> DcaseNet:
    """:func:`finetune` after its options are read, holding the output folder."""
    import torch

    from dcasenet_hub.inference.model import DcaseNet

    stopped_run = out_dir is not None and (out_dir / R.STATE_NAME).exists()
    if (out_dir is not None and (out_dir / "model.safetensors").exists() and not opts.overwrite
            and not (opts.resume and stopped_run)):
        raise FileExistsError(f"{out_dir} already holds a model (model.safetensors); choose another output folder "
                              "or pass overwrite=True (--overwrite)")
    # the data first: its problems are reported before a model is downloaded or loaded
    dataset = data if isinstance(data, Dataset) else read_dataset(data, task=task, **opts.data_options())
    if dataset.task != task:
        raise ValueError(f"The dataset was read for task {dataset.task_word!r}, not {TASK_WORDS[task]!r}")
    if isinstance(model, (str, Path)):
        from dcasenet_hub.inference.model import from_pretrained

        model = from_pretrained(model)
    if not isinstance(model, DcaseNet):
        raise TypeError(f"model must be a DcaseNet or a name/path for from_pretrained, got {type(model).__name__}")
    base = model
    trainable = H.trainable_stages(base, task, opts.freeze)
    dev = resolve_device(opts.device, model=base)
    dtype = resolve_dtype(opts.dtype, device=dev)
    logger.info("Fine-tuning DcaseNet-%s on %s: %s (%s)", base.config.arch, dataset.summary(),
                "linear probe" if opts.probe else f"fine-tuning after {opts.freeze}", dev)

    opts = dataclasses.replace(opts, progress=show_progress(opts.progress))  # None: bars when stderr is a terminal
    new = H.new_model(base, task, dataset.labels, opts.head, opts.seed).to(dev)
    frontend = new.config.frontend
    train_audio = F.load_clips(dataset.train, dataset, frontend, progress=opts.progress, what="training")
    val_audio = F.load_clips(dataset.validation, dataset, frontend, progress=opts.progress, what="validation")

    crop = None
    step_s = TIME_REDUCTION / frontend.frame_rate  # one trunk step (0.8 s)
    if not opts.probe:
        crop = float(opts.crop_s if opts.crop_s is not None else _DEFAULT_CROP_S[task])
        if task == "events":
            shortest = min(a.wave.shape[-1] for a in train_audio) / frontend.sample_rate
            crop = max(step_s, math.floor(min(crop, shortest) / step_s + 1e-9) * step_s)
        if crop < step_s - 1e-9:
            raise ValueError(f"crop_s={crop} is shorter than DcaseNet's {step_s:g} s step")

    recipe = {
        "mode": ("linear probe" if opts.probe else
                 "full fine-tuning" if opts.freeze == "none" else "partial fine-tuning"),
        "freeze": opts.freeze, "trained_blocks": [n for n, _ in trainable], "head": opts.head, "epochs": epochs,
        "batch_size": opts.batch_size, "lr": lr, "body_lr": lr * opts.body_lr_scale if trainable else None,
        "weight_decay": opts.weight_decay, "optimizer": "Adam, cosine annealing to 1% of lr per step",
        "crop_s": crop, "mixup_alpha": opts.mixup, "warm_start": bool(opts.warm_start and not opts.probe),
        "batch_norm": opts.batch_norm if not opts.probe else None, "patience": opts.patience, "seed": opts.seed,
        "device": str(dev), "dtype": short_dtype_name(dtype),
        "selection": f"best validation {PRIMARY_METRIC[task]}, then lowest validation loss",
    }
    fingerprint, saved = None, None
    if out_dir is not None:  # the state a later resume continues from is kept only with an output folder
        fingerprint = R.fingerprint(base, dataset.labels, ((a.wave, a.target) for a in train_audio + val_audio),
                                    recipe)
        if opts.resume:
            saved = R.read_state(out_dir, fingerprint)
            if saved is None:
                logger.info("%s holds no stopped run to resume: starting from the first epoch", out_dir)
        elif stopped_run:
            logger.warning("%s holds the state of a stopped run; starting over (resume=True, --resume, would "
                           "continue it)", out_dir)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), _logs_above_bars(opts.progress):
        torch.manual_seed(opts.seed)
        run = _Run(new, task, dataset, train_audio, val_audio, recipe, np.random.default_rng(opts.seed), dev,
                   opts.progress, out_dir, fingerprint, H.trainable_stages(new, task, opts.freeze))
        if saved is not None:
            try:
                run.restore(saved)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a state edited by hand: the weights'
                # shapes or a value's type do not fit
                raise OptionsError(f"Cannot resume from {out_dir / R.STATE_NAME}: it is damaged "
                                   f"({type(exc).__name__}); delete it to start the run over") from None
        if opts.probe:
            run.probe(epochs, lr)
        else:
            if opts.warm_start:  # LP-FT: a linear probe first, so fine-tuning starts from a head that fits
                run.probe(_WARM_START_EPOCHS, _WARM_START_LR, phase="warm-start probe")
            run.finetune(opts.body_lr_scale)
    recipe["seconds"] = round(run.seconds(), 2)
    result = run.finish(base)
    if out_dir is not None:
        R.save(result, out_dir, run.history)
        logger.info("Saved the fine-tuned model to %s", out_dir)
    return result


@contextlib.contextmanager
def _claimed(out_dir: Path | None) -> Iterator[None]:
    """Hold ``out_dir`` for one fine-tuning run: a second run into it meanwhile is refused at once (a lock on the
    folder itself, so the model folder gains no file), and the temporary files of killed runs are removed. A folder
    this call created is removed again if the run ends before writing into it."""
    if out_dir is None:
        yield
        return
    from dcasenet_hub._io import clean_stale_temp_files

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"{out_dir} is being written by another fine-tuning run right now; wait for it "
                                  "to end or choose another output folder") from None
        except (ImportError, OSError) as exc:  # no flock here (another OS, some network file systems)
            logger.debug("cannot lock %s (%s); running without the lock", out_dir, exc)
        clean_stale_temp_files(out_dir)
        try:
            yield
        finally:
            if created:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()  # only while empty: a run stopped before its first epoch
    finally:
        os.close(fd)


def _logs_above_bars(progress: bool) -> Any:
    """While bars are shown, console log lines (the per-epoch metrics) go through the bar's own write, so they print
    above the bars instead of breaking them; without bars, logging is left as it is."""
    if not progress:
        return contextlib.nullcontext()
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    # only loggers that print to the console: tqdm adds its handler to every logger it is given
    consoles = [log for log in (logging.getLogger(), logging.getLogger("dcasenet_hub"))
                if any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
                       for h in log.handlers)]
    return logging_redirect_tqdm(loggers=consoles) if consoles else contextlib.nullcontext()


class _Run:
    """State of one fine-tuning run: epochs, validation, early stopping, best weights, history."""

    def __init__(self, model: DcaseNet, task: str, dataset: Dataset, train_audio: list[F.ClipAudio],
                 val_audio: list[F.ClipAudio], recipe: dict[str, Any], rng: np.random.Generator, device: Any,
                 progress: bool, out_dir: Path | None, fingerprint: str | None,
                 trainable: list[tuple[str, list[nn.Module]]]) -> None:
        self.model, self.task, self.dataset = model, task, dataset
        self.train_audio, self.val_audio = train_audio, val_audio
        self.recipe, self.rng, self.device, self.progress, self.out_dir = recipe, rng, device, progress, out_dir
        self.head = H.head_of(model, task)
        self.trainable = trainable
        # the weights training can change (the head, the trained blocks; a probe only the head): a state keeps
        # only these, the rest of the model staying the base's
        self.changing = self._keys({id(m) for _, mods in trainable for m in mods} | {id(self.head)})
        self.head_keys = self._keys({id(self.head)})
        self.dtype = resolve_dtype(recipe.get("dtype"))
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self.best_target: Any = None  # the module best_state belongs to (the head for a probe, else the model)
        self.best_metrics: dict[str, float] = {}
        self.stale = 0
        self.best_phase = ""
        self.fingerprint = fingerprint
        self.saved: dict[str, Any] | None = None  # a stopped run's state, until the phase it belongs to takes it
        self.resumed_after: list[str] = []
        self.seconds_before = 0.0  # the stopped runs' time
        self.started = time.perf_counter()

    # -- stopping and resuming -----------------------------------------------------------------------------------

    def _keys(self, modules: set[int]) -> list[str]:
        """The model's state-dict keys of the modules whose ids are ``modules``."""
        prefixes = tuple(f"{name}." for name, m in self.model.named_modules() if id(m) in modules)
        return [k for k in self.model.state_dict() if k.startswith(prefixes)]

    def seconds(self) -> float:
        """Training time so far, the stopped runs' included."""
        return self.seconds_before + time.perf_counter() - self.started

    def _save_state(self, phase: str, epoch: int, *, done: bool = False, stopped: bool = False, opt: Any = None,
                    sched: Any = None, scaler: Any = None) -> None:
        """Keep what resuming after ``epoch`` of ``phase`` needs."""
        if self.out_dir is None:
            return
        import torch

        keys = self.head_keys if phase != "fine-tune" and not done else self.changing

        def changing(sd: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if sd is None else {k: sd[k].detach().to("cpu", copy=True) for k in keys}

        weights = changing(self.model.state_dict())
        best = self.best_state if self.best_target is not self.model else changing(self.best_state)
        if best is not None and best.keys() == weights.keys() and all(torch.equal(best[k], weights[k]) for k in best):
            best = "weights"  # the best epoch is this one (the usual case while a run improves): kept once
        state = {
            "fingerprint": self.fingerprint, "phase": phase, "epoch": epoch, "phase_done": done, "stopped": stopped,
            "weights": weights,
            "optimizer": opt.state_dict() if opt is not None else None,
            "scheduler": sched.state_dict() if sched is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "history": self.history, "stale": self.stale, "resumed_after": self.resumed_after,
            "best": {"score": self.best_score, "epoch": self.best_epoch, "metrics": self.best_metrics,
                     "phase": self.best_phase, "state": best,
                     "target": None if self.best_target is None else
                     "model" if self.best_target is self.model else "head"},
            "probe_samples": self.recipe.get("probe_samples"),
            "numpy_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "seconds": self.seconds(),
        }
        if torch.device(self.device).type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        R.write_state(self.out_dir, state)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue a stopped run: weights, history, best epoch and random generators as they were after its last
        finished epoch (the optimiser's state is taken by the phase it belongs to)."""
        import torch

        self.model.load_state_dict({**self.model.state_dict(), **state["weights"]}, strict=True)
        best = state["best"]
        self.best_score, self.best_epoch, self.best_metrics = best["score"], best["epoch"], best["metrics"]
        self.best_target = {"model": self.model, "head": self.head, None: None}[best["target"]]
        self.best_phase, self.best_state = best["phase"], best["state"]
        if isinstance(self.best_state, str):  # "weights": the best epoch was the last one
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in self.best_target.state_dict().items()}
        elif self.best_target is self.model:  # the weights training does not change are the model's
            self.best_state = {**{k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
                               **best["state"]}
        self.history, self.stale = list(state["history"]), state["stale"]
        if state["probe_samples"] is not None:
            self.recipe["probe_samples"] = state["probe_samples"]
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.device(self.device).type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.seconds_before = state["seconds"]
        self.resumed_after = [*state["resumed_after"], f"{state['phase']} epoch {state['epoch']}"]
        self.saved = state
        if self.out_dir is not None:
            R.write_log(self.out_dir, self.history)  # the log may be an epoch ahead of the state it was killed at
        logger.info("Resuming after %s epoch %d", state["phase"], state["epoch"])

    def _take_saved(self, phase: str) -> tuple[bool, dict[str, Any] | None]:
        """``(skip, state)`` for a phase about to start: skip it when the stopped run finished it (its result is in
        the restored weights), or continue it from ``state``."""
        state = self.saved
        if state is None:
            return False, None
        if state["phase"] != phase:  # a later phase's state: this phase ran to its end before the stop
            return True, None
        self.saved = None
        return state["phase_done"], None if state["phase_done"] else state

    @staticmethod
    def _continue(state: dict[str, Any] | None, epochs: int, *parts: tuple[Any, str]) -> int:
        """The first epoch to run: 1, or after the stopped run's last (its optimiser parts loaded)."""
        if state is None:
            return 1
        for obj, key in parts:
            if obj is not None and state[key] is not None:
                obj.load_state_dict(state[key])
        return epochs + 1 if state["stopped"] else state["epoch"] + 1

    # -- shared --------------------------------------------------------------------------------------------------

    def _epoch_done(self, phase: str, epoch: int, train_loss: float, metrics: dict[str, float], lr: float,
                    seconds: float, target: Any) -> bool:
        """Record an epoch; keep the best weights; True when early stopping says stop."""
        score = metrics[PRIMARY_METRIC[self.task]]
        # a small validation set saturates the primary metric (accuracy 1.0) while the model still gets better: at
        # an equal score the lower validation loss wins, and counts as progress for early stopping
        improved = score > self.best_score or (score == self.best_score
                                               and metrics["loss"] < self.best_metrics.get("loss", math.inf))
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
            R.write_log(self.out_dir, self.history)
        patience = self.recipe["patience"]
        return patience is not None and self.stale >= patience

    def _optimizer(self, groups: list[dict[str, Any]], steps: int, lr: float) -> tuple[Any, Any]:
        import torch

        opt = torch.optim.Adam(groups, lr=lr, weight_decay=self.recipe["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps))))
        return opt, sched

    def _extract(self, audio: list[F.ClipAudio], progress: bool, desc: str) -> list[F.WindowFeatures]:
        return F.extract(self.model, self.task, audio, batch_size=self.recipe["batch_size"], device=self.device,
                         progress=progress, desc=desc, dtype=self.dtype)

    def _autocast(self) -> Any:
        """The training forward passes' precision: autocast to bf16/fp16, or nothing for fp32."""
        import torch

        dev = torch.device(self.device)
        return torch.autocast(dev.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    # -- linear probe --------------------------------------------------------------------------------------------

    def probe(self, epochs: int, lr: float, phase: str = "probe") -> None:
        """Train the head on cached head inputs of the frozen body (the best epoch's head is kept in place)."""
        import torch

        from dcasenet_hub.models.losses import logits_loss

        skip, saved = self._take_saved(phase)
        if skip:
            return
        task, cfg, bs = self.task, self.model.config, self.recipe["batch_size"]
        feats_train = self._extract(self.train_audio, self.progress, "Head inputs (training)")
        feats_val = self._extract(self.val_audio, self.progress, "Head inputs (validation)")
        x, y = F.probe_samples(task, feats_train, self.train_audio, cfg)
        # Train on standardised inputs (pretrained features can have any scale; Adam then needs no tuning) and fold
        # the standardisation into the head's weights at the end, so the saved head takes the raw inputs.
        mean = x.mean(dim=0)
        std = x.std(dim=0) if x.shape[0] > 1 else torch.ones_like(mean)
        std = std.clamp_min(max(float(std.mean()) * 1e-2, 1e-12))
        head = self.head.to("cpu")
        if self.recipe["head"] == "reuse" and saved is None:
            H.unfold(head, mean, std)  # the reused rows keep their meaning on the standardised inputs
        xs = (x - mean) / std
        head.train()
        steps_per_epoch = math.ceil(x.shape[0] / bs)
        opt, sched = self._optimizer([{"params": head.parameters()}], epochs * steps_per_epoch, lr)
        self.recipe["probe_samples"] = int(x.shape[0])
        first = self._continue(saved, epochs, (opt, "optimizer"), (sched, "scheduler"))
        epochs_bar = progress_bar(range(first, epochs + 1), enabled=self.progress, desc="Epochs (probe)",
                                  unit="epoch")
        for epoch in epochs_bar:
            t0 = time.perf_counter()
            perm = torch.from_numpy(self.rng.permutation(x.shape[0]))
            total = 0.0
            for b in range(0, x.shape[0], bs):
                idx = perm[b:b + bs]
                loss = logits_loss(task, head(xs[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            # validate the head as it would be saved (standardisation folded in, raw inputs), so the reported
            # metrics are those of the saved weights and not of an algebraically equal but rounded differently form
            folded = copy.deepcopy(head).eval()
            H.fold(folded, mean, std)
            metrics = F.evaluate(task, folded, feats_val, self.val_audio, cfg)
            epochs_bar.set_postfix({PRIMARY_METRIC[task]: f"{metrics[PRIMARY_METRIC[task]]:.3f}"})
            stop = self._epoch_done(phase, epoch, total / x.shape[0], metrics, opt.param_groups[0]["lr"],
                                    time.perf_counter() - t0, head)
            self._save_state(phase, epoch, stopped=stop, opt=opt, sched=sched)
            if stop:
                break
        epochs_bar.close()
        if self.best_state is not None:
            head.load_state_dict(self.best_state, strict=True)
        H.fold(head, mean, std)  # the same operations on the same weights as the validated copy: identical result
        self.model.to(self.device)
        # from now on the best weights are the whole model with the folded head
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.best_target = self.model
        self.stale = 0
        self._save_state(phase, len(self.history), done=True)

    # -- fine-tuning ---------------------------------------------------------------------------------------------

    def finetune(self, body_lr_scale: float) -> None:
        """Train the head and the trainable blocks on random crops, validating after every epoch."""
        import torch

        from dcasenet_hub.models.losses import draw_mixup, mix_inputs, mixed_loss

        _, saved = self._take_saved("fine-tune")
        model, task, cfg = self.model, self.task, self.model.config
        bs, epochs, lr = self.recipe["batch_size"], self.recipe["epochs"], self.recipe["lr"]
        body_modules = [m for _, mods in self.trainable for m in mods]
        for p in model.parameters():
            p.requires_grad_(False)
        body_params = [p for m in body_modules for p in m.parameters()]
        for p in body_params + list(self.head.parameters()):
            p.requires_grad_(True)
        groups = [{"params": list(self.head.parameters()), "lr": lr}]
        if body_params:
            groups.append({"params": body_params, "lr": lr * body_lr_scale})
        n = len(self.train_audio)
        opt, sched = self._optimizer(groups, epochs * math.ceil(n / bs), lr)
        crop_len = round(self.recipe["crop_s"] * cfg.frontend.sample_rate)
        alpha = self.recipe["mixup_alpha"]
        bn_train = self.recipe["batch_norm"] == "train"
        bn_layers = [m for mod in body_modules for m in mod.modules()
                     if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
        scaler = torch.amp.GradScaler(torch.device(self.device).type, enabled=self.dtype == torch.float16)

        def set_modes() -> None:
            model.eval()  # frozen blocks (and the other heads) keep their batch-norm statistics
            for m in body_modules + [self.head]:
                m.train()
            if not bn_train:  # "frozen": the base model's statistics stay; scale and shift still learn
                for m in bn_layers:
                    m.eval()

        def batch(idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
            if task == "events":
                pairs = [F.event_crop(self.train_audio[i], crop_len, cfg, self.rng) for i in idx]
                mels = [m for m, _ in pairs]
                y = torch.from_numpy(np.stack([t for _, t in pairs]))
            else:
                mels = [F.clip_crop(self.train_audio[i], crop_len, cfg, self.rng) for i in idx]
                y = torch.from_numpy(np.stack([self.train_audio[i].target for i in idx]))
            return torch.cat(mels).unsqueeze(1).to(self.device), y.to(self.device)

        def recalibrate() -> None:
            """Batch-norm statistics of the trained blocks re-estimated on the training crops (exact average)."""
            momenta = [m.momentum for m in bn_layers]
            for m in bn_layers:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            with torch.no_grad(), self._autocast():
                for b in range(0, n, bs):
                    model(batch(range(b, min(n, b + bs)))[0], tasks=(task,))
            for m, mom in zip(bn_layers, momenta):
                m.momentum = mom

        first = self._continue(saved, epochs, (opt, "optimizer"), (sched, "scheduler"), (scaler, "scaler"))
        epochs_bar = progress_bar(range(first, epochs + 1), enabled=self.progress, desc="Epochs (fine-tuning)",
                                  unit="epoch")
        for epoch in epochs_bar:
            t0 = time.perf_counter()
            set_modes()
            perm = self.rng.permutation(n)
            total = 0.0
            for b in progress_bar(range(0, n, bs), enabled=self.progress, desc=f"Epoch {epoch}", unit="batch"):
                idx = perm[b:b + bs]
                x, y = batch(idx)
                mix = draw_mixup(self.rng, alpha, len(idx), x.device) if alpha is not None and len(idx) > 1 else None
                with self._autocast():
                    out = model(x if mix is None else mix_inputs(x, mix), tasks=(task,))
                loss = mixed_loss(task, out, y, mix)
                opt.zero_grad()
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                total += float(loss.detach()) * len(idx)
            if bn_train and bn_layers:
                recalibrate()
            feats_val = self._extract(self.val_audio, False, "Validation")
            head_cpu = copy.deepcopy(self.head).to("cpu").eval()
            metrics = F.evaluate(task, head_cpu, feats_val, self.val_audio, cfg)
            epochs_bar.set_postfix({PRIMARY_METRIC[task]: f"{metrics[PRIMARY_METRIC[task]]:.3f}"})
            stop = self._epoch_done("fine-tune", epoch, total / n, metrics, opt.param_groups[0]["lr"],
                                    time.perf_counter() - t0, model)
            self._save_state("fine-tune", epoch, stopped=stop, opt=opt, sched=sched, scaler=scaler)
            if stop:
                break
        epochs_bar.close()
        for p in model.parameters():
            p.requires_grad_(True)

    # -- result --------------------------------------------------------------------------------------------------

    def finish(self, base: DcaseNet) -> DcaseNet:
        """Restore the best epoch's weights and write the fine-tuning record into the config."""
        model = self.model
        if self.best_state is not None:
            self.best_target.load_state_dict(self.best_state, strict=True)
        model.inference_copies.clear()  # the weights are the fine-tuned ones now, whichever module was loaded
        model.eval()
        task = self.task
        body_changed = any(name not in H.TASK_ONLY_STAGES for name in self.recipe["trained_blocks"])
        others = {"scene", "tags", "events"} - {task}
        kept = [t for t in base.config.trained_tasks if t != task and not (body_changed and t in others)]
        trained = tuple(sorted(set(kept) | {task}, key=("scene", "tags", "events", "embeddings").index))
        base_name = R.base_id(base)
        dropped = sorted(set(base.config.trained_tasks) & others - set(trained))
        record = {
            "base_model": base_name,
            "base_provenance": base.config.provenance,
            "task": TASK_WORDS[task],  # fine-tuning's word, as records always held it
            "head": task,
            "labels": list(self.dataset.labels),
            "data": self.dataset.to_dict(),
            "recipe": self.recipe,
            "best_epoch": self.best_epoch,
            "best_phase": self.best_phase,
            "validation": {k: round(float(v), 6) for k, v in self.best_metrics.items()},
            "history": self.history,
            "heads_no_longer_trained": dropped,
            "resumed_after": self.resumed_after,
        }
        extra = {k: v for k, v in (base.config.extra or {}).items() if k not in ("metrics", "description")}
        extra["trained_on"] = list(extra.get("trained_on") or []) + [
            {"task": TASK_WORDS[task], "dataset": self.dataset.summary(), "split": self.dataset.split}]
        extra["finetune"] = record
        extra["description"] = R.card_section(record, self.dataset)
        model.config = model.config.replace(
            trained_tasks=trained, model_id=None,
            provenance=f"fine-tuned by dcasenet-hub from {base_name} on {self.dataset.summary()}",
            extra=json.loads(json.dumps(extra, default=str)),
        )
        if dropped:
            logger.warning("Fine-tuning changed blocks shared with the %s head(s): they are no longer marked as "
                           "trained (freeze up to a task-specific block to keep them)", ", ".join(dropped))
        return model
