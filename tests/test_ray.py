"""``dcasenet_hub.integrations.ray`` on a local Ray with 2 CPU workers (needs the ``ray`` extra; ``integration``).

Results through Ray equal a single-process run of the same class exactly, for paths, bytes and arrays in; a worker
killed (SIGKILL) in the middle of a batch has that batch retried by Ray, and every input comes out exactly once; a
Parquet folder written from batches with and without a failed row reads as one table in pyarrow alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.integrations.ray import DcaseNetBatch

pytestmark = pytest.mark.integration

SR = 24000


class KillOnce(DcaseNetBatch):
    """Kills its own worker process (SIGKILL) the first time it meets the marked file, in the middle of a batch."""

    def __init__(self, *args, flag: str, victim: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.flag, self.victim = Path(flag), victim

    def __call__(self, batch):
        if any(str(p).endswith(self.victim) for p in batch["path"]) and not self.flag.exists():
            self.flag.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # KillOnce is defined here, not in the package
    # 2 CPUs for the 2 worker actors (num_cpus=1 each) and 1 for the read tasks that feed them (with only 2, the
    # actors hold both and a read task waits for ever)
    # workers at normal priority: Ray nices them by default, which starves them on a machine shared with other jobs
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _system_config={"worker_niceness": 0})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A saved model folder, 8 short WAV files of different content and lengths, and one file that is not audio."""
    from dcasenet_hub import build_model

    root = tmp_path_factory.mktemp("ray")
    model = build_model("v3", seed=0).eval()
    model.save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        t = np.arange(int(SR * (2.0 + 0.5 * i))) / SR
        x = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t) * (t % 1 < 0.5)
        path = root / "audio" / f"clip{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, x.astype(np.float32), SR)
        paths.append(str(path))
    bad = root / "audio" / "broken.wav"
    bad.write_bytes(b"not audio at all")
    return root / "model", sorted(paths + [str(bad)])


def _by_path(rows) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in rows:
        assert row["path"] not in out, f"duplicated row {row['path']}"
        out[row["path"]] = row
    return out


def _same(a: dict, b: dict, columns: tuple[str, ...]) -> None:
    assert bool(a["ok"]) == bool(b["ok"]) and a["error"] == b["error"]
    for c in columns:
        assert np.array_equal(np.asarray(a[c], dtype=np.float32), np.asarray(b[c], dtype=np.float32)), c


def test_ray_equals_single_process_for_paths_and_bytes(ray_local, corpus):
    ray = ray_local
    model_dir, paths = corpus
    local = DcaseNetBatch(str(model_dir), device="cpu")
    ref_rows = _by_path(local({"path": np.array(paths, dtype=object)}).to_pylist())
    assert sum(r["ok"] for r in ref_rows.values()) == 8
    broken = next(p for p in paths if p.endswith("broken.wav"))
    assert not ref_rows[broken]["ok"] and "broken.wav" in ref_rows[broken]["error"]
    kwargs = {"fn_constructor_kwargs": {"model": str(model_dir), "device": "cpu"}, "batch_size": 2,
              "compute": ray.data.ActorPoolStrategy(size=2), "num_cpus": 1}
    got = _by_path(ray.data.from_items([{"path": p} for p in paths]).map_batches(DcaseNetBatch, **kwargs).take_all())
    assert sorted(got) == paths
    for p in paths:
        _same(got[p], ref_rows[p], ("clip_embedding",))
    raw = ray.data.read_binary_files(str(Path(paths[0]).parent), include_paths=True)
    from_bytes = _by_path(raw.map_batches(DcaseNetBatch, **kwargs).take_all())
    assert len(from_bytes) == 9
    for p in paths:
        key = next(k for k in from_bytes if k.endswith(Path(p).name))
        _same(from_bytes[key], ref_rows[p], ("clip_embedding",))
        if not ref_rows[p]["ok"]:
            assert Path(p).name in from_bytes[key]["error"] and "dcasenet-ray-" not in from_bytes[key]["error"]


def test_ray_predictions_from_arrays_equal_single_process(ray_local, corpus):
    ray = ray_local
    model_dir, paths = corpus
    good = [p for p in paths if not p.endswith("broken.wav")]
    items = [{"id": i, "audio": sf.read(p, dtype="float32")[0], "sample_rate": SR} for i, p in enumerate(good)]
    local = DcaseNetBatch(str(model_dir), task="predict", device="cpu")
    ref = local({"audio": np.array([i["audio"] for i in items], dtype=object),
                 "sample_rate": np.array([SR] * len(items))}).to_pylist()
    got = ray.data.from_items(items).map_batches(
        DcaseNetBatch, fn_constructor_kwargs={"model": str(model_dir), "task": "predict", "device": "cpu"},
        batch_size=3, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1).take_all()
    # rows come back in any order: the id column travels with each row
    assert sorted(int(row["id"]) for row in got) == list(range(len(items)))
    for row in got:
        i = int(row["id"])
        assert row["ok"] and row["top_scene"] == ref[i]["top_scene"] and row["events"] == ref[i]["events"]
        for c in ("scene_probs", "tag_probs"):
            assert np.array_equal(np.asarray(row[c], dtype=np.float32), np.asarray(ref[i][c], dtype=np.float32))


