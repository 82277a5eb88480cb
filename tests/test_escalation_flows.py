"""Escalation and incidents over a flag's life: answered, closed, deleted, merged.

Found by an audit; each case failed before its fix. A reply in the thread of a flag that
was answered or closed is judged on its own; replies stored with the complaint count
once it is flagged; a deleted message's flag neither escalates nor takes duplicates;
what was said in a thread before the flagged message is not a pile-on on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import select
from sqlmodel import col

from bot.app import Runtime
from handlers.clock import ManualClock
from handlers.events import MessageKind, ReactionEvent
from storage.models import Flag
from tests.core_helpers import KeywordJudge, RecordingExecutor, message
from tests.test_flags import runtime as flags_runtime


@dataclass(frozen=True)
class V:
    score: float
    is_negative: bool
    reason: str
    severity: str
    rationale: str


class LowJudge(KeywordJudge):
    """'meh' complaints are negative at low severity; others as KeywordJudge."""

    def judge(self, text: str, community_id: str | None = None) -> V:  # type: ignore[override]
        if "meh" in text.lower():
            return V(0.7, True, "other", "low", "meh")
        return super().judge(text, community_id)  # type: ignore[return-value]


@asynccontextmanager
async def runtime(
    url: str, clock: ManualClock, judge: KeywordJudge | None = None
) -> AsyncIterator[tuple[Runtime, RecordingExecutor]]:
    """The flag tests' runtime; these tests only look at Slack."""
    async with flags_runtime(url, clock, judge) as (rt, slack, _discord):
        yield rt, slack


async def flags(rt: Runtime) -> list[Flag]:
    return await rt.db.run(lambda s: list(s.scalars(select(Flag).order_by(col(Flag.id)))))


async def test_a_flag_whose_message_was_deleted_is_not_escalated(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _):
        await rt.core.on_message(message("the app is broken since the update", "m1", author="u1"))
        await rt.settle()
        await rt.core.on_message(replace(message("", "m1"), kind=MessageKind.DELETE))
        await rt.settle()
        for i, who in enumerate(("u2", "u3", "u4")):
            at = clock.advance(minutes=1)
            await rt.core.on_message(message("same here", f"r{i}", author=who, thread="m1", at=at))
        await rt.settle()
        f = (await flags(rt))[0]
        assert f.quoted_text == ""
        assert (f.severity, f.escalation) == ("medium", ""), (f.severity, f.escalation)


async def test_pile_on_under_a_lower_severity_duplicate_escalates_the_incident(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock, LowJudge()) as (rt, _):
        await rt.core.on_message(
            message("checkout is broken, cannot pay", "m0", author="u0", channel="c0")
        )
        at = clock.advance(minutes=1)
        await rt.core.on_message(
            message("meh checkout is broken, cannot pay", "m1", author="u1", channel="c1", at=at)
        )
        await rt.settle()
        assert [(f.message_id, f.incident_size, f.severity) for f in await flags(rt)] == [
            ("m0", 2, "medium")
        ]
        for i, who in enumerate(("u2", "u3", "u4")):
            at = clock.advance(minutes=1)
            await rt.core.on_message(
                message("same here", f"r{i}", author=who, channel="c1", thread="m1", at=at)
            )
        await rt.settle()
        f = (await flags(rt))[0]
        # the same pile-on under m0 raises the incident to high
        assert f.severity == "high", (f.severity, f.escalation)


async def test_a_new_complaint_in_the_thread_of_a_resolved_flag_gets_a_card(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack):
        await rt.core.on_message(message("the app is broken", "m1", author="u1"))
        await rt.settle()
        f = (await flags(rt))[0]
        assert (await rt.core.resolve(f.id or 0, "M1")).ok
        at = clock.advance(minutes=10)
        await rt.core.on_message(
            message("I want a refund, this is terrible", "r1", author="u2", thread="m1", at=at)
        )
        await rt.settle()
        fl = await flags(rt)
        assert [x.message_id for x in fl] == ["m1", "r1"], [(x.message_id, x.state) for x in fl]


