"""The core: what happens when something happens in a community.

Adapters call :class:`Core` with neutral events; it stores, judges and flags, and
answers the managers' actions through :class:`~handlers.flags.FlagService`. It knows
nothing about Discord or Slack.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from handlers.clock import Clock
from handlers.detect.competitors import CompetitorWatch
from handlers.detect.escalation import EscalationPolicy, IncidentIndex
from handlers.detect.lexicon import load_vader_lexicon
from handlers.events import MemberJoinEvent, MessageEvent, MessageKind, ReactionEvent
from handlers.flags import FlagService
from handlers.ingest import IngestWriter
from handlers.judging import Judge, SecondOpinion, VerdictLike, community_key
from handlers.ports import ChannelInfo, CommunitySettings, FlagCardView, FlagOutcome
from handlers.watch import FlagWatch, WatchedFlag
from storage import queries
from storage.db import Database
from storage.models import Feedback, Flag, Member, Message
from storage.queries import DeleteRow, EditRow, IngestOp, NewMessageRow, ReactionRow

logger = logging.getLogger(__name__)

RECENT_THREADS = 50
"""How many recently active threads per channel a backfill reads again."""


def _storable(event: MessageEvent) -> MessageEvent:
    """PostgreSQL cannot store NUL in text; it would cost the message its row."""
    if "\x00" in event.text:
        return replace(event, text=event.text.replace("\x00", "\ufffd"))
    return event


def _new_row(
    event: MessageEvent,
    verdict: VerdictLike | None,
    mentions: tuple[tuple[str, str, float], ...],
) -> NewMessageRow:
    """The row a new message is stored as; reason and severity only for a complaint."""
    negative = verdict is not None and verdict.is_negative
    return NewMessageRow(
        platform=event.platform,
        community_id=event.community_id,
        channel_id=event.channel_id,
        message_id=event.message_id,
        thread_id=event.thread_id,
        reply_to=event.reply_to,
        author_id=event.author.id,
        author_name=event.author.name,
        text=event.text,
        created_at=event.created_at,
        score=verdict.score if verdict is not None else None,
        reason=verdict.reason if verdict is not None and negative else None,
        severity=verdict.severity if verdict is not None and negative else None,
        permalink=event.permalink,
        mentions=mentions,
    )


def _message_key(event: MessageEvent) -> tuple[str, str, str, str]:
    return (event.platform, event.community_id, event.channel_id, event.message_id)


@dataclass(frozen=True, slots=True)
class ManualVerdict:
    """A manager's hand-raised flag: negative by definition."""

    score: float = 1.0
    is_negative: bool = True
    reason: str = "other"
    severity: str = "medium"
    rationale: str = "flagged by hand"


