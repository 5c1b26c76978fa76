"""Label orders (DCASE_FACTS.md section 1) and the cheap, quiet import."""

from __future__ import annotations

import subprocess
import sys

from dcasenet_hub import labels


def test_label_orders():
    assert labels.SCENES[0] == "airport" and labels.SCENES[-1] == "tram" and len(labels.SCENES) == 10
    assert list(labels.SCENES) == sorted(labels.SCENES)
    assert list(labels.TAGS) == sorted(labels.TAGS) and len(labels.TAGS) == 80
    assert labels.TAGS[:4] == ("Accelerating_and_revving_and_vroom", "Accordion", "Acoustic_guitar", "Applause")
    assert labels.TAGS[79] == "Zipper_(clothing)"
    assert labels.EVENTS[5] == "female_scream" and labels.EVENTS[10] == "male_scream" and len(labels.EVENTS) == 14
    assert labels.AUTHORS_EVENT_SPELLING[5] == "female_screem"
    # the authors matched tags by substring; no label is a substring of another, so that equals exact membership
    assert not any(a != b and a in b for a in labels.TAGS for b in labels.TAGS)


def test_import_is_quiet_and_lazy():
    code = (
        "import sys, time; t = time.perf_counter(); import dcasenet_hub; dt = time.perf_counter() - t;"
        "heavy = [m for m in ('torch', 'numpy', 'huggingface_hub', 'soundfile', 'safetensors') if m in sys.modules];"
        "print(repr(dt), heavy)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dt, heavy = res.stdout.strip().split(" ", 1)
    assert res.stderr == ""
    assert heavy == "[]"
    assert float(dt) < 1.0


def test_public_surface():
    import dcasenet_hub

    for name in dcasenet_hub.__all__:
        assert getattr(dcasenet_hub, name) is not None
