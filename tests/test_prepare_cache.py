"""Feature cache of dcasenet_hub.train.prepare: a file counts as done only while its audio is unchanged, and the
scene evaluation files are cached as what the scene evaluation reads (their 24 kHz audio) and nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dcasenet_hub.train.prepare import (
    SOURCE_SUFFIX,
    audio_file,
    cache_file,
    prepare_items,
    prepare_splits,
)


def _write(path: Path, seed: int) -> None:
    import soundfile as sf

    sf.write(str(path), 0.3 * np.random.default_rng(seed).standard_normal(24000), 24000, subtype="PCM_16")


def _clips(tmp_path: Path, *names: str) -> tuple[Path, list[Path]]:
    """``tmp_path/data`` holding one test clip per name (the n-th written with seed n)."""
    root = tmp_path / "data"
    root.mkdir()
    paths = [root / name for name in names]
    for seed, path in enumerate(paths):
        _write(path, seed)
    return root, paths


def test_edited_audio_is_converted_again(tmp_path: Path) -> None:
    root, (a, b) = _clips(tmp_path, "a.wav", "b.wav")
    cache = tmp_path / "cache"
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, progress=False)
    assert rep.prepared == {"asc": 2}
    out_a = cache_file(rep.dirs["asc"], root, a)
    before = np.load(out_a)
    # unchanged audio: skipped
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, progress=False)
    assert rep.prepared == {"asc": 0} and rep.skipped == {"asc": 2}
    # the same size, other samples, and an mtime moved on: features are recomputed for that file only
    st = a.stat()
    _write(a, 2)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert a.stat().st_size == st.st_size
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, progress=False)
    assert rep.prepared == {"asc": 1} and rep.skipped == {"asc": 1}
    after = np.load(out_a)
    assert not np.allclose(before, after)
    # a cache from before the source records (features only) is converted again, once
    out_a.with_name(out_a.name + SOURCE_SUFFIX).unlink()
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, progress=False)
    assert rep.prepared == {"asc": 1}


def _source(path: Path) -> dict:
    return json.loads(path.with_name(path.name + SOURCE_SUFFIX).read_text())


def _replace_keeping_stamp(path: Path, seed: int) -> None:
    """Other samples, the same size and the same mtime (what ``cp -p``, ``rsync -t`` or ``touch -r`` leave)."""
    st = path.stat()
    _write(path, seed)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _counting_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from dcasenet_hub.hub import fetch

    hashed: list[str] = []
    real = fetch.sha256_file

    def counting(path: Path) -> str:
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(fetch, "sha256_file", counting)
    return hashed


def test_audio_replaced_with_the_same_size_and_mtime_is_converted_again(tmp_path: Path) -> None:
    """The record holds the audio's SHA-256, so other content under the old size and mtime is converted again: the
    features and the kept WAV follow the new content, and the untouched file is not converted.

    Broken variant caught: a record of size and mtime only (the replaced file keeps its stale features).
    """
    root, (a, b) = _clips(tmp_path, "a.wav", "b.wav")
    cache = tmp_path / "cache"
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, keep_audio=True, progress=False)
    out_a, wav_a = cache_file(rep.dirs["asc"], root, a), audio_file(rep.dirs["asc"], root, a)
    before, kept = np.load(out_a), wav_a.read_bytes()
    _replace_keeping_stamp(a, 2)
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, keep_audio=True, progress=False)
    assert rep.prepared == {"asc": 1} and rep.skipped == {"asc": 1}
    assert not np.allclose(before, np.load(out_a)) and wav_a.read_bytes() != kept
    assert _source(out_a)["sha256"] == _source(wav_a)["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()


def test_touched_audio_is_hashed_once_not_converted_and_its_record_refreshed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose stamp changed but whose content did not (``touch``) is hashed once for both of its records, not
    converted, and its records take the new stamp: the next preparation reads nothing but the records and a ``stat``.

    Broken variants caught: any stamp change converting again (prepared 1); the records left with the old stamp (every
    later preparation hashes the file again); the file hashed once per record.
    """
    from dcasenet_hub import _io

    monkeypatch.setattr(_io, "RACY_NS", 0)  # the file changes just before each step: trust its stamps at once
    root, (a,) = _clips(tmp_path, "a.wav")
    cache = tmp_path / "cache"
    rep = prepare_items("asc", root, [a], cache_dir=cache, keep_audio=True, progress=False)
    out, wav = cache_file(rep.dirs["asc"], root, a), audio_file(rep.dirs["asc"], root, a)
    written = {f: f.stat().st_mtime_ns for f in (out, wav)}
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    hashed = _counting_hashes(monkeypatch)
    rep = prepare_items("asc", root, [a], cache_dir=cache, keep_audio=True, progress=False)
    assert rep.prepared == {"asc": 0} and rep.skipped == {"asc": 1}
    assert hashed == ["a.wav"]
    assert {f: f.stat().st_mtime_ns for f in (out, wav)} == written  # the cached data are not rewritten
    now = a.stat()
    for f in (out, wav):
        assert _source(f)["mtime_ns"] == now.st_mtime_ns and _source(f)["ctime_ns"] == now.st_ctime_ns
    rep = prepare_items("asc", root, [a], cache_dir=cache, keep_audio=True, progress=False)
    assert rep.prepared == {"asc": 0} and hashed == ["a.wav"]  # not hashed again


