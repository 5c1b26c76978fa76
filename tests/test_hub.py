"""from_pretrained on local folders/files and Hugging Face repos (real huggingface_hub on a pre-filled cache),
strict loading, errors, save_pretrained / push_to_hub (upload stubbed at the network boundary only)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import closed_port, write_manifest
from safetensors.torch import load_file, save_file

import dcasenet_hub
from dcasenet_hub import CheckpointMismatchError, DcaseNet
from dcasenet_hub.config import ModelConfig
from dcasenet_hub.hub import api as hub

COMMIT_HF = "0123456789abcdef0123456789abcdef01234567"


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory, v3_model: DcaseNet) -> Path:
    return v3_model.save_pretrained(tmp_path_factory.mktemp("saved") / "model")


# -- local folders and files -------------------------------------------------------------------------------------


def test_save_pretrained_round_trip(saved_dir: Path, v3_model: DcaseNet) -> None:
    assert sorted(p.name for p in saved_dir.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = dcasenet_hub.from_pretrained(saved_dir)
    assert _same_weights(loaded, v3_model) and not loaded.training
    # the config comes back; a model without an id gets the folder it was loaded from
    assert loaded.config.replace(model_id=None) == v3_model.config and loaded.config.model_id == str(saved_dir)
    # a lone .safetensors carries its config in the metadata
    alone = DcaseNet.from_pretrained(saved_dir / "model.safetensors", dtype=torch.float16)
    assert alone.config.replace(model_id=None) == v3_model.config and next(alone.parameters()).dtype == torch.float16
    assert alone.state_dict()["conv_block1.bn1.num_batches_tracked"].dtype == torch.int64


def test_loading_builds_no_random_weights_and_takes_the_files_as_float32(saved_dir: Path, v3_model: DcaseNet,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved model is built on the meta device and takes the file's tensors: no random initialisation runs,
    nothing is left without storage, and a float16 file still loads as float32."""
    real_init: list[bool] = []  # one entry per initialised tensor that has storage (not on the meta device)
    real = torch.nn.init.kaiming_uniform_

    def spy(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        real_init.append(not tensor.is_meta)
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", spy)
    loaded = dcasenet_hub.from_pretrained(saved_dir)
    assert real_init and not any(real_init)  # the layers' initialisers ran, on storage-less tensors only
    assert _same_weights(loaded, v3_model)
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert not any(t.is_meta for t in tensors) and {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert all(p.requires_grad for p in loaded.parameters())
    half = tmp_path / "half"
    shutil.copytree(saved_dir, half)
    from safetensors import safe_open

    with safe_open(str(saved_dir / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    state = load_file(saved_dir / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, half / "model.safetensors",
              metadata=meta)
    cfg = json.loads((half / "config.json").read_text())  # the config names the weights it belongs with
    cfg["weights_sha256"] = hashlib.sha256((half / "model.safetensors").read_bytes()).hexdigest()
    (half / "config.json").write_text(json.dumps(cfg))
    from_half = dcasenet_hub.from_pretrained(half)
    assert {p.dtype for p in from_half.parameters()} == {torch.float32}
    sd = from_half.state_dict()
    assert all(torch.equal(sd[k], v.half().float() if v.is_floating_point() else v) for k, v in state.items())


def test_authors_pt_file_loads_strictly(authors_checkpoint: Path, v3_model: DcaseNet, tmp_path: Path) -> None:
    model = dcasenet_hub.from_pretrained(authors_checkpoint)
    assert _same_weights(model, v3_model) and model.config.arch == "v3"
    # not an official file: nothing claims it was trained
    assert model.config.trained_tasks == () and "training is unknown" in model.config.provenance
    # a checkpoint saved from nn.DataParallel ('module.' prefix) loads too
    sd = torch.load(authors_checkpoint, map_location="cpu", weights_only=True)
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "dp.pt")
    assert _same_weights(dcasenet_hub.from_pretrained(tmp_path / "dp.pt"), v3_model)


def test_convert_checkpoint_writes_a_loadable_folder(authors_checkpoint: Path, v3_model: DcaseNet,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "converted"
    hub.convert_checkpoint(authors_checkpoint, out, arch="v3", trained_tasks=["scene"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "v3" and cfg["trained_tasks"] == ["scene"] and cfg["library"] == "dcasenet-hub"
    assert _same_weights(dcasenet_hub.from_pretrained(out), v3_model)


def test_strict_loading_lists_missing_and_extra_keys(saved_dir: Path, authors_checkpoint: Path,
                                                     tmp_path: Path) -> None:
    sd = load_file(str(saved_dir / "model.safetensors"))
    sd.pop("gru_1.weight_ih_l0")
    sd["extra_head.weight"] = torch.zeros(3)
    bad = tmp_path / "bad"
    bad.mkdir()
    ModelConfig.load(saved_dir / "config.json").save(bad / "config.json")  # a hand-made folder: no weights hash
    save_file(sd, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        dcasenet_hub.from_pretrained(bad)
    msg = str(err.value)
    assert "Missing keys (1): gru_1.weight_ih_l0" in msg and "Unexpected keys (1): extra_head.weight" in msg
    # the same for an authors'-format .pt
    sd_pt = torch.load(authors_checkpoint, map_location="cpu", weights_only=True)
    del sd_pt["fc_ASC.bias"]
    torch.save(sd_pt, tmp_path / "missing.pt")
    with pytest.raises(CheckpointMismatchError, match=r"Missing keys \(1\): fc_ASC.bias"):
        hub.convert_checkpoint(tmp_path / "missing.pt", arch="v3")


class _NotATensor:
    """Anything but tensors must be refused: loading would need to run pickled code."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"conv_block1.conv1.weight": _NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        dcasenet_hub.from_pretrained(tmp_path / "evil.pt")


# -- names and errors --------------------------------------------------------------------------------------------


def test_unknown_and_unpublished_ids() -> None:
    with pytest.raises(hub.UnknownModelError) as err:
        dcasenet_hub.from_pretrained("dcasenet-v4")
    msg = str(err.value)
    assert msg.startswith("Unknown model 'dcasenet-v4'.") and "Known: dcasenet-v1, dcasenet-v2, dcasenet-v3" in msg
    assert "See dcasenet_hub.list_models()" in msg
    for arch in ("v1", "v2"):
        with pytest.raises(hub.WeightsNotPublishedError) as err:
            dcasenet_hub.from_pretrained(f"dcasenet-{arch}")
        msg = str(err.value)
        assert "never released" in msg and "dcasenet-hub train" in msg and "from_pretrained('/path" in msg
    with pytest.raises(ValueError, match="revision= applies to Hugging Face repo ids"):
        dcasenet_hub.from_pretrained("dcasenet-v3", revision="main")
    with pytest.raises(FileNotFoundError):
        dcasenet_hub.from_pretrained("no/such/dir/model.safetensors")


def test_list_models_and_info() -> None:
    ids = dcasenet_hub.list_models()
    assert {"dcasenet-v1", "dcasenet-v2", "dcasenet-v3"} <= set(ids) and ids == sorted(ids)
    pretrained = dcasenet_hub.list_models(pretrained=True)
    assert "dcasenet-v1" not in pretrained and len([i for i in pretrained if i != "dcasenet-v3"]) == 6
    info = hub.model_info("dcasenet-v3")
    assert info.target == "dcasenet-v3-joint-asc" and info.num_parameters == 13_882_920 and info.cached is None


def test_import_stays_light_and_list_models_needs_no_torch() -> None:
    code = ("import sys, dcasenet_hub; assert 'huggingface_hub' not in sys.modules and 'torch' not in sys.modules;"
            "ids = dcasenet_hub.list_models(); assert 'torch' not in sys.modules, 'torch'; print(len(ids))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# -- Hugging Face repos, through huggingface_hub on a pre-filled cache -------------------------------------------


def _prefill_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT_HF) -> str:
    """Lay out ``folder``'s files as huggingface_hub does: blobs named by hash, snapshot symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    sha256 = ""
    for f in ("config.json", "model.safetensors"):
        data = (folder / f).read_bytes()
        if f.endswith(".safetensors"):
            name = sha256 = hashlib.sha256(data).hexdigest()
        else:
            name = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / name).write_bytes(data)
        os.symlink(f"../../blobs/{name}", snap / f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return sha256


def test_hf_repo_id_from_prefilled_cache_offline(saved_dir: Path, v3_model: DcaseNet, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Path(os.environ["HF_HUB_CACHE"])  # the isolated cache the repository conftest.py sets
    _prefill_hf_cache(cache, "some-org/dcasenet-test", saved_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = dcasenet_hub.from_pretrained("some-org/dcasenet-test")
    assert _same_weights(model, v3_model) and model.config.model_id == "some-org/dcasenet-test"
    pinned = dcasenet_hub.from_pretrained("some-org/dcasenet-test", revision=COMMIT_HF, cache_dir=cache)
    assert pinned.config.model_id == f"some-org/dcasenet-test@{COMMIT_HF}"
    t = time.perf_counter()
    with pytest.raises(hub.OfflineError, match="HF_HUB_OFFLINE") as err:
        dcasenet_hub.from_pretrained("some-org/not-cached")
    assert time.perf_counter() - t < 10 and "DCASENET_HUB_MIRROR" in str(err.value)


def test_hf_repo_without_network_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not offline mode, but the endpoint does not answer: no 23 s retry loop."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    t = time.perf_counter()
    with pytest.raises(hub.OfflineError, match="no network"):
        dcasenet_hub.from_pretrained("some-org/not-cached")
    assert time.perf_counter() - t < 10


def test_hf_repo_with_an_unwritable_cache_fails_with_the_folder_and_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A repo id downloads into the Hugging Face cache: when it cannot be written, the same one-line refusal (exit 3)
    as the package cache's, not an OSError from inside huggingface_hub (the broken variant: no check before
    ``hf_hub_download``, which fails with "Not a directory" and no fix)."""
    import numpy as np
    import soundfile as sf
    from helpers import LoopbackServer

    from dcasenet_hub.cli import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache's parent should be")
    monkeypatch.setenv("HF_HUB_CACHE", str(blocker / "hub"))
    with LoopbackServer({}) as srv:  # the endpoint answers, so the download would start
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        with pytest.raises(dcasenet_hub.errors.CacheNotWritableError, match="HF_HUB_CACHE") as err:
            dcasenet_hub.from_pretrained("some-org/some-model")
        assert str(blocker / "hub") in str(err.value) and srv.gets() == []
        wav = tmp_path / "a.wav"
        sf.write(wav, np.zeros(24000, np.float32), 24000)
        assert main(["embed", str(wav), "-o", str(tmp_path / "out"), "--model", "some-org/some-model", "-q"]) == 3
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "cannot be written" in err_lines[0] and "HF_HUB_CACHE" in err_lines[0]


def test_manifest_hf_source_checks_sha256(saved_dir: Path, v3_model: DcaseNet, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Path(os.environ["HF_HUB_CACHE"])  # the isolated cache the repository conftest.py sets
    sha256 = _prefill_hf_cache(cache, "dcasenet-hub/test-v3", saved_dir)
    entry = {
        "description": "test", "arch": "v3", "trained_tasks": ["scene"], "trained_on": [],
        "sources": [{"type": "huggingface", "repo_id": "dcasenet-hub/test-v3", "revision": COMMIT_HF,
                     "sha256": sha256}],
        "license": "MIT", "citation": "@misc{x}", "metrics": None,
    }
    bad = dict(entry, sources=[dict(entry["sources"][0], sha256="0" * 64)])
    manifest = write_manifest(tmp_path / "m.json", {"hf-test": entry, "hf-bad": bad})
    monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(manifest))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any network use would fail
    model = dcasenet_hub.from_pretrained("hf-test")  # pinned revision in cache: no network needed
    assert _same_weights(model, v3_model)
    assert hub.model_info("hf-test").cached == cache / "models--dcasenet-hub--test-v3" / "snapshots" / COMMIT_HF
    with pytest.raises(hub.ChecksumMismatchError, match=f"expected sha256 {'0' * 64}, got {sha256}"):
        dcasenet_hub.from_pretrained("hf-bad")
    assert all(c.ok for c in hub.verify_cache()) is False  # the bad entry's expectation is reported
    assert [c.path.name for c in hub.verify_cache() if not c.ok] == ["model.safetensors"]


# -- publishing --------------------------------------------------------------------------------------------------


class _Commit:
    commit_url = "https://huggingface.co/some-org/dcasenet-test/commit/abc"
    pr_url = None


def test_push_to_hub_uploads_config_weights_and_card(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     v3_model: DcaseNet) -> None:
    from huggingface_hub import HfApi

    calls: dict[str, object] = {}

    def create_repo(self, repo_id, **kw):  # noqa: ANN001
        calls["create_repo"] = (repo_id, kw)

    def upload_folder(self, *, repo_id, folder_path, **kw):  # noqa: ANN001
        calls["upload"] = (repo_id, kw)
        shutil.copytree(folder_path, tmp_path / "uploaded")
        return _Commit()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    info = hub.model_info("dcasenet-v3-joint-asc")
    config = v3_model.config.replace(trained_tasks=("scene", "tags", "events"), model_id="test",
                                     extra={"metrics": info.metrics, "license": info.license,
                                            "citation": info.citation})
    model = DcaseNet(config)
    model.load_state_dict_strict(v3_model.state_dict())
    url = model.push_to_hub("some-org/dcasenet-test", private=True)
    assert url == _Commit.commit_url
    assert calls["create_repo"] == ("some-org/dcasenet-test", {"repo_type": "model", "private": True,
                                                                "exist_ok": True})
    up = tmp_path / "uploaded"
    assert sorted(p.name for p in up.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert _same_weights(dcasenet_hub.from_pretrained(up), v3_model)
    card = (up / "README.md").read_text()
    from huggingface_hub import ModelCard

    meta = ModelCard(card).data
    assert meta.library_name == "dcasenet-hub" and meta.license == "mit"
    assert {"audio-classification", "sound-event-detection", "dcasenet"} <= set(meta.tags)
    values = {r.metric_type: r.metric_value for r in meta.eval_results}
    assert values == {"accuracy": 56.80, "lwlrap": 70.40, "f1": 75.19, "error_rate": 0.3586}
    for label in ("street_traffic", "Accordion", "female_scream"):
        assert f"`{label}`" in card
    assert "@inproceedings{jung2021dcasenet" in card and 'from_pretrained(\'some-org/dcasenet-test\')' in card


@pytest.mark.integration
def test_saved_weights_are_byte_identical_across_processes(tmp_path: Path) -> None:
    """The same model saved by separate processes gives the same bytes (so conversions have a stable sha256)."""
    code = ("import sys; from dcasenet_hub import build_model; "
            "build_model('v1', seed=0).save_pretrained(sys.argv[1])")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    blobs = {(tmp_path / n / "model.safetensors").read_bytes() for n in ("a", "b", "c")}
    assert len(blobs) == 1


def test_push_to_hub_without_network_raises_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                                    v3_model: DcaseNet) -> None:
    """Not the HTTP client's bare ConnectError: a package error (OSError, PermissionError) the CLI also prints."""
    from dcasenet_hub.errors import DownloadError, HubAccessError

    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}/")  # read at call time, trailing slash parsed once
    t = time.perf_counter()
    with pytest.raises(HubAccessError) as err:
        v3_model.push_to_hub("some-org/dcasenet-test", token="hf_test_token")
    assert time.perf_counter() - t < 10
    msg = str(err.value)
    assert isinstance(err.value, (DownloadError, OSError)) and "\n" not in msg
    assert msg.startswith(f"Cannot reach the Hugging Face Hub at http://127.0.0.1:{port} (") and "HF_ENDPOINT" in msg


def test_listing_models_counts_parameters_without_importing_torch() -> None:
    import torch

    from dcasenet_hub.hub.registry import PARAMETERS
    from dcasenet_hub.models.dcasenet import build_network

    for arch, count in PARAMETERS.items():
        with torch.device("meta"):
            assert build_network(arch).num_parameters() == count, arch
    code = ("import sys; from dcasenet_hub.cli import main; main(['list']); "
            "assert 'torch' not in sys.modules, 'list imported torch'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "13.88M" in out.stdout, out.stderr
