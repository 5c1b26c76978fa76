"""Dataset readers (official layouts, the authors' splits) on generated miniature datasets."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub import labels
from dcasenet_hub.train import datasets
from dcasenet_hub.train.minidata import make_mini_datasets

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_mini_datasets(
        tmp_path_factory.mktemp("mini"), seed=3, asc_train_per_scene=2, asc_eval_per_scene=1, asc_duration=6.0,
        tag_clips=12, tag_labels=5, tag_duration=(0.5, 1.0), sed_folds=(1, 2, 3), sed_files_per_fold=1,
        sed_formats=("mic", "foa"), progress=False,
    )


# --- TAG KFold split ---------------------------------------------------------------------------------------------------


def test_kfold_fold0_matches_authors_indices():
    train, evaluate = datasets.kfold_indices(4970)
    expected = np.load(FIXTURES / "tag_fold0_eval_indices.npy")
    assert np.array_equal(evaluate, expected)
    assert len(train) == 3976 and len(evaluate) == 994
    assert np.array_equal(np.union1d(train, evaluate), np.arange(4970)) and not np.intersect1d(train, evaluate).size


def test_kfold_fold_sizes_with_remainder_partition_the_rows():
    n = 13  # sizes 3, 3, 3, 2, 2
    evals = [datasets.kfold_indices(n, fold=k)[1] for k in range(5)]
    assert [len(e) for e in evals] == [3, 3, 3, 2, 2]
    assert np.array_equal(np.sort(np.concatenate(evals)), np.arange(n))
    perm = np.arange(n)
    np.random.RandomState(42).shuffle(perm)
    assert np.array_equal(evals[3], np.sort(perm[9:11]))


def test_kfold_equals_sklearn():
    model_selection = pytest.importorskip("sklearn.model_selection")
    for n in (11, 104, 4970):
        for k, (train, evaluate) in enumerate(model_selection.KFold(5, shuffle=True, random_state=42).split(range(n))):
            ours = datasets.kfold_indices(n, fold=k)
            assert np.array_equal(ours[0], train) and np.array_equal(ours[1], evaluate)


# --- ASC -----------------------------------------------------------------------------------------------------------------


def test_asc_items_split_sizes_labels_and_audio(mini):
    train = datasets.asc_items(mini.asc, "train")
    evaluate = datasets.asc_items(mini.asc, "evaluate")
    assert len(train) == 20 and len(evaluate) == 10
    for item in train + evaluate:
        assert labels.SCENES[item.target] == item.path.name.split("-")[0]
        assert item.channel is None and item.name == item.path.stem
    assert sorted({i.target for i in evaluate}) == list(range(10))
    # official setup: train and evaluation locations are disjoint
    loc = lambda i: "-".join(i.name.split("-")[1:3])
    assert not {loc(i) for i in train} & {loc(i) for i in evaluate}
    info = sf.info(str(train[0].path))
    assert (info.samplerate, info.channels, info.frames) == (44100, 1, 6 * 44100)
    # the parent folder and the 'eval' alias work too
    assert datasets.asc_items(mini.asc.parent, "eval") == evaluate


def test_asc_csv_formats_are_official(mini):
    with open(mini.asc / "meta.csv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["filename", "scene_label", "identifier", "source_label"]
    fname, scene, identifier, device = rows[1]
    assert fname.startswith("audio/") and fname.endswith(f"-{device}.wav") and fname[6:].startswith(scene + "-")
    assert identifier == "-".join(Path(fname).stem.split("-")[1:3])
    with open(mini.asc / "evaluation_setup" / "fold1_test.csv", newline="") as f:
        assert next(csv.reader(f, delimiter="\t")) == ["filename"]


def test_asc_errors_name_the_problem(tmp_path, mini):
    with pytest.raises(datasets.DatasetLayoutError, match="meta.csv"):
        datasets.asc_items(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        datasets.asc_items(mini.asc, "test")
    copy = tmp_path / "asc"
    shutil.copytree(mini.asc, copy)
    victim = datasets.asc_items(copy, "train")[0].path
    victim.unlink()
    with pytest.raises(datasets.DatasetLayoutError, match="1 ASC audio files .* missing"):
        datasets.asc_items(copy, "train")
    assert len(datasets.asc_items(copy, "train", on_missing="skip")) == 19


# --- TAG -----------------------------------------------------------------------------------------------------------------


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tag_items_kaggle_layout(mini):
    rows = _csv_rows(mini.tag / "train_curated.csv")
    train = datasets.tag_items(mini.tag, "train")
    evaluate = datasets.tag_items(mini.tag, "evaluate")
    assert (len(train), len(evaluate)) == (9, 3)  # 12 rows: KFold fold 0 takes 3
    tr_idx, ev_idx = datasets.kfold_indices(12)
    assert [i.path.name for i in evaluate] == [rows[k]["fname"] for k in ev_idx]
    assert [i.path.name for i in train] == [rows[k]["fname"] for k in tr_idx]
    by_name = {r["fname"]: r["labels"].split(",") for r in rows}
    assert any(len(v) == 2 for v in by_name.values())  # quoted multi-label rows exist and parse
    for item in train + evaluate:
        assert item.target.dtype == np.float32 and item.target.shape == (80,)
        assert sorted(labels.TAGS[k] for k in np.flatnonzero(item.target)) == sorted(by_name[item.path.name])
    assert sf.info(str(train[0].path)).samplerate == 44100


def test_tag_items_zenodo_layout_gives_same_split(mini, tmp_path):
    zen = tmp_path / "zenodo"
    (zen / "FSDKaggle2019.meta").mkdir(parents=True)
    rows = _csv_rows(mini.tag / "train_curated.csv")
    with open(zen / "FSDKaggle2019.meta" / "train_curated_post_competition.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fname", "labels", "freesound_id", "license"])
        w.writerows([r["fname"], r["labels"], 1000 + i, "CC-BY"] for i, r in enumerate(rows))
    shutil.copytree(mini.tag / "train_curated", zen / "FSDKaggle2019.audio_train_curated")
    assert datasets.tag_layout(zen)[0] == "zenodo"
    for split in ("train", "evaluate"):
        a = datasets.tag_items(mini.tag, split)
        b = datasets.tag_items(zen, split)
        assert [i.name for i in a] == [i.name for i in b]
        assert all(np.array_equal(x.target, y.target) for x, y in zip(a, b))


def test_tag_errors(tmp_path, mini):
    with pytest.raises(datasets.DatasetLayoutError, match="train_curated.csv"):
        datasets.tag_items(tmp_path, "train")
    bad = tmp_path / "bad"
    shutil.copytree(mini.tag, bad)
    (bad / "train_curated.csv").write_text("fname,labels\n" + "".join(f"{i}.wav,Bark\n" for i in range(5))
                                          + "x.wav,NotALabel\n")
    with pytest.raises(ValueError, match="NotALabel"):
        datasets.tag_items(bad, "train")


# --- SED -----------------------------------------------------------------------------------------------------------------


def _expected_roll(csv_path: Path) -> np.ndarray:
    roll = np.zeros((600, 14), dtype=np.float32)
    for line in csv_path.read_text().splitlines():
        frame, cls = (int(v) for v in line.split(",")[:2])
        roll[frame, cls] = 1
    return roll


def test_sed_items_authors_split_channels_and_labels(mini):
    train = datasets.sed_items(mini.sed, "train")
    evaluate = datasets.sed_items(mini.sed, "evaluate")
    validation = datasets.sed_items(mini.sed, "validation")
    assert (len(train), len(evaluate), len(validation)) == (4, 4, 4)  # 4 channels of 1 recording per fold
    assert {i.path.name.split("_")[0] for i in train} == {"fold3"}  # folds 3-6 (only 3 generated here)
    assert {i.path.name.split("_")[0] for i in evaluate} == {"fold1"}
    assert {i.path.name.split("_")[0] for i in validation} == {"fold2"}
    assert [i.channel for i in evaluate[:4]] == [0, 1, 2, 3]
    assert evaluate[0].name == evaluate[0].path.stem + ":ch1" and evaluate[3].name.endswith(":ch4")
    for item in evaluate:
        assert item.target.shape == (600, 14) and item.target.dtype == np.float32
        expected = _expected_roll(mini.sed / "metadata_dev" / f"{item.path.stem}.csv")
        assert np.array_equal(item.target, expected) and expected.sum() > 0
    info = sf.info(str(evaluate[0].path))
    assert (info.samplerate, info.channels, info.frames) == (24000, 4, 60 * 24000)
    foa = datasets.sed_items(mini.sed, "evaluate", fmt="foa")
    assert [i.path.parent.name for i in foa] == ["foa_dev"] * 4


def test_sed_overlapping_events_and_six_column_metadata(tmp_path):
    (tmp_path / "mic_dev").mkdir()
    (tmp_path / "metadata_dev").mkdir()
    sf.write(str(tmp_path / "mic_dev" / "fold1_room1_mix001_ov2.wav"), np.zeros((2400, 4)), 24000)
    (tmp_path / "metadata_dev" / "fold1_room1_mix001_ov2.csv").write_text(
        "0,3,0,0.1,0.2,0.3\n0,13,1,0.5,0.5,0.0\n599,5,0,1,0,0\n700,5,0,1,0,0\n"
    )
    item = datasets.sed_items(tmp_path, "eval")[0]
    assert item.target[0, 3] == item.target[0, 13] == item.target[599, 5] == 1
    assert item.target.sum() == 3  # frame 700 is outside the 600 label frames: ignored
    (tmp_path / "metadata_dev" / "fold1_room1_mix001_ov2.csv").write_text("0,14,0,0,0\n")
    with pytest.raises(ValueError, match="class index 14"):
        datasets.sed_items(tmp_path, "evaluate")


def test_sed_errors(tmp_path, mini):
    with pytest.raises(datasets.DatasetLayoutError, match="mic_dev"):
        datasets.sed_items(tmp_path, "train")
    with pytest.raises(ValueError, match="fmt"):
        datasets.sed_items(mini.sed, "train", fmt="binaural")
    copy = tmp_path / "sed"
    shutil.copytree(mini.sed, copy)
    next((copy / "metadata_dev").glob("fold1_*.csv")).unlink()
    with pytest.raises(datasets.DatasetLayoutError, match="metadata files are missing"):
        datasets.sed_items(copy, "evaluate")


# --- generator -------------------------------------------------------------------------------------------------------


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_minidata_is_deterministic_and_reused(tmp_path):
    kw = {"tasks": ("tag",), "tag_clips": 6, "tag_labels": 3, "tag_duration": (0.3, 0.5), "progress": False}
    a = make_mini_datasets(tmp_path / "a", seed=1, **kw)
    b = make_mini_datasets(tmp_path / "b", seed=1, **kw)
    c = make_mini_datasets(tmp_path / "c", seed=2, **kw)
    assert a.asc is None and a.sed is None
    assert _digest(a.tag) == _digest(b.tag) != _digest(c.tag)
    stamp = (a.tag / "train_curated.csv").stat().st_mtime_ns
    make_mini_datasets(tmp_path / "a", seed=1, **kw)  # same arguments: reused, not rewritten
    assert (a.tag / "train_curated.csv").stat().st_mtime_ns == stamp
    foreign = tmp_path / "foreign" / "fsdkaggle2019"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not made by make_mini_datasets"):
        make_mini_datasets(tmp_path / "foreign", **kw)
    assert (foreign / "mine.txt").exists()


def test_minidata_classes_differ_in_spectrum(mini):
    # each scene's sound sits in its own frequency band: the band holding most energy identifies the scene
    from dcasenet_hub.train.minidata import class_frequency

    centres = np.array([class_frequency(k, 10) for k in range(10)])
    for item in datasets.asc_items(mini.asc, "evaluate"):
        x, sr = sf.read(str(item.path))
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        band_energy = [power[(freqs > 0.9 * f) & (freqs < 1.1 * f)].sum() for f in centres]
        assert int(np.argmax(band_energy)) == item.target


def test_minidata_short_sed_recordings_for_fast_tests(tmp_path):
    roots = make_mini_datasets(tmp_path, tasks=("sed",), sed_duration=5.0, sed_folds=(1,), sed_files_per_fold=2,
                               progress=False)
    items = datasets.sed_items(roots.sed, "evaluate")
    assert len(items) == 8
    assert sf.info(str(items[0].path)).frames == 5 * 24000
    assert all(i.target[:50].sum() > 0 and i.target[50:].sum() == 0 for i in items)
    assert {i.path.stem.split("_")[-1] for i in items} == {"ov1", "ov2"}


def test_minidata_sed_classes_restricts_events(tmp_path):
    kw = {"tasks": ("sed",), "sed_duration": 20.0, "sed_folds": (1, 3), "sed_files_per_fold": 2, "progress": False}
    few = make_mini_datasets(tmp_path / "few", sed_classes=4, **kw)
    every = make_mini_datasets(tmp_path / "all", **kw)
    used_few = set(np.flatnonzero(sum(i.target.sum(0) for i in datasets.sed_items(few.sed, "train"))))
    used_all = set(np.flatnonzero(sum(i.target.sum(0) for i in datasets.sed_items(every.sed, "train"))))
    assert used_few <= {0, 4, 9, 13} and len(used_few) >= 3  # drawn from 4 classes evenly spread over the 14
    assert len(used_all) > 4
    with pytest.raises(ValueError, match="sed_classes must be in 1..14"):
        make_mini_datasets(tmp_path / "bad", sed_classes=0, **kw)
