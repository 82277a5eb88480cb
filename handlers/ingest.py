"""The write side of ingestion: every message passes here, so it is batched.

Callers submit an operation and await its commit, or enqueue it when they need no
answer; see :mod:`handlers.batching`.
"""

from __future__ import annotations

from sqlmodel import Session

from handlers.batching import BatchWriter
from storage.db import Database
from storage.queries import IngestOp, NewMessageRow, apply_ingest_batch


def apply_ingest_ops(session: Session, ops: list[IngestOp]) -> list[bool]:
    """Apply ``ops`` in order; for a new message, False means it was already stored (a
    redelivery, or a second copy in the same batch), so it is not judged or counted again."""
    stored = {id(row) for row in apply_ingest_batch(session, ops)}
    fresh: list[bool] = []
    for op in ops:
        if isinstance(op, NewMessageRow):
            key = id(op)
            fresh.append(key in stored)
            stored.discard(key)  # the same row queued twice is news once
        else:
            fresh.append(True)
    return fresh


class IngestWriter(BatchWriter[IngestOp, bool]):
    def __init__(self, db: Database, *, max_batch: int = 1000) -> None:
        super().__init__(db, apply_ingest_ops, name="rapport-ingest-writer", max_batch=max_batch)
