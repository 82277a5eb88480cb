"""The composition root: one place builds everything from the settings.

Nothing connects or reads settings at import time. ``build_runtime`` opens the database,
upgrades the schema, builds the core and its workers, and closes them in reverse order.
Adapters (Discord, Slack) are attached by the caller, which registers their executors
on ``runtime.outbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

from bot.llm import OpenAIChatClient
from bot.settings import Settings
from handlers.clock import Clock, SystemClock
from handlers.core import Core
from handlers.detect import Detector, IncidentIndex
from handlers.draft import Drafter
from handlers.flags import FlagPolicy, FlagService
from handlers.ingest import IngestWriter
from handlers.judging import DraftMaker, Judge, SecondOpinion
from handlers.outbox import Outbox
from handlers.second_opinion import LlmSecondOpinion
from storage.db import Database
from storage.migrate import upgrade

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    judge: Judge
    outbox: Outbox
    flags: FlagService
    core: Core
    writer: IngestWriter
    llm: OpenAIChatClient | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def settle(self) -> None:
        """Finish queued writes, drafts and outbox work (tests and the demo wait on this)."""
        for _ in range(5):
            await self.core.flush()
            await self.core.wait_reviews()
            await self.flags.wait_drafts()
            ran = await self.outbox.drain()
            if ran == 0:
                break


def default_judge(settings: Settings) -> Judge:
    return Detector.default()


def default_drafter(settings: Settings, clock: Clock, llm: OpenAIChatClient | None) -> DraftMaker:
    """LLM drafts when an endpoint is configured, reply templates otherwise (or on failure)."""
    return Drafter(llm, settings.RAPPORT_PROMPTS_DIR, settings.RAPPORT_KB_DIR, clock=clock.now)


def second_opinion(
    settings: Settings, judge: Judge, llm: OpenAIChatClient | None
) -> SecondOpinion | None:
    """Borderline verdicts go to the LLM judge when one is configured and enabled."""
    if llm is None or not settings.LLM_JUDGE or not isinstance(judge, Detector):
        return None
    return LlmSecondOpinion(judge, llm, timeout_s=settings.LLM_TIMEOUT_S)


def policy_from(settings: Settings) -> FlagPolicy:
    return FlagPolicy(
        managers=settings.managers,
        sla_minutes={
            "high": settings.SLA_HIGH_MIN,
            "medium": settings.SLA_MEDIUM_MIN,
            "low": settings.SLA_LOW_MIN,
        },
        max_reminders=settings.SLA_MAX_REMINDERS,
        oncall_group=settings.SLACK_ONCALL_GROUP,
    )


@contextlib.asynccontextmanager
async def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    judge: Judge | None = None,
    drafter: DraftMaker | None = None,
    start_workers: bool = True,
    card_platform: str = "slack",
) -> AsyncIterator[Runtime]:
    """Open everything; with ``start_workers`` the outbox runs in the background."""
    clock = clock or SystemClock()
    db = Database(settings.DATABASE_URL)
    llm = OpenAIChatClient.from_settings(settings) if settings.llm_enabled else None
    try:
        await asyncio.to_thread(upgrade, db)
        judge = judge or default_judge(settings)
        drafter = drafter or default_drafter(settings, clock, llm)
        outbox = Outbox(db, clock, card_platform=card_platform)
        flags = FlagService(db, clock, outbox, judge, policy_from(settings), drafter)
        writer = IngestWriter(db)
        core = Core(
            db,
            clock,
            judge,
            flags,
            writer,
            incidents=IncidentIndex(window=timedelta(minutes=flags.policy.incident_window_min)),
            second_opinion=second_opinion(settings, judge, llm),
            competitors=settings.competitors,
        )
        rt = Runtime(settings, db, clock, judge, outbox, flags, core, writer, llm=llm)
        await core.start()
        if start_workers:
            rt.tasks.append(asyncio.create_task(outbox.run_forever(), name="rapport-outbox"))
        try:
            yield rt
        finally:
            outbox.stop()
            for task in rt.tasks:
                task.cancel()
            await asyncio.gather(*rt.tasks, return_exceptions=True)
            await core.wait_reviews()
            await flags.wait_drafts()
            await core.stop()
    finally:
        if llm is not None:
            await llm.aclose()
        db.dispose()
