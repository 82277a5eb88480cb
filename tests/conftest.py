"""Shared fixtures: every storage-backed test runs on a SQLite file and a real PostgreSQL.

``make test`` starts a throwaway PostgreSQL server (scripts/with-postgres.sh) and exports
``RAPPORT_TEST_PG_URL``. Without it the PostgreSQL cases fail with a message saying so;
a developer can leave them out locally with ``-m "not postgres"``; CI never does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ENV = "RAPPORT_TEST_PG_URL"


def _pg_database() -> Iterator[str]:
    admin = os.environ.get(PG_ENV)
    if not admin:
        raise RuntimeError(
            f"{PG_ENV} is not set: run the suite with `make test` (which starts PostgreSQL) "
            "or deselect these cases with -m 'not postgres'"
        )
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, then a real PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/rapport.db"
    else:
        yield from _pg_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/rapport.db"
