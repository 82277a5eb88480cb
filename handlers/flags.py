"""The flag workflow: raise, draft, claim, send, dismiss, resolve, remind.

A flag is written first and delivered after (its card goes through the outbox). State
changes are conditional updates on the flag row, so two managers clicking Send at the
same moment produce one reply. Every manager action lands in the audit log, and the
ones that say something about the message (dismiss, send, resolve, a manual flag) are
fed back to the detector.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlmodel import Session, col

from handlers.batching import BatchWriter
from handlers.clock import Clock
from handlers.events import (
    Action,
    ActionResult,
    PostCardThreadReply,
    PostFlagCard,
    ReplyInThread,
    Target,
    UpdateFlagCard,
)
from handlers.judging import DraftJob, DraftMaker, Judge, VerdictLike, community_key
from handlers.outbox import Outbox
from handlers.ports import ContextLine, FlagCardView, FlagOutcome, HistoryLine
from storage import queries
from storage.db import Database
from storage.models import AuditLog, Channel, Community, Flag, Message

_FLAGS = Flag.__table__  # type: ignore[attr-defined]
# Statements of the per-complaint merge, built once: building them each batch cost more
# than running them.
_MERGE_HEADS = select(
    _FLAGS.c.id,
    _FLAGS.c.incident_key,
    _FLAGS.c.state,
    _FLAGS.c.created_at,
    _FLAGS.c.severity,
    _FLAGS.c.incident_size,
    _FLAGS.c.version,
    _FLAGS.c.message_id,
    _FLAGS.c.quoted_text,
).where(_FLAGS.c.id.in_(bindparam("ids", expanding=True)))
_MERGE_UPDATE = (
    update(_FLAGS)
    .where(_FLAGS.c.id == bindparam("head"))
    .values(
        incident_size=bindparam("size"),
        version=bindparam("version"),
        escalation=bindparam("escalation"),
        severity=bindparam("severity"),
        next_reminder_at=func.coalesce(bindparam("reminder_at"), _FLAGS.c.next_reminder_at),
    )
)

logger = logging.getLogger(__name__)

OPEN_STATES = ("open", "claimed")


@dataclass(frozen=True, slots=True)
class OpenFlag:
    """An open flag as a restart finds it (see :meth:`FlagService.open_flags`)."""

    flag: Flag
    raised_at: str
    """The severity it was raised at."""
    merged_texts: list[str]
    """Texts of the complaints merged into its incident (not deleted)."""


SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True, slots=True)
class FlagPolicy:
    """Who may act and how long a flag may wait, from settings."""

    managers: frozenset[str]
    sla_minutes: dict[str, int]
    max_reminders: int = 3
    oncall_group: str | None = None
    incident_window_min: int = 360  # near-duplicates this close in time are one incident


@dataclass(frozen=True, slots=True)
class IncidentMerge:
    """A fresh complaint joining the open flag that heads its incident."""

    head_id: int
    incident_key: str
    message_id: str
    severity: str


class FlagService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        outbox: Outbox,
        judge: Judge,
        policy: FlagPolicy,
        drafter: DraftMaker | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._outbox = outbox
        self._judge = judge
        self.policy = policy
        self._drafter = drafter
        self._draft_tasks: set[asyncio.Task[None]] = set()
        # A pile-on merges many complaints into one flag at once: one transaction, and
        # one update of the flag row per batch rather than per message.
        self._merges: BatchWriter[IncidentMerge, FlagOutcome | None] = BatchWriter(
            db, self._apply_merges, name="rapport-incident-merges"
        )
        outbox.add_result_hook(self.on_action_result)

    async def stop(self) -> None:
        await self._merges.stop()

    # -- raising ------------------------------------------------------------------------
    def _sla_due(self, severity: str, since: datetime) -> datetime:
        return since + timedelta(minutes=self.policy.sla_minutes.get(severity, 120))

    async def raise_flag(
        self,
        platform: str,
        community_id: str,
        channel_id: str,
        message_id: str,
        verdict: VerdictLike,
        *,
        source: str = "detector",
        actor: str = "rapport",
        incident_key: str | None = None,
        incident_head: int | None = None,
    ) -> FlagOutcome:
        """Store a flag for a stored message and queue its card; merge into an incident.

        ``incident_head`` is the flag the caller believes heads the incident: when it is
        still open and in the window, a fresh message joins it in a batched merge.
        """
        now = self._clock.now()
        if incident_key and incident_head is not None:
            merged = await self._merges.submit(
                IncidentMerge(incident_head, incident_key, message_id, verdict.severity)
            )
            if merged is not None:
                self._outbox.notify()
                return merged

        def work(s: Session) -> tuple[FlagOutcome, int | None]:
            msg = queries.get_message(s, platform, community_id, channel_id, message_id)
            if msg is None or msg.id is None:
                return FlagOutcome(
                    False, "That message is not stored (not watched, or opted out)."
                ), None
            if msg.deleted_at is not None:
                return FlagOutcome(False, "That message was deleted."), None
            existing = s.scalars(select(Flag).where(col(Flag.message_pk) == msg.id)).first()
            if existing is not None:
                return (
                    FlagOutcome(
                        True, f"Already flagged (flag #{existing.id}).", existing.state, existing.id
                    ),
                    None,
                )
            if incident_key:
                merged = self._merge_into_incident(s, msg, verdict, incident_key, now)
                if merged is not None:
                    return merged, None
            flag = Flag(
                message_pk=msg.id,
                platform=platform,
                community_id=community_id,
                channel_id=channel_id,
                message_id=message_id,
                thread_id=msg.thread_id,
                author_id=msg.author_id,
                author_name=msg.author_name,
                quoted_text=msg.text,
                reason=verdict.reason,
                severity=verdict.severity,
                score=verdict.score,
                rationale=verdict.rationale[:400],
                source=source,
                incident_key=incident_key,
                created_at=now,
                next_reminder_at=self._sla_due(verdict.severity, now),
                draft_kind="drafting",
            )
            s.add(flag)
            s.flush()
            assert flag.id is not None
            queries.audit(s, now, actor, "flagged", flag.id, f"{source}: {verdict.rationale}")
            self._outbox.enqueue_in(s, PostFlagCard(flag.id), f"card:{flag.id}")
            return (
                FlagOutcome(True, f"Flagged for follow-up (flag #{flag.id}).", "open", flag.id),
                flag.id,
            )

        outcome, new_id = await self._db.run(work)
        self._outbox.notify()
        if new_id is not None:
            self._start_draft(new_id)
        return outcome

    def _merge_into_incident(
        self, s: Session, msg: Message, verdict: VerdictLike, key: str, now: datetime
    ) -> FlagOutcome | None:
        since = now - timedelta(minutes=self.policy.incident_window_min)
        head_id = s.scalars(
            select(col(Flag.id))
            .where(
                col(Flag.platform) == msg.platform,
                col(Flag.community_id) == msg.community_id,
                col(Flag.incident_key) == key,
                col(Flag.state).in_(OPEN_STATES),
                col(Flag.quoted_text) != "",
                col(Flag.created_at) >= since,
            )
            .order_by(col(Flag.id))
        ).first()
        if head_id is None:
            return None
        merge = IncidentMerge(head_id, key, msg.message_id, verdict.severity)
        return self._apply_merges(s, [merge])[0]

    def _apply_merges(self, s: Session, ops: list[IncidentMerge]) -> list[FlagOutcome | None]:
        """Join complaints to their incident heads; None where the head no longer takes
        them (resolved, dismissed, or out of the window): those become flags of their own.

        A few set-wide Core statements per batch, whatever its size: this runs for every
        duplicate complaint.
        """
        now = self._clock.now()
        since = now - timedelta(minutes=self.policy.incident_window_min)
        by_head: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            by_head.setdefault(op.head_id, []).append(i)
        heads = s.execute(_MERGE_HEADS, {"ids": sorted(by_head)}).all()
        results: list[FlagOutcome | None] = [None] * len(ops)
        updates: list[dict[str, object]] = []
        audits: list[tuple[int, str]] = []
        cards: list[tuple[Action, str]] = []
        for head in heads:
            if head.state not in OPEN_STATES or head.created_at < since or not head.quoted_text:
                continue  # closed, out of the window, or its message was deleted
            idxs = [
                i
                for i in by_head[head.id]
                # The head's own message again (judged twice: an edit during its second
                # opinion) is not a second complaint.
                if ops[i].incident_key == head.incident_key and ops[i].message_id != head.message_id
            ]
            if not idxs:
                continue
            size = head.incident_size + len(idxs)
            severity = max(
                [head.severity, *(ops[i].severity for i in idxs)],
                key=lambda sev: SEVERITY_RANK.get(sev, 0),
            )
            raised = SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(head.severity, 0)
            updates.append(
                {
                    "head": head.id,
                    "size": size,
                    "version": head.version + 1,
                    "escalation": f"{size} similar complaints in this incident",
                    "severity": severity,
                    "reminder_at": self._sla_due(severity, head.created_at)
                    if raised and head.state == "open"
                    else None,
                }
            )
            audits.append((head.id, "joined: " + ", ".join(ops[i].message_id for i in idxs)))
            cards.append((UpdateFlagCard(head.id), f"card-update:{head.id}:{head.version + 1}"))
            outcome = FlagOutcome(True, f"Added to incident flag #{head.id}.", head.state, head.id)
            for i in idxs:
                results[i] = outcome
        if updates:
            s.execute(_MERGE_UPDATE, updates)
            queries.audit_many(s, now, "rapport", "merged", audits)
            self._outbox.enqueue_many_in(s, cards)
        return results

    async def escalate(self, flag_id: int, severity: str, rationale: str) -> bool:
        """Raise a flag's severity (never lower it) and update its card in place."""
        now = self._clock.now()

        def work(s: Session) -> bool:
            flag = s.get(Flag, flag_id)
            if flag is None or flag.state not in OPEN_STATES or not flag.quoted_text:
                return False  # closed, or its message was deleted: nothing to hurry for
            raised = SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(flag.severity, 0)
            if not raised and rationale == flag.escalation:
                return False
            if raised:
                flag.severity = severity
                if flag.state == "open":
                    flag.next_reminder_at = self._sla_due(severity, flag.created_at)
            flag.escalation = rationale[:400]
            flag.version += 1
            s.add(flag)
            queries.audit(s, now, "rapport", "escalated", flag_id, f"{severity}: {rationale}")
            self._outbox.enqueue_in(
                s, UpdateFlagCard(flag_id), f"card-update:{flag_id}:{flag.version}"
            )
            return raised

        raised = await self._db.run(work)
        self._outbox.notify()
        return raised

    async def refresh_cards(self, flag_ids: Sequence[int], action: str, detail: str) -> None:
        """Re-render cards whose message changed under them (edited, deleted, its author
        opted out), so a card never keeps showing text the member took back."""
        if not flag_ids:
            return
        now = self._clock.now()

        def work(s: Session) -> None:
            for flag_id in flag_ids:
                flag = s.get(Flag, flag_id)
                if flag is None:
                    continue
                flag.version += 1
                s.add(flag)
                queries.audit(s, now, "rapport", action, flag_id, detail)
                self._outbox.enqueue_in(
                    s, UpdateFlagCard(flag_id), f"card-update:{flag_id}:{flag.version}"
                )

        await self._db.run(work)
        self._outbox.notify()

    # -- drafting -----------------------------------------------------------------------
    def _start_draft(self, flag_id: int) -> None:
        if self._drafter is None:
            return
        task = asyncio.create_task(self._draft(flag_id), name=f"rapport-draft-{flag_id}")
        self._draft_tasks.add(task)
        task.add_done_callback(self._draft_tasks.discard)

    async def _draft(self, flag_id: int) -> None:
        assert self._drafter is not None
        job = await self._db.run(lambda s: self._draft_job(s, flag_id))
        if job is None:
            return
        try:
            result = await self._drafter.make(job)
        except Exception:
            logger.exception("drafting flag %s failed", flag_id)
            return
        now = self._clock.now()

        def store(s: Session) -> None:
            flag = s.get(Flag, flag_id)
            if flag is None or flag.draft_kind != "drafting" or not flag.quoted_text:
                return
            flag.draft = result.text
            flag.draft_kind = result.kind
            flag.draft_warnings = list(result.warnings)
            flag.version += 1
            s.add(flag)
            queries.audit(s, now, "rapport", "drafted", flag_id, result.kind)
            self._outbox.enqueue_in(
                s, UpdateFlagCard(flag_id), f"card-update:{flag_id}:{flag.version}"
            )

        await self._db.run(store)
        self._outbox.notify()

    def _draft_job(self, s: Session, flag_id: int) -> DraftJob | None:
        flag = s.get(Flag, flag_id)
        if flag is None or flag.draft_kind != "drafting" or not flag.quoted_text:
            return None
        context = queries.thread_messages(
            s, flag.platform, flag.community_id, flag.channel_id, flag.thread_id, flag.message_id, 4
        )
        return DraftJob(
            flag_id=flag_id,
            platform=flag.platform,
            community_id=flag.community_id,
            member_name=flag.author_name,
            member_text=flag.quoted_text,
            context=tuple((m.author_name, m.text) for m in context),
            reason=flag.reason,
            severity=flag.severity,
        )

    async def open_flags(self) -> list[OpenFlag]:
        """Open flags, for rebuilding in-memory indexes after a restart: each with the
        severity it was raised at (its message's), which escalation starts from, and the
        texts of the complaints merged into its incident, which new ones are matched on."""

        def load(s: Session) -> list[OpenFlag]:
            rows = s.execute(
                select(Flag, col(Message.severity))
                .join(Message, col(Message.id) == col(Flag.message_pk))
                .where(col(Flag.state).in_(OPEN_STATES))
            ).all()
            out = []
            for flag, severity in rows:
                merged: list[str] = []
                if flag.incident_key and flag.incident_size > 1:
                    merged = queries.merged_texts(s, flag)
                out.append(OpenFlag(flag, severity or flag.severity, merged))
            return out

        return await self._db.run(load)

    async def resume_drafts(self) -> int:
        """After a restart, draft the flags that were still waiting for one."""
        ids = await self._db.run(
            lambda s: [
                i
                for i in s.scalars(
                    select(col(Flag.id)).where(
                        col(Flag.draft_kind) == "drafting", col(Flag.state).in_(OPEN_STATES)
                    )
                )
                if i is not None
            ]
        )
        for flag_id in ids:
            self._start_draft(flag_id)
        return len(ids)

    async def wait_drafts(self) -> None:
        while self._draft_tasks:
            await asyncio.gather(*list(self._draft_tasks), return_exceptions=True)

    # -- manager actions ----------------------------------------------------------------
    def is_manager(self, user_id: str) -> bool:
        return user_id in self.policy.managers

    def _refuse(self, actor: str) -> FlagOutcome | None:
        if self.is_manager(actor):
            return None
        return FlagOutcome(
            False,
            "Only community managers can act on flags (ask an admin to add you to SLACK_MANAGERS).",
        )

    async def claim(self, flag_id: int, actor: str) -> FlagOutcome:
        if (refusal := self._refuse(actor)) is not None:
            return refusal
        now = self._clock.now()

        def work(s: Session) -> FlagOutcome:
            res = s.execute(
                update(Flag)
                .where(col(Flag.id) == flag_id, col(Flag.state) == "open")
                .values(
                    state="claimed",
                    assignee=actor,
                    claimed_at=now,
                    next_reminder_at=None,
                    version=Flag.version + 1,
                )
            )
            flag = s.get(Flag, flag_id)
            if flag is None:
                return FlagOutcome(False, f"Flag #{flag_id} does not exist.")
            if not getattr(res, "rowcount", 0):
                if flag.state == "claimed":
                    who = "you" if flag.assignee == actor else f"<@{flag.assignee}>"
                    return FlagOutcome(
                        flag.assignee == actor, f"Already claimed by {who}.", flag.state
                    )
                return FlagOutcome(False, f"Flag #{flag_id} is {flag.state}.", flag.state)
            s.refresh(flag)
            queries.audit(s, now, actor, "claimed", flag_id)
            self._outbox.enqueue_in(
                s, UpdateFlagCard(flag_id), f"card-update:{flag_id}:{flag.version}"
            )
            return FlagOutcome(True, "Claimed.", "claimed")

        return await self._after(await self._db.run(work))

    async def send(self, flag_id: int, actor: str, text: str | None = None) -> FlagOutcome:
        """Queue the reply once: the ``sending`` guard makes a double click a no-op."""
        if (refusal := self._refuse(actor)) is not None:
            return refusal
        now = self._clock.now()

        def work(s: Session) -> FlagOutcome:
            flag = s.get(Flag, flag_id)
            if flag is None:
                return FlagOutcome(False, f"Flag #{flag_id} does not exist.")
            body = (text if text is not None else flag.draft).strip()
            if flag.state not in OPEN_STATES:
                return FlagOutcome(False, f"Flag #{flag_id} is already {flag.state}.", flag.state)
            if not body:
                return FlagOutcome(
                    False, "There is no reply to send yet (the draft is empty).", flag.state
                )
            if not flag.quoted_text:
                return FlagOutcome(
                    False, "The member's message was deleted; nothing to reply to.", flag.state
                )
            values: dict[str, object] = {
                "sending": True,
                "send_error": None,
                "version": Flag.version + 1,
                "assignee": flag.assignee or actor,
            }
            if text is not None:
                values.update(draft=body, draft_kind="manual", draft_warnings=[])
            res = s.execute(
                update(Flag)
                .where(
                    col(Flag.id) == flag_id,
                    col(Flag.state).in_(OPEN_STATES),
                    col(Flag.sending).is_(False),
                )
                .values(**values)
            )
            if not getattr(res, "rowcount", 0):
                return FlagOutcome(False, "This reply is already being sent.", flag.state)
            s.refresh(flag)
            target = Target(
                platform=flag.platform,
                community_id=flag.community_id,
                channel_id=flag.channel_id,
                thread_id=flag.thread_id,
                reply_to=flag.message_id,
            )
            self._outbox.enqueue_in(
                s,
                ReplyInThread(target=target, text=body, flag_id=flag_id),
                f"reply:{flag_id}:{flag.version}",
            )
            queries.audit(s, now, actor, "send", flag_id, "edited" if text is not None else "draft")
            return FlagOutcome(True, "Sending the reply…", flag.state)

        return await self._after(await self._db.run(work))

    async def dismiss(self, flag_id: int, actor: str) -> FlagOutcome:
        """Not negative: close the flag and teach the detector this community's language."""
        return await self._close(flag_id, actor, "dismissed", learn=False)

    async def resolve(self, flag_id: int, actor: str) -> FlagOutcome:
        return await self._close(flag_id, actor, "resolved", learn=True)

    async def _close(self, flag_id: int, actor: str, state: str, *, learn: bool) -> FlagOutcome:
        if (refusal := self._refuse(actor)) is not None:
            return refusal
        now = self._clock.now()
        allowed = (*OPEN_STATES, "replied") if state == "resolved" else OPEN_STATES

        def work(s: Session) -> tuple[FlagOutcome, tuple[str, str, str] | None]:
            res = s.execute(
                update(Flag)
                .where(
                    col(Flag.id) == flag_id,
                    col(Flag.state).in_(allowed),
                    col(Flag.sending).is_(False),
                )
                .values(
                    state=state,
                    resolved_at=now,
                    next_reminder_at=None,
                    version=Flag.version + 1,
                    assignee=Flag.assignee if state == "resolved" else actor,
                )
            )
            flag = s.get(Flag, flag_id)
            if flag is None:
                return FlagOutcome(False, f"Flag #{flag_id} does not exist."), None
            if not getattr(res, "rowcount", 0):
                return FlagOutcome(
                    False, f"Flag #{flag_id} is {flag.state}; nothing changed.", flag.state
                ), None
            s.refresh(flag)
            queries.audit(s, now, actor, state, flag_id)
            self._outbox.enqueue_in(
                s, UpdateFlagCard(flag_id), f"card-update:{flag_id}:{flag.version}"
            )
            fb: tuple[str, str, str] | None = None
            if (
                flag.quoted_text
                and (state == "dismissed" or flag.source == "detector")
                and not queries.has_feedback(s, flag_id)  # a sent reply already confirmed it
            ):
                source = "dismiss" if state == "dismissed" else "confirm"
                queries.add_feedback(
                    s,
                    flag.platform,
                    flag.community_id,
                    flag.quoted_text,
                    learn,
                    source,
                    actor,
                    now,
                    flag_id,
                )
                fb = (flag.platform, flag.community_id, flag.quoted_text)
            return FlagOutcome(True, f"Flag #{flag_id} {state}.", state), fb

        outcome, fb = await self._db.run(work)
        if fb is not None:
            self._judge.learn(community_key(fb[0], fb[1]), fb[2], learn)
        return await self._after(outcome)

    async def _after(self, outcome: FlagOutcome) -> FlagOutcome:
        self._outbox.notify()
        return outcome

    # -- results from the outbox ----------------------------------------------------------
    async def on_action_result(self, action: Action, result: ActionResult) -> None:
        now = self._clock.now()
        if isinstance(action, PostFlagCard) and result.ok:
            channel, ts = result.ref.get("channel"), result.ref.get("ts")

            def store_ref(s: Session) -> None:
                s.execute(
                    update(Flag)
                    .where(col(Flag.id) == action.flag_id)
                    .values(card_channel=channel, card_ts=ts)
                )

            await self._db.run(store_ref)
        elif isinstance(action, ReplyInThread) and action.flag_id is not None:
            flag_id = action.flag_id

            def store_reply(s: Session) -> tuple[str, str, str] | None:
                """Record the outcome; a sent reply confirms a detector's flag (returned,
                to be learned once committed)."""
                confirmed = None
                flag = s.get(Flag, flag_id)
                if flag is None:
                    return None
                flag.sending = False
                flag.version += 1
                if result.ok:
                    flag.state = "replied"
                    flag.send_error = None
                    flag.first_response_at = flag.first_response_at or now
                    flag.next_reminder_at = None
                    queries.audit(
                        s,
                        now,
                        flag.assignee or "rapport",
                        "replied",
                        flag_id,
                        result.ref.get("message_id", ""),
                    )
                    if flag.source == "detector" and flag.quoted_text:
                        queries.add_feedback(
                            s,
                            flag.platform,
                            flag.community_id,
                            flag.quoted_text,
                            True,
                            "confirm",
                            flag.assignee or "",
                            now,
                            flag_id,
                        )
                        confirmed = (flag.platform, flag.community_id, flag.quoted_text)
                else:
                    flag.send_error = (result.error or "the platform refused the reply")[:400]
                    queries.audit(s, now, "rapport", "send_failed", flag_id, flag.send_error)
                s.add(flag)
                self._outbox.enqueue_in(
                    s, UpdateFlagCard(flag_id), f"card-update:{flag_id}:{flag.version}"
                )
                return confirmed

            confirmed = await self._db.run(store_reply)
            if confirmed is not None:
                self._judge.learn(community_key(confirmed[0], confirmed[1]), confirmed[2], True)
            self._outbox.notify()

    # -- SLA ------------------------------------------------------------------------------
    async def check_sla(self) -> int:
        """Remind about unclaimed flags past their deadline; bounded, and restart-safe."""
        now = self._clock.now()
        policy = self.policy

        def work(s: Session) -> int:
            due = list(
                s.scalars(
                    select(Flag).where(
                        col(Flag.state) == "open",
                        col(Flag.sending).is_(False),  # a manager's reply is on its way
                        col(Flag.next_reminder_at).is_not(None),
                        col(Flag.next_reminder_at) <= now,
                        col(Flag.reminders_sent) < policy.max_reminders,
                    )
                )
            )
            for flag in due:
                assert flag.id is not None
                flag.reminders_sent += 1
                minutes = policy.sla_minutes.get(flag.severity, 120)
                waited = int((now - flag.created_at).total_seconds() // 60)
                flag.next_reminder_at = (
                    now + timedelta(minutes=minutes)
                    if flag.reminders_sent < policy.max_reminders
                    else None
                )
                s.add(flag)
                text = (
                    f"Reminder {flag.reminders_sent}/{policy.max_reminders}: this "
                    f"{flag.severity} flag has waited {waited} min unclaimed (SLA {minutes} min)."
                )
                self._outbox.enqueue_in(
                    s,
                    PostCardThreadReply(flag.id, text, policy.oncall_group, while_state="open"),
                    f"remind:{flag.id}:{flag.reminders_sent}",
                )
                queries.audit(s, now, "rapport", "reminded", flag.id, text)
            return len(due)

        n = await self._db.run(work)
        if n:
            self._outbox.notify()
        return n

    # -- the card -----------------------------------------------------------------------
    async def card(self, flag_id: int) -> FlagCardView | None:
        return await self._db.run(lambda s: self._card(s, flag_id))

    def _card(self, s: Session, flag_id: int) -> FlagCardView | None:
        flag = s.get(Flag, flag_id)
        if flag is None:
            return None
        msg = s.get(Message, flag.message_pk)
        context = queries.thread_messages(
            s, flag.platform, flag.community_id, flag.channel_id, flag.thread_id, flag.message_id, 3
        )
        history = [
            HistoryLine(at=a.at, actor=a.actor, action=a.action, detail=a.detail)
            for a in s.scalars(
                select(AuditLog).where(col(AuditLog.flag_id) == flag_id).order_by(col(AuditLog.id))
            )
        ]
        community = s.scalars(
            select(Community).where(
                col(Community.platform) == flag.platform,
                col(Community.external_id) == flag.community_id,
            )
        ).first()
        channel = s.scalars(
            select(Channel).where(
                col(Channel.platform) == flag.platform,
                col(Channel.community_id) == flag.community_id,
                col(Channel.external_id) == flag.channel_id,
            )
        ).first()
        extra: dict[str, str] = {}
        if flag.card_channel and flag.card_ts:
            extra = {"card_channel": flag.card_channel, "card_ts": flag.card_ts}
        return FlagCardView(
            flag_id=flag_id,
            state="sending" if flag.sending else flag.state,
            severity=flag.severity,
            reason=flag.reason,
            rationale=flag.rationale,
            score=flag.score,
            platform=flag.platform,
            community_name=community.name if community and community.name else flag.community_id,
            channel_name=channel.name if channel and channel.name else flag.channel_id,
            author_name=flag.author_name or flag.author_id,
            author_id=flag.author_id,
            text=flag.quoted_text,
            created_at=flag.created_at,
            permalink=msg.permalink if msg else None,
            context=tuple(
                ContextLine(m.author_name or m.author_id, m.text, m.created_at) for m in context
            ),
            draft=flag.draft,
            draft_kind=flag.draft_kind,
            draft_warnings=tuple(flag.draft_warnings),
            claimed_by=flag.assignee,
            history=tuple(history),
            send_error=flag.send_error,
            incident_size=flag.incident_size,
            escalation=flag.escalation,
            message_deleted=bool(msg and msg.deleted_at is not None),
            extra=extra,
        )
