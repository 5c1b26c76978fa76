"""Label orders (every name, in order) and the quiet, lazy import."""

from __future__ import annotations

import subprocess
import sys

from dcasenet_hub import labels

# The canonical orders, written out (scene: alphabetical = dcase_util's; tags: the FSDKaggle2019
# sample_submission.csv columns; events: the DCASE2020 Task 3 class indices), as dcasenet_hub/labels.py states.
SCENES = (
    "airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall", "street_pedestrian",
    "street_traffic", "tram",
)
EVENTS = (
    "alarm", "baby", "crash", "dog", "engine", "female_scream", "female_speech", "fire", "footsteps", "knock",
    "male_scream", "male_speech", "phone", "piano",
)
TAGS = (
    "Accelerating_and_revving_and_vroom", "Accordion", "Acoustic_guitar", "Applause", "Bark", "Bass_drum",
    "Bass_guitar", "Bathtub_(filling_or_washing)", "Bicycle_bell", "Burping_and_eructation", "Bus", "Buzz",
    "Car_passing_by", "Cheering", "Chewing_and_mastication", "Child_speech_and_kid_speaking", "Chink_and_clink",
    "Chirp_and_tweet", "Church_bell", "Clapping", "Computer_keyboard", "Crackle", "Cricket", "Crowd",
    "Cupboard_open_or_close", "Cutlery_and_silverware", "Dishes_and_pots_and_pans", "Drawer_open_or_close", "Drip",
    "Electric_guitar", "Fart", "Female_singing", "Female_speech_and_woman_speaking", "Fill_(with_liquid)",
    "Finger_snapping", "Frying_(food)", "Gasp", "Glockenspiel", "Gong", "Gurgling", "Harmonica", "Hi-hat", "Hiss",
    "Keys_jangling", "Knock", "Male_singing", "Male_speech_and_man_speaking", "Marimba_and_xylophone",
    "Mechanical_fan", "Meow", "Microwave_oven", "Motorcycle", "Printer", "Purr", "Race_car_and_auto_racing",
    "Raindrop", "Run", "Scissors", "Screaming", "Shatter", "Sigh", "Sink_(filling_or_washing)", "Skateboard",
    "Slam", "Sneeze", "Squeak", "Stream", "Strum", "Tap", "Tick-tock", "Toilet_flush",
    "Traffic_noise_and_roadway_noise", "Trickle_and_dribble", "Walk_and_footsteps", "Water_tap_and_faucet",
    "Waves_and_surf", "Whispering", "Writing", "Yell", "Zipper_(clothing)",
)


def test_label_orders():
    assert labels.SCENES == SCENES and labels.EVENTS == EVENTS and labels.TAGS == TAGS  # every name, in order
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
    """No heavy module and no output at import (its time is measured by benchmarks/import_time.py, not here)."""
    code = (
        "import sys; import dcasenet_hub;"
        "heavy = [m for m in ('torch', 'numpy', 'huggingface_hub', 'soundfile', 'safetensors') if m in sys.modules];"
        "print(heavy)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stderr == ""
    assert res.stdout.strip() == "[]"


def test_public_surface():
    import dcasenet_hub

    for name in dcasenet_hub.__all__:
        assert getattr(dcasenet_hub, name) is not None
