"""Garbage-collector settings for a long-running bot process."""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 50_000
"""Net allocations between young-generation collections (CPython's default is 700).

In a burst, thousands of messages are in flight at once (their frames, tasks and
events), so young collections found mostly live objects, walked them and promoted them:
at 10,000, about 7% of ingestion's CPU in ``bench/discord_ingest.py``. 50,000 young
objects are a few megabytes; above that the bench gains nothing more."""


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
