"""``dcasenet-hub finetune``: fine-tune a pretrained DcaseNet on a labelled folder or table (calls the public API)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dcasenet_hub.cli.common import Names
from dcasenet_hub.cli.vocabulary import add_output

EPILOG = """examples:
  # linear probe (fast, default): a folder with one sub-folder per class
  dcasenet-hub finetune my_sounds/ --task classification --base dcasenet-v3 -o my-classifier

  # fine-tune everything after conv_block3, with the authors' mixup
  dcasenet-hub finetune my_sounds/ --task classification --freeze conv_block3 --epochs 15 --mixup 0.1 -o my-ft

  # tagging from a table path,labels ("dog,bark" = two labels) and events from strong labels
  dcasenet-hub finetune labels.csv --task tagging -o my-tagger
  dcasenet-hub finetune events.tsv --task detection --freeze conv_block4 -o my-detector

  # then use it like any other checkpoint
  dcasenet-hub predict new_clip.wav --model my-classifier -o predictions/

data forms:
  FOLDER/<class>/*.wav                   classification (FOLDER/train/... + FOLDER/validation/... for a given split)
  table with path,label                  classification (.csv or .tsv; paths relative to the table)
  table with path,labels                 tagging (several labels in one cell, --label-delimiter)
  table with filename,onset,offset,event_label   detection (DCASE / sed_eval format)
  A 'split' column (train/validation) fixes the split; otherwise a stratified 20% is drawn with --seed.
  All problems in the data are listed together before anything is trained.

writes OUT/config.json, OUT/model.safetensors, OUT/README.md (model card) and OUT/metrics.jsonl (one line per epoch).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    desc = "fine-tune a pretrained DcaseNet on your labelled clips (linear probe or fine-tuning)"
    p = subparsers.add_parser("finetune", help=desc, description=desc[0].upper() + desc[1:] + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, metavar="DATA", help="class-per-folder directory or .csv/.tsv table")
    p.add_argument("--task", required=True, type=_task, metavar="TASK",
                   help="classification (one label per clip), tagging (several), detection (onset/offset events); "
                        "also accepted: scene, tags, events")
    p.add_argument("--base", default="dcasenet-v3", metavar="MODEL",
                   help="model to start from: manifest id, folder, .safetensors/.pt file or HF repo "
                        "(default: dcasenet-v3)")
    add_output(p, type=Path, metavar="OUT", help="folder for the new model (required unless --check)",
               old=("--output-dir",))
    p.add_argument("--freeze", default="all", metavar="BLOCK",
                   help="'all' = linear probe (default); a block name (conv_block1 ... conv_block4, gru, layer_ASC, "
                        "code_ASC, asc_block, layer_TAG) = freeze it and all before it, fine-tune the rest; "
                        "'none' = fine-tune everything")
    p.add_argument("--head", choices=("new", "reuse"), default="new",
                   help="new head, or reuse the base head's rows for label names it already knows")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 100 probe / 15 fine-tuning)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N")
    p.add_argument("--lr", type=float, default=None, help="head learning rate (default 3e-3 probe / 1e-3 fine-tuning)")
    p.add_argument("--body-lr-scale", type=float, default=0.1, metavar="F",
                   help="unfrozen pretrained blocks learn at lr * F (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--crop", type=float, default=None, metavar="SECONDS",
                   help="training crop (default 5 s; 30 s for detection)")
    p.add_argument("--mixup", type=float, default=None, metavar="ALPHA", help="mixup alpha (the authors: 0.1)")
    p.add_argument("--warm-start", action="store_true", help="linear probe first, then fine-tune (LP-FT)")
    p.add_argument("--batch-norm", choices=("train", "frozen"), default="train",
                   help="batch-norm of unfrozen blocks: train (re-estimated each epoch) or frozen")
    p.add_argument("--patience", type=int, default=10,
                   help="stop after this many epochs without a better validation score, or an equal one with a "
                        "lower validation loss (default 10; 0 = never stop, patience=None in Python)")
    p.add_argument("--labels", nargs="+", action=Names, default=None, metavar="NAME",
                   help="label names in output order, separated by spaces or commas (labels outside it are reported "
                        "as problems)")
    p.add_argument("--validation-fraction", type=float, default=0.2, metavar="F")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delimiter", default=None, help="column separator of the table (default: guessed; 'tab' = \\t)")
    p.add_argument("--label-delimiter", default=",", help="separator of several labels in one cell (default ',')")
    p.add_argument("--audio-dir", type=Path, default=None, help="folder the table's paths are relative to")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="precision of the network's forward passes: fp32 (default); bf16 (about 2x faster on CPUs "
                        "with AMX / AVX512-BF16 and on GPUs, slower elsewhere); fp16 (GPUs, with loss scaling). "
                        "The saved model stays float32")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in OUT")
    p.add_argument("--resume", action="store_true",
                   help="continue the run stopped in OUT from its last finished epoch (the same command otherwise)")
    p.add_argument("--check", action="store_true", help="only read and check the data, print its summary")
    p.set_defaults(func=run, flag_names={"crop_s": "--crop", "output_dir": "--output"},
                   none_as={"patience": "0 (never stop)"})


def _task(text: str) -> str:
    """The canonical task of ``--task`` in either spelling (argparse reports the ValueError's message)."""
    from dcasenet_hub.finetuning.options import finetune_task

    try:
        return finetune_task(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _delimiter(text: str | None) -> str | None:
    if text is None:
        return None
    return {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}.get(text.lower(), text)


def run(args: argparse.Namespace) -> int:
    from dcasenet_hub.finetuning import FinetuneOptions, finetune, read_dataset

    labels = args.labels or None
    data_options = {"labels": labels, "delimiter": _delimiter(args.delimiter),
                    "label_delimiter": _delimiter(args.label_delimiter), "audio_dir": args.audio_dir,
                    "validation_fraction": args.validation_fraction, "seed": args.seed}
    if args.check:
        data = read_dataset(args.data, task=args.task, **data_options)
        print(f"{data.summary()}; split: {data.split}")
        counts = data.counts()
        width = max(len(x) for x in data.labels)
        print(f"  {'label':<{width}}  train  validation")
        for label in data.labels:
            print(f"  {label:<{width}}  {counts['train'][label]:>5}  {counts['validation'][label]:>10}")
        return 0
    if args.output is None:
        print("dcasenet-hub finetune: error: give the output folder with -o OUT (or --check to only check the "
              "data)", file=sys.stderr)
        return 2
    options = FinetuneOptions(
        head=args.head, freeze=args.freeze, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        body_lr_scale=args.body_lr_scale, weight_decay=args.weight_decay, crop_s=args.crop, mixup=args.mixup,
        warm_start=args.warm_start, batch_norm=args.batch_norm, patience=args.patience or None,
        output_dir=args.output, overwrite=args.overwrite, resume=args.resume, device=args.device, dtype=args.dtype,
        progress=False if args.quiet else None,
        **data_options,
    )
    model = finetune(args.base, args.data, task=args.task, options=options)
    if args.quiet:
        return 0
    record = model.config.extra["finetune"]
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in record["validation"].items())
    print(f"{record['recipe']['mode']} of {record['base_model']} on {record['data']['n_train']} clips: "
          f"best {record['best_phase']} epoch {record['best_epoch']}, validation {metrics}")
    print(f"saved to {args.output} (labels: {', '.join(record['labels'])}); "
          f"try: dcasenet-hub predict CLIP.wav --model {args.output} -o predictions/", file=sys.stdout)
    return 0
