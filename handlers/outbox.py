"""The outbox: what must happen is written down before it is done and marked done after.

A card to post or a reply to send survives a crash: on start the worker puts work that
was running back to pending and does it. Work for one flag runs in order (its "lane"),
so a card update never overtakes the card's first posting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from handlers.clock import Clock
from handlers.events import (
    Action,
    ActionResult,
    AddReaction,
    PostCardThreadReply,
    PostFlagCard,
    PostMessage,
    ReplyInThread,
    Target,
    UpdateFlagCard,
)
from handlers.ports import ActionExecutor
from storage import queries
from storage.db import Database
from storage.models import Outbox as OutboxRow

logger = logging.getLogger(__name__)

ResultHook = Callable[[Action, ActionResult], Awaitable[None]]

_ACTION_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        PostMessage,
        ReplyInThread,
        PostFlagCard,
        UpdateFlagCard,
        PostCardThreadReply,
        AddReaction,
    )
}
CARD_ACTIONS = (PostFlagCard, UpdateFlagCard, PostCardThreadReply)


def action_to_payload(action: Action) -> dict[str, Any]:
    data = dataclasses.asdict(action)
    data["type"] = type(action).__name__
    return data


def payload_to_action(payload: dict[str, Any]) -> Action:
    data = dict(payload)
    cls = _ACTION_TYPES[str(data.pop("type"))]
    if "target" in data and isinstance(data["target"], dict):
        data["target"] = Target(**data["target"])
    if "mention_user_ids" in data:
        data["mention_user_ids"] = tuple(data["mention_user_ids"])
    action: Action = cls(**data)
    return action


def lane_of(action: Action) -> str:
    flag_id = getattr(action, "flag_id", None)
    if flag_id is not None:
        return f"flag:{flag_id}"
    return "misc"


class Outbox:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        card_platform: str = "slack",
        max_attempts: int = 8,
        batch: int = 64,
        rng: random.Random | None = None,
        lease_s: float = queries.OUTBOX_LEASE_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._db = db
        self._clock = clock
        self.lease_s = lease_s
        self._sleep = sleep  # between lease renewals; injected so tests need no waiting
        self.card_platform = card_platform
        self.max_attempts = max_attempts
        self._batch = batch
        self._rng = rng or random.Random()
        self._executors: dict[str, ActionExecutor] = {}
        self._hooks: list[ResultHook] = []
        self._wake = asyncio.Event()
        self._stopping = False

    # -- wiring -------------------------------------------------------------------------
    def register(self, executor: ActionExecutor) -> None:
        self._executors[executor.platform] = executor
        self.notify()

    def add_result_hook(self, hook: ResultHook) -> None:
        self._hooks.append(hook)

    def notify(self) -> None:
        self._wake.set()

    def platform_for(self, action: Action) -> str:
        if isinstance(action, CARD_ACTIONS):
            return self.card_platform
        return action.target.platform

    # -- enqueueing (inside the caller's transaction) ------------------------------------
    def enqueue_in(
        self, session: Any, action: Action, dedupe_key: str, *, delay_s: float = 0.0
    ) -> bool:
        """Queue ``action`` inside the caller's transaction; False when it was already
        queued (same ``dedupe_key``) or covered by a pending card update."""
        return self.enqueue_many_in(session, [(action, dedupe_key)], delay_s=delay_s) == 1

    def enqueue_many_in(
        self, session: Any, items: Sequence[tuple[Action, str]], *, delay_s: float = 0.0
    ) -> int:
        """As :meth:`enqueue_in` for several actions, with one pending-card-update check
        for all of them; returns how many were added."""
        now = self._clock.now()
        card_flags = [a.flag_id for a, _ in items if isinstance(a, UpdateFlagCard)]
        # A card is rendered from the flag's state when the update runs, so one pending
        # update covers every change since: a storm of merges or escalations costs one
        # chat.update, not hundreds (Slack allows about 50 a minute).
        covered = queries.flags_with_pending_card_update(session, card_flags)
        rows = []
        for action, dedupe_key in items:
            if isinstance(action, UpdateFlagCard):
                if action.flag_id in covered:
                    continue
                covered.add(action.flag_id)
            payload = action_to_payload(action)
            payload["lane"] = lane_of(action)
            rows.append(
                queries.NewWork(
                    "action",
                    payload,
                    dedupe_key,
                    self.platform_for(action),
                    now + timedelta(seconds=delay_s),
                )
            )
        return queries.enqueue_many(session, rows, now)

    # -- running ------------------------------------------------------------------------
    async def recover(self) -> int:
        """Put back work whose claimer died (its lease ran out); returns how many.

        Work a live replica is doing keeps its claim. (``run_once`` also takes over
        expired claims, so work a dead process held runs again within one lease.)
        """
        now = self._clock.now()
        n = await self._db.run(lambda s: queries.recover_running(s, now))
        if n:
            logger.info("outbox: %d interrupted item(s) will run again", n)
        return n

    async def run_once(self) -> int:
        """Run everything due now; returns how many items ran."""
        if not self._executors:
            return 0
        now = self._clock.now()
        # Work for a platform with no adapter yet waits in the outbox untouched.
        platforms = sorted(self._executors)
        items = await self._db.run(
            lambda s: queries.claim_due(
                s, now, self._batch, platforms=platforms, lease_s=self.lease_s
            )
        )
        if not items:
            return 0
        lanes: dict[str, list[OutboxRow]] = {}
        for item in items:
            lanes.setdefault(str(item.payload.get("lane", "misc")), []).append(item)
        running = {item.id for item in items if item.id is not None}
        keeper = asyncio.create_task(self._keep_leases(running))
        try:
            await asyncio.gather(*(self._run_lane(lane, running) for lane in lanes.values()))
        finally:
            keeper.cancel()
        return len(items)

    async def _keep_leases(self, running: set[int]) -> None:
        """Renew the claim on work still running every third of a lease, so a slow
        platform's work is never taken over by another replica while it runs."""
        while running:
            await self._sleep(self.lease_s / 3)
            until = self._clock.now() + timedelta(seconds=self.lease_s)
            ids = sorted(running)
            try:
                await self._db.run(
                    functools.partial(queries.renew_leases, item_ids=ids, until=until)
                )
            except Exception:
                logger.exception("renewing outbox leases failed")

    async def drain(self, max_rounds: int = 1000) -> int:
        """Run until nothing is due (tests and the demo use this)."""
        total = 0
        for _ in range(max_rounds):
            n = await self.run_once()
            if n == 0:
                break
            total += n
        return total

    async def run_forever(self, idle_s: float = 1.0) -> None:
        await self.recover()
        while not self._stopping:
            self._wake.clear()
            try:
                ran = await self.run_once()
            except Exception:
                logger.exception("outbox round failed")
                ran = 0
            if ran:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=idle_s)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _run_lane(self, items: list[OutboxRow], running: set[int]) -> None:
        for item in items:
            try:
                await self._run_item(item)
            except Exception:
                # Recording the outcome failed (the database is unavailable): the item
                # stays claimed and runs again once its lease runs out; the lane goes on.
                logger.exception("outbox item %s: recording its outcome failed", item.id)
            finally:
                running.discard(item.id or 0)

    async def _run_item(self, item: OutboxRow) -> None:
        assert item.id is not None
        item_id, attempt = item.id, item.attempts
        try:
            action = payload_to_action({k: v for k, v in item.payload.items() if k != "lane"})
        except (KeyError, TypeError) as exc:
            logger.error("outbox item %s is malformed: %s", item_id, exc)
            reason = f"malformed: {exc}"
            await self._db.run(
                lambda s: queries.fail(s, item_id, self._clock.now(), reason, attempt)
            )
            return
        while_state = getattr(action, "while_state", None)
        if while_state is not None:
            flag_id = getattr(action, "flag_id", None)
            state = await self._db.run(lambda s: queries.flag_state(s, flag_id))
            if state != while_state:  # e.g. a reminder about a flag claimed meanwhile
                skipped = {"skipped": f"flag is {state}"}
                await self._db.run(
                    lambda s: queries.finish(s, item_id, self._clock.now(), skipped, attempt)
                )
                return
        executor = self._executors.get(item.platform)
        if executor is None:
            result = ActionResult(
                ok=False, error=f"no adapter for {item.platform!r} yet", retryable=True
            )
        else:
            try:
                result = await executor.execute(action)
            except Exception as exc:
                logger.exception("executing %s failed", type(action).__name__)
                result = ActionResult(
                    ok=False, error=f"{type(exc).__name__}: {exc}", retryable=True
                )
        now = self._clock.now()
        if result.ok or not result.retryable or item.attempts >= self.max_attempts:
            for hook in self._hooks:
                try:
                    await hook(action, result)
                except Exception:
                    logger.exception("outbox result hook failed for %s", type(action).__name__)
            if result.ok:
                await self._db.run(
                    lambda s: queries.finish(s, item_id, now, dict(result.ref), attempt)
                )
            else:
                await self._db.run(
                    lambda s: queries.fail(s, item_id, now, result.error or "failed", attempt)
                )
            return
        delay = min(60.0, 0.5 * 2 ** (item.attempts - 1)) * (0.5 + self._rng.random())
        logger.info("outbox item %s will retry in %.1fs: %s", item_id, delay, result.error)
        await self._db.run(
            lambda s: queries.retry_later(
                s, item_id, now + timedelta(seconds=delay), result.error or "", attempt
            )
        )
