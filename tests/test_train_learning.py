"""The joint trainer learns: a short joint run of each architecture on the miniature data must put every task
clearly above chance. The ``ci`` profile (200 iterations of the full recipe code path at batch 4/8/4 with short crops,
about 4 minutes per architecture on 2 cores) runs in the default test run; the ``long`` profile (longer crops, all 14
event classes, 5 evaluations) is the earlier, slower check. Run as a script to print the numbers:

    python tests/test_train_learning.py [--profile ci|long] [--arch v3] [--iterations 300] [--out DIR]

Chance levels are measured on the same evaluation data: ASC 1/10 (balanced scenes); TAG the lwlrap of a constant
score equal to the training label frequencies (the best audio-blind ranking; random scores are lower); SED the paper
metric of predicting every training-frequent class everywhere and of predicting nothing (F1 0, ER 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytest

ARCHS = ("v1", "v2", "v3")
_MINI = {"asc_train_per_scene": 4, "asc_eval_per_scene": 2, "asc_duration": 4.0, "tag_clips": 60, "tag_labels": 6,
         "tag_duration": (1.5, 3.0), "sed_folds": (1, 3, 4, 5, 6), "sed_files_per_fold": 2, "sed_duration": 20.0}
# small enough for 2 CPU cores; every "overrides" value is a recipe override (mixup, the cosine schedule with its
# restart, best-checkpoint export and per-epoch evaluation all run)
PROFILES = {
    "ci": {  # ~1 s per iteration for every architecture on 2 cores
        "iterations": 200,
        "epochs": 2,
        "overrides": {"batch_size": {"asc": 4, "tag": 8, "sed": 4},
                      "crop_seconds": {"asc": 0.8, "tag": 0.8, "sed": 1.6},  # 40 / 40 / 80 frames: the minimum 40
                      "mixup_from_epoch": 1, "t0_epochs": 2},
        # 4 of the 14 event classes: each gets enough events for the event head to cross the 0.3 threshold
        # tag clips no longer than twice the crop, so a crop rarely misses the labelled sound
        "mini": {**_MINI, "tag_duration": (0.8, 1.6), "sed_classes": 4},
    },
    "long": {  # 12-29 min per architecture on one thread
        "iterations": 200,
        "epochs": 5,
        "overrides": {"batch_size": {"asc": 4, "tag": 4, "sed": 4},
                      "crop_seconds": {"asc": 1.6, "tag": 1.6, "sed": 3.2},
                      "mixup_from_epoch": 3, "t0_epochs": 5},
        "mini": _MINI,
    },
}


def chance_levels(roots, mini: dict) -> dict[str, float]:
    """Audio-blind baselines on the evaluation splits (same metrics as the trainer)."""
    from dcasenet_hub import metrics
    from dcasenet_hub.train.datasets import sed_items, tag_items

    out = {"asc_acc": 10.0}
    tr, ev = tag_items(roots.tag, "train"), tag_items(roots.tag, "evaluate")
    prior = np.mean([it.target for it in tr], axis=0)
    truth = np.stack([it.target for it in ev])
    rng = np.random.default_rng(0)
    out["tag_lwlrap_prior"] = 100 * metrics.lwlrap(truth, prior[None].repeat(len(ev), 0) + 1e-9 * rng.random(truth.shape))
    out["tag_lwlrap_random"] = 100 * np.mean([metrics.lwlrap(truth, rng.random(truth.shape)) for _ in range(20)])
    sed_tr = sed_items(roots.sed, "train")
    n = round(mini["sed_duration"] * 10)
    freq = np.mean([it.target[:n] for it in sed_tr], axis=(0, 1))
    refs = [it.target[:n] for it in sed_items(roots.sed, "evaluate")[::4]]
    truth_frames = np.concatenate(refs)
    out["sed_frame_map_prior"] = 100 * metrics.mean_average_precision(
        truth_frames[:, truth_frames.any(0)], np.broadcast_to(freq, truth_frames.shape)[:, truth_frames.any(0)]
        + 1e-9 * rng.random((len(truth_frames), int(truth_frames.any(0).sum()))))
    frequent = [np.repeat((freq > np.median(freq))[None].astype(float), n, 0) for _ in refs]
    s = metrics.sed_scores(frequent, refs, protocol="paper", threshold=0.5)
    out["sed_f1_frequent"], out["sed_er_frequent"] = 100 * s.f1, s.er
    return out


def learning_run(arch: str, out: Path, *, profile: str = "ci", iterations: int | None = None,
                 epochs: int | None = None, workers: int = 0, threads: int | None = None) -> dict:
    """Joint run of ``arch`` with the profile's settings under ``out`` (mini data and feature cache are shared by
    runs in the same ``out``); returns the metrics log's first / last rows, the best values and the chance levels."""
    import torch

    from dcasenet_hub.train import train
    from dcasenet_hub.train.minidata import make_mini_datasets

    cfg = PROFILES[profile]
    iterations, epochs = iterations or cfg["iterations"], epochs or cfg["epochs"]
    roots = make_mini_datasets(out / "mini", progress=False, **cfg["mini"])
    ov = {**cfg["overrides"], "epochs": epochs, "iterations_per_epoch": max(1, iterations // epochs)}
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        t0 = time.time()
        res = train(f"{arch}-asc-tag-sed", out_dir=out / f"run-{arch}", asc_root=roots.asc, tag_root=roots.tag,
                    sed_root=roots.sed, cache_dir=out / "cache", overrides=ov, stages=["joint"], progress=False,
                    workers=workers, seed=0)
        seconds = round(time.time() - t0, 1)
    finally:
        torch.set_num_threads(before)
    hist = res.history["joint"]
    return {"sed_frame_map": sed_frame_map(out / f"run-{arch}" / "joint" / "last.pt", arch, roots, out / "cache"),
            "arch": arch, "profile": profile, "iterations": hist[-1]["iterations"], "seconds": seconds,
            "first": hist[0], "last": hist[-1],
            "best": {k: (min if k == "sed_er" else max)(r[k] for r in hist)
                     for k in ("asc_acc", "tag_lwlrap", "sed_f1", "sed_er")},
            "chance": chance_levels(roots, cfg["mini"])}


def sed_frame_map(state_path: Path, arch: str, roots, cache: Path) -> float:
    """Frame-level mean average precision (classes active in the evaluation data) of the last weights' event
    probabilities, channels averaged: a threshold-free view of how much the event head learned."""
    import torch

    from dcasenet_hub import build_model, metrics
    from dcasenet_hub.train.evaluation import eval_set, prepared_stores

    model = build_model(arch)
    model.load_state_dict(torch.load(state_path, weights_only=True)["model"])
    model.eval()
    stores, items = prepared_stores({"sed": roots.sed}, ["eval"], cache_dir=cache, workers=0, progress=False,
                                     memory=False)
    ds = eval_set("sed", items["sed"]["eval"], stores["sed"], config=model.config)
    probs: dict[str, list] = {}
    truth: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i in range(len(ds)):
            x, y, key, _ = ds[i]
            p = model(x, tasks=("events",)).event_probs[0].numpy()
            probs.setdefault(key, []).append(p)
            truth[key] = y[: p.shape[0]]
    scores = np.concatenate([np.mean(v, axis=0) for v in probs.values()])
    ref = np.concatenate([truth[k] for k in probs])
    active = ref.any(0)
    return 100 * metrics.mean_average_precision(ref[:, active], scores[:, active])


@pytest.fixture(scope="module")
def learning_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("learning")  # mini data and feature cache shared by the three runs


def _cpu_kind() -> str:
    """The CPU model and whether it has native bf16 (the learning trajectories differ between CPU kinds)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cpu unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    native = sorted({f for f in ("amx_bf16", "avx512_bf16") if f in info})
    return f"{model}, native bf16: {' '.join(native) or 'no'}"


def _summary(r: dict) -> str:
    """One line: last / best of each metric, the chance levels, the time and the CPU kind."""
    last, best, ch = r["last"], r["best"], r["chance"]
    return (f"{r['arch']} {r['profile']} {r['iterations']} it {r['seconds']:.0f} s on {_cpu_kind()}: "
            f"ASC acc {last['asc_acc']:.1f}/{best['asc_acc']:.1f} (chance {ch['asc_acc']:.0f}); "
            f"TAG lwlrap {last['tag_lwlrap']:.1f}/{best['tag_lwlrap']:.1f} (prior {ch['tag_lwlrap_prior']:.1f}, "
            f"random {ch['tag_lwlrap_random']:.1f}); SED ER {last['sed_er']:.2f}/{best['sed_er']:.2f} "
            f"F1 {last['sed_f1']:.1f}/{best['sed_f1']:.1f} (nothing ER 1.00 F1 0; frequent everywhere ER "
            f"{ch['sed_er_frequent']:.2f} F1 {ch['sed_f1_frequent']:.1f}), frame mAP {r['sed_frame_map']:.1f} "
            f"(prior {ch['sed_frame_map_prior']:.1f}); losses " + ", ".join(
                f"{t} {r['first']['loss'][t]:.3f}->{last['loss'][t]:.3f}" for t in ("asc", "tag", "sed")))


@pytest.mark.learning
@pytest.mark.parametrize("arch", ARCHS)
def test_joint_training_learns_every_task(arch, learning_dir, learning_report):
    """200 joint iterations (ASC + TAG + SED each iteration, mixup in the second epoch) put every task's own
    metric clearly above its audio-blind baseline."""
    r = learning_run(arch, learning_dir, profile="ci")
    first, last, best, ch = r["first"], r["last"], r["best"], r["chance"]
    msg = _summary(r)  # also the assertion message
    learning_report.append(msg)
    assert r["iterations"] == 200 and not first["mixup"] and last["mixup"], msg
    assert last["asc_acc"] >= ch["asc_acc"] + 40, msg  # chance 10 %
    # The same seed follows another trajectory on another CPU kind's kernels (docs/training.md has both tables), so
    # each bar is set from the smallest gain over the audio-blind baseline seen on either kind: at half of it, far
    # from chance and with room for the spread between kinds (which reached 12 points). Best lwlrap over the label
    # prior (37.9): v1 +49.0 / +59.7, v2 +25.8 / +19.8, v3 +37.1 / +31.1 (AMD EPYC / Intel Xeon with AMX).
    assert best["tag_lwlrap"] >= ch["tag_lwlrap_prior"] + 10, msg  # the exported best-tag checkpoint
    # SED, paper protocol (5-s blocks) at the 0.3 threshold: predicting nothing gives ER 1 / F1 0; predicting the
    # data's 4 classes everywhere ER ~1.7 but F1 ~55 (most blocks hold most classes), so the error rate is the
    # audio-blind comparison and F1 only has to show detections
    # best ER: v1 0.50 / 0.67, v2 0.67 / 0.67, v3 0.33 / 0.33 against 1.00 for predicting nothing; best F1 v1 72.7 /
    # 59.3, v2 47.1 / 42.1, v3 76.2 / 78.3; frame mAP over the prior (17.8) v1 +45.5 / +33.4, v2 +56.9 / +42.3,
    # v3 +70.9 / +73.5
    assert best["sed_er"] <= 0.83 * min(1.0, ch["sed_er_frequent"]), msg
    assert best["sed_f1"] >= 25, msg
    assert r["sed_frame_map"] >= ch["sed_frame_map_prior"] + 16, msg  # threshold-free
    for task in ("asc", "tag", "sed"):
        assert last["loss"][task] < first["loss"][task], msg


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("arch", ARCHS)
def test_joint_training_learns_long_profile(arch, tmp_path, learning_report):
    """The earlier, longer check: 1.6 / 1.6 / 3.2 s crops, all 14 event classes, 5 evaluations, one thread."""
    r = learning_run(arch, tmp_path, profile="long", threads=1)
    first, last, best, ch = r["first"], r["last"], r["best"], r["chance"]
    msg = _summary(r)  # also the assertion message
    learning_report.append(msg)
    assert last["asc_acc"] >= ch["asc_acc"] + 20, msg
    assert best["tag_lwlrap"] >= ch["tag_lwlrap_prior"] + 15, msg
    assert r["sed_frame_map"] >= ch["sed_frame_map_prior"] + 10, msg  # with 14 classes F1 at 0.3 lags behind
    for task in ("asc", "tag", "sed"):
        assert last["loss"][task] < first["loss"][task], msg


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    ap.add_argument("--arch", action="append", choices=ARCHS)
    ap.add_argument("--iterations", type=int, help="default: the profile's")
    ap.add_argument("--epochs", type=int, help="default: the profile's")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path("learning-runs"))
    a = ap.parse_args()
    for arch in a.arch or ARCHS:
        r = learning_run(arch, a.out, profile=a.profile, iterations=a.iterations, epochs=a.epochs,
                         workers=a.workers, threads=a.threads)
        print(json.dumps(r, indent=1, default=float), _summary(r), sep="\n", flush=True)
