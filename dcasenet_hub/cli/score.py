"""``dcasenet-hub score``: compare a ``predict`` folder with annotations, print a table, write ``report.json``
(and, with matplotlib, ``report.png``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from dcasenet_hub._io import clean_stale_temp_files_of
from dcasenet_hub.cli.common import Names

logger = logging.getLogger(__name__)

SCORE_EPILOG = """annotations (--truth; a file, or a folder of per-recording files):
  DCASE/DESED event table   filename<TAB>onset<TAB>offset<TAB>event_label (header; a row with a name only = no events)
  Raven selection table     Begin Time (s), End Time (s), Annotation (file: Begin File, or the table's name)
  Audacity label track      start<TAB>end<TAB>label (file: the track's name, a.txt -> a.wav)
  scenes / tags             filename,label[,label...] (CSV or TSV)
Files are matched by name without extension; files on one side only are listed, not scored.

scores (docs/evaluation.md):
  scenes  accuracy, macro F1, recall per class, confusion matrix
  tags    mAP, lwlrap, AP per tag, F1 at the predictions' threshold
  events  segment-based F1 and ER (1 s), event-based F1 (200 ms collar), PSDS scenarios 1 and 2
          (PSDS needs sed_scores_eval: pip install "dcasenet-hub[score]")

examples:
  dcasenet-hub predict recordings/ -o pred/
  dcasenet-hub score pred/ --truth annotations.tsv
  dcasenet-hub score pred/ --truth raven_tables/ --map "Dog bark=dog" --map noise= -o report.json

exit codes:
  0  scored
  2  usage error or unusable annotations (one line: the file, the problem, the fix)
"""


def _label_map(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--map {item!r}: write YOURS=MODEL (or YOURS= to leave YOURS out)")
        theirs, ours = item.split("=", 1)
        out[theirs.strip()] = ours.strip() or None
    return out


def _why_no_psds(report: Any, picture: Path) -> str:
    """What an events report lacks when PSDS was not computed (its scores and the plot), and how to get it."""
    from dcasenet_hub.errors import SedScoresEvalUnavailableError

    error = str((report.metrics.get("psds") or {}).get("error", "PSDS was not computed"))
    if error == SedScoresEvalUnavailableError.MESSAGE:
        return (f"PSDS and its PSD-ROC plot ({picture}) were left out: sed_scores_eval is not installed; "
                'pip install "dcasenet-hub[score]" adds them (the other scores are in the report)')
    return f"no plot ({picture}): it draws the PSD-ROC curves, and PSDS was not computed: {error}"


def _run_score(args: argparse.Namespace) -> int:
    from dcasenet_hub.metrics import score

    report = score(args.predictions, args.truth, task=args.task, label_map=_label_map(args.map or []),
                   labels=args.labels or None, threshold=args.threshold, annotation_format=args.format,
                   segment_length=args.segment_length, t_collar=args.collar, psds=not args.no_psds)
    if not args.quiet:  # the table summarises the report written below
        print(report.table())
    folder = Path(args.predictions)
    output = Path(args.output) if args.output else folder / "report.json"
    for path in (output, output.with_suffix(".png")):  # what killed runs of this command left
        clean_stale_temp_files_of(path)
    report.save(output)
    if not args.quiet:
        print(f"report: {output}")
    no_curves = report.task == "events" and not report.curves.get("psd_roc")
    if no_curves and not args.no_plot and not args.no_psds:  # the events plot is the PSD-ROC curves
        logger.info("%s", _why_no_psds(report, output.with_suffix(".png")))
    if not args.no_plot and not no_curves:
        from dcasenet_hub.errors import MissingMatplotlibError
        from dcasenet_hub.integrations.plot import plot_report

        try:
            plot_report(report, output=output.with_suffix(".png"))
        except MissingMatplotlibError as exc:
            logger.info("no plot: %s", exc)
        else:
            if not args.quiet:
                print(f"plot: {output.with_suffix('.png')}")
    sys.stdout.flush()
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score", help="score a predict folder against your annotations (report.json, a table, plots)",
        description="Compare the predictions of `dcasenet-hub predict` with annotations: scenes, tags or events.",
        epilog=SCORE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", metavar="PREDICTIONS", help="output folder of `dcasenet-hub predict`")
    p.add_argument("--truth", required=True, metavar="ANNOTATIONS", help="annotation file or folder")
    p.add_argument("-o", "--output", metavar="FILE", help="report file (default: PREDICTIONS/report.json); the "
                   "plot goes beside it as .png when matplotlib is installed (events: and sed_scores_eval, for PSDS)")
    p.add_argument("--task", choices=("scenes", "tags", "events"),
                   help="default: events for event annotations, scenes for one scene label per file, else tags")
    p.add_argument("--format", default="auto", choices=("auto", "dcase", "raven", "audacity", "labels"),
                   help="annotation format (default: recognised from the first line)")
    p.add_argument("--map", action="append", metavar="YOURS=MODEL",
                   help="rename an annotation label to a model label (repeatable); YOURS= leaves it out")
    p.add_argument("--labels", nargs="+", action=Names, metavar="NAME",
                   help="model labels to evaluate, separated by spaces or commas (default: those annotated)")
    p.add_argument("--threshold", type=float, help="tags: decision threshold (default: the predictions')")
    p.add_argument("--segment-length", type=float, default=1.0, metavar="S", help="segment-based metric (s)")
    p.add_argument("--collar", type=float, default=0.2, metavar="S", help="event-based onset collar (s)")
    p.add_argument("--no-psds", action="store_true", help="skip PSDS")
    p.add_argument("--no-plot", action="store_true", help="do not draw report.png")
    p.set_defaults(func=_run_score, flag_names={"t_collar": "--collar"})
