"""Export of a trained model in the hub format (config.json + model.safetensors + model card), atomically.

Example:
    >>> from dcasenet_hub.train.export import export_model
    >>> export_model(model, "RUN/best-asc", recipe=load_recipe("v3-asc"), stage="single", tasks=("asc",),
    ...              selected_for="asc", epoch=0, metrics_={"asc_acc": 71.0},
    ...              data_roots={"asc": Path("data/asc")})                  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from dcasenet_hub._io import json_ready
from dcasenet_hub.hub.checkpoint import save_pretrained
from dcasenet_hub.train.recipes import Recipe
from dcasenet_hub.train.tasks import MODEL_TASK

_DATA = {
    "asc": ("scene", "TAU Urban Acoustic Scenes 2020 Mobile, development (DCASE 2020 Task 1a)",
            "fold1_train; best checkpoint chosen on fold1_evaluate (3 crops)"),
    "tag": ("tags", "FSDKaggle2019 curated (DCASE 2019 Task 2)",
            "KFold(5, shuffle, seed 42) fold 0 train; best checkpoint chosen on its 20% evaluation part"),
    "sed": ("events", "TAU-NIGENS Spatial Sound Events 2020, development (DCASE 2020 Task 3)",
            "folds 3-6, each channel an example; best checkpoint chosen on fold 1 (4 channels averaged)"),
}


def export_model(model: nn.Module, directory: str | Path, *, recipe: Recipe, stage: str, tasks: Sequence[str],
                 selected_for: str, epoch: int, metrics_: Mapping[str, float], data_roots: Mapping[str, Path]) -> Path:
    """Save ``model`` in the hub format (config.json + model.safetensors + README.md model card), atomically.

    The config records the recipe, the stage, the epoch, the metrics and the data, and
    ``provenance = "trained by dcasenet-hub, recipe R, data D"``, so ``DcaseNet.from_pretrained(directory)`` works.
    """
    from dcasenet_hub.train.minidata import mini_dataset_marker

    directory = Path(directory)
    sources = {t: _DATA[t] for t in tasks}
    mini = {t: mini_dataset_marker(data_roots[t]) for t in tasks if t in data_roots}
    for t, params in mini.items():  # data made by `data make-mini`: say so, never the real dataset's name
        if params is not None:
            sources[t] = (_DATA[t][0], (f"synthetic mini dataset made by `dcasenet-hub data make-mini` (seed "
                                        f"{params.get('seed', '?')}) in the layout of {_DATA[t][1]}; not real "
                                        "recordings"), _DATA[t][2])
    synthetic = any(v is not None for v in mini.values())
    data = "; ".join(f"{sources[t][1]} ({sources[t][2]})" for t in tasks)
    provenance = (f"trained by dcasenet-hub, recipe {recipe.name} (stage {stage}, best {selected_for} at epoch "
                  f"{epoch + 1}), data {data}")
    values = {}
    for key, card_key in (("asc_acc", "scene_accuracy"), ("tag_lwlrap", "tag_lwlrap"), ("sed_f1", "event_f1"),
                          ("sed_er", "event_error_rate")):
        if key in metrics_ and math.isfinite(float(metrics_[key])):
            values[card_key] = round(float(metrics_[key]), 4)
    extra = {
        "description": (f"Trained with dcasenet-hub's retraining module, recipe `{recipe.name}` "
                        f"({recipe.description}), stage `{stage}`; checkpoint with the best {selected_for} "
                        f"metric, epoch {epoch + 1} of {recipe.epochs}."),
        "recipe": recipe.to_dict(),
        "stage": stage,
        "epoch": epoch + 1,
        "selected_for": selected_for,
        "best_metrics": json_ready({k: float(v) for k, v in metrics_.items()}),
        "trained_on": [{"task": sources[t][0], "dataset": sources[t][1], "split": sources[t][2],
                        "folder": Path(data_roots[t]).name} for t in tasks if t in data_roots],
        "metrics": {"values": values, "reported_in": f"this training run ({stage}, epoch {epoch + 1})",
                    "note": "Measured with the authors' metrics on the evaluation splits that also selected the "
                            "checkpoint (as in the paper), so they are optimistic."},
        "name": directory.name,
    }
    if synthetic:
        extra["synthetic_data"] = True
        extra["metrics"]["note"] = ("Measured on synthetic mini data (`dcasenet-hub data make-mini`): they say the "
                                    "training ran, nothing about real recordings.")
    raw = model
    old_config = raw.config
    raw.config = old_config.replace(trained_tasks=tuple(MODEL_TASK[t] for t in tasks), provenance=provenance,
                                    model_id=None, extra=extra)
    try:
        save_pretrained(raw, directory)  # one unit: a kill leaves the previous best model or the new one
    finally:
        raw.config = old_config
    return directory
