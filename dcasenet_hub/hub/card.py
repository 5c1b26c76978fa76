"""The ``README.md`` model card written beside ``config.json`` + ``model.safetensors`` (Hugging Face format)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from dcasenet_hub.config import ModelConfig

PAPER_URL = "https://arxiv.org/abs/2009.09642"
CITATION = """@inproceedings{jung2021dcasenet,
  title={DCASENet: An integrated pretrained deep neural network for detecting and classifying acoustic scenes and events},
  author={Jung, Jee-weon and Shim, Hye-jin and Kim, Ju-ho and Yu, Ha-Jin},
  booktitle={Proc. ICASSP},
  pages={621--625},
  year={2021},
  organization={IEEE}
}"""
TAGS = ["dcasenet", "dcasenet-hub", "pytorch", "audio", "audio-classification", "acoustic-scene-classification",
        "audio-tagging", "sound-event-detection", "embeddings"]

# metric key -> (task type, dataset type, dataset name, metric type, display name)
_METRIC_INFO = {
    "scene_accuracy": ("audio-classification", "tau-urban-acoustic-scenes-2020-mobile",
                       "TAU Urban Acoustic Scenes 2020 Mobile (DCASE 2020 Task 1a), fold1_evaluate", "accuracy",
                       "Scene accuracy (%)"),
    "tag_lwlrap": ("audio-classification", "fsdkaggle2019", "FSDKaggle2019 curated, 20% held out (fold 0)", "lwlrap",
                   "Tag lwlrap (%)"),
    "event_f1": ("sound-event-detection", "tau-nigens-spatial-sound-events-2020",
                 "TAU-NIGENS Spatial Sound Events 2020 (DCASE 2020 Task 3), fold 1", "f1", "Event F1 (%)"),
    "event_error_rate": ("sound-event-detection", "tau-nigens-spatial-sound-events-2020",
                         "TAU-NIGENS Spatial Sound Events 2020 (DCASE 2020 Task 3), fold 1", "error_rate",
                         "Event error rate"),
}


def _label_block(title: str, labels: tuple[str, ...]) -> str:
    items = ", ".join(f"`{x}`" for x in labels)
    return f"<details><summary>{title} ({len(labels)})</summary>\n\n{items}\n\n</details>\n"


def render_model_card(config: ModelConfig, *, num_parameters: int, repo_id: str | None = None) -> str:
    """Markdown model card with YAML metadata (library_name, tags, license, model-index) for ``config``."""
    from huggingface_hub import EvalResult, ModelCardData

    extra: dict[str, Any] = dict(config.extra or {})
    # only what the source states: weights of unknown origin are not the package's to license
    license_ = str(extra.get("license") or "unknown").lower()
    citation = str(extra.get("citation") or CITATION)
    metrics = extra.get("metrics") or None
    name = repo_id or config.model_id or str(extra.get("name") or "") or f"dcasenet-{config.arch}"
    if not repo_id and ("/" in name or "\\" in name):  # a file path, not an id
        name = f"dcasenet-{config.arch}"
    synthetic = bool(extra.get("synthetic_data"))
    eval_results = []
    rows = []
    if metrics:
        for key, value in metrics.get("values", {}).items():
            if key not in _METRIC_INFO:
                continue
            task, ds_type, ds_name, metric, display = _METRIC_INFO[key]
            rows.append(f"| {display} | {value} |")
            if synthetic:  # the model-index names the real datasets: no entry for numbers from synthetic data
                continue
            eval_results.append(EvalResult(
                task_type=task, dataset_type=ds_type, dataset_name=ds_name, metric_type=metric,
                metric_value=value, source_name=str(metrics.get("reported_in", "paper")), source_url=PAPER_URL,
            ))
    data = ModelCardData(
        library_name="dcasenet-hub", license=license_, tags=TAGS, pipeline_tag="audio-classification",
        model_name=name.split("/")[-1], eval_results=eval_results or None,
    )
    trained = ", ".join(config.trained_tasks) if config.trained_tasks else "none recorded (treat heads as untrained)"
    load = repo_id or (config.model_id if config.model_id == name else "path/to/this/folder")
    parts = [
        f"---\n{data.to_yaml()}\n---\n",
        f"# {name}\n",
        f"DcaseNet-{config.arch} (Jung et al., ICASSP 2021): one CNN-RNN for acoustic scene classification, audio "
        "tagging and sound event detection, packaged with dcasenet-hub. Paper: " + PAPER_URL + "; the authors' "
        "code and weights: https://github.com/Jungjee/DcaseNet\n",
    ]
    if synthetic:
        parts.append("**Trained on synthetic mini data** (`dcasenet-hub data make-mini`): a smoke test of the "
                     "training pipeline, not a model of real scenes, tags or events.\n")
    if extra.get("description"):
        parts.append(f"{extra['description']}\n")
    parts += [
        f"- **Architecture:** DcaseNet-{config.arch}, {num_parameters:,} parameters",
        f"- **Trained heads:** {trained}",
        f"- **Provenance:** {config.provenance}",
        f"- **License:** {license_}",
        f"- **Input:** mono audio resampled to {config.frontend.sample_rate} Hz, {config.frontend.n_mels}-band "
        f"log-mel (hop {config.frontend.hop_length} samples); see `config.json` for every front-end setting\n",
        "## Usage\n",
        "```python\nfrom dcasenet_hub import DcaseNet\n\n"
        f"model = DcaseNet.from_pretrained({load!r})\n"
        "pred = model.predict(\"street.wav\")   # scene, tags, events with label names\n"
        "emb = model.embed(\"street.wav\")      # frame and clip embeddings\n```\n",
    ]
    if extra.get("trained_on"):
        parts.append("## Training data\n")
        parts += [f"- {d['task']}: {d['dataset']}, {d['split']}" for d in extra["trained_on"]]
        parts.append("")
    if rows:
        parts += ["## Reported metrics\n", f"From {metrics.get('reported_in', 'the paper')}.\n",
                  "| metric | value |", "| --- | --- |", *rows, ""]
        if metrics.get("note"):
            parts.append(f"{metrics['note']}\n")
    parts += [
        "## Labels\n",
        _label_block("Scenes", config.scene_labels),
        _label_block("Tags", config.tag_labels),
        _label_block("Events", config.event_labels),
        "## Citation\n",
        f"```bibtex\n{citation}\n```\n",
    ]
    return "\n".join(parts)
