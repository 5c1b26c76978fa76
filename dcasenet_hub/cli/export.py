"""``dcasenet-hub export --format onnx MODEL -o FILE``: the network as an ONNX graph (public API of dcasenet_hub.export.onnx)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dcasenet_hub._io import clean_stale_temp_files_of
from dcasenet_hub.cli.vocabulary import add_output

_RAW = argparse.RawDescriptionHelpFormatter


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export the network to ONNX (checked against PyTorch with onnxruntime)", formatter_class=_RAW,
        description="Write MODEL's network (log-mel in; scene/tag logits, event probabilities, frame/clip/scene "
                    "embeddings out; dynamic batch and length; batch-norm folded) as an ONNX graph, then run it "
                    "with onnxruntime and compare with PyTorch. Needs: pip install \"dcasenet-hub[onnx]\".",
        epilog="examples:\n  dcasenet-hub export --format onnx dcasenet-v3 -o dcasenet-v3.onnx\n"
               "  dcasenet-hub export --format onnx ./my-finetuned-model/ -o model.onnx --opset 18",
    )
    p.add_argument("model", metavar="MODEL", help="manifest id, model folder, .safetensors or authors' .pt file")
    add_output(p, required=True, metavar="FILE", help="output .onnx file")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format (onnx)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version, 13 to 20 (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch comparison")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from dcasenet_hub.cli.common import load_model
    from dcasenet_hub.export import onnx as ex

    try:
        import onnx  # noqa: F401

        if not args.no_check:
            import onnxruntime  # noqa: F401
    except ImportError as exc:
        print(f"dcasenet-hub export: error: {exc.name} is not installed. Install the ONNX extra: "
              "pip install \"dcasenet-hub[onnx]\" (or pass --no-check to export without onnxruntime)",
              file=sys.stderr)
        return 2
    opset = ex.check_opset(ex.DEFAULT_OPSET if args.opset is None else args.opset)  # before any work (exit 2)
    if Path(args.output).is_dir():
        print(f"dcasenet-hub export: error: -o {args.output} is a folder; give the name of the .onnx file to write",
              file=sys.stderr)
        return 2
    if Path(args.output).exists() and not args.overwrite:
        print(f"dcasenet-hub export: error: -o {args.output} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    clean_stale_temp_files_of(Path(args.output))  # a killed export leaves a graph-sized temporary file
    model = load_model(args.model)
    path = ex.export_onnx(model, args.output, opset=opset, check=False)
    if not args.quiet:
        print(f"wrote {path}")
    if not args.no_check:
        diffs = ex.check_onnx(model, path)
        worst = max(diffs.values())
        if not args.quiet:
            print(f"onnxruntime matches PyTorch: max abs difference {worst:.2e} (tolerance {ex.ONNX_TOLERANCE:g})")
    return 0
