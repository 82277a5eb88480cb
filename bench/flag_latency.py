"""Flag latency: a member's message entering the Discord emulator → its card at the Slack emulator.

Local detector, template draft, no LLM, SQLite. Messages are sent one after another; for
each, the time from handing it to the emulator's gateway to the emulator receiving the
card's ``chat.postMessage`` is recorded. Between messages the runtime's clock steps past
the incident window, so every complaint gets a card of its own instead of joining the
previous incident.

    .venv/bin/python bench/flag_latency.py [N]

Last line: one JSON object with p50_ms, p99_ms and flags.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.sandbox.stack import FLAGS_CHANNEL, Sandbox, sandbox
from handlers.clock import OffsetClock
from handlers.draft import Drafter

PROBLEMS = [
    "Still waiting for my refund after {n} weeks and nobody answers my emails",
    "The app crashes every time I open settings since the update, {n} days now",
    "I was charged twice this month and support has ignored me for {n} days",
    "My order never arrived, {n} days late and the tracking has not moved",
    "Locked out of my account for {n} days, password reset emails never come",
]


def _drafter(clock: OffsetClock) -> Drafter:
    """Rapport's own reply-template drafter (no LLM), as a brand without one runs it."""
    prompts = Path(__file__).resolve().parents[1] / "prompts"
    return Drafter(None, prompts, prompts / "kb", clock=clock.now)


def _more_cards(sb: Sandbox, before: int) -> bool:
    return len(sb.cards()) > before


async def run(n: int) -> dict[str, float | int]:
    clock = OffsetClock()
    with tempfile.TemporaryDirectory() as tmp:
        async with sandbox(f"sqlite:///{tmp}/bench.db", clock=clock, drafter=_drafter(clock)) as sb:
            member = sb.ids.members["alice"]
            latencies: list[float] = []
            for i in range(n):
                clock.advance(hours=7)
                text = PROBLEMS[i % len(PROBLEMS)].format(n=2 + i % 9)
                before = len(sb.cards())
                t0 = time.time()
                sb.discord.say(member, sb.ids.general, text)
                await sb.slack.wait_for(functools.partial(_more_cards, sb, before), timeout=10)
                posted = [
                    c
                    for c in sb.slack.calls_to("chat.postMessage")
                    if c.body.get("channel") == FLAGS_CHANNEL and not c.body.get("thread_ts")
                ]
                latencies.append((posted[-1].at - t0) * 1000)
            await sb.rt.settle()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)) - 1)]
    return {
        "flags": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(latencies[-1], 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    result = asyncio.run(run(n))
    print(f"flags: {result['flags']}  p50: {result['p50_ms']} ms  p99: {result['p99_ms']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
