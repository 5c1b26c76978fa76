"""torchrun: each process takes the shard of its rank, then rank 0 merges the shards' index (and events) files.

Example (every process of ``torchrun --nproc-per-node 4 ...`` runs the same code):
    >>> from dcasenet_hub import batch
    >>> from dcasenet_hub.batch import distributed
    >>> distributed.torchrun_shard()                      # doctest: +SKIP
    (2, 4)
    >>> report = batch.run(model, ["corpus/"], "emb/")     # doctest: +SKIP  (takes the shard, merges at the end)
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from dcasenet_hub.batch.index import read_index, write_all_events, write_index


def torchrun_shard() -> tuple[int, int] | None:
    """``(rank + 1, world size)`` when started by torchrun with several processes (its ``RANK``/``WORLD_SIZE``).

    ``None`` outside torchrun, for one process, or when the variables are not numbers.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return None
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    return rank + 1, world


def local_device(device: str | None) -> str | None:
    """Under torchrun, ``"auto"``/``"cuda"`` become this process's GPU (``cuda:LOCAL_RANK``); else unchanged."""
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return device


def gather(out_dir: str | Path, task: str, shard: tuple[int, int]) -> int | None:
    """Wait for every process of the torchrun job; then rank 0 merges the shards' index (and events) files.

    Each process has written ``index-I-of-N.csv`` for its share; the merged ``index.csv`` (``events.csv`` for
    predictions) holds every input once, so the folder reads as if one process had made it. A gloo group (CPU, any
    machine) is used only for this barrier; the shard files stay, so a rerun or a failed process leaves nothing
    unaccounted for.

    Returns:
        On rank 0 (``shard[0] == 1``) the number of inputs in the merged index; ``None`` on the other ranks.
    """
    import torch.distributed as dist

    out_dir = Path(out_dir)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="gloo", timeout=datetime.timedelta(hours=24))
    merged: int | None = None
    try:
        dist.barrier()
        if shard[0] == 1:
            n = shard[1]
            rows = [r for i in range(1, n + 1) for r in read_index(out_dir / f"index-{i}-of-{n}.csv")]
            write_index(out_dir / "index.csv", rows)
            if task == "predict":
                write_all_events(out_dir / "events.csv", rows)
            merged = len(rows)
        dist.barrier()
    finally:
        if owns:
            dist.destroy_process_group()
    return merged
