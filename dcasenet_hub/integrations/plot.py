"""One picture of what the model hears in a file: spectrogram, events, scenes and tags on a shared time axis.

Needs the optional extra: ``pip install "dcasenet-hub[plot]"`` (matplotlib). Uses matplotlib's object API (no
pyplot), so it never changes the caller's backend.

Example:
    >>> from dcasenet_hub import DcaseNet
    >>> from dcasenet_hub.integrations.plot import plot
    >>> model = DcaseNet.from_pretrained("dcasenet-v3")            # doctest: +SKIP
    >>> fig = plot(model, "street.wav", output="street.png")        # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dcasenet_hub.errors import MissingMatplotlibError


def plot(
    model: Any,
    audio: Any,
    *,
    sample_rate: int | None = None,
    output: str | Path | None = None,
    prediction: Any = None,
    threshold: float | None = None,
    class_thresholds: Mapping[str, float] | None = None,
    labels: Sequence[str] | None = None,
    exclude_labels: Sequence[str] | None = None,
    median_filter: float | None = None,
    min_duration: float | None = None,
    top_k: int = 3,
    device: Any = None,
    dtype: Any = None,
    batch_size: int = 8,
    dpi: int = 110,
) -> Any:
    """Draw the log-mel spectrogram, the event probability roll with detected events, and scene probabilities.

    Rows (shared time axis): the log-mel spectrogram (before normalisation); the 14 event probabilities on the 100 ms
    grid with the detected events outlined; the ``top_k`` scenes' probabilities per 5 s crop. The title gives the
    top scene and tags.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        audio: File path or waveform (with ``sample_rate``).
        sample_rate: Rate of a waveform input.
        output: Save the figure here (format from the extension, e.g. ``.png``, ``.pdf``).
        prediction: A :class:`~dcasenet_hub.inference.pipeline.Prediction` of this audio (computed when ``None``).
        threshold, class_thresholds, median_filter, min_duration: Event list settings (see
            :func:`dcasenet_hub.inference.pipeline.predict`).
        labels, exclude_labels: The classes drawn (see :func:`~dcasenet_hub.inference.pipeline.predict`).
        top_k: Number of scenes drawn over time and tags in the title.
        device, dtype, batch_size: Passed to :func:`~dcasenet_hub.inference.pipeline.predict`.
        dpi: Resolution of the saved image.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        MissingMatplotlibError: matplotlib is not installed (the message says how to install it).
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError:
        raise MissingMatplotlibError(MissingMatplotlibError.MESSAGE) from None
    import dataclasses

    from dcasenet_hub import audio as W
    from dcasenet_hub.inference.pipeline import predict

    fe = model.config.frontend
    # one decode and one resampling, the pipeline's own (FileReader + resampled_blocks): the spectrogram is drawn from
    # the very samples the prediction's windows are cut from, and predict() gets them at the network's rate, so it
    # neither decodes nor resamples again (its result equals predict() on the file itself)
    if isinstance(audio, (str, Path)):
        reader: Any = W.FileReader(audio)
        name = Path(audio).name
    else:
        if sample_rate is None:
            raise ValueError("pass sample_rate= with a waveform")
        reader = W.ArrayReader(audio, sample_rate, "waveform")
        name = "waveform"
    with reader:
        if reader.warning:  # as the pipeline says it for files it opens itself
            logging.getLogger("dcasenet_hub.inference.pipeline").warning("%s: %s", audio, reader.warning)
        input_sr = reader.sample_rate
        wav = np.concatenate([np.zeros(0, np.float32), *W.resampled_blocks(reader, fe.sample_rate)])
    if prediction is None:
        is_file = isinstance(audio, (str, Path))
        # a file's samples go in named by its path, so the pipeline's messages ("too short") name the file
        x = {"array": wav, "sampling_rate": fe.sample_rate, "path": str(audio)} if is_file else wav
        prediction = predict(model, x, sample_rate=None if is_file else fe.sample_rate, threshold=threshold,
                             class_thresholds=class_thresholds, labels=labels, exclude_labels=exclude_labels,
                             median_filter=median_filter, min_duration=min_duration, device=device,
                             dtype=dtype, batch_size=batch_size)
        if is_file:
            prediction = dataclasses.replace(prediction, sample_rate=input_sr)
    duration = len(wav) / fe.sample_rate
    mel = W.log_mel(wav, config=fe, normalize=False).numpy()

    fig = Figure(figsize=(12, 8.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True, height_ratios=[3, 2.2, 1.6])
    ax = axes[0]
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, duration, 0, mel.shape[0]),
              interpolation="nearest")
    ax.set_ylabel("mel band")
    ax.set_title("log-mel spectrogram", loc="left", fontsize=9)

    ax = axes[1]
    probs = prediction.event_probs
    labels = prediction.event_labels
    t_end = probs.shape[0] * prediction.event_hop_s
    im = ax.imshow(probs.T, origin="lower", aspect="auto", cmap="Blues", vmin=0, vmax=1,
                   extent=(0, t_end, -0.5, len(labels) - 0.5), interpolation="nearest")
    for onset, offset, label in prediction.events:
        row = labels.index(label)
        ax.add_patch(Rectangle((onset, row - 0.45), offset - onset, 0.9, fill=False, edgecolor="crimson", lw=1.2))
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    own = f", {len(prediction.class_thresholds)} classes their own" if prediction.class_thresholds else ""
    ax.set_title(f"event probabilities (100 ms) and detected events (threshold {prediction.threshold:g}{own}, red)",
                 loc="left", fontsize=9)
    fig.colorbar(im, ax=ax, pad=0.01, fraction=0.02)

    ax = axes[2]
    starts = np.asarray(prediction.scene_window_starts)
    win = min(prediction.scene_window_s, duration)
    crops = np.asarray(prediction.scene_window_probs)
    order = np.argsort(-prediction.scene_probs)[:top_k]
    for c in order:
        ax.step(np.r_[starts, starts[-1] + win] if len(starts) else [0, duration],
                np.r_[crops[:, c], crops[-1, c]] if len(starts) else [0, 0], where="post",
                label=f"{prediction.scene_labels[c]} ({prediction.scene_probs[c]:.2f})")
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(scene)")
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", fontsize=7, ncol=top_k)
    ax.set_title(f"scene probability per {prediction.scene_window_s:g} s crop", loc="left", fontsize=9)
    ax.set_xlim(0, duration)

    tags = ", ".join(f"{t} ({p:.2f})" for t, p in prediction.top_tags(top_k))
    note = f"  [untrained heads: {', '.join(prediction.untrained_tasks)}]" if prediction.untrained_tasks else ""
    fig.suptitle(f"{name} ({duration:.1f} s): scene {prediction.top_scene} "
                 f"({float(np.max(prediction.scene_probs)):.2f}); tags {tags}{note}", fontsize=10)
    if output is not None:
        from dcasenet_hub._io import atomic_write

        output = Path(output)
        fmt = output.suffix.lstrip(".") or "png"
        atomic_write(output, lambda p: fig.savefig(p, dpi=dpi, format=fmt))
    return fig


