"""What a fine-tuning run leaves behind: the record in ``config.extra["finetune"]``, the model card section,
``metrics.jsonl`` and the saved folder.

Records written before and after the task vocabulary was unified read alike: ``task`` holds fine-tuning's word
(``"classification"``, ``"tagging"``, ``"detection"``; :func:`dcasenet_hub.config.canonical_task` maps it to the head)
and ``head`` the canonical head name (``"scene"``, ``"tags"``, ``"events"``).

Example:
    >>> _public_id("dcasenet-v3")
    'dcasenet-v3'
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from dcasenet_hub.finetuning.data import Dataset
    from dcasenet_hub.inference.model import DcaseNet

#: Per-epoch log written next to the model.
LOG_NAME = "metrics.jsonl"
#: The log of a fine-tune still running (or killed) in a folder, until the model is saved.
PARTIAL_LOG_NAME = "metrics.partial.jsonl"
#: The state ``resume`` continues from (weights, optimiser, random generators, history), rewritten after every
#: epoch; removed with the partial log when the model is saved.
STATE_NAME = "finetune-state.partial.pt"
_STATE_FORMAT = 1
#: What a state holds (:meth:`dcasenet_hub.finetuning.loop._Run._save_state` writes it).
_STATE_KEYS = frozenset({"format", "fingerprint", "phase", "epoch", "phase_done", "stopped", "weights", "optimizer",
                         "scheduler", "scaler", "history", "stale", "resumed_after", "best", "probe_samples",
                         "numpy_rng", "torch_rng", "seconds"})
#: Recipe entries that do not change what a run computes (or are filled in as it runs).
_NOT_IDENTITY = ("device", "seconds", "probe_samples")


def _public_id(model_id: str | None) -> str | None:
    """A manifest or Hugging Face id as it is; a local path reduced to its name (no local paths in a model card)."""
    if model_id and Path(model_id).expanduser().exists():
        return Path(model_id).name
    return model_id


def base_id(base: DcaseNet) -> str:
    """How the record and the provenance name the base model."""
    return _public_id(base.config.model_id) or f"DcaseNet-{base.config.arch} ({base.config.provenance})"


def card_section(record: dict[str, Any], dataset: Dataset) -> str:
    """The model card's "Fine-tuning" section (Markdown)."""
    r = record["recipe"]
    lines = [
        "## Fine-tuning\n",
        (f"Fine-tuned with `dcasenet_hub.finetune` from **{record['base_model']}** for **{record['task']}** "
         f"(the `{record['head']}` head now predicts the labels below).\n"),
        f"- **Data:** {dataset.summary()}; split: {dataset.split}",
        (f"- **Mode:** {r['mode']} (freeze={r['freeze']}; trained blocks: "
         f"{', '.join(r['trained_blocks']) or 'head only'}); head: {r['head']}"),
        f"- **Recipe:** {r['epochs']} epochs max, batch {r['batch_size']}, lr {r['lr']:g}"
        + (f" (body {r['body_lr']:g})" if r.get("body_lr") else "")
        + f", {r['optimizer']}" + (f", {r['crop_s']:g} s crops" if r.get("crop_s") else "")
        + (f", mixup alpha {r['mixup_alpha']:g}" if r.get("mixup_alpha") else "")
        + f", early stopping patience {r['patience']}, seed {r['seed']}"
        + (f", {r['dtype']} forward passes" if r.get("dtype", "fp32") != "fp32" else ""),
        (f"- **Best epoch:** {record['best_phase']} epoch {record['best_epoch']} ({r['selection']}; "
         f"{len(record['history'])} epochs run)\n"),
        "| validation metric | value |",
        "| --- | --- |",
        *(f"| {k} | {v:.4f} |" for k, v in record["validation"].items()),
        "",
        "| label | training clips | validation clips |",
        "| --- | --- | --- |",
        *(f"| `{label}` | {record['data']['clips_per_label']['train'][label]} | "
          f"{record['data']['clips_per_label']['validation'][label]} |" for label in dataset.labels),
        "",
        ("Validation uses the windows and features `predict` uses, on the saved weights. Per-epoch metrics: "
         "`metrics.jsonl`; the full record: `config.json` -> `extra.finetune`."),
    ]
    if record["heads_no_longer_trained"]:
        lines.append(f"\nThe {', '.join(record['heads_no_longer_trained'])} head(s) share blocks that were "
                     "fine-tuned, so they are marked untrained.")
    return "\n".join(lines) + "\n"


