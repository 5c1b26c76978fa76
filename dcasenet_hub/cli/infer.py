"""``dcasenet-hub embed``, ``predict`` and ``plot``: arguments in, one library call, a summary out.

The work (discovery, shards, resume, index, torchrun) is :func:`dcasenet_hub.batch.run`, open to Python
users; this module turns the arguments into one :class:`~dcasenet_hub.batch.BatchOptions` (which checks them:
a bad value is a usage error, exit code 2, one line naming the flag) and prints the summary. Flags left out are
not passed, so the defaults are the options' own (:class:`~dcasenet_hub.inference.InferenceOptions`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dcasenet_hub._io import clean_stale_temp_files_of
from dcasenet_hub.cli.common import Names, environment_fix
from dcasenet_hub.cli.vocabulary import add_output

#: Exit code 3, alike for the commands that load a model.
MODEL_EXIT_CODE = """  3  model could not be fetched or loaded (unknown id, offline, download failed, not a checkpoint, a weights
     cache that cannot be written);
     offline, pass a local checkpoint with --model PATH
"""

EXIT_CODES = """exit codes:
  0  every input succeeded (or was already complete)
  1  some inputs failed, or OUTDIR's index could not be written (e.g. a full disk: the path is named); the others'
     outputs are written; see index.csv and the summary on stderr
  2  usage error (bad arguments or option values, no inputs found, unusable --device, OUTDIR is a file)
""" + MODEL_EXIT_CODE + """  130 interrupted (Ctrl-C; 143 after SIGTERM): finished inputs are in OUTDIR and its index; rerun the same command to do the rest
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
  OUTDIR/index.csv    input, status (ok | failed | pending), output, duration_s, error, warning: every input
                      of every run and shard writing OUTDIR, once (rebuilt from OUTDIR/.dcasenet-hub/)
  -o FILE.npz         for one audio file: that one .npz, nothing else

Frames end at the last full 0.8 s step, as the authors' network does (9.6 s for a 10 s clip); --pad-tail pads
the last step so they reach the end of the file.

