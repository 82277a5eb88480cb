"""``rapport run``: the live bot, with whatever parts the settings enable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from discord import LoginFailure

from bot.app import Runtime, build_runtime
from bot.discord_adapter import DiscordAdapter
from bot.heap import settle_after_startup
from bot.http import make_web_app, start_site
from bot.settings import Settings
from bot.slack_adapter import SlackAdapter
from storage.leader import LeaderLock

logger = logging.getLogger(__name__)

FAILED = "failed"
"""A part whose state starts with this has stopped; /healthz then answers 503."""


class PartFailed(Exception):
    """A part failed in a way a restart cannot fix (a rejected token): ``rapport run``
    stops and exits non-zero instead of running without it."""


def start_scheduler(
    rt: Runtime, leader: LeaderLock, *, sla_every_s: int = 30, settings_every_s: int = 30
) -> AsyncIOScheduler:
    """Periodic jobs read their work from the database, so a restart loses nothing.

    Every replica runs the scheduler, but only the one holding the leader lock sends SLA
    reminders; every replica reloads the admin settings other replicas stored.
    """

    async def sla_tick() -> None:
        if await asyncio.to_thread(leader.try_acquire):
            await rt.flags.check_sla()

    async def settings_tick() -> None:  # every replica: settings changed on another one
        try:
            await rt.core.reload_settings()
        except Exception:
            logger.exception("reloading community settings failed")

    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(
        sla_tick, "interval", seconds=sla_every_s, id="sla", max_instances=1, coalesce=True
    )
    scheduler.add_job(
        settings_tick,
        "interval",
        seconds=settings_every_s,
        id="settings",
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    return scheduler


async def serve(
    settings: Settings, *, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    for warning in settings.warnings():
        logger.warning("%s", warning)
    fatal: list[tuple[str, BaseException]] = []

    def on_fatal(part: str, exc: BaseException) -> None:
        fatal.append((part, exc))
        stop.set()

    async with build_runtime(settings) as rt:
        parts: dict[str, str] = {"core": "running"}
        web_app = make_web_app(rt, lambda: live_parts(parts, adapters, rt))
        adapters = await attach_adapters(rt, settings, web_app, parts, on_fatal=on_fatal)
        runner, port = await start_site(
            web_app, settings.RAPPORT_HTTP_HOST, settings.RAPPORT_HTTP_PORT
        )
        leader = LeaderLock(rt.db)
        scheduler = start_scheduler(rt, leader)
        settle_after_startup()
        logger.info(
            "rapport is running on http://%s:%d (parts: %s)",
            settings.RAPPORT_HTTP_HOST,
            port,
            ", ".join(parts),
        )
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            logger.info("shutting down")
            # Each step on its own: one that fails (the database gone with the leader
            # lock's connection) must not leave the adapters connected or the port bound.
            await _shutdown_step("scheduler", lambda: scheduler.shutdown(wait=False))
            await _shutdown_step("leader lock", leader.release)
            await _shutdown_step("adapters", adapters.close)
            await _shutdown_step("http server", runner.cleanup)
    if fatal:
        part, exc = fatal[0]
        raise PartFailed(f"{part}: {_one_line(exc)}") from exc


async def _shutdown_step(name: str, step: Callable[[], object]) -> None:
    try:
        result = step()
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        logger.exception("shutdown: %s failed; continuing", name)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


Closer = Callable[[], Awaitable[None]]


@dataclass
class Adapters:
    """The platform adapters one process runs, and how to stop them."""

    slack: SlackAdapter | None = None
    discord: DiscordAdapter | None = None
    closers: list[Closer] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                logger.exception("closing an adapter failed")


async def _quietly(work: Awaitable[object]) -> None:
    """Run start-up catch-up work; a failure is logged, never fatal to the bot."""
    try:
        await work
    except Exception:
        logger.exception("start-up catch-up failed")


def live_parts(parts: dict[str, str], adapters: Adapters | None, rt: Runtime) -> dict[str, str]:
    """Each part's state as of now: a gateway that dropped and is reconnecting, or an
    LLM endpoint whose circuit breaker is open, is said so (informational: both recover
    by themselves, so neither turns the health check to 503; a part that stopped does)."""
    states = dict(parts)
    discord = adapters.discord if adapters is not None else None
    if discord is not None and not states.get("discord", "").startswith(FAILED):
        ws = getattr(discord, "ws", None)
        connected = discord.is_ready() and ws is not None and ws.open
        states["discord"] = "gateway connected" if connected else "gateway reconnecting"
    if rt.llm is not None and "llm" in states:
        breaker = rt.llm.breaker.state
        states["llm"] = "configured" if breaker == "closed" else f"configured, breaker {breaker}"
    return states


async def attach_adapters(
    rt: Runtime,
    settings: Settings,
    web_app: web.Application,
    parts: dict[str, str],
    *,
    discord_options: Mapping[str, Any] | None = None,
    on_fatal: Callable[[str, BaseException], None] | None = None,
) -> Adapters:
    """Start the platform adapters the settings enable (before ``web_app`` serves).

    ``rapport run`` and the sandbox (demo, tests, benchmarks) both come through here, so
    what the demo shows is the production wiring.

    A part that stops on its own is logged and its state in ``parts`` becomes
    ``"failed: …"`` (so /healthz answers 503); a rejected Discord token is also passed
    to ``on_fatal`` (``rapport run`` then stops and exits non-zero).
    """
    adapters = Adapters()
    if settings.slack_enabled:
        slack = SlackAdapter.from_settings(settings, rt.core, rt.core)
        rt.outbox.register(slack.executor)
        if settings.slack_socket_mode:
            await slack.start()
            parts["slack"] = "socket mode"
        else:
            slack.mount(web_app)
            parts["slack"] = "http /slack/events"
        adapters.slack = slack
        adapters.closers.append(slack.close)
        rt.tasks.append(asyncio.create_task(_quietly(slack.backfill()), name="slack-backfill"))
    if settings.discord_enabled and settings.DISCORD_TOKEN:
        discord = DiscordAdapter.from_settings(settings, rt.core, **(discord_options or {}))
        rt.outbox.register(discord.executor)
        task = asyncio.create_task(discord.start(settings.DISCORD_TOKEN), name="rapport-discord")
        closing = False

        def discord_ended(t: asyncio.Task[None]) -> None:
            if closing or t.cancelled():
                return
            exc = t.exception()
            if exc is None:
                logger.error("discord: the gateway client stopped; Discord is offline")
                parts["discord"] = f"{FAILED}: stopped"
                return
            logger.error("discord: %s; Discord is offline", _one_line(exc), exc_info=exc)
            parts["discord"] = f"{FAILED}: {_one_line(exc)}"
            if isinstance(exc, LoginFailure) and on_fatal is not None:
                on_fatal("discord", exc)

        task.add_done_callback(discord_ended)

        async def close_discord() -> None:
            nonlocal closing
            closing = True
            await discord.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)

        adapters.discord = discord
        adapters.closers.append(close_discord)
        parts["discord"] = "gateway"
    if settings.llm_enabled:
        parts["llm"] = "configured"
    return adapters