def plot_report(report: Any, *, output: str | Path | None = None, dpi: int = 110) -> Any:
    """Draw a :class:`~dcasenet_hub.metrics.ScoreReport`: the confusion matrix (scenes), per-class precision-recall
    curves (tags) or per-class PSD-ROC curves of both PSDS scenarios (events, when PSDS was computed).

    Args:
        report: The result of :func:`dcasenet_hub.metrics.score`.
        output: Save the figure here (format from the extension).
        dpi: Resolution of the saved image.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        MissingMatplotlibError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingMatplotlibError(MissingMatplotlibError.MESSAGE) from None
    curves = report.curves
    if report.task == "scenes":
        fig = Figure(figsize=(7.5, 6.5), layout="constrained")
        ax = fig.subplots()
        cm = np.asarray(curves["confusion"])
        names = curves["confusion_labels"]
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("annotated")
        ax.set_title(f"confusion matrix: accuracy {report.metrics['accuracy']:.3f}, macro F1 "
                     f"{report.metrics['macro_f1']:.3f} ({report.files['scored']} files)", fontsize=10)
    elif report.task == "tags":
        fig = Figure(figsize=(7.5, 6), layout="constrained")
        ax = fig.subplots()
        for label, (precision, recall) in curves["pr"].items():
            ax.step(np.r_[0.0, recall], np.r_[precision[:1], precision], where="pre",
                    label=f"{label} (AP {report.metrics['ap'][label]:.2f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.legend(fontsize=7, loc="lower left")
        ax.set_title(f"precision-recall per tag: mAP {report.metrics['map']:.3f}, lwlrap "
                     f"{report.metrics['lwlrap']:.3f}", fontsize=10)
    else:
        rocs = curves.get("psd_roc")
        if not rocs:
            raise ValueError("the report has no PSD-ROC curves to draw (PSDS was not computed: "
                             f"{report.metrics.get('psds', {}).get('error', 'psds=False')})")
        fig = Figure(figsize=(12, 5), layout="constrained")
        axes = fig.subplots(1, len(rocs), sharey=True, squeeze=False)[0]
        for ax, (name, per_class) in zip(axes, rocs.items()):
            params = report.metrics["psds"][name]["params"]
            reach = float(params["max_efpr"])
            for label, (tpr, efpr) in per_class.items():
                ax.step(efpr, tpr, where="post", marker="o", ms=4, label=label)  # a short set: few points
                finite = np.asarray(efpr)[np.isfinite(efpr)]
                reach = max(reach, float(finite.max()) if finite.size else 0.0)
            system_tpr, system_efpr = curves["psd_roc_system"][name]
            ax.step(system_efpr, system_tpr, where="post", color="black", lw=2, label="system (effective)")
            # the integration limit of PSDS, marked
            ax.axvline(params["max_efpr"], color="grey", ls="--", lw=1)
            ax.set_xlim(0, reach * 1.02)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("effective false positives per hour")
            ax.set_title(f"{name}: PSDS {report.metrics['psds'][name]['value']:.3f} (DTC/GTC "
                         f"{params['dtc_threshold']:g})", fontsize=10)
        axes[0].set_ylabel("true positive rate")
        axes[-1].legend(fontsize=7, loc="lower right")
    if output is not None:
        from dcasenet_hub._io import atomic_write

        output = Path(output)
        fmt = output.suffix.lstrip(".") or "png"
        atomic_write(output, lambda p: fig.savefig(p, dpi=dpi, format=fmt))
    return fig
