"""``dcasenet_hub.integrations.ray`` on a local Ray with 2 CPU workers (needs the ``ray`` extra; ``integration``).

Results through Ray equal a single-process run of the same class exactly, for paths, bytes and arrays in; a worker
killed (SIGKILL) in the middle of a batch has that batch retried by Ray, and every input comes out exactly once.
"""

from __future__ import annotations

import os
import signal
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
    ref = local({"path": np.array(paths, dtype=object)})
    ref_rows = _by_path([{k: ref[k][i] for k in ref} for i in range(len(paths))])
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
                 "sample_rate": np.array([SR] * len(items))})
    got = ray.data.from_items(items).map_batches(
        DcaseNetBatch, fn_constructor_kwargs={"model": str(model_dir), "task": "predict", "device": "cpu"},
        batch_size=3, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1).take_all()
    # rows come back in any order: the id column travels with each row
    assert sorted(int(row["id"]) for row in got) == list(range(len(items)))
    for row in got:
        i = int(row["id"])
        assert row["ok"] and row["top_scene"] == ref["top_scene"][i] and row["events"] == ref["events"][i]
        for c in ("scene_probs", "tag_probs"):
            assert np.array_equal(np.asarray(row[c]), ref[c][i])


def test_killed_worker_batch_is_retried_nothing_lost_or_duplicated(ray_local, corpus, tmp_path):
    ray = ray_local
    model_dir, paths = corpus
    flag = tmp_path / "killed"
    ref = DcaseNetBatch(str(model_dir), device="cpu")({"path": np.array(paths, dtype=object)})
    ref_rows = _by_path([{k: ref[k][i] for k in ref} for i in range(len(paths))])
    ds = ray.data.from_items([{"path": p} for p in paths]).map_batches(
        KillOnce, fn_constructor_kwargs={"model": str(model_dir), "device": "cpu", "flag": str(flag),
                                         "victim": "clip5.wav"},
        batch_size=2, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)  # Ray Data's default: restart, retry
    got = _by_path(ds.take_all())
    assert flag.exists(), "no worker was killed: the test did not test a retry"
    assert sorted(got) == paths
    for p in paths:
        _same(got[p], ref_rows[p], ("clip_embedding",))
