"""Model folders as one unit, config and weights that belong together, and validated configs.

The fixture weights are deterministic test weights, not pretrained ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import dcasenet_hub
from dcasenet_hub import DcaseNet
from dcasenet_hub.cli import main
from dcasenet_hub.config import LABEL_RULE, FrontendConfig, ModelConfig, WindowConfig
from dcasenet_hub.errors import DataError, ModelConfigError, ModelFileError
from dcasenet_hub.hub import folder as F

KILLER = Path(__file__).parent / "kill_at_nth_rename.py"


def _identity(model: torch.nn.Module) -> tuple[str, str]:
    """What a loaded model is: a hash of its config (labels, provenance; not the id loading fills in from the path,
    nor ``extra``, which holds a fine-tuning run's timings) and a hash of every tensor."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("model_id", "extra")}
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(), h.hexdigest()


def _other_weights(v3_state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    """An authors'-format checkpoint with other weights than the fixture's."""
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in v3_state_dict.items()}, path)
    return path


# ---- findings 6 and 7: config and weights belong together ---------------------------------------------------


def test_new_config_beside_old_weights_is_refused(v3_model: DcaseNet, tmp_path: Path) -> None:
    """The state a kill in the middle of an old file-by-file write left: the new config.json beside the old
    model.safetensors. It loaded silently and predicted the old model's numbers under the new labels."""
    old, new = tmp_path / "old", tmp_path / "new"
    v3_model.save_pretrained(old)
    relabelled = DcaseNet(v3_model.config.replace(scene_labels=tuple(f"s{i}" for i in range(10))))
    relabelled.load_state_dict({k: v + 1 if v.is_floating_point() else v for k, v in v3_model.state_dict().items()})
    relabelled.save_pretrained(new)
    shutil.copy(new / "config.json", old / "config.json")
    with pytest.raises(ModelFileError, match="do not belong together.*sha256"):
        dcasenet_hub.from_pretrained(old)
    # a config without the recorded hash (hand-made, or an older release) is compared with the weights' metadata
    cfg = json.loads((new / "config.json").read_text())
    del cfg["weights_sha256"]
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="scene_labels"):
        dcasenet_hub.from_pretrained(old)
    assert dcasenet_hub.from_pretrained(new).config.scene_labels[0] == "s0"


def _folder_with_a_commit_of_other_weights(v3_model: DcaseNet, tmp_path: Path) -> tuple[Path, DcaseNet, Path, dict]:
    """A saved model folder holding an empty commit folder, and the other model whose files a writer was committing."""
    from dcasenet_hub.hub.checkpoint import serialize

    out = tmp_path / "m"
    v3_model.save_pretrained(out)
    other = DcaseNet(v3_model.config.replace(provenance="other"))
    other.load_state_dict({k: v * 2 if v.is_floating_point() else v for k, v in v3_model.state_dict().items()})
    commit = out / F.COMMIT_DIR
    commit.mkdir()
    return out, other, commit, serialize(other)


def test_a_commit_left_by_a_killed_writer_is_read_from_the_commit_where_it_cannot_be_finished(
        v3_model: DcaseNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the commit rename the folder is the new model: a loader that cannot write (here: the moves fail with
    PermissionError, as in a read-only copy) reads the committed files from the commit folder."""
    out, other, commit, files = _folder_with_a_commit_of_other_weights(v3_model, tmp_path)
    (commit / "model.safetensors").write_bytes(files["model.safetensors"])
    (commit / "config.json").write_bytes(files["config.json"])

    def read_only(folder: Path) -> None:
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(F, "_apply", read_only)
    assert _identity(dcasenet_hub.from_pretrained(out)) == _identity(other) and commit.is_dir()
    monkeypatch.undo()
    assert _identity(dcasenet_hub.from_pretrained(out)) == _identity(other)
    assert not commit.exists() and sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                                          "model.safetensors"]


def test_a_commit_left_by_a_killed_writer_is_finished_on_load(v3_model: DcaseNet, tmp_path: Path) -> None:
    out, other, commit, files = _folder_with_a_commit_of_other_weights(v3_model, tmp_path)
    (commit / "model.safetensors").write_bytes(files["model.safetensors"])
    os.replace(commit / "model.safetensors", out / "model.safetensors")  # killed after the first move
    (commit / "config.json").write_bytes(files["config.json"])
    assert _identity(dcasenet_hub.from_pretrained(out)) == _identity(other)
    assert not commit.exists()
    # a staging folder of a writer that is gone is invisible to readers and removed by the next writer (its name
    # is built with the folder module's private _host(), as a crashed writer on this machine would have named it)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    staging = out / f"{F.STAGING_PREFIX}{F._host()}-{dead.stdout.strip()}-x"
    staging.mkdir()
    (staging / "config.json").write_text("{}")
    assert _identity(dcasenet_hub.from_pretrained(out)) == _identity(other)
    v3_model.save_pretrained(out)
    assert not staging.exists()


@pytest.mark.parametrize("moved", [(), ("model.safetensors",)])
def test_resume_fingerprints_a_folder_with_a_pending_commit_as_the_committed_model(
        v3_model: DcaseNet, tmp_path: Path, moved: tuple[str, ...]) -> None:
    """From the commit rename on the folder is the new model: a job's fingerprint (taken before anything loads and
    finishes the moves) must be the new model's, or outputs of the old weights would be skipped as complete."""
    from dcasenet_hub.batch.resume import model_identity

    out, other, commit, files = _folder_with_a_commit_of_other_weights(v3_model, tmp_path)
    old = model_identity(out)["model_sha256"]
    for name, data in files.items():
        (commit / name).write_bytes(data)
    for name in moved:  # killed after these moves
        os.replace(commit / name, out / name)
    new = model_identity(out)["model_sha256"]
    other.save_pretrained(tmp_path / "other")
    assert new != old and new == model_identity(tmp_path / "other")["model_sha256"]
    dcasenet_hub.from_pretrained(out)  # finishes the moves: the same files, the same fingerprint
    assert not commit.exists() and model_identity(out)["model_sha256"] == new


