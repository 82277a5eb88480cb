"""The flag workflow end to end through the core, the outbox and the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from bot.app import Runtime, build_runtime
from bot.settings import Settings
from handlers.clock import ManualClock
from handlers.events import (
    Action,
    ActionResult,
    MessageKind,
    PostCardThreadReply,
    PostFlagCard,
    PostMessage,
    ReplyInThread,
    Target,
    UpdateFlagCard,
)
from handlers.judging import DraftJob, DraftResult
from handlers.outbox import Outbox
from storage import queries
from storage.models import AuditLog, Feedback, Flag
from storage.models import Outbox as OutboxRow
from tests.core_helpers import KeywordJudge, RecordingExecutor, message


class EchoDrafter:
    """Drafts a fixed reply, recording what it was asked."""

    def __init__(self) -> None:
        self.jobs: list[DraftJob] = []

    async def make(self, job: DraftJob) -> DraftResult:
        self.jobs.append(job)
        return DraftResult(f"Sorry about that, {job.member_name}. We're on it.", "template")


@asynccontextmanager
async def runtime(
    url: str, clock: ManualClock, judge: KeywordJudge | None = None
) -> AsyncIterator[tuple[Runtime, RecordingExecutor, RecordingExecutor]]:
    settings = Settings(DATABASE_URL=url, SLACK_MANAGERS="M1,M2", _env_file=None)  # type: ignore[call-arg]
    async with build_runtime(
        settings,
        clock=clock,
        judge=judge or KeywordJudge(),
        drafter=EchoDrafter(),
        start_workers=False,
    ) as rt:
        slack, discord = RecordingExecutor("slack"), RecordingExecutor("discord")
        rt.outbox.register(slack)
        rt.outbox.register(discord)
        yield rt, slack, discord


async def _flag(rt: Runtime) -> Flag:
    return await rt.db.run(lambda s: s.scalars(select(Flag)).one())


async def test_a_complaint_gets_one_card_then_a_draft(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        await rt.core.on_message(message("the app is broken again", "m1"))
        await rt.core.on_message(message("the app is broken again", "m1"))  # redelivered
        await rt.core.on_message(message("lovely weather", "m2"))
        await rt.settle()
        posts = [a for a in slack.done if isinstance(a, PostFlagCard)]
        assert len(posts) == 1
        flag = await _flag(rt)
        assert flag.card_ts is not None and flag.draft.startswith("Sorry about that")
        assert any(isinstance(a, UpdateFlagCard) for a in slack.done)
        card = await rt.core.card(flag.id or 0)
        assert (
            card is not None
            and card.draft_kind == "template"
            and card.extra["card_ts"] == flag.card_ts
        )


async def test_claim_send_once_resolve(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack, discord):
        await rt.core.on_message(message("want a refund now", "m1", thread="t1"))
        await rt.settle()
        flag_id = (await _flag(rt)).id or 0

        refused = await rt.core.claim(flag_id, "U_RANDOM")
        assert not refused.ok and "managers" in refused.message
        assert (await _flag(rt)).state == "open"

        assert (await rt.core.claim(flag_id, "M1")).ok
        other = await rt.core.claim(flag_id, "M2")
        assert not other.ok and "Already claimed" in other.message

        clock.advance(minutes=4)
        results = await asyncio.gather(rt.core.send(flag_id, "M1"), rt.core.send(flag_id, "M2"))
        assert sorted(r.ok for r in results) == [False, True]
        await rt.settle()
        replies = [a for a in discord.done if isinstance(a, ReplyInThread)]
        assert len(replies) == 1
        assert replies[0].target.reply_to == "m1" and replies[0].target.thread_id == "t1"
        flag = await _flag(rt)
        assert flag.state == "replied" and flag.first_response_at == clock.now()
        again = await rt.core.send(flag_id, "M1")
        assert not again.ok

        assert (await rt.core.resolve(flag_id, "M2")).ok
        assert (await _flag(rt)).state == "resolved"
        actions = await rt.db.run(lambda s: [a.action for a in s.scalars(select(AuditLog))])
        assert actions[:1] == ["flagged"] and {"claimed", "send", "replied", "resolved"} <= set(
            actions
        )


async def test_edited_send_and_failed_send_can_be_retried(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack, discord):
        await rt.core.on_message(message("this is broken", "m1"))
        await rt.settle()
        flag_id = (await _flag(rt)).id or 0
        discord.refuse_with = "Unknown Message (the member deleted it?)"
        assert (await rt.core.send(flag_id, "M1", text="Edited answer")).ok
        await rt.settle()
        flag = await _flag(rt)
        assert flag.state == "open" and flag.send_error and "Unknown Message" in flag.send_error
        card = await rt.core.card(flag_id)
        assert card is not None and card.send_error and card.draft == "Edited answer"

        discord.refuse_with = None
        assert (await rt.core.send(flag_id, "M1")).ok
        await rt.settle()
        assert [a.text for a in discord.done if isinstance(a, ReplyInThread)] == ["Edited answer"]
        assert (await _flag(rt)).state == "replied"


async def test_dismiss_teaches_the_detector(db_url: str) -> None:
    clock = ManualClock()
    judge = KeywordJudge()
    async with runtime(db_url, clock, judge) as (rt, _slack, _):
        await rt.core.on_message(message("refund policy question", "m1"))
        await rt.settle()
        flag_id = (await _flag(rt)).id or 0
        assert (await rt.core.dismiss(flag_id, "M1")).ok
        await rt.core.on_message(message("refund policy question", "m2"))
        await rt.settle()
        flags = await rt.db.run(lambda s: s.scalars(select(Flag)).all())
        assert len(flags) == 1 and flags[0].state == "dismissed"
        fb = await rt.db.run(lambda s: s.scalars(select(Feedback)).one())
        assert fb.is_negative is False and fb.source == "dismiss"
        status = await rt.core.status_text("discord", "g1")
        assert "learned from 1 manager decision here (1 not negative, 0 negative)" in status
        assert "learned" not in await rt.core.status_text("discord", "elsewhere")
    # Feedback is persisted: a fresh detector learns it again on start.
    async with runtime(db_url, clock, KeywordJudge()) as (rt, _slack, _):
        await rt.core.on_message(message("refund policy question", "m3"))
        await rt.settle()
        assert len(await rt.db.run(lambda s: s.scalars(select(Flag)).all())) == 1


async def test_status_says_what_a_communitys_decisions_taught_the_detector(
    db_url: str,
) -> None:
    """Persisted dismissals are replayed on start; status names the words they taught."""
    from datetime import UTC, datetime

    from handlers.detect import Detector

    raids = [
        "brutal raid tonight, wiped 5 times",
        "wiped on the raid boss again, brutal",
        "raid wipes all night, brutal",
        "brutal raid, we wiped twice",
    ]
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack, _):
        at = datetime(2026, 1, 5, tzinfo=UTC)
        await rt.db.run(
            lambda s: s.add_all(
                Feedback(
                    platform="discord",
                    community_id="g1",
                    text=text,
                    is_negative=False,
                    source="dismiss",
                    created_at=at,
                )
                for text in raids
            )
        )
    async with runtime(db_url, clock, Detector.default()) as (rt, _slack, _):  # type: ignore[arg-type]
        status = await rt.core.status_text("discord", "g1")
        assert "learned from 4 manager decisions here (4 not negative, 0 negative)" in status
        assert "Lower: brutal, raid." in status
        assert "Lower" not in await rt.core.status_text("discord", "g2")


async def test_manual_flag_is_positive_feedback(db_url: str) -> None:
    clock = ManualClock()
    judge = KeywordJudge()
    async with runtime(db_url, clock, judge) as (rt, _slack, _):
        await rt.core.on_message(message("the queue ate my order", "m1"))
        out = await rt.core.manual_flag("discord", "g1", "c1", "m1", "MOD1")
        assert out.ok
        await rt.settle()
        flag = await _flag(rt)
        assert flag.source == "manual"
        assert judge.judge("the queue ate my order", "discord:g1").is_negative
        missing = await rt.core.manual_flag("discord", "g1", "c1", "nope", "MOD1")
        assert not missing.ok


async def test_sla_reminder_once_bounded_and_after_restart(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        await rt.core.on_message(message("lawsuit incoming, this is dangerous", "m1"))
        await rt.settle()
        assert (await _flag(rt)).severity == "high"
        clock.advance(minutes=14)
        assert await rt.flags.check_sla() == 0
        clock.advance(minutes=2)
        assert await rt.flags.check_sla() == 1
        assert await rt.flags.check_sla() == 0  # not twice for the same deadline
        await rt.settle()
    async with runtime(db_url, clock) as (rt, slack, _):
        assert await rt.flags.check_sla() == 0  # a restart does not repeat it
        for _ in range(5):
            clock.advance(minutes=16)
            await rt.flags.check_sla()
        await rt.settle()
        reminders = [a for a in slack.done if isinstance(a, PostCardThreadReply)]
        assert len(reminders) == 2  # 3 in all, the first one before the restart
    rows = await _outbox_reminders(db_url, clock)
    assert rows == 3


async def _outbox_reminders(url: str, clock: ManualClock) -> int:
    async with runtime(url, clock) as (rt, _, _):
        return await rt.db.run(
            lambda s: len(
                [o for o in s.scalars(select(OutboxRow)) if o.dedupe_key.startswith("remind:")]
            )
        )


async def test_claiming_stops_reminders(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _, _):
        await rt.core.on_message(message("broken", "m1"))
        await rt.settle()
        await rt.core.claim((await _flag(rt)).id or 0, "M1")
        clock.advance(hours=10)
        assert await rt.flags.check_sla() == 0


async def test_work_interrupted_by_a_crash_is_done_once_after_restart(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        await rt.core.on_message(message("broken", "m1"))
        await rt.writer.flush()
        await rt.flags.wait_drafts()
        # Simulate a crash in the middle: the card was claimed for posting, never posted.
        from storage import queries

        claimed = await rt.db.run(lambda s: queries.claim_due(s, clock.now(), 10))
        assert [c.kind for c in claimed] and not slack.done
    async with runtime(db_url, clock) as (rt, slack, _):
        # The dead process's claim holds until its lease runs out, then the work runs.
        await rt.settle()
        assert not [a for a in slack.done if isinstance(a, PostFlagCard)]
        clock.advance(seconds=queries.OUTBOX_LEASE_S + 1)
        await rt.outbox.recover()
        await rt.settle()
        assert len([a for a in slack.done if isinstance(a, PostFlagCard)]) == 1
        await rt.outbox.recover()
        await rt.settle()
        assert len([a for a in slack.done if isinstance(a, PostFlagCard)]) == 1


async def test_deleted_message_cannot_be_answered(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack, _discord):
        await rt.core.on_message(message("refund please", "m1"))
        await rt.settle()
        await rt.core.on_message(replace(message("", "m1"), kind=MessageKind.DELETE))
        await rt.settle()
        out = await rt.core.send((await _flag(rt)).id or 0, "M1", text="hello")
        assert not out.ok and "deleted" in out.message
        card = await rt.core.card((await _flag(rt)).id or 0)
        assert card is not None and card.message_deleted and card.text == ""


async def test_pile_on_in_a_thread_escalates_the_flag_not_new_cards(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        start = clock.now()
        await rt.core.on_message(
            message("the app is broken since the update", "m1", author="u1", at=start)
        )
        await rt.settle()
        assert (await _flag(rt)).severity == "medium"
        for i, who in enumerate(("u2", "u3", "u4")):
            at = clock.advance(minutes=5)
            await rt.core.on_message(
                message("same here, broken for me too", f"r{i}", author=who, thread="m1", at=at)
            )
        await rt.settle()
        flags = await rt.db.run(lambda s: s.scalars(select(Flag)).all())
        assert len(flags) == 1
        assert flags[0].severity == "high"
        assert "3 members agreeing" in flags[0].escalation
        assert len([a for a in slack.done if isinstance(a, PostFlagCard)]) == 1
        card = await rt.core.card(flags[0].id or 0)
        assert card is not None and "3 members agreeing" in card.escalation


async def test_near_duplicate_complaints_become_one_incident(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        texts = [
            "checkout page is broken, cannot pay",
            "the checkout page is broken and I cannot pay",
            "Checkout page is broken!! cannot pay",
        ]
        for i, text in enumerate(texts):
            clock.advance(minutes=3)
            await rt.core.on_message(
                message(text, f"m{i}", author=f"u{i}", channel=f"c{i}", at=clock.now())
            )
        await rt.core.on_message(
            message("my refund never arrived", "m9", author="u9", at=clock.now())
        )
        await rt.settle()
        flags = sorted(
            await rt.db.run(lambda s: s.scalars(select(Flag)).all()), key=lambda f: f.id or 0
        )
        assert [f.incident_size for f in flags] == [3, 1]
        assert len([a for a in slack.done if isinstance(a, PostFlagCard)]) == 2


async def test_a_storm_of_duplicates_updates_the_card_once(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        await rt.core.on_message(message("checkout is broken, cannot pay", "m0", author="u0"))
        await rt.settle()
        slack.done.clear()  # the card and its draft update
        for i in range(1, 20):
            clock.advance(seconds=30)
            await rt.core.on_message(
                message("checkout is broken, cannot pay", f"m{i}", author=f"u{i}", at=clock.now())
            )
        await rt.settle()
        updates = [a for a in slack.done if isinstance(a, UpdateFlagCard)]
        assert len(updates) == 1
        card = await rt.core.card((await _flag(rt)).id or 0)
        assert card is not None and card.incident_size == 20


async def test_redelivered_complaints_are_not_counted_twice(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack, _):
        first = message("checkout is broken, cannot pay", "m0", author="u0")
        second = message("checkout is broken, cannot pay!", "m1", author="u1")
        for event in (first, second, second, first, second):  # retries and backfill
            await rt.core.on_message(event)
        await rt.settle()
        flag = await _flag(rt)
        assert flag.incident_size == 2
        assert rt.core.stats.messages == 2


async def test_a_burst_of_duplicates_joins_one_incident_at_its_highest_severity(
    db_url: str,
) -> None:
    """Complaints arriving together are merged in batches: none lost, none counted twice."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        await rt.core.on_message(message("checkout is broken, cannot pay", "m0", author="u0"))
        await rt.settle()
        burst = [
            message(
                "checkout is broken, cannot pay" + (" lawsuit" if i == 7 else ""),
                f"m{i}",
                author=f"u{i}",
            )
            for i in range(1, 30)
        ]
        await asyncio.gather(*(rt.core.on_message(e) for e in burst + burst[:5]))
        await rt.settle()
        flag = await _flag(rt)
        assert flag.incident_size == 30
        assert flag.severity == "high"  # one of them was a legal threat
        assert len([a for a in slack.done if isinstance(a, PostFlagCard)]) == 1
        card = await rt.core.card(flag.id or 0)
        assert card is not None and card.incident_size == 30
        merged = await rt.db.run(
            lambda s: [a.detail for a in s.scalars(select(AuditLog)) if a.action == "merged"]
        )
        joined = {m for d in merged for m in d.removeprefix("joined: ").split(", ")}
        assert joined == {f"m{i}" for i in range(1, 30)}


