"""Delivery guarantees: Events API retries are processed exactly once, and Socket Mode
carries events and clicks with acks, through real bolt and the emulator."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.slack_helpers import (
    FLAGS,
    GENERAL,
    MANAGER,
    MEMBER,
    TEAM,
    SlackStack,
    StandInCore,
    runtime_stack,
    standin_stack,
)


@pytest.fixture
async def stack() -> AsyncIterator[SlackStack]:
    async with standin_stack() as s:
        yield s


@pytest.fixture
async def socket_stack() -> AsyncIterator[SlackStack]:
    async with standin_stack(socket=True) as s:
        yield s


def core_of(stack: SlackStack) -> StandInCore:
    assert isinstance(stack.core, StandInCore)
    return stack.core


async def test_a_thousand_events_retried_in_random_order_reach_the_core_once_each(
    stack: SlackStack,
) -> None:
    core, emu = core_of(stack), stack.emu
    rng = random.Random(20260523)
    events = [emu.member_message(GENERAL, MEMBER, f"message {i}") for i in range(1000)]
    deliveries: list[tuple[dict[str, object], str, int]] = []
    only_retries = 0
    for i, event in enumerate(events):
        # 1–4 deliveries; sometimes the first (retry 0) never arrived at all.
        attempts = sorted(rng.sample(range(4), rng.randint(1, 4)))
        only_retries += attempts[0] > 0
        deliveries += [(event, f"Ev{i:05d}", n) for n in attempts]
    rng.shuffle(deliveries)
    assert only_retries > 50

    sem = asyncio.Semaphore(32)

    async def deliver(event: dict[str, object], event_id: str, retry: int) -> int:
        async with sem:
            d = await emu.send_event(event, event_id=event_id, retry_num=retry)
            return d.status

    statuses = await asyncio.gather(*(deliver(*d) for d in deliveries))
    assert set(statuses) == {200}
    # A sentinel in the same channel is processed after everything before it.
    await emu.send_event(emu.member_message(GENERAL, MEMBER, "sentinel"), event_id="EvEnd")
    await core.wait_for(lambda: any(m.text == "sentinel" for m in core.messages), timeout=20)
    ids = [m.message_id for m in core.messages if m.text != "sentinel"]
    assert len(ids) == 1000
    assert set(ids) == {e["ts"] for e in events}


async def test_socket_mode_delivers_events_and_clicks_with_acks(socket_stack: SlackStack) -> None:
    core, emu = core_of(socket_stack), socket_stack.emu
    assert emu.calls_to("apps.connections.open")
    ts, delivery = await emu.say(GENERAL, MEMBER, "hello over the socket")
    assert delivery.status == 200 and delivery.envelope_id
    assert any(a["envelope_id"] == delivery.envelope_id for a in emu.socket_acks)
    # Slack's retry of the same event over the socket is acked and not processed twice.
    event = emu.member_message(GENERAL, MEMBER, "retried")
    first = await emu.send_event(event, event_id="EvSock1")
    again = await emu.send_event(event, event_id="EvSock1", retry_num=1)
    assert (first.status, again.status) == (200, 200)
    await core.wait_for(lambda: len(core.messages) == 2)

    flag_id = await core.raise_flag()
    card_ts = core.flags[flag_id].extra["card_ts"]
    click = await emu.click(FLAGS, card_ts, "flag_claim", MANAGER)
    assert click.status == 200
    await emu.wait_for(lambda: len(emu.card_updates) == 1)
    assert core.flags[flag_id].state == "claimed"
    assert core.messages[0].message_id == ts

    status = await emu.slash_command("status", MANAGER, GENERAL)
    assert status.status == 200
    await emu.wait_for(lambda: len(emu.responses) == 1)
    assert TEAM in emu.responses[0]["text"]
    help_ = await emu.slash_command("nope", MANAGER, GENERAL)
    assert "Unknown subcommand" in help_.json()["text"]

    shortcut = await emu.message_shortcut("flag_for_followup", GENERAL, ts, MANAGER)
    assert shortcut.status == 200
    await core.wait_for(lambda: len(core.manual_flags) == 1)
    assert len(emu.socket_acks) >= 7
    assert emu.unacked_envelopes() == []


async def test_slack_is_answered_before_the_core_does_any_work(stack: SlackStack) -> None:
    core, emu = core_of(stack), stack.emu
    flag_id = await core.raise_flag()
    card_ts = core.flags[flag_id].extra["card_ts"]
    core.gate = asyncio.Event()  # the core is "stuck" on a slow database or LLM
    _, event = await emu.say(GENERAL, MEMBER, "hello")
    click = await emu.click(FLAGS, card_ts, "flag_claim", MANAGER)
    command = await emu.slash_command("nope", MANAGER, GENERAL)
    assert (event.status, click.status, command.status) == (200, 200, 200)
    assert core.messages == [] and core.calls == []
    core.gate.set()
    await core.wait_for(lambda: len(core.messages) == 1 and len(core.calls) == 1)
    await emu.wait_for(lambda: len(emu.card_updates) == 1)


async def test_socket_mode_with_the_real_runtime(tmp_path: Path) -> None:
    async with runtime_stack(tmp_path, socket=True) as stack:
        emu = stack.emu
        member_ts, d = await emu.say(GENERAL, MEMBER, "refund now, this is broken")
        assert d.status == 200 and d.envelope_id
        await emu.wait_for(lambda: len(emu.messages(FLAGS)) == 1, timeout=10)
        card_ts = emu.messages(FLAGS)[0]["ts"]
        click = await emu.click(FLAGS, card_ts, "flag_claim", MANAGER)
        assert click.status == 200
        await emu.wait_for(lambda: "(claimed)" in emu.message(FLAGS, card_ts)["text"], timeout=10)
        assert {a["envelope_id"] for a in emu.socket_acks} >= {d.envelope_id, click.envelope_id}
        assert member_ts in emu.channels[GENERAL].messages