def test_audio_changed_just_before_its_stat_is_hashed_until_its_stamp_settles(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file changed within ``RACY_NS`` of its stat could change again in the same timestamp tick without its stamp
    moving, so its record holds no ctime: the next preparations hash it (without converting it) until it is older,
    then its record takes the full stamp and only a ``stat`` is left.

    Broken variant caught: the stamp of a file written just before trusted (the second preparation hashes nothing).
    """
    from dcasenet_hub import _io

    root, (a,) = _clips(tmp_path, "a.wav")
    rep = prepare_items("asc", root, [a], cache_dir=tmp_path / "cache", progress=False)
    out = cache_file(rep.dirs["asc"], root, a)
    assert _source(out)["ctime_ns"] is None and _source(out)["ino"] == a.stat().st_ino
    hashed = _counting_hashes(monkeypatch)
    rep = prepare_items("asc", root, [a], cache_dir=tmp_path / "cache", progress=False)
    assert rep.prepared == {"asc": 0} and hashed == ["a.wav"] and _source(out)["ctime_ns"] is None
    monkeypatch.setattr(_io, "RACY_NS", 0)  # as when the change is older than the window
    rep = prepare_items("asc", root, [a], cache_dir=tmp_path / "cache", progress=False)
    assert rep.prepared == {"asc": 0} and hashed == ["a.wav"] * 2 and _source(out)["ctime_ns"] == a.stat().st_ctime_ns
    rep = prepare_items("asc", root, [a], cache_dir=tmp_path / "cache", progress=False)
    assert rep.prepared == {"asc": 0} and hashed == ["a.wav"] * 2


def _make_legacy(cached: Path, audio: Path) -> None:
    """The record beside ``cached`` as a release without content records wrote it: size and mtime_ns only."""
    st = audio.stat()
    rec = cached.with_name(cached.name + SOURCE_SUFFIX)
    rec.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns}) + "\n")
    assert st.st_ctime_ns < rec.stat().st_mtime_ns  # written after the audio's last change


def test_size_and_mtime_records_are_upgraded_only_while_the_audio_is_untouched_since(tmp_path: Path) -> None:
    """A record of size and mtime only is rewritten with the audio's SHA-256 without converting, when the audio has
    not changed since the record was written (ctime earlier than the record's mtime); one whose audio was replaced
    afterwards (same size, mtime put back) is converted again.

    Broken variants caught: size and mtime trusted alone (the replaced file keeps stale features: prepared 0); every
    old record treated as stale (the untouched file is converted too: prepared 2); the record left without a hash.
    """
    root, (a, b) = _clips(tmp_path, "a.wav", "b.wav")
    cache = tmp_path / "cache"
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, keep_audio=True, progress=False)
    task_dir = rep.dirs["asc"]
    cached = {p: (cache_file(task_dir, root, p), audio_file(task_dir, root, p)) for p in (a, b)}
    for p, files in cached.items():
        for f in files:
            _make_legacy(f, p)
    kept_a = {f: f.stat().st_mtime_ns for f in cached[a]}
    before_b = np.load(cached[b][0])
    _replace_keeping_stamp(b, 2)  # after its record was written: its ctime moves past the record's mtime
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, keep_audio=True, progress=False)
    assert rep.prepared == {"asc": 1} and rep.skipped == {"asc": 1}
    assert {f: f.stat().st_mtime_ns for f in cached[a]} == kept_a  # a: not converted
    assert not np.allclose(before_b, np.load(cached[b][0]))  # b: converted from its new content
    for p, files in cached.items():
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        for f in files:
            assert _source(f)["sha256"] == digest and _source(f)["ino"] == p.stat().st_ino
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, keep_audio=True, progress=False)
    assert rep.prepared == {"asc": 0}


def test_audio_edited_during_its_conversion_is_converted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record holds the hash of what was read before decoding: an edit after the decode (same size, mtime put
    back) leaves a record that does not match the file, so the next preparation converts it again.

    Broken variants caught: the record's stamp taken before the read with size and mtime only, or the file hashed
    after decoding (both vouch for the new content, whose features were never computed).
    """
    from dcasenet_hub import audio

    root, (a,) = _clips(tmp_path, "a.wav")
    real = audio.load_audio

    def load_then_edit(*args, **kwargs):
        decoded = real(*args, **kwargs)
        _replace_keeping_stamp(a, 2)
        return decoded

    monkeypatch.setattr(audio, "load_audio", load_then_edit)
    rep = prepare_items("asc", root, [a], cache_dir=tmp_path / "cache", progress=False)
    assert rep.prepared == {"asc": 1}
    monkeypatch.setattr(audio, "load_audio", real)
    out = cache_file(rep.dirs["asc"], root, a)
    stale = np.load(out)
    rep = prepare_items("asc", root, [a], cache_dir=tmp_path / "cache", progress=False)
    assert rep.prepared == {"asc": 1} and not np.allclose(stale, np.load(out))


# ---------------------------------------------------------------------------------------------------------------
# Scene evaluation files: only their 24 kHz audio (the scene evaluation reads nothing else)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_roots(tmp_path_factory: pytest.TempPathFactory):
    """Mini ASC (1 training + 1 evaluation clip of 2 s per scene) and TAG (10 short clips) roots."""
    from dcasenet_hub.train.minidata import make_mini_datasets

    return make_mini_datasets(tmp_path_factory.mktemp("mini") / "mini", tasks=("asc", "tag"), asc_train_per_scene=1,
                              asc_eval_per_scene=1, asc_duration=2.0, tag_clips=10, tag_labels=4,
                              tag_duration=(1.0, 1.5), progress=False)


def _scene_inputs(task_dir: Path, root: Path, items) -> list[torch.Tensor]:
    """The scene evaluation's inputs (crops of the kept waveform) of ``items``, as the evaluation builds them."""
    from dcasenet_hub import labels
    from dcasenet_hub.train.torch_data import EvalClips, FeatureStore

    ds = EvalClips("asc", items, FeatureStore(task_dir, root), labels=labels.SCENES)
    return [ds[i][0] for i in range(len(ds))]


def _old_rules_cache(root: Path, items, cache: Path) -> Path:
    """A cache of ``items`` as the preparation before this change wrote it for the scene evaluation files: the WAV,
    the log-mel and the log-mel's record, and no record beside the WAV."""
    rep = prepare_items("asc", root, [it.path for it in items], cache_dir=cache, keep_audio=True, progress=False)
    task_dir = rep.dirs["asc"]
    for it in items:
        wav = audio_file(task_dir, root, it.path)
        wav.with_name(wav.name + SOURCE_SUFFIX).unlink()
        assert wav.is_file() and cache_file(task_dir, root, it.path).is_file()
    return task_dir


def test_scene_evaluation_files_keep_their_audio_and_no_log_mel(mini_roots, tmp_path: Path) -> None:
    """Scene evaluation files end up with their 24 kHz WAV (and its record) and no log-mel; training files and the
    tag evaluation files keep their log-mel; a second preparation finds everything done.

    Broken variants caught: log-mels still computed for the scene evaluation files (a ``.npy`` appears); the kept
    audio missing (evaluation could not read it); the completeness check still asking evaluation files for a
    log-mel (the second run converts the 10 evaluation files again: prepared 10, not 0); audio-only applied to every
    evaluation split (the tag evaluation, which reads whole-clip log-mels, finds none).
    """
    from dcasenet_hub.train.evaluation import prepared_stores

    cache = tmp_path / "cache"
    rep, items = prepare_splits("asc", mini_roots.asc, ["train", "eval"], cache_dir=cache, progress=False)
    task_dir = rep.dirs["asc"]
    assert rep.prepared == {"asc": 20} and not rep.failed
    assert len(items["eval"]) == 10 and len(items["train"]) == 10
    for it in items["eval"]:
        wav = audio_file(task_dir, mini_roots.asc, it.path)
        assert wav.is_file() and wav.with_name(wav.name + SOURCE_SUFFIX).is_file()
        assert not cache_file(task_dir, mini_roots.asc, it.path).exists()
    assert sorted(p.name for p in task_dir.rglob("*.npy")) == sorted(Path(it.path).name + ".npy"
                                                                      for it in items["train"])
    rep2, _ = prepare_splits("asc", mini_roots.asc, ["train", "eval"], cache_dir=cache, progress=False)
    assert rep2.prepared == {"asc": 0} and rep2.skipped == {"asc": 20}
    # the evaluation reads them, through the trainer's own preparation and stores
    stores, ev = prepared_stores({"asc": mini_roots.asc, "tag": mini_roots.tag}, ["eval"], cache_dir=cache,
                                  workers=0, progress=False, memory=False)
    crops = _scene_inputs(stores["asc"].cache_dir, mini_roots.asc, ev["asc"]["eval"])
    assert len(crops) == 10 and all(bool(torch.isfinite(x).all()) for x in crops)
    for it in ev["tag"]["eval"]:  # tag evaluation files: whole-clip log-mels, no WAV
        assert stores["tag"].load(it.path).shape[1] == 128
        assert not audio_file(stores["tag"].cache_dir, mini_roots.tag, it.path).exists()


def test_cache_prepared_by_the_old_rules_stays_current_and_evaluates_the_same(mini_roots, tmp_path: Path) -> None:
    """A cache whose scene evaluation files have WAV + log-mel + the log-mel's record and no WAV record (what the
    preparation wrote before) is complete: nothing is converted again or removed, and the scene evaluation reads the
    same inputs from it as from a cache prepared now. An old entry whose audio was edited since is converted again.

    Broken variants caught: completeness requiring the WAV's own record (the 10 old entries are converted again:
    prepared 10, not 0); a WAV without a record accepted on its own, without the log-mel's record vouching for it
    (the edited file is not converted again and its stale WAV is evaluated).
    """
    from dcasenet_hub.train.datasets import asc_items

    root = tmp_path / "asc"
    shutil.copytree(mini_roots.asc, root)  # one of its files is edited below
    items = asc_items(root, "eval")
    old_dir = _old_rules_cache(root, items, tmp_path / "old")

    def stamps() -> dict[Path, int | None]:
        """The cached files with their mtime; records by name only (they may take a newer stamp, see RACY_NS)."""
        return {p: None if p.suffix == SOURCE_SUFFIX else p.stat().st_mtime_ns for p in old_dir.rglob("*")
                if p.is_file()}

    untouched = stamps()
    rep, _ = prepare_splits("asc", root, ["eval"], cache_dir=tmp_path / "old", progress=False)
    assert rep.prepared == {"asc": 0} and rep.skipped == {"asc": 10}
    assert stamps() == untouched
    new, _ = prepare_splits("asc", root, ["eval"], cache_dir=tmp_path / "new", progress=False)
    old_x, new_x = _scene_inputs(old_dir, root, items), _scene_inputs(new.dirs["asc"], root, items)
    assert len(old_x) == 10 and all(a.equal(b) for a, b in zip(old_x, new_x, strict=True))
    # an old entry whose audio changed since (same size, later mtime): converted again, the others not
    edited = Path(items[0].path)
    kept = audio_file(old_dir, root, edited)
    before = kept.read_bytes()
    st = edited.stat()
    data = bytearray(edited.read_bytes())
    data[-2000:] = bytes(2000)  # the last samples silenced: the same size
    edited.write_bytes(bytes(data))
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    rep, _ = prepare_splits("asc", root, ["eval"], cache_dir=tmp_path / "old", progress=False)
    assert rep.prepared == {"asc": 1} and rep.skipped == {"asc": 9}
    assert kept.read_bytes() != before


def test_entry_missing_what_evaluation_reads_is_converted_again(mini_roots, tmp_path: Path) -> None:
    """Evaluation needs the kept WAV: an entry without it is not complete, whatever else is there (its record, or in
    an old cache the log-mel and the log-mel's record), and a WAV whose own record is stale is not complete even when
    an old log-mel's record still matches.

    Broken variants caught: a record (or the old rule's log-mel + record) taken for a complete entry without the WAV
    (the next evaluation fails with "No prepared 24 kHz audio"); the old log-mel's record consulted although the WAV
    has its own, stale, record (a stale WAV is evaluated).
    """
    from dcasenet_hub.train.datasets import asc_items

    root = mini_roots.asc
    items = asc_items(root, "eval")
    cache = tmp_path / "cache"
    rep, _ = prepare_splits("asc", root, ["eval"], cache_dir=cache, progress=False)
    wav0 = audio_file(rep.dirs["asc"], root, items[0].path)
    wav0.unlink()  # new rules: the WAV's record stays, the WAV is gone
    rep, _ = prepare_splits("asc", root, ["eval"], cache_dir=cache, progress=False)
    assert rep.prepared == {"asc": 1} and wav0.is_file()

    old_dir = _old_rules_cache(root, items, tmp_path / "old")
    wav1 = audio_file(old_dir, root, items[1].path)
    wav1.unlink()  # old rules: the log-mel and its matching record stay, the WAV is gone
    wav2 = audio_file(old_dir, root, items[2].path)
    wav2.with_name(wav2.name + SOURCE_SUFFIX).write_text('{"size": 1, "mtime_ns": 1}\n')  # a stale own record
    rep, _ = prepare_splits("asc", root, ["eval"], cache_dir=tmp_path / "old", progress=False)
    assert rep.prepared == {"asc": 2} and rep.skipped == {"asc": 8}
    assert wav1.is_file() and len(_scene_inputs(old_dir, root, items)) == 10  # every evaluation file readable


def test_audio_only_preparation_checks_length_and_options(tmp_path: Path) -> None:
    """Without features a file too short for the front-end still fails at preparation (nothing written), as it did
    when its log-mel was computed; ``features=False`` without ``keep_audio`` is refused with the fix.

    Broken variant caught: the audio-only conversion skipping the front-end's length check (the short file is
    "prepared" and the failure moves to the evaluation).
    """
    import soundfile as sf

    root = tmp_path / "data"
    root.mkdir()
    short, ok = root / "short.wav", root / "ok.wav"
    sf.write(str(short), np.zeros(500, np.float32), 24000, subtype="PCM_16")
    _write(ok, 3)
    rep = prepare_items("asc", root, [short, ok], cache_dir=tmp_path / "c", keep_audio=True, features=False,
                        progress=False)
    assert [Path(p).name for p, _ in rep.failed] == ["short.wav"] and "too short" in rep.failed[0][1]
    assert rep.prepared == {"asc": 1}
    assert not audio_file(rep.dirs["asc"], root, short).exists() and audio_file(rep.dirs["asc"], root, ok).is_file()
    with pytest.raises(ValueError, match="keep_audio=True"):
        prepare_items("asc", root, [ok], cache_dir=tmp_path / "c", features=False, progress=False)
