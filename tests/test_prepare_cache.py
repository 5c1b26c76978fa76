"""Feature cache of dcasenet_hub.train.prepare: a file counts as done only while its audio is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dcasenet_hub.train.prepare import cache_file, prepare_items


def _write(path: Path, seed: int) -> None:
    import soundfile as sf

    sf.write(str(path), 0.3 * np.random.default_rng(seed).standard_normal(24000), 24000, subtype="PCM_16")


def test_edited_audio_is_converted_again(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    a, b = root / "a.wav", root / "b.wav"
    _write(a, 0)
    _write(b, 1)
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
    from dcasenet_hub.train.prepare import SOURCE_SUFFIX

    out_a.with_name(out_a.name + SOURCE_SUFFIX).unlink()
    rep = prepare_items("asc", root, [a, b], cache_dir=cache, progress=False)
    assert rep.prepared == {"asc": 1}
