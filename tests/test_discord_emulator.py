"""The emulator speaks the details discord.py depends on (see PROTOCOLS.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.sandbox.discord_emulator import DiscordEmulator
from tests.discord_helpers import Community, seed_community


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator() as emulator:
        yield emulator


@pytest.fixture
def community(emu: DiscordEmulator) -> Community:
    return seed_community(emu)


@pytest.fixture
async def http(emu: DiscordEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bot {emu.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


async def test_json_content_type_is_exact(
    emu: DiscordEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emu.api_base}/users/@me") as resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["bot"] is True
    async with http.get(f"{emu.api_base}/oauth2/applications/@me") as resp:
        assert (await resp.json())["interactions_endpoint_url"] is None


async def test_requests_without_the_token_are_refused(emu: DiscordEmulator) -> None:
    async with aiohttp.ClientSession() as anon, anon.get(f"{emu.api_base}/users/@me") as resp:
        assert resp.status == 401


async def test_history_is_newest_first_and_pages_with_after_and_before(
    emu: DiscordEmulator, community: Community, http: aiohttp.ClientSession
) -> None:
    ids = [emu.say(community.alice, community.general, f"m{i}") for i in range(10)]
    base = f"{emu.api_base}/channels/{community.general}/messages"
    async with http.get(base, params={"after": str(ids[2]), "limit": "3"}) as resp:
        page = [int(m["id"]) for m in await resp.json()]
    assert page == [ids[5], ids[4], ids[3]]  # the oldest 3 after, newest first
    async with http.get(base, params={"before": str(ids[2]), "limit": "5"}) as resp:
        assert [int(m["id"]) for m in await resp.json()] == [ids[1], ids[0]]
    async with http.get(base, params={"limit": "2"}) as resp:
        assert [int(m["id"]) for m in await resp.json()] == [ids[9], ids[8]]


async def test_rate_limit_answer_has_what_discord_py_needs(
    emu: DiscordEmulator, community: Community, http: aiohttp.ClientSession
) -> None:
    emu.inject_fault("GET", r"/users/@me$", status=429, retry_after=0.25, is_global=True)
    async with http.get(f"{emu.api_base}/users/@me") as resp:
        assert resp.status == 429 and resp.headers["Via"]
        assert await resp.json() == {
            "message": "You are being rate limited.",
            "retry_after": 0.25,
            "global": True,
        }
    async with http.get(f"{emu.api_base}/users/@me") as resp:
        assert resp.status == 200


async def test_reply_to_a_missing_message_follows_fail_if_not_exists(
    emu: DiscordEmulator, community: Community, http: aiohttp.ClientSession
) -> None:
    url = f"{emu.api_base}/channels/{community.general}/messages"
    ref = {"message_id": 1, "channel_id": community.general}
    async with http.post(url, json={"content": "x", "message_reference": ref}) as resp:
        assert resp.status == 400
    soft = {**ref, "fail_if_not_exists": False}
    async with http.post(url, json={"content": "x", "message_reference": soft}) as resp:
        assert resp.status == 200 and "message_reference" not in await resp.json()
    async with http.post(url, json={"content": "y" * 2001}) as resp:
        assert resp.status == 400


async def test_gateway_sends_hello_ready_and_guilds_with_consistent_member_count(
    emu: DiscordEmulator, community: Community
) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(emu.gateway_url) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
        await ws.send_json({"op": 1, "d": None})
        assert (await ws.receive_json())["op"] == 11
        await ws.send_json({"op": 2, "d": {"token": emu.token, "intents": 1 | (1 << 9)}})
        ready = await ws.receive_json()
        assert ready["t"] == "READY" and ready["d"]["resume_gateway_url"] == emu.gateway_url
        guild = (await ws.receive_json())["d"]
        assert guild["member_count"] == len(guild["members"]) == 5
        emu.say(community.alice, community.general, "secret sauce")
        event = await ws.receive_json()
        # Without the message-content intent, Discord blanks the content.
        assert event["t"] == "MESSAGE_CREATE" and event["d"]["content"] == ""


async def test_standalone_control_prepares_and_fires_a_burst(
    emu: DiscordEmulator, community: Community
) -> None:
    async with aiohttp.ClientSession() as session:
        body = {
            "channel_id": community.general,
            "member_ids": [community.alice, community.bob],
            "count": 3,
            "texts": ["a", "b"],
        }
        async with session.post(f"{emu.base_url}/_emu/prepare", json=body) as resp:
            ids = json.loads(await resp.text())["ids"]
        assert [m["content"] for m in emu.history(community.general)] == ["a", "b", "a"]
        assert len(ids) == 3
        async with session.post(f"{emu.base_url}/_emu/fire", json={}) as resp:
            assert (await resp.json())["sent"] == 3


async def _identify(ws: aiohttp.ClientWebSocketResponse, token: str) -> str:
    assert (await ws.receive_json())["op"] == 10
    await ws.send_json({"op": 2, "d": {"token": token, "intents": 1 | (1 << 9)}})
    ready = await ws.receive_json()
    assert ready["t"] == "READY"
    return str(ready["d"]["session_id"])


@pytest.mark.parametrize(("code", "resumable"), [(1000, False), (4000, True)])
async def test_a_normal_close_ends_the_session_and_others_can_resume(
    emu: DiscordEmulator, community: Community, code: int, resumable: bool
) -> None:
    """Discord invalidates a session closed with 1000 (``Client.close()``); a client that
    drops with another code (4000 on op 7) may resume and gets what it missed."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(emu.gateway_url) as ws:
            session_id = await _identify(ws, emu.token)
            await ws.close(code=code)
        await emu.wait_until(lambda: emu.connection_count() == 0)
        missed = emu.say(community.alice, community.general, "while you were away")
        async with session.ws_connect(emu.gateway_url) as ws:
            assert (await ws.receive_json())["op"] == 10
            resume = {"token": emu.token, "session_id": session_id, "seq": 0}
            await ws.send_json({"op": 6, "d": resume})
            frames = [await ws.receive_json()]
            while resumable and frames[-1].get("t") != "RESUMED":
                frames.append(await ws.receive_json())
    if resumable:
        ids = [f["d"]["id"] for f in frames if f.get("t") == "MESSAGE_CREATE"]
        assert str(missed) in ids
    else:
        assert frames == [{"op": 9, "d": False}]
