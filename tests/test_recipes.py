"""The bundled recipes: one per row of the paper's Table 2, all with the authors' hyper-parameters."""

from __future__ import annotations

import json

import pytest

from dcasenet_hub.train.recipes import RECIPE_DIR, Recipe, list_recipes, load_recipe

VARIANTS = ("v1-nomixup", "v1", "v2", "v3")
COMBOS = ("asc", "tag", "sed", "asc-tag", "asc-sed", "tag-sed", "asc-tag-sed")


def test_one_recipe_per_table2_row():
    assert sorted(list_recipes()) == sorted(f"{v}-{c}" for v in VARIANTS for c in COMBOS)
    assert len(list_recipes()) == 28


@pytest.mark.parametrize("name", [f"{v}-{c}" for v in VARIANTS for c in COMBOS])
def test_recipe_is_the_authors_setup(name):
    r = load_recipe(name)
    variant, combo = (name[:10], name[11:]) if name.startswith("v1-nomixup") else (name[:2], name[3:])
    assert r.name == name and r.arch == variant[:2]
    assert r.tasks == tuple(t for t in ("asc", "tag", "sed") if t in combo.split("-"))
    assert (r.epochs, r.iterations_per_epoch) == (160, 500)
    assert r.batch_size == {t: {"asc": 32, "tag": 32, "sed": 24}[t] for t in r.tasks}  # train.sh
    assert r.crop_seconds == {t: {"asc": 5.0, "tag": 5.0, "sed": 30.0}[t] for t in r.tasks}
    assert (r.lr, r.weight_decay, r.amsgrad, r.t0_epochs, r.eta_min) == (1e-3, 0.0, False, 80, 1e-6)
    assert r.loss_weights == {t: 1.0 for t in r.tasks} and r.sed_threshold == 0.3
    if variant == "v1-nomixup":
        assert r.mixup_alpha is None
    else:
        assert (r.mixup_alpha, r.mixup_from_epoch) == (0.1, 6)
    assert r.finetune == (len(r.tasks) > 1)
    stages = [s[0] for s in r.stages()]
    assert stages == (["single"] if len(r.tasks) == 1 else ["joint"] + [f"finetune-{t}" for t in r.tasks])
    # Table 2 numbers of this row, for the tasks trained
    keys = {"asc": {"asc_acc"}, "tag": {"tag_lwlrap"}, "sed": {"sed_f1", "sed_er"}}
    want = set().union(*(keys[t] for t in r.tasks))
    assert set(r.paper["single" if len(r.tasks) == 1 else "joint"]) == want
    if r.finetune:
        assert set(r.paper["finetune"]) == want
    # the file is the canonical serialisation
    assert json.loads((RECIPE_DIR / f"{name}.json").read_text()) == r.to_dict()
    assert Recipe.from_dict(r.to_dict()) == r


def test_table2_numbers_spot_checks():
    assert load_recipe("v3-asc-tag-sed").paper["finetune"] == {"asc_acc": 69.37, "tag_lwlrap": 74.59,
                                                              "sed_f1": 78.80, "sed_er": 0.3185}
    assert load_recipe("v3-asc-tag-sed").paper["joint"]["asc_acc"] == 56.80
    assert load_recipe("v2-tag-sed").paper["finetune"]["sed_er"] == 0.2826
    assert load_recipe("v1-nomixup-sed").paper["single"] == {"sed_f1": 74.80, "sed_er": 0.3486}
    assert load_recipe("v1-asc").paper["single"] == {"asc_acc": 68.19}


def test_overrides_merge_and_validate():
    r = load_recipe("v3-asc-tag-sed").replace(batch_size={"sed": 12}, epochs=2, mixup_alpha=None)
    assert r.batch_size == {"asc": 32, "tag": 32, "sed": 12} and r.epochs == 2 and r.mixup_alpha is None
    assert Recipe.from_dict(r.to_dict()).to_dict()["mixup"] is None
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        load_recipe("v3-asc").replace(batch_size={"asc": 0})
    with pytest.raises(ValueError, match="unknown keys"):
        Recipe.from_dict({**load_recipe("v3-asc").to_dict(), "learning_rate": 1})


def test_unknown_recipe_lists_the_bundled_ones(tmp_path):
    with pytest.raises(ValueError, match="v3-asc-tag-sed"):
        load_recipe("v4-everything")
    custom = tmp_path / "mine.json"
    custom.write_text(json.dumps({**load_recipe("v2-asc").to_dict(), "name": "mine", "epochs": 3}))
    assert load_recipe(custom).epochs == 3