async def test_a_complaint_does_not_merge_into_a_flag_whose_message_was_deleted(
    db_url: str,
) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack):
        await rt.core.on_message(message("checkout is broken, cannot pay", "m0", author="u0"))
        await rt.settle()
        await rt.core.on_message(replace(message("", "m0"), kind=MessageKind.DELETE))
        await rt.settle()
        at = clock.advance(minutes=5)
        await rt.core.on_message(
            message("checkout is broken, cannot pay", "m1", author="u1", at=at)
        )
        await rt.settle()
        fl = await flags(rt)
        got = [(f.message_id, f.incident_size, f.quoted_text) for f in fl]
        assert [f.message_id for f in fl] == ["m0", "m1"], got


async def test_replies_arriving_with_the_complaint_escalate_it(db_url: str) -> None:
    """Discord's hot path: accept() takes a burst; the pile-on in the same burst as the
    complaint must still count once the flag exists."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _):
        start = clock.now()
        rt.core.accept(message("the app is broken since the update", "m1", author="u1", at=start))
        for i, who in enumerate(("u2", "u3", "u4")):
            rt.core.accept(message("same here", f"r{i}", author=who, thread="m1", at=start))
        await rt.settle()
        fl = await flags(rt)
        assert len(fl) == 1
        assert fl[0].severity == "high", (fl[0].severity, fl[0].escalation)


async def test_a_members_answer_to_the_managers_reply_still_gets_a_card(db_url: str) -> None:
    """After the manager replied (flag 'replied'), the member says it is still broken."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack):
        await rt.core.on_message(message("the app is broken", "m1", author="u1"))
        await rt.settle()
        f = (await flags(rt))[0]
        assert (await rt.core.send(f.id or 0, "M1", text="Sorry, fixed now?")).ok
        await rt.settle()
        assert (await flags(rt))[0].state == "replied"
        at = clock.advance(minutes=10)
        await rt.core.on_message(
            message("still broken, I want a refund", "r1", author="u1", thread="m1", at=at)
        )
        await rt.settle()
        fl = await flags(rt)
        assert [x.message_id for x in fl] == ["m1", "r1"], [
            (x.message_id, x.state, x.escalation) for x in fl
        ]


async def test_earlier_thread_chatter_does_not_escalate_a_later_complaint(db_url: str) -> None:
    """Slack thread under a neutral question: three '+1' replies to the question, then a
    member's complaint in the same thread is flagged. A later neutral reply must not
    count the earlier '+1's (they agreed with the question) as a pile-on on the flag."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _):
        t0 = clock.now()
        kw = dict(platform="slack", community="T1", channel="C1")
        await rt.core.on_message(
            message("is the dark mode rolling out to everyone?", "100.1", author="u0", at=t0, **kw)
        )
        for i, who in enumerate(("u2", "u3", "u4")):
            at = clock.advance(minutes=1)
            await rt.core.on_message(
                message("+1", f"100.{i + 2}", author=who, thread="100.1", at=at, **kw)
            )
        await rt.settle()
        at = clock.advance(minutes=1)
        await rt.core.on_message(
            message(
                "unrelated: my invoice export is broken",
                "100.9",
                author="u1",
                thread="100.1",
                at=at,
                **kw,
            )
        )
        await rt.settle()
        fl = await flags(rt)
        assert [(f.message_id, f.severity) for f in fl] == [("100.9", "medium")]
        at = clock.advance(minutes=1)
        await rt.core.on_message(
            message("thanks for the info", "101.0", author="u5", thread="100.1", at=at, **kw)
        )
        await rt.settle()
        fl = await flags(rt)
        assert fl[0].severity == "medium", (fl[0].severity, fl[0].escalation)


async def test_replies_under_a_hand_raised_flag_count_towards_it(db_url: str) -> None:
    """A flag raised with "Flag for follow-up" is watched like a detector's: a complaint
    in its thread escalates it rather than getting a card of its own."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _):
        await rt.core.on_message(message("hmm, not sure about the new pricing", "m1", author="u1"))
        await rt.settle()
        assert await flags(rt) == []
        assert (await rt.core.manual_flag("discord", "g1", "c1", "m1", "M1")).ok
        at = clock.advance(minutes=1)
        reply = message("agreed, the app is broken", "r1", author="u2", thread="m1", at=at)
        await rt.core.on_message(reply)
        await rt.settle()
        assert [f.message_id for f in await flags(rt)] == ["m1"]


