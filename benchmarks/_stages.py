"""Per-stage timers for the end-to-end benchmark: wrap the package's stage functions, attribute exclusive time.

Each wrapped function charges the wall time it runs to its stage, minus the time spent in nested wrapped calls
(which is charged to their own stage), separately for every thread. Functions are wrapped where they are defined
and wherever a module of the package holds a reference to them, so ``from .frontend import resample`` call sites
are covered too. Nothing is guessed: time outside every wrapped function is reported as ``other``.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# (module, qualified name) -> stage
STAGE_FUNCTIONS: dict[tuple[str, str], str] = {
    ("dcasenet_hub.audio.io", "FileReader.read"): "decode",
    ("dcasenet_hub.audio.io", "FileReader.__init__"): "decode",
    ("dcasenet_hub.audio.io", "load_audio"): "decode",
    ("dcasenet_hub.audio.resampling", "resample"): "resample",
    ("dcasenet_hub.audio.features", "log_mel"): "features",
    ("dcasenet_hub.audio.features", "mel_power"): "features",
    ("dcasenet_hub.audio.features", "normalize"): "features",
    ("dcasenet_hub.audio.features", "features"): "features",
    ("dcasenet_hub.audio.features", "preemphasised_blocks"): "features",
    ("dcasenet_hub.models.dcasenet", "DcaseNetModule.forward"): "network",
    ("dcasenet_hub.models.fast", "FastRuntime.forward"): "network",
    ("dcasenet_hub.models.fast", "optimize_for_inference"): "network",
    ("dcasenet_hub._io", "atomic_write"): "writes",
    ("dcasenet_hub._io", "atomic_write_text"): "writes",
    ("dcasenet_hub._io", "atomic_write_bytes"): "writes",
    ("dcasenet_hub.hub.api", "load_pretrained"): "load",
}
STAGES = ("load", "decode", "resample", "features", "network", "writes")


class StageTimer:
    """Collects exclusive seconds per stage and per thread, and the input shapes of network calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.network_shapes: list[tuple[tuple[int, ...], tuple[str, ...] | None]] = []
        self.threads: set[int] = set()
        self.cpu_s = 0.0  # process CPU seconds of the timed command (set by the caller)

    def _stack(self) -> list[list[Any]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        stack = self._stack()
        now = time.perf_counter()
        if stack:  # pause the enclosing stage
            stack[-1][1] += now - stack[-1][2]
        frame = [name, 0.0, now]
        stack.append(frame)
        try:
            yield
        finally:
            end = time.perf_counter()
            stack.pop()
            frame[1] += end - frame[2]
            with self._lock:
                self.seconds[name] += frame[1]
                self.calls[name] += 1
                self.threads.add(threading.get_ident())
            if stack:
                stack[-1][2] = end

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        timer = self

        if stage == "network":
            @functools.wraps(fn)
            def timed(*args: Any, **kwargs: Any) -> Any:
                mel = args[1] if len(args) > 1 else kwargs.get("mel")
                tasks = args[2] if len(args) > 2 else kwargs.get("tasks")
                if hasattr(mel, "shape") and not timer._stack():  # outermost network call only
                    with timer._lock:
                        timer.network_shapes.append((tuple(mel.shape), tuple(tasks) if tasks else None))
                with timer.stage(stage):
                    return fn(*args, **kwargs)
        elif getattr(fn, "__code__", None) is not None and fn.__code__.co_flags & 0x20:  # generator function
            @functools.wraps(fn)
            def timed(*args: Any, **kwargs: Any) -> Any:
                gen = fn(*args, **kwargs)
                while True:
                    with timer.stage(stage):
                        try:
                            item = next(gen)
                        except StopIteration:
                            return
                    yield item
        else:
            @functools.wraps(fn)
            def timed(*args: Any, **kwargs: Any) -> Any:
                with timer.stage(stage):
                    return fn(*args, **kwargs)

        timed.__wrapped_stage__ = stage  # type: ignore[attr-defined]
        return timed


@contextmanager
def instrument(timer: StageTimer) -> Iterator[StageTimer]:
    """Install ``timer``'s wrappers on the package's stage functions for the duration of the block."""
    restore: list[tuple[Any, str, Any]] = []
    import dcasenet_hub

    for name in ("from_pretrained", "load_audio", "resample", "log_mel"):
        getattr(dcasenet_hub, name)  # resolve lazy names so the package dict holds them too
    for (module_name, qualname), stage in STAGE_FUNCTIONS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner: Any = module
        parts = qualname.split(".")
        for part in parts[:-1]:
            owner = getattr(owner, part, None)
            if owner is None:
                break
        if owner is None or not hasattr(owner, parts[-1]):
            continue
        original = owner.__dict__[parts[-1]] if parts[-1] in getattr(owner, "__dict__", {}) else None
        if original is None:
            continue
        wrapped = timer.wrap(original, stage)
        restore.append((owner, parts[-1], original))
        setattr(owner, parts[-1], wrapped)
        if owner is module:  # also references held by other modules of the package
            for other_name, other in list(sys.modules.items()):
                if other is None or not (other_name == "dcasenet_hub" or other_name.startswith("dcasenet_hub.")):
                    continue
                for attr, value in list(vars(other).items()):
                    if value is original and other is not module:
                        restore.append((other, attr, original))
                        setattr(other, attr, wrapped)
    try:
        yield timer
    finally:
        for owner, attr, original in reversed(restore):
            setattr(owner, attr, original)
