"""Audio: decode -> resample -> pre-emphasis -> log-mel -> normalise -> windows, each step written once.

===================  ==========================================================================================
:mod:`.io`           :func:`load_audio`, :class:`FileReader` (the one decoder, whole-file and streaming),
                     :class:`ArrayReader`, :func:`open_audio`, :func:`audio_info`
:mod:`.resampling`     :func:`resample` (torchaudio's windowed sinc), :func:`resampled_blocks` (chunked, identical)
:mod:`.features`     :func:`preemphasis`, :func:`log_mel`, :func:`normalize`, :func:`tile_frames`,
                     :func:`features` (one window's model input)
:mod:`.windows`      scene crops, event windows, :func:`plan` and :func:`cut` of a sample stream
===================  ==========================================================================================

Inference, fine-tuning, plots and the trainer's evaluation all call these functions (docs/architecture.md).

Example:
    >>> import numpy as np
    >>> from dcasenet_hub.audio import log_mel
    >>> tuple(log_mel(np.zeros(24000, dtype="float32")).shape)
    (128, 50)
"""

from dcasenet_hub.audio.features import (
    SAFE_PEAK,
    features,
    log_mel,
    mel_filterbank,
    mel_power,
    normalize,
    preemphasis,
    preemphasised_blocks,
    tile_frames,
)
from dcasenet_hub.audio.io import (
    AUDIO_EXTENSIONS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    ArrayReader,
    FileReader,
    Reader,
    audio_info,
    header_warning,
    load_audio,
    open_audio,
)
from dcasenet_hub.audio.resampling import resample, resampled_blocks, resampled_length
from dcasenet_hub.audio.windows import (
    EVENT,
    MIN_DURATION_S,
    SCENE,
    Window,
    cut,
    event_bounds,
    event_windows,
    plan,
    scene_starts,
)
from dcasenet_hub.errors import AudioLoadError, InputError

__all__ = [
    "AUDIO_EXTENSIONS",
    "EVENT",
    "MAX_SAMPLE_RATE",
    "MIN_DURATION_S",
    "MIN_SAMPLE_RATE",
    "SAFE_PEAK",
    "SCENE",
    "ArrayReader",
    "AudioLoadError",
    "FileReader",
    "InputError",
    "Reader",
    "Window",
    "audio_info",
    "cut",
    "event_bounds",
    "event_windows",
    "features",
    "header_warning",
    "load_audio",
    "log_mel",
    "mel_filterbank",
    "mel_power",
    "normalize",
    "open_audio",
    "plan",
    "preemphasis",
    "preemphasised_blocks",
    "resample",
    "resampled_blocks",
    "resampled_length",
    "scene_starts",
    "tile_frames",
]
