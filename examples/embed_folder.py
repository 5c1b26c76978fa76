"""Embed every audio file of a folder and compare the clips by cosine similarity of their clip embeddings.

The command-line equivalent (resumable, parallel decoding, shards) is
``dcasenet-hub embed examples/audio -o embeddings/``, which is ``dcasenet_hub.batch.run``; this shows the
pieces: ``batch.discover`` finds the audio files (every extension the CLI scans) with their paths relative to the
folder, and ``iterate`` embeds them.

    python examples/make_example_audio.py
    python examples/embed_folder.py [examples/audio] [-o embeddings/] [--model dcasenet-v3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import dcasenet_hub
from dcasenet_hub import batch
from dcasenet_hub.inference import iterate


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=here / "audio")
    parser.add_argument("-o", "--output", "--out", dest="out", type=Path, default=Path("embeddings"))
    parser.add_argument("--model", default="dcasenet-v3")
    args = parser.parse_args()

    items = batch.discover([args.folder])  # the same files, in the same order, as `dcasenet-hub embed FOLDER`
    model = dcasenet_hub.DcaseNet.from_pretrained(args.model)
    names, clips = [], []
    # iterate() batches windows across files and reports bad files instead of stopping
    for r in iterate(model, [str(i.path) for i in items], embeddings=True, progress=True):
        if not r.ok:
            print(f"skipped {r.source}: {r.error}")
            continue
        out = batch.outputs_for(args.out, items[r.index].rel, "embed")["main"]
        r.embeddings.save(out)
        names.append(Path(r.source).name)
        clips.append(r.embeddings.clip)
        print(f"{r.source}: {r.embeddings.frame.shape[0]} frames -> {out}")

    x = np.stack(clips)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    width = max(len(n) for n in names)
    print("\ncosine similarity of clip embeddings:")
    for n, row in zip(names, sim):
        print(f"{n:>{width}}  " + " ".join(f"{v:5.2f}" for v in row))


if __name__ == "__main__":
    main()
