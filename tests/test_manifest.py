"""The packaged weights manifest: schema validation, the six official files of the issue, aliases, v1/v2, overrides."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

import dcasenet_hub
from dcasenet_hub.hub.manifest import (
    PACKAGED,
    ManifestError,
    load_manifest,
    validate_manifest,
)

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "8232e2403c6385436404fd91b10e51d9e722bea6"
# The published files and their git blob SHA-1s, as listed in the project's issue (the specification).
OFFICIAL = {
    "weights/Joint/weights/best_ASC.pt": "ae2c814ce0148a033044bcb9793869fb42777427",
    "weights/Joint/weights/best_lwlrap.pt": "64e1439bb3d1d3bc2ec291d2043c1461084ffc19",
    "weights/Joint/weights/best_SED.pt": "1add3d1dbc9f2b75a1e96c71582b0e04ddd6a8d8",
    "weights/fine-tuneASC/weights/best_ASC.pt": "feb1acc3a476754490e2a047795e1d80c05421b0",
    "weights/fine-tuneTAG/weights/best_lwlrap.pt": "1c62055568e7b03c6c22bf688ec21c2deb90c604",
    "weights/fine-tuneSED/weights/best_SED.pt": "ce83ddc400182abe7aba487360adda4f63e6caac",
}


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(PACKAGED.read_text())


def test_packaged_manifest_is_valid_and_the_top_level_file_is_a_link_to_it(raw: dict) -> None:
    validate_manifest(raw)
    top = ROOT / "weights_manifest.json"
    assert top.is_symlink() and top.resolve() == PACKAGED.resolve()


def test_six_official_sources_with_the_published_hashes() -> None:
    models = load_manifest()
    found = {}
    for e in models.values():
        for s in e.get("sources", []):
            assert s["type"] == "github" and s["repo"] == "Jungjee/DcaseNet" and s["commit"] == COMMIT
            assert s["url"] == f"https://github.com/Jungjee/DcaseNet/raw/{COMMIT}/{s['path']}"
            found[s["path"]] = s["git_blob_sha1"]
            assert e["arch"] == "v3" and e["license"] == "MIT" and "jung2021dcasenet" in e["citation"]
    assert found == OFFICIAL


def test_alias_and_trained_tasks() -> None:
    models = load_manifest()
    assert models["dcasenet-v3"]["alias_of"] == "dcasenet-v3-joint-asc"
    assert models["dcasenet-v3-joint-asc"]["sources"][0]["path"] == "weights/Joint/weights/best_ASC.pt"
    for mid, e in models.items():
        if "alias_of" in e or not e["sources"]:
            continue
        path = e["sources"][0]["path"]
        if "/Joint/" in path:
            assert e["trained_tasks"] == ["scene", "tags", "events"], mid
        else:
            task = {"ASC": "scene", "TAG": "tags", "SED": "events"}[re.search(r"fine-tune(\w+)/", path).group(1)]
            assert e["trained_tasks"] == [task], mid
        assert {d["task"] for d in e["trained_on"]} == set(e["trained_tasks"])


def test_paper_metrics() -> None:
    """Table 2 of the paper, DcaseNet-v3 row ASC+TAG+SED: joint columns and fine-tune columns."""
    models = load_manifest()
    joint = {"scene_accuracy": 56.80, "tag_lwlrap": 70.40, "event_f1": 75.19, "event_error_rate": 0.3586}
    for mid in ("dcasenet-v3-joint-asc", "dcasenet-v3-joint-tag", "dcasenet-v3-joint-sed"):
        assert models[mid]["metrics"]["values"] == joint
        assert "one row" in models[mid]["metrics"]["note"]
    assert models["dcasenet-v3-finetune-asc"]["metrics"]["values"] == {"scene_accuracy": 69.37}
    assert models["dcasenet-v3-finetune-tag"]["metrics"]["values"] == {"tag_lwlrap": 74.59}
    assert models["dcasenet-v3-finetune-sed"]["metrics"]["values"] == {"event_f1": 78.80, "event_error_rate": 0.3185}


def test_v1_v2_have_no_source_and_say_why(raw: dict) -> None:
    for arch in ("v1", "v2"):
        e = raw["models"][f"dcasenet-{arch}"]
        assert e["arch"] == arch and e["sources"] == [] and e["metrics"] is None
        assert "never released" in e["unavailable"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["models"]["dcasenet-v3-joint-asc"]["sources"][0].update(git_blob_sha1="abc"),
         "git_blob_sha1: must be 40 lowercase hex digits"),
        (lambda m: m["models"]["dcasenet-v3-joint-asc"].update(arch="v4"), "arch: 'v4' is not one of"),
        (lambda m: m["models"]["dcasenet-v3-joint-asc"].pop("license"), "missing 'license'"),
        (lambda m: m["models"]["dcasenet-v3-joint-asc"]["sources"][0].update(url="https://example.org/x.pt"),
         "url: must be https://github.com/Jungjee/DcaseNet/raw/"),
        (lambda m: m["models"]["dcasenet-v3-joint-asc"]["sources"].append(
            {"type": "huggingface", "repo_id": "org/x", "revision": "main", "sha256": "0" * 64}),
         "revision: must be a pinned 40-digit commit hash"),
        (lambda m: m["models"]["dcasenet-v1"].pop("unavailable"), "an entry without sources needs 'unavailable'"),
        (lambda m: m["models"]["dcasenet-v3-finetune-asc"]["metrics"]["values"].update(acc=1.0),
         "unknown metric 'acc'"),
        (lambda m: m["models"].update({"Bad Id": m["models"]["dcasenet-v1"]}), "model id 'Bad Id'"),
        (lambda m: m.update(schema_version=2), "schema_version must be 1"),
    ],
)
def test_schema_violations_are_named(raw: dict, mutate, message: str) -> None:
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(ManifestError, match=re.escape(message)):
        validate_manifest(broken, source="broken.json")


def test_override_file_adds_and_replaces_entries(raw: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"site-v3": copy.deepcopy(raw["models"]["dcasenet-v3-finetune-sed"]),
             "dcasenet-v3": {"alias_of": "dcasenet-v3-joint-sed", "description": "site default"}}
    path = tmp_path / "site.json"
    path.write_text(json.dumps({"schema_version": 1, "models": extra}))
    monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(path))
    assert "site-v3" in dcasenet_hub.list_models(pretrained=True)
    assert load_manifest()["dcasenet-v3"]["alias_of"] == "dcasenet-v3-joint-sed"
    path.write_text(json.dumps({"schema_version": 1, "models": {"x": {"alias_of": "nope", "description": ""}}}))
    with pytest.raises(ManifestError, match="alias 'x' points to 'nope'"):
        load_manifest()
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        dcasenet_hub.list_models()


def test_docs_describe_every_id_and_field(raw: dict) -> None:
    doc = (ROOT / "docs" / "weights.md").read_text()
    for mid in raw["models"]:
        assert f"`{mid}`" in doc, mid
    for key in ("alias_of", "git_blob_sha1", "trained_tasks", "trained_on", "unavailable", "sha256", "revision",
                "DCASENET_HUB_MIRROR", "DCASENET_HUB_MANIFEST", "DCASENET_HUB_CACHE", "HF_HUB_OFFLINE", "HF_HUB_CACHE",
                "dcasenet-hub cache", "models--dcasenet-hub--"):
        assert key in doc, key
    # the module names the docs point at exist
    import importlib

    for module in set(re.findall(r"`(dcasenet_hub\.hub\.[a-z_]+)`", doc)):
        importlib.import_module(module)


def test_a_null_citation_is_accepted_as_the_docs_say(raw: dict) -> None:
    entry = copy.deepcopy(raw)
    entry["models"]["dcasenet-v3-joint-asc"]["citation"] = None
    validate_manifest(entry, source="custom.json")
    weights_md = (ROOT / "docs" / "weights.md").read_text()
    assert '"citation": "BibTeX or null"' in weights_md and "`citation`: BibTeX,\n  or `null`" in weights_md


def test_a_non_finite_metric_is_refused_and_a_saved_config_is_standard_json(raw: dict, tmp_path: Path) -> None:
    """Broken variants caught: a manifest metric NaN passed validation and was written into the cached config.json
    as the token NaN; a config whose free-form extra held NaN / inf was saved with NaN and Infinity tokens."""
    bad = copy.deepcopy(raw)
    bad["models"]["dcasenet-v3-joint-asc"]["metrics"]["values"]["scene_accuracy"] = float("nan")
    with pytest.raises(ManifestError, match="metrics.values.scene_accuracy: must be a finite number"):
        validate_manifest(bad)
    model = dcasenet_hub.build_model("v3", seed=0)
    model.config = model.config.replace(extra={"x": float("nan"), "y": [float("inf"), 1.0]})
    model.save_pretrained(tmp_path / "m")

    def refuse(token: str) -> None:
        raise ValueError(f"not standard JSON: {token}")

    saved = json.loads((tmp_path / "m" / "config.json").read_text(), parse_constant=refuse)
    assert saved["extra"] == {"x": None, "y": [None, 1.0]}
    model.config.save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text(), parse_constant=refuse)["extra"]["x"] is None
