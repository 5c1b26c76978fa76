"""``dcasenet-hub train`` (the paper's joint training recipes) and ``dcasenet-hub evaluate`` (a Table 2 row)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dcasenet_hub.cli.vocabulary import (
    add_feature_cache,
    add_no_progress,
    add_old_spelling,
    add_output,
)

TRAIN_EPILOG = """examples:
  dcasenet-hub train --list-recipes
  dcasenet-hub train v3-asc-tag-sed --asc-root data/TAU-urban-acoustic-scenes-2020-mobile-development \\
      --tag-root data/fsdkaggle2019 --sed-root data/tau-nigens2020 -o runs/v3-joint
  dcasenet-hub train v3-asc-tag-sed ... -o runs/v3-joint --resume          # continue a stopped run
  torchrun --nproc_per_node 4 -m dcasenet_hub.cli train v3-asc-tag-sed ... -o runs/v3-4gpu
  dcasenet-hub train v2-asc --asc-root mini/asc -o runs/try --epochs 2 --iterations-per-epoch 20 \\
      --batch-size scene=4 --crop scene=2

Batch sizes are global (split over torchrun processes). Tasks are named scene, tags, events (or asc, tag, sed).
See docs/training.md.
"""

EVAL_EPILOG = """examples:
  dcasenet-hub evaluate runs/v3-joint/best-asc --asc-root data/TAU-urban-acoustic-scenes-2020-mobile-development
  dcasenet-hub evaluate dcasenet-v3 --asc-root ... --tag-root ... --sed-root ...
"""


#: --dtype values (embed, predict and finetune spell them fp32, bf16, fp16; amp is fp16, the old name)
PRECISIONS = ("fp32", "bf16", "amp", "fp16")


def _dtype(value: str) -> str:
    """The trainer's dtype for a --dtype / --precision value (amp is fp16: float16 with gradient scaling)."""
    return "fp16" if value == "amp" else value


def task_values(values: list[str] | None, option: str, cast: Any) -> dict[str, Any]:
    """``["scene=8", "sed=4"]`` -> ``{"asc": 8, "sed": 4}`` (the trainer's keys; every task spelling accepted)."""
    from dcasenet_hub.train.tasks import task_key

    out: dict[str, Any] = {}
    for v in values or []:
        name, sep, num = v.partition("=")
        try:
            task = task_key(name) if sep else None
        except ValueError:
            task = None
        if task is None:
            raise argparse.ArgumentTypeError(f"{option} expects TASK=VALUE with TASK scene, tags or events (or asc, "
                                             f"tag, sed); got {v!r}")
        try:
            out[task] = cast(num)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {v!r}: {num!r} is not a number") from None
    return out


