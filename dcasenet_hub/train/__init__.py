"""Retraining DcaseNet: dataset readers, miniature datasets, downloads, feature preparation and the joint trainer.

An optional part of the package: ``import dcasenet_hub`` never imports it, and importing ``dcasenet_hub.train``
itself is cheap (no torch): the names below load their module on first use.

* Data: :mod:`.datasets` (``asc_items``, ``tag_items``, ``sed_items``: the official layouts with the authors'
  splits), :mod:`.minidata` (``make_mini_datasets``: tiny synthetic datasets in the same layouts),
  :mod:`.data_download` (``download_dataset``: Zenodo, md5 checks, resume), :mod:`.prepare` (``prepare``: 24 kHz
  16-bit audio and cached log-mel features).
* Training: :mod:`.recipes` (``Recipe``, ``load_recipe``, ``list_recipes``: the Table 2 recipes), :mod:`.loop`
  (``train``, ``TrainResult``), :mod:`.options` (``TrainOptions``), :mod:`.distributed` (processes, devices, saved
  state), :mod:`.torch_data` (``TrainCrops``, ``EvalClips``, ``BatchStream``).
* Results: :mod:`.evaluation` (``evaluate``, ``format_row``: the authors' metrics on the evaluation splits),
  :mod:`.export` (``export_model``: the hub format); metrics live in :mod:`dcasenet_hub.metrics`.
* :mod:`.tasks`: ``scene``/``tags``/``events`` and ``asc``/``tag``/``sed`` are both accepted.

Example:
    >>> from dcasenet_hub.train import datasets, minidata
    >>> roots = minidata.make_mini_datasets("mini")                 # doctest: +SKIP
    >>> len(datasets.asc_items(roots.asc, "train"))                 # doctest: +SKIP
    30
    >>> from dcasenet_hub.train import load_recipe
    >>> load_recipe("v3-asc-tag").tasks
    ('asc', 'tag')
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Recipe": "recipes", "load_recipe": "recipes", "list_recipes": "recipes", "RECIPE_DIR": "recipes",
    "train": "loop", "TrainResult": "loop", "TrainOptions": "options",
    "evaluate": "evaluation", "evaluate_sets": "evaluation", "format_row": "evaluation",
    "scene_probabilities": "evaluation",
    "export_model": "export",
    "make_mini_datasets": "minidata",
    "download_dataset": "data_download",
    "task_key": "tasks", "TASKS": "tasks", "MODEL_TASK": "tasks", "TASK_LABELS": "tasks", "METRICS": "tasks",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    mod = importlib.import_module(f"{__name__}.{module}")
    # no name here is also a sub-module's name: importing that sub-module would replace the attribute
    value = getattr(mod, name)
    globals()[name] = value
    return value
