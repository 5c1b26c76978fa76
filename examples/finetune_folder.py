"""Fine-tune DcaseNet on a small labelled folder, compare with training from scratch, predict on new clips.

The script builds its own data (no downloads): a folder with one sub-folder per class of synthetic,
class-dependent sounds (a hum with harmonics, a bird-like chirp, a siren sweep, rain-like crackle, a motor),
plus held-out clips. Then it

1. fits a linear probe on the frozen base model (fast: the head inputs are computed once),
2. fine-tunes the blocks after ``--freeze`` (default conv_block3) with the same epoch budget,
3. trains the same network from random initialisation with that budget (the baseline),
4. reports each run's best validation accuracy and predicts the held-out clips with the saved models.

Run::

    python examples/finetune_folder.py                         # base: dcasenet-v3 (downloaded once)
    python examples/finetune_folder.py --base path/to/model    # a local folder / .safetensors / .pt
    python examples/finetune_folder.py --clips 12 --epochs 3   # quicker

On CPU with the defaults (5 classes x 24 clips of 5 s) expect a few minutes for the probe and about ten for each of
the two fine-tuning runs; ``--clips`` and ``--epochs`` scale that.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 24000
CLASSES = ("chirp", "hum", "motor", "rain", "siren")


def synth(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One clip of ``kind`` with random pitch, timing and level, over a little background noise."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    if kind == "hum":  # mains-like hum with harmonics
        f0 = rng.uniform(90, 130)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
    elif kind == "chirp":  # short rising bird-like chirps at random times
        x = np.zeros(n)
        for start in rng.uniform(0, seconds - 0.2, size=rng.integers(4, 9)):
            i = int(start * SR)
            m = int(0.12 * SR)
            tt = np.arange(m) / SR
            f = rng.uniform(2500, 3500) + 8000 * tt
            x[i:i + m] += np.sin(2 * np.pi * np.cumsum(f) / SR) * np.hanning(m)
    elif kind == "siren":  # slow sweep up and down
        rate = rng.uniform(0.3, 0.6)
        f = 900 + 400 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3))
        x = np.sin(2 * np.pi * np.cumsum(f) / SR)
    elif kind == "rain":  # dense random clicks, high-passed
        x = (rng.random(n) < 0.02) * rng.standard_normal(n)
        x = np.diff(x, prepend=0.0)
    else:  # motor: low noise modulated at the firing rate
        rate = rng.uniform(20, 40)
        noise = np.convolve(rng.standard_normal(n), np.ones(40) / 40, "same")
        x = noise * (1 + 0.8 * np.sin(2 * np.pi * rate * t))
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.2, 0.5)
    return (x + 0.005 * rng.standard_normal(n)).astype(np.float32)


def build_folder(root: Path, per_class: int, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sf.write(root / kind / f"{kind}_{i:03d}.wav", synth(kind, seconds, rng), SR)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="dcasenet-v3", help="model to fine-tune (id, folder or file)")
    parser.add_argument("--clips", type=int, default=24, help="clips per class (default 24)")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length (default 5 s)")
    parser.add_argument("--epochs", type=int, default=6, help="epoch budget of fine-tuning and scratch runs")
    parser.add_argument("--freeze", default="conv_block3", help="blocks kept frozen when fine-tuning")
    parser.add_argument("-o", "--output", "--out", dest="out", type=Path, default=None,
                        help="keep data and models here (default: temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from dcasenet_hub import DcaseNet, build_model, finetune

    work = args.out or Path(tempfile.mkdtemp(prefix="dcasenet-finetune-"))
    data = build_folder(work / "data", args.clips, args.seconds, seed=0)
    new_clips = build_folder(work / "held_out", 2, args.seconds, seed=1)
    print(f"data: {data} ({len(CLASSES)} classes x {args.clips} clips of {args.seconds:g} s)")

    try:
        base = DcaseNet.from_pretrained(args.base)
    except (OSError, ValueError) as exc:
        print(f"cannot load the base model {args.base!r}: {exc}\n"
              "pass --base with a local copy (folder, .safetensors or the authors' .pt)", file=sys.stderr)
        return 2
    if not base.config.trained_tasks:
        print(f"note: {args.base} has no trained heads recorded ({base.config.provenance}); "
              "the comparison below only means something with pretrained weights")

    # device="auto": CUDA when present (the default, None, trains where the base model is: the CPU after loading)
    common = {"epochs": args.epochs, "batch_size": 16, "crop_s": min(5.0, args.seconds), "patience": None,
              "progress": True, "device": "auto"}
    runs = {}
    t = time.perf_counter()
    runs["linear probe"] = finetune(base, data, task="classification", output_dir=work / "probe", overwrite=True,
                                    progress=True, device="auto")
    times = {"linear probe": time.perf_counter() - t}
    t = time.perf_counter()
    runs[f"fine-tune after {args.freeze}"] = finetune(base, data, task="classification", freeze=args.freeze,
                                                      output_dir=work / "finetuned", overwrite=True, **common)
    times[f"fine-tune after {args.freeze}"] = time.perf_counter() - t
    scratch = build_model(base.config.arch, seed=0)
    t = time.perf_counter()
    runs["from scratch (random init)"] = finetune(scratch, data, task="classification", freeze="none", lr=1e-3,
                                                  body_lr_scale=1.0, output_dir=work / "scratch", overwrite=True,
                                                  **common)
    times["from scratch (random init)"] = time.perf_counter() - t

    print(f"\nvalidation accuracy ({len(CLASSES)} classes, chance {1 / len(CLASSES):.2f}):")
    for name, model in runs.items():
        r = model.config.extra["finetune"]
        print(f"  {name:<30} {r['validation']['accuracy']:.3f}  (macro F1 {r['validation']['macro_f1']:.3f}, "
              f"best epoch {r['best_epoch']}, {times[name]:.0f} s)")

    files = sorted(new_clips.rglob("*.wav"))
    loaded = DcaseNet.from_pretrained(work / "finetuned")
    preds = loaded.predict(files)
    right = sum(p.top_scene == f.parent.name for p, f in zip(preds, files))
    print(f"\nheld-out clips with the saved fine-tuned model ({work / 'finetuned'}): {right}/{len(files)} right")
    for p, f in zip(preds, files):
        print(f"  {f.parent.name}/{f.name}: {p.top_scene} ({p.scenes[p.top_scene]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