@dataclass
class CoreStats:
    messages: int = 0
    flagged: int = 0
    skipped_opted_out: int = 0
    skipped_unwatched: int = 0
    escalations: int = 0
    reviewed: int = 0
    by_platform: dict[str, int] = field(default_factory=dict)
    by_community: Counter[tuple[str, str]] = field(default_factory=Counter)
    """New messages stored since start, per (platform, community)."""
    sent_to_llm: Counter[tuple[str, str]] = field(default_factory=Counter)
    """New messages whose verdict the LLM was asked about, per community."""
    llm_fell_back: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Of those, the ones where the LLM gave no usable answer (the local verdict stood)."""


class Core:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        judge: Judge,
        flags: FlagService,
        writer: IngestWriter,
        *,
        escalation: EscalationPolicy | None = None,
        incidents: IncidentIndex | None = None,
        second_opinion: SecondOpinion | None = None,
        competitors: Sequence[str] = (),
    ) -> None:
        self._db = db
        self._clock = clock
        self._judge = judge
        self.flags = flags
        self._writer = writer
        writer.observers.append(self._count_stored)
        self._opted_out: set[tuple[str, str, str]] = set()
        self._unwatched: set[tuple[str, str, str]] = set()
        self._watch = FlagWatch(db, clock, flags, escalation=escalation, incidents=incidents)
        self._second = second_opinion
        # Competitor names: a default for every community, overridden per community.
        self._valence = load_vader_lexicon()
        self._default_watch = self._competitor_watch(competitors)
        self._watches: dict[tuple[str, str], CompetitorWatch | None] = {}
        """Communities whose admin set their own list (an empty one included)."""
        self._reviews: set[asyncio.Task[None]] = set()
        self._arrivals: list[MessageEvent] = []
        """New messages taken by :meth:`accept`, judged together in the next pass."""
        self._follow_ups: set[asyncio.Task[None]] = set()
        self.stats = CoreStats()
        self._stored_settings: dict[tuple[str, str], dict[str, object]] = {}
        self._in_review: Counter[tuple[str, str, str, str]] = Counter()
        """Messages whose second opinion is pending (an edit then needs one of its own)."""
        """Admin settings as last read from the database, per (platform, community)."""

    async def start(self) -> None:
        """Load what the hot path consults from memory, and replay managers' feedback."""

        def load(
            s: Session,
        ) -> tuple[
            set[tuple[str, str, str]], set[tuple[str, str, str]], list[tuple[str, str, bool]]
        ]:
            fb = [
                (community_key(f.platform, f.community_id), f.text, f.is_negative)
                for f in queries.all_feedback(s)
            ]
            return queries.opted_out_members(s), queries.unwatched_channels(s), fb

        self._opted_out, self._unwatched, feedback = await self._db.run(load)
        for key, text, is_negative in feedback:
            self._judge.learn(key, text, is_negative)
        if feedback:
            logger.info("replayed %d feedback example(s) into the detector", len(feedback))
        await self.reload_settings()
        self._writer.start()
        self._watch.restore(await self.flags.open_flags())
        await self.flags.resume_drafts()

    async def stop(self) -> None:
        await self.flush()
        if self._follow_ups:  # flags of the last complaints: give them a moment
            await asyncio.wait(set(self._follow_ups), timeout=10)
        await self._writer.stop()
        await self.flags.stop()

    async def flush(self) -> None:
        """Judge what has arrived and wait until it, and every write before it, is
        committed. Readers of the log call this first."""
        self._judge_arrivals()
        await self._writer.flush()

    # -- CommunityCore ------------------------------------------------------------------
    async def on_message(self, event: MessageEvent) -> None:
        self._judge_arrivals()  # whatever arrived before this goes first, in order
        if event.kind is MessageKind.NEW:
            follow_up = self._take(event)
            if follow_up is not None:
                await follow_up
            return
        if event.kind is MessageKind.DELETE:
            # Erasing is honoured for everyone: opted-out members, unwatched channels.
            await self._writer.submit(
                DeleteRow(
                    event.platform,
                    event.community_id,
                    event.channel_id,
                    event.message_id,
                    event.edited_at or event.created_at,
                )
            )
            await self._refresh_flag_card(event, "erased", "the member deleted the message")
            return
        judged = self._judged(event)
        if judged is None:
            return
        event, verdict = judged
        await self.flush()  # the message may still be on its way to the database
        flag_ids, was_complaint = await self._db.run(
            lambda s: queries.edit_context(
                s, event.platform, event.community_id, event.channel_id, event.message_id
            )
        )
        await self._writer.submit(
            EditRow(
                _new_row(event, verdict, self._mentions(event)),
                event.edited_at or self._clock.now(),
            )
        )
        if flag_ids:
            await self.flags.refresh_cards(flag_ids, "edited", "the member edited the message")
        elif (
            not was_complaint or _message_key(event) in self._in_review
        ) and self._watch.thread_flag(event) is None:
            # An edit that turns a message into a complaint is followed up like a new
            # one; a complaint already followed up (flagged, merged into an incident,
            # overruled by the second opinion) is not followed up again. One still in
            # review is: that review is about the text before the edit.
            await self._review_or_flag(event, verdict)

    async def _refresh_flag_card(self, event: MessageEvent, action: str, detail: str) -> bool:
        """A flagged message changed: its card must not keep showing the old text.
        Returns whether the message had a flag."""
        ids = await self._db.run(
            lambda s: queries.flag_ids_for_message(
                s, event.platform, event.community_id, event.channel_id, event.message_id
            )
        )
        await self.flags.refresh_cards(ids, action, detail)
        return bool(ids)

    def accept(self, event: MessageEvent) -> None:
        """Take a new message without a task or an await of its own.

        Messages taken this way are judged together, in arrival order, once the event
        loop is free: judging them back to back keeps the detector's tables in the CPU
        cache, where one at a time between discord.py's parsing they were not (14 µs a
        message instead of 8). What follows a commit (a flag, a second opinion, a
        flagged thread's escalation) runs as the core's own task; :meth:`flush` and
        :meth:`wait_reviews` wait for them.
        """
        if not self._arrivals:
            asyncio.get_running_loop().call_soon(self._judge_arrivals)
        self._arrivals.append(event)

    def _judge_arrivals(self) -> None:
        arrivals, self._arrivals = self._arrivals, []
        for event in arrivals:
            try:
                follow_up = self._take(event)
            except Exception:
                logger.exception("taking message %s failed", event.message_id)
                continue
            if follow_up is not None:
                task = asyncio.create_task(follow_up, name=f"rapport-follow-up-{event.message_id}")
                self._follow_ups.add(task)
                task.add_done_callback(self._follow_up_done)

    def _follow_up_done(self, task: asyncio.Task[None]) -> None:
        self._follow_ups.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("following up a message failed", exc_info=task.exception())

    def _take(self, event: MessageEvent) -> Coroutine[Any, Any, None] | None:
        """Judge a new message and queue it for the batched write; returns what must
        follow its commit, or None (most messages)."""
        judged = self._judged(event)
        if judged is None:
            return None
        event, verdict = judged
        try:
            row = _new_row(event, verdict, self._mentions(event))
            if not self._follows_up(event, verdict):
                # Most messages: stored and judged, nothing else to do. Not waiting for
                # the commit spares a future and a wake-up per message; the write is in
                # the same batch either way, and a flush waits for it.
                self._writer.enqueue(row)
                return None
            return self._follow_up(event, verdict, self._writer.submit_nowait(row))
        except Exception:  # a junk verdict or a failed mention search: store it plainly
            logger.exception(
                "message %s stored unjudged: using its verdict failed", event.message_id
            )
            self._writer.enqueue(_new_row(event, None, ()))
            return None

    def _mentions(self, event: MessageEvent) -> tuple[tuple[str, str, float], ...]:
        """``(competitor, sentiment, score)`` for each competitor the message names."""
        watch = self._watches.get((event.platform, event.community_id), self._default_watch)
        if watch is None or not event.text:
            return ()
        return tuple((m.name, m.sentiment, m.score) for m in watch.find(event.text))

    def _judged(self, event: MessageEvent) -> tuple[MessageEvent, VerdictLike | None] | None:
        """The storable form of a new or edited message and its verdict; None when it is
        not to be stored (the bot's own, an unwatched channel, an opted-out member)."""
        if not self._admitted(event):
            return None
        if (event.platform, event.community_id, event.author.id) in self._opted_out:
            self.stats.skipped_opted_out += 1
            return None
        event = _storable(event)
        if not event.text:
            return event, None
        try:
            key = community_key(event.platform, event.community_id)
            return event, self._judge.judge(event.text, key)
        except Exception:  # stored unjudged rather than lost
            logger.exception("judging message %s failed", event.message_id)
            return event, None

    def _admitted(self, event: MessageEvent) -> bool:
        """Not the bot's own message, nor in an unwatched channel or thread (counted)."""
        if event.author.is_bot:
            return False
        if (event.platform, event.community_id, event.channel_id) in self._unwatched or (
            event.thread_id is not None
            and (event.platform, event.community_id, event.thread_id) in self._unwatched
        ):
            self.stats.skipped_unwatched += 1
            return False
        return True

    async def _follow_up(
        self, event: MessageEvent, verdict: VerdictLike | None, committed: asyncio.Future[bool]
    ) -> None:
        if not await committed:
            return  # a redelivery (retry, backfill): already judged and counted
        watched = self._watch.thread_flag(event)
        if watched is not None and not await self._watch.still_open(watched):
            watched = None  # its flag was answered or closed: this reply stands on its own
        if watched is not None:
            # A reply in a flagged thread counts towards that flag, not a card of its own.
            if await self._watch.escalate(watched):
                self.stats.escalations += 1
        else:
            await self._review_or_flag(event, verdict)

    async def _review_or_flag(self, event: MessageEvent, verdict: VerdictLike | None) -> None:
        """A borderline verdict gets a second opinion (in its own task); a complaint a flag."""
        if verdict is not None and self._second is not None and self._second.wants(verdict):
            task = asyncio.create_task(self._review(event))
            self._reviews.add(task)
            task.add_done_callback(self._reviews.discard)
        elif verdict is not None and verdict.is_negative:
            await self._flag(event, verdict)

    def _follows_up(self, event: MessageEvent, verdict: VerdictLike | None) -> bool:
        """Whether a new message needs more than storing once committed (and if fresh)."""
        return self._watch.thread_flag(event) is not None or (
            verdict is not None
            and (verdict.is_negative or (self._second is not None and self._second.wants(verdict)))
        )

    def _count_stored(self, ops: list[IngestOp], fresh: list[bool]) -> None:
        """Count new messages as their batch commits (redeliveries are not counted)."""
        n = 0
        per_community = self.stats.by_community
        for op, is_fresh in zip(ops, fresh, strict=True):
            if is_fresh and type(op) is NewMessageRow:
                n += 1
                per_community[op.platform, op.community_id] += 1
        self.stats.messages += n

    async def _review(self, event: MessageEvent) -> None:
        assert self._second is not None
        key = _message_key(event)
        self._in_review[key] += 1
        try:
            final = await self._second.review(
                event.text, community_key(event.platform, event.community_id)
            )
            self.stats.reviewed += 1
            if event.kind is MessageKind.NEW:  # the share is of new messages
                where = (event.platform, event.community_id)
                self.stats.sent_to_llm[where] += 1
                if getattr(final, "source", "llm") != "llm":
                    self.stats.llm_fell_back[where] += 1
            if final.is_negative:
                await self._flag(event, final)
            else:  # overruled: stored as not a complaint, so an edit can still be one
                await self._db.run(
                    lambda s: queries.clear_complaint(
                        s,
                        event.platform,
                        event.community_id,
                        event.channel_id,
                        event.message_id,
                        event.text,
                    )
                )
        except Exception:
            logger.exception("second opinion on message %s failed", event.message_id)
        finally:
            self._in_review[key] -= 1
            if not self._in_review[key]:
                del self._in_review[key]

    async def wait_reviews(self) -> None:
        """Wait until what follows taken messages (flags, escalations, second opinions)
        is done."""
        self._judge_arrivals()
        while self._reviews or self._follow_ups:
            await asyncio.gather(*self._reviews, *self._follow_ups, return_exceptions=True)

    async def _flag(self, event: MessageEvent, verdict: VerdictLike) -> None:
        outcome = await self._watch.raise_flag(event, verdict)
        if outcome.ok and outcome.flag_id is not None:
            self.stats.flagged += 1

    async def on_reaction(self, event: ReactionEvent) -> None:
        self._judge_arrivals()  # the message reacted to may be among them
        if (event.platform, event.community_id, event.member_id) in self._opted_out:
            return
        await self._writer.submit(
            ReactionRow(
                event.platform,
                event.community_id,
                event.channel_id,
                event.message_id,
                event.member_id,
                event.emoji,
                event.added,
                event.at,
            )
        )
        # Reactions under a flagged message are agreement too (see ``escalate``).
        watched = self._watch.message_flag(event.platform, event.community_id, event.message_id)
        if watched is not None and await self._watch.escalate(watched):
            self.stats.escalations += 1

    async def on_member_join(self, event: MemberJoinEvent) -> None:
        if event.member.is_bot:  # a bot joining is not a member of the community
            return
        now = event.at

        def work(s: Session) -> None:
            existing = s.scalars(
                select(Member).where(
                    col(Member.platform) == event.platform,
                    col(Member.community_id) == event.community_id,
                    col(Member.external_id) == event.member.id,
                )
            ).first()
            if existing is None:
                s.add(
                    Member(
                        platform=event.platform,
                        community_id=event.community_id,
                        external_id=event.member.id,
                        display_name=event.member.name,
                        first_seen=now,
                        last_seen=now,
                    )
                )

        await self._db.run(work)

    async def register_community(
        self, platform: str, community_id: str, name: str, channels: list[ChannelInfo]
    ) -> None:
        now = self._clock.now()

        def work(s: Session) -> None:
            queries.upsert_community(s, platform, community_id, name, now)
            queries.upsert_channels(
                s, platform, community_id, [(c.id, c.name, c.is_thread) for c in channels]
            )

        await self._db.run(work)

    async def is_watched(self, platform: str, community_id: str, channel_id: str) -> bool:
        return (platform, community_id, channel_id) not in self._unwatched

    async def last_message_id(
        self, platform: str, community_id: str, channel_id: str, before: datetime | None = None
    ) -> str | None:
        await self.flush()
        return await self._db.run(
            lambda s: queries.last_message_id(s, platform, community_id, channel_id, before)
        )

    async def recent_threads(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> list[tuple[str, datetime]]:
        await self.flush()
        return await self._db.run(
            lambda s: queries.recent_threads(
                s, platform, community_id, channel_id, since, RECENT_THREADS
            )
        )

    async def known_channels(self, platform: str) -> list[tuple[str, str]]:
        await self.flush()
        pairs = await self._db.run(lambda s: queries.channels_with_messages(s, platform))
        return [p for p in pairs if (platform, *p) not in self._unwatched]

    async def recent_message_ids(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> set[str]:
        await self.flush()
        return await self._db.run(
            lambda s: queries.recent_message_ids(s, platform, community_id, channel_id, since)
        )

    async def manual_flag(
        self, platform: str, community_id: str, channel_id: str, message_id: str, actor: str
    ) -> FlagOutcome:
        """A moderator flags a message by hand: a flag, and a "negative" example to learn."""
        await self.flush()
        msg = await self._db.run(
            lambda s: queries.get_message(s, platform, community_id, channel_id, message_id)
        )
        if msg is None or (platform, community_id, msg.author_id) in self._opted_out:
            # An opted-out member's message keeps only its id: no card, no reply to them.
            return FlagOutcome(
                False,
                "Rapport has not stored that message (unwatched channel or opted-out member).",
            )
        verdict = (
            self._judge.judge(msg.text, community_key(platform, community_id)) if msg.text else None
        )
        manual = ManualVerdict(
            score=verdict.score if verdict else 1.0,
            reason=verdict.reason if verdict and verdict.reason else "other",
            severity=verdict.severity if verdict and verdict.is_negative else "medium",
            rationale=f"flagged by hand by {actor}",
        )
        outcome = await self.flags.raise_flag(
            platform, community_id, channel_id, message_id, manual, source="manual", actor=actor
        )
        if outcome.ok and outcome.flag_id is not None and "Already" not in outcome.message:
            # Its thread is watched like a detector's flag: replies escalate it.
            self._watch.watch(
                WatchedFlag(
                    outcome.flag_id,
                    platform,
                    community_id,
                    message_id,
                    msg.thread_id,
                    msg.author_id,
                    manual.severity,
                )
            )
        if outcome.ok and msg.text and "Already" not in outcome.message:
            now = self._clock.now()
            await self._db.run(
                lambda s: queries.add_feedback(
                    s, platform, community_id, msg.text, True, "manual", actor, now, outcome.flag_id
                )
            )
            self._judge.learn(community_key(platform, community_id), msg.text, True)
        return outcome

    async def status_text(self, platform: str, community_id: str) -> str:
        await self.flush()

        def work(s: Session) -> tuple[int, int, int, dict[bool, int]]:
            msgs = s.execute(
                select(func.count())
                .select_from(Message)
                .where(
                    col(Message.platform) == platform,
                    col(Message.community_id) == community_id,
                    col(Message.deleted_at).is_(None),
                )
            ).scalar_one()
            open_flags = s.execute(
                select(func.count())
                .select_from(Flag)
                .where(
                    col(Flag.platform) == platform,
                    col(Flag.community_id) == community_id,
                    col(Flag.state).in_(("open", "claimed")),
                )
            ).scalar_one()
            members = s.execute(
                select(func.count())
                .select_from(Member)
                .where(
                    col(Member.platform) == platform,
                    col(Member.community_id) == community_id,
                    col(Member.message_count) > 0,
                    col(Member.opted_out).is_(False),
                )
            ).scalar_one()
            decisions = s.execute(
                select(col(Feedback.is_negative), func.count())
                .where(
                    col(Feedback.platform) == platform, col(Feedback.community_id) == community_id
                )
                .group_by(col(Feedback.is_negative))
            ).all()
            return int(msgs), int(open_flags), int(members), {bool(k): int(n) for k, n in decisions}

        msgs, open_flags, members, decisions = await self._db.run(work)
        unwatched = sum(1 for p, c, _ in self._unwatched if p == platform and c == community_id)
        watching = "all readable channels" if not unwatched else f"all but {unwatched} channel(s)"
        text = (
            f"Rapport is listening: {msgs} messages logged from {members} members; "
            f"{open_flags} open flag(s); watching {watching}."
        )
        settings = await self.community_settings(platform, community_id)
        text += f" Sensitivity {settings.sensitivity:.2f}"
        if settings.sensitivity == settings.default_sensitivity:
            text += " (the default)."
        else:
            text += f" (default {settings.default_sensitivity:.2f})."
        if settings.competitors:
            text += f" Competitors tagged: {', '.join(sorted(settings.competitors))}."
        if decisions:
            n = sum(decisions.values())
            text += (
                f" The detector has learned from {n} manager decision{'s' if n != 1 else ''} "
                f"here ({decisions.get(False, 0)} not negative, {decisions.get(True, 0)} negative)."
            )
            raising, lowering = self._judge.learned_terms(community_key(platform, community_id))
            if raising:
                text += f" It now scores higher: {', '.join(raising)}."
            if lowering:
                text += f" Lower: {', '.join(lowering)}."
        where = (platform, community_id)
        judged = self.stats.by_community[where]
        if self._second is not None and judged:
            sent = self.stats.sent_to_llm[where]
            text += (
                f" LLM judge: {sent / judged:.1%} of this community's messages since start "
                "were borderline and sent to it"
            )
            fell_back = self.stats.llm_fell_back[where]
            text += (
                f" ({fell_back} got no usable answer and kept the local verdict)."
                if fell_back
                else "."
            )
        return text

    # -- admin ----------------------------------------------------------------------------
    async def set_watched(
        self, platform: str, community_id: str, channel_id: str, watched: bool
    ) -> None:
        await self._db.run(
            lambda s: queries.set_channel_watched(s, platform, community_id, channel_id, watched)
        )
        key = (platform, community_id, channel_id)
        if watched:
            self._unwatched.discard(key)
        else:
            self._unwatched.add(key)

    def _competitor_watch(self, names: Sequence[str]) -> CompetitorWatch | None:
        """None when there is nothing to watch, so the hot path skips the search."""
        watch = CompetitorWatch(names, self._valence)
        return watch if watch.names else None

    async def reload_settings(self) -> int:
        """Put into effect the admin settings stored by any replica; returns how many
        communities' settings changed. A replica applies its own admins' changes at once;
        this picks up the others' (run periodically) and settings reset to default."""
        await self.flush()  # messages that arrived before a change are judged as before
        # Read after the flush and apply without awaiting again: an admin's change on
        # this replica meanwhile cannot be overwritten by an older snapshot.
        stored = {(p, c): st for p, c, st in await self._db.run(queries.community_settings)}
        changed = [
            where
            for where in stored.keys() | self._stored_settings.keys()
            if stored.get(where, {}) != self._stored_settings.get(where, {})
        ]
        for platform, community_id in changed:
            self._judge.set_sensitivity(community_key(platform, community_id), None)
            self._watches.pop((platform, community_id), None)
            self._apply_settings(platform, community_id, stored.get((platform, community_id), {}))
        self._stored_settings = stored
        return len(changed)

    def _apply_settings(
        self, platform: str, community_id: str, settings: dict[str, object]
    ) -> None:
        """Put a community's stored admin settings into effect; a malformed value is
        logged and ignored (the default applies) rather than stopping the start."""
        names = settings.get("competitors")
        if isinstance(names, list):
            cleaned = [str(n) for n in names]
            self._watches[(platform, community_id)] = self._competitor_watch(cleaned)
        threshold = settings.get("sensitivity")
        if threshold is None:
            return
        key = community_key(platform, community_id)
        if isinstance(threshold, int | float) and 0.0 < threshold < 1.0:
            self._judge.set_sensitivity(key, float(threshold))
        else:
            logger.warning("ignoring stored sensitivity %r of %s", threshold, key)

    async def community_settings(self, platform: str, community_id: str) -> CommunitySettings:
        watch = self._watches.get((platform, community_id), self._default_watch)
        return CommunitySettings(
            sensitivity=self._judge.threshold_for(community_key(platform, community_id)),
            default_sensitivity=self._judge.threshold_for(None),
            competitors=tuple(watch.names) if watch is not None else (),
            competitors_are_default=(platform, community_id) not in self._watches,
        )

    async def set_sensitivity(
        self, platform: str, community_id: str, threshold: float | None
    ) -> None:
        """An admin sets the score from which this community's messages are flagged;
        stored, and in effect from the next message (``None``: the default)."""
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"sensitivity must be between 0 and 1, got {threshold}")
        now = self._clock.now()
        await self._db.run(
            lambda s: queries.set_community_setting(
                s, platform, community_id, "sensitivity", threshold, now
            )
        )
        await self.flush()  # messages that arrived before the change are judged as before
        self._judge.set_sensitivity(community_key(platform, community_id), threshold)

    async def set_competitors(
        self, platform: str, community_id: str, names: Sequence[str] | None
    ) -> None:
        """An admin sets the competitor names tagged in this community's messages
        (``None``: the deployment's default list, ``RAPPORT_COMPETITORS``)."""
        cleaned = (
            None if names is None else list(dict.fromkeys(n.strip() for n in names if n.strip()))
        )
        now = self._clock.now()
        await self._db.run(
            lambda s: queries.set_community_setting(
                s, platform, community_id, "competitors", cleaned, now
            )
        )
        await self.flush()
        if cleaned is None:
            self._watches.pop((platform, community_id), None)
        else:
            self._watches[(platform, community_id)] = self._competitor_watch(cleaned)

    async def competitor_mentions(
        self, platform: str, community_id: str, days: int = 7
    ) -> list[tuple[str, str, int]]:
        await self.flush()
        since = self._clock.now() - timedelta(days=days)
        return await self._db.run(
            lambda s: queries.competitor_mention_counts(s, platform, community_id, since)
        )

    async def set_opt_out(
        self, platform: str, community_id: str, member_id: str, opted_out: bool
    ) -> int:
        """Stop (or resume) storing a member; opting out erases what was stored of them."""
        key = (platform, community_id, member_id)
        if opted_out:
            self._opted_out.add(key)
        await self.flush()
        now = self._clock.now()

        def work(s: Session) -> tuple[int, list[int]]:
            n = queries.set_opt_out(s, platform, community_id, member_id, opted_out, now)
            flags = queries.flag_ids_by_author(s, platform, community_id, member_id)
            return n, flags if opted_out else []

        n, flag_ids = await self._db.run(work)
        await self.flags.refresh_cards(flag_ids, "erased", "the member opted out")
        if not opted_out:
            self._opted_out.discard(key)
        return n

    # -- FlagWorkflow (the managers' side) ----------------------------------------------------
    def is_manager(self, user_id: str) -> bool:
        return self.flags.is_manager(user_id)

    async def claim(self, flag_id: int, actor: str) -> FlagOutcome:
        return await self.flags.claim(flag_id, actor)

    async def send(self, flag_id: int, actor: str, text: str | None = None) -> FlagOutcome:
        return await self.flags.send(flag_id, actor, text)

    async def dismiss(self, flag_id: int, actor: str) -> FlagOutcome:
        return await self.flags.dismiss(flag_id, actor)

    async def resolve(self, flag_id: int, actor: str) -> FlagOutcome:
        return await self.flags.resolve(flag_id, actor)

    async def card(self, flag_id: int) -> FlagCardView | None:
        return await self.flags.card(flag_id)
