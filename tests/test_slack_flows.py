"""Real slack-bolt against the Slack emulator, with an in-memory core behind the adapter.

Every request is signed and dispatched through bolt exactly as in production; only the
network is local. Waits are bounded and event-driven.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from bot.slack_adapter import SlashRequest
from handlers.events import MessageKind, PostFlagCard
from tests.slack_helpers import (
    EVIL,
    FLAGS,
    GENERAL,
    MANAGER,
    MEMBER,
    OUTSIDER,
    TEAM,
    SlackStack,
    StandInCore,
    all_text,
    standin_stack,
)


@pytest.fixture
async def stack() -> AsyncIterator[SlackStack]:
    async with standin_stack() as s:
        yield s


def core_of(stack: SlackStack) -> StandInCore:
    assert isinstance(stack.core, StandInCore)
    return stack.core


async def posted_card(stack: SlackStack) -> tuple[int, str]:
    core = core_of(stack)
    flag_id = await core.raise_flag()
    return flag_id, core.flags[flag_id].extra["card_ts"]


async def test_card_is_posted_to_the_flags_channel_escaped(stack: SlackStack) -> None:
    _, ts = await posted_card(stack)
    card = stack.emu.message(FLAGS, ts)
    ids = [b["action_id"] for b in card["blocks"][-1]["elements"]]
    assert ids == ["flag_claim", "flag_send", "flag_edit", "flag_dismiss", "flag_resolve"]
    text = all_text(card)
    for token in ("<!channel>", "<@U1>", "<https://evil|click>", "<!here>"):
        assert token not in text
    post = stack.emu.calls_to("chat.postMessage")[0].body
    assert post["channel"] == FLAGS and post["unfurl_links"] is False


@pytest.mark.parametrize(
    ("action_id", "verb", "state"),
    [
        ("flag_claim", "claimed", "claimed"),
        ("flag_send", "replied", "replied"),
        ("flag_dismiss", "dismissed", "dismissed"),
        ("flag_resolve", "resolved", "resolved"),
    ],
)
async def test_manager_buttons_reach_the_workflow_and_update_the_card_in_place(
    stack: SlackStack, action_id: str, verb: str, state: str
) -> None:
    core = core_of(stack)
    flag_id, ts = await posted_card(stack)
    delivery = await stack.emu.click(FLAGS, ts, action_id, MANAGER)
    assert delivery.status == 200
    await stack.emu.wait_for(lambda: len(stack.emu.card_updates) == 1)
    assert core.calls[0][:3] == (verb, flag_id, MANAGER)
    update = stack.emu.card_updates[0]
    assert (update["channel"], update["ts"]) == (FLAGS, ts)
    assert core.flags[flag_id].state == state
    card = stack.emu.message(FLAGS, ts)
    assert "edited" in card
    assert len([m for m in stack.emu.messages(FLAGS) if m.get("thread_ts") is None]) == 1
    if state in ("dismissed", "resolved"):
        assert not any(b["type"] == "actions" for b in card["blocks"])
    if action_id == "flag_send":
        await stack.emu.wait_for(lambda: len(stack.emu.messages(GENERAL)) == 1)
        reply = stack.emu.messages(GENERAL)[0]
        assert reply["text"] == "Sorry about that &amp; more"
    assert stack.emu.ephemerals == []


async def test_edit_opens_a_prefilled_modal_and_submit_sends_the_edited_text(
    stack: SlackStack,
) -> None:
    core = core_of(stack)
    flag_id, ts = await posted_card(stack)
    await stack.emu.click(FLAGS, ts, "flag_edit", MANAGER)
    await stack.emu.wait_for(lambda: len(stack.emu.views) == 1)
    ((view_id, view),) = stack.emu.views.items()
    assert view["callback_id"] == "flag_edit_submit"
    assert view["private_metadata"] == str(flag_id)
    element = view["blocks"][0]["element"]
    assert element["initial_value"] == "Sorry about that & more"

    empty = await stack.emu.submit_view(view_id, MANAGER, {"reply": {"text": "  "}})
    assert empty.json()["response_action"] == "errors"
    assert core.calls == []

    done = await stack.emu.submit_view(view_id, MANAGER, {"reply": {"text": "We fixed it <3"}})
    assert done.status == 200 and done.body == ""
    await stack.emu.wait_for(lambda: len(stack.emu.card_updates) == 1)
    assert core.calls == [("replied", flag_id, MANAGER, "We fixed it <3")]
    await stack.emu.wait_for(lambda: len(stack.emu.messages(GENERAL)) == 1)
    assert stack.emu.messages(GENERAL)[0]["text"] == "We fixed it &lt;3"


async def test_non_manager_click_is_refused_ephemerally_and_nothing_changes(
    stack: SlackStack,
) -> None:
    core = core_of(stack)
    _, ts = await posted_card(stack)
    before = json.dumps(stack.emu.message(FLAGS, ts), sort_keys=True)
    for action_id in ("flag_claim", "flag_send", "flag_edit", "flag_dismiss", "flag_resolve"):
        delivery = await stack.emu.click(FLAGS, ts, action_id, OUTSIDER)
        assert delivery.status == 200
    await stack.emu.wait_for(lambda: len(stack.emu.ephemerals) == 5)
    assert {e["user"] for e in stack.emu.ephemerals} == {OUTSIDER}
    assert all("managers" in e["text"] for e in stack.emu.ephemerals)
    assert core.calls == []
    assert stack.emu.views == {}
    assert stack.emu.card_updates == []
    assert json.dumps(stack.emu.message(FLAGS, ts), sort_keys=True) == before


async def test_refused_outcome_is_shown_to_the_manager(stack: SlackStack) -> None:
    _, ts = await posted_card(stack)
    await stack.emu.click(FLAGS, ts, "flag_dismiss", MANAGER)
    await stack.emu.wait_for(lambda: len(stack.emu.card_updates) == 1)
    # A stale client still shows Claim on the closed card.
    await stack.emu.click(FLAGS, ts, "flag_claim", MANAGER, value="1")
    await stack.emu.wait_for(lambda: len(stack.emu.ephemerals) == 1)
    assert stack.emu.ephemerals[0]["text"] == "Flag #1 is dismissed &lt;nope&gt;."


async def test_bad_signature_and_stale_timestamp_get_401_and_change_nothing(
    stack: SlackStack,
) -> None:
    core = core_of(stack)
    _, ts = await posted_card(stack)
    event = stack.emu.member_message(GENERAL, MEMBER, "hello")
    bad = await stack.emu.send_event(event, bad_signature=True)
    stale = await stack.emu.send_event(event, stale=True)
    click = await stack.emu.click(FLAGS, ts, "flag_claim", MANAGER, bad_signature=True)
    assert (bad.status, stale.status, click.status) == (401, 401, 401)
    # A good delivery afterwards goes through, and is the only thing the core saw.
    good = await stack.emu.send_event(event)
    assert good.status == 200
    await core.wait_for(lambda: len(core.messages) == 1)
    assert core.calls == [] and stack.emu.card_updates == []


async def test_rate_limited_card_post_is_retried_after_retry_after(stack: SlackStack) -> None:
    core = core_of(stack)
    stack.emu.rate_limit("chat.postMessage", times=2, retry_after=0)
    flag_id = await core.raise_flag()
    posts = stack.emu.calls_to("chat.postMessage")
    assert len(posts) == 3
    assert core.flags[flag_id].extra["card_ts"] in stack.emu.channels[FLAGS].messages


async def test_slack_errors_map_to_retryable_or_final_results(stack: SlackStack) -> None:
    core = core_of(stack)
    flag_id = await core.raise_flag()
    executor = stack.adapter.executor
    stack.emu.fail("chat.postMessage", "channel_not_found")
    final = await executor.execute(PostFlagCard(flag_id))
    assert (final.ok, final.error, final.retryable) == (False, "channel_not_found", False)
    stack.emu.fail("chat.postMessage", "internal_error", status=500)
    transient = await executor.execute(PostFlagCard(flag_id))
    assert (transient.ok, transient.retryable) == (False, True)
    stack.emu.rate_limit("chat.postMessage", times=10, retry_after=0)
    limited = await executor.execute(PostFlagCard(flag_id))
    assert (limited.ok, limited.error, limited.retryable) == (False, "ratelimited", True)


async def test_community_messages_edits_deletes_reactions_and_joins(stack: SlackStack) -> None:
    core = core_of(stack)
    emu = stack.emu
    ts, _ = await emu.say(GENERAL, MEMBER, "the app is broken")
    reply_ts, _ = await emu.say(GENERAL, OUTSIDER, "same here", thread_ts=ts)
    await emu.send_event(emu.edit_event(GENERAL, ts, "the app is very broken"))
    await emu.send_event(emu.delete_event(GENERAL, reply_ts))
    await emu.send_event(emu.reaction_event(GENERAL, ts, OUTSIDER, "thumbsup", added=True))
    await emu.send_event(emu.reaction_event(GENERAL, ts, OUTSIDER, "thumbsup", added=False))
    await emu.send_event(
        {
            "type": "member_joined_channel",
            "user": OUTSIDER,
            "channel": GENERAL,
            "channel_type": "C",
            "team": TEAM,
            "event_ts": "1700000000.000100",
        }
    )
    # Ignored: our own bot, the flags channel, join/leave noise.
    await emu.send_event(
        {
            "type": "message",
            "channel": GENERAL,
            "user": emu.bot_user_id,
            "bot_id": emu.bot_id,
            "text": "from me",
            "ts": "1700000000.000200",
        }
    )
    await emu.send_event(
        {
            "type": "message",
            "channel": FLAGS,
            "user": MANAGER,
            "text": "hi",
            "ts": "1700000000.000300",
        }
    )
    await emu.send_event(
        {
            "type": "message",
            "subtype": "channel_join",
            "channel": GENERAL,
            "user": OUTSIDER,
            "text": "joined",
            "ts": "1700000000.000400",
        }
    )
    await core.wait_for(
        lambda: len(core.messages) == 4 and len(core.reactions) == 2 and len(core.joins) == 1
    )

    new, reply, edit, delete = core.messages
    assert (new.kind, new.platform, new.community_id, new.channel_id) == (
        MessageKind.NEW,
        "slack",
        TEAM,
        GENERAL,
    )
    assert new.message_id == ts and new.thread_id is None
    assert new.author.id == MEMBER and new.author.name == "mallory"
    assert new.channel_name == "general" and new.community_name == "Rapport Sandbox"
    assert new.permalink == emu.permalink(GENERAL, ts)
    assert reply.thread_id == ts and reply.message_id == reply_ts
    assert (edit.kind, edit.message_id, edit.text) == (
        MessageKind.EDIT,
        ts,
        "the app is very broken",
    )
    assert edit.edited_at is not None
    assert (delete.kind, delete.message_id, delete.text) == (MessageKind.DELETE, reply_ts, "")
    assert [(r.emoji, r.added, r.message_id) for r in core.reactions] == [
        ("thumbsup", True, ts),
        ("thumbsup", False, ts),
    ]
    assert core.joins[0].member.id == OUTSIDER and core.joins[0].community_id == TEAM
    assert core.communities[0][:2] == (TEAM, "Rapport Sandbox")


async def test_message_shortcut_flags_for_follow_up(stack: SlackStack) -> None:
    core = core_of(stack)
    ts, _ = await stack.emu.say(GENERAL, MEMBER, "meh")
    d = await stack.emu.message_shortcut("flag_for_followup", GENERAL, ts, MANAGER)
    assert d.status == 200
    await stack.emu.wait_for(lambda: len(stack.emu.responses) == 1)
    assert core.manual_flags == [(TEAM, GENERAL, ts, MANAGER)]
    response = stack.emu.responses[0]
    assert response["response_type"] == "ephemeral"
    assert response["text"] == f"Flagged for follow-up by <@{MANAGER}> &amp; team."


async def test_slash_command_status_help_and_registry(stack: SlackStack) -> None:
    emu = stack.emu
    status = await emu.slash_command("status", MANAGER, GENERAL)
    assert status.status == 200
    await emu.wait_for(lambda: len(emu.responses) == 1)
    assert emu.responses[0]["text"] == f"Rapport is listening in {TEAM}: 0 messages &lt;ok&gt;."

    unknown = await emu.slash_command("frobnicate", MANAGER, GENERAL)
    assert unknown.status == 200
    assert "Unknown subcommand `frobnicate`" in unknown.body and "`status`" in unknown.body
    bare = await emu.slash_command("", MANAGER, GENERAL)
    assert "Usage: `/rapport <subcommand>`" in bare.body

    seen: list[SlashRequest] = []

    async def echo(req: SlashRequest) -> str:
        seen.append(req)
        return f"echo {req.args}"

    stack.adapter.commands.register("echo", "repeat after me", echo)
    with pytest.raises(ValueError):
        stack.adapter.commands.register("status", "again", echo)
    await emu.slash_command("echo  a b", MANAGER, GENERAL)
    await emu.wait_for(lambda: len(emu.responses) == 2)
    assert emu.responses[1]["text"] == "echo a b"
    assert seen[0].community_id == TEAM and seen[0].user_id == MANAGER

    async def broken(req: SlashRequest) -> str:
        raise RuntimeError("database is locked")

    stack.adapter.commands.register("broken", "always fails", broken)
    await emu.slash_command("broken", MANAGER, GENERAL)
    await emu.wait_for(lambda: len(emu.responses) == 3)
    assert "hit an error" in emu.responses[2]["text"]


async def test_card_thread_reply_mentions_the_oncall_group(stack: SlackStack) -> None:
    from handlers.events import PostCardThreadReply

    core = core_of(stack)
    flag_id, ts = await posted_card(stack)
    result = await stack.adapter.executor.execute(
        PostCardThreadReply(flag_id, "Reminder <!channel>", "S0ONCALL")
    )
    assert result.ok
    reply = stack.emu.thread(FLAGS, ts)[-1]
    assert reply["text"] == "<!subteam^S0ONCALL> Reminder &lt;!channel&gt;"
    assert EVIL not in reply["text"] and core.flags[flag_id].state == "open"


def test_manifest_names_what_the_adapter_listens_for() -> None:
    from pathlib import Path

    from bot.slack_adapter import SHORTCUT_CALLBACK_ID, SLASH_COMMAND

    manifest = (Path(__file__).parent.parent / "slack-manifest.yml").read_text()
    assert f"callback_id: {SHORTCUT_CALLBACK_ID}" in manifest
    assert f"command: {SLASH_COMMAND}" in manifest
    for needed in ("chat:write", "channels:history", "reactions:read", "users:read", "commands"):
        assert f"- {needed}" in manifest
    for event in ("message.channels", "reaction_added", "member_joined_channel", "team_join"):
        assert f"- {event}" in manifest


async def test_message_shortcut_by_a_non_manager_is_refused(stack: SlackStack) -> None:
    core = core_of(stack)
    ts, _ = await stack.emu.say(GENERAL, MEMBER, "meh")
    d = await stack.emu.message_shortcut("flag_for_followup", GENERAL, ts, OUTSIDER)
    assert d.status == 200
    await stack.emu.wait_for(lambda: len(stack.emu.responses) == 1)
    assert core.manual_flags == []
    assert "managers" in stack.emu.responses[0]["text"]
