"""The batch writer: waited-for and fire-and-forget writes share batches and order."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from handlers.batching import BatchWriter
from storage.db import Database


def _apply(session: Session, ops: list[str]) -> list[int]:
    """Insert each op as a row; an op starting with "bad" violates a constraint."""
    out = []
    for op in ops:
        value = None if op.startswith("bad") else op
        session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
        out.append(len(op))
    return out


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'b.db'}")
    database.call(
        lambda s: s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
    )
    return database


def _rows(db: Database) -> list[str]:
    return db.call(lambda s: [r[0] for r in s.execute(text("SELECT v FROM t ORDER BY id"))])


async def test_enqueued_and_awaited_writes_commit_in_order_and_flush_waits(db: Database) -> None:
    writer: BatchWriter[str, int] = BatchWriter(db, _apply, name="test")
    seen: list[tuple[list[str], list[int]]] = []
    writer.observers.append(lambda ops, res: seen.append((ops, res)))
    writer.enqueue("a")
    writer.enqueue("bb")
    waited = asyncio.create_task(writer.submit("ccc"))
    await asyncio.sleep(0)  # let the task queue its write (no clock involved)
    writer.enqueue("dddd")
    assert await waited == 3
    await writer.flush()
    assert _rows(db) == ["a", "bb", "ccc", "dddd"]
    assert [op for ops, _ in seen for op in ops] == ["a", "bb", "ccc", "dddd"]
    assert [r for _, res in seen for r in res] == [1, 2, 3, 4]
    await writer.stop()


async def test_a_bad_write_sinks_neither_its_batch_nor_the_caller_loop(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    writer: BatchWriter[str, int] = BatchWriter(db, _apply, name="test")
    writer.enqueue("x1")
    writer.enqueue("bad-enqueued")
    waited_bad = asyncio.create_task(writer.submit("bad-awaited"))
    await asyncio.sleep(0)
    writer.enqueue("x2")
    with caplog.at_level(logging.ERROR, logger="handlers.batching"):
        with pytest.raises(Exception, match="NOT NULL"):
            await waited_bad
        await writer.flush()
    # The good neighbours were written one by one after the batch failed.
    assert _rows(db) == ["x1", "x2"]
    # Nobody waited for the bad enqueued write: it is logged, with what it was.
    assert any("bad-enqueued" in r.getMessage() for r in caplog.records)
    # The writer still works afterwards.
    assert await writer.submit("after") == 5
    assert _rows(db)[-1] == "after"
    await writer.stop()