async def test_a_burst_that_starts_an_incident_is_one_flag_and_one_card(db_url: str) -> None:
    """The first complaint's flag is still being written while its duplicates arrive:
    they wait for it and join it, rather than racing it to cards of their own."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        burst = [
            message("checkout is broken, cannot pay", f"m{i}", author=f"u{i}") for i in range(12)
        ]
        await asyncio.gather(*(rt.core.on_message(e) for e in burst))
        await rt.settle()
        flags = await rt.db.run(lambda s: list(s.scalars(select(Flag))))
        assert [(f.message_id, f.incident_size) for f in flags] == [("m0", 12)]
        assert len([a for a in slack.done if isinstance(a, PostFlagCard)]) == 1


async def test_a_duplicate_of_a_resolved_incident_is_a_new_flag(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _):
        await rt.core.on_message(message("checkout is broken, cannot pay", "m0", author="u0"))
        await rt.settle()
        first = await _flag(rt)
        assert (await rt.core.resolve(first.id or 0, "M1")).ok
        clock.advance(minutes=5)
        await rt.core.on_message(
            message("checkout is broken, cannot pay", "m1", author="u1", at=clock.now())
        )
        await rt.settle()
        flags = await rt.db.run(lambda s: list(s.scalars(select(Flag).order_by(col(Flag.id)))))
        assert [(f.message_id, f.state, f.incident_size) for f in flags] == [
            ("m0", "resolved", 1),
            ("m1", "open", 1),
        ]
        assert len([a for a in slack.done if isinstance(a, PostFlagCard)]) == 2


async def test_a_reply_then_resolve_is_one_decision_learned_at_once(db_url: str) -> None:
    """Sending the reply confirms the flag (the detector learns it then); resolving the
    replied flag afterwards is the same decision, not a second one."""
    judge = KeywordJudge()
    async with runtime(db_url, ManualClock(), judge) as (rt, _slack, _discord):
        await rt.core.on_message(message("want a refund now", "m1"))
        await rt.settle()
        flag_id = (await _flag(rt)).id or 0
        assert (await rt.core.send(flag_id, "M1")).ok
        await rt.settle()
        assert (await _flag(rt)).state == "replied"
        assert ("discord:g1", "want a refund now") in judge.learned
        assert (await rt.core.resolve(flag_id, "M1")).ok
        rows = await rt.db.run(
            lambda s: [(f.source, f.flag_id) for f in s.scalars(select(Feedback))]
        )
        assert rows == [("confirm", flag_id)]
        status = await rt.core.status_text("discord", "g1")
        assert "learned from 1 manager decision" in status, status


async def test_no_unclaimed_reminder_while_a_reply_is_being_sent(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, discord):
        await rt.core.on_message(message("lawsuit incoming, this is dangerous", "m1"))
        await rt.settle()
        flag_id = (await _flag(rt)).id or 0
        discord.refuse_with, discord.retryable = "503 Service Unavailable", True
        assert (await rt.core.send(flag_id, "M1")).ok
        await rt.outbox.run_once()
        card = await rt.core.card(flag_id)
        assert card is not None and card.state == "sending"
        clock.advance(minutes=20)  # past the high SLA, but a manager is on it
        assert await rt.flags.check_sla() == 0
        await rt.settle()
        assert [a for a in slack.done if isinstance(a, PostCardThreadReply)] == []


async def test_a_reminder_that_waited_is_not_posted_once_the_flag_is_claimed(db_url: str) -> None:
    """Slack was struggling when the SLA passed, so the reminder waited in the outbox; a
    manager claimed the flag meanwhile: the reminder is moot and is not posted."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, slack, _discord):
        await rt.core.on_message(message("lawsuit incoming, this is dangerous", "m1"))
        await rt.settle()
        flag_id = (await _flag(rt)).id or 0
        clock.advance(minutes=16)
        slack.refuse_with, slack.retryable = "ratelimited", True
        assert await rt.flags.check_sla() == 1
        await rt.settle()
        slack.refuse_with = None
        assert (await rt.core.claim(flag_id, "M1")).ok
        clock.advance(minutes=2)  # the outbox retries what waited
        await rt.settle()
        assert [a for a in slack.done if isinstance(a, PostCardThreadReply)] == []


