"""Schema migrations and SQLite under contention."""

from __future__ import annotations

import functools
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, inspect, select
from sqlmodel import Session, col

from storage import queries
from storage.db import Database
from storage.migrate import current, downgrade, upgrade
from storage.models import AuditLog, Community, Message

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _seed(db: Database) -> None:
    def work(s: Session) -> None:
        queries.upsert_community(s, "discord", "g1", "Guild", NOW)
        queries.apply_ingest_batch(
            s,
            [
                queries.NewMessageRow(
                    "discord",
                    "g1",
                    "c1",
                    f"m{i}",
                    None,
                    None,
                    "u1",
                    "Ann",
                    f"text {i}",
                    NOW,
                    0.1,
                    None,
                    None,
                )
                for i in range(25)
            ],
        )
        queries.audit(s, NOW, "M1", "claimed", None)

    db.call(work)


def _counts(db: Database) -> tuple[int, int, int]:
    def work(s: Session) -> tuple[int, int, int]:
        return (
            s.execute(select(func.count()).select_from(Message)).scalar_one(),
            s.execute(select(func.count()).select_from(Community)).scalar_one(),
            s.execute(select(func.count()).select_from(AuditLog)).scalar_one(),
        )

    return db.call(work)


def test_upgrade_downgrade_upgrade_keeps_rows(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade(db)
        assert current(db) == "0006"
        _seed(db)
        before = _counts(db)
        downgrade(db, "0001")  # back through 0006 to 0002
        assert current(db) == "0001"
        indexes = {i["name"] for i in inspect(db.engine).get_indexes("messages")}
        assert "ix_messages_thread" in indexes and "ix_messages_reply" not in indexes
        assert "competitor_mentions" not in inspect(db.engine).get_table_names()
        cols = {c["name"] for c in inspect(db.engine).get_columns("communities")}
        assert "timezone" not in cols
        flag_indexes = {i["name"] for i in inspect(db.engine).get_indexes("flags")}
        assert "ix_flags_message" not in flag_indexes
        assert _counts(db) == before == (25, 1, 1)
        upgrade(db)
        assert current(db) == "0006"
        assert {"ix_flags_message", "ix_flags_author"} <= {
            i["name"] for i in inspect(db.engine).get_indexes("flags")
        }
        assert _counts(db) == before
        # Upgrading an up-to-date schema is a no-op (the bot does it on every start).
        upgrade(db)
        assert _counts(db) == before
    finally:
        db.dispose()


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/w.db")
    upgrade(db)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.dispose()


def test_locked_sqlite_waits_instead_of_failing(tmp_path: Path) -> None:
    """Another process holds the write lock; our write waits for it and then succeeds."""
    path = tmp_path / "locked.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES ('2026-01-01', 'x', 'y', '')"
    )
    started = threading.Event()
    result: dict[str, object] = {}

    def writer() -> None:
        started.set()
        try:
            db.call(lambda s: queries.audit(s, NOW, "M1", "claimed", None))
            result["ok"] = True
        except Exception as exc:  # the assertion below reports it
            result["error"] = exc

    t = threading.Thread(target=writer)
    t.start()
    started.wait(5)
    # Give the writer a chance to hit the lock, then release it.
    t.join(timeout=0.3)
    assert t.is_alive(), "the write should be waiting on the lock"
    other.execute("COMMIT")
    t.join(timeout=10)
    other.close()
    assert result == {"ok": True}
    assert _counts(db)[2] == 2
    db.dispose()


