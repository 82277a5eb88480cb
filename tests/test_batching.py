"""The batch writer: waited-for and fire-and-forget writes share batches and order."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import event, text
from sqlmodel import Session

from handlers.batching import BatchWriter
from storage.db import Database, DatabaseBusy

T = TypeVar("T")


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


class _Outage(Database):
    """A real SQLite database that is unavailable for its next ``failures`` transactions,
    as one locked past the retry window is (waiting that out for real would take the
    busy timeout of 10 s per attempt)."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url)
        self.failures = failures

    async def run(self, fn: Callable[[Session], T]) -> T:
        if self.failures:
            self.failures -= 1
            raise DatabaseBusy("the database stayed locked; try again shortly")
        return await super().run(fn)


async def test_an_unavailable_database_delays_writes_and_loses_none(tmp_path: Path) -> None:
    db = _Outage(f"sqlite:///{tmp_path / 'o.db'}", failures=3)
    db.call(lambda s: s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")))
    pauses: list[float] = []

    async def no_wait(seconds: float) -> None:
        pauses.append(seconds)

    writer: BatchWriter[str, int] = BatchWriter(db, _apply, name="test", sleep=no_wait)
    writer.enqueue("a")
    waited = asyncio.create_task(writer.submit("bb"))
    await asyncio.sleep(0)
    writer.enqueue("ccc")
    assert await waited == 2  # the caller is not told "failed" for a write that succeeds
    await writer.flush()
    assert _rows(db) == ["a", "bb", "ccc"]  # all of them, once, in order
    assert writer.retries == 3
    assert pauses == [0.5, 1.0, 2.0]  # backing off
    writer.enqueue("later")
    await writer.flush()
    assert _rows(db)[-1] == "later"
    await writer.stop()


async def test_an_outage_while_splitting_a_bad_batch_keeps_the_order(tmp_path: Path) -> None:
    db = _Outage(f"sqlite:///{tmp_path / 's.db'}", failures=0)
    db.call(lambda s: s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")))

    async def outage_once(seconds: float) -> None:
        pass

    writer: BatchWriter[str, int] = BatchWriter(db, _apply, name="test", sleep=outage_once)
    real_run = db.run
    calls = 0

    async def flaky(fn: Callable[[Session], object]) -> object:
        # The whole batch fails on its bad row; then, writing one by one (x1, bad, x2...),
        # the database goes away once, just as x2 is written.
        nonlocal calls
        calls += 1
        if calls == 4:
            raise DatabaseBusy("locked")
        return await real_run(fn)

    db.run = flaky  # type: ignore[method-assign, assignment]
    for v in ("x1", "bad", "x2", "x3"):
        writer.enqueue(v)
    await writer.flush()
    assert _rows(db) == ["x1", "x2", "x3"]  # x3 did not overtake x2 while it waited
    await writer.stop()


async def test_a_full_sqlite_disk_delays_writes_and_loses_none(tmp_path: Path) -> None:
    # A database that may not grow past its current size: SQLite says "database or disk
    # is full" (SQLITE_FULL) exactly as on a full disk. Freeing space must lose nothing.
    limit = {"pages": 1_000_000}
    db = Database(f"sqlite:///{tmp_path / 'f.db'}")

    @event.listens_for(db.engine, "connect")
    def _cap(dbapi_conn, _rec):  # type: ignore[no-untyped-def]
        dbapi_conn.execute(f"PRAGMA max_page_count={limit['pages']}")

    db.call(lambda s: s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")))
    db.call(lambda s: s.execute(text("INSERT INTO t (v) VALUES ('seed')")))
    limit["pages"] = int(db.call(lambda s: s.execute(text("PRAGMA page_count")).scalar_one()))
    db.engine.dispose()  # the disk is now full
    pauses: list[float] = []

    async def operator_frees_space_after_two_tries(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            limit["pages"] = 1_000_000
            db.engine.dispose()

    writer: BatchWriter[str, int] = BatchWriter(
        db, _apply, name="test", sleep=operator_frees_space_after_two_tries
    )
    values = [f"m{i}-" + "x" * 3000 for i in range(5)]
    for v in values:
        writer.enqueue(v)
    await writer.flush()
    assert _rows(db) == ["seed", *values]  # all of them, once, in order
    assert writer.retries == 2 and pauses == [0.5, 1.0]
    await writer.stop()


def test_sqlite_errors_that_pass_are_transient() -> None:
    from sqlalchemy.exc import OperationalError

    from storage.db import is_transient

    def err(name: str, message: str) -> OperationalError:
        orig = sqlite3.OperationalError(message)
        orig.sqlite_errorname = name
        return OperationalError("INSERT", {}, orig)

    for name in ("SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_CANTOPEN", "SQLITE_READONLY"):
        assert is_transient(err(name, "x"), sqlite=True), name
    assert not is_transient(err("SQLITE_ERROR", "no such table: t"), sqlite=True)
    assert not is_transient(err("SQLITE_CORRUPT", "database disk image is malformed"), sqlite=True)


async def test_stop_counts_the_batch_in_flight_as_not_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.db"
    db = Database(f"sqlite:///{path}", busy_retry_s=60)
    db.call(lambda s: s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")))
    other = sqlite3.connect(path, isolation_level=None)  # another process holds the write lock
    other.execute("BEGIN IMMEDIATE")
    try:
        writer: BatchWriter[str, int] = BatchWriter(db, _apply, name="ingest")
        for v in ("a", "b", "c"):
            writer.enqueue(v)
        await asyncio.sleep(0)  # the writer takes the batch (no clock)
        writer.enqueue("d")  # and one more waits in the queue
        with caplog.at_level(logging.ERROR, logger="handlers.batching"):
            await writer.stop(timeout=0)  # the database stays locked: give up at once
        msgs = [r.getMessage() for r in caplog.records]
        assert any("4 operation(s) not written (3 in flight)" in m for m in msgs), msgs
    finally:
        other.rollback()
        other.close()
