"""Engines and sessions for SQLite (embedded default) and PostgreSQL (scale).

SQLite runs in WAL mode with a busy timeout, and every transaction starts with
``BEGIN IMMEDIATE``: a transaction that reads and then writes cannot deadlock against
another one doing the same (SQLite would fail one of them at once with "database is
locked" instead of waiting). Work runs in worker threads so the event loop never waits
on the database and PostgreSQL round-trips overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

logger = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000


# SQLite result codes that say the database cannot be written *now* (the disk is full,
# the file went read-only, an I/O error, the file cannot be opened): the write itself is
# fine and succeeds once the operator frees space or fixes the mount. Extended codes
# (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED...) count with their base code.
SQLITE_TRANSIENT_CODES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY")


class DatabaseBusy(Exception):
    """The database stayed locked past the busy timeout."""


def is_transient(exc: BaseException, *, sqlite: bool) -> bool:
    """Whether ``exc`` says the database is unavailable for now rather than that the
    work itself is wrong: trying the same work again later can succeed.

    A lock held too long, a connection the server dropped, on PostgreSQL any
    ``OperationalError`` (server restarting, connection refused, out of connections),
    and on SQLite a full disk, an I/O error, a file that cannot be opened or is
    read-only. SQLite's other ``OperationalError``s (no such table, disk image
    malformed) are not going away by themselves.
    """
    if isinstance(exc, DatabaseBusy):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not sqlite:
        return isinstance(exc, OperationalError)
    return _sqlite_error_name(exc).startswith(SQLITE_TRANSIENT_CODES)


def _sqlite_error_name(exc: BaseException) -> str:
    """The SQLite result code name (``SQLITE_FULL``...) behind ``exc``, or ``""``."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    name = getattr(orig, "sqlite_errorname", None)
    return name if isinstance(name, str) else ""


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy's default driver is psycopg2)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    url = normalise_url(url)
    if is_sqlite(url):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _sqlite_on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's BEGIN.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _is_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


class Database:
    """Owns the engine; hands out short sessions, one per unit of work."""

    def __init__(self, url: str, *, echo: bool = False, busy_retry_s: float = 30.0) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(url, echo=echo)
        self.sqlite = is_sqlite(self.url)
        self.busy_retry_s = busy_retry_s
        # SQLite has one writer at a time. Threads of this process take turns here rather
        # than in SQLite's busy handler, which sleeps 1, 2, 5, 10… ms between tries and
        # leaves the database idle; other processes still meet the busy timeout.
        self._turn = threading.Lock() if self.sqlite else contextlib.nullcontext()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def call(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one transaction, retrying it while SQLite reports a lock.

        The busy timeout already waits inside SQLite; this outer retry covers the cases
        where SQLite gives up early (a lock upgrade it can tell would deadlock).
        """
        deadline = time.monotonic() + self.busy_retry_s
        delay = 0.01
        while True:
            try:
                with self._turn, self.session() as session:
                    result = fn(session)
                    session.commit()
                    return result
            except OperationalError as exc:
                if not (self.sqlite and _is_locked(exc)):
                    raise
                if time.monotonic() >= deadline:
                    raise DatabaseBusy("the database stayed locked; try again shortly") from exc
                logger.debug("sqlite locked, retrying in %.3fs", delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)

    async def run(self, fn: Callable[[Session], T]) -> T:
        """:meth:`call` in a worker thread, so the event loop keeps serving."""
        return await asyncio.to_thread(self.call, fn)

    def dispose(self) -> None:
        self.engine.dispose()