def add_roots(p: argparse.ArgumentParser) -> None:
    p.add_argument("--asc-root", type=Path, help="TAU Urban Acoustic Scenes 2020 Mobile development folder")
    p.add_argument("--tag-root", type=Path, help="FSDKaggle2019 folder (train_curated.csv, train_curated/)")
    p.add_argument("--sed-root", type=Path, help="TAU-NIGENS Spatial Sound Events 2020 folder (mic_dev/, metadata_dev/)")
    add_feature_cache(p)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train DcaseNet with one of the paper's recipes (Table 2)",
                              description="Train DcaseNet with the authors' joint recipe, then fine-tune each task.",
                              epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", help="recipe name (see --list-recipes) or recipe .json file")
    p.add_argument("--list-recipes", action="store_true", help="list the bundled recipes and exit")
    add_roots(p)
    add_output(p, type=Path, metavar="RUN", help="run folder (checkpoints, metrics log, best models)",
               old=("--out",))
    g = p.add_argument_group("recipe overrides")
    g.add_argument("--epochs", type=int, help="epochs per stage (recipe: 160)")
    g.add_argument("--iterations-per-epoch", type=int, help="iterations per epoch (recipe: 500)")
    g.add_argument("--batch-size", action="append", metavar="TASK=N",
                   help="global batch size of a task, repeatable (recipe: scene=32 tags=32 events=24)")
    g.add_argument("--crop", action="append", metavar="TASK=SECONDS",
                   help="training crop of a task, repeatable (recipe: scene=5 tags=5 events=30)")
    g.add_argument("--lr", type=float, help="Adam learning rate (recipe: 0.001)")
    g.add_argument("--t0-epochs", type=int, help="cosine restart period in epochs (recipe: 80)")
    g.add_argument("--mixup-from-epoch", type=int, help="first epoch index with mixup (recipe: 6)")
    g.add_argument("--no-mixup", action="store_true", help="train without mixup")
    g.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning stages")
    r = p.add_argument_group("run")
    r.add_argument("--stage", action="append", help="run only this stage (joint, single, finetune-asc, ...), repeatable")
    r.add_argument("--device", help="auto (default: CUDA if available), cpu, cuda, cuda:1")
    r.add_argument("--workers", type=int,
                   help="data loader workers per task (default 0: in the training process; 2-4 help with many cores)")
    r.add_argument("--dtype", choices=PRECISIONS,
                   help="fp32 (default), bf16, or fp16 = amp (float16 autocast with gradient scaling, CUDA)")
    add_old_spelling(r, "--precision", dest="dtype", new="--dtype", choices=PRECISIONS)
    r.add_argument("--resume", action="store_true", help="continue the run in -o RUN from its last epoch")
    r.add_argument("--seed", type=int, help="seed of initialisation, data order, crops, mixup (default 0)")
    r.add_argument("--in-memory", action="store_true", help="keep cached features in memory (small data)")
    add_no_progress(r)
    p.set_defaults(func=_train)

    e = subparsers.add_parser("evaluate", help="evaluate a model with the paper's metrics (a Table 2 row)",
                              description="Scene accuracy (5 s crops every 2.5 s, as predict), tag lwlrap and event F1/ER (paper protocol) on "
                                          "the authors' evaluation splits.",
                              epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model", help="model id, local folder (e.g. RUN/best-asc) or checkpoint")
    add_roots(e)
    e.add_argument("--device", default="auto", help="auto (default: CUDA if available), cpu, cuda, ...")
    e.add_argument("--dtype", choices=PRECISIONS, default="fp32",
                   help="fp32 (default), bf16, or fp16 = amp (float16 autocast, CUDA)")
    add_old_spelling(e, "--precision", dest="dtype", new="--dtype", choices=PRECISIONS)
    e.add_argument("--threshold", type=float, default=None, help="event threshold (default: the model's, 0.3)")
    e.add_argument("--workers", type=int, default=0, help="processes for preparing features")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from dcasenet_hub.train import list_recipes, load_recipe, train

    if args.list_recipes:
        for name in list_recipes():
            r = load_recipe(name)
            print(f"{name:24s} {r.description}")
        return 0
    if not args.recipe or not args.output:
        print("dcasenet-hub train: give a RECIPE and -o RUN (or --list-recipes)", file=sys.stderr)
        return 2
    try:
        overrides: dict[str, Any] = {}
        for key in ("epochs", "iterations_per_epoch", "lr", "t0_epochs", "mixup_from_epoch"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        if args.batch_size:
            overrides["batch_size"] = task_values(args.batch_size, "--batch-size", int)
        if args.crop:
            overrides["crop_seconds"] = task_values(args.crop, "--crop", float)
    except argparse.ArgumentTypeError as exc:
        print(f"dcasenet-hub train: {exc}", file=sys.stderr)
        return 2
    if args.no_mixup:
        overrides["mixup_alpha"] = None
    if args.no_finetune:
        overrides["finetune"] = False
    from dcasenet_hub.train import TrainOptions

    # flags left out keep TrainOptions' defaults (declared there once); a bad value is its OptionsError (exit 2)
    given = {"device": args.device, "workers": args.workers, "dtype": args.dtype and _dtype(args.dtype),
             "seed": args.seed, "stages": args.stage, "cache_dir": args.feature_cache}
    options = TrainOptions(**{k: v for k, v in given.items() if v is not None}, resume=args.resume,
                           in_memory=args.in_memory, progress=False if args.quiet else None)
    result = train(args.recipe, out_dir=args.output, asc_root=args.asc_root, tag_root=args.tag_root,
                   sed_root=args.sed_root, overrides=overrides, options=options)
    for task, path in () if args.quiet else result.best.items():
        m = result.best_metrics.get(task, {})
        shown = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if v is not None)
        print(f"best {task}: {path}  ({shown})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dcasenet_hub._io import json_text
    from dcasenet_hub.cli.common import load_model
    from dcasenet_hub.train import evaluate, format_row

    if not (args.asc_root or args.tag_root or args.sed_root):
        print("dcasenet-hub evaluate: give at least one of --asc-root, --tag-root, --sed-root", file=sys.stderr)
        return 2
    model = load_model(args.model)
    metrics = evaluate(model, asc_root=args.asc_root, tag_root=args.tag_root, sed_root=args.sed_root,
                       cache_dir=args.feature_cache, device=args.device, dtype=_dtype(args.dtype),
                       sed_threshold=args.threshold, workers=args.workers,
                       progress=False if args.quiet else None)
    if args.json:
        print(json_text(metrics, indent=2))  # an undefined metric is null
        return 0
    print(f"{args.model} (DcaseNet-{model.config.arch})")
    print(format_row(metrics))
    recipe = (model.config.extra or {}).get("recipe") or {}
    paper = recipe.get("paper") or {}
    stage = (model.config.extra or {}).get("stage", "")
    ref = paper.get("finetune") if str(stage).startswith("finetune") else (paper.get("joint") or paper.get("single"))
    if ref:
        print(f"paper, {paper.get('architecture', '')} {recipe.get('name', '')} ({stage}):")
        print(format_row(ref).splitlines()[1])
    return 0