def test_killed_worker_batch_is_retried_nothing_lost_or_duplicated(ray_local, corpus, tmp_path):
    ray = ray_local
    model_dir, paths = corpus
    flag = tmp_path / "killed"
    ref = DcaseNetBatch(str(model_dir), device="cpu")({"path": np.array(paths, dtype=object)})
    ref_rows = _by_path(ref.to_pylist())
    ds = ray.data.from_items([{"path": p} for p in paths]).map_batches(
        KillOnce, fn_constructor_kwargs={"model": str(model_dir), "device": "cpu", "flag": str(flag),
                                         "victim": "clip5.wav"},
        batch_size=2, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)  # Ray Data's default: restart, retry
    got = _by_path(ds.take_all())
    assert flag.exists(), "no worker was killed: the test did not test a retry"
    assert sorted(got) == paths
    for p in paths:
        _same(got[p], ref_rows[p], ("clip_embedding",))


#: Reads a Parquet folder in a process that never imports ray (so no Ray extension type is registered), as pandas,
#: DuckDB or polars users read it: each file's schema and oks, then the folder as one table.
_READ_WITH_PYARROW_ALONE = """
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
folder = Path(sys.argv[1])
files = sorted(folder.glob("*.parquet"))
schemas = [pq.read_schema(f).to_string(show_field_metadata=True, show_schema_metadata=False) for f in files]
oks = [pq.read_table(f, columns=["ok"]).column("ok").to_pylist() for f in files]
table = pq.read_table(folder)
assert "ray" not in sys.modules
print(json.dumps({"schemas": schemas, "oks": oks, "types": {f.name: str(f.type) for f in table.schema},
                  "rows": table.to_pylist()}))
"""


@pytest.mark.parametrize("task", ["embed", "predict"])
def test_parquet_folder_reads_as_one_table_in_pyarrow_alone_when_one_batch_has_a_failed_row(ray_local, corpus,
                                                                                            tmp_path, task):
    """A batch with a failed row and batches without one write files of one schema: pyarrow alone reads the folder,
    good rows equal one process's results, the failed row is marked failed and its vectors are empty."""
    ray = ray_local
    model_dir, paths = corpus
    # sorted: broken.wav, clip0, clip1, clip2; batches of 2 put the failed row with clip0 and none with clip1, clip2
    chosen = [p for p in paths if Path(p).name in ("broken.wav", "clip0.wav", "clip1.wav", "clip2.wav")]
    kwargs = {"model": str(model_dir), "task": task, "device": "cpu", "frames": task == "embed"}
    vectors = ("clip_embedding", "frame_embeddings", "frame_times") if task == "embed" else ("scene_probs",
                                                                                          "tag_probs")
    folder = tmp_path / "parquet"
    ray.data.from_items([{"path": p} for p in chosen]).map_batches(
        DcaseNetBatch, fn_constructor_kwargs=kwargs, batch_size=2, compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=1).write_parquet(str(folder))
    done = subprocess.run([sys.executable, "-c", _READ_WITH_PYARROW_ALONE, str(folder)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    read = json.loads(done.stdout)
    assert any(not all(oks) for oks in read["oks"]) and any(all(oks) for oks in read["oks"]), read["oks"]
    assert len(set(read["schemas"])) == 1, read["schemas"]
    assert "ARROW:extension" not in read["schemas"][0], read["schemas"][0]
    for c in vectors:
        assert read["types"][c].startswith("large_list<") and read["types"][c].endswith(": float>"), read["types"]
    got = _by_path(read["rows"])
    assert sorted(got) == chosen
    ref = _by_path(DcaseNetBatch(**kwargs)({"path": np.array(chosen, dtype=object)}).to_pylist())
    for p in chosen:
        row = got[p]
        assert all(np.isfinite(np.asarray(row[c], dtype=np.float64)).all() for c in vectors), p
        if Path(p).name == "broken.wav":
            assert row["ok"] is False and "broken.wav" in row["error"], row
            assert all(row[c] == [] for c in vectors), {c: row[c][:3] for c in vectors}
            if task == "predict":
                assert row["top_scene"] == "" and row["events"] == "[]"
            continue
        assert row["ok"] is True and row["error"] == "" and all(len(row[c]) > 0 for c in vectors), p
        _same(row, ref[p], vectors)
        if task == "predict":
            assert row["top_scene"] == ref[p]["top_scene"] and row["events"] == ref[p]["events"]
