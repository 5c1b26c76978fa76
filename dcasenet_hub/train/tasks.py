"""The trainer's task keys and their link to the package's vocabulary (:data:`dcasenet_hub.config.TASKS`).

The package names the three heads ``"scene"``, ``"tags"`` and ``"events"`` (:func:`dcasenet_hub.config.canonical_task`
maps every alias). The trainer accepts those names everywhere a task is named (recipe keys, overrides, ``--batch-size
scene=32``) and also the paper's abbreviations ``asc``, ``tag`` and ``sed``. Inside, it keys tasks by the
abbreviations because they are part of saved files: the bundled recipe JSON (``"batch_size": {"asc": 32}``), the
metric names of ``metrics.jsonl`` and of exported model cards (``asc_acc``, ``tag_lwlrap``, ``sed_f1``, ``sed_er``),
the run folder names (``best-asc``, ``finetune-sed``) and the training state ``last.pt``; renaming them would break
runs and models that exist. :func:`task_key` is the one translation.

Example:
    >>> task_key("scene"), task_key("events"), task_key("tag")
    ('asc', 'sed', 'tag')
    >>> MODEL_TASK["sed"]
    'events'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dcasenet_hub import labels as _labels
from dcasenet_hub.config import canonical_task

#: Task keys used by the trainer (Table 2 abbreviations; see the module docstring for why) in the recipe order.
TASKS: tuple[str, ...] = ("asc", "tag", "sed")
#: The head (:data:`dcasenet_hub.config.TASKS` name) of each trainer key.
MODEL_TASK: dict[str, str] = {"asc": "scene", "tag": "tags", "sed": "events"}
_FROM_MODEL = {v: k for k, v in MODEL_TASK.items()}
#: The authors' task order inside an iteration (ASC, SED, TAG).
TASK_ORDER = ("asc", "sed", "tag")
TASK_LABELS = {"asc": _labels.SCENES, "tag": _labels.TAGS, "sed": _labels.EVENTS}
#: Metric keys of the metrics log and of Table 2 (accuracy, lwlrap and F1 in percent).
METRICS = ("asc_acc", "tag_lwlrap", "sed_f1", "sed_er")


def task_key(name: str) -> str:
    """The trainer key (``"asc"``, ``"tag"``, ``"sed"``) of a task named in any accepted spelling.

    Raises:
        ValueError: an unknown task (the message lists the accepted names).
    """
    try:
        return _FROM_MODEL[canonical_task(name, heads_only=True)]
    except ValueError:
        raise ValueError(f"Unknown task {name!r}; use scene, tags or events (or asc, tag, sed)") from None


def task_keys(names: Iterable[str]) -> tuple[str, ...]:
    """:func:`task_key` of every name, in the given order."""
    return tuple(task_key(n) for n in names)


def keyed(values: Mapping[str, Any], what: str = "value") -> dict[str, Any]:
    """A per-task mapping with its keys turned into trainer keys (``{"scene": 8}`` -> ``{"asc": 8}``).

    Raises:
        ValueError: an unknown task, or one task given twice under two names.
    """
    out: dict[str, Any] = {}
    for name, v in dict(values).items():
        k = task_key(name)
        if k in out:
            raise ValueError(f"The {what} of {MODEL_TASK[k]} is given twice ({name!r} and another name)")
        out[k] = v
    return out
