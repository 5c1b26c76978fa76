"""Every command and sub-command of ``dcasenet-hub`` shows a runnable example in its ``--help`` (README promise)."""

from __future__ import annotations

import argparse
import re

from dcasenet_hub.cli import build_parser


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(((*path, name), sub.format_help()))
                out += _commands(sub, (*path, name))
    return out


def test_every_command_help_has_an_example() -> None:
    commands = _commands(build_parser())
    names = {" ".join(p) for p, _ in commands}
    assert {"data download", "data make-mini", "data prepare", "download", "push"} <= names
    missing = []
    for path, text in commands:
        cmd = "dcasenet-hub " + " ".join(path)
        # an "example(s):" section with at least one line that runs this very command
        if not re.search(r"^examples?:", text, re.I | re.M) or not re.search(
                rf"^\s+(\S+=\S+\s+)*{re.escape(cmd)}(\s|$)", text, re.M):
            missing.append(cmd)
    assert not missing, f"--help without an example of the command itself: {missing}"


#: The one list of option spellings: each meaning has one spelling, and each spelling one meaning (its ``dest``),
#: across every command. A new option is added here; a second spelling of an existing meaning fails the test.
ALLOWED = {
    "-h/--help": "help", "--version": "version", "-v/--verbose": "verbose", "-q/--quiet": "quiet",
    "-o/--output": "output", "--cache-dir": "cache_dir", "--feature-cache": "feature_cache",
    "--model": "model", "--base": "base", "--device": "device", "--dtype": "dtype", "--batch-size": "batch_size",
    "--workers": "workers", "--overwrite": "overwrite", "--seed": "seed", "--threshold": "threshold",
    "--median-filter": "median_filter", "--min-duration": "min_duration", "--hop": "hop", "--pad-tail": "pad_tail",
    "--level": "level", "--layer": "layer", "--pooling": "pooling", "--backend": "backend",
    "--feature-device": "feature_device", "--shard": "shard",
    "--pretrained": "pretrained", "--arch": "arch", "--tasks": "tasks", "--repo-id": "repo_id",
    "--private": "private", "--token": "token", "--commit-message": "commit_message", "--branch": "branch",
    "--create-pr": "create_pr", "--task": "task", "--freeze": "freeze", "--head": "head", "--epochs": "epochs",
    "--lr": "lr", "--body-lr-scale": "body_lr_scale", "--weight-decay": "weight_decay", "--crop": "crop",
    "--mixup": "mixup", "--warm-start": "warm_start", "--batch-norm": "batch_norm", "--patience": "patience",
    "--labels": "labels", "--exclude-labels": "exclude_labels", "--validation-fraction": "validation_fraction",
    "--delimiter": "delimiter",
    "--label-delimiter": "label_delimiter", "--audio-dir": "audio_dir", "--check": "check",
    "--list-recipes": "list_recipes", "--asc-root": "asc_root", "--tag-root": "tag_root", "--sed-root": "sed_root",
    "--iterations-per-epoch": "iterations_per_epoch", "--t0-epochs": "t0_epochs",
    "--mixup-from-epoch": "mixup_from_epoch", "--no-mixup": "no_mixup", "--no-finetune": "no_finetune",
    "--stage": "stage", "--resume": "resume", "--in-memory": "in_memory", "--json": "json",
    "--parts": "parts", "--list-parts": "list_parts", "--mirror": "mirror", "--keep-archives": "keep_archives",
    "--sed-duration": "sed_duration", "--sed-classes": "sed_classes", "--keep-audio": "keep_audio",
    "--format": "format", "--opset": "opset", "--no-check": "no_check", "--event-format": "event_formats",
    "--truth": "truth", "--map": "map", "--segment-length": "segment_length", "--collar": "collar",
    "--no-psds": "no_psds", "--no-plot": "no_plot",
    "--quick": "quick", "--devices": "devices", "--dtypes": "dtypes", "--backends": "backends",
    "--batch-sizes": "batch_sizes", "--clip-seconds": "clip_seconds",
}
#: One meaning, stored under another name by one command: the format of the file written (export: onnx; embed: the
#: embedding file's format).
SAME_MEANING = {("embed", "--format"): "embedding_format"}
#: Old spellings, accepted with a note and hidden from --help: old -> (command, new spelling).
OLD = {
    ("embed", "--output-dir"): "-o/--output", ("predict", "--output-dir"): "-o/--output",
    ("finetune", "--output-dir"): "-o/--output", ("train", "--out"): "-o/--output",
    ("data download", "--dest"): "-o/--output", ("data make-mini", "--dest"): "-o/--output",
    ("data download", "--no-progress"): "-q/--quiet", ("data make-mini", "--no-progress"): "-q/--quiet",
    ("train", "--no-progress"): "-q/--quiet", ("train", "--precision"): "--dtype",
    ("evaluate", "--precision"): "--dtype", ("train", "--cache-dir"): "--feature-cache",
    ("evaluate", "--cache-dir"): "--feature-cache", ("data prepare", "--cache-dir"): "--feature-cache",
}