async def test_restart_does_not_inflate_severity_from_the_same_evidence(tmp_path: Path) -> None:
    """Low flag + 4 agreeing members (< crowd of 6): one step, medium. A restart in
    between must not count the same evidence again on top of the escalated severity."""

    async def scenario(restart: bool) -> str:
        clock = ManualClock()
        judge = LowJudge()
        u = f"sqlite:///{tmp_path}/{'r' if restart else 'n'}.db"
        async with runtime(u, clock, judge) as (rt, _):
            start = clock.now()
            await rt.core.on_message(message("meh the app is slow", "m1", author="u1", at=start))
            await rt.settle()
            for i, who in enumerate(("u2", "u3", "u4")):
                at = clock.advance(minutes=2)
                await rt.core.on_message(
                    message("same here", f"r{i}", author=who, thread="m1", at=at)
                )
            await rt.settle()
            assert (await flags(rt))[0].severity == "medium"
            if not restart:
                at = clock.advance(minutes=2)
                await rt.core.on_message(
                    message("same here", "r9", author="u5", thread="m1", at=at)
                )
                await rt.settle()
                return (await flags(rt))[0].severity
        async with runtime(u, clock, judge) as (rt, _):
            at = clock.advance(minutes=2)
            await rt.core.on_message(message("same here", "r9", author="u5", thread="m1", at=at))
            await rt.settle()
            return (await flags(rt))[0].severity

    no_restart = await scenario(False)
    with_restart = await scenario(True)
    assert no_restart == "medium"
    assert with_restart == no_restart, f"after restart: {with_restart}"


A = "checkout page is broken, cannot pay"
B = "checkout page is broken, cannot pay with card"
C = "checkout broken, cannot pay with card"


async def _incident(url: str, restart: bool) -> list[tuple[str, int]]:
    clock = ManualClock()
    async with runtime(url, clock) as (rt, _):
        await rt.core.on_message(message(A, "m0", author="u0", channel="c0"))
        at = clock.advance(minutes=1)
        await rt.core.on_message(message(B, "m1", author="u1", channel="c1", at=at))
        await rt.settle()
        assert [(f.message_id, f.incident_size) for f in await flags(rt)] == [("m0", 2)]
        if not restart:
            at = clock.advance(minutes=1)
            await rt.core.on_message(message(C, "m2", author="u2", channel="c2", at=at))
            await rt.settle()
            return [(f.message_id, f.incident_size) for f in await flags(rt)]
    async with runtime(url, clock) as (rt, _):
        at = clock.advance(minutes=1)
        await rt.core.on_message(message(C, "m2", author="u2", channel="c2", at=at))
        await rt.settle()
        return [(f.message_id, f.incident_size) for f in await flags(rt)]


async def test_incident_membership_survives_a_restart(tmp_path: Path) -> None:
    """A complaint like a merged duplicate (not like the head) still joins after a
    restart, as it did before: the incident remembers its members' texts."""
    live = await _incident(f"sqlite:///{tmp_path}/n.db", False)
    assert live == [("m0", 3)]
    after = await _incident(f"sqlite:///{tmp_path}/r.db", True)
    assert after == live, f"after restart: {after}"


async def test_eyes_and_check_mark_reactions_are_not_a_pile_on(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _):
        await rt.core.on_message(message("my order arrived broken", "m1", at=clock.now()))
        await rt.settle()
        for i, emoji in enumerate(("👀", "✅", "👀")):
            clock.advance(minutes=1)
            await rt.core.on_reaction(
                ReactionEvent("discord", "g1", "c1", "m1", f"mod{i}", emoji, True, clock.now())
            )
        await rt.settle()
        f = (await flags(rt))[0]
        assert f.severity == "medium", (f.severity, f.escalation)


async def test_thumbs_up_reactions_still_pile_on(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _):
        await rt.core.on_message(message("my order arrived broken", "m1", at=clock.now()))
        await rt.settle()
        for i in range(3):
            clock.advance(minutes=1)
            await rt.core.on_reaction(
                ReactionEvent("discord", "g1", "c1", "m1", f"u{i + 2}", "👍", True, clock.now())
            )
        await rt.settle()
        assert (await flags(rt))[0].severity == "high"
