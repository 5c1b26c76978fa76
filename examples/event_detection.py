"""Fine-grained sound event detection: frame probabilities, an event list with post-processing, and a picture.

    python examples/make_example_audio.py
    python examples/event_detection.py [examples/audio/alarm_beeps.flac] [--model dcasenet-v3] [-o events/]

Writes OUT/<name>.events.csv (DCASE-style list), OUT/<name>.scores.tsv (frame scores) and, with matplotlib,
OUT/<name>.png into the output folder (default ``events/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import dcasenet_hub


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="?", type=Path, default=here / "audio" / "alarm_beeps.flac")
    parser.add_argument("--model", default="dcasenet-v3")
    parser.add_argument("--threshold", type=float, default=None, help="default: the authors' 0.3")
    parser.add_argument("-o", "--output", type=Path, default=Path("events"), help="output folder (default events/)")
    args = parser.parse_args()

    model = dcasenet_hub.DcaseNet.from_pretrained(args.model)
    # median filter over 0.5 s and a 0.3 s minimum duration smooth the 100 ms decisions
    pred = model.predict(args.audio, threshold=args.threshold, median_filter=0.5, min_duration=0.3)
    print(f"{args.audio.name}: {pred.event_probs.shape[0]} frames of {pred.event_hop_s} s, "
          f"threshold {pred.threshold}")
    for onset, offset, label in pred.events:
        print(f"  {onset:6.2f} - {offset:6.2f} s  {label}")
    raw = pred.detect()  # the same probabilities without post-processing
    print(f"{len(raw)} events without median filter / minimum duration, {len(pred.events)} with")
    strongest = pred.event_probs.max(axis=0).argsort()[::-1][:3]
    print("highest peak probabilities: " + ", ".join(
        f"{pred.event_labels[i]} ({pred.event_probs[:, i].max():.2f})" for i in strongest))

    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / args.audio.stem
    events, scores, png = (stem.with_name(stem.name + s) for s in (".events.csv", ".scores.tsv", ".png"))
    pred.save_events(events, filename=args.audio.name)   # DCASE-style list
    pred.save_scores(scores)                             # sed_scores_eval frame scores
    try:
        from dcasenet_hub.integrations.plot import plot

        plot(model, args.audio, prediction=pred, output=png)
        print(f"wrote {events}, {scores} and {png}")
    except ImportError as exc:
        print(f"wrote {events} and {scores} ({exc})")


if __name__ == "__main__":
    main()
