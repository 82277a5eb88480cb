"""The scheduler leader lock on PostgreSQL when the leader's connection dies under it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

import bot.service as service
from bot.settings import Settings
from storage.db import Database
from storage.leader import LeaderLock
from tests.conftest import _pg_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_database()


def _kill_lock_connection(lock: LeaderLock, url: str) -> None:
    """What a PostgreSQL restart, failover or idle-session timeout does to the leader."""
    assert lock._conn is not None
    pid = lock._conn.execute(text("select pg_backend_pid()")).scalar()
    lock._conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        # With a timeout, PostgreSQL (14+) waits until the backend has exited and so
        # released its locks; without one it only sends the signal.
        conn.execute("select pg_terminate_backend(%s, 5000)", (pid,))


def test_one_leader_after_the_leader_connection_dies(pg_url: str) -> None:
    a_db, b_db = Database(pg_url), Database(pg_url)
    a, b = LeaderLock(a_db), LeaderLock(b_db)
    try:
        assert a.try_acquire() is True
        assert b.try_acquire() is False
        _kill_lock_connection(a, pg_url)
        assert b.try_acquire() is True  # the lock went with A's connection
        assert a.try_acquire() is False, "two scheduler leaders at once"
        assert not a.held
        b.release()
        assert a.try_acquire() is True  # A takes over again like any replica
        a.release()
    finally:
        a_db.dispose()
        b_db.dispose()


def test_a_leader_whose_connection_died_takes_the_lock_again(pg_url: str) -> None:
    db = Database(pg_url)
    lock = LeaderLock(db)
    try:
        assert lock.try_acquire()
        _kill_lock_connection(lock, pg_url)
        assert lock.try_acquire()  # nobody else took it: a new connection, a new lock
        other = LeaderLock(db)
        assert not other.try_acquire()
        lock.release()
    finally:
        db.dispose()


def test_release_after_the_connection_died_does_not_raise(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(pg_url)
    lock = LeaderLock(db)
    try:
        assert lock.try_acquire()
        _kill_lock_connection(lock, pg_url)
        lock.release()
        assert not lock.held
        assert any("already gone" in r.getMessage() for r in caplog.records)
    finally:
        db.dispose()


async def test_run_shuts_down_cleanly_after_pg_drops_the_leader_connection(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[LeaderLock] = []

    class Spy(LeaderLock):
        def __init__(self, db: Database) -> None:
            super().__init__(db)
            made.append(self)

    monkeypatch.setattr(service, "LeaderLock", Spy)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = Settings(_env_file=None, DATABASE_URL=pg_url, RAPPORT_HTTP_PORT=port)  # type: ignore[call-arg]
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.serve(settings, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 30)
    leader = made[0]
    assert await asyncio.to_thread(leader.try_acquire)  # what the SLA job does
    _kill_lock_connection(leader, pg_url)
    stop.set()  # SIGTERM
    await asyncio.wait_for(task, 30)  # no exception
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the HTTP port is still bound"
