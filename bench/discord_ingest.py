"""Benchmark: how fast Rapport's Discord ingest takes in messages, next to bare discord.py.

Usage: python bench/discord_ingest.py [-n 20000] [--repeat 3] [--negative-share 0.05]
[--db sqlite:///…]

The emulator runs in its own process (``python -m bot.sandbox.discord_emulator``, pinned
to another core when there is one, started afresh for every run) and fires N prebuilt
MESSAGE_CREATE frames back to back; this process is pinned to core 0 and takes them in,
in interleaved rounds (medians are reported, since this machine's speed drifts from one
second to the next):

a) a plain ``discord.Client`` whose ``on_message`` only counts: the issue's baseline
   ("discord.py alone, an empty handler"), and ``ratio`` is measured against it;
b) Rapport's :class:`~bot.discord_adapter.DiscordAdapter` over the real runtime
   (``bot.app.build_runtime``: watched check, detector, SQLite store, flags), timed until
   every message is judged and committed and every flag raised.

Rapport's adapter takes new messages in discord.py's ``dispatch`` rather than through an
``on_message`` handler, which spares discord.py's task per handler call. So that this
saving can be told apart from Rapport's own cost, each round also times c) discord.py
alone counting at ``dispatch`` the same way (``raw_at_dispatch_per_s``;
``ratio_vs_at_dispatch`` is Rapport against it), and d) the adapter over a core that
does nothing (``adapter_noop_core_per_s``).

Lost and duplicated messages are counted by comparing the ids sent with the ids received
(a) and with the ids stored plus delivered twice to the core (b), summed over rounds. The
collector is set up as ``rapport run`` sets it (:mod:`bot.heap`) for every run, the
baseline included. The last printed line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import discord  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlmodel import col  # noqa: E402

from bot.app import build_runtime, default_judge  # noqa: E402
from bot.discord_adapter import DiscordAdapter, configure_endpoints  # noqa: E402
from bot.heap import settle_after_startup  # noqa: E402
from bot.sandbox.delegating import DelegatingCore, NullCore  # noqa: E402
from bot.settings import Settings, load_settings  # noqa: E402
from handlers.events import MessageEvent, MessageKind  # noqa: E402
from handlers.judging import Judge  # noqa: E402
from handlers.ports import CommunityCore  # noqa: E402
from storage.models import Message  # noqa: E402

logger = logging.getLogger("bench.discord_ingest")

# A community's ordinary mix: mostly chatter and questions, a share of complaints.
CHATTER = [
    "good morning everyone!",
    "has anyone tried the new export feature yet?",
    "lol same",
    "the latest update is really smooth, nice work",
    "how do I change my billing email?",
    "thanks, that fixed it",
    "what's everyone building this weekend?",
    "love the dark mode",
    "is there a roadmap for the API?",
    "congrats on the launch!",
    "cool, see you at the meetup",
    "just upgraded to pro, worth it",
    "brb",
    "which plan includes SSO?",
    "here's my setup, feedback welcome",
]
COMPLAINTS = [
    "I've been waiting two weeks for my refund, this is ridiculous",
    "the app crashes every time I open settings",
    "support hasn't answered my ticket in 5 days",
    "my order still hasn't shipped and nobody replies",
    "anyone else getting charged twice this month?",
    "this is the worst customer service I've ever had",
]


def message_mix(negative_share: float, size: int = 200) -> list[str]:
    """``size`` texts of which ``negative_share`` are complaints, spread evenly."""
    n_neg = round(size * negative_share)
    texts = [CHATTER[i % len(CHATTER)] for i in range(size - n_neg)]
    for k in range(n_neg):
        texts.insert(int(k * size / max(n_neg, 1)), COMPLAINTS[k % len(COMPLAINTS)])
    return texts[:size]


@dataclass
class Emulator:
    proc: subprocess.Popen[str]
    info: dict[str, Any]

    @property
    def control(self) -> str:
        return str(self.info["api_base"]).rsplit("/api/", 1)[0] + "/_emu"


def start_emulator(cores: list[int]) -> Emulator:
    """Spawn the emulator on the other ``cores``, then pin this process to the first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox.discord_emulator", "--seed"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    if len(cores) > 1:
        os.sched_setaffinity(proc.pid, set(cores[1:]))
    os.sched_setaffinity(0, {cores[0]})
    return Emulator(proc, info)


