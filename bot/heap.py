"""Garbage-collector settings for a long-running bot process."""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 10_000
"""Allocations between young-generation collections (CPython's default is 700)."""


def settle_after_startup() -> None:
    """Freeze what start-up allocated and collect young garbage less often.

    Start-up leaves some 130,000 long-lived objects (the detector, SQLAlchemy,
    discord.py), and every full collection walked them all: about a quarter of
    ingestion's CPU in ``bench/discord_ingest.py``. Frozen, collections see only what
    came after. Each message allocates a few dozen short-lived objects (a task, futures,
    the event) that die young either way, so young collections can be rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, 10, 10)
