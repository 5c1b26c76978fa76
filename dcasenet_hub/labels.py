"""Label names of the three DcaseNet tasks, in the order of the network's outputs.

* ``SCENES``: TAU Urban Acoustic Scenes 2020 Mobile (10), alphabetical = order of first appearance in ``meta.csv``.
* ``TAGS``: FSDKaggle2019 (80), the column order of ``sample_submission.csv`` (= ``sorted()``).
* ``EVENTS``: TAU-NIGENS Spatial Sound Events 2020 (14), the metadata class index order. The authors' code spells
  indices 5 and 10 ``female_screem`` / ``male_screem``; we use the dataset's spelling ``*_scream`` and keep the
  authors' spelling in :data:`AUTHORS_EVENT_SPELLING` for reference.

Example:
    >>> from dcasenet_hub import labels
    >>> labels.SCENES[0], labels.TAGS[4], labels.EVENTS[5]
    ('airport', 'Bark', 'female_scream')
"""

from __future__ import annotations

SCENES: tuple[str, ...] = (
    "airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
    "street_pedestrian", "street_traffic", "tram",
)

TAGS: tuple[str, ...] = (
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

EVENTS: tuple[str, ...] = (
    "alarm", "baby", "crash", "dog", "engine", "female_scream", "female_speech", "fire", "footsteps", "knock",
    "male_scream", "male_speech", "phone", "piano",
)

#: The authors' ``utils.sed_labels`` spelling (printing only in their code; indices are identical).
AUTHORS_EVENT_SPELLING: tuple[str, ...] = tuple(
    {"female_scream": "female_screem", "male_scream": "male_screem"}.get(name, name) for name in EVENTS
)

__all__ = ["SCENES", "TAGS", "EVENTS", "AUTHORS_EVENT_SPELLING"]
