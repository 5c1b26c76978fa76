"""Draw where frame embeddings sit in time for a few hops (the picture in docs/outputs.md, docs/frame_grid.png).

The log-mel of a generated 3.3 s clip with, below it, one row per hop: a dot at each frame centre and, for the
frames of the first two passes, the 0.8 s span (40 mel frames) the network sees for that frame. Needs matplotlib.

Usage: ``python examples/frame_grid.py [OUT.png]`` (default: the picture of docs/outputs.md, from any folder)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: The picture docs/outputs.md shows, found from this file (not the working directory).
DOCS_PICTURE = Path(__file__).resolve().parent.parent / "docs" / "frame_grid.png"


def main(out: str | Path = DOCS_PICTURE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dcasenet_hub import build_model
    from dcasenet_hub.audio import log_mel
    from dcasenet_hub.inference.pipeline import embed

    sr = 24000
    rng = np.random.default_rng(0)
    t = np.arange(round(3.3 * sr)) / sr
    wav = (0.03 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 880 * t) * ((t % 1.1) < 0.3)).astype("f4")
    model = build_model("v3", seed=0).eval()  # timestamps do not depend on the weights
    mel = log_mel(wav[1:] - np.float32(0.97) * wav[:-1], config=model.config.frontend, normalize=False).numpy()
    hops = (0.8, 0.4, 0.1)
    fig, axes = plt.subplots(1 + len(hops), 1, figsize=(7.0, 3.6), sharex=True,
                             gridspec_kw={"height_ratios": [2.2] + [0.8] * len(hops)})
    axes[0].imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(-0.01, mel.shape[1] * 0.02 - 0.01, 0, 128))
    axes[0].set_ylabel("mel")
    axes[0].set_title("frame centres per hop (dots) and the 0.8 s span of the first frames of passes 0 and 1",
                      fontsize=8)
    for ax, hop in zip(axes[1:], hops):
        emb = embed(model, wav, sample_rate=sr, hop=hop)
        times = emb.frame_times
        ax.plot(times, np.zeros_like(times), "o", ms=3, color="k")
        passes = round(0.8 / hop)
        for p, colour, y in ((0, "tab:blue", 0.45), (1, "tab:orange", 0.85)):
            if p < passes and p < times.size:
                c = times[p]
                ax.plot([c - 0.4, c + 0.4], [y, y], color=colour, lw=3, solid_capstyle="butt")
        ax.set_ylim(-0.4, 1.2)
        ax.set_yticks([])
        ax.set_ylabel(f"hop {hop:g} s\n{times.size} frames", fontsize=7, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, 3.3)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main(*sys.argv[1:])
