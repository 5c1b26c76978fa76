"""Embeddings of a whole output folder as one table: sharded Parquet files (``embed --format parquet``) and
:func:`read_embeddings`, which loads either the Parquet shards or the ``.npz`` files into numpy arrays.

The ``.npz`` file of each input stays the unit of work and of resuming (written atomically as the input finishes);
at the end of every run the Parquet shards are rebuilt from the ``.npz`` files of every complete input of
``index.csv``, streaming: at most ``rows_per_shard`` rows are in memory at once, and each shard is written
atomically. So the values are the ``.npz`` values bit for bit, a killed run resumes like any other, and a reader
never sees a half-written shard. pyarrow is the ``parquet`` extra.

Layout (``OUTDIR/parquet/``, one dataset per folder): ``clip/part-00000.parquet ...`` with ``file`` (the input's path relative to its root),
``start`` (0.0), ``end`` (the input's duration, s) and ``embedding`` (``fixed_size_list<float32>[D]``);
``frame/part-00000.parquet ...`` with ``file``, ``time`` (the frame's centre, float32, ``frame_times``), ``start`` and
``end`` (the span the frame sees: ``time`` -/+ 0.4 s for the gru and conv layers, the 5 s crop for ``scene``,
clipped to the input) and ``embedding``. pandas, polars, DuckDB and Hugging Face ``datasets`` read the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dcasenet_hub._io import atomic_write
from dcasenet_hub.batch.index import read_index

#: Rows of one Parquet shard (frames or clips); a shard of 512-d float32 rows is about 100 MB at this size.
ROWS_PER_SHARD = 50_000
#: What ``embed`` writes per input: ``.npz`` files, plus the folder's Parquet shards with ``"parquet"``.
EMBEDDING_FORMATS = ("npz", "parquet")
PARQUET_DIR = "parquet"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError('Parquet outputs need pyarrow, which is not installed: pip install "dcasenet-hub[parquet]"'
                          ) from None
    return pyarrow


def _rel_name(row: dict[str, str], out_dir: Path, suffix: str) -> str:
    from dcasenet_hub.batch.index import display

    output = os.path.relpath(Path(out_dir) / row["output"][: -len(suffix)], out_dir)
    return display(Path(output).as_posix() + Path(row["input"]).suffix)


def _complete(out_dir: Path, rows: Sequence[dict[str, str]], suffix: str) -> list[tuple[str, Path]]:
    return [(_rel_name(r, out_dir, suffix), Path(out_dir) / r["output"]) for r in rows
            if r.get("status") in ("ok", "skipped") and r.get("output", "").endswith(suffix)]


def _span(meta: dict[str, Any]) -> float:
    return 5.0 if meta.get("layer") == "scene" else 0.8


class _ShardWriter:
    """Rows appended in order, written as ``<kind>/part-NNNNN.parquet`` every ``rows_per_shard`` rows (atomically)."""

    def __init__(self, folder: Path, kind: str, rows_per_shard: int, metadata: dict[str, str]) -> None:
        self.pa = _pyarrow()
        self.folder, self.kind, self.limit, self.metadata = folder, kind, rows_per_shard, metadata
        self.columns: dict[str, list[np.ndarray]] = {}
        self.rows = 0
        self.written: list[Path] = []

    def add(self, **columns: np.ndarray) -> None:
        n = len(next(iter(columns.values())))
        start = 0
        while start < n:
            take = min(n - start, self.limit - self.rows)
            for k, v in columns.items():
                self.columns.setdefault(k, []).append(v[start: start + take])
            self.rows += take
            start += take
            if self.rows >= self.limit:
                self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        pa = self.pa
        arrays = {}
        for k, parts in self.columns.items():
            v = np.concatenate(parts)
            if v.ndim == 2:
                arrays[k] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), type=pa.float32()), v.shape[1])
            else:
                arrays[k] = pa.array(v)
        table = pa.table(arrays).replace_schema_metadata({**self.metadata})
        path = self.folder / f"part-{len(self.written):05d}.parquet"
        atomic_write(path, lambda tmp: pa.parquet.write_table(table, tmp))
        self.written.append(path)
        self.columns, self.rows = {}, 0


def write_parquet(out_dir: str | Path, rows: Sequence[dict[str, str]], *,
                  rows_per_shard: int = ROWS_PER_SHARD) -> list[Path]:
    """(Re)build ``OUTDIR/parquet/`` from the ``.npz`` files of every complete input of index ``rows`` (outputs
    named relative to ``out_dir``, as in ``index.csv``).

    Shards left from an earlier, larger run (higher numbers) are removed, so the folder holds this index only.

    Returns:
        The shard files written.
    """
    out_dir = Path(out_dir)
    folder = out_dir / PARQUET_DIR
    for kind in ("clip", "frame"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    writers: dict[str, _ShardWriter] = {}
    for name, path in _complete(out_dir, rows, ".npz"):
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            info = {"layer": str(meta.get("layer")), "hop_s": str(meta.get("hop_s")),
                    "model_id": str(meta.get("model_id")), "pooling": str(meta.get("pooling"))}
            duration = float(meta.get("duration_s") or 0.0)
            if "clip" in z:
                w = writers.setdefault("clip", _ShardWriter(folder / "clip", "clip", rows_per_shard, info))
                w.add(file=np.array([name]), start=np.zeros(1), end=np.array([duration]),
                      embedding=z["clip"].reshape(1, -1))
            if "frame" in z and len(z["frame"]):
                times = z["frame_times"]
                half = _span(meta) / 2
                w = writers.setdefault("frame", _ShardWriter(folder / "frame", "frame", rows_per_shard, info))
                w.add(file=np.array([name] * len(times)), time=times,
                      start=np.maximum(0.0, times.astype(np.float64) - half),
                      end=np.minimum(duration, times.astype(np.float64) + half) if duration else times + half,
                      embedding=z["frame"])
    written = []
    for w in writers.values():
        w.flush()
        written += w.written
    for stale in folder.glob("*/part-*.parquet"):
        if stale not in written:
            stale.unlink()
    return written


@dataclass
class EmbeddingTable:
    """Embeddings of an output folder in memory.

    Attributes:
        clip: ``(N, D)`` float32, one row per input; ``clip_files`` their names (``file`` of the Parquet shards).
        frame: ``(M, D)`` float32, the frames of all inputs in order; ``frame_files``, ``frame_times`` (centres,
            float32), ``frame_start`` and ``frame_end`` (s) per row.
    """

    clip: np.ndarray
    clip_files: np.ndarray
    frame: np.ndarray
    frame_files: np.ndarray
    frame_times: np.ndarray
    frame_start: np.ndarray
    frame_end: np.ndarray

    def frames_of(self, file: str) -> np.ndarray:
        """The ``(T, D)`` frame embeddings of one input."""
        return self.frame[self.frame_files == file]

    def __repr__(self) -> str:
        """One line: how many inputs and frames, and the shapes; never the arrays.

        Example:
            >>> table                                   # doctest: +SKIP
            EmbeddingTable(120 inputs, clip=(120, 512), frame=(1440, 512))
        """
        return (f"EmbeddingTable({len(self.clip_files)} inputs, clip={tuple(self.clip.shape)}, "
                f"frame={tuple(self.frame.shape)})")


def read_embeddings(out_dir: str | Path) -> EmbeddingTable:
    """Load the embeddings of an ``embed`` output folder: its Parquet shards if it has them, else its ``.npz`` files.

    Inputs come in ``index.csv`` order (complete ones only). The arrays are the files' values bit for bit.

    Example:
        >>> table = read_embeddings("emb/")                        # doctest: +SKIP
        >>> table.clip.shape, table.clip_files[:2]                 # doctest: +SKIP
        ((120, 512), array(['street/a.wav', 'park/b.flac'], dtype=object))
    """
    out_dir = Path(out_dir)
    shards = sorted((out_dir / PARQUET_DIR).glob("*/part-*.parquet"))
    if shards:
        pa = _pyarrow()

        def load(kind: str) -> Any:
            parts = [pa.parquet.read_table(p) for p in shards if p.parent.name == kind]
            return pa.concat_tables(parts) if parts else None

        def matrix(table: Any) -> np.ndarray:
            col = table.column("embedding").combine_chunks()
            return col.values.to_numpy().reshape(len(col), col.type.list_size) if len(col) else np.zeros((0, 0),
                                                                                                          np.float32)

        clips, frames = load("clip"), load("frame")
        empty = np.zeros(0)
        return EmbeddingTable(
            clip=matrix(clips) if clips is not None else np.zeros((0, 0), np.float32),
            clip_files=np.array(clips.column("file").to_pylist(), dtype=object) if clips is not None else empty,
            frame=matrix(frames) if frames is not None else np.zeros((0, 0), np.float32),
            frame_files=np.array(frames.column("file").to_pylist(), dtype=object) if frames is not None else empty,
            frame_times=frames.column("time").to_numpy() if frames is not None else empty,
            frame_start=frames.column("start").to_numpy() if frames is not None else empty,
            frame_end=frames.column("end").to_numpy() if frames is not None else empty)
    done = _complete(out_dir, read_index(out_dir / "index.csv"), ".npz")
    if not done:
        raise FileNotFoundError(f"{out_dir}: no embeddings (no complete input in index.csv); run `dcasenet-hub embed "
                              f"... -o {out_dir}` first")
    clips, clip_files, frames, frame_files, times, starts, ends = [], [], [], [], [], [], []
    for name, path in done:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if "clip" in z:
                clips.append(z["clip"])
                clip_files.append(name)
            if "frame" in z:
                t = z["frame_times"]
                half, duration = _span(meta) / 2, float(meta.get("duration_s") or 0.0)
                frames.append(z["frame"])
                frame_files += [name] * len(t)
                times.append(t)
                starts.append(np.maximum(0.0, t.astype(np.float64) - half))
                ends.append(np.minimum(duration, t.astype(np.float64) + half) if duration else t + half)
    return EmbeddingTable(
        clip=np.stack(clips) if clips else np.zeros((0, 0), np.float32), clip_files=np.array(clip_files, dtype=object),
        frame=np.concatenate(frames) if frames else np.zeros((0, 0), np.float32),
        frame_files=np.array(frame_files, dtype=object),
        frame_times=np.concatenate(times) if times else np.zeros(0, np.float32),
        frame_start=np.concatenate(starts) if starts else np.zeros(0), frame_end=np.concatenate(ends) if ends else
        np.zeros(0))
