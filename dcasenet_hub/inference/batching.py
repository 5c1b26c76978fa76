"""Batching: inputs decoded ahead in worker threads, and windows of equal length grouped into forward passes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from dcasenet_hub import audio as W
from dcasenet_hub._io import out_of_memory
from dcasenet_hub.inference.jobs import Job
from dcasenet_hub.inference.settings import INPUT_ERRORS, CallSettings


class PreparedJobs:
    """Jobs in input order; short inputs are decoded ahead in ``pool`` (at most ``prefetch`` in flight).

    The first ``prefetch`` inputs are submitted when the object is made, so their decoding overlaps whatever the
    caller does next (building the optimised model, for one).
    """

    def __init__(self, inputs: Sequence[Any], settings: CallSettings, pool: ThreadPoolExecutor | None,
                 prefetch: int) -> None:
        self._settings = settings
        self._pool = pool
        self._inputs = iter(enumerate(inputs))
        self._queue: deque[Future[Job]] = deque()
        if pool is not None:
            for _ in range(max(1, prefetch)):
                if not self._submit():
                    break

    def _submit(self) -> bool:
        nxt = next(self._inputs, None)
        if nxt is None or self._pool is None:
            return False
        self._queue.append(self._pool.submit(Job(nxt[0], nxt[1], self._settings).prepare))
        return True

    def __iter__(self) -> Iterator[Job]:
        if self._pool is None:
            for i, x in self._inputs:
                yield Job(i, x, self._settings).prepare()
            return
        while self._queue:
            job = self._queue.popleft().result()
            self._submit()
            yield job


class Batcher:
    """Groups windows of equal length and equal heads into forward passes of at most ``budget`` frames."""

    def __init__(self, model: Any, device: torch.device, *, budget: int, settings: CallSettings) -> None:
        self.model = model
        self.device = device
        self.budget = budget
        self.settings = settings
        self.pending: dict[tuple[int, tuple[str, ...], bool], list[tuple[Job, W.Window]]] = {}
        self.pending_frames = 0

    def add(self, job: Job, window: W.Window) -> list[Job]:
        frames = int(window.mel.shape[-1])
        # shifted passes never share a batch with the windows themselves, so these batch as without a finer hop
        key = (frames, self.settings.tasks(window.kinds), window.shift > 0)
        items = self.pending.setdefault(key, [])
        items.append((job, window))
        self.pending_frames += frames
        done: list[Job] = []
        if len(items) >= max(1, self.budget // frames):
            done += self._run(key)
        while self.pending_frames > 4 * self.budget:  # many distinct lengths: run the oldest group
            oldest = min(self.pending, key=lambda k: self.pending[k][0][0].index)
            done += self._run(oldest)
        return done

    def flush(self) -> list[Job]:
        done: list[Job] = []
        while self.pending:
            oldest = min(self.pending, key=lambda k: self.pending[k][0][0].index)
            done += self._run(oldest)
        return done

    def _run(self, key: tuple[int, tuple[str, ...], bool]) -> list[Job]:
        items = self.pending.pop(key)
        frames, tasks, _ = key
        self.pending_frames -= frames * len(items)
        live = [(j, w) for j, w in items if j.error is None]
        if not live:
            return []
        param_dtype = next(self.model.parameters()).dtype
        mel = torch.cat([w.mel for _, w in live]).unsqueeze(1).to(self.device, dtype=param_dtype)
        for _, w in live:
            w.mel = None  # free the features
        try:
            outs = self._forward(mel, tasks)
        except (*INPUT_ERRORS, RuntimeError, MemoryError) as exc:
            if not isinstance(exc, INPUT_ERRORS) and not out_of_memory(exc):
                raise  # a bug or a device fault: not these inputs' failure
            done = []  # out of memory on this batch: fail its inputs, keep going
            for j, _ in live:
                if j.error is None:
                    j.fail(exc)
                    done.append(j)
            return done
        done = []
        for b, (job, window) in enumerate(live):
            per = {k: v[b] for k, v in outs.items() if k != "frame_times"}
            if "frame_times" in outs:
                per["frame_times"] = outs["frame_times"]
            if job.add_output(window, per):
                done.append(job)
        return done

    def _forward(self, mel: torch.Tensor, tasks: tuple[str, ...]) -> dict[str, np.ndarray]:
        conv = self.settings.embeddings and self.settings.options.layer == "conv" and "embeddings" in tasks
        with torch.inference_mode():
            out = self.model(mel, tasks=tasks, conv_embeddings=True) if conv else self.model(mel, tasks=tasks)
        res: dict[str, np.ndarray] = {}
        if out.scene_logits is not None:
            res["scene_probs"] = torch.softmax(out.scene_logits.float(), dim=-1).cpu().numpy()
        if out.tag_logits is not None:
            res["tag_probs"] = torch.sigmoid(out.tag_logits.float()).cpu().numpy()
        if out.event_probs is not None:
            res["event_probs"] = out.event_probs.float().cpu().numpy()
        if out.scene_embeddings is not None and self.settings.embeddings and self.settings.options.layer == "scene":
            res["scene_code"] = out.scene_embeddings.float().cpu().numpy()
        if out.frame_embeddings is not None:
            frames = out.conv_embeddings if self.settings.options.layer == "conv" else out.frame_embeddings
            if frames is None:
                raise ValueError(f"layer={self.settings.options.layer!r} is not available from this model's backend "
                                 f"({type(self.model).__name__}); use layer='gru' or the torch backend")
            res["frame_embeddings"] = frames.float().cpu().numpy()
            res["frame_times"] = out.frame_times.float().cpu().numpy()
        return res
