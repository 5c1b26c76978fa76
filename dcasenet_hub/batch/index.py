"""The output folder's ``index.csv`` (one row per input, every writer's) and merged ``events.csv``.

Both are rebuilt from the folder's journal by :func:`~dcasenet_hub.batch.journal.rebuild`; this module is
where readers find them.

Example:
    >>> from dcasenet_hub.batch.index import read_index
    >>> [r["status"] for r in read_index("emb/index.csv")]      # doctest: +SKIP
    ['ok', 'ok', 'failed']
"""

from __future__ import annotations

from dcasenet_hub.batch.journal import (
    EVENTS_COLUMNS,
    INDEX_COLUMNS,
    one_line,
    read_index,
    write_all_events,
    write_index,
)

__all__ = ["EVENTS_COLUMNS", "INDEX_COLUMNS", "one_line", "read_index", "write_all_events", "write_index"]