class SlowPlatform(RecordingExecutor):
    """A platform that takes its time over a reply (a rate-limit wait, a slow network)."""

    def __init__(self) -> None:
        super().__init__("discord")
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def execute(self, action: Action) -> ActionResult:
        if isinstance(action, ReplyInThread):
            self.entered.set()
            await self.release.wait()
        return await super().execute(action)


async def test_a_replica_starting_leaves_work_another_replica_is_doing(db_url: str) -> None:
    """Replica B starts (a rolling deploy) while replica A is posting a reply: B must not
    take the reply over and post it a second time."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _slack, _discord):
        await rt.core.on_message(message("want a refund now", "m1"))
        await rt.settle()
        flag_id = (await _flag(rt)).id or 0
        slow = SlowPlatform()
        rt.outbox.register(slow)  # replica A's Discord
        assert (await rt.core.send(flag_id, "M1")).ok
        a = asyncio.create_task(rt.outbox.run_once())
        await slow.entered.wait()

        b_discord = RecordingExecutor("discord")
        b = Outbox(rt.db, clock)
        b.register(b_discord)
        assert await b.recover() == 0
        await b.drain()

        slow.release.set()
        await a
        replies = [x for x in slow.done + b_discord.done if isinstance(x, ReplyInThread)]
        assert len(replies) == 1


async def test_work_that_runs_long_keeps_its_claim(db_url: str) -> None:
    """A reply waiting on a slow platform has its lease renewed, so no replica starting
    later takes it over either."""
    clock = ManualClock()
    waiting, tick = asyncio.Event(), asyncio.Event()

    async def one_renewal_per_tick(seconds: float) -> None:
        waiting.set()
        await tick.wait()
        tick.clear()
        clock.advance(seconds=seconds)

    async with runtime(db_url, clock) as (rt, _slack, _discord):
        await rt.core.on_message(message("want a refund now", "m1"))
        await rt.settle()
        flag_id = (await _flag(rt)).id or 0
        slow = SlowPlatform()
        a_outbox = Outbox(rt.db, clock, sleep=one_renewal_per_tick)
        a_outbox.register(slow)
        assert (await rt.core.send(flag_id, "M1")).ok
        a = asyncio.create_task(a_outbox.run_once())
        await slow.entered.wait()
        for _ in range(6):  # two leases' worth of time passes while the reply hangs
            await waiting.wait()
            waiting.clear()
            tick.set()
        await waiting.wait()  # the last renewal is written; the keeper waits again
        b_discord = RecordingExecutor("discord")
        b = Outbox(rt.db, clock)
        b.register(b_discord)
        assert await b.recover() == 0
        await b.drain()
        assert [x for x in b_discord.done if isinstance(x, ReplyInThread)] == []
        slow.release.set()
        await a
        assert len([x for x in slow.done if isinstance(x, ReplyInThread)]) == 1


async def test_an_outcome_that_cannot_be_recorded_leaves_the_other_lanes_running(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording one item's outcome fails (the database went away for a moment) while a
    reply in another lane is still being posted: the round must wait for that reply and
    keep its lease, not end and leave it to be claimed and posted again."""
    clock = ManualClock()
    loop = asyncio.get_running_loop()
    fast_failed = asyncio.Event()
    real_finish = queries.finish
    calls = 0

    def finish_fails_once(s: Any, item_id: int, now: Any, result: Any, attempt: Any = None) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            loop.call_soon_threadsafe(fast_failed.set)
            raise RuntimeError("the database went away for a moment")
        real_finish(s, item_id, now, result, attempt)

    async with runtime(db_url, clock) as (rt, _slack, _discord):
        slow = SlowPlatform()
        outbox = Outbox(rt.db, clock)
        outbox.register(slow)
        to = Target("discord", "g1", "c1")

        def enqueue(s: Any) -> None:
            outbox.enqueue_in(s, PostMessage(to, "fast"), "k-fast")
            outbox.enqueue_in(s, ReplyInThread(to, "slow", flag_id=99), "k-slow")  # own lane

        await rt.db.run(enqueue)
        monkeypatch.setattr(queries, "finish", finish_fails_once)
        first = asyncio.create_task(outbox.run_once())
        await slow.entered.wait()
        await fast_failed.wait()
        for _ in range(5):  # let an error in the fast lane end the round, if it would
            await asyncio.sleep(0)
        assert not first.done()
        slow.release.set()
        assert await first == 2
        clock.advance(seconds=queries.OUTBOX_LEASE_S + 1)  # the fast item runs again
        await outbox.drain()
        texts = [getattr(a, "text", "") for a in slow.done]
        assert texts.count("slow") == 1 and texts.count("fast") == 2
