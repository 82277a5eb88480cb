"""Drafting under load, and under an outage, through the real client and the emulator.

Phase 1: the emulator answers in a fixed latency (300 ms); N flags arrive at once and
each gets an LLM draft through Drafter + OpenAIChatClient. Targets: p99 end-to-end
<= 1.5 s, and never more than the configured concurrency in flight.

Phase 2: the endpoint goes down (every request a 500). N more flags arrive at once;
the breaker opens after a few failures and every draft still pending gets a template
draft within 100 ms of the breaker opening. Then drafts made while it is open are timed.

    .venv/bin/python bench/drafting.py [--flags 200] [--concurrency 64] [--latency 0.3]
                                       [--emulator process|thread]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.llm import LlmConfig, OpenAIChatClient  # noqa: E402
from bot.sandbox.openai_emulator import Fault, OpenAIEmulator  # noqa: E402
from handlers.draft import Draft, Drafter, DraftRequest  # noqa: E402

logger = logging.getLogger("bench.drafting")

COMPLAINTS = [
    ("billing_refund", "I was charged twice for order {i} and nobody answers my emails"),
    ("delivery_delay", "parcel {i} has been stuck in tracking for nine days, where is it?"),
    ("account_access", "locked out of my account again after the 2FA reset, attempt {i}"),
    ("product_defect", "the app crashes every time I open settings (build {i})"),
    ("customer_service", "waited {i} minutes on hold and then got disconnected"),
]


def flag(i: int) -> DraftRequest:
    reason, text = COMPLAINTS[i % len(COMPLAINTS)]
    return DraftRequest(
        community_id=f"guild-{i % 7}",
        platform="discord" if i % 2 else "slack",
        member_name=f"member{i}",
        member_text=text.format(i=i),
        context=(("someone", "same here, this keeps happening"),),
        reason=reason,
        severity="medium",
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


async def timed(drafter: Drafter, req: DraftRequest, t0: float) -> tuple[Draft, float]:
    draft = await drafter.draft(req)
    return draft, time.perf_counter() - t0


class Remote:
    """The emulator in its own process (default): its CPU is not on the measured loop,
    as with a real endpoint. Driven through its ``/_emulator/state`` control route."""

    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bot.sandbox.openai_emulator",
                "--port",
                "0",
                "--latency",
                str(latency),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("BASE_URL="):
                self.base_url = line.strip().split("=", 1)[1]
                break
        else:
            raise SystemExit("emulator did not start")
        self._control = self.base_url.removesuffix("/v1") + "/_emulator/state"

    async def set(self, **change: object) -> dict[str, object]:
        async with httpx.AsyncClient() as http:
            resp = await http.post(self._control, json=change)
            resp.raise_for_status()
            state: dict[str, object] = resp.json()
            return state

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class InThread:
    """The emulator on a thread of this process (``--emulator thread``)."""

    def __init__(self, emu: OpenAIEmulator) -> None:
        self.emu = emu
        self.base_url = emu.base_url

    async def set(self, **change: object) -> dict[str, object]:
        if "fault" in change:
            self.emu.fault = Fault(str(change["fault"])) if change["fault"] else None
        if change.get("reset_stats"):
            self.emu.max_in_flight = self.emu.in_flight
        return self.emu.snapshot()


async def run(args: argparse.Namespace, emu: Remote | InThread) -> dict[str, object]:
    config = LlmConfig(
        base_url=emu.base_url,
        api_key="sk-bench",
        concurrency=args.concurrency,
        timeout_s=10.0,
        max_retries=1,
        backoff_base_s=0.2,
        breaker_threshold=args.threshold,
        breaker_cooldown_s=60.0,
    )
    now = datetime.now(UTC)
    async with OpenAIChatClient(config, clock=time.perf_counter) as client:
        drafter = Drafter(client, ROOT / "prompts", ROOT / "prompts" / "kb", clock=lambda: now)
        await drafter.draft(flag(0))  # warm: templates compiled, KB indexed
        client.max_in_flight = 0
        await emu.set(reset_stats=True)

        # -- phase 1: load ------------------------------------------------------------
        t0 = time.perf_counter()
        results = await asyncio.gather(*(timed(drafter, flag(i), t0) for i in range(args.flags)))
        latencies = [t for _, t in results]
        emu_max = int(str((await emu.set())["max_in_flight"]))
        llm_drafts = sum(d.kind == "llm" for d, _ in results)
        phase1 = {
            "p50_s": round(statistics.median(latencies), 3),
            "p90_s": round(pct(latencies, 0.90), 3),
            "p99_s": round(pct(latencies, 0.99), 3),
            "max_s": round(max(latencies), 3),
            "max_in_flight": client.max_in_flight,
            "emulator_max_in_flight": emu_max,
            "llm_drafts": llm_drafts,
        }
        print(
            f"phase 1: {args.flags} flags at once, emulator {args.latency * 1000:.0f} ms, "
            f"concurrency {args.concurrency}: p50 {phase1['p50_s']} s, p99 {phase1['p99_s']} s, "
            f"max in flight {client.max_in_flight}, llm drafts {llm_drafts}/{args.flags}"
        )

        # -- phase 2: outage ----------------------------------------------------------
        await emu.set(fault=Fault.SERVER_ERROR.value)
        t1 = time.perf_counter()
        outage = await asyncio.gather(
            *(timed(drafter, flag(10_000 + i), t1) for i in range(args.flags))
        )
        opened_at = client.breaker.opened_at
        if opened_at is None:
            raise SystemExit("the breaker never opened")
        opened_after = opened_at - t1
        pending = [t - opened_after for _, t in outage if t >= opened_after]
        fallback_ms = max(pending, default=0.0) * 1000
        templates = sum(d.kind == "template" for d, _ in outage)
        open_times = []
        for i in range(50):
            started = time.perf_counter()
            d = await drafter.draft(flag(20_000 + i))
            open_times.append((time.perf_counter() - started) * 1000)
            assert d.kind == "template"
        print(
            f"phase 2: endpoint down; breaker opened {opened_after:.3f} s in; "
            f"{len(pending)} pending drafts all done {fallback_ms:.1f} ms after it opened; "
            f"template drafts {templates}/{args.flags}; "
            f"while open: max {max(open_times):.2f} ms per draft"
        )
        ok = (
            phase1["p99_s"] <= 1.5
            and client.max_in_flight <= args.concurrency
            and emu_max <= args.concurrency
            and llm_drafts == args.flags
            and templates == args.flags
            and fallback_ms <= 100
        )
        return {
            "flags": args.flags,
            "concurrency": args.concurrency,
            "latency_s": args.latency,
            **phase1,
            "breaker_opened_after_s": round(opened_after, 3),
            "pending_at_open": len(pending),
            "fallback_ms": round(fallback_ms, 1),
            "template_drafts": templates,
            "open_draft_ms_max": round(max(open_times), 2),
            "ok": ok,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--flags", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--threshold", type=int, default=5, help="breaker failure threshold")
    parser.add_argument(
        "--emulator",
        choices=["process", "thread"],
        default="process",
        help="run the emulator in its own process (like a real endpoint) or on a thread",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.emulator == "thread":
        emulator = OpenAIEmulator(latency_s=args.latency)
        with emulator.in_thread():
            result = asyncio.run(run(args, InThread(emulator)))
    else:
        remote = Remote(args.latency)
        try:
            result = asyncio.run(run(args, remote))
        finally:
            remote.close()
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
