"""The bot's HTTP server: ``/healthz`` always, ``/slack/events`` when Slack runs in HTTP mode."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from sqlalchemy import text

from bot.app import Runtime

logger = logging.getLogger(__name__)

PartsProbe = Callable[[], dict[str, str]]


def make_web_app(rt: Runtime, parts: PartsProbe) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(rt.db.run(lambda s: s.execute(text("SELECT 1")).scalar_one()), 5)
            db_state = "ok"
        except Exception as exc:
            logger.warning("health check: database unavailable: %s", exc)
            db_state = "unavailable"
        states = parts()
        # A part that stopped (Discord never connected, its token was rejected) makes the
        # process unhealthy even though the database answers.
        failed = sorted(name for name, state in states.items() if state.startswith("failed"))
        healthy = db_state == "ok" and not failed
        body: dict[str, object] = {
            "status": "ok" if healthy else "degraded",
            "database": db_state,
            "parts": states,
        }
        if failed:
            body["failed"] = failed
        return web.json_response(body, status=200 if healthy else 503)

    web_app = web.Application()
    web_app.router.add_get("/healthz", healthz)
    return web_app


async def start_site(web_app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the port actually bound (port 0 picks one)."""
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            bound = int(addr[1])
            break
    return runner, bound