def _run_killed(args: list[str], nth: int, when: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get(
        "PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(KILLER), str(nth), when, *args], env=env, capture_output=True,
                          timeout=300).returncode


def _kill_at_every_rename(args: list[str], out: Path, pristine: Path, old: str, new: str, *,
                          modes: tuple[str, ...]) -> int:
    """Run ``args`` killed at the 1st, 2nd, ... rename until it finishes; after each kill ``out`` must load as the
    old or the new model. Returns the number of renames the command made."""
    for when in modes:
        nth = 1
        while True:
            shutil.rmtree(out)
            shutil.copytree(pristine, out, symlinks=True)
            rc = _run_killed(args, nth, when)
            got = _identity(dcasenet_hub.from_pretrained(out))
            if rc == 0:
                assert got == new, f"finished without a kill ({when} rename {nth}) but is not the new model"
                break
            assert rc == -9, f"exit {rc} at {when} rename {nth}"
            assert got in (old, new), f"killed {when} rename {nth}: a mix of the old and the new model"
            nth += 1
    return nth - 1


@pytest.mark.integration
def test_sigkill_at_every_rename_of_convert_leaves_the_old_or_the_new_model(
        authors_checkpoint: Path, v3_state_dict: dict[str, torch.Tensor], tmp_path: Path) -> None:
    out, pristine = tmp_path / "model", tmp_path / "pristine"
    other = _other_weights(v3_state_dict, tmp_path / "other.pt")
    assert main(["convert", str(authors_checkpoint), "--arch", "v3", "-o", str(pristine), "-q"]) == 0
    old = _identity(dcasenet_hub.from_pretrained(pristine))
    fresh = tmp_path / "fresh" / "model"
    assert main(["convert", str(other), "--arch", "v3", "-o", str(fresh), "-q"]) == 0
    new = _identity(dcasenet_hub.from_pretrained(fresh))
    assert old != new
    out.mkdir()
    renames = _kill_at_every_rename(["convert", str(other), "--arch", "v3", "-o", str(out), "-q", "--overwrite"],
                                    out, pristine,
                                    old, new, modes=("before", "after"))
    assert renames >= 4  # the commit and one move per file: each was a kill point


def _clips(root: Path, labels: tuple[str, ...], n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels):
        (root / label).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            t = np.arange(24000) / 24000
            x = 0.3 * np.sin(2 * np.pi * (200 + 900 * i) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / label / f"{label}_{j}.wav", x.astype(np.float32), 24000)
    return root


@pytest.mark.integration
def test_sigkill_at_every_rename_of_finetune_overwrite_leaves_the_old_or_the_new_model(
        authors_checkpoint: Path, v3_model: DcaseNet, tmp_path: Path) -> None:
    data = _clips(tmp_path / "data", ("high", "low"))
    out, pristine = tmp_path / "model", tmp_path / "pristine"
    before = DcaseNet(v3_model.config.replace(scene_labels=("a", "b"), provenance="the old fine-tune"))
    before.load_state_dict({k: v for k, v in v3_model.state_dict().items() if not k.startswith("fc_ASC")},
                           strict=False)
    before.save_pretrained(pristine)
    old = _identity(dcasenet_hub.from_pretrained(pristine))
    args = ["finetune", str(data), "--task", "classification", "--base", str(authors_checkpoint), "-o", str(out),
            "--epochs", "1", "--overwrite", "--seed", "3", "-q"]
    fresh = tmp_path / "fresh"
    assert main([*args[:7], str(fresh), *args[8:]]) == 0
    new = _identity(dcasenet_hub.from_pretrained(fresh))
    assert old != new
    shutil.copytree(pristine, out)
    renames = _kill_at_every_rename(args, out, pristine, old, new, modes=("before",))
    assert renames >= 5


# ---- findings 10 and 11: validated configs ------------------------------------------------------------------


@pytest.mark.parametrize(("change", "field", "allowed"), [
    ({"frontend": {"hop_length": 0}}, "frontend.hop_length", "an integer from 1 to"),
    ({"frontend": {"n_fft": 1e8}}, "frontend.n_fft", "an integer from 16 to 65536"),
    ({"windows": {"event_window_s": 0}}, "windows.event_window_s", "above 0"),
    ({"scene_labels": ["airport", "bus", "airport"]}, "scene_labels[2]", "unique labels"),
    ({"event_threshold": 5}, "event_threshold", "a probability above 0 and below 1"),
    ({"tag_labels": ["Bark\tDog"]}, "tag_labels[0]", LABEL_RULE),
    ({"event_labels": ["alarm\nbaby"]}, "event_labels[0]", LABEL_RULE),
    ({"trained_tasks": ["scene", "scene"]}, "trained_tasks[1]", "at most once"),
    ({"frontend": {"center": "yes"}}, "frontend.center", "one of True, False"),
    ({"windows": {"event_window_s": 0.5}}, "windows.event_window_s", "at least one network output step (0.8 s)"),
])
def test_every_config_field_is_checked_on_construction_and_on_load(change: dict, field: str, allowed: str,
                                                                   tmp_path: Path) -> None:
    """Before, hop_length 0 gave a ZeroDivisionError traceback, n_fft 1e8 made every input too short,
    event_window_s 0 failed every input, a duplicate label gave status ok with probabilities summing to 0.894,
    event_threshold 5 was accepted and labels with tabs broke .scores.tsv."""
    d = ModelConfig().to_dict()
    for k, v in change.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    with pytest.raises(ModelConfigError) as ei:
        ModelConfig.from_dict(d)
    msg = str(ei.value)
    assert f"field '{field}' is " in msg and allowed in msg and ei.value.field == field
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ModelConfigError, match=str(path).replace("\\", "\\\\")):
        ModelConfig.load(path)