def _option_tables(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _option_tables(sub, (*path, name))


def test_every_option_of_every_command_is_spelt_from_one_list() -> None:
    wrong, old_seen = [], {}
    for command, parser in _option_tables(build_parser()):
        for action in parser._actions:
            if not action.option_strings:
                continue
            spelling = "/".join(action.option_strings)
            dest = "quiet" if action.dest == "global_quiet" else action.dest
            if action.help == argparse.SUPPRESS:
                if spelling in ("-q", "--quiet"):  # the other half of a command's own -q/--quiet
                    continue
                old_seen[(command, spelling)] = dest
            elif ALLOWED.get(spelling) != dest and SAME_MEANING.get((command, spelling)) != dest:
                wrong.append(f"{command or 'dcasenet-hub'}: {spelling} (stores {dest})")
    assert not wrong, "spellings outside the one list (or a spelling with two meanings): " + "; ".join(wrong)
    assert set(old_seen) == set(OLD), set(old_seen) ^ set(OLD)
    for key, dest in old_seen.items():  # an old spelling stores what its new spelling stores
        assert ALLOWED[OLD[key]] == dest, (key, dest)


def test_top_level_help_descriptions_share_one_style() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert len(helps) >= 14
    bad = {name: text for name, text in helps.items() if not text[0].islower() or text.rstrip().endswith(".")}
    assert not bad, f"one style: lowercase start, no final period: {bad}"


def test_old_spellings_still_work_with_one_note(tmp_path, capsys) -> None:
    from dcasenet_hub.cli import main

    assert main(["data", "make-mini", "--dest", str(tmp_path / "m"), "--tasks", "sed", "--sed-duration", "2",
                 "--sed-classes", "2", "--no-progress", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "m").is_dir()
    assert err.count("--dest is deprecated; use -o/--output") == 1, err
    assert err.count("--no-progress is deprecated; use -q/--quiet") == 1, err
    args = build_parser().parse_args(["train", "v3-asc", "--out", "run", "--precision", "amp", "--cache-dir", "f"])
    assert (str(args.output), args.dtype, str(args.feature_cache)) == ("run", "amp", "f")
    args = build_parser().parse_args(["embed", "x.wav", "--output-dir", "emb"])
    assert str(args.output) == "emb"


def test_patience_is_described_alike_in_help_and_docs() -> None:
    from pathlib import Path

    parser = build_parser()
    finetune = dict(_option_tables(parser))["finetune"]
    help_text = next(a.help for a in finetune._actions if "--patience" in a.option_strings)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "finetuning.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `patience`"))
    assert "0 = never" in help_text and "patience=None" in help_text
    assert "`None`: never" in row and "`--patience 0`" in row


def test_plot_help_lists_the_exit_codes_of_one_input() -> None:
    """plot draws one file: its exit codes say what that file's failure means, not a folder job's.

    Broken variant caught: plot --help listed the batch commands' codes ("some inputs failed", OUTDIR's index).
    """
    plot = dict(_commands(build_parser()))[("plot",)]
    codes = plot[plot.index("exit codes:"):]
    assert "some inputs failed" not in codes and "OUTDIR" not in codes and "index" not in codes, codes
    for line in ("0  the image was written", "1  FILE could not be used", "3  model could not be fetched",
                 "130 interrupted (Ctrl-C; 143 after SIGTERM): no image was written"):
        assert line in codes, (line, codes)