Reruns skip inputs whose outputs are complete and were made with the same settings and the
same weights (by content) from the same (unchanged) input file; --overwrite recomputes them. Files are written
atomically (fsync'd); index.csv is rebuilt when a run starts and when it ends or is interrupted (Ctrl-C), from
the journal that gains each input as it finishes; a kill (even SIGKILL) loses at most the inputs in flight: rerun
the same command to finish.

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
  OUTDIR/durations.tsv      filename<TAB>duration of every input (sed_scores_eval's durations file)
  with --event-format raven / audacity (repeatable; default dcase):
  OUTDIR/<path>.Table.1.selections.txt  Raven selection table; OUTDIR/events.selections.txt all of them
  OUTDIR/<path>.labels.txt              Audacity label track (start<TAB>end<TAB>label)
  OUTDIR/index.csv          input, status (ok | failed | pending), output, duration_s, error, warning
  -o FILE.json | FILE.csv | FILE.tsv   for one audio file: only that file, in the format of its extension

Reruns skip inputs whose .json, .events.csv and .scores.tsv come from one run with the same weights and settings
(the .json records the other files' SHA-256); a kill loses at most the inputs in flight.

Event scores and events end at the last full 0.8 s step, as the authors' network does (9.6 s for a 10 s clip);
--pad-tail pads the last step so they reach the end of the file.

examples:
  dcasenet-hub predict street.wav -o predictions/
  dcasenet-hub predict street.wav -o street.json
  dcasenet-hub predict recordings/ -o pred/ --median-filter 0.5 --min-duration 0.3
  dcasenet-hub predict recordings/ -o pred/ --hop 0.1
  dcasenet-hub predict recordings/ -o pred/ --event-format raven --event-format audacity
  dcasenet-hub predict recordings/ -o pred/ --labels dog Bark --threshold 0.4 --threshold dog=0.6

""" + EXIT_CODES

PLOT_EPILOG = """Draws the log-mel spectrogram, the event probability roll with the detected events, and the scene
probabilities over time, on a shared time axis, with the top scenes and tags in the title.
Needs matplotlib: pip install "dcasenet-hub[plot]"

example:
  dcasenet-hub plot street.wav -o street.png

exit codes:
  0  the image was written
  1  FILE could not be used (not audio, damaged, too short: the message names the problem and the fix)
  2  usage error (bad arguments or option values, FILE not found or a folder, the image exists without
     --overwrite, matplotlib missing or unable to write that format, unusable --device)
""" + MODEL_EXIT_CODE + """  130 interrupted (Ctrl-C; 143 after SIGTERM): no image was written (an existing one is kept)
"""


class _UsageError(Exception):
    """Bad command-line input (exit code 2)."""


#: Options whose flag is not the option's name with dashes.
FLAG_NAMES = {"embedding_format": "--format", "event_formats": "--event-format", "class_thresholds": "--threshold"}
#: Attribute of the parsed arguments: which ``--threshold`` value set each class's threshold (``"*"``: every
#: class's), so a rejected value is shown as it was typed.
_THRESHOLD_TYPED = "threshold_typed"


def _usage_message(exc: Exception, args: argparse.Namespace) -> str:
    """One line for a rejected option value, naming the flag as typed (``--threshold 1.5: must be ...``)."""
    from dcasenet_hub.cli.common import flag_message

    def typed(name: str, value: str) -> str | None:
        return _typed_threshold(args, name, value) if name in ("threshold", "class_thresholds") else None

    return flag_message(exc, args, flag_names=FLAG_NAMES, typed=typed)


def _typed_threshold(args: argparse.Namespace, name: str, value: str) -> str | None:
    """The ``--threshold`` value(s) as typed that set the rejected ``threshold`` or ``class_thresholds`` entry."""
    import ast

    typed: dict[str, str] = getattr(args, _THRESHOLD_TYPED, None) or {}
    if name == "threshold":
        return typed.get("*")
    try:
        entries = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        entries = None
    if isinstance(entries, dict) and len(entries) == 1 and next(iter(entries)) in typed:
        return typed[next(iter(entries))]
    given = list(dict.fromkeys(typed.values()))
    return " ".join(given) if given else None


def _threshold_options(args: argparse.Namespace) -> dict[str, Any]:
    """``threshold`` and ``class_thresholds`` from the ``--threshold`` values (repeatable, later ones win).

    ``P`` is every class's threshold, ``LABEL=P`` one class's (split at the last ``=``), and a ``.json`` file an
    object ``{"LABEL": P, ...}`` whose ``"*"`` is every class's. Values are only parsed here: a number that is not
    one, or a probability out of range, is passed on for :class:`~dcasenet_hub.inference.InferenceOptions` to reject.

    Raises:
        _UsageError: a ``.json`` file that cannot be read or does not hold a JSON object.
    """
    out: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    typed: dict[str, str] = {}
    for text in getattr(args, "threshold", None) or ():
        if "=" not in text and text.lower().endswith(".json"):
            for label, value in _threshold_file(text).items():
                if label == "*":
                    out["threshold"] = value
                else:
                    per_class[label] = value
                typed[label] = text
        elif "=" in text:
            label, _, value = text.rpartition("=")
            per_class[label] = _number(value)
            typed[label] = text
        else:
            out["threshold"] = _number(text)
            typed["*"] = text
    if per_class:
        out["class_thresholds"] = per_class
    setattr(args, _THRESHOLD_TYPED, typed)
    return out


def _number(text: str) -> float | str:
    """``text`` as a float, or as it is (the options reject it with their own message)."""
    try:
        return float(text)
    except ValueError:
        return text


def _threshold_file(path: str) -> dict[str, Any]:
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        from dcasenet_hub.batch.index import one_line

        raise _UsageError(f"--threshold {path}: cannot read it as JSON: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise _UsageError(f'--threshold {path}: must hold a JSON object {{"LABEL": P, ...}} ("*": every class), '
                          f"not a {type(data).__name__}")
    return data


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options among ``names`` that were given on the command line (flags left out default to None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


#: Flags that map one to one onto :class:`~dcasenet_hub.inference.InferenceOptions` fields (``--threshold`` maps
#: onto two: :func:`_threshold_options`).
INFERENCE_FLAGS = ("hop", "layer", "pooling", "labels", "exclude_labels", "median_filter", "min_duration", "device",
                   "dtype", "backend", "batch_size", "workers", "feature_device")


def _load_model(name: str) -> Any:
    """``from_pretrained(name)``; any failure becomes :class:`~dcasenet_hub.errors.ModelLoadError` (exit code 3)."""
    from dcasenet_hub.cli.common import load_model

    return load_model(name)


# ----------------------------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    for name, epilog, desc in (
        ("embed", EMBED_EPILOG, "frame (every 0.8 s) and clip embeddings of audio files, one .npz per file"),
        ("predict", PREDICT_EPILOG, "scene, tag and event predictions of audio files, with label names"),
    ):
        p = subparsers.add_parser(name, help=desc, description=desc, epilog=epilog, formatter_class=fmt)
        p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file, folder or list file")
        add_output(p, required=True, type=Path, metavar="OUTDIR", help="output folder", old=("--output-dir",))
        _common(p)
        p.add_argument("--hop", type=float, metavar="SECONDS",
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
            p.add_argument("--layer", choices=("gru", "conv", "scene"),
                           help="gru: recurrent output, 512-d (default); conv: convolutional trunk averaged over "
                                "frequency, 512-d; scene: scene branch code, 128-d, one per 5 s crop")
            p.add_argument("--format", choices=("npz", "parquet"), dest="embedding_format",
                           help="npz: one .npz per input (default); parquet: also the folder's clip and frame "
                                "embeddings as sharded Parquet files in OUTDIR/parquet/ (needs pyarrow), "
                                "for pandas, polars, DuckDB, datasets; dcasenet_hub.read_embeddings(OUTDIR) loads "
                                "either")
            p.add_argument("--pooling", choices=("mean", "max", "mean+max"),
                           help="clip embedding from the 0.8 s-step frames (default mean; mean+max doubles "
                                "the size)")
        else:
            _prediction_options(p)
            p.add_argument("--event-format", action="append", choices=("dcase", "raven", "audacity"),
                           dest="event_formats", metavar="dcase|raven|audacity",
                           help="event files per input and merged (repeat for several; default dcase): dcase "
                                "(.events.csv, events.csv), raven (Raven selection tables .Table.1.selections.txt, "
                                "events.selections.txt), audacity (Audacity label tracks .labels.txt)")
        p.add_argument("--backend", choices=("torch", "onnxruntime"),
                       help="torch (default) or onnxruntime (CPU, fp32, --layer gru; needs the onnx extra; outputs "
                            "within 1e-5 of torch's)")
        p.add_argument("--feature-device", choices=("cpu", "model"),
                       help="where resampling and log-mel run: cpu (default; the front-end verified on GPUs) or "
                            "model (the model's CUDA GPU: the GPU front-end, not yet measured on a GPU)")
        p.add_argument("--workers", type=int, metavar="N",
                       help="threads decoding and resampling audio ahead of the network (default 2; 0 = none)")
        p.add_argument("--shard", default=None, metavar="I/N",
                       help="process only shard I of N (1 <= I <= N), chosen by a hash of each output path, "
                            "so N machines can split a corpus")
        p.add_argument("--overwrite", action="store_true", help="recompute inputs whose outputs are complete")
        p.set_defaults(func=_run_embed if name == "embed" else _run_predict)

    p = subparsers.add_parser("plot", help="picture of one file's spectrogram, events, scenes and tags",
                              description="Picture of one file's log-mel spectrogram, events, scenes and tags.",
                              epilog=PLOT_EPILOG, formatter_class=fmt)
    p.add_argument("file", type=Path, metavar="FILE", help="audio file")
    add_output(p, type=Path, metavar="PNG",
               help="image file (default: FILE with .png); any matplotlib format by extension")
    p.add_argument("--overwrite", action="store_true", help="replace the image file if it exists")
    _common(p)
    _prediction_options(p)
    p.set_defaults(func=_run_plot)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dcasenet-v3",
                   help="manifest id, local folder, .safetensors or authors' .pt file (default: dcasenet-v3)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="5 s windows per forward pass; a 60 s window counts as 12 (default 8)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, mps ... (default: cuda if available)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16", "int8"),
                   help="compute precision: fp32 (exact, default); bf16 (about 2x faster on CPUs with AMX / "
                        "AVX512-BF16 and on GPUs, slower elsewhere); fp16 (GPUs); int8 (CPU, onnxruntime with "
                        "quantized convolutions, the onnx extra: faster on CPUs with VNNI, slower without). "
                        "Outputs stay float32")


def _prediction_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", action="append", metavar="P|LABEL=P|FILE.json",
                   help="event threshold: P for every class (default: the model's, 0.3 as the authors), LABEL=P "
                        "for one class (tag or event; tags: the F1 of `score`), FILE.json an object "
                        '{"LABEL": P, ...} ("*": every class); repeatable, a later value wins')
    p.add_argument("--labels", nargs="+", action=Names, metavar="NAME",
                   help="keep only these classes (scene, tag or event names, any case when unique; separated by "
                        "spaces or commas); a vocabulary none of them names keeps all its classes; probabilities "
                        "are not renormalised")
    p.add_argument("--exclude-labels", nargs="+", action=Names, metavar="NAME",
                   help="drop these classes from the outputs")
    p.add_argument("--median-filter", type=float, metavar="SECONDS",
                   help="median filter over the binary event activity (default: none)")
    p.add_argument("--min-duration", type=float, metavar="SECONDS",
                   help="drop events shorter than this (default: keep all)")


def _check_model_backend(args: argparse.Namespace) -> None:
    """An exported ONNX graph runs only on onnxruntime, as it is (the options cannot know what the model file is)."""
    if str(args.model).lower().endswith(".onnx"):
        if args.dtype == "int8":
            raise _UsageError(f"--model {args.model} is an exported ONNX graph; --dtype int8 quantizes a "
                              "checkpoint: pass the model's .safetensors, folder or id instead")
        if args.backend != "onnxruntime":
            raise _UsageError(f"--model {args.model} is an exported ONNX graph; run it with --backend onnxruntime")


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


# ----------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------


def _run_embed(args: argparse.Namespace) -> int:
    return _run(args, "embed")


def _run_predict(args: argparse.Namespace) -> int:
    return _run(args, "predict")


def _batch_options(args: argparse.Namespace, task: str) -> Any:
    """The :class:`~dcasenet_hub.batch.BatchOptions` of parsed ``embed`` / ``predict`` arguments (flags left out
    take the options' defaults).

    Raises:
        OptionsError: an invalid value (a ``ValueError`` naming the option).
    """
    from dcasenet_hub.batch.options import BatchOptions

    return BatchOptions(task=task, **_given(args, ("level", "shard", "event_formats", "embedding_format",
                                                   *INFERENCE_FLAGS)), **_threshold_options(args),
                        pad_tail=args.pad_tail, overwrite=args.overwrite, progress=False if args.quiet else None)


def _run(args: argparse.Namespace, task: str) -> int:
    from dcasenet_hub import batch
    from dcasenet_hub.cli.common import check_model_name
    from dcasenet_hub.errors import DownloadError, ModelError, ModelLoadError

    _limit_heap_retention()
    check_model_name(args.model)  # before anything reads it (a FIFO or /dev/zero would block or never end)
    try:
        if args.shard is not None and batch.torchrun_shard() is not None:
            raise _UsageError("--shard and torchrun both split the inputs; drop --shard under torchrun (each "
                              "process takes the shard of its rank)")
        _check_model_backend(args)
        try:
            options = _batch_options(args, task)
        except ValueError as exc:
            raise _UsageError(_usage_message(exc, args)) from None
        single = _single_output(args, task)
        if single is None and args.output.exists() and not args.output.is_dir():
            raise _UsageError(f"-o {args.output} is an existing file; OUTDIR must be a folder "
                              "(it is created if missing)")
        try:
            plan = None if single is not None else batch.prepare(args.model, args.inputs, args.output, options)
        except ModelLoadError:
            raise
        except (ModelError, DownloadError) as exc:  # the named model cannot be fetched: as loading says it
            raise ModelLoadError(str(args.model), exc) from None
        except (FileNotFoundError, NotADirectoryError, ValueError) as exc:  # prepare() writes nothing
            raise _UsageError(_usage_message(exc, args)) from None
    except _UsageError as exc:
        print(f"dcasenet-hub {task}: error: {exc}", file=sys.stderr)
        return 2
    from dcasenet_hub.errors import OptionsError

    try:
        if plan is None:
            return _run_one(args, task, options, single)
        report = plan.execute(load=_load_model)
    except OptionsError as exc:  # a class name the loaded model does not have
        print(f"dcasenet-hub {task}: error: {_usage_message(exc, args)}", file=sys.stderr)
        return 2
    code = _summary(report, quiet=args.quiet)
    if report.merged is not None:
        print(f"dcasenet-hub {task}: {report.processes} processes (torchrun): merged index "
              f"{args.output / 'index.csv'} ({report.merged} inputs)", file=sys.stderr)
    return code


#: -o naming one file (by its extension) for one audio input: the formats each command writes.
FILE_OUTPUTS = {"embed": (".npz",), "predict": (".json", ".csv", ".tsv")}
#: Extensions of files ``-o`` may be mistaken to write that :mod:`mimetypes` does not know (it knows .txt, .zip,
#: .tar, .png, .gz ...): refused rather than made into a folder of that name.
_FILE_LIKE = {".npy", ".parquet", ".pkl", ".pickle", ".h5", ".hdf5", ".pt", ".pth", ".onnx", ".safetensors", ".jsonl",
              ".mat", ".yaml", ".yml", ".feather", ".arrow", ".log", ".zst", ".7z"}


def _file_like(path: Path) -> bool:
    """Whether ``path`` is named like a file (a known file or compression extension), not a folder."""
    import mimetypes

    from dcasenet_hub.batch.discovery import AUDIO_EXTENSIONS

    suffix = path.suffix.lower()
    return suffix in _FILE_LIKE or suffix in AUDIO_EXTENSIONS or mimetypes.guess_type(path.name) != (None, None)


def _single_output(args: argparse.Namespace, task: str) -> Path | None:
    """The file ``-o`` names for a single input (format by extension), or ``None`` when it names a folder.

    Raises:
        _UsageError: a missing input; a file name for several inputs, a folder or a list; an extension of the
            other command; an existing file without --overwrite.
    """
    from dcasenet_hub.batch.discovery import LIST_EXTENSIONS

    out: Path = args.output
    suffix = out.suffix.lower()
    known = {s for formats in FILE_OUTPUTS.values() for s in formats}
    if not out.exists() and suffix not in known and _file_like(out):
        raise _UsageError(f"-o {out}: {task} writes one {' / '.join(FILE_OUTPUTS[task])} file or a folder, not "
                          f"{suffix}; for a folder, give a name without {suffix}")
    if out.is_dir() or suffix not in known:
        return None
    if suffix not in FILE_OUTPUTS[task]:
        raise _UsageError(f"-o {out}: {task} writes {', '.join(FILE_OUTPUTS[task])} files (or a folder), not "
                          f"{suffix}")
    source = Path(args.inputs[0])
    if len(args.inputs) == 1 and not source.exists():  # a mistyped path: not "give one audio file", it was given
        raise _UsageError(f"input not found: {source}; check the path")
    if len(args.inputs) != 1 or not source.is_file() or source.suffix.lower() in LIST_EXTENSIONS:
        raise _UsageError(f"-o {out} names one {suffix} file, which holds one audio file's output; give one audio "
                          "file, or a folder for -o to get one output per input")
    if args.shard is not None:
        raise _UsageError(f"--shard splits many inputs; -o {out} names one file for one input: drop --shard")
    if out.exists() and not args.overwrite:
        raise _UsageError(f"-o {out} exists; pass --overwrite to replace it")
    return out


def _run_one(args: argparse.Namespace, task: str, options: Any, out: Path) -> int:
    """One input, one output file: the format by the extension of ``out`` (written atomically)."""
    from dcasenet_hub.batch.index import one_line
    from dcasenet_hub.batch.resume import check_unchanged, model_identity, settings_meta, source_identity
    from dcasenet_hub.inference.pipeline import iterate

    clean_stale_temp_files_of(out)  # what killed runs into the same file left

    inference = options.inference
    source = Path(args.inputs[0])
    # what a folder run's outputs record: the settings, the weights' and the input's identity, taken before the
    # weights are loaded and the input decoded (a file replaced meanwhile is not recorded as what was processed)
    weights = model_identity(args.model)
    meta = {**settings_meta(task, weights, inference, level=options.level), **source_identity(source)}
    model = _load_model(args.model)
    check_unchanged(args.model, weights["model_sha256"])
    # a model loaded by name has no place of its own yet (as in batch.run); onnxruntime runs on the CPU
    device = "cpu" if inference.backend == "onnxruntime" else inference.device or "auto"
    results = iterate(model, [str(source)], embeddings=task == "embed", predictions=task == "predict",
                      options=inference.replace(device=device))
    try:
        result = next(iter(results))
    finally:
        results.close()
    try:
        if result.error is not None:
            raise result.error
        out.parent.mkdir(parents=True, exist_ok=True)
        if task == "embed":
            result.embeddings.save(out, level=options.level, meta=meta)
        elif out.suffix.lower() == ".json":
            result.prediction.save(out, meta=meta)
        elif out.suffix.lower() == ".csv":
            result.prediction.save_events(out, filename=source.name)
        else:
            result.prediction.save_scores(out)
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        text = one_line(exc)
        if fix := environment_fix(exc):
            text += f"; {fix}"
        from dcasenet_hub.batch.journal import display

        text = display(text)  # bytes of a name that are not UTF-8 as \xNN, as everywhere else
        named = one_line(display(str(source)))  # one line also for a name with a newline
        print(f"dcasenet-hub {task}: error: {text if named in text else f'{named}: {text}'}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"dcasenet-hub {task}: wrote {out}", file=sys.stderr)
    return 0


def _summary(report: Any, *, quiet: bool = False) -> int:
    """Print the run's counts and the first failures (``quiet``: only when something failed); the exit code (1 if
    any input failed)."""
    items, failed, index_path = report.items, report.failed, report.index_path
    if quiet and not failed and not report.problems:
        return 0
    inputs = f"{len(items)} input{'' if len(items) == 1 else 's'}"
    print(f"dcasenet-hub {report.task}: {inputs}: {report.done} done, {report.skipped} already complete "
          f"(skipped), {len(failed)} failed. Index: {index_path}", file=sys.stderr)
    from dcasenet_hub.batch.index import one_line
    from dcasenet_hub.batch.journal import display

    for i in failed[:20]:
        path = one_line(display(str(i.path)))  # a name with a newline stays on the line, as in the error
        msg = i.error if i.error.startswith(path) else f"{path}: {i.error}"
        print(f"  failed: {msg}", file=sys.stderr)
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more (see {index_path})", file=sys.stderr)
    for problem in report.problems:
        print(f"  error: {problem}", file=sys.stderr)
    return 1 if failed or report.problems else 0


def _run_plot(args: argparse.Namespace) -> int:
    try:
        from dcasenet_hub.integrations.plot import plot
    except ImportError as exc:  # pragma: no cover - plot.py itself has no hard imports
        print(f"dcasenet-hub plot: error: {exc}", file=sys.stderr)
        return 2
    from dcasenet_hub.errors import InputError
    from dcasenet_hub.integrations.plot import MissingMatplotlibError

    output = args.output or args.file.with_suffix(".png")
    try:
        if args.file.is_dir():
            raise _UsageError(f"{args.file} is a folder; plot draws one audio file (use `dcasenet-hub predict "
                              "FOLDER -o OUTDIR` for a folder)")
        if not args.file.is_file():
            raise _UsageError(f"input not found: {args.file}; check the path")
        if output.is_dir():
            raise _UsageError(f"-o {output} is a folder; give an image file name, e.g. {output / 'plot.png'}")
        if output.exists() and not args.overwrite:
            raise _UsageError(f"{output} exists; pass --overwrite to replace it")
        clean_stale_temp_files_of(output)  # what killed runs into the same image left
        from dcasenet_hub.inference.options import InferenceOptions

        opts = InferenceOptions(**_given(args, INFERENCE_FLAGS), **_threshold_options(args))
    except _UsageError as exc:
        print(f"dcasenet-hub plot: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"dcasenet-hub plot: error: {_usage_message(exc, args)}", file=sys.stderr)
        return 2
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        print(f"dcasenet-hub plot: error: {MissingMatplotlibError.MESSAGE}", file=sys.stderr)
        return 2
    formats = FigureCanvasBase.get_supported_filetypes()
    if output.suffix and output.suffix.lower().lstrip(".") not in formats:  # said before the model runs
        print(f"dcasenet-hub plot: error: -o {output}: matplotlib cannot write {output.suffix} files; use one of "
              f"{', '.join('.' + f for f in sorted(formats))}", file=sys.stderr)
        return 2
    model = _load_model(args.model)
    from dcasenet_hub.errors import OptionsError

    try:
        plot(model, args.file, output=output, threshold=opts.threshold, class_thresholds=opts.class_thresholds,
             labels=opts.labels, exclude_labels=opts.exclude_labels, median_filter=opts.median_filter,
             min_duration=opts.min_duration, device="auto" if opts.device is None else opts.device,
             dtype=opts.dtype, batch_size=opts.batch_size)
    except OptionsError as exc:  # a class name the model does not have
        print(f"dcasenet-hub plot: error: {_usage_message(exc, args)}", file=sys.stderr)
        return 2
    except InputError as exc:  # the file cannot be used (other errors: main() maps them to their exit codes)
        from dcasenet_hub.batch.index import one_line

        print(f"dcasenet-hub plot: error: {one_line(exc)}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"dcasenet-hub plot: wrote {output}", file=sys.stderr)
    return 0
