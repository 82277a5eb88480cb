"""Queries. Every function takes the session it works in; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col

from storage.models import (
    AuditLog,
    Channel,
    Community,
    CompetitorMention,
    Feedback,
    Flag,
    Member,
    Message,
    Outbox,
    Reaction,
)
from storage.records import record


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


def _insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (both SQLite and PostgreSQL do)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# -- ingestion ---------------------------------------------------------------------------


@record
class NewMessageRow:
    platform: str
    community_id: str
    channel_id: str
    message_id: str
    thread_id: str | None
    reply_to: str | None
    author_id: str
    author_name: str
    text: str
    created_at: datetime
    score: float | None
    reason: str | None
    severity: str | None
    permalink: str | None = None
    mentions: tuple[tuple[str, str, float], ...] = ()  # (competitor, sentiment, score)


@record
class EditRow:
    """A member's edit: the message as it reads now (stored whole if it was never seen,
    e.g. an edit racing the backfill that would fetch it) and when it was edited."""

    row: NewMessageRow
    edited_at: datetime


@record
class DeleteRow:
    platform: str
    community_id: str
    channel_id: str
    message_id: str
    deleted_at: datetime


@record
class ReactionRow:
    platform: str
    community_id: str
    channel_id: str
    message_id: str
    member_id: str
    emoji: str
    added: bool
    at: datetime


IngestOp = NewMessageRow | EditRow | DeleteRow | ReactionRow

_MESSAGE_KEY = ["platform", "community_id", "channel_id", "message_id"]


MessageKey = tuple[str, str, str, str]


def message_key(op: NewMessageRow) -> MessageKey:
    return (op.platform, op.community_id, op.channel_id, op.message_id)


def apply_ingest_batch(session: Session, ops: Sequence[IngestOp]) -> list[NewMessageRow]:
    """Apply ingestion operations in order, grouping runs of new messages into one INSERT.

    Inserts are ``ON CONFLICT DO NOTHING`` on the message key, so the same message
    arriving twice (a retry, a backfill, two concurrent writers) is one row. Returns the
    new-message rows this call stored, in order (of two copies in a batch, the first):
    a redelivery is not news, and must not be judged or counted again.
    """
    stored: list[NewMessageRow] = []
    run: list[NewMessageRow] = []
    for op in ops:
        if isinstance(op, NewMessageRow):
            run.append(op)
            continue
        if run:
            stored += _insert_messages(session, run)
            run = []
        if isinstance(op, EditRow):
            _apply_edit(session, op)
        elif isinstance(op, DeleteRow):
            _apply_delete(session, op)
        else:
            _apply_reaction(session, op)
    if run:
        stored += _insert_messages(session, run)
    return stored


_MESSAGE_COLUMNS = (
    "platform",
    "community_id",
    "channel_id",
    "message_id",
    "thread_id",
    "reply_to",
    "author_id",
    "author_name",
    "text",
    "created_at",
    "score",
    "reason",
    "severity",
    "permalink",
)


def _message_values(r: NewMessageRow, created_at: Any) -> tuple[Any, ...]:
    return (
        r.platform,
        r.community_id,
        r.channel_id,
        r.message_id,
        r.thread_id,
        r.reply_to,
        r.author_id,
        r.author_name,
        r.text,
        created_at,
        r.score,
        r.reason,
        r.severity,
        r.permalink,
    )


def _insert_messages(session: Session, rows: list[NewMessageRow]) -> list[NewMessageRow]:
    if session.get_bind().dialect.name == "sqlite":
        fresh = _insert_messages_sqlite(session, rows)
    else:
        fresh = _insert_messages_returning(session, rows)
    if fresh:
        _touch_members(session, fresh)
        _add_mentions(session, fresh)
    return fresh


_PG_ARRAY_TYPES = {"text": "text[]", "created_at": "timestamp[]", "score": "float8[]"}
_PG_INSERT_MESSAGES = (
    f"INSERT INTO messages ({', '.join(_MESSAGE_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"%({c})s::{_PG_ARRAY_TYPES.get(c, 'varchar[]')}" for c in _MESSAGE_COLUMNS)
    + ") ON CONFLICT (platform, community_id, channel_id, message_id) DO NOTHING"
    " RETURNING platform, community_id, channel_id, message_id"
)


def _insert_messages_returning(session: Session, rows: list[NewMessageRow]) -> list[NewMessageRow]:
    """``INSERT … SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING RETURNING``: exact even
    with concurrent writers.

    One array per column, so the statement text is the same whatever the batch size: a
    multi-row ``VALUES`` list (SQLAlchemy's ``insertmanyvalues``) made a new statement of
    14,000 parameters for each batch, and parsing it cost the client 75 µs per row.
    """
    to_datetime = _stored_datetime(session)
    columns: dict[str, list[Any]] = {c: [] for c in _MESSAGE_COLUMNS}
    lists = list(columns.values())
    for r in rows:
        values = _message_values(r, to_datetime(r.created_at))
        for column, value in zip(lists, values, strict=True):
            column.append(value)
    returned = session.connection().exec_driver_sql(_PG_INSERT_MESSAGES, columns).all()
    inserted = {(str(p), str(c), str(ch), str(m)) for p, c, ch, m in returned}
    fresh: list[NewMessageRow] = []
    for r in rows:  # a batch may hold the same message twice: the first copy is the one
        key = message_key(r)
        if key in inserted:
            inserted.discard(key)
            fresh.append(r)
    return fresh


_SQLITE_INSERT_MESSAGES = (
    f"INSERT INTO messages ({', '.join(_MESSAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_MESSAGE_COLUMNS))}) ON CONFLICT DO NOTHING"
)
_SQLITE_ID_CHUNK = 500
_SQLITE_EXISTING_IDS = (
    "SELECT message_id FROM messages WHERE platform = ? AND community_id = ? "
    "AND channel_id = ? AND message_id IN ({})"
)


def _insert_messages_sqlite(session: Session, rows: list[NewMessageRow]) -> list[NewMessageRow]:
    """Look up which keys exist, then one driver-level executemany for the rest.

    A SQLite transaction here began with ``BEGIN IMMEDIATE`` (see :mod:`storage.db`), so
    no other writer can add a row between the lookup and the insert. Both statements go
    straight to the driver: this runs for every message, and SQLAlchemy's statement
    layer (compiling an ``IN`` of hundreds of parameters, processing each bind) cost
    more than SQLite's own work.
    """
    conn = session.connection()
    by_channel: dict[tuple[str, str, str], list[str]] = {}
    for r in rows:
        by_channel.setdefault((r.platform, r.community_id, r.channel_id), []).append(r.message_id)
    seen: set[MessageKey] = set()
    for (platform, community_id, channel_id), ids in by_channel.items():
        for start in range(0, len(ids), _SQLITE_ID_CHUNK):
            chunk = ids[start : start + _SQLITE_ID_CHUNK]
            found = conn.exec_driver_sql(
                _SQLITE_EXISTING_IDS.format(", ".join("?" * len(chunk))),
                (platform, community_id, channel_id, *chunk),
            )
            for (mid,) in found:
                seen.add((platform, community_id, channel_id, str(mid)))
    stamp = _stored_datetime(session)
    fresh: list[NewMessageRow] = []
    values = []
    for r in rows:
        key = (r.platform, r.community_id, r.channel_id, r.message_id)
        if key in seen:
            continue
        seen.add(key)
        fresh.append(r)
        values.append(_message_values(r, stamp(r.created_at)))
    if values:
        conn.exec_driver_sql(_SQLITE_INSERT_MESSAGES, values)
    return fresh


def _stored_datetime(session: Session) -> Callable[[Any], Any]:
    """What a datetime column is given in this database, for statements sent to the
    driver directly, so rows read back (and compare in SQL) as ORM-written ones do."""
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":
        return _sqlite_stamp
    process = _table(Message).c.created_at.type.bind_processor(dialect)
    return process if process is not None else (lambda v: v)


def _sqlite_stamp(value: datetime) -> str:
    """The text the ORM stores on SQLite for an aware datetime: UTC, no offset, always
    microseconds. Rows of every kind then compare and sort alike in SQL (migration 0005
    fixed the ``+00:00`` text an earlier version of this path wrote)."""
    if value.utcoffset() is None:
        raise ValueError("datetime values must have timezone information")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _add_mentions(session: Session, rows: Iterable[NewMessageRow]) -> None:
    values = [
        {
            "platform": r.platform,
            "community_id": r.community_id,
            "channel_id": r.channel_id,
            "message_id": r.message_id,
            "competitor": name,
            "sentiment": sentiment,
            "score": score,
            "at": r.created_at,
        }
        for r in rows
        for name, sentiment, score in r.mentions
    ]
    if values:
        stmt = _insert(session, _table(CompetitorMention)).on_conflict_do_nothing(
            index_elements=["platform", "community_id", "channel_id", "message_id", "competitor"]
        )
        session.execute(stmt, values)


def _touch_members(session: Session, rows: Iterable[NewMessageRow]) -> None:
    seen: dict[tuple[str, str, str], list[Any]] = {}
    for r in rows:
        key = (r.platform, r.community_id, r.author_id)
        entry = seen.get(key)
        at = r.created_at
        if entry is None:
            seen[key] = [r.author_name, at, at, 1]
        else:
            entry[0] = r.author_name or entry[0]
            if at < entry[1]:
                entry[1] = at
            elif at > entry[2]:
                entry[2] = at
            entry[3] += 1
    ordered = sorted(seen.items())  # a fixed order of row locks between writers
    stamp = _stored_datetime(session)  # the same column type as last_seen
    if session.get_bind().dialect.name == "postgresql":
        # Arrays, as for messages: a VALUES list of one row per author is a new statement
        # for psycopg to parse in every batch (10 µs a message with many authors).
        arrays: dict[str, list[Any]] = {c: [] for c in _MEMBER_COLUMNS}
        for (p, c, a), (name, first, last, n) in ordered:
            for column, value in zip(
                arrays.values(), (p, c, a, name, stamp(first), stamp(last), n), strict=True
            ):
                column.append(value)
        session.connection().exec_driver_sql(_PG_UPSERT_MEMBERS, arrays)
        return
    # SQLite: straight to the driver, as for messages (SQLAlchemy's per-row bind
    # processing cost more than SQLite's own upsert).
    members = [
        (p, c, a, name, stamp(first), stamp(last), n)
        for (p, c, a), (name, first, last, n) in ordered
    ]
    session.connection().exec_driver_sql(_SQLITE_UPSERT_MEMBERS, members)


_MEMBER_COLUMNS = (
    "platform",
    "community_id",
    "external_id",
    "display_name",
    "first_seen",
    "last_seen",
    "message_count",
)
_PG_UPSERT_MEMBERS = (
    "INSERT INTO members (platform, community_id, external_id, display_name, first_seen,"
    " last_seen, message_count, opted_out) SELECT p, c, e, d, f, l, n, false FROM unnest("
    "%(platform)s::varchar[], %(community_id)s::varchar[], %(external_id)s::varchar[],"
    " %(display_name)s::varchar[], %(first_seen)s::timestamp[], %(last_seen)s::timestamp[],"
    " %(message_count)s::int[]) AS t(p, c, e, d, f, l, n)"
    " ON CONFLICT (platform, community_id, external_id) DO UPDATE SET"
    " display_name = excluded.display_name,"
    " first_seen = least(members.first_seen, excluded.first_seen),"
    " last_seen = greatest(members.last_seen, excluded.last_seen),"
    " message_count = members.message_count + excluded.message_count"
)


_SQLITE_UPSERT_MEMBERS = (
    "INSERT INTO members (platform, community_id, external_id, display_name, first_seen,"
    " last_seen, message_count, opted_out) VALUES (?, ?, ?, ?, ?, ?, ?, 0)"
    " ON CONFLICT (platform, community_id, external_id) DO UPDATE SET"
    " display_name = excluded.display_name,"
    " first_seen = min(members.first_seen, excluded.first_seen),"
    " last_seen = max(members.last_seen, excluded.last_seen),"
    " message_count = members.message_count + excluded.message_count"
)


def _flag_where(platform: str, community_id: str, channel_id: str, message_id: str) -> Any:
    """The flag raised on a message (if any), by the message's key."""
    return and_(
        col(Flag.platform) == platform,
        col(Flag.community_id) == community_id,
        col(Flag.channel_id) == channel_id,
        col(Flag.message_id) == message_id,
    )


def _message_where(platform: str, community_id: str, channel_id: str, message_id: str) -> Any:
    return and_(
        col(Message.platform) == platform,
        col(Message.community_id) == community_id,
        col(Message.channel_id) == channel_id,
        col(Message.message_id) == message_id,
    )


def _apply_edit(session: Session, op: EditRow) -> None:
    r = op.row
    where = _message_where(r.platform, r.community_id, r.channel_id, r.message_id)
    result = session.execute(
        update(Message)
        .where(where, col(Message.deleted_at).is_(None))
        .values(
            text=r.text,
            edited_at=op.edited_at,
            score=r.score,
            reason=r.reason,
            severity=r.severity,
        )
    )
    if getattr(result, "rowcount", 0):
        # A flag quotes what the member says now; the core refreshes its card.
        session.execute(
            update(Flag)
            .where(_flag_where(r.platform, r.community_id, r.channel_id, r.message_id))
            .values(quoted_text=r.text)
        )
        # Competitor mentions follow the text: the edit may add or remove a name.
        session.execute(
            delete(CompetitorMention).where(
                col(CompetitorMention.platform) == r.platform,
                col(CompetitorMention.community_id) == r.community_id,
                col(CompetitorMention.channel_id) == r.channel_id,
                col(CompetitorMention.message_id) == r.message_id,
            )
        )
        _add_mentions(session, [r])
        return
    # An edit of a message never seen: store it whole (thread, member, mentions), so
    # the create that may still arrive finds it already there, judged as it now reads.
    if _insert_messages(session, [r]):
        session.execute(update(Message).where(where).values(edited_at=op.edited_at))


def _apply_delete(session: Session, op: DeleteRow) -> None:
    """Erase the text and everything derived from it (the flag's quote and draft, the
    managers' feedback on it, competitor mentions); keep id and time."""
    channel_id = op.channel_id
    where = _message_where(op.platform, op.community_id, channel_id, op.message_id)
    result = session.execute(update(Message).where(where).values(text="", deleted_at=op.deleted_at))
    if not getattr(result, "rowcount", 0):
        # Discord names only the thread when it no longer has an archived thread in its
        # cache, while the message is stored under the thread's parent channel.
        parent = session.execute(
            select(col(Message.channel_id)).where(
                col(Message.platform) == op.platform,
                col(Message.community_id) == op.community_id,
                col(Message.thread_id) == op.channel_id,
                col(Message.message_id) == op.message_id,
            )
        ).scalar()
        if parent is not None:
            channel_id = str(parent)
            where = _message_where(op.platform, op.community_id, channel_id, op.message_id)
            session.execute(update(Message).where(where).values(text="", deleted_at=op.deleted_at))
    if channel_id == op.channel_id and not getattr(result, "rowcount", 0):
        # A delete for a message we never saw: a tombstone, so a late create stays erased.
        stmt = _insert(session, Message).on_conflict_do_nothing(index_elements=_MESSAGE_KEY)
        session.execute(
            stmt,
            [
                {
                    "platform": op.platform,
                    "community_id": op.community_id,
                    "channel_id": op.channel_id,
                    "message_id": op.message_id,
                    "author_id": "",
                    "author_name": "",
                    "text": "",
                    "created_at": op.deleted_at,
                    "deleted_at": op.deleted_at,
                }
            ],
        )
    flag_where = _flag_where(op.platform, op.community_id, channel_id, op.message_id)
    session.execute(
        delete(Feedback).where(col(Feedback.flag_id).in_(select(col(Flag.id)).where(flag_where)))
    )
    session.execute(
        update(Flag).where(flag_where).values(quoted_text="", draft="", draft_warnings=[])
    )
    session.execute(
        delete(CompetitorMention).where(
            col(CompetitorMention.platform) == op.platform,
            col(CompetitorMention.community_id) == op.community_id,
            col(CompetitorMention.channel_id) == channel_id,
            col(CompetitorMention.message_id) == op.message_id,
        )
    )


def _apply_reaction(session: Session, op: ReactionRow) -> None:
    if op.added:
        stmt = _insert(session, Reaction).on_conflict_do_nothing(
            index_elements=["platform", "community_id", "message_id", "member_id", "emoji"]
        )
        session.execute(
            stmt,
            [
                {
                    "platform": op.platform,
                    "community_id": op.community_id,
                    "channel_id": op.channel_id,
                    "message_id": op.message_id,
                    "member_id": op.member_id,
                    "emoji": op.emoji,
                    "at": op.at,
                }
            ],
        )
    else:
        session.execute(
            _table(Reaction)
            .delete()
            .where(
                _table(Reaction).c.platform == op.platform,
                _table(Reaction).c.community_id == op.community_id,
                _table(Reaction).c.message_id == op.message_id,
                _table(Reaction).c.member_id == op.member_id,
                _table(Reaction).c.emoji == op.emoji,
            )
        )


def get_message(
    session: Session, platform: str, community_id: str, channel_id: str, message_id: str
) -> Message | None:
    return session.scalars(
        select(Message).where(_message_where(platform, community_id, channel_id, message_id))
    ).first()


def flag_ids_for_message(
    session: Session, platform: str, community_id: str, channel_id: str, message_id: str
) -> list[int]:
    """The flag raised on a message, found by the channel or thread a delete or edit
    names (an uncached Discord thread is named instead of its parent channel)."""
    rows = session.execute(
        select(col(Flag.id)).where(
            col(Flag.platform) == platform,
            col(Flag.community_id) == community_id,
            col(Flag.message_id) == message_id,
            or_(col(Flag.channel_id) == channel_id, col(Flag.thread_id) == channel_id),
        )
    ).all()
    return [int(r[0]) for r in rows]


def clear_complaint(
    session: Session,
    platform: str,
    community_id: str,
    channel_id: str,
    message_id: str,
    reviewed_text: str,
) -> None:
    """The second opinion overruled the detector: the message is not a complaint, as
    long as it still reads as it did when reviewed (an edit since has its own verdict)."""
    session.execute(
        update(Message)
        .where(
            _message_where(platform, community_id, channel_id, message_id),
            col(Message.text) == reviewed_text,
        )
        .values(reason=None, severity=None)
    )


def edit_context(
    session: Session, platform: str, community_id: str, channel_id: str, message_id: str
) -> tuple[list[int], bool]:
    """Before an edit is applied: the message's flags, and whether it was stored as a
    complaint (then it was followed up already, even if its flag is another's)."""
    reason = session.execute(
        select(col(Message.reason)).where(
            _message_where(platform, community_id, channel_id, message_id)
        )
    ).scalar()
    flags = flag_ids_for_message(session, platform, community_id, channel_id, message_id)
    return flags, reason is not None


def flag_ids_by_author(
    session: Session, platform: str, community_id: str, author_id: str
) -> list[int]:
    rows = session.execute(
        select(col(Flag.id)).where(
            col(Flag.platform) == platform,
            col(Flag.community_id) == community_id,
            col(Flag.author_id) == author_id,
        )
    ).all()
    return [int(r[0]) for r in rows]


def find_message(
    session: Session, platform: str, community_id: str, message_id: str
) -> Message | None:
    """A message by its platform id when the channel is not known (reactions on Slack)."""
    return session.scalars(
        select(Message).where(
            col(Message.platform) == platform,
            col(Message.community_id) == community_id,
            col(Message.message_id) == message_id,
        )
    ).first()


def last_message_id(
    session: Session,
    platform: str,
    community_id: str,
    channel_id: str,
    before: datetime | None = None,
) -> str | None:
    """The newest stored message in a channel (by creation time, created before
    ``before`` if given), for backfill after a gap."""
    query = select(col(Message.message_id)).where(
        col(Message.platform) == platform,
        col(Message.community_id) == community_id,
        col(Message.channel_id) == channel_id,
        col(Message.deleted_at).is_(None),
    )
    if before is not None:
        query = query.where(col(Message.created_at) < before)
    row = session.execute(
        query.order_by(col(Message.created_at).desc(), col(Message.id).desc()).limit(1)
    ).first()
    return str(row[0]) if row is not None else None


def recent_message_ids(
    session: Session, platform: str, community_id: str, channel_id: str, since: datetime
) -> set[str]:
    """Top-level messages of a channel stored since ``since`` and not deleted."""
    rows = session.execute(
        select(col(Message.message_id)).where(
            col(Message.platform) == platform,
            col(Message.community_id) == community_id,
            col(Message.channel_id) == channel_id,
            col(Message.thread_id).is_(None),
            col(Message.deleted_at).is_(None),
            col(Message.created_at) >= since,
        )
    ).all()
    return {str(r[0]) for r in rows}


def recent_threads(
    session: Session,
    platform: str,
    community_id: str,
    channel_id: str,
    since: datetime,
    limit: int,
) -> list[tuple[str, datetime]]:
    """Threads with replies stored since ``since``: ``(thread id, newest reply time)``,
    most recently active first."""
    newest = func.max(col(Message.created_at))
    rows = session.execute(
        select(col(Message.thread_id), newest)
        .where(
            col(Message.platform) == platform,
            col(Message.community_id) == community_id,
            col(Message.channel_id) == channel_id,
            col(Message.thread_id).is_not(None),
            col(Message.created_at) >= since,
        )
        .group_by(col(Message.thread_id))
        .order_by(newest.desc())
        .limit(limit)
    ).all()
    return [(str(thread), at) for thread, at in rows]


def channels_with_messages(session: Session, platform: str) -> list[tuple[str, str]]:
    rows = session.execute(
        select(col(Message.community_id), col(Message.channel_id))
        .where(col(Message.platform) == platform)
        .distinct()
    ).all()
    return [(str(c), str(ch)) for c, ch in rows]


def thread_messages(
    session: Session,
    platform: str,
    community_id: str,
    channel_id: str,
    thread_id: str | None,
    around_message_id: str,
    limit: int = 6,
) -> list[Message]:
    """A few messages of the flagged message's thread (or channel), oldest first."""
    common = (
        col(Message.platform) == platform,
        col(Message.community_id) == community_id,
        col(Message.deleted_at).is_(None),
    )

    def newest(where: Any) -> list[Message]:
        query = select(Message).where(*common, where)
        return list(
            session.scalars(query.order_by(col(Message.created_at).desc()).limit(limit + 1))
        )

    if not thread_id:
        rows = newest(col(Message.channel_id) == channel_id)
    else:
        # The thread's messages, and the message that started it: two index searches
        # (an OR of the two would scan the community's messages).
        starter = and_(col(Message.channel_id) == channel_id, col(Message.message_id) == thread_id)
        rows = newest(col(Message.thread_id) == thread_id) + newest(starter)
        rows = sorted(rows, key=lambda m: m.created_at, reverse=True)[: limit + 1]
    return [m for m in reversed(rows) if m.message_id != around_message_id][-limit:]


# -- communities, channels, members --------------------------------------------------------


def upsert_community(
    session: Session, platform: str, external_id: str, name: str, now: datetime
) -> Community:
    existing = session.scalars(
        select(Community).where(
            col(Community.platform) == platform, col(Community.external_id) == external_id
        )
    ).first()
    if existing is not None:
        community = existing
        if name and community.name != name:
            community.name = name
            session.add(community)
        return community
    stmt = _insert(session, Community).on_conflict_do_nothing(
        index_elements=["platform", "external_id"]
    )
    session.execute(
        stmt,
        [
            {
                "platform": platform,
                "external_id": external_id,
                "name": name,
                "settings": {},
                "created_at": now,
            }
        ],
    )
    got = session.scalars(
        select(Community).where(
            col(Community.platform) == platform, col(Community.external_id) == external_id
        )
    ).first()
    assert got is not None
    return got


def community_settings(session: Session) -> list[tuple[str, str, dict[str, object]]]:
    """Communities an admin configured: ``(platform, community, settings)``.

    Keys: ``competitors`` (list of names), ``sensitivity`` (float threshold).
    """
    return [
        (c.platform, c.external_id, dict(c.settings))
        for c in session.scalars(select(Community))
        if c.settings
    ]


def set_community_setting(
    session: Session, platform: str, community_id: str, key: str, value: object, now: datetime
) -> None:
    """Set one admin setting of a community; ``None`` removes it (back to the default).

    The row is read locked (PostgreSQL), so two admins changing two settings at once
    both keep theirs: the second waits and merges into what the first wrote.
    """
    upsert_community(session, platform, community_id, "", now)
    community = session.scalars(
        select(Community)
        .where(col(Community.platform) == platform, col(Community.external_id) == community_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    settings = {k: v for k, v in community.settings.items() if k != key}
    if value is not None:
        settings[key] = value
    community.settings = settings  # a new dict: the JSON column sees the change
    session.add(community)


def competitor_mention_counts(
    session: Session, platform: str, community_id: str, since: datetime
) -> list[tuple[str, str, int]]:
    """``(competitor, sentiment, mentions)`` in a community since ``since``."""
    rows = session.execute(
        select(col(CompetitorMention.competitor), col(CompetitorMention.sentiment), func.count())
        .where(
            col(CompetitorMention.platform) == platform,
            col(CompetitorMention.community_id) == community_id,
            col(CompetitorMention.at) >= since,
        )
        .group_by(col(CompetitorMention.competitor), col(CompetitorMention.sentiment))
    ).all()
    return [(str(name), str(sentiment), int(n)) for name, sentiment, n in rows]


def upsert_channels(
    session: Session, platform: str, community_id: str, channels: Iterable[tuple[str, str, bool]]
) -> None:
    values = [
        {
            "platform": platform,
            "community_id": community_id,
            "external_id": cid,
            "name": name,
            "watched": True,
            "is_thread": is_thread,
        }
        for cid, name, is_thread in channels
    ]
    if not values:
        return
    ins = _insert(session, Channel)
    session.execute(
        ins.on_conflict_do_update(
            index_elements=["platform", "community_id", "external_id"],
            set_={"name": ins.excluded.name},
        ),
        values,
    )


def unwatched_channels(session: Session) -> set[tuple[str, str, str]]:
    rows = session.execute(
        select(col(Channel.platform), col(Channel.community_id), col(Channel.external_id)).where(
            col(Channel.watched).is_(False)
        )
    ).all()
    return {(str(p), str(c), str(e)) for p, c, e in rows}


def set_channel_watched(
    session: Session, platform: str, community_id: str, channel_id: str, watched: bool
) -> None:
    ins = _insert(session, Channel)
    session.execute(
        ins.on_conflict_do_update(
            index_elements=["platform", "community_id", "external_id"],
            set_={"watched": watched},
        ),
        [
            {
                "platform": platform,
                "community_id": community_id,
                "external_id": channel_id,
                "name": "",
                "watched": watched,
                "is_thread": False,
            }
        ],
    )


def opted_out_members(session: Session) -> set[tuple[str, str, str]]:
    rows = session.execute(
        select(col(Member.platform), col(Member.community_id), col(Member.external_id)).where(
            col(Member.opted_out).is_(True)
        )
    ).all()
    return {(str(p), str(c), str(e)) for p, c, e in rows}


def set_opt_out(
    session: Session,
    platform: str,
    community_id: str,
    member_id: str,
    opted_out: bool,
    now: datetime,
) -> int:
    """Mark a member opted out (or back in); opting out erases what was stored of them."""
    ins = _insert(session, Member)
    session.execute(
        ins.on_conflict_do_update(
            index_elements=["platform", "community_id", "external_id"],
            set_={"opted_out": opted_out, "display_name": ""}
            if opted_out
            else {"opted_out": opted_out},
        ),
        [
            {
                "platform": platform,
                "community_id": community_id,
                "external_id": member_id,
                "display_name": "",
                "first_seen": now,
                "last_seen": now,
                "message_count": 0,
                "opted_out": opted_out,
            }
        ],
    )
    if not opted_out:
        return 0
    erased = session.execute(
        update(Message)
        .where(
            col(Message.platform) == platform,
            col(Message.community_id) == community_id,
            col(Message.author_id) == member_id,
        )
        .values(text="", author_name="")
    )
    their_flags = and_(
        col(Flag.platform) == platform,
        col(Flag.community_id) == community_id,
        col(Flag.author_id) == member_id,
    )
    session.execute(
        delete(Feedback).where(col(Feedback.flag_id).in_(select(col(Flag.id)).where(their_flags)))
    )
    session.execute(
        update(Flag).where(their_flags).values(quoted_text="", draft="", author_name="")
    )
    theirs = select(col(Message.message_id)).where(
        col(Message.platform) == platform,
        col(Message.community_id) == community_id,
        col(Message.author_id) == member_id,
    )
    session.execute(
        delete(CompetitorMention).where(
            col(CompetitorMention.platform) == platform,
            col(CompetitorMention.community_id) == community_id,
            col(CompetitorMention.message_id).in_(theirs),
        )
    )
    return int(getattr(erased, "rowcount", 0) or 0)


def member_activity(
    session: Session, platform: str, community_id: str, member_ids: Sequence[str]
) -> dict[str, int]:
    if not member_ids:
        return {}
    rows = session.execute(
        select(col(Member.external_id), col(Member.message_count)).where(
            col(Member.platform) == platform,
            col(Member.community_id) == community_id,
            col(Member.external_id).in_(list(member_ids)),
        )
    ).all()
    return {str(m): int(n) for m, n in rows}


# -- feedback and audit --------------------------------------------------------------------


def add_feedback(
    session: Session,
    platform: str,
    community_id: str,
    text: str,
    is_negative: bool,
    source: str,
    actor: str,
    now: datetime,
    flag_id: int | None = None,
) -> None:
    session.add(
        Feedback(
            platform=platform,
            community_id=community_id,
            text=text,
            is_negative=is_negative,
            source=source,
            actor=actor,
            created_at=now,
            flag_id=flag_id,
        )
    )


def flag_state(session: Session, flag_id: int | None) -> str | None:
    """A flag's state (open, claimed, …), or None when there is no such flag."""
    if flag_id is None:
        return None
    row = session.execute(select(col(Flag.state)).where(col(Flag.id) == flag_id)).first()
    return str(row[0]) if row else None


def has_feedback(session: Session, flag_id: int) -> bool:
    """Whether a manager's decision on this flag is already stored."""
    return (
        session.execute(
            select(col(Feedback.id)).where(col(Feedback.flag_id) == flag_id).limit(1)
        ).first()
        is not None
    )


def all_feedback(session: Session) -> list[Feedback]:
    return list(session.scalars(select(Feedback).order_by(col(Feedback.id))))


_AUDIT_INSERT = insert(_table(AuditLog))


def audit(
    session: Session, now: datetime, actor: str, action: str, flag_id: int | None, detail: str = ""
) -> None:
    audit_many(session, now, actor, action, [(flag_id, detail)])


def audit_many(
    session: Session,
    now: datetime,
    actor: str,
    action: str,
    entries: Sequence[tuple[int | None, str]],
) -> None:
    """One audit row per ``(flag_id, detail)``, in one statement."""
    session.execute(
        _AUDIT_INSERT,
        [
            {"at": now, "actor": actor, "action": action, "flag_id": f, "detail": d[:400]}
            for f, d in entries
        ],
    )


# -- outbox ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewWork:
    """Work to add to the outbox."""

    kind: str
    payload: dict[str, Any]
    dedupe_key: str
    platform: str = ""
    due_at: datetime | None = None


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    dedupe_key: str,
    now: datetime,
    platform: str = "",
    due_at: datetime | None = None,
) -> bool:
    """Add work unless work with the same key exists; True when it was added."""
    return enqueue_many(session, [NewWork(kind, payload, dedupe_key, platform, due_at)], now) == 1


def enqueue_many(session: Session, rows: Sequence[NewWork], now: datetime) -> int:
    """Add each piece of work unless work with its key exists; returns how many were added."""
    added = 0
    stmt = _outbox_insert(session.get_bind().dialect.name)
    for row in rows:  # one statement each: rowcount is only reliable for a single row
        result = session.execute(
            stmt,
            [
                {
                    "kind": row.kind,
                    "platform": row.platform,
                    "payload": row.payload,
                    "dedupe_key": row.dedupe_key,
                    "state": "pending",
                    "attempts": 0,
                    "due_at": row.due_at or now,
                    "created_at": now,
                    "result": {},
                }
            ],
        )
        added += int(bool(getattr(result, "rowcount", 0)))
    return added


@cache
def _outbox_insert(dialect: str) -> Any:
    table = _table(Outbox)
    ins = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return ins.on_conflict_do_nothing(index_elements=["dedupe_key"])


_OUTBOX = _table(Outbox)
_RANGES_PER_QUERY = 8


@cache
def _key_ranges(n: int) -> Any:
    """``SELECT dedupe_key, state FROM outbox`` over ``n`` key ranges, built once per n."""
    key = _OUTBOX.c.dedupe_key
    return select(key, _OUTBOX.c.state).where(
        or_(*(and_(key >= bindparam(f"lo{i}"), key < bindparam(f"hi{i}")) for i in range(n)))
    )


def flags_with_pending_card_update(session: Session, flag_ids: Iterable[int]) -> set[int]:
    """The flags among ``flag_ids`` whose card update is still pending.

    Card updates are keyed ``card-update:<flag>:<version>``; each flag is a range scan on
    the unique key index. ``state`` stays out of the WHERE clause: with it, SQLite prefers
    the (state, due_at) index and walks every pending row, which is all of them while
    Slack is unreachable. A flag has a handful of card-update rows. The statements are
    built once (per number of flags, up to 8 a query): this runs for every batch of
    merged complaints, and building them cost more than running them.
    """
    ids = sorted(set(flag_ids))
    pending: set[int] = set()
    for start in range(0, len(ids), _RANGES_PER_QUERY):
        chunk = ids[start : start + _RANGES_PER_QUERY]
        params: dict[str, str] = {}
        for i, flag_id in enumerate(chunk):
            params[f"lo{i}"] = f"card-update:{flag_id}:"
            params[f"hi{i}"] = f"card-update:{flag_id};"
        for key, state in session.execute(_key_ranges(len(chunk)), params):
            if state == "pending":
                pending.add(int(key.split(":")[1]))
    return pending


OUTBOX_LEASE_S = 120.0
"""How long a claim on outbox work holds before another replica may take the work over
(the claimer renews it while the work runs)."""


def claim_due(
    session: Session,
    now: datetime,
    limit: int,
    exclude: Sequence[int] = (),
    platforms: Sequence[str] | None = None,
    lease_s: float = OUTBOX_LEASE_S,
) -> list[Outbox]:
    """Claim due work for ``lease_s`` seconds: pending work, and running work whose
    claimer stopped renewing its lease (it died). While running, ``due_at`` holds the
    lease's end. PostgreSQL skips rows another replica is claiming (FOR UPDATE SKIP
    LOCKED)."""
    query = (
        select(Outbox)
        .where(col(Outbox.state).in_(("pending", "running")), col(Outbox.due_at) <= now)
        .order_by(col(Outbox.id))
        .limit(limit)
    )
    if exclude:
        query = query.where(col(Outbox.id).not_in(list(exclude)))
    if platforms is not None:
        query = query.where(col(Outbox.platform).in_(list(platforms)))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    items = list(session.scalars(query))
    lease_until = now + timedelta(seconds=lease_s)
    for item in items:
        item.state = "running"
        item.attempts += 1
        item.due_at = lease_until
        session.add(item)
    return items


def renew_leases(session: Session, item_ids: Sequence[int], until: datetime) -> None:
    """Extend the claim on work still running (a slow platform, a rate-limit wait)."""
    if item_ids:
        session.execute(
            update(Outbox)
            .where(col(Outbox.id).in_(list(item_ids)), col(Outbox.state) == "running")
            .values(due_at=until)
        )


def _held(item_id: int, attempt: int | None) -> Any:
    """The outbox row ``item_id``; with ``attempt``, only while that claim still holds it
    (running, not taken over after its lease ran out): a stale claimer changes nothing."""
    if attempt is None:
        return col(Outbox.id) == item_id
    return and_(
        col(Outbox.id) == item_id, col(Outbox.state) == "running", col(Outbox.attempts) == attempt
    )


def finish(
    session: Session,
    item_id: int,
    now: datetime,
    result: dict[str, Any],
    attempt: int | None = None,
) -> None:
    session.execute(
        update(Outbox)
        .where(_held(item_id, attempt))
        .values(state="done", done_at=now, result=result)
    )


def retry_later(
    session: Session, item_id: int, due_at: datetime, error: str, attempt: int | None = None
) -> None:
    session.execute(
        update(Outbox)
        .where(_held(item_id, attempt))
        .values(state="pending", due_at=due_at, last_error=error[:400])
    )


def fail(
    session: Session, item_id: int, now: datetime, error: str, attempt: int | None = None
) -> None:
    session.execute(
        update(Outbox)
        .where(_held(item_id, attempt))
        .values(state="failed", done_at=now, last_error=error[:400])
    )


def recover_running(session: Session, now: datetime) -> int:
    """Work whose claimer died (its lease ran out) goes back to pending. Work another
    live replica is doing keeps its claim: redoing it would post a reply twice."""
    result = session.execute(
        update(Outbox)
        .where(col(Outbox.state) == "running", col(Outbox.due_at) <= now)
        .values(state="pending")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def next_due(session: Session) -> datetime | None:
    row = session.execute(
        select(func.min(col(Outbox.due_at))).where(col(Outbox.state) == "pending")
    ).first()
    return row[0] if row else None


def pending_count(session: Session) -> int:
    row = session.execute(
        select(func.count())
        .select_from(Outbox)
        .where(col(Outbox.state).in_(["pending", "running"]))
    ).first()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class ThreadActivity:
    at: datetime
    author_id: str
    text: str
    is_reaction: bool
    is_complaint: bool


def merged_texts(session: Session, head: Flag) -> list[str]:
    """Texts of the complaints merged into ``head``'s incident (its "joined:" audit
    entries), not deleted, oldest first."""
    ids: list[str] = []
    for detail in session.scalars(
        select(col(AuditLog.detail)).where(
            col(AuditLog.flag_id) == head.id, col(AuditLog.action) == "merged"
        )
    ):
        if detail and detail.startswith("joined: "):
            ids.extend(detail.removeprefix("joined: ").split(", "))
    if not ids:
        return []
    rows = session.execute(
        select(col(Message.text))
        .where(
            col(Message.platform) == head.platform,
            col(Message.community_id) == head.community_id,
            col(Message.message_id).in_(ids),
            col(Message.deleted_at).is_(None),
        )
        .order_by(col(Message.created_at))
    ).all()
    return [str(r[0]) for r in rows if r[0]]


def flagged_message_time(session: Session, flag_id: int) -> datetime | None:
    """When the message a flag was raised on was posted (a primary-key look-up)."""
    return session.execute(
        select(col(Message.created_at))
        .join(Flag, col(Flag.message_pk) == col(Message.id))
        .where(col(Flag.id) == flag_id)
    ).scalar()


def thread_activity(
    session: Session,
    platform: str,
    community_id: str,
    flagged_message_id: str,
    thread_id: str | None,
    since: datetime,
    not_before: datetime | None = None,
) -> list[ThreadActivity]:
    """Replies (in the thread, or replying to the message) and reactions since ``since``.

    Two look-ups, each an index search (migration 0004): messages in the thread (a
    thread started from the message has the message's id: Discord thread, Slack
    thread_ts), and messages that reply to it. One query with OR would scan the
    community's messages.
    """
    common: list[Any] = [
        col(Message.platform) == platform,
        col(Message.community_id) == community_id,
        col(Message.created_at) >= since,
        col(Message.message_id) != flagged_message_id,
        col(Message.deleted_at).is_(None),
    ]
    if not_before is not None:  # what was said before the flagged message is not about it
        common.append(col(Message.created_at) >= not_before)
    threads = [flagged_message_id] if not thread_id else [flagged_message_id, thread_id]
    found: dict[int | None, Message] = {}
    for cond in (col(Message.thread_id).in_(threads), col(Message.reply_to) == flagged_message_id):
        for m in session.scalars(select(Message).where(*common, cond)):
            found[m.id] = m
    rows = sorted(found.values(), key=lambda m: (m.created_at, m.id or 0))
    out = [
        ThreadActivity(m.created_at, m.author_id, m.text, False, m.severity is not None)
        for m in rows
    ]
    reactions = session.scalars(
        select(Reaction).where(
            col(Reaction.platform) == platform,
            col(Reaction.community_id) == community_id,
            col(Reaction.message_id) == flagged_message_id,
            col(Reaction.at) >= since,
        )
    ).all()
    out.extend(ThreadActivity(r.at, r.member_id, r.emoji, True, False) for r in reactions)
    return out
