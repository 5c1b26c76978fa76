"""Data forms of dcasenet_hub.finetune: class folders, path,label(s) tables, strong labels; every problem listed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.finetuning.data import DataError, read_dataset

SR = 16000


def _wav(path: Path, seconds: float = 0.5, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR)).astype(np.float32)
    sf.write(path, x, SR)
    return path


def _class_folder(root: Path, classes: dict[str, int]) -> Path:
    for name, n in classes.items():
        for i in range(n):
            _wav(root / name / f"{name}_{i}.wav", seed=i)
    return root


def _problems(exc: pytest.ExceptionInfo[DataError]) -> str:
    return "\n".join(exc.value.problems)


# ----------------------------------------------------------------------------------------------------------------
# class folders
# ----------------------------------------------------------------------------------------------------------------


def test_class_folders_stratified_split_is_fixed_by_seed(tmp_path: Path) -> None:
    root = _class_folder(tmp_path / "d", {"dog": 10, "rain": 5, "siren": 2})
    data = read_dataset(root, task="classification")
    assert data.labels == ("dog", "rain", "siren")
    counts = data.counts()
    assert counts["validation"] == {"dog": 2, "rain": 1, "siren": 1}  # 20 % per class, at least one
    assert counts["train"] == {"dog": 8, "rain": 4, "siren": 1}
    assert all(c.duration == pytest.approx(0.5) for c in data.train + data.validation)
    again = read_dataset(root, task="classification")
    assert [c.path for c in again.validation] == [c.path for c in data.validation]
    other = {tuple(sorted(str(c.path) for c in read_dataset(root, task="classification", seed=s).validation))
             for s in range(1, 6)}
    assert len(other) > 1  # the seed drives the draw
    assert not {c.path for c in data.train} & {c.path for c in data.validation}


def test_train_validation_folders_give_the_split(tmp_path: Path) -> None:
    _class_folder(tmp_path / "d" / "train", {"a": 3, "b": 3})
    _class_folder(tmp_path / "d" / "val", {"a": 1, "b": 2})
    data = read_dataset(tmp_path / "d", task="classification")
    assert (len(data.train), len(data.validation)) == (6, 3)
    assert data.split == "given by the data"
    assert all(c.split == "validation" and "val" in c.path.parts for c in data.validation)


def test_folder_problems_are_reported_together(tmp_path: Path) -> None:
    root = _class_folder(tmp_path / "d", {"dog": 3, "rain": 3})
    (root / "empty_class").mkdir()
    _wav(root / "loose.wav")
    (root / "dog" / "broken.wav").write_bytes(b"RIFF this is not audio at all" * 10)
    (root / "rain" / "tiny.wav").unlink(missing_ok=True)
    sf.write(root / "rain" / "tiny.wav", np.zeros(160, np.float32), SR)  # 10 ms
    (root / "rain" / "notes.txt").write_text("ignored: not audio")
    with pytest.raises(DataError) as exc:
        read_dataset(root, task="classification")
    text = _problems(exc)
    assert len(exc.value.problems) == 4, text
    assert "empty class 'empty_class'" in text
    assert "loose.wav: audio file outside any class folder" in text
    assert "broken.wav: not a readable audio file" in text
    assert "tiny.wav: only 10 ms long" in text
    assert "4 problem(s)" in str(exc.value) and "nothing was trained" in str(exc.value)


# ----------------------------------------------------------------------------------------------------------------
# tables: path,label and path,labels
# ----------------------------------------------------------------------------------------------------------------


def test_csv_paths_relative_to_table_with_split_column(tmp_path: Path) -> None:
    for i in range(4):
        _wav(tmp_path / "meta" / "audio" / f"{i}.wav")
    table = tmp_path / "meta" / "labels.csv"
    table.write_text("path,label,split\naudio/0.wav,cat,train\naudio/1.wav,dog,train\n"
                     "audio/2.wav,cat,validation\naudio/3.wav,dog,val\n")
    data = read_dataset(table, task="classification")
    assert data.labels == ("cat", "dog")
    assert [c.path.name for c in data.train] == ["0.wav", "1.wav"]
    assert [c.path.name for c in data.validation] == ["2.wav", "3.wav"]
    assert data.train[0].path == tmp_path / "meta" / "audio" / "0.wav"


def test_tsv_dcase_scene_meta_and_label_order(tmp_path: Path) -> None:
    for i in range(6):
        _wav(tmp_path / "audio" / f"{i}.wav")
    table = tmp_path / "meta.tsv"
    rows = ["filename\tscene_label\tidentifier"] + [f"audio/{i}.wav\t{'park' if i % 2 else 'bus'}\tx-{i}"
                                                    for i in range(6)]
    table.write_text("\n".join(rows) + "\n")
    data = read_dataset(table, task="classification", labels=["park", "bus"])
    assert data.labels == ("park", "bus")  # the given order, not sorted
    assert len(data.train) + len(data.validation) == 6


def test_csv_problems_are_reported_together(tmp_path: Path) -> None:
    for i in range(4):
        _wav(tmp_path / f"{i}.wav")
    table = tmp_path / "labels.csv"
    table.write_text("path,label,split\n0.wav,cat,train\n1.wav,dog,train\nmissing.wav,cat,train\n"
                     "2.wav,cow,validation\n3.wav,cat,test\n0.wav,dog,train\n")
    with pytest.raises(DataError) as exc:
        read_dataset(table, task="classification", labels=["cat", "dog", "bird"])
    text = _problems(exc)
    assert "missing.wav: file not found" in text
    assert "unknown label 'cow'" in text and "2.wav" in text
    assert "empty class 'bird'" in text
    assert "unknown split 'test'" in text and "line 6" in text
    assert "0.wav has 2 labels (cat, dog)" in text and "--task tagging" in text


def test_tagging_table_multi_labels_quoted_and_repeated_rows(tmp_path: Path) -> None:
    for i in range(6):
        _wav(tmp_path / f"{i}.wav")
    (tmp_path / "tags.csv").write_text('fname,labels\n0.wav,"Bark,Dog"\n1.wav,Dog\n2.wav,Rain\n3.wav,"Rain,Dog"\n'
                                       "4.wav,Bark\n4.wav,Rain\n5.wav,Dog\n")
    data = read_dataset(tmp_path / "tags.csv", task="tagging")
    by_name = {c.path.name: set(c.labels) for c in data.train + data.validation}
    assert by_name == {"0.wav": {"Bark", "Dog"}, "1.wav": {"Dog"}, "2.wav": {"Rain"}, "3.wav": {"Rain", "Dog"},
                       "4.wav": {"Bark", "Rain"}, "5.wav": {"Dog"}}
    assert data.labels == ("Bark", "Dog", "Rain")
    (tmp_path / "tags.tsv").write_text("path\tlabels\n0.wav\tBark;Dog\n1.wav\tDog\n2.wav\tRain;Dog\n3.wav\tBark\n")
    semi = read_dataset(tmp_path / "tags.tsv", task="tagging", label_delimiter=";")
    assert {c.path.name: set(c.labels) for c in semi.train + semi.validation}["2.wav"] == {"Rain", "Dog"}


def test_table_without_label_column_names_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("path,whatever\na.wav,x\n")
    with pytest.raises(DataError, match="lacks a label column"):
        read_dataset(tmp_path / "t.csv", task="classification")


# ----------------------------------------------------------------------------------------------------------------
# strong labels
# ----------------------------------------------------------------------------------------------------------------


def test_strong_labels_with_header_and_clip_without_events(tmp_path: Path) -> None:
    for i in range(5):
        _wav(tmp_path / f"r{i}.wav", seconds=3.0)
    rows = ["filename,onset,offset,event_label", "r0.wav,0.5,1.5,dog", "r0.wav,1.0,2.5,car", "r1.wav,0.0,3.0,car",
            "r2.wav,,,", "r3.wav,0.2,0.9,dog", "r4.wav,1.1,2.0,dog"]
    (tmp_path / "ev.csv").write_text("\n".join(rows) + "\n")
    data = read_dataset(tmp_path / "ev.csv", task="detection")
    clips = {c.path.name: c for c in data.train + data.validation}
    assert data.labels == ("car", "dog")
    assert clips["r0.wav"].events == ((0.5, 1.5, "dog"), (1.0, 2.5, "car"))
    assert clips["r2.wav"].events == () and clips["r2.wav"].labels == ()
    assert data.to_dict()["n_events"]["train"] + data.to_dict()["n_events"]["validation"] == 5


def test_strong_labels_headerless_tsv_in_a_folder(tmp_path: Path) -> None:
    for i in range(3):
        _wav(tmp_path / "audio" / f"r{i}.wav", seconds=2.0)
    (tmp_path / "events.tsv").write_text("audio/r0.wav\t0.1\t0.6\tbell\naudio/r1.wav\t1.0\t1.9\tbell\n"
                                         "audio/r2.wav\t0.0\t0.5\tbell\n")
    data = read_dataset(tmp_path, task="detection")  # the folder's only table
    assert data.labels == ("bell",)
    assert sorted(c.events[0][0] for c in data.train + data.validation) == [0.0, 0.1, 1.0]


def test_strong_label_problems_are_reported_together(tmp_path: Path) -> None:
    _wav(tmp_path / "r0.wav", seconds=2.0)
    _wav(tmp_path / "r1.wav", seconds=2.0)
    rows = ["filename\tonset\toffset\tevent_label", "r0.wav\t1.0\t0.5\tdog", "r0.wav\tsoon\t1.0\tdog",
            "r1.wav\t5.0\t6.0\tdog", "r1.wav\t0.5\t\tdog", "gone.wav\t0.0\t1.0\tdog"]
    (tmp_path / "ev.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as exc:
        read_dataset(tmp_path / "ev.tsv", task="detection")
    text = _problems(exc)
    assert "line 2: event 'dog' in r0.wav has onset 1 s and offset 0.5 s" in text
    assert "line 3: onset/offset of r0.wav are not numbers" in text
    assert "r1.wav: event 'dog' starts at 5 s, after the end of the 2.00 s file" in text
    assert "line 5: r1.wav needs onset, offset and event_label together" in text
    assert "gone.wav: file not found" in text


def test_detection_folder_without_a_table_says_what_to_give(tmp_path: Path) -> None:
    _class_folder(tmp_path / "d", {"a": 2})
    with pytest.raises(DataError, match="detection needs a strong-label table"):
        read_dataset(tmp_path / "d", task="detection")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Unknown task"):
        read_dataset(".", task="segmentation")
    with pytest.raises(ValueError, match="validation_fraction"):
        read_dataset(".", task="classification", validation_fraction=1.0)
    with pytest.raises(DataError, match="not found"):
        read_dataset("/nonexistent/data", task="classification")
