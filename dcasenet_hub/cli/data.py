"""``dcasenet-hub data``: download the development datasets, make miniature ones (and ``prepare`` when available)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dcasenet_hub.cli.vocabulary import add_no_progress, add_output

_DATASET_NAMES = ("tau2020-asc", "fsdkaggle2019", "tau-nigens2020")

EPILOG = """examples:
  dcasenet-hub data download tau-nigens2020 -o data/tau-nigens2020
  dcasenet-hub data download fsdkaggle2019 -o data/fsdkaggle2019 --parts meta,audio_train_curated
  dcasenet-hub data download tau2020-asc -o data --list-parts
  dcasenet-hub data make-mini -o mini
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="download datasets, make miniature ones, prepare features",
        description="Dataset tools for retraining DcaseNet.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    download = sub.add_parser(
        "download", help="download and extract a development dataset from Zenodo",
        description="Download (resumable, MD5-checked where an MD5 is published), join split zips and extract safely "
                    "(members escaping DEST and archives expanding past 50x their size are refused). One run per "
                    "DEST at a time: a second run waits for the first (lock file DEST/downloads/.download.lock).",
        epilog="examples:\n  dcasenet-hub data download tau-nigens2020 -o data/tau-nigens2020\n"
               "  dcasenet-hub data download fsdkaggle2019 -o data/fsdkaggle2019 --parts meta,audio_train_curated\n"
               "  dcasenet-hub data download tau2020-asc -o data --list-parts\n"
               "  DCASENET_HUB_DATA_MIRROR=http://mirror.local:8000 dcasenet-hub data download tau2020-asc -o data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    download.add_argument("dataset", choices=_DATASET_NAMES)
    add_output(download, required=True, type=Path, metavar="DEST", help="destination folder", old=("--dest",))
    download.add_argument("--parts", default=None,
                          help="comma-separated parts (default: what the authors' training needs; see --list-parts)")
    download.add_argument("--list-parts", action="store_true", help="list the dataset's parts and files, then exit")
    download.add_argument("--mirror", default=None,
                          help="base URL replacing Zenodo: files are fetched from MIRROR/<record>/<file> "
                               "(default: $DCASENET_HUB_DATA_MIRROR)")
    download.add_argument("--keep-archives", action="store_true", help="keep the zip files after extraction")
    add_no_progress(download)
    download.set_defaults(func=_download)

    mini = sub.add_parser(
        "make-mini", help="write tiny synthetic datasets in the three official layouts",
        description="Synthetic class-dependent sounds in the TAU 2020 ASC, FSDKaggle2019 (Kaggle) and TAU-NIGENS 2020 "
                    "layouts, for tests and for trying the trainer without the real data. A marker file in each "
                    "folder makes models trained on them say so (provenance and model card).",
        epilog="examples:\n  dcasenet-hub data make-mini -o mini\n"
               "  dcasenet-hub data make-mini -o mini-sed --tasks sed --sed-duration 10 --sed-classes 4 --seed 1\n"
               "  dcasenet-hub train v3-asc-tag-sed -o runs/mini --asc-root mini/asc/"
               "TAU-urban-acoustic-scenes-2020-mobile-development --tag-root mini/fsdkaggle2019 "
               "--sed-root mini/tau-nigens2020",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_output(mini, required=True, type=Path, metavar="DEST", help="output folder", old=("--dest",))
    mini.add_argument("--seed", type=int, default=0)
    mini.add_argument("--tasks", default="scene,tags,events",
                      help="comma-separated subset of scene,tags,events (or asc,tag,sed)")
    mini.add_argument("--sed-duration", type=float, default=60.0,
                      help="seconds per SED recording (60 = the real data; shorter only for quick trials)")
    mini.add_argument("--sed-classes", type=int, default=14,
                      help="how many of the 14 event classes occur (fewer = more events per class, faster to learn)")
    add_no_progress(mini)
    mini.set_defaults(func=_make_mini)

    _register_prepare(sub)


def _register_prepare(sub: argparse._SubParsersAction) -> None:
    """Add ``data prepare`` (:func:`dcasenet_hub.train.prepare.prepare`); the roots are the ``train`` command's."""
    from dcasenet_hub.cli.train import add_roots

    parser = sub.add_parser(
        "prepare", help="convert to 24 kHz 16-bit and cache log-mel features for training",
        description="Convert the datasets' audio to 24 kHz 16-bit and cache whole-file log-mel features, so that "
                    "training epochs do not decode audio again. Exit code 0 if every file was cached, 1 if some "
                    "failed, 2 for usage errors.",
        epilog="example:\n  dcasenet-hub data prepare --asc-root data/TAU-urban-acoustic-scenes-2020-mobile-development",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_roots(parser)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="worker processes (default: half the CPUs)")
    parser.add_argument("--keep-audio", action="store_true", help="also keep the 24 kHz 16-bit WAV files")
    parser.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from dcasenet_hub.train.prepare import prepare

    if not (args.asc_root or args.tag_root or args.sed_root):
        print("dcasenet-hub data prepare: give at least one of --asc-root, --tag-root, --sed-root", file=sys.stderr)
        return 2
    report = prepare(asc_root=args.asc_root, tag_root=args.tag_root, sed_root=args.sed_root,
                     cache_dir=args.feature_cache, workers=args.workers, keep_audio=args.keep_audio,
                     progress=False if args.quiet else None)
    for task, d in report.dirs.items():
        print(f"{task}: {report.prepared.get(task, 0)} files prepared, {report.skipped.get(task, 0)} already "
              f"cached -> {d}")
    for path, reason in report.failed:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def _download(args: argparse.Namespace) -> int:
    from dcasenet_hub.train.data_download import DATASETS, download_dataset

    spec = DATASETS[args.dataset]
    if args.list_parts:
        print(f"{spec.key}: {spec.title}, Zenodo record {spec.record}")
        for part, archives in spec.parts.items():
            mark = "*" if part in spec.default_parts else " "
            files = [f for a in archives for f in a.files]
            md5 = "md5 known" if all(f.md5 for f in files) else "no published md5"
            print(f" {mark} {part}: {len(files)} file(s), {md5}")
        print("(* = downloaded by default)")
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
    root = download_dataset(args.dataset, args.output, parts=parts, mirror=args.mirror,
                            keep_archives=args.keep_archives, progress=False if args.quiet else None)
    print(f"{args.dataset}: ready in {root}")
    return 0


def _make_mini(args: argparse.Namespace) -> int:
    from dcasenet_hub.train.minidata import make_mini_datasets

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    roots = make_mini_datasets(args.output, seed=args.seed, tasks=tasks, sed_duration=args.sed_duration,
                               sed_classes=args.sed_classes, progress=False if args.quiet else None)
    for task, root in (("asc", roots.asc), ("tag", roots.tag), ("sed", roots.sed)):
        if root is not None:
            print(f"--{task}-root {root}")
    return 0
