"""Provenance: models trained on `data make-mini` output say so (config and card); converted folders are named
after their output folder, not the checkpoint file."""

from __future__ import annotations

import json
from pathlib import Path

from dcasenet_hub import build_model
from dcasenet_hub.cli import main
from dcasenet_hub.train import export_model, load_recipe, minidata
from dcasenet_hub.train.datasets import ASC_FOLDER


def _mini_roots(base: Path) -> dict[str, Path]:
    """Folders laid out as make_mini_datasets writes them, each task folder with its marker."""
    roots = {"asc": base / "asc" / ASC_FOLDER, "tag": base / "fsdkaggle2019", "sed": base / "tau-nigens2020"}
    for task, root in roots.items():
        root.mkdir(parents=True)
        (root.parent if task == "asc" else root).joinpath(minidata.MARKER).write_text(json.dumps({"seed": 7}))
    return roots


def _export(tmp_path: Path, roots: dict[str, Path], name: str) -> Path:
    return export_model(build_model("v3").eval(), tmp_path / name, recipe=load_recipe("v3-asc-tag-sed"),
                        stage="joint", tasks=("asc", "tag", "sed"), selected_for="asc_acc", epoch=0,
                        metrics_={"asc_acc": 12.5, "tag_lwlrap": 3.0, "sed_f1": 1.0, "sed_er": 0.9},
                        data_roots=roots)


def test_model_trained_on_mini_data_is_described_as_such(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    out = _export(tmp_path, _mini_roots(tmp_path / "mini"), "mini-run")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["extra"]["synthetic_data"] is True
    assert cfg["provenance"].count("synthetic mini dataset made by `dcasenet-hub data make-mini` (seed 7)") == 3
    for d in cfg["extra"]["trained_on"]:
        assert d["dataset"].startswith("synthetic mini dataset"), d
    card = (out / "README.md").read_text()
    assert "# mini-run\n" in card and "# dcasenet-v3\n" not in card
    assert "Trained on synthetic mini data" in card
    assert ModelCard(card).data.eval_results is None  # no model-index entry naming TAU / FSDKaggle


def test_model_trained_on_real_data_keeps_the_dataset_names(tmp_path: Path) -> None:
    roots = {"asc": tmp_path / "real" / ASC_FOLDER, "tag": tmp_path / "fsd", "sed": tmp_path / "nigens"}
    for r in roots.values():
        r.mkdir(parents=True)
    out = _export(tmp_path, roots, "real-run")
    cfg = json.loads((out / "config.json").read_text())
    assert "synthetic" not in cfg["provenance"] and "synthetic_data" not in cfg["extra"]
    assert cfg["extra"]["trained_on"][0]["dataset"].startswith("TAU Urban Acoustic Scenes 2020 Mobile")
    card = (out / "README.md").read_text()
    assert "# real-run\n" in card and "model-index" in card


def test_convert_names_the_model_after_the_output_folder(authors_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "my-dcasenet"
    assert main(["convert", str(authors_checkpoint), "-o", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_id"] == "my-dcasenet"
    card = (out / "README.md").read_text()
    assert "# my-dcasenet\n" in card and authors_checkpoint.name not in card.split("\n# ")[1].splitlines()[0]


def test_reading_a_checkpoint_without_writing_does_not_claim_a_conversion(authors_checkpoint, tmp_path):
    from dcasenet_hub.hub.api import convert_checkpoint

    read = convert_checkpoint(authors_checkpoint, arch="v3")
    assert "converted to safetensors" not in read.config.provenance
    assert "read by dcasenet-hub (not converted)" in read.config.provenance
    written = convert_checkpoint(authors_checkpoint, arch="v3", output_dir=tmp_path / "m")
    assert "converted to safetensors by dcasenet-hub" in written.config.provenance
