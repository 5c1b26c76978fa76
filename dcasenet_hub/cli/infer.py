"""``dcasenet-hub embed``, ``predict`` and ``plot``: the main job on files and folders (uses the public API only)."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

logger = logging.getLogger(__name__)

#: Extensions picked up when scanning folders (anything libsndfile reads; pass other files explicitly).
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64",
    ".rf64", ".caf", ".sd2", ".voc", ".wv",
})
#: Extensions of text files that list inputs, one path per line.
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list", ".scp"})
INDEX_COLUMNS = ("input", "status", "output", "duration_s", "error", "warning")

EXIT_CODES = """exit codes:
  0  every input succeeded (or was already complete)
  1  some inputs failed; the others' outputs are written; see index.csv and the summary on stderr
  2  usage error (bad arguments or option values, no inputs found, unusable --device, OUTDIR is a file)
  3  model could not be fetched or loaded (unknown id, offline, download failed, not a checkpoint);
     offline, pass a local checkpoint with --model PATH
"""

INPUT_HELP = """inputs:
  audio files, folders (searched recursively for audio extensions: .wav .flac .ogg .mp3 .aiff ...) and
  text files (.txt .lst .list .scp) listing one path per line (relative paths are relative to the list
  file; lines starting with '#' are comments). Outputs mirror the input tree under OUTDIR: a folder's files keep their
  path relative to the folder, other files their path relative to their common parent folder.
"""

EMBED_EPILOG = INPUT_HELP + """
outputs (docs/outputs.md):
  OUTDIR/<path>.npz   frame (T, D) float32, frame_times (T,) s, clip (D or 2D,), meta (JSON: layer, pooling,
                      hop_s, frame_size, clip_size, ...); D = 512 for --layer gru/conv, 128 for scene
  OUTDIR/index.csv    input, status (ok | skipped | failed), output, duration_s, error, warning
  (index-I-of-N.csv with --shard I/N)

Frames end at the last full 0.8 s step, as the authors' network does (9.6 s for a 10 s clip); --pad-tail pads
the last step so they reach the end of the file.

