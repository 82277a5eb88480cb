"""Records (events, rows, verdicts) behave as values: equal, hashable, replaceable."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from handlers.events import Author, MessageEvent
from storage.records import record


def _event(text: str) -> MessageEvent:
    return MessageEvent(
        platform="discord",
        community_id="1",
        channel_id="2",
        message_id="3",
        author=Author(id="4", name="Ann"),
        text=text,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_equal_records_hash_alike_and_replace_makes_a_new_one() -> None:
    a, b = _event("hi"), _event("hi")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    edited = dataclasses.replace(a, text="hello")
    assert edited.text == "hello" and a.text == "hi" and edited != a


def test_a_record_has_slots_and_no_instance_dict() -> None:
    @record
    class Point:
        x: int
        y: int = 0

    p = Point(1)
    assert not hasattr(p, "__dict__") and (p.x, p.y) == (1, 0)
