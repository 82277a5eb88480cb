"""The emulator speaks Slack's Web API shapes to the real slack-sdk client."""

from __future__ import annotations

import json

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox.slack_emulator import SlackEmulator
from tests.slack_helpers import (
    BOT_TOKEN,
    FLAGS,
    GENERAL,
    MEMBER,
    SECRET,
    seed_workspace,
    standin_stack,
)


async def test_web_api_shapes_errors_and_auth() -> None:
    async with SlackEmulator(signing_secret=SECRET, bot_token=BOT_TOKEN) as emu:
        assert emu.api_base.endswith("/api/")
        seed_workspace(emu)
        client = AsyncWebClient(token=BOT_TOKEN, base_url=emu.api_base)
        me = await client.auth_test()
        assert me["user_id"] == emu.bot_user_id and me["bot_id"] == emu.bot_id

        root = await client.chat_postMessage(channel=GENERAL, text="root")
        assert root["channel"] == GENERAL and root["message"]["text"] == "root"
        reply = await client.chat_postMessage(channel=GENERAL, text="reply", thread_ts=root["ts"])
        upd = await client.chat_update(channel=GENERAL, ts=root["ts"], text="root v2")
        assert upd["text"] == "root v2"
        await client.reactions_add(channel=GENERAL, timestamp=root["ts"], name="eyes")

        history = await client.conversations_history(channel=GENERAL)
        assert [m["ts"] for m in history["messages"]] == [root["ts"]]
        assert history["response_metadata"]["next_cursor"] == ""
        replies = await client.conversations_replies(channel=GENERAL, ts=root["ts"])
        assert [m["ts"] for m in replies["messages"]] == [root["ts"], reply["ts"]]
        info = await client.conversations_info(channel=GENERAL)
        assert info["channel"]["name"] == "general"
        user = await client.users_info(user=MEMBER)
        assert user["user"]["name"] == "mallory"
        eph = await client.chat_postEphemeral(channel=FLAGS, user=MEMBER, text="psst")
        assert eph["message_ts"] and emu.ephemerals[0]["text"] == "psst"

        for call, error in [
            (client.chat_update(channel=GENERAL, ts="1.2", text="x"), "message_not_found"),
            (client.chat_postMessage(channel="C404", text="x"), "channel_not_found"),
            (client.users_info(user="U404"), "user_not_found"),
            (client.views_open(trigger_id="nope", view={"type": "modal"}), "invalid_trigger_id"),
            (
                client.reactions_add(channel=GENERAL, timestamp=root["ts"], name="eyes"),
                "already_reacted",
            ),
        ]:
            with pytest.raises(SlackApiError) as exc:
                await call
            assert exc.value.response.status_code == 200
            assert exc.value.response["error"] == error

        bad = AsyncWebClient(token="xoxb-wrong", base_url=emu.api_base)
        with pytest.raises(SlackApiError) as exc:
            await bad.auth_test()
        assert exc.value.response["error"] == "invalid_auth"

        emu.rate_limit("chat.postMessage", times=1, retry_after=7)
        with pytest.raises(SlackApiError) as exc:
            await client.chat_postMessage(channel=GENERAL, text="x")
        assert exc.value.response.status_code == 429
        assert exc.value.response.headers["Retry-After"] == "7"
        assert [c.method for c in emu.calls].count("chat.postMessage") == 4


async def test_three_step_file_upload() -> None:
    async with SlackEmulator(signing_secret=SECRET, bot_token=BOT_TOKEN) as emu:
        seed_workspace(emu)
        client = AsyncWebClient(token=BOT_TOKEN, base_url=emu.api_base)
        resp = await client.files_upload_v2(
            channel=FLAGS, content=b"\x89PNG chart", filename="digest.png", title="Weekly"
        )
        assert resp["file"]["title"] == "Weekly"
        methods = [c.method for c in emu.calls]
        assert methods[:2] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
        (file,) = emu.files.values()
        assert file["data"] == b"\x89PNG chart"
        assert emu.messages(FLAGS)[-1]["files"][0]["name"] == "digest.png"


async def test_url_verification_and_signing_helpers() -> None:
    async with standin_stack() as stack:
        body = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"})
        ok = await stack.emu.post_signed(body, "application/json")
        assert ok.status == 200 and ok.json() == {"challenge": "c-123"}
        stale = await stack.emu.post_signed(body, "application/json", stale=True)
        assert stale.status == 401
        sig = stack.emu.sign("x", 1)
        assert sig.startswith("v0=") and len(sig) == 67


async def test_member_text_is_escaped_like_slack_in_events_and_history() -> None:
    """Slack sends a member's & < > as &amp; &lt; &gt; (its own <@U…> markup stays live)."""
    async with SlackEmulator(signing_secret=SECRET, bot_token=BOT_TOKEN) as emu:
        seed_workspace(emu)
        client = AsyncWebClient(token=BOT_TOKEN, base_url=emu.api_base)
        typed = "Q&A <sigh> &amp; >"
        wire = "Q&amp;A &lt;sigh&gt; &amp;amp; &gt;"
        event = emu.member_message(GENERAL, MEMBER, typed)
        assert event["text"] == wire
        assert event["blocks"][0]["elements"][0]["elements"][0]["text"] == typed
        reply = emu.member_message(GENERAL, MEMBER, "a<b", thread_ts=event["ts"])
        assert reply["text"] == "a&lt;b"
        mention = emu.member_message(GENERAL, MEMBER, "<@U0MANAGER> R&amp;D", markup=True)
        assert mention["text"] == "<@U0MANAGER> R&amp;D"

        history = await client.conversations_history(channel=GENERAL)
        assert [m["text"] for m in history["messages"]] == [mention["text"], wire]
        replies = await client.conversations_replies(channel=GENERAL, ts=event["ts"])
        assert [m["text"] for m in replies["messages"]] == [wire, "a&lt;b"]

        edited = emu.edit_event(GENERAL, event["ts"], "now: x > y & z")
        assert edited["message"]["text"] == "now: x &gt; y &amp; z"
        assert edited["previous_message"]["text"] == wire
        history = await client.conversations_history(channel=GENERAL)
        assert history["messages"][-1]["text"] == "now: x &gt; y &amp; z"
