"""Peer comparison: DcaseNet ``embed`` / ``predict`` against PANNs CNN14 as its users run it, on the same files.

Used by ``python -m benchmarks.run --sections peers`` (or ``python -m benchmarks.peers``). Needs the optional
``peers`` extra (``pip install "dcasenet-hub[peers]"``: panns_inference, librosa); skipped with a message otherwise.

* **CNN14, as its users run it** (panns_inference's README): ``librosa.load(path, sr=32000, mono=True)`` then
  ``AudioTagging.inference(audio[None, :])``, i.e. the ``Cnn14`` network in eval mode under ``torch.no_grad`` on one
  clip at a time, returning clip-wise tag probabilities and the 2048-d embedding. The published checkpoint is
  downloaded from Zenodo at first use, which this workplace cannot reach, so the network runs with its own random
  initialisation: its speed does not depend on the weights' values (the same rule as the rest of this harness).
* **Ours**: ``dcasenet_hub.inference.pipeline.embed`` and ``predict`` on the list of files (fp32 by default, the fast path,
  batch 8, decode threads 2), as a user of this package runs them.

The three are timed in rounds, interleaved (ours embed, CNN14, ours predict, ...) so that all see the same machine
load; the table gives the median audio seconds per second and the ratio to CNN14 per round.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any


def available() -> str:
    """``""`` when the peers can run, else the reason (the section is skipped with it)."""
    try:
        import librosa  # noqa: F401
        import panns_inference  # noqa: F401
    except ImportError as exc:
        return f"peers section skipped: {exc.name} is not installed (pip install \"dcasenet-hub[peers]\")"
    return ""


def _cnn14(device: Any) -> Any:
    import contextlib
    import io

    # panns_inference's config module tries to download a label CSV at import and prints the failure offline
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from panns_inference.models import Cnn14

    model = Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                  classes_num=527)
    return model.to(device).eval()


def _run_cnn14(model: Any, files: list[Path], device: Any) -> None:
    import librosa
    import torch

    for f in files:
        audio, _ = librosa.load(str(f), sr=32000, mono=True)  # as AudioTagging's users load audio
        with torch.no_grad():
            out = model(torch.from_numpy(audio[None, :]).to(device), None)
        out["clipwise_output"].cpu().numpy(), out["embedding"].cpu().numpy()


def make_files(folder: Path, *, n: int, seconds: float, sr: int) -> list[Path]:
    """The e2e section's test audio (``benchmarks.run._write_wav``: tones and noise, 16-bit WAV)."""
    from benchmarks.run import _write_wav

    files = []
    for i in range(n):
        p = folder / f"clip{i:03d}.wav"
        if not p.exists():
            _write_wav(p, seconds, sr, seed=i)
        files.append(p)
    return files


def bench_peers(device: Any, files: list[Path], *, audio_s: float, rounds: int = 3,
                dtype: str | None = None) -> dict[str, Any]:
    """Interleaved rounds of ours (embed, predict) and CNN14 over ``files``; medians and ratios."""
    import torch

    from dcasenet_hub import build_model
    from dcasenet_hub.inference.pipeline import embed, predict

    ours = build_model("v3", seed=0).eval().to(device)
    cnn14 = _cnn14(device)
    # warm-up on one file each (first-call allocations, oneDNN kernel creation)
    embed(ours, files[:1], device=device, dtype=dtype, progress=False)
    predict(ours, files[:1], device=device, dtype=dtype, progress=False)
    _run_cnn14(cnn14, files[:1], device)
    times: dict[str, list[float]] = {"embed": [], "cnn14": [], "predict": []}
    runs = {
        "embed": lambda: embed(ours, files, device=device, dtype=dtype, progress=False, workers=2),
        "cnn14": lambda: _run_cnn14(cnn14, files, device),
        "predict": lambda: predict(ours, files, device=device, dtype=dtype, progress=False, workers=2),
    }
    for _ in range(rounds):
        for name, fn in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    rate = {k: audio_s / statistics.median(v) for k, v in times.items()}
    per_round = {k: [times["cnn14"][i] / times[k][i] for i in range(rounds)] for k in ("embed", "predict")}
    return {"files": len(files), "audio_s": audio_s, "rounds": rounds, "dtype": dtype or "fp32",
            "seconds": times, "audio_s_per_s": rate,
            "ratio_vs_cnn14": {k: rate[k] / rate["cnn14"] for k in ("embed", "predict")},
            "ratio_vs_cnn14_per_round": per_round,
            "cnn14": "panns_inference.models.Cnn14 (random init; librosa.load at 32 kHz + forward, one clip at a "
                     "time, no_grad)",
            "goals": {"embed": 2.5, "predict": 1.3}}


def render(res: dict[str, Any]) -> str:
    r = res["audio_s_per_s"]
    lines = [f"### Peers: {res['files']} files, {res['audio_s']:.0f} s of audio, {res['rounds']} interleaved rounds "
             f"({res['dtype']})", "",
             "| run | audio s/s (median) | ratio to CNN14 (median; per round) | goal |", "| --- | --- | --- | --- |"]
    for k in ("embed", "predict"):
        ratio = res["ratio_vs_cnn14"][k]
        rounds = ", ".join(f"{x:.2f}" for x in res["ratio_vs_cnn14_per_round"][k])
        goal = res["goals"][k]
        lines.append(f"| dcasenet-hub {k} | {r[k]:.1f} | {ratio:.2f}x ({rounds}) | >= {goal}x: "
                     f"{'met' if ratio >= goal else 'not met'} |")
    lines.append(f"| PANNs CNN14 | {r['cnn14']:.1f} | 1 | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    a = ap.parse_args(argv)
    reason = available()
    if reason:
        print(reason)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), n=a.files, seconds=10.0, sr=44100)
        res = bench_peers(torch.device(a.device), files, audio_s=10.0 * a.files, rounds=a.rounds, dtype=a.dtype)
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
