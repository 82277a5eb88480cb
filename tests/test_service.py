"""``rapport run`` in-process: health endpoint, schema upgrade, Slack in HTTP mode."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx

from bot.sandbox.slack_emulator import SlackEmulator
from bot.service import serve
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
