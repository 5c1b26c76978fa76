"""``embed --format parquet`` and ``read_embeddings``: the Parquet shards hold the ``.npz`` values bit for bit, are
built after sharded runs by a rerun, load in pandas (and Hugging Face ``datasets`` when installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa  # the parquet extra, in the test extra: never skipped
import pyarrow.parquet
import pytest
import soundfile as sf

from dcasenet_hub import read_embeddings
from dcasenet_hub.batch import read_index
from dcasenet_hub.batch.tables import write_parquet
from dcasenet_hub.cli import main


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", 0.1 * rng.standard_normal(2 * 16000), 16000)
    sf.write(root / "sub" / "b.flac", 0.1 * rng.standard_normal(int(3.3 * 24000)), 24000)
    sf.write(root / "c.wav", 0.1 * rng.standard_normal(int(1.5 * 24000)), 24000)
    return root


def _npz(out: Path) -> dict[str, dict]:
    got = {}
    for p in sorted(out.rglob("*.npz")):
        with np.load(p) as z:
            got[p.relative_to(out).with_suffix("").as_posix()] = {k: z[k] for k in ("clip", "frame", "frame_times")}
    return got


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()



def test_parquet_is_built_into_a_relative_output_folder(folder, tmp_path, authors_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # -o as a newcomer types it: relative to the working directory
    assert main(["embed", str(folder), "-o", "emb/", "--model", str(authors_checkpoint), "-q", "--format",
                 "parquet"]) == 0, capsys.readouterr().err
    table = read_embeddings(tmp_path / "emb")
    assert sorted(Path(n).with_suffix("").as_posix() for n in table.clip_files) == sorted(_npz(tmp_path / "emb"))
    assert len(table.clip_files) == 3 and len(table.frame_files) > 3
    assert repr(table) == f"EmbeddingTable(3 inputs, clip=(3, 512), frame={table.frame.shape})"  # never the arrays

def test_parquet_equals_npz_bit_for_bit_and_is_built_after_shards(folder, tmp_path, authors_checkpoint, caplog):
    out = tmp_path / "emb"
    base = ["embed", str(folder), "-o", str(out), "--model", str(authors_checkpoint), "-q", "--format", "parquet"]
    assert main([*base, "--shard", "1/2"]) == 0 and main([*base, "--shard", "2/2"]) == 0
    assert not list((out / "parquet").rglob("*.parquet"))  # a shard never builds the folder's table
    assert "run the command again without --shard" in caplog.text
    assert main(base) == 0  # every input skipped, the Parquet files built
    assert {r["status"] for r in read_index(out / "index.csv")} == {"ok"}  # complete (this run skipped them)
    npz = _npz(out)
    table = read_embeddings(out)
    names = [Path(n).with_suffix("").as_posix() for n in table.clip_files]
    assert sorted(names) == sorted(npz) and len(names) == 3
    for i, name in enumerate(names):
        assert _same_bits(table.clip[i], npz[name]["clip"])
        file = table.clip_files[i]
        assert _same_bits(table.frames_of(file), npz[name]["frame"])
        assert _same_bits(table.frame_times[table.frame_files == file], npz[name]["frame_times"])
    # the .npz path of read_embeddings gives the same arrays
    parquet_dir = out / "parquet"
    parquet_dir.rename(tmp_path / "moved")
    from_npz = read_embeddings(out)
    (tmp_path / "moved").rename(parquet_dir)
    for field in ("clip", "frame", "frame_times", "frame_start", "frame_end"):
        assert _same_bits(getattr(from_npz, field), getattr(table, field)), field
    assert list(from_npz.clip_files) == list(table.clip_files)
    # several shards when they are small; schema: fixed-size float32 lists
    written = write_parquet(out, read_index(out / "index.csv"), rows_per_shard=3)
    assert len([p for p in written if p.parent.name == "frame"]) > 1
    small = read_embeddings(out)
    assert _same_bits(small.frame, table.frame) and _same_bits(small.clip, table.clip)
    schema = pa.parquet.read_schema(written[0])
    assert str(schema.field("embedding").type) in ("fixed_size_list<element: float>[512]",
                                                   "fixed_size_list<item: float>[512]")


def test_a_rerun_without_format_parquet_rebuilds_the_tables_an_earlier_run_built(folder, tmp_path,
                                                                                  authors_checkpoint):
    """embed --format parquet, then embed --hop 0.4 (no --format): every .npz is recomputed, and the tables follow.

    Broken variant caught: tables built only when this run asks for them, so read_embeddings returned the hop-0.8
    frames from the old tables while every .npz held hop-0.4 frames (and, after a predict run over the folder, rows
    index.csv no longer lists).
    """
    out = tmp_path / "emb"
    base = ["embed", str(folder), "-o", str(out), "--model", str(authors_checkpoint), "-q"]
    assert main([*base, "--format", "parquet"]) == 0
    assert main([*base, "--hop", "0.4"]) == 0
    npz = _npz(out)
    table = read_embeddings(out)
    assert (out / "parquet").is_dir()
    for file in table.clip_files:
        assert _same_bits(table.frames_of(file), npz[Path(file).with_suffix("").as_posix()]["frame"]), file
    # a predict run over the folder: index.csv lists no .npz any more, nor do the tables
    assert main(["predict", *base[1:]]) == 0
    assert not list((out / "parquet").rglob("*.parquet"))


def test_parquet_loads_in_pandas_and_datasets(folder, tmp_path, authors_checkpoint):
    import datasets  # in the test extra
    import pandas as pd

    out = tmp_path / "emb"
    assert main(["embed", str(folder), "-o", str(out), "--model", str(authors_checkpoint), "-q",
                 "--format", "parquet", "--level", "clip"]) == 0
    frame = pd.read_parquet(out / "parquet" / "clip")
    assert list(frame.columns) == ["file", "start", "end", "embedding"] and len(frame) == 3
    table = read_embeddings(out)
    row = frame.set_index("file").loc[table.clip_files[0]]
    assert _same_bits(np.asarray(row["embedding"], dtype=np.float32), table.clip[0])
    assert not (out / "parquet" / "frame").exists() or not list((out / "parquet" / "frame").iterdir())
    ds = datasets.load_dataset("parquet", data_files=str(out / "parquet" / "clip" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 3
    assert _same_bits(np.asarray(ds.with_format("numpy")["embedding"], dtype=np.float32)[0],
                      table.clip[list(table.clip_files).index(ds[0]["file"])])
    json.dumps(ds.features.to_dict())  # a plain schema


def test_parquet_without_pyarrow_is_a_usage_error_before_any_work(tmp_path, monkeypatch, capsys, folder):
    import builtins

    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    out = tmp_path / "emb"
    assert main(["embed", str(folder), "-o", str(out), "--format", "parquet"]) == 2
    assert 'pip install "dcasenet-hub[parquet]"' in capsys.readouterr().err
    assert not out.exists()
