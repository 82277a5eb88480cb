"""Replicas starting together on an empty PostgreSQL database take turns migrating."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from storage.db import Database
from storage.migrate import MIGRATION_LOCK_KEY, current
from tests.conftest import _pg_database

pytestmark = pytest.mark.postgres

CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SLACK_", "LLM_"))}


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_database()


def _waiting(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND objid::bigint = %s",
        (MIGRATION_LOCK_KEY,),
    ).fetchone()
    return int(str(row[0])) if row else 0


def test_concurrent_upgrades_wait_for_each_other(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url, autocommit=True) as holder:
        # Hold the migration lock as a replica mid-upgrade would; three more start.
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bot", "db", "upgrade"],
                env={**CLEAN, "DATABASE_URL": pg_url},
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        try:
            deadline = time.monotonic() + 60
            while _waiting(holder) < len(procs):
                assert all(p.poll() is None for p in procs), "an upgrade did not wait its turn"
                assert time.monotonic() < deadline, "the upgrades never queued on the lock"
                with pytest.raises(subprocess.TimeoutExpired):
                    procs[0].wait(timeout=0.05)  # bounded wait on the subprocess, no sleep
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            outputs = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "schema at 0006" in out
    db = Database(pg_url)
    try:
        assert current(db) == "0006"
    finally:
        db.dispose()
