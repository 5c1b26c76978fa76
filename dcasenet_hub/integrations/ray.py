"""Embeddings and predictions on Ray Data: a callable class for ``ray.data.Dataset.map_batches``.

For corpora that outgrow one machine: Ray spreads the batches over CPU or GPU actors, balances the load, retries a
batch whose worker died and reads object storage; :class:`DcaseNetBatch` loads the model once per actor (``--shard``
and torchrun stay for SLURM-style arrays). Needs the ``ray`` extra (``pip install "dcasenet-hub[ray]"``, which brings
pyarrow); this module itself never imports ray. Each batch comes out as a ``pyarrow.Table`` of the same column types
whatever fails in it, so a Parquet folder written from it reads as one table in pyarrow, pandas, DuckDB or polars.
A cluster example: docs/outputs-reference.md, "Ray Data".

Example:
    >>> import ray                                                            # doctest: +SKIP
    >>> from dcasenet_hub.integrations.ray import DcaseNetBatch               # doctest: +SKIP
    >>> ds = ray.data.read_binary_files("s3://bucket/audio/", include_paths=True)   # doctest: +SKIP
    >>> emb = ds.map_batches(DcaseNetBatch, fn_constructor_kwargs={"model": "dcasenet-v3"}, batch_size=32,
    ...                      compute=ray.data.ActorPoolStrategy(size=4))          # doctest: +SKIP
    >>> emb.write_parquet("s3://bucket/embeddings/")                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

#: What a :class:`DcaseNetBatch` computes per row.
TASKS = ("embed", "predict")


class DcaseNetBatch:
    """Callable class for ``Dataset.map_batches``: a batch of audio rows in, one result row per input out.

    Rows in: a ``path`` column (files the workers can read), a ``bytes`` column (the files' contents; ``path``, when
    present, names the row and gives the format's extension) or an ``audio`` column of waveforms with ``sample_rate``.
    Rows out: ``path``, ``ok``, ``error`` (a bad file fails its row only), then ``clip_embedding`` (``frames=True``
    adds ``frame_embeddings``, T x D flattened, and ``frame_times``) or, for ``task="predict"``, ``top_scene``,
    ``scene_probs``, ``tag_probs`` and ``events`` (JSON: onset, offset, label), then the input's other columns except
    the audio. The vectors are Arrow ``large_list<float>`` (float32) columns in every batch, and a failed row's are
    empty: Ray's tensor types would differ between a batch with a failed row (or frames of different lengths) and
    one without, and Parquet files of both do not read as one table outside Ray.

    Args:
        model: A manifest id, local folder or checkpoint (what ``from_pretrained`` takes; every worker must be able
            to load it), or a loaded :class:`~dcasenet_hub.DcaseNet` (Ray pickles it to each actor).
        task: ``"embed"`` or ``"predict"``.
        device: ``"auto"`` (CUDA when the actor has a GPU, ``num_gpus=1`` in ``map_batches``), ``"cpu"``, ``"cuda"``.
        dtype: Compute dtype as in :func:`~dcasenet_hub.inference.embed` (``None``: exact fp32).
        sample_rate: Rate of ``audio`` rows when the batch has no ``sample_rate`` column.
        frames: Also return the frame embeddings and their times (embed).
        batch_rows: Run a batch's rows through shared forward passes: faster for short clips, but results then differ
            by float rounding between batch compositions. Off, each row is computed on its own, so retries and any
            cluster shape give identical results.
        batch_size: 5 s windows per forward pass.
        options: Further keyword arguments of :func:`~dcasenet_hub.inference.iterate` (``hop``, ``layer``,
            ``pooling``, ``threshold``, ``class_thresholds``, ``labels``, ``exclude_labels``, ``median_filter``,
            ``min_duration``, ``pad_tail``, ``backend``).

    Raises:
        ValueError: an unknown task, or an option :func:`~dcasenet_hub.inference.iterate` does not take.
    """

    def __init__(self, model: Any = "dcasenet-v3", *, task: str = "embed", device: str = "auto",
                 dtype: str | None = None, sample_rate: int | None = None, frames: bool = False,
                 batch_rows: bool = False, batch_size: int = 8, options: Mapping[str, Any] | None = None) -> None:
        from dcasenet_hub.inference.model import from_pretrained

        if task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {', '.join(repr(t) for t in TASKS)}")
        allowed = {"hop", "layer", "pooling", "threshold", "class_thresholds", "labels", "exclude_labels",
                   "median_filter", "min_duration", "pad_tail", "backend"}
        unknown = sorted(set(options or {}) - allowed)
        if unknown:
            raise ValueError(f"Unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
        self.model = from_pretrained(model) if isinstance(model, (str, os.PathLike)) else model
        self.model.eval()
        self.task = task
        self.frames = bool(frames)
        self.batch_rows = bool(batch_rows)
        self.sample_rate = sample_rate
        self.kwargs = {"device": device, "dtype": dtype, "batch_size": batch_size, "workers": 0,
                       "embeddings": task == "embed", "predictions": task == "predict", **dict(options or {})}
        # every value checked now, on the driver, not at each actor's first batch
        from dcasenet_hub.inference.options import InferenceOptions
        from dcasenet_hub.inference.settings import select_labels

        checked = InferenceOptions.merge(None, {k: v for k, v in self.kwargs.items()
                                                if k in InferenceOptions.field_names()}, caller="DcaseNetBatch")
        cfg = self.model.config
        select_labels((cfg.scene_labels, cfg.tag_labels, cfg.event_labels), checked)

    def __call__(self, batch: Mapping[str, Any]) -> pa.Table:
        """One output row per input row, in the input's order.

        Args:
            batch: The input columns as numpy arrays (``map_batches`` with ``batch_format="numpy"``, its default).

        Returns:
            A ``pyarrow.Table`` (``map_batches`` takes it as it is; ``.to_pylist()`` gives the rows).
        """
        from dcasenet_hub.inference.pipeline import iterate

        names, inputs, rates, temp = self._inputs(batch)
        try:
            results: list[Any] = [None] * len(inputs)
            groups = [list(range(len(inputs)))] if self.batch_rows and len(set(rates)) <= 1 else [
                [i] for i in range(len(inputs))]
            # what a row's error calls it -> the row's name: a temporary file's path, or a waveform's place in its
            # group (<array 0> for a row computed alone)
            said: list[dict[str, str]] = [{} for _ in inputs]
            for group in groups:
                for r in iterate(self.model, [inputs[i] for i in group], sample_rate=rates[group[0]],
                                 **self.kwargs):
                    row = group[r.index]
                    results[row] = r
                    said[row] = {str(inputs[row]): names[row]} if isinstance(inputs[row], str) else {
                        f"<array {r.index}>": names[row]}
        finally:
            for path in temp:
                path.unlink(missing_ok=True)
        import pyarrow as pa

        out = self._rows(names, results, said=said)
        for key in batch:  # the row's other columns (ids, labels) travel with it; the audio itself does not
            if key not in ("bytes", "audio", "path", "sample_rate") and key not in out:
                out[key] = _column(key, batch[key])
        return pa.table(out)

    def _inputs(self, batch: Mapping[str, Any]) -> tuple[list[str], list[Any], list[int | None], list[Path]]:
        """Row names, inputs for ``iterate`` (paths or waveforms), their rates, and temporary files to delete."""
        temp: list[Path] = []
        if "bytes" in batch:
            data = list(batch["bytes"])
            names = [str(p) for p in batch["path"]] if "path" in batch else [f"<row {i}>" for i in range(len(data))]
            inputs: list[Any] = []
            for name, blob in zip(names, data):
                # the one decoder reads files: each row's bytes become a private temporary file with its extension
                fd, tmp = tempfile.mkstemp(prefix="dcasenet-ray-", suffix=Path(name).suffix.lower())
                with os.fdopen(fd, "wb") as f:
                    f.write(bytes(blob))
                temp.append(Path(tmp))
                inputs.append(tmp)
            return names, inputs, [None] * len(inputs), temp
        if "path" in batch:
            names = [str(p) for p in batch["path"]]
            return names, list(names), [None] * len(names), temp
        if "audio" in batch:
            audio = list(batch["audio"])
            if "sample_rate" in batch:
                rates = [int(r) for r in batch["sample_rate"]]
            elif self.sample_rate is not None:
                rates = [int(self.sample_rate)] * len(audio)
            else:
                raise ValueError("audio rows need a sample_rate column or DcaseNetBatch(sample_rate=...)")
            return [f"<row {i}>" for i in range(len(audio))], [np.asarray(a) for a in audio], rates, temp
        raise ValueError(f"A batch needs a 'path', 'bytes' or 'audio' column; got {', '.join(sorted(batch))}")

    def _rows(self, names: list[str], results: list[Any], *, said: list[dict[str, str]]) -> dict[str, pa.Array]:
        import pyarrow as pa

        ok = [r.error is None for r in results]
        errors = []
        for r, names_of_row in zip(results, said):
            text = "" if r.error is None else " ".join(str(r.error).split())
            for called, name in names_of_row.items():
                text = text.replace(called, name)
            errors.append(text)
        # explicit types: a batch whose rows all failed (or an empty one) has the same schema as any other
        out: dict[str, pa.Array] = {"path": pa.array(names, type=pa.string()), "ok": pa.array(ok, type=pa.bool_()),
                                    "error": pa.array(errors, type=pa.string())}
        empty = np.zeros(0, dtype=np.float32)
        if self.task == "embed":
            out["clip_embedding"] = _vectors([r.embeddings.clip if r.ok else empty for r in results])
            if self.frames:
                out["frame_embeddings"] = _vectors([r.embeddings.frame if r.ok else empty for r in results])
                out["frame_times"] = _vectors([r.embeddings.frame_times if r.ok else empty for r in results])
        else:
            preds = [r.prediction if r.ok else None for r in results]
            out["top_scene"] = pa.array([p.top_scene if p else "" for p in preds], type=pa.string())
            out["scene_probs"] = _vectors([p.scene_probs if p else empty for p in preds])
            out["tag_probs"] = _vectors([p.tag_probs if p else empty for p in preds])
            out["events"] = pa.array([json.dumps([[float(on), float(off), str(label)] for on, off, label in p.events])
                                      if p else "[]" for p in preds], type=pa.string())
        return out


def _vectors(arrays: list[np.ndarray]) -> pa.Array:
    """One ``large_list<float>`` column of the arrays, flattened to float32 (a failed row's is empty, not null:
    ``np.asarray(None, dtype=np.float32)`` is NaN). 64-bit offsets: a batch of long clips' frames can pass 2**31."""
    import pyarrow as pa

    return pa.array([np.asarray(a, dtype=np.float32).reshape(-1) for a in arrays], type=pa.large_list(pa.float32()))


def _column(name: str, values: Any) -> pa.Array:
    """An input column that travels with its rows, as Arrow: a tensor column (more than one dimension) as Arrow's
    fixed-shape tensor, anything else by pyarrow's own inference.

    Raises:
        ValueError: a column pyarrow cannot hold (Python objects of no Arrow type).
    """
    import pyarrow as pa

    values = np.asarray(values)
    try:
        if values.ndim > 1:
            return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"Column {name!r} travels with its rows but has no Arrow type: {e}") from e
