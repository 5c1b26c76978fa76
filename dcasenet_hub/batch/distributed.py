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
from pathlib import Path

from dcasenet_hub import _env
from dcasenet_hub.batch.journal import rebuild


def torchrun_shard() -> tuple[int, int] | None:
    """``(rank + 1, world size)`` when started by torchrun with several processes (its ``RANK``/``WORLD_SIZE``).

    ``None`` outside torchrun, for one process, or when the variables are not numbers.
    """
    env = _env.torchrun()
    return None if env is None else (env.rank + 1, env.world)


def local_device(device: str | None) -> str | None:
    """Under torchrun, ``"auto"``/``"cuda"`` become this process's GPU (``cuda:LOCAL_RANK``); else unchanged."""
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            env = _env.torchrun()
            return f"cuda:{(env.local_rank if env else 0) % torch.cuda.device_count()}"
    return device


def gather(out_dir: str | Path, task: str, shard: tuple[int, int],
           event_formats: tuple[str, ...] = ("dcase",), *, parquet: bool = False) -> int | None:
    """Wait for every process of the torchrun job; then rank 0 rebuilds ``index.csv`` and the merged files.

    Every process records its inputs in the folder's journal (:mod:`~dcasenet_hub.batch.journal`) and rebuilds
    the index when it ends; after the barrier, rank 0's rebuild holds every rank's inputs once (and, with
    ``parquet``, builds the Parquet tables), so the folder reads as if one process had made it. A gloo group (CPU,
    any machine) is used only for this barrier.

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
            merged = len(rebuild(out_dir, events=task == "predict", event_formats=event_formats,
                                 parquet=task == "embed" and parquet))
        dist.barrier()
    finally:
        if owns:
            dist.destroy_process_group()
    return merged
