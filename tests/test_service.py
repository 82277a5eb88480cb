"""``rapport run`` in-process: health endpoint, schema upgrade, Slack in HTTP mode."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import httpx
import pytest

from bot.sandbox.discord_emulator import DiscordEmulator
from bot.sandbox.slack_emulator import SlackEmulator
from bot.service import PartFailed, serve
from bot.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_serves_health_and_slack_events(tmp_path: Path) -> None:
    port = _free_port()
    async with SlackEmulator(signing_secret="s3cret", bot_token="xoxb-test") as emu:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            DATABASE_URL=f"sqlite:///{tmp_path}/run.db",
            RAPPORT_HTTP_PORT=port,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET="s3cret",
            SLACK_API_BASE=emu.api_base,
            SLACK_FLAGS_CHANNEL="CFLAGS",
            SLACK_MANAGERS="UMGR",
        )
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop=stop, ready=ready))
        try:
            await asyncio.wait_for(ready.wait(), 20)
            async with httpx.AsyncClient() as client:
                resp = await client.get(f"http://127.0.0.1:{port}/healthz")
            assert resp.status_code == 200
            body = resp.json()
            assert body["status"] == "ok" and body["database"] == "ok"
            assert body["parts"]["slack"] == "http /slack/events"

            emu.app_url = f"http://127.0.0.1:{port}/slack/events"
            bad = await emu.send_event(
                {"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1.1"},
                bad_signature=True,
            )
            assert bad.status == 401
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def _discord_ended() -> None:
    task = next((t for t in asyncio.all_tasks() if t.get_name() == "rapport-discord"), None)
    if task is not None:
        await asyncio.wait({task}, timeout=20)
        assert task.done()
    await asyncio.sleep(0)  # its done-callbacks run on the next loop turn


async def test_discord_that_never_connects_is_logged_and_fails_health(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        DATABASE_URL=f"sqlite:///{tmp_path}/run.db",
        RAPPORT_HTTP_PORT=port,
        DISCORD_TOKEN="a-token",
        DISCORD_API_BASE=f"http://127.0.0.1:{_free_port()}/api/v10",  # nothing listens
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, ready=ready))
    try:
        with caplog.at_level(logging.ERROR, logger="bot.service"):
            await asyncio.wait_for(ready.wait(), 20)
            await _discord_ended()
        assert not task.done(), "a network failure is not fatal: Slack and the core go on"
        assert any("Discord is offline" in r.getMessage() for r in caplog.records)
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://127.0.0.1:{port}/healthz")
        assert resp.status_code == 503
        body = resp.json()
        assert body["parts"]["discord"].startswith("failed") and body["failed"] == ["discord"]
        assert body["database"] == "ok" and body["parts"]["core"] == "running"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_rejected_discord_token_stops_run_with_an_error(tmp_path: Path) -> None:
    async with DiscordEmulator() as emu:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            DATABASE_URL=f"sqlite:///{tmp_path}/run.db",
            RAPPORT_HTTP_PORT=_free_port(),
            DISCORD_TOKEN="a-revoked-token",
            DISCORD_API_BASE=emu.api_base,
            DISCORD_GATEWAY_URL=emu.gateway_url,
        )
        task = asyncio.create_task(serve(settings, stop=asyncio.Event()))
        with pytest.raises(PartFailed, match="discord: LoginFailure"):
            await asyncio.wait_for(task, 30)


async def test_health_says_when_the_discord_gateway_is_reconnecting(tmp_path: Path) -> None:
    """A dropped gateway that discord.py is reconnecting is said so, not a fixed label;
    it does not fail the health check (it recovers by itself), a stopped part does."""
    from types import SimpleNamespace

    from bot.service import Adapters, live_parts
    from tests.core_helpers import until
    from tests.discord_helpers import core_under_test, running_client, seed_community

    async with DiscordEmulator() as emu, core_under_test("memory", tmp_path) as cut:
        c = seed_community(emu)
        rt = SimpleNamespace(llm=None)
        async with running_client(emu, cut.core, [c.guild_id]) as client:
            adapters = Adapters(discord=client)

            def state() -> str:
                return live_parts({"discord": "gateway"}, adapters, rt)["discord"]  # type: ignore[arg-type]

            assert state() == "gateway connected"
            async with emu.session_gap():  # the gateway drops; new sessions are held
                await until(lambda: state() == "gateway reconnecting")
            await emu.wait_for_ready(2)
            await until(lambda: state() == "gateway connected")
            failed = live_parts({"discord": "failed: stopped"}, adapters, rt)  # type: ignore[arg-type]
            assert failed["discord"] == "failed: stopped"
