"""Admin settings stored by two replicas at once (PostgreSQL, real concurrent sessions)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from storage import queries
from storage.db import Database
from storage.migrate import upgrade
from tests.conftest import _pg_database

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_database()


def test_two_admins_changing_two_settings_at_once_both_keep_theirs(pg_url: str) -> None:
    """Admin A sets the sensitivity while admin B, on another replica, sets the
    competitors: B's write must merge into A's, not overwrite it with what it read."""
    db = Database(pg_url)
    try:
        upgrade(db)
        db.call(lambda s: queries.upsert_community(s, "discord", "g1", "Guild", NOW))
        a_wrote, b_done = threading.Event(), threading.Event()

        def admin_b() -> None:
            a_wrote.wait(10)
            with db.session() as s:  # waits for A's lock, then reads what A committed
                queries.set_community_setting(s, "discord", "g1", "competitors", ["Globex"], NOW)
                s.commit()
            b_done.set()

        b = threading.Thread(target=admin_b)
        b.start()
        with db.session() as s:
            queries.set_community_setting(s, "discord", "g1", "sensitivity", 0.3, NOW)
            a_wrote.set()
            # Give B the chance to read and write before A commits (what lost A's
            # change); with the row locked, B waits for A instead and this times out.
            b_done.wait(1.0)
            s.commit()
        b.join(10)
        got = {c: st for _, c, st in db.call(queries.community_settings)}
        assert got["g1"] == {"sensitivity": 0.3, "competitors": ["Globex"]}
    finally:
        db.dispose()