def test_cli_lists_recipes(capsys):
    from dcasenet_hub.cli import main

    assert main(["train", "--list-recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 28 and lines[0].split()[0] in list_recipes()
    assert any(line.startswith("v3-asc-tag-sed ") and "fine-tuning" in line for line in lines)
    assert main(["train", "v3-asc"]) == 2  # no -o


def test_cli_rejects_bad_task_override(capsys, tmp_path):
    from dcasenet_hub.cli import main

    for bad in ("speech=4", "scene4"):
        assert main(["train", "v3-asc", "-o", str(tmp_path / "r"), "--asc-root", str(tmp_path),
                     "--batch-size", bad]) == 2
        assert "TASK=VALUE" in capsys.readouterr().err


def test_cli_task_values_take_both_vocabularies():
    """``--batch-size scene=8`` and the old ``--batch-size asc=8`` give the same override (the recipe's keys)."""
    from dcasenet_hub.cli.train import task_values

    assert task_values(["scene=8", "Tags=4", "sed=2"], "--batch-size", int) == {"asc": 8, "tag": 4, "sed": 2}
    assert task_values(["asc=8", "tag=4", "events=2"], "--batch-size", int) == {"asc": 8, "tag": 4, "sed": 2}


def test_recipe_accepts_canonical_task_names():
    """Recipes and overrides accept scene/tags/events as well as asc/tag/sed; saved files keep asc/tag/sed."""
    old = load_recipe("v3-asc-tag").replace(batch_size={"asc": 8}, crop_seconds={"tag": 2.0})
    new = load_recipe("v3-asc-tag").replace(batch_size={"scene": 8}, crop_seconds={"tags": 2.0})
    assert new == old and new.to_dict() == old.to_dict()
    data = {**load_recipe("v3-sed").to_dict(), "tasks": ["events"], "batch_size": {"events": 6},
            "crop_seconds": {"sed": 10.0}, "loss_weights": {"events": 1.0}}
    r = Recipe.from_dict(data)
    assert r.tasks == ("sed",) and r.batch_size == {"sed": 6} and r.to_dict()["tasks"] == ["sed"]
    assert Recipe(name="x", arch="v3", tasks=("tags", "scene")).tasks == ("asc", "tag")  # recipe order
    with pytest.raises(ValueError, match="given twice"):
        load_recipe("v3-asc").replace(batch_size={"asc": 8, "scene": 4})
    with pytest.raises(ValueError, match="Unknown task 'speech'"):
        Recipe(name="x", arch="v3", tasks=("speech",))


@pytest.mark.parametrize(("argv", "expected", "deprecated"), [
    (["--dtype", "bf16"], "bf16", False), (["--dtype", "fp16"], "fp16", False), ([], "fp32", False),
    (["--precision", "amp"], "fp16", True), (["--precision", "bf16"], "bf16", True)])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cli_dtype_and_the_deprecated_precision(monkeypatch, tmp_path, capsys, command, argv, expected, deprecated):
    """``--dtype`` (as embed, predict and finetune spell it) is the trainer's precision; ``--precision`` still works
    (amp is fp16) and says once that it is deprecated."""
    import dcasenet_hub.train
    from dcasenet_hub.cli import main

    got = {}

    def fake(*args, **kwargs):  # stop before any work: only the dtype matters here
        got["dtype"] = kwargs["options"].dtype if command == "train" else kwargs["dtype"]
        raise ValueError("stopped by the test")

    monkeypatch.setattr(dcasenet_hub.train, "train" if command == "train" else "evaluate", fake)
    if command == "evaluate":
        monkeypatch.setattr("dcasenet_hub.cli.common.load_model", lambda name: None)
        args = ["evaluate", "some-model", "--asc-root", str(tmp_path)]
    else:
        args = ["train", "v3-asc", "-o", str(tmp_path / "r"), "--asc-root", str(tmp_path)]
    assert main(args + argv) == 2
    assert got["dtype"] == expected
    assert capsys.readouterr().err.count("--precision is deprecated; use --dtype") == int(deprecated)


def test_train_and_evaluate_take_dtype_and_warn_on_precision():
    """Catches the Python ``precision=`` keyword dropped (old calls would fail) or accepted silently."""
    import torch

    from dcasenet_hub.train import evaluate
    from dcasenet_hub.train.distributed import autocast_args

    with pytest.warns(DeprecationWarning, match=r"evaluate\(precision=\.\.\.\) is deprecated; use dtype="):
        with pytest.raises(ValueError, match="Give at least one of"):
            evaluate(None, precision="bf16")
    assert autocast_args("amp", torch.device("cuda")) == autocast_args("fp16", torch.device("cuda"))
    assert autocast_args("bf16", torch.device("cpu"))["dtype"] is torch.bfloat16
    with pytest.raises(ValueError, match="needs a CUDA device"):
        autocast_args("fp16", torch.device("cpu"))