class CountingCore(DelegatingCore):
    """Forwards to the real core and counts the NEW messages it is given (the clock stops
    once they are all judged, committed and followed up: see run_rapport)."""

    def __init__(self, inner: CommunityCore, target: int) -> None:
        super().__init__(inner)
        self.target = target
        self.delivered: Counter[str] = Counter()
        self.done = asyncio.Event()

    async def on_message(self, event: MessageEvent) -> None:
        await self.inner.on_message(event)
        if event.kind is MessageKind.NEW:
            self._taken(event)

    def accept(self, event: MessageEvent) -> None:
        # The adapter's fast path; the clock stops once the core has judged, stored and
        # followed up everything taken (see run_rapport).
        self.inner.accept(event)
        self._taken(event)

    def _taken(self, event: MessageEvent) -> None:
        self.delivered[event.message_id] += 1
        if len(self.delivered) >= self.target:
            self.done.set()


async def _control(http: aiohttp.ClientSession, emu: Emulator, verb: str, **body: Any) -> Any:
    async with http.post(f"{emu.control}/{verb}", json=body) as resp:
        resp.raise_for_status()
        return await resp.json(content_type=None)


async def _burst(
    http: aiohttp.ClientSession, emu: Emulator, n: int, texts: list[str]
) -> tuple[list[str], float]:
    """Prebuild N messages in the emulator, then fire them; returns ids and the start time."""
    members = list(emu.info["members"].values())
    prepared = await _control(
        http,
        emu,
        "prepare",
        channel_id=emu.info["channels"]["general"],
        member_ids=members,
        count=n,
        texts=texts,
    )
    started = time.perf_counter()
    await _control(http, emu, "fire")
    return [str(i) for i in prepared["ids"]], started