def test_constructors_check_their_fields_too() -> None:
    with pytest.raises(ModelConfigError, match="frontend.hop_length"):
        FrontendConfig(hop_length=0)
    with pytest.raises(ModelConfigError, match="windows.scene_hop_s"):
        WindowConfig(scene_hop_s=float("nan"))
    with pytest.raises(ModelConfigError, match="scene_labels"):
        ModelConfig(scene_labels=())
    with pytest.raises(ModelConfigError, match="frontend.sample_rate"):
        ModelConfig(frontend=FrontendConfig(sample_rate=True))  # type: ignore[arg-type]
    assert ModelConfig(arch="v1", scene_labels=("a b", "c")).scene_labels == ("a b", "c")


def test_cli_refuses_a_model_with_an_invalid_config_with_exit_3(v3_model: DcaseNet, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a ZeroDivisionError traceback (hop_length 0)."""
    folder = tmp_path / "m"
    v3_model.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["frontend"]["hop_length"] = 0
    (folder / "config.json").write_text(json.dumps(cfg))
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(24000, np.float32), 24000)
    assert main(["embed", str(wav), "--model", str(folder), "-o", str(tmp_path / "out"), "-q"]) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "config.json: model config field 'frontend.hop_length' is 0; allowed: an integer from 1 to" in err


def test_finetuning_data_with_control_characters_in_labels_is_refused_with_the_config_rule(tmp_path: Path) -> None:
    """Before: a tab in a label gave a .scores.tsv whose header had more fields than its rows."""
    from dcasenet_hub.finetuning import read_dataset

    root = _clips(tmp_path / "data", ("ok", "also_ok"))
    table = tmp_path / "labels.csv"
    rows = [f"{root / 'ok' / 'ok_0.wav'},ok", f"{root / 'ok' / 'ok_1.wav'},ok",
            f'{root / "also_ok" / "also_ok_0.wav"},"bad\tlabel"', f"{root / 'also_ok' / 'also_ok_1.wav'},also_ok"]
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as ei:
        read_dataset(table, task="classification")
    msg = str(ei.value)
    assert "also_ok_0.wav: label 'bad\\tlabel' contains a control character (U+0009)" in msg and LABEL_RULE in msg
