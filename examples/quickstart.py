"""Quick start: embeddings and predictions for one file.

    python examples/make_example_audio.py
    python examples/quickstart.py [examples/audio/street_rumble.wav] [--model dcasenet-v3 | path/to/best_ASC.pt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import dcasenet_hub


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="?", type=Path, default=here / "audio" / "street_rumble.wav")
    parser.add_argument("--model", default="dcasenet-v3", help="manifest id, local folder or checkpoint file")
    args = parser.parse_args()

    model = dcasenet_hub.DcaseNet.from_pretrained(args.model)

    emb = model.embed(args.audio)
    print(f"{args.audio.name}: {emb.duration_s:.1f} s")
    print(f"  frame embeddings {emb.frame.shape} every {emb.hop_s} s, first at {emb.frame_times[0]:.2f} s")
    print(f"  clip embedding {emb.clip.shape}")

    pred = model.predict(args.audio)
    print(f"  top scene: {pred.top_scene} ({pred.scene_probs.max():.2f})")
    print("  top tags:  " + ", ".join(f"{t} ({p:.2f})" for t, p in pred.top_tags(3)))
    print(f"  event probabilities {pred.event_probs.shape} on a {pred.event_hop_s} s grid; "
          f"{len(pred.events)} events at threshold {pred.threshold}:")
    for onset, offset, label in pred.events[:10]:
        print(f"    {onset:6.2f} - {offset:6.2f} s  {label}")


if __name__ == "__main__":
    main()