def _lines(history: list[dict[str, Any]]) -> str:
    from dcasenet_hub._io import json_text

    return "".join(json_text(row) + "\n" for row in history)


def write_log(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """:data:`PARTIAL_LOG_NAME`: the running fine-tune's epochs so far (rewritten atomically after every epoch).

    Not ``metrics.jsonl``, which belongs to the saved model: a run killed before it saves leaves the folder's model
    and its log as they were, beside this file.
    """
    from dcasenet_hub._io import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / PARTIAL_LOG_NAME, _lines(history))


def fingerprint(base: DcaseNet, labels: Sequence[str], clips: Iterable[tuple[np.ndarray, np.ndarray]],
                recipe: dict[str, Any]) -> str:
    """SHA-256 of what a run's result depends on: the base model's content, the labels, every training and
    validation clip (decoded audio and targets, in order) and the recipe. A run resumes only into the same one.

    ``clips``: ``(wave, target)`` pairs, training clips first.
    """
    from dcasenet_hub._io import json_text
    from dcasenet_hub.hub.checkpoint import content_sha256

    h = hashlib.sha256(content_sha256(base.config, base.state_dict().items()).encode())
    h.update(json_text({"labels": list(labels),
                        "recipe": {k: v for k, v in recipe.items() if k not in _NOT_IDENTITY}}).encode())
    for wave, target in clips:
        for a in (wave, target):
            a = np.ascontiguousarray(a)
            h.update(f"\0{a.dtype}:{a.shape}\0".encode())
            h.update(a.data)
    return h.hexdigest()


def write_state(out_dir: Path, state: dict[str, Any]) -> None:
    """Write :data:`STATE_NAME` atomically: a kill leaves the previous epoch's state or this one."""
    from dcasenet_hub._io import atomic_torch_save

    atomic_torch_save(out_dir / STATE_NAME, {"format": _STATE_FORMAT, **state})


def read_state(out_dir: Path, expected: str) -> dict[str, Any] | None:
    """The state a stopped run left in ``out_dir`` (None: there is none).

    Raises:
        OptionsError: the state is damaged, or belongs to a run with another base model, other data or other
            options (the message says how to continue or start over).
    """
    import torch

    from dcasenet_hub.errors import OptionsError

    path = out_dir / STATE_NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise OptionsError(f"Cannot resume from {path}: it is damaged ({type(exc).__name__}); delete it to start the "
                           "run over") from None
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise OptionsError(f"Cannot resume from {path}: it is not a dcasenet-hub fine-tuning state; delete it to "
                           "start the run over")
    missing = sorted(_STATE_KEYS - state.keys())
    if missing:
        raise OptionsError(f"Cannot resume from {path}: it is damaged (no {', '.join(missing)}); delete it to start "
                           "the run over")
    if state.get("fingerprint") != expected:
        raise OptionsError(f"Cannot resume from {path}: that run used another base model, other data or other "
                           "options. Resume with the command that started it, or drop resume (--resume) to start "
                           "over")
    return state


def save(model: DcaseNet, out_dir: Path, history: list[dict[str, Any]]) -> None:
    """``save_pretrained`` into ``out_dir`` with ``metrics.jsonl``, as one unit; the model is named after its folder."""
    # named after its folder (the model card's title and the id in predictions), not after the base model
    from dcasenet_hub.hub.checkpoint import save_pretrained

    model.config = model.config.replace(model_id=out_dir.resolve().name)
    # the log goes with the model in one unit: a kill leaves the old model and log or the new ones
    save_pretrained(model, out_dir, extra_files={LOG_NAME: _lines(history).encode()})
    (out_dir / PARTIAL_LOG_NAME).unlink(missing_ok=True)
    (out_dir / STATE_NAME).unlink(missing_ok=True)


__all__ = ["LOG_NAME", "PARTIAL_LOG_NAME", "STATE_NAME", "base_id", "card_section", "fingerprint", "read_state", "save",
           "write_log", "write_state"]