def test_many_concurrent_writers_never_see_database_is_locked(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/busy.db")
    upgrade(db)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        for i in range(40):
            try:
                # Read then write in one transaction: the pattern that deadlocks without
                # BEGIN IMMEDIATE.
                def work(s: Session, i: int = i) -> None:
                    s.execute(select(func.count()).select_from(AuditLog)).scalar_one()
                    queries.audit(s, NOW, f"w{n}", "claimed", i)

                db.call(work)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _counts(db)[2] == 8 * 40
    db.dispose()


def test_only_one_scheduler_leader(db_url: str) -> None:
    from storage.leader import LeaderLock

    a_db, b_db = Database(db_url), Database(db_url)
    a, b = LeaderLock(a_db), LeaderLock(b_db)
    try:
        assert a.try_acquire()
        if a_db.sqlite:
            return  # one process per SQLite file: always the leader
        assert not b.try_acquire()
        a.release()
        assert b.try_acquire()
        assert not a.try_acquire()
    finally:
        a.release()
        b.release()
        a_db.dispose()
        b_db.dispose()


def test_outbox_claims_skip_rows_held_by_another_replica(db_url: str) -> None:
    """PostgreSQL: two replicas claiming at once never get the same work."""
    db = Database(db_url)
    upgrade(db)
    try:

        def seed(s: Session) -> None:
            for i in range(20):
                queries.enqueue(s, "action", {"type": "UpdateFlagCard", "flag_id": i}, f"k{i}", NOW)

        db.call(seed)
        if db.sqlite:
            first = db.call(lambda s: queries.claim_due(s, NOW, 10))
            second = db.call(lambda s: queries.claim_due(s, NOW, 10))
        else:
            with db.session() as s1, db.session() as s2:
                first = queries.claim_due(s1, NOW, 10)  # holds its row locks, uncommitted
                second = queries.claim_due(s2, NOW, 10)
                s1.commit()
                s2.commit()
        ids1, ids2 = {o.id for o in first}, {o.id for o in second}
        assert len(ids1) == 10 and len(ids2) == 10 and not ids1 & ids2
    finally:
        db.dispose()


def test_pending_card_updates_are_found_per_flag_in_any_number(db_url: str) -> None:
    """The "is a card update already pending" check behind coalesced card updates: only
    pending rows count, flag 1 is not flag 10, and more flags than one query holds."""
    db = Database(db_url)
    upgrade(db)
    try:

        def seed(s: Session) -> None:
            for flag_id in range(1, 21):
                for version in (1, 2):
                    queries.enqueue(s, "action", {}, f"card-update:{flag_id}:{version}", NOW)
            queries.enqueue(s, "action", {}, "card:3", NOW)  # a first card, not an update

        db.call(seed)
        done = db.call(lambda s: queries.claim_due(s, NOW, 100))
        for item in done:
            key = item.dedupe_key
            flag_id = int(key.split(":")[1]) if key.startswith("card-update:") else 0
            if flag_id % 2 == 0:  # even flags: every update already ran
                db.call(functools.partial(queries.finish, item_id=item.id or 0, now=NOW, result={}))
            else:  # odd flags: put back as pending
                db.call(
                    functools.partial(
                        queries.retry_later, item_id=item.id or 0, due_at=NOW, error="slack down"
                    )
                )
        asked = [1, 2, 3, 10, 11, 12, 13, 15, 17, 19, 20, 99]
        pending = db.call(lambda s: queries.flags_with_pending_card_update(s, asked))
        assert pending == {1, 3, 11, 13, 15, 17, 19}
        assert db.call(lambda s: queries.flags_with_pending_card_update(s, [])) == set()
    finally:
        db.dispose()


def test_thread_look_ups_search_an_index_instead_of_scanning_the_community(
    tmp_path: Path,
) -> None:
    """Escalation and draft context look up a flagged message's thread and replies on
    every reply; with an OR over thread and reply they scanned every message of the
    community. Each look-up must be an index search (SQLite's query plan says so)."""
    from sqlalchemy import event

    db = Database(f"sqlite:///{tmp_path / 'plans.db'}")
    upgrade(db)
    plans: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def explain(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FROM messages" in statement:
            rows = conn.connection.cursor().execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans.extend(str(r[3]) for r in rows)

    try:
        db.call(lambda s: queries.thread_activity(s, "discord", "g", "m1", "t1", NOW))
        db.call(lambda s: queries.thread_activity(s, "discord", "g", "m1", None, NOW))
        db.call(lambda s: queries.thread_messages(s, "discord", "g", "c", "t1", "m1"))
        assert plans
        assert all(p.startswith(("SEARCH messages USING", "USE TEMP B-TREE")) for p in plans)
        assert any("ix_messages_reply" in p for p in plans)
        assert any("ix_messages_thread" in p for p in plans)
    finally:
        db.dispose()


def test_which_database_errors_are_worth_waiting_out() -> None:
    """A writer waits out an unavailable database but not work that is itself wrong."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    from storage.db import DatabaseBusy, is_transient

    busy = DatabaseBusy("locked")
    gone = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    dropped = OperationalError("SELECT 1", {}, Exception("eof"), connection_invalidated=True)
    schema = OperationalError("SELECT 1", {}, Exception("no such table: messages"))
    bad_row = IntegrityError("INSERT", {}, Exception("NOT NULL constraint failed"))
    assert is_transient(busy, sqlite=True) and is_transient(busy, sqlite=False)
    assert is_transient(gone, sqlite=False)  # PostgreSQL restarting, refusing, full
    assert is_transient(dropped, sqlite=True)
    assert not is_transient(schema, sqlite=True)
    assert not is_transient(bad_row, sqlite=True) and not is_transient(bad_row, sqlite=False)


def test_a_batch_of_new_messages_round_trips_on_each_database(db_url: str) -> None:
    """The per-dialect insert (SQLite executemany, PostgreSQL unnest arrays) stores every
    field as given, NULLs included, and reports only the rows it added: a copy within
    the batch and a row already stored are not news."""
    db = Database(db_url)
    upgrade(db)
    later = datetime(2026, 1, 5, 9, 30, 15, 123456, tzinfo=UTC)

    def row(mid: str, **kw: object) -> queries.NewMessageRow:
        base: dict[str, object] = {
            "platform": "slack",
            "community_id": "T1",
            "channel_id": "C1",
            "message_id": mid,
            "thread_id": None,
            "reply_to": None,
            "author_id": "U1",
            "author_name": "Ann",
            "text": "",
            "created_at": NOW,
            "score": None,
            "reason": None,
            "severity": None,
        }
        base.update(kw)
        return queries.NewMessageRow(**base)  # type: ignore[arg-type]

    try:
        first = db.call(lambda s: queries.apply_ingest_batch(s, [row("1.0", text="old")]))
        assert [r.message_id for r in first] == ["1.0"]
        batch = [
            row("1.0", text="redelivered"),  # already stored
            row(
                "2.0",
                thread_id="1.0",
                reply_to="1.0",
                text="naïve “quotes” & émoji 😡",
                created_at=later,
                score=0.93,
                reason="billing_refund",
                severity="high",
                permalink="https://example.slack.com/archives/C1/p2",
            ),
            row("3.0"),  # every optional field NULL
            row("3.0"),  # twice in one batch
        ]
        added = db.call(lambda s: queries.apply_ingest_batch(s, batch))
        assert [id(r) for r in added] == [id(batch[1]), id(batch[2])]  # 3.0: the first copy
        stored = db.call(lambda s: {m.message_id: m for m in s.scalars(select(Message)).all()})
        assert sorted(stored) == ["1.0", "2.0", "3.0"]
        assert stored["1.0"].text == "old"
        two = stored["2.0"]
        assert (two.thread_id, two.reply_to, two.text) == (
            "1.0",
            "1.0",
            "naïve “quotes” & émoji 😡",
        )
        assert two.created_at.replace(tzinfo=UTC) == later
        assert (two.score, two.reason, two.severity) == (0.93, "billing_refund", "high")
        assert two.permalink == "https://example.slack.com/archives/C1/p2"
        three = stored["3.0"]
        assert (three.thread_id, three.score, three.reason, three.permalink) == (None,) * 4
    finally:
        db.dispose()


def test_members_are_counted_and_their_times_kept_across_batches(db_url: str) -> None:
    from storage.models import Member

    db = Database(db_url)
    upgrade(db)
    t0 = datetime(2026, 1, 4, 23, 0, tzinfo=UTC)
    t1 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    t2 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    t3 = datetime(2026, 1, 6, 8, 0, tzinfo=UTC)

    def msg(mid: str, author: str, name: str, at: datetime) -> queries.NewMessageRow:
        return queries.NewMessageRow(
            "discord", "g1", "c1", mid, None, None, author, name, "hi", at, None, None, None
        )

    try:
        db.call(
            lambda s: queries.apply_ingest_batch(
                s, [msg("1", "u1", "Ann", t2), msg("2", "u1", "Ann", t1), msg("3", "u2", "Bo", t1)]
            )
        )
        # A later batch: a new name, a later message, and one older than any stored.
        db.call(
            lambda s: queries.apply_ingest_batch(
                s, [msg("4", "u1", "Ann B.", t3), msg("5", "u2", "Bo", t0), msg("1", "u1", "x", t3)]
            )
        )
        members = db.call(
            lambda s: {
                m.external_id: (
                    m.display_name,
                    m.first_seen.replace(tzinfo=UTC),
                    m.last_seen.replace(tzinfo=UTC),
                    m.message_count,
                )
                for m in s.scalars(select(Member)).all()
            }
        )
        # Message 1 arrived twice: counted once, and its copy changes nothing; a
        # backfilled message older than any stored moves "first seen" back.
        assert members == {"u1": ("Ann B.", t1, t3, 3), "u2": ("Bo", t0, t1, 2)}
    finally:
        db.dispose()


def test_ingested_times_sort_and_compare_like_orm_written_ones(db_url: str) -> None:
    """Message rows go in through the driver, other rows through the ORM: the same
    instant must be stored the same way, or time windows in SQL would miss rows."""
    from datetime import timedelta, timezone

    db = Database(db_url)
    upgrade(db)
    plus2 = timezone(timedelta(hours=2))
    times = {
        "utc-micro": datetime(2026, 1, 5, 9, 0, 0, 500000, tzinfo=UTC),
        "utc-whole": datetime(2026, 1, 5, 9, 0, 1, tzinfo=UTC),
        "plus2": datetime(2026, 1, 5, 11, 0, 0, 250000, tzinfo=plus2),  # 09:00:00.25 UTC
    }
    rows = [
        queries.NewMessageRow(
            "discord", "g", "c", k, None, None, "u", "Ann", "t", at, None, None, None
        )
        for k, at in times.items()
    ]
    try:
        db.call(lambda s: queries.apply_ingest_batch(s, rows))
        with Session(db.engine) as s:
            for k, at in times.items():
                s.add(
                    Message(
                        platform="orm",
                        community_id="g",
                        channel_id="c",
                        message_id=k,
                        author_id="u",
                        author_name="Ann",
                        text="t",
                        created_at=at,
                    )
                )
            s.commit()

        def window(platform: str, since: datetime) -> list[str]:
            return db.call(
                lambda s: list(
                    s.scalars(
                        select(col(Message.message_id))
                        .where(col(Message.platform) == platform, col(Message.created_at) >= since)
                        .order_by(col(Message.created_at))
                    )
                )
            )

        quarter = datetime(2026, 1, 5, 9, 0, 0, 250000, tzinfo=UTC)
        expected = ["plus2", "utc-micro", "utc-whole"]
        assert window("discord", quarter) == window("orm", quarter) == expected
        # A window starting on a whole second includes the message sent on it.
        whole = times["utc-whole"]
        assert window("discord", whole) == window("orm", whole) == ["utc-whole"]
        if db.sqlite:
            with sqlite3.connect(db_url.removeprefix("sqlite:///")) as raw:
                stored = dict(
                    raw.execute("SELECT platform || message_id, created_at FROM messages")
                )
            for k in times:
                assert stored["discord" + k] == stored["orm" + k]
    finally:
        db.dispose()


def test_migration_0005_rewrites_driver_written_times(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        upgrade(db, "0004")
        old_forms = {
            "whole": "2026-01-05 09:00:01+00:00",
            "micro": "2026-01-05 09:00:00.500000+00:00",
            "orm": "2026-01-05 09:00:02.000000",
        }
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as raw:
            raw.executemany(
                "INSERT INTO messages (platform, community_id, channel_id, message_id,"
                " author_id, author_name, text, created_at) VALUES"
                " ('discord', 'g', 'c', ?, 'u', 'Ann', 't', ?)",
                list(old_forms.items()),
            )
        upgrade(db)
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as raw:
            now = dict(raw.execute("SELECT message_id, created_at FROM messages"))
        assert now == {
            "whole": "2026-01-05 09:00:01.000000",
            "micro": "2026-01-05 09:00:00.500000",
            "orm": "2026-01-05 09:00:02.000000",
        }
        whole = datetime(2026, 1, 5, 9, 0, 1, tzinfo=UTC)
        later = db.call(
            lambda s: set(
                s.scalars(select(col(Message.message_id)).where(col(Message.created_at) >= whole))
            )
        )
        assert later == {"whole", "orm"}
    finally:
        db.dispose()