async def _until_ready(client: discord.Client, runner: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(client.wait_until_ready())
    done, _ = await asyncio.wait({ready, runner}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        runner.result()
    if ready not in done:
        raise TimeoutError("client never became ready")


class DispatchCounter(discord.Client):
    """discord.py taking messages where Rapport's adapter does: in ``dispatch``, with no
    task per message. Not the issue's baseline; printed so the gain from skipping
    discord.py's per-handler task can be told apart from Rapport's own cost."""

    def __init__(self, n: int, **options: Any) -> None:
        super().__init__(**options)
        self.n = n
        self.seen: list[int] = []
        self.done = asyncio.Event()

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        if event == "message":
            self.seen.append(args[0].id)
            if len(self.seen) >= self.n:
                self.done.set()
            return
        super().dispatch(event, *args, **kwargs)


async def run_raw(
    emu: Emulator, n: int, texts: list[str], timeout_s: float, *, at_dispatch: bool = False
) -> dict[str, Any]:
    """(a) bare discord.py: an on_message that only notes the id (or, ``at_dispatch``,
    the same note taken in ``dispatch``, as Rapport's adapter takes messages)."""
    configure_endpoints(emu.info["api_base"], emu.info["gateway_url"])
    intents = discord.Intents.none()
    intents.guilds = intents.guild_messages = intents.message_content = True
    client: discord.Client
    if at_dispatch:
        client = counter = DispatchCounter(n, intents=intents, guild_ready_timeout=0.05)
        seen, done = counter.seen, counter.done
    else:
        client = discord.Client(intents=intents, guild_ready_timeout=0.05)
        seen = []
        done = asyncio.Event()

        @client.event
        async def on_message(message: discord.Message) -> None:
            seen.append(message.id)
            if len(seen) >= n:
                done.set()

    async with aiohttp.ClientSession() as http:
        runner = asyncio.create_task(client.start(emu.info["token"]))
        await _until_ready(client, runner)
        sent, started = await _burst(http, emu, n, texts)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout_s)
        elapsed = time.perf_counter() - started
        await client.close()
        await asyncio.gather(runner, return_exceptions=True)
    got = Counter(str(i) for i in seen)
    return {
        "seconds": elapsed,
        "per_s": len(got) / elapsed,
        "lost": sum(1 for i in sent if i not in got),
        "duplicated": sum(c - 1 for c in got.values() if c > 1),
    }


def _judge(settings: Settings) -> Judge:
    """The runtime's default detector (built explicitly if the default hook lags behind)."""
    try:
        return default_judge(settings)
    except TypeError:
        from handlers.detect import Detector

        return Detector.default()


async def run_adapter(
    emu: Emulator,
    n: int,
    texts: list[str],
    timeout_s: float,
    inner: CommunityCore,
    committed: Callable[[], Awaitable[None]] | None = None,
) -> tuple[dict[str, Any], CountingCore]:
    """Rapport's adapter in front of ``inner``, timed until ``inner`` finished the last one
    and, with ``committed``, until that has returned (every write committed)."""
    core = CountingCore(inner, n)
    client = DiscordAdapter(
        core,
        api_base=emu.info["api_base"],
        gateway_url=emu.info["gateway_url"],
        guild_ids=[int(emu.info["guild_id"])],
        guild_ready_timeout=0.05,
    )
    async with aiohttp.ClientSession() as http:
        runner = asyncio.create_task(client.start(emu.info["token"]))
        await _until_ready(client, runner)
        sent, started = await _burst(http, emu, n, texts)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(core.done.wait(), timeout_s)
        if committed is not None:
            await committed()
        elapsed = time.perf_counter() - started
        await client.close()
        await asyncio.gather(runner, return_exceptions=True)
    got = core.delivered
    return {
        "seconds": elapsed,
        "per_s": len(got) / elapsed,
        "sent": sent,
        "lost": sum(1 for i in sent if i not in got),
        "duplicated": sum(c - 1 for c in got.values() if c > 1),
    }, core


async def run_rapport(
    emu: Emulator, n: int, texts: list[str], db_url: str, timeout_s: float
) -> dict[str, Any]:
    """(b) Rapport: adapter → watched check → detector → batched SQLite store → flags."""
    settings = load_settings(_env_file=None, DATABASE_URL=db_url)
    async with build_runtime(settings, judge=_judge(settings), start_workers=False) as rt:
        settle_after_startup()  # as `rapport run` does once it has started

        async def done() -> None:
            # The core judges in passes and does not wait for most commits: the clock
            # stops once everything is judged and committed and the flags are raised.
            await rt.core.flush()
            await rt.core.wait_reviews()
            await rt.core.flush()

        result, core = await run_adapter(emu, n, texts, timeout_s, rt.core, done)
        sent = result["sent"]
        elapsed = result["seconds"]
        await rt.core.flush()
        stored_ids = await rt.db.run(
            lambda s: list(
                s.scalars(select(col(Message.message_id)).where(col(Message.platform) == "discord"))
            )
        )
        flagged = rt.core.stats.flagged
    stored = Counter(stored_ids)
    return {
        "seconds": elapsed,
        "per_s": len(core.delivered) / elapsed,
        "lost": sum(1 for i in sent if i not in stored),
        "duplicated": sum(c - 1 for c in stored.values() if c > 1)
        + sum(c - 1 for c in core.delivered.values() if c > 1),
        "flagged": flagged,
    }


async def main_async(
    n: int, db_url: str | None, timeout_s: float, negative_share: float, repeat: int
) -> dict[str, Any]:
    texts = message_mix(negative_share)
    # The same collector settings for every run, the baseline included.
    settle_after_startup()
    cores = sorted(os.sched_getaffinity(0))
    raws: list[dict[str, Any]] = []
    dispatched: list[dict[str, Any]] = []
    baps: list[dict[str, Any]] = []
    raps: list[dict[str, Any]] = []

    async def fresh(run: Callable[[Emulator], Awaitable[Any]]) -> Any:
        # A fresh emulator for every run: one that has sent 100,000 messages slows down
        # (its history and buffers grow), and the fastest client, the baseline, then
        # measures the emulator instead of itself.
        emu = start_emulator(cores)
        try:
            return await run(emu)
        finally:
            emu.proc.terminate()
            emu.proc.wait(10)

    async def rapport(emu: Emulator) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            url = db_url or f"sqlite:///{tmp}/bench.db"
            return await run_rapport(emu, n, texts, url, timeout_s)

    # Interleaved rounds: this machine's speed drifts, and a drift then hits both.
    for round_no in range(1, repeat + 1):
        raw = await fresh(lambda emu: run_raw(emu, n, texts, timeout_s))
        print(f"[{round_no}] raw discord.py     : {raw['per_s']:>9,.0f}/s")
        at_dispatch = await fresh(lambda emu: run_raw(emu, n, texts, timeout_s, at_dispatch=True))
        print(f"[{round_no}] discord.py, taken at dispatch: {at_dispatch['per_s']:>9,.0f}/s")
        bare, _ = await fresh(lambda emu: run_adapter(emu, n, texts, timeout_s, NullCore()))
        print(f"[{round_no}] adapter, no-op core: {bare['per_s']:>9,.0f}/s")
        rap = await fresh(rapport)
        print(f"[{round_no}] rapport ingest     : {rap['per_s']:>9,.0f}/s")
        raws.append(raw)
        dispatched.append(at_dispatch)
        baps.append(bare)
        raps.append(rap)
    raw_per_s = statistics.median(r["per_s"] for r in raws)
    rap_per_s = statistics.median(r["per_s"] for r in raps)
    ratio = rap_per_s / raw_per_s
    lost = sum(r["lost"] for r in raps)
    duplicated = sum(r["duplicated"] for r in raps)
    print(
        f"median of {repeat}: raw {raw_per_s:,.0f}/s, rapport {rap_per_s:,.0f}/s, "
        f"ratio {ratio:.3f}; lost {lost}, duplicated {duplicated}"
    )
    return {
        "n": n,
        "repeat": repeat,
        "raw_per_s": round(raw_per_s, 1),
        "rapport_per_s": round(rap_per_s, 1),
        "ratio": round(ratio, 4),
        "lost": lost,
        "duplicated": duplicated,
        "raw_lost": sum(r["lost"] for r in raws),
        "raw_duplicated": sum(r["duplicated"] for r in raws),
        "raw_runs": [round(r["per_s"]) for r in raws],
        "rapport_runs": [round(r["per_s"]) for r in raps],
        # Each round's own ratio (its two runs are seconds apart, so drift hits both).
        "round_ratios": [
            round(b["per_s"] / a["per_s"], 3) for a, b in zip(raws, raps, strict=True)
        ],
        "adapter_noop_core_per_s": round(statistics.median(r["per_s"] for r in baps), 1),
        # discord.py alone, taking messages in dispatch as Rapport's adapter does (no task
        # per message): Rapport's rate against this one leaves that saving out.
        "raw_at_dispatch_per_s": round(statistics.median(r["per_s"] for r in dispatched), 1),
        "ratio_vs_at_dispatch": round(
            rap_per_s / statistics.median(r["per_s"] for r in dispatched), 4
        ),
        "negative_share": negative_share,
        "flagged": raps[-1]["flagged"],
        "cpu": "client pinned to core 0, emulator on the others",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="messages per run (>= 20000)")
    parser.add_argument("--db", default=None, help="DATABASE_URL (default: a temp SQLite file)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--negative-share", type=float, default=0.05, help="share of complaints in the mix"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved rounds; medians are reported"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    summary = asyncio.run(
        main_async(args.n, args.db, args.timeout, args.negative_share, args.repeat)
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