Reruns skip inputs whose outputs are complete and were made with the same settings and the
same weights (by content) from the same (unchanged) input file; --overwrite recomputes them. Files are written
atomically (fsync'd), index.csv gains a row as each input finishes, and a kill (even SIGKILL) loses at most the
inputs in flight: rerun the same command to finish.

examples:
  dcasenet-hub embed examples/audio -o embeddings/
  dcasenet-hub embed corpus/ -o emb/ --level clip --shard 2/8 --workers 4
  dcasenet-hub embed clips/ -o emb/ --hop 0.1 --layer conv --pooling mean+max

""" + EXIT_CODES

PREDICT_EPILOG = INPUT_HELP + """
outputs (docs/outputs.md):
  OUTDIR/<path>.json        scene probabilities and top scene, tag probabilities, event list, settings
  OUTDIR/<path>.events.csv  DCASE-style event list: filename,onset,offset,event_label
  OUTDIR/<path>.scores.tsv  sed_scores_eval frame scores: onset, offset, one column per event class
  OUTDIR/events.csv         all event lists of the folder in one file (cumulative over runs, as index.csv)
  OUTDIR/index.csv          input, status (ok | skipped | failed), output, duration_s, error, warning

Reruns skip inputs whose .json, .events.csv and .scores.tsv come from one run with the same weights and settings
(the .json records the other files' SHA-256); a kill loses at most the inputs in flight.

Event scores and events end at the last full 0.8 s step, as the authors' network does (9.6 s for a 10 s clip);
--pad-tail pads the last step so they reach the end of the file.

examples:
  dcasenet-hub predict street.wav -o predictions/
  dcasenet-hub predict recordings/ -o pred/ --median-filter 0.5 --min-duration 0.3
  dcasenet-hub predict recordings/ -o pred/ --hop 0.1

""" + EXIT_CODES

PLOT_EPILOG = """Draws the log-mel spectrogram, the event probability roll with the detected events, and the scene
probabilities over time, on a shared time axis, with the top scenes and tags in the title.
Needs matplotlib: pip install "dcasenet-hub[plot]"

example:
  dcasenet-hub plot street.wav -o street.png
""" + EXIT_CODES


class _UsageError(Exception):
    """Bad command-line input (exit code 2)."""


def _check_device(text: str) -> None:
    """Usage error for a device this torch cannot use, before any work (no traceback, no ``pending`` rows)."""
    import torch

    if text == "auto":
        return
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise _UsageError(f"--device {text!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _UsageError(f"--device {text}: no CUDA device is available to this torch ({torch.__version__}); "
                              "use --device cpu (or auto), or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _UsageError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise _UsageError(f"--device {text}: MPS is not available on this machine; use --device cpu")


def _check_event_options(args: argparse.Namespace) -> None:
    """Range checks of --threshold, --median-filter and --min-duration (usage errors)."""
    t = getattr(args, "threshold", None)
    if t is not None and not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise _UsageError(f"--threshold must be a probability between 0 and 1, got {t:g}")
    for flag, attr in (("--median-filter", "median_filter"), ("--min-duration", "min_duration")):
        v = getattr(args, attr, None)
        if v is not None and not (math.isfinite(v) and v >= 0.0):
            raise _UsageError(f"{flag} must be a number of seconds >= 0, got {v:g}")


def _check_common(args: argparse.Namespace) -> None:
    """Checks shared by embed, predict and plot: options in range and a usable device."""
    if args.batch_size < 1:
        raise _UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    _check_event_options(args)
    _check_device(args.device)


def _load_model(name: str) -> Any:
    """``from_pretrained(name)``; any failure becomes :class:`~dcasenet_hub.cli.ModelLoadError` (exit code 3)."""
    from dcasenet_hub.cli.common import load_model

    return load_model(name)


# ----------------------------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    for name, epilog, desc in (
        ("embed", EMBED_EPILOG, "Frame (every 0.8 s) and clip embeddings of audio files, one .npz per file."),
        ("predict", PREDICT_EPILOG, "Scene, tag and event predictions of audio files with label names."),
    ):
        p = subparsers.add_parser(name, help=desc, description=desc, epilog=epilog, formatter_class=fmt)
        p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file, folder or list file")
        p.add_argument("-o", "--output-dir", required=True, type=Path, metavar="OUTDIR", help="output folder")
        _common(p)
        p.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                       help="time between frame embeddings / event scores: 0.02, 0.04, 0.08, 0.1, 0.16, 0.2, 0.4 "
                            "or 0.8 (default 0.8, the network's step); a hop of 0.8/P runs P exact shifted passes "
                            "and costs P times as much")
        p.add_argument("--pad-tail", action="store_true",
                       help="let frames and events reach the end of each file: the last 0.8 s step is completed by "
                            "padding the normalised log-mel with zeros (default: they end at the last full 0.8 s "
                            "step, as the authors' network does: 9.6 s for a 10 s clip)")
        if name == "embed":
            p.add_argument("--level", choices=("frame", "clip", "both"), default="both",
                           help="which embeddings to save (default: both)")
            p.add_argument("--layer", choices=("gru", "conv", "scene"), default="gru",
                           help="gru: recurrent output, 512-d (default); conv: convolutional trunk averaged over "
                                "frequency, 512-d; scene: scene branch code, 128-d, one per 5 s crop")
            p.add_argument("--pooling", choices=("mean", "max", "mean+max"), default="mean",
                           help="clip embedding from the 0.8 s-step frames (default mean; mean+max doubles "
                                "the size)")
        else:
            _prediction_options(p)
        p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                       help="torch (default) or onnxruntime (CPU, fp32, --layer gru; needs the onnx extra; outputs "
                            "within 1e-5 of torch's)")
        p.add_argument("--workers", type=int, default=2, metavar="N",
                       help="threads decoding and resampling audio ahead of the network (default 2; 0 = none)")
        p.add_argument("--shard", default=None, metavar="I/N",
                       help="process only shard I of N (1 <= I <= N), chosen by a hash of each output path, "
                            "so N machines can split a corpus")
        p.add_argument("--overwrite", action="store_true", help="recompute inputs whose outputs are complete")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=_run_embed if name == "embed" else _run_predict)

    p = subparsers.add_parser("plot", help="Picture of one file's spectrogram, events, scenes and tags.",
                              description="Picture of one file's log-mel spectrogram, events, scenes and tags.",
                              epilog=PLOT_EPILOG, formatter_class=fmt)
    p.add_argument("file", type=Path, metavar="FILE", help="audio file")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="PNG",
                   help="image file (default: FILE with .png); any matplotlib format by extension")
    _common(p)
    _prediction_options(p)
    p.set_defaults(func=_run_plot)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dcasenet-v3",
                   help="manifest id, local folder, .safetensors or authors' .pt file (default: dcasenet-v3)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="5 s windows per forward pass; a 60 s window counts as 12 (default 8)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps ... (default: cuda if available)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="compute precision: fp32 (exact, default); bf16 (about 2x faster on CPUs with AMX / "
                        "AVX512-BF16 and on GPUs, slower elsewhere); fp16 (GPUs). Outputs stay float32")


def _prediction_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=None,
                   help="event threshold (default: the model's, 0.3 as the authors)")
    p.add_argument("--median-filter", type=float, default=None, metavar="SECONDS",
                   help="median filter over the binary event activity (default: none)")
    p.add_argument("--min-duration", type=float, default=None, metavar="SECONDS",
                   help="drop events shorter than this (default: keep all)")


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Input:
    path: Path
    rel: PurePosixPath
    status: str = ""
    output: str = ""
    duration_s: float | None = None
    error: str = ""
    warning: str = ""
    outputs: dict[str, Path] = field(default_factory=dict)


def _real(path: Path) -> Path | None:
    """The file a path names after following symlinks, or ``None`` for a symlink loop or a broken symlink."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # ELOOP, ENOENT (RuntimeError: symlink loop on older Pythons)
        return None
    return real


def _discover(args_inputs: list[str]) -> list[_Input]:
    """Expand files, folders and list files; relative output paths; raises _UsageError for missing arguments.

    A file named more than once (directly, in a folder or a list) is processed once. A symlink that loops or points
    nowhere is reported as a failed input, without stopping the others.
    """
    rooted: list[tuple[Path, PurePosixPath]] = []
    loose: list[Path] = []
    broken: list[_Input] = []
    for arg in args_inputs:
        p = Path(arg).expanduser()
        if p.is_symlink() and _real(p) is None:
            broken.append(_Input(path=p, rel=PurePosixPath(p.name), status="failed",
                                 error=f"{p} is a symlink loop or a broken symlink (points to {os.readlink(p)}); "
                                       "fix or remove the link"))
            continue
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and not f.is_dir()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            rooted += [(f, PurePosixPath(f.relative_to(p).as_posix())) for f in files]
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            loose += _read_list(p)
        elif p.exists():
            loose.append(p)
        else:
            raise _UsageError(f"input not found: {arg}")
    if loose:
        parents = [str(f.resolve().parent) for f in loose]
        root = Path(os.path.commonpath(parents))
        rooted += [(f, PurePosixPath(f.resolve().relative_to(root).as_posix())) for f in loose]
    seen: set[Path] = set()
    items: list[_Input] = []
    for f, rel in rooted:
        real = _real(f) or f.absolute()
        if real in seen:  # the same file again: once is enough
            continue
        seen.add(real)
        items.append(_Input(path=f, rel=rel))
    return items + broken


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"cannot read list file {path}: {exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise _UsageError(f"--shard must look like I/N (e.g. 2/8), got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise _UsageError(f"--shard I/N needs 1 <= I <= N, got {text!r}")
    return i, n


def _in_shard(rel: PurePosixPath, shard: tuple[int, int] | None) -> bool:
    """Whether an input belongs to ``shard``: a CRC-32 of its output path (relative to OUTDIR, without extension).

    Hashing the output path, not the input path, puts inputs that would write the same output (``x.wav`` and
    ``x.flac``) in the same shard, where the collision is seen and reported.
    """
    if shard is None:
        return True
    i, n = shard
    return zlib.crc32(rel.with_suffix("").as_posix().encode("utf-8")) % n == i - 1


#: Files of a model folder whose content identifies the weights (other files, e.g. the README card, do not count).
_MODEL_FILES = ("config.json", "model.safetensors")


def _model_identity(name: str) -> dict[str, Any]:
    """What resume compares to tell whether outputs came from these weights: their content, not file dates.

    A local checkpoint (folder, ``.safetensors`` or ``.pt``) is fingerprinted by a SHA-256 of its bytes (for a
    folder: of ``config.json`` and ``model.safetensors``, in that order), computed once per run before any output is
    judged complete, so weights copied over the old ones (same size, same folder date) are seen. A manifest id names
    published weights that are checked against their hash when fetched, so the id is the identity.
    """
    import hashlib

    p = Path(name).expanduser()
    if not p.exists():
        return {"model": name}
    files = [p / f for f in _MODEL_FILES if (p / f).is_file()] if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return {"model": str(p.resolve()), "model_sha256": h.hexdigest()}


def _source_identity(path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
        return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}
    except OSError:
        return {}


# ----------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------


def _run_embed(args: argparse.Namespace) -> int:
    settings = {"task": "embed", **_model_identity(args.model), "level": args.level, "hop": _hop(args.hop),
                "layer": args.layer, "pooling": args.pooling, "pad_tail": True if args.pad_tail else None,
                **_precision(args)}
    return _run(args, "embed", settings)


def _run_predict(args: argparse.Namespace) -> int:
    settings = {"task": "predict", **_model_identity(args.model), "threshold": args.threshold,
                "median_filter": args.median_filter, "min_duration": args.min_duration, "hop": _hop(args.hop),
                "pad_tail": True if args.pad_tail else None, **_precision(args)}
    return _run(args, "predict", settings)


def _dtype(name: str) -> str | None:
    """``None`` for fp32 (the exact default path), else the name."""
    return None if name == "fp32" else name


def _precision(args: argparse.Namespace) -> dict[str, str]:
    """The compute settings as recorded for resuming (files written before them count as fp32 / torch)."""
    return {"dtype": args.dtype, "backend": args.backend}


def _hop(hop: float | None) -> float | None:
    """The hop as recorded for resuming: ``None`` for the 0.8 s default (as files written before ``--hop``)."""
    return None if hop is None or abs(hop - 0.8) < 1e-9 else hop


def _outputs_for(out_dir: Path, rel: PurePosixPath, task: str) -> dict[str, Path]:
    base = out_dir / Path(*rel.with_suffix("").parts)
    if task == "embed":
        return {"main": base.with_name(base.name + ".npz")}
    return {"events": base.with_name(base.name + ".events.csv"),
            "scores": base.with_name(base.name + ".scores.tsv"),
            "main": base.with_name(base.name + ".json")}


#: Settings recorded since a later version, with the value files written before them hold.
_META_DEFAULTS: dict[str, Any] = {"pooling": "mean", "layer": "gru", "hop": None, "dtype": "fp32", "backend": "torch"}


def _complete(item: _Input, meta: dict[str, Any]) -> bool:
    from dcasenet_hub.inference.outputs import read_meta

    if not all(p.is_file() for p in item.outputs.values()):
        return False
    found = read_meta(item.outputs["main"])
    if not found or any(found.get(k, _META_DEFAULTS.get(k)) != v for k, v in meta.items()):
        return False
    # the other outputs must be the very files written with this main file (not a later, interrupted run's)
    digests = found.get("digests") or {}
    for key, path in item.outputs.items():
        if key != "main" and (key not in digests or _sha256(path) != digests[key]):
            return False
    item.duration_s = found.get("duration_s")
    return True


def _sha256(path: Path) -> str | None:
    """Hex SHA-256 of a file's bytes (``None`` if unreadable)."""
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _limit_heap_retention() -> None:
    """Serve allocations of 4 MiB and more with mmap, so freed activations go back to the OS (glibc only).

    glibc raises its mmap threshold as large blocks are freed, after which activations of different sizes
    (batches of 5 s crops, 60 s windows) are carved from the heap and its resident size creeps up over an hour-long
    file. A fixed threshold keeps the peak near one forward pass's working set. Only the command-line process does
    this; the library never changes the allocator of the program that imports it.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_mmap_threshold = -3
    mallopt(m_mmap_threshold, 4 * 1024 * 1024)


def _run(args: argparse.Namespace, task: str, settings: dict[str, Any]) -> int:
    _limit_heap_retention()
    try:
        shard = _parse_shard(args.shard)
        launched = _torchrun_shard()
        if launched is not None:
            if shard is not None:
                raise _UsageError("--shard and torchrun both split the inputs; drop --shard under torchrun (each "
                                  "process takes the shard of its rank)")
            shard = launched
        if args.workers < 0:
            raise _UsageError(f"--workers must be >= 0, got {args.workers}")
        _check_common(args)
        _check_embedding_options(args)
        if args.output_dir.exists() and not args.output_dir.is_dir():
            raise _UsageError(f"-o {args.output_dir} is an existing file; OUTDIR must be a folder "
                              "(it is created if missing)")
        items = _discover(args.inputs)
    except _UsageError as exc:
        print(f"dcasenet-hub {task}: error: {exc}", file=sys.stderr)
        return 2
    if not items:
        print(f"dcasenet-hub {task}: error: no audio files found in {' '.join(args.inputs)} "
              f"(extensions: {' '.join(sorted(AUDIO_EXTENSIONS))})", file=sys.stderr)
        return 2
    out_dir: Path = args.output_dir
    from dcasenet_hub._io import clean_stale_temp_files

    for p in clean_stale_temp_files(out_dir):  # left by a killed run; those of live runs (other shards) are kept
        logger.info("removed a stale temporary file of a killed run: %s", p)
    suffix = f"-{shard[0]}-of-{shard[1]}" if shard else ""
    index_path = out_dir / f"index{suffix}.csv"

    # outputs, collisions, shard, resume
    owner: dict[Path, _Input] = {}
    selected: list[_Input] = []
    for item in items:
        if not _in_shard(item.rel, shard):
            continue
        if item.status:  # failed before processing (a broken symlink argument)
            selected.append(item)
            continue
        item.outputs = _outputs_for(out_dir, item.rel, task)
        item.output = str(item.outputs["main"])
        first = owner.setdefault(item.outputs["main"], item)
        if first is not item:
            item.status = "failed"
            item.error = (f"output {item.output} would overwrite that of {first.path}; "
                          "rename one of the files or process them separately")
        selected.append(item)
    todo: list[_Input] = []
    metas: dict[int, dict[str, Any]] = {}
    for item in selected:
        if item.status:
            continue
        meta = {**settings, **_source_identity(item.path)}
        metas[id(item)] = meta
        if not args.overwrite and _complete(item, meta):
            item.status = "skipped"
            continue
        todo.append(item)

    writer = _IndexWriter(index_path, selected)
    writer.start()
    if todo:
        from dcasenet_hub.inference.pipeline import iterate

        model = _load_model(args.model)
        results = iterate(
            model, [str(i.path) for i in todo], embeddings=task == "embed", predictions=task == "predict",
            dtype=_dtype(args.dtype), backend=args.backend,
            threshold=getattr(args, "threshold", None), median_filter=getattr(args, "median_filter", None),
            min_duration=getattr(args, "min_duration", None),
            device=_device_for(args, launched), batch_size=args.batch_size,
            progress=not args.quiet, workers=args.workers, hop=args.hop, layer=getattr(args, "layer", "gru"),
            pooling=getattr(args, "pooling", "mean"), pad_tail=args.pad_tail,
        )
        try:
            for r in results:
                item = todo[r.index]
                item.duration_s = r.duration_s
                item.warning = _one_line(r.warning) if r.warning else ""
                if r.error is not None:
                    item.status, item.error = "failed", _one_line(r.error)
                else:
                    try:
                        _write(item, r, task, metas[id(item)], getattr(args, "level", "both"))
                        item.status = "ok"
                    except (OSError, ValueError, RuntimeError) as exc:
                        item.status, item.error = "failed", f"writing outputs failed: {_one_line(exc)}"
                writer.done(item)
        finally:
            results.close()
            writer.write()
    if task == "predict":
        _write_all_events(out_dir / f"events{suffix}.csv", writer.rows())
    code = _summary(task, selected, index_path)
    if launched is not None:
        _gather_torchrun(out_dir, task, launched)
    return code


def _device_for(args: argparse.Namespace, launched: tuple[int, int] | None) -> str:
    """The device this process runs on: the CPU for onnxruntime; under torchrun, CUDA means this rank's GPU."""
    if args.backend == "onnxruntime":
        return "cpu"
    if launched is not None and args.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return args.device


def _torchrun_shard() -> tuple[int, int] | None:
    """``(rank + 1, world size)`` when started by torchrun with several processes (its ``RANK``/``WORLD_SIZE``)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return None
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    return rank + 1, world


def _gather_torchrun(out_dir: Path, task: str, shard: tuple[int, int]) -> None:
    """Wait for every process of the torchrun job, then rank 0 merges the shards' index (and events) files.

    Each process has written ``index-I-of-N.csv`` for its share; the merged ``index.csv`` (``events.csv``) holds every
    input once, so the folder reads as if one process had made it. A gloo group (CPU, any machine) is used only for
    this barrier; the shard files stay, so a rerun or a failed process leaves nothing unaccounted for.
    """
    import datetime

    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="gloo", timeout=datetime.timedelta(hours=24))
    try:
        dist.barrier()
        if shard[0] == 1:
            from dcasenet_hub._io import atomic_write_text

            n = shard[1]
            rows = [r for i in range(1, n + 1) for r in _read_index(out_dir / f"index-{i}-of-{n}.csv")]
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(INDEX_COLUMNS)
            w.writerows([r.get(k, "") for k in INDEX_COLUMNS] for r in rows)
            atomic_write_text(out_dir / "index.csv", buf.getvalue())
            if task == "predict":
                _write_all_events(out_dir / "events.csv", rows)
            print(f"dcasenet-hub {task}: {n} processes (torchrun): merged index {out_dir / 'index.csv'} "
                  f"({len(rows)} inputs)", file=sys.stderr)
        dist.barrier()
    finally:
        if owns:
            dist.destroy_process_group()


def _check_embedding_options(args: argparse.Namespace) -> None:
    from dcasenet_hub.inference.pipeline import _hop_frames

    try:
        _hop_frames(args.hop, None)
    except ValueError as exc:
        raise _UsageError(str(exc).replace("hop=", "--hop ", 1)) from None
    if getattr(args, "layer", "gru") == "scene" and _hop(args.hop) is not None:
        raise _UsageError("--hop does not apply to --layer scene (one code per 5 s scene crop); drop --hop or use "
                          "--layer gru or conv")
    if getattr(args, "layer", "gru") == "scene" and args.pad_tail:
        raise _UsageError("--pad-tail does not apply to --layer scene (one code per 5 s scene crop, which always "
                          "covers the end); drop --pad-tail or use --layer gru or conv")
    if args.backend == "onnxruntime":
        if args.dtype != "fp32":
            raise _UsageError(f"--backend onnxruntime runs fp32; drop --dtype {args.dtype} or use --backend torch")
        if args.device not in ("auto", "cpu"):
            raise _UsageError(f"--backend onnxruntime runs on the CPU; drop --device {args.device} or use --backend "
                              "torch")
        if getattr(args, "layer", "gru") != "gru":
            raise _UsageError(f"--layer {args.layer} is not in the exported ONNX graph; use --layer gru or "
                              "--backend torch")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise _UsageError('--backend onnxruntime needs the onnx extra: pip install "dcasenet-hub[onnx]"') from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _write(item: _Input, r: Any, task: str, meta: dict[str, Any], level: str) -> None:
    if task == "embed":
        r.embeddings.save(item.outputs["main"], level=level, meta=meta)
        return
    pred = r.prediction
    pred.save_events(item.outputs["events"], filename=item.rel.as_posix())
    pred.save_scores(item.outputs["scores"])
    # last: it records the settings and the digest of each other file, so resume can tell that all came from one run
    digests = {k: _sha256(item.outputs[k]) for k in ("events", "scores")}
    pred.save(item.outputs["main"], meta={**meta, "digests": digests})


def _write_all_events(path: Path, rows: list[dict[str, str]]) -> None:
    """Concatenate the event lists of every complete input of the index (this run's and earlier runs')."""
    from dcasenet_hub._io import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["filename", "onset", "offset", "event_label"])
    for row in rows:
        output = row.get("output", "")
        if row.get("status") not in ("ok", "skipped") or not output.endswith(".json"):
            continue
        events = Path(output[: -len(".json")] + ".events.csv")
        try:
            with open(events, encoding="utf-8", newline="") as fh:
                records = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            logger.warning("events.csv: skipping %s (%s)", events, _one_line(exc))
            continue
        w.writerows(r for r in records[1:] if r)
    atomic_write_text(path, buf.getvalue())


def _read_index(path: Path) -> list[dict[str, str]]:
    """Rows of an earlier index file of the same output folder (``[]`` if none or unreadable)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = [{k: r.get(k) or "" for k in INDEX_COLUMNS} for r in csv.DictReader(fh) if r.get("input")]
        last: dict[str, dict[str, str]] = {}  # rows appended as inputs finish: an input's last row counts
        for r in rows:
            key = os.path.abspath(r["input"])
            last.pop(key, None)
            last[key] = r
        return list(last.values())
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        logger.warning("%s: cannot read the earlier index (%s); it is replaced", path, _one_line(exc))
        return []


class _IndexWriter:
    """The output folder's index: rows of earlier runs for other inputs, then this run's inputs (cumulative).

    :meth:`start` writes every row at once (this run's inputs ``pending``, ``skipped`` or ``failed``), :meth:`done`
    appends an input's final row as soon as its outputs are written (flushed and fsync'd, so a kill loses at most the
    inputs in flight) and :meth:`write` rewrites the file compacted, one row per input, at the end. Until then an
    input may have several rows: the last one counts (as :func:`_read_index` reads them).
    """

    def __init__(self, path: Path, items: list[_Input]) -> None:
        self.path = path
        self.items = items
        inputs = {os.path.abspath(i.path) for i in items}
        outputs = {os.path.abspath(p) for i in items for p in i.outputs.values()}
        self.earlier = [r for r in _read_index(path)
                        if os.path.abspath(r["input"]) not in inputs
                        and not (r["output"] and os.path.abspath(r["output"]) in outputs)]

    @staticmethod
    def _row(item: _Input) -> dict[str, str]:
        dur = "" if item.duration_s is None else f"{item.duration_s:.3f}"
        return {"input": str(item.path), "status": item.status or "pending",
                "output": item.output if item.status != "failed" else "", "duration_s": dur,
                "error": item.error, "warning": item.warning}

    def rows(self) -> list[dict[str, str]]:
        """All rows: earlier runs' (other inputs) then this run's."""
        return [*self.earlier, *(self._row(item) for item in self.items)]

    def start(self) -> None:
        """Write the whole index before any work (atomically)."""
        self.write()

    def done(self, item: _Input) -> None:
        """Append ``item``'s final row and make it durable."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([self._row(item)[k] for k in INDEX_COLUMNS])
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())

    def write(self) -> None:
        """Rewrite the index atomically, one row per input."""
        from dcasenet_hub._io import atomic_write_text

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(INDEX_COLUMNS)
        w.writerows([r[k] for k in INDEX_COLUMNS] for r in self.rows())
        atomic_write_text(self.path, buf.getvalue())


def _summary(task: str, items: list[_Input], index_path: Path) -> int:
    ok = sum(i.status == "ok" for i in items)
    skipped = sum(i.status == "skipped" for i in items)
    failed = [i for i in items if i.status == "failed"]
    print(f"dcasenet-hub {task}: {len(items)} inputs: {ok} done, {skipped} already complete (skipped), "
          f"{len(failed)} failed. Index: {index_path}", file=sys.stderr)
    for i in failed[:20]:
        msg = i.error if i.error.startswith(str(i.path)) else f"{i.path}: {i.error}"
        print(f"  failed: {msg}", file=sys.stderr)
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more (see {index_path})", file=sys.stderr)
    return 1 if failed else 0


def _run_plot(args: argparse.Namespace) -> int:
    try:
        from dcasenet_hub.integrations.plot import plot
    except ImportError as exc:  # pragma: no cover - plot.py itself has no hard imports
        print(f"dcasenet-hub plot: error: {exc}", file=sys.stderr)
        return 2
    from dcasenet_hub.integrations.plot import MissingMatplotlibError

    output = args.output or args.file.with_suffix(".png")
    try:
        if args.file.is_dir():
            raise _UsageError(f"{args.file} is a folder; plot draws one audio file (use `dcasenet-hub predict "
                              "FOLDER -o OUTDIR` for a folder)")
        if not args.file.is_file():
            raise _UsageError(f"input not found: {args.file}")
        if output.is_dir():
            raise _UsageError(f"-o {output} is a folder; give an image file name, e.g. {output / 'plot.png'}")
        _check_common(args)
    except _UsageError as exc:
        print(f"dcasenet-hub plot: error: {exc}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"dcasenet-hub plot: error: {MissingMatplotlibError.MESSAGE}", file=sys.stderr)
        return 2
    model = _load_model(args.model)
    try:
        plot(model, args.file, output=output, threshold=args.threshold, median_filter=args.median_filter,
             min_duration=args.min_duration, device=args.device, dtype=_dtype(args.dtype),
             batch_size=args.batch_size)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"dcasenet-hub plot: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    print(f"dcasenet-hub plot: wrote {output}", file=sys.stderr)
    return 0
