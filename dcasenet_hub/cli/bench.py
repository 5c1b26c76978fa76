"""``dcasenet-hub bench``: how fast embed and predict run on this machine, per device, dtype, backend and batch size.

The measuring is :mod:`dcasenet_hub.inference.bench`; this module parses, loads the model and prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "dcasenet-v3"

EPILOG = """Runs `embed` and `predict` on synthetic 10 s clips (seeded noise, tones and clicks at the model's sample
rate) for each device, dtype, backend and batch size this machine offers: one warm-up call per setting, then timed
calls. Prints seconds of audio per second, the real-time factor (RTF: seconds of computing per second of audio) and the
memory used (peak RSS on the CPU, CUDA max allocated on a GPU), names the fastest setting of each command and writes
all of it as JSON. The default run takes about a minute; --quick under half a minute (one device, fp32, torch, 2
batch sizes).

Speed does not depend on the weights' values: without --model, when dcasenet-v3 cannot be loaded (offline, first
run without network), the same architecture with random weights is timed and the output says so.

examples:
  dcasenet-hub bench --quick
  dcasenet-hub bench --model my-finetuned/ -o bench.json
  dcasenet-hub bench --devices cpu --backends torch onnxruntime --batch-sizes 1 8 32
"""


def register(subparsers: Any) -> None:
    desc = "measure embed/predict speed on this machine and name the fastest settings"
    p = subparsers.add_parser("bench", help=desc, description=desc, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="manifest id, local folder, .safetensors or authors' .pt file (default: dcasenet-v3, or "
                        "random v3 weights when it cannot be loaded)")
    p.add_argument("--quick", action="store_true",
                   help="under half a minute: the first device only, fp32, torch, batch sizes 1 and 4, one timed call "
                        "each")
    p.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                   help="devices to measure (default: cpu and every GPU device torch sees)")
    p.add_argument("--dtypes", nargs="+", default=None, choices=("fp32", "bf16", "fp16", "int8"), metavar="DTYPE",
                   help="fp32, bf16, fp16, int8 (default: those that run natively on each device; int8 on the CPU "
                        "when the onnx extra is installed)")
    p.add_argument("--backends", nargs="+", default=None, choices=("torch", "onnxruntime"), metavar="BACKEND",
                   help="torch, onnxruntime (default: both on the CPU when onnxruntime is installed)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None, metavar="N",
                   help="5 s windows per forward pass (default 1 4 16; --quick 1 4)")
    p.add_argument("--tasks", nargs="+", default=["embed", "predict"], choices=("embed", "predict"),
                   metavar="TASK", help="embed, predict (default both)")
    p.add_argument("--clip-seconds", type=float, default=10.0, metavar="S",
                   help="length of each synthetic clip (default 10 s; a call gets enough clips to fill its batch)")
    p.add_argument("-o", "--output", type=Path, default=Path("dcasenet-hub-bench.json"), metavar="JSON",
                   help="where to write the JSON (default: dcasenet-hub-bench.json)")
    # an options error names the option (dtype=...); the line names the flag that chose it
    p.set_defaults(func=_run, flag_names={"device": "--devices", "dtype": "--dtypes", "backend": "--backends"})


def _model(name: str | None) -> tuple[Any, str]:
    """The model to time and how the report names it; random v3 weights when the default cannot be loaded."""
    from dcasenet_hub.cli.common import ModelLoadError, load_model

    if name is not None:
        return load_model(name), name
    try:
        return load_model(DEFAULT_MODEL), DEFAULT_MODEL
    except ModelLoadError as exc:
        from dcasenet_hub.inference.model import build_model

        # the first line says why (the fixes for a missing model are for running it, not for timing it)
        why = re.sub(r"[.:\s]*(Fixes:?)?\s*$", "", str(exc).splitlines()[0])
        logger.warning("%s; timing random v3 weights instead (speed does not depend on the weights)", why)
        return build_model("v3", seed=0).eval(), "v3 with random weights (dcasenet-v3 could not be loaded)"


def _run(args: argparse.Namespace) -> int:
    from dcasenet_hub._io import atomic_write_text
    from dcasenet_hub.devices import resolve_device
    from dcasenet_hub.inference import bench

    if not 1.0 <= args.clip_seconds <= 600.0:
        raise ValueError(f"--clip-seconds must be between 1 and 600, got {args.clip_seconds:g}")
    if args.batch_sizes is not None and min(args.batch_sizes) < 1:
        raise ValueError(f"--batch-sizes must be >= 1, got {' '.join(map(str, args.batch_sizes))}")
    if args.output.is_dir():  # said now, not after the measurements
        raise ValueError(f"-o {args.output} is a folder; give the name of the JSON file to write")
    for device in args.devices or ():
        resolve_device(device)  # a device this torch cannot use: one line, exit 2, before anything runs
    if args.backends and "onnxruntime" in args.backends:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
            raise ValueError('--backends onnxruntime needs the onnx extra: pip install "dcasenet-hub[onnx]"')
    settings, skipped = bench.available_settings(quick=args.quick, devices=args.devices, dtypes=args.dtypes,
                                                 backends=args.backends, batch_sizes=args.batch_sizes,
                                                 tasks=args.tasks)
    model, name = _model(args.model)
    quiet = bool(getattr(args, "quiet", False))

    def progress(m: Any) -> None:
        if not quiet:
            s = m.setting
            print(f"  {s.task} {s.device} {s.dtype} {s.backend} batch {s.batch_size}: {m.audio_s_per_s:.1f} audio s/s",
                  file=sys.stderr, flush=True)

    report = bench.run_bench(model, settings, model_name=name, quick=args.quick, skipped=skipped,
                             on_result=progress, clip_s=args.clip_seconds)
    print(bench.format_table(report))
    atomic_write_text(args.output, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    print(f"JSON: {args.output}")
    return 0
