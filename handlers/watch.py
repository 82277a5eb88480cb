"""Flags that keep listening: incidents and escalation after a flag is raised.

A complaint first joins an incident (near-duplicates within the window share one flag)
or starts one. Once flagged, its thread is watched: replies and reactions under it are
re-scored for pile-on, velocity, reach and repeats, and raise the flag's severity.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlmodel import Session

from handlers.clock import Clock
from handlers.detect.escalation import EscalationPolicy, IncidentIndex, ThreadEvent, escalate
from handlers.events import MessageEvent
from handlers.flags import FlagService, OpenFlag
from handlers.judging import VerdictLike, community_key
from handlers.ports import FlagOutcome
from storage import queries
from storage.db import Database


@dataclass(frozen=True, slots=True)
class WatchedFlag:
    """An open flag whose thread is watched for pile-on."""

    flag_id: int
    platform: str
    community_id: str
    message_id: str
    thread_id: str | None
    author_id: str
    severity: str


class FlagWatch:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        flags: FlagService,
        *,
        escalation: EscalationPolicy | None = None,
        incidents: IncidentIndex | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._flags = flags
        self._policy = escalation or EscalationPolicy()
        self._incidents = incidents or IncidentIndex()
        # (platform, community, message-or-thread id) -> the open flag its replies escalate
        self._threads: dict[tuple[str, str, str], WatchedFlag] = {}
        self._heads: dict[str, int] = {}  # incident key -> the flag that carries it
        self._by_flag: dict[int, WatchedFlag] = {}  # flag id -> its own message's watch
        # incident key -> set once its first complaint's flag is written (or refused)
        self._starting: dict[str, asyncio.Event] = {}
        self._boot = time.time_ns()
        self._seq = 0

    def restore(self, open_flags: list[OpenFlag]) -> None:
        """After a restart: watch the open flags again and remember their incidents.

        Each comes with the severity it was raised at: escalation re-scores from that,
        as before the restart, so the same pile-on is not counted twice. Its incident is
        matched on the texts of the complaints merged into it too, as before."""
        for open_flag in open_flags:
            flag, raised_at = open_flag.flag, open_flag.raised_at
            assert flag.id is not None
            self._watch(
                WatchedFlag(
                    flag.id,
                    flag.platform,
                    flag.community_id,
                    flag.message_id,
                    flag.thread_id,
                    flag.author_id,
                    raised_at,
                )
            )
            if flag.incident_key and flag.quoted_text:
                ck = community_key(flag.platform, flag.community_id)
                for text in (flag.quoted_text, *open_flag.merged_texts):
                    self._incidents.add(ck, text, flag.created_at, key=flag.incident_key)
                self._heads.setdefault(flag.incident_key, flag.id)

    def watch(self, wf: WatchedFlag) -> None:
        """Watch a flag raised outside :meth:`raise_flag` (a manager's manual flag)."""
        self._watch(wf)

    def _watch(self, wf: WatchedFlag) -> None:
        self._by_flag.setdefault(wf.flag_id, wf)
        self._threads[(wf.platform, wf.community_id, wf.message_id)] = wf
        if wf.thread_id:
            self._threads.setdefault((wf.platform, wf.community_id, wf.thread_id), wf)

    def thread_flag(self, event: MessageEvent) -> WatchedFlag | None:
        """The open flag whose thread ``event`` replies in, if any (cheap when none)."""
        if not self._threads:
            return None
        for key in (event.thread_id, event.reply_to):
            if key is not None:
                wf = self._threads.get((event.platform, event.community_id, key))
                if wf is not None and wf.message_id != event.message_id:
                    return wf
        return None

    def message_flag(self, platform: str, community_id: str, message_id: str) -> WatchedFlag | None:
        return self._threads.get((platform, community_id, message_id))

    async def raise_flag(self, event: MessageEvent, verdict: VerdictLike) -> FlagOutcome:
        """Flag a fresh complaint, joining its incident when a near-duplicate is open."""
        ck = community_key(event.platform, event.community_id)
        incident = self._incidents.add(ck, event.text, self._clock.now(), key=self._new_key())
        head = self._heads.get(incident)
        starting = None
        if head is None:
            pending = self._starting.get(incident)
            if pending is not None:
                # Its first complaint's flag is being written: wait for it and join it
                # in a batched merge, rather than each duplicate of a burst looking the
                # incident up on its own (or, worse, racing it to a second card).
                await pending.wait()
                head = self._heads.get(incident)
            else:
                starting = self._starting[incident] = asyncio.Event()
        try:
            outcome = await self._flags.raise_flag(
                event.platform,
                event.community_id,
                event.channel_id,
                event.message_id,
                verdict,
                incident_key=incident,
                incident_head=head,
            )
            if outcome.ok and outcome.flag_id is not None:
                self._heads[incident] = outcome.flag_id
        finally:
            if starting is not None:
                del self._starting[incident]
                starting.set()
        if outcome.ok and outcome.flag_id is not None:
            # A duplicate merged into an incident escalates it from the incident's base
            # severity, not its own.
            head_wf = self._by_flag.get(outcome.flag_id)
            wf = WatchedFlag(
                outcome.flag_id,
                event.platform,
                event.community_id,
                event.message_id,
                event.thread_id,
                event.author.id,
                head_wf.severity if head_wf is not None else verdict.severity,
            )
            self._watch(wf)
            # Replies that arrived with the complaint were stored before it had a flag.
            await self.escalate(wf)
        return outcome

    async def still_open(self, wf: WatchedFlag) -> bool:
        """Whether the watched flag still takes escalation; a closed one is unwatched, so
        a new complaint in its thread gets a card of its own."""
        state = await self._db.run(lambda s: queries.flag_state(s, wf.flag_id))
        if state in ("open", "claimed"):
            return True
        for key, watched in list(self._threads.items()):
            if watched.flag_id == wf.flag_id:
                del self._threads[key]
        self._by_flag.pop(wf.flag_id, None)
        return False

    def _new_key(self) -> str:
        """A new incident's name: unique across restarts without asking the OS for entropy
        (``uuid4`` reads ``/dev/urandom``, which is slow on some hosts)."""
        self._seq += 1
        return f"{self._boot:x}-{self._seq}"

    async def escalate(self, wf: WatchedFlag) -> bool:
        """Re-score the flagged thread; True when the flag's severity went up."""
        now = self._clock.now()
        since = now - self._policy.window

        def load(s: Session) -> tuple[list[queries.ThreadActivity], dict[str, int]]:
            posted = queries.flagged_message_time(s, wf.flag_id)
            acts = queries.thread_activity(
                s, wf.platform, wf.community_id, wf.message_id, wf.thread_id, since, posted
            )
            authors = sorted({a.author_id for a in acts} | {wf.author_id})
            return acts, queries.member_activity(s, wf.platform, wf.community_id, authors)

        acts, activity = await self._db.run(load)
        events = [
            ThreadEvent(a.at, a.author_id, a.text, a.is_reaction, a.is_complaint) for a in acts
        ]
        result = escalate(
            wf.severity,
            events,
            now,
            original_author=wf.author_id,
            member_activity=activity,
            policy=self._policy,
        )
        if result.rationale == "no escalation":
            return False
        return await self._flags.escalate(wf.flag_id, result.severity, result.rationale)
