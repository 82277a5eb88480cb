"""The real discord.py client, through Rapport's adapter, against the local emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.discord_adapter import (
    DEFAULT_SUBCOMMANDS,
    FLAG_COMMAND_NAME,
    MAX_MESSAGE_LEN,
    DiscordAdapter,
    Subcommand,
    split_text,
)
from bot.sandbox.discord_emulator import DiscordEmulator
from handlers.commands import CommandContext
from handlers.events import (
    AddReaction,
    MessageEvent,
    MessageKind,
    PostMessage,
    ReplyInThread,
    Target,
)
from handlers.ports import CommunityCore
from tests.core_helpers import until
from tests.discord_helpers import (
    Community,
    CoreUnderTest,
    MemoryCore,
    core_under_test,
    running_client,
    seed_community,
)

P = "discord"


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator() as emulator:
        yield emulator


@pytest.fixture
def community(emu: DiscordEmulator) -> Community:
    return seed_community(emu)


@pytest.fixture(params=["real", "memory"])
async def cut(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CoreUnderTest]:
    """Every test runs against the real core (SQLite) and the in-memory stand-in."""
    async with core_under_test(request.param, tmp_path) as c:
        yield c


@pytest.fixture
async def client(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest
) -> AsyncIterator[DiscordAdapter]:
    async with running_client(emu, cut.core, [community.guild_id], cut.runtime) as c:
        yield c


def target(c: Community, channel: int, **kw: str) -> Target:
    return Target(platform=P, community_id=str(c.guild_id), channel_id=str(channel), **kw)


async def say_and_wait(
    emu: DiscordEmulator, cut: CoreUnderTest, member: int, channel: int, text: str
) -> int:
    mid = emu.say(member, channel, text)
    await cut.core.wait_until(lambda: cut.core.new_count()[str(mid)] >= 1)
    return mid


# -- listening ----------------------------------------------------------------------------
async def test_member_message_reaches_core_once(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    from_bot = emu.say(c.otherbot, c.general, "beep, I am another bot")
    mid = await say_and_wait(emu, cut, c.alice, c.general, "the app keeps crashing on login")
    # Events arrive in order: once a later message is in, nothing else is pending.
    await say_and_wait(emu, cut, c.bob, c.general, "same here")

    assert cut.core.new_count()[str(mid)] == 1
    assert str(from_bot) not in cut.core.new_count()
    event = next(e for e in cut.core.messages if e.message_id == str(mid))
    assert (event.community_id, event.channel_id, event.thread_id) == (
        str(c.guild_id),
        str(c.general),
        None,
    )
    assert (event.author.id, event.author.name, event.text) == (
        str(c.alice),
        "alice",
        "the app keeps crashing on login",
    )
    assert event.channel_name == "general" and event.community_name == "Acme Community"
    assert event.permalink and str(mid) in event.permalink
    assert await cut.store.stored_count(P, [str(mid)]) == 1
    assert await cut.store.stored_text(P, str(mid)) == "the app keeps crashing on login"


async def test_guild_registered_with_its_channels(
    community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    await cut.core.wait_until(lambda: bool(cut.core.registered))
    gid, channels = cut.core.registered[-1]
    assert gid == str(community.guild_id)
    assert {ch.name for ch in channels} >= {"general", "support", "feedback"}


async def test_replies_threads_and_forum_posts_carry_their_place(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    root = await say_and_wait(emu, cut, c.alice, c.general, "refund still not here")
    reply = await say_and_wait(emu, cut, c.bob, c.general, "me neither")
    answer = emu.say(c.alice, c.general, "@bob which plan?", reply_to=reply)
    thread = emu.create_thread(c.general, "refunds", owner_id=c.alice, from_message=root)
    in_thread = emu.say(c.bob, thread, "three weeks now")
    post, _ = emu.create_forum_post(c.alice, c.forum, "Dark mode?", "please add dark mode")
    expected = [str(m) for m in (answer, in_thread, post)]
    await cut.core.wait_until(lambda: all(m in cut.core.new_count() for m in expected))

    by_id = {e.message_id: e for e in cut.core.messages}
    assert by_id[str(answer)].reply_to == str(reply)
    assert by_id[str(in_thread)].channel_id == str(c.general)
    assert by_id[str(in_thread)].thread_id == str(thread)
    assert (by_id[str(post)].channel_id, by_id[str(post)].thread_id) == (str(c.forum), str(post))
    assert by_id[str(post)].channel_name == "feedback"


async def test_edit_arrives_as_edit(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    mid = await say_and_wait(emu, cut, community.alice, community.general, "shipping is slow")
    emu.edit(mid, "shipping is really slow")
    await cut.core.wait_until(lambda: MessageKind.EDIT in cut.core.kinds(str(mid)))

    edit = next(e for e in cut.core.messages if e.kind == MessageKind.EDIT)
    assert edit.text == "shipping is really slow" and edit.edited_at is not None
    assert await cut.store.stored_text(P, str(mid)) == "shipping is really slow"


async def test_a_pin_or_embed_update_of_an_edited_message_is_not_another_edit(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    mid = await say_and_wait(emu, cut, c.alice, c.general, "shipping is slow")
    emu.edit(mid, "shipping is really slow")
    await cut.core.wait_until(lambda: MessageKind.EDIT in cut.core.kinds(str(mid)))
    emu.update_without_edit(mid, pinned=True)
    emu.update_without_edit(mid, embeds=[{"type": "link", "url": "https://example.com"}])
    emu.edit(mid, "shipping is really, really slow")  # updates reach the core in order

    def edits() -> list[MessageEvent]:
        return [e for e in cut.core.messages if e.message_id == str(mid) and e.edited_at]

    await cut.core.wait_until(lambda: edits()[-1].text == "shipping is really, really slow")
    assert [e.text for e in edits()] == [
        "shipping is really slow",
        "shipping is really, really slow",
    ]


async def test_delete_arrives_as_delete(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    one = await say_and_wait(emu, cut, c.alice, c.general, "my email is a@example.com")
    two = await say_and_wait(emu, cut, c.alice, c.general, "and my phone is 555-0100")
    three = await say_and_wait(emu, cut, c.alice, c.general, "oops")
    emu.delete(one)
    emu.delete_bulk(c.general, [two, three])
    await cut.core.wait_until(
        lambda: all(MessageKind.DELETE in cut.core.kinds(str(m)) for m in (one, two, three))
    )
    for mid in (one, two, three):
        assert await cut.store.stored_text(P, str(mid)) in ("", None)


async def test_a_delete_in_an_archived_thread_erases_the_message(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    """discord.py drops archived threads from its cache, so the delete names only the
    thread; the message is stored under the thread's parent channel."""
    c = community
    root = await say_and_wait(emu, cut, c.alice, c.general, "starting a thread")
    thread = emu.create_thread(c.general, "help", owner_id=c.alice, from_message=root)
    secret = await say_and_wait(emu, cut, c.bob, thread, "my card number is 4111 1111")
    assert await cut.store.stored_text(P, str(secret)) == "my card number is 4111 1111"
    archived = emu.channels[thread].payload()
    archived["thread_metadata"] = {**archived["thread_metadata"], "archived": True}
    emu.dispatch("THREAD_UPDATE", archived)
    emu.delete(secret)
    await cut.core.wait_until(lambda: MessageKind.DELETE in cut.core.kinds(str(secret)))
    assert await cut.store.stored_text(P, str(secret)) in ("", None)


async def test_reactions_and_joins_reach_the_core(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    mid = await say_and_wait(emu, cut, c.alice, c.general, "new release is great")
    emu.react(c.bob, mid, "🔥")
    emu.react(c.bob, mid, "🔥", remove=True)
    newcomer = emu.member_join(c.guild_id, "carol")
    await cut.core.wait_until(lambda: len(cut.core.reactions) == 2 and bool(cut.core.joins))

    added, removed = cut.core.reactions
    assert (added.message_id, added.member_id, added.emoji, added.added) == (
        str(mid),
        str(c.bob),
        "🔥",
        True,
    )
    assert removed.added is False
    assert cut.core.joins[0].member.id == str(newcomer)


async def test_unwatched_channel_is_not_logged(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    await cut.unwatch(str(community.guild_id), str(community.support))
    quiet = emu.say(community.alice, community.support, "private-ish chatter")
    public = await say_and_wait(emu, cut, community.alice, community.general, "public")
    assert await cut.store.stored_text("discord", str(public)) == "public"
    assert await cut.store.stored_text("discord", str(quiet)) is None


# -- acting -----------------------------------------------------------------------------
async def test_reply_from_core_is_a_reply_that_pings_nobody(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    mid = await say_and_wait(emu, cut, c.alice, c.general, "billing charged me twice")
    action = ReplyInThread(
        target=target(c, c.general, reply_to=str(mid)),
        text="Sorry about that, @everyone <@&1> we're on it.",
        flag_id=7,
    )
    result = await client.executor.execute(action)

    assert result.ok, result.error
    post = emu.bot_messages(c.general)[-1]
    assert str(post["message"]["id"]) == result.ref["message_id"]
    ref = post["request"]["message_reference"]
    assert str(ref["message_id"]) == str(mid) and ref["fail_if_not_exists"] is False
    assert post["request"]["allowed_mentions"]["parse"] == []
    assert post["message"]["message_reference"]["message_id"] == str(mid)
    # The bot's own echo is not logged as a member message.
    await say_and_wait(emu, cut, c.bob, c.general, "sentinel")
    assert result.ref["message_id"] not in cut.core.new_count()


async def test_post_in_thread_and_explicit_mentions(
    emu: DiscordEmulator, community: Community, client: DiscordAdapter
) -> None:
    c = community
    root = emu.say(c.alice, c.general, "question about invoices")
    thread = emu.create_thread(c.general, "invoices", owner_id=c.alice, from_message=root)
    result = await client.executor.execute(
        PostMessage(
            target=target(c, c.general, thread_id=str(thread), reply_to=str(root)),
            text="Here is how invoices work.",
            mention_user_ids=(str(c.alice),),
        )
    )
    assert result.ok and result.ref["channel_id"] == str(thread)
    post = emu.bot_messages(thread)[-1]
    assert "message_reference" not in post["request"]  # the thread itself is the reply
    mentions = post["request"]["allowed_mentions"]
    assert mentions["parse"] == [] and [str(u) for u in mentions["users"]] == [str(c.alice)]


async def test_long_text_is_split(
    emu: DiscordEmulator, community: Community, client: DiscordAdapter
) -> None:
    c = community
    mid = emu.say(c.alice, c.general, "tell me everything")
    text = " ".join(f"word{i}" for i in range(900))  # ~6,000 chars
    result = await client.executor.execute(
        ReplyInThread(target=target(c, c.general, reply_to=str(mid)), text=text)
    )
    assert result.ok, result.error
    posts = emu.bot_messages(c.general)
    assert len(posts) == len(result.ref["message_ids"].split(",")) >= 3
    assert all(len(p["message"]["content"]) <= MAX_MESSAGE_LEN for p in posts)
    assert " ".join(p["message"]["content"] for p in posts) == text
    assert "message_reference" in posts[0]["request"]
    assert all("message_reference" not in p["request"] for p in posts[1:])


async def test_retrying_an_action_does_not_post_twice(
    emu: DiscordEmulator, community: Community, client: DiscordAdapter
) -> None:
    c = community
    action = PostMessage(
        target=target(c, c.general), text="Weekly question: what are you building?"
    )
    first = await client.executor.execute(action)
    again = await client.executor.execute(action)
    assert first.ok and again.ok and first.ref["message_id"] == again.ref["message_id"]
    assert len(emu.bot_messages(c.general)) == 1


async def test_failures_are_classified(
    emu: DiscordEmulator, community: Community, client: DiscordAdapter
) -> None:
    c = community
    deleted = emu.say(c.alice, c.general, "gone soon")
    emu.delete(deleted)
    to_deleted = await client.executor.execute(
        ReplyInThread(target=target(c, c.general, reply_to=str(deleted)), text="hello?")
    )
    assert to_deleted.ok  # fail_if_not_exists=False: posted without the reference

    missing = await client.executor.execute(PostMessage(target=target(c, 424242), text="x"))
    assert not missing.ok and not missing.retryable
    assert missing.error and "channel not found" in missing.error

    no_msg = await client.executor.execute(
        AddReaction(target=target(c, c.general), message_id=str(deleted), emoji="👀")
    )
    assert not no_msg.ok and not no_msg.retryable and "message not found" in (no_msg.error or "")

    emu.inject_fault("POST", rf"/channels/{c.general}/messages$", status=503)
    outage = await client.executor.execute(PostMessage(target=target(c, c.general), text="y"))
    assert not outage.ok and outage.retryable


async def test_reaction_action(
    emu: DiscordEmulator, community: Community, client: DiscordAdapter
) -> None:
    c = community
    mid = emu.say(c.alice, c.general, "love it")
    result = await client.executor.execute(
        AddReaction(target=target(c, c.general), message_id=str(mid), emoji="❤️")
    )
    assert result.ok
    assert emu.reactions[mid]["❤️"] == {emu.bot_user_id}


async def test_rate_limited_post_is_retried_and_delivered(
    emu: DiscordEmulator, community: Community, client: DiscordAdapter
) -> None:
    c = community
    path = rf"/channels/{c.general}/messages$"
    emu.inject_fault("POST", path, status=429, retry_after=0.05)
    result = await client.executor.execute(PostMessage(target=target(c, c.general), text="hi all"))
    assert result.ok, result.error
    statuses = [
        s for m, p, s in emu.requests if m == "POST" and p == f"/channels/{c.general}/messages"
    ]
    assert statuses == [429, 200]
    assert [p["message"]["content"] for p in emu.bot_messages(c.general)] == ["hi all"]


async def test_a_rate_limit_discord_py_gives_up_on_is_retried_later(
    emu: DiscordEmulator, community: Community, client: DiscordAdapter
) -> None:
    """A 429 without Via (a temporary Cloudflare ban) or five 429s in a row: discord.py
    raises; the reply must wait in the outbox, not be dropped as rejected."""
    c = community
    path = rf"/channels/{c.general}/messages$"
    emu.inject_fault("POST", path, status=429, via=False)
    banned = await client.executor.execute(PostMessage(target=target(c, c.general), text="a"))
    assert not banned.ok and banned.retryable, banned
    emu.inject_fault("POST", path, status=429, times=5, retry_after=0.01)
    limited = await client.executor.execute(PostMessage(target=target(c, c.general), text="b"))
    assert not limited.ok and limited.retryable, limited


# -- resilience ---------------------------------------------------------------------------
async def test_messages_in_an_invalid_session_gap_are_backfilled_once(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    root = await say_and_wait(emu, cut, c.alice, c.general, "before the gap")
    thread = emu.create_thread(c.general, "gap thread", owner_id=c.alice, from_message=root)
    await say_and_wait(emu, cut, c.bob, thread, "in thread before")
    async with emu.session_gap():
        gap = [emu.say(c.alice, c.general, f"during the gap {i}") for i in range(150)]
        gap.append(emu.say(c.bob, thread, "thread message in the gap"))
    after = emu.say(c.bob, c.general, "after the gap")
    expected = [str(m) for m in [*gap, after]]
    await cut.core.wait_until(lambda: all(m in cut.core.new_count() for m in expected))
    await say_and_wait(emu, cut, c.alice, c.general, "sentinel")

    counts = cut.core.new_count()
    assert {counts[m] for m in expected} == {1}
    assert all(n == 1 for n in counts.values())
    assert await cut.store.stored_count(P, expected) == len(expected)
    await until(lambda: client.ready_count == 2)  # the backfill may finish before on_ready
    assert emu.identify_count == 2
    # Commands are registered once, not on every READY.
    assert sum(1 for m, p, _ in emu.requests if m == "PUT" and "/commands" in p) == 1


async def test_a_gap_is_backfilled_when_live_messages_land_before_on_ready(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest
) -> None:
    """After an invalid session discord.py fires on_ready only once every guild arrived
    (or ``guild_ready_timeout`` passed); live messages stored meanwhile are newer than
    the gap and must not become where the backfill starts."""
    c = community
    async with running_client(
        emu, cut.core, [c.guild_id], cut.runtime, guild_ready_timeout=0.5
    ) as client:
        await say_and_wait(emu, cut, c.alice, c.general, "before the gap")
        async with emu.session_gap():
            gap = [str(emu.say(c.alice, c.general, f"during the gap {i}")) for i in range(3)]
        await emu.wait_for_ready(2)
        await say_and_wait(emu, cut, c.bob, c.general, "live, right after reconnecting")
        await until(lambda: client.ready_count == 2)
        await cut.core.wait_until(lambda: all(m in cut.core.new_count() for m in gap))
        assert await cut.store.stored_count(P, gap) == len(gap)


async def test_a_message_deleted_while_away_is_erased_by_the_backfill(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    """The gateway does not replay a delete missed in a gap; the backfill compares the
    last day of history with what is stored and erases what is gone."""
    c = community
    kept = await say_and_wait(emu, cut, c.alice, c.general, "the app is fine today")
    secret = await say_and_wait(emu, cut, c.bob, c.general, "my card number is 4111 1111")
    async with emu.session_gap():
        emu.delete(secret)  # nobody is connected to hear it
    await emu.wait_for_ready(2)
    await cut.core.wait_until(lambda: MessageKind.DELETE in cut.core.kinds(str(secret)))
    assert await cut.store.stored_text(P, str(secret)) in ("", None)
    assert await cut.store.stored_text(P, str(kept)) == "the app is fine today"


async def test_a_channel_whose_history_reads_empty_loses_nothing(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    """Without Read Message History Discord returns an empty history, not an error: that
    must not read as "every stored message was deleted"."""
    c = community
    said = [await say_and_wait(emu, cut, c.alice, c.general, f"still here {i}") for i in range(3)]
    emu.history_hidden.add(c.general)
    async with emu.session_gap():
        pass
    await emu.wait_for_ready(2)
    await until(lambda: client.ready_count == 2)
    await asyncio.gather(*list(client._tasks), return_exceptions=True)  # the whole backfill
    for i, mid in enumerate(said):
        assert await cut.store.stored_text(P, str(mid)) == f"still here {i}"


async def test_the_delete_check_judges_only_the_history_it_fetched(
    emu: DiscordEmulator,
    community: Community,
    cut: CoreUnderTest,
    client: DiscordAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the fetch limit reached, a stored message past the fetched span is not
    taken for deleted: only absence inside the span counts."""
    import bot.discord_adapter as adapter

    monkeypatch.setattr(adapter, "DELETE_CHECK_LIMIT", 2)
    c = community
    said = [await say_and_wait(emu, cut, c.alice, c.general, f"message {i}") for i in range(4)]
    async with emu.session_gap():
        emu.delete(said[0])
    await emu.wait_for_ready(2)
    await cut.core.wait_until(lambda: MessageKind.DELETE in cut.core.kinds(str(said[0])))
    await asyncio.gather(*list(client._tasks), return_exceptions=True)  # the whole backfill
    for mid in said[1:]:
        assert await cut.store.stored_text(P, str(mid)) is not None
        assert MessageKind.DELETE not in cut.core.kinds(str(mid))


async def test_reconnect_resumes_without_loss(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    await say_and_wait(emu, cut, c.alice, c.general, "before")
    emu.force_reconnect()
    mid = emu.say(c.bob, c.general, "while reconnecting")
    await cut.core.wait_until(lambda: str(mid) in cut.core.new_count())
    await emu.wait_until(lambda: emu.resume_count == 1)
    await say_and_wait(emu, cut, c.alice, c.general, "after")
    assert cut.core.new_count()[str(mid)] == 1
    assert emu.identify_count == 1


# -- commands -----------------------------------------------------------------------------
async def test_commands_are_guild_scoped_and_admin_only(
    emu: DiscordEmulator, community: Community, client: DiscordAdapter
) -> None:
    cmds = {cmd["name"]: cmd for cmd in emu.commands[community.guild_id]}
    assert None not in emu.commands  # nothing global when guild ids are configured
    rapport = cmds["rapport"]
    assert rapport["default_member_permissions"] == str(1 << 5)  # Manage Server
    assert "status" in {o["name"] for o in rapport["options"]}
    assert cmds[FLAG_COMMAND_NAME]["type"] == 3


async def test_slash_command_refused_without_manage_server(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    rec = emu.invoke_slash(community.alice, "rapport", sub="status")
    text = await emu.wait_for_interaction_reply(rec)
    assert "Manage Server" in text and rec.ephemeral
    assert cut.core.status_calls == []


async def test_rapport_status_answers(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    await say_and_wait(emu, cut, community.alice, community.general, "hello")
    rec = emu.invoke_slash(community.mod, "rapport", sub="status")
    text = await emu.wait_for_interaction_reply(rec)
    assert rec.deferred and rec.ephemeral
    assert text == await cut.core.inner.status_text(P, str(community.guild_id))
    assert cut.core.status_calls == [str(community.guild_id)]


async def test_flag_for_follow_up_reaches_manual_flag(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest, client: DiscordAdapter
) -> None:
    c = community
    mid = await say_and_wait(
        emu, cut, c.alice, c.general, "this is the third time support ignored me"
    )
    rec = emu.invoke_message_command(c.mod, FLAG_COMMAND_NAME, mid)
    text = await emu.wait_for_interaction_reply(rec)
    assert cut.core.flags == [(str(c.guild_id), str(c.general), str(mid), str(c.mod))]
    assert rec.ephemeral and cut.core.flag_outcomes[0].ok
    assert text == cut.core.flag_outcomes[0].message

    refused = emu.invoke_message_command(c.bob, FLAG_COMMAND_NAME, mid)
    assert "Manage Messages" in await emu.wait_for_interaction_reply(refused)
    assert len(cut.core.flags) == 1


# -- pure pieces --------------------------------------------------------------------------
@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=7000))
def test_split_text_keeps_every_word_within_the_limit(text: str) -> None:
    parts = split_text(text, 500)
    assert all(len(p) <= 500 for p in parts)
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace(
        "\n", ""
    )


async def test_a_new_subcommand_is_one_registry_entry_and_failures_are_reported(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest
) -> None:
    async def channels(core: CommunityCore, ctx: CommandContext) -> str:
        return f"{ctx.actor} asked in {ctx.channel_id}"

    async def broken(core: CommunityCore, ctx: CommandContext) -> str:
        raise RuntimeError("core exploded")

    subs = (
        *DEFAULT_SUBCOMMANDS,
        Subcommand("whoami", "Echo the caller", channels),
        Subcommand("broken", "Always fails", broken),
    )
    async with running_client(emu, cut.core, [community.guild_id], subcommands=subs):
        ok = emu.invoke_slash(community.mod, "rapport", sub="whoami")
        assert (
            await emu.wait_for_interaction_reply(ok)
            == f"{community.mod} asked in {community.general}"
        )
        failed = emu.invoke_slash(community.mod, "rapport", sub="broken")
        assert "error" in await emu.wait_for_interaction_reply(failed)


async def test_messages_posted_while_the_bot_was_down_are_backfilled_on_start(
    emu: DiscordEmulator, community: Community, cut: CoreUnderTest
) -> None:
    c = community
    async with running_client(emu, cut.core, [c.guild_id], cut.runtime):
        await say_and_wait(emu, cut, c.alice, c.general, "before the restart")
    offline = [str(emu.say(c.bob, c.general, f"while down {i}")) for i in range(3)]
    never_logged = str(emu.say(c.bob, c.support, "support had nothing stored yet"))
    async with running_client(emu, cut.core, [c.guild_id], cut.runtime):
        await cut.core.wait_until(lambda: all(m in cut.core.new_count() for m in offline))
        await say_and_wait(emu, cut, c.alice, c.general, "sentinel")
    assert all(cut.core.new_count()[m] == 1 for m in offline)
    assert never_logged not in cut.core.new_count()  # no whole-history import


@dataclass
class FlakyCore(MemoryCore):
    """Fails the first time it is handed a message that says "explode"; every message
    it is handed is noted."""

    tried: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def accept(self, event: MessageEvent) -> None:
        self.tried.append(event.text)
        self.changed.set()
        if "explode" in event.text and event.message_id not in self.failed:
            self.failed.add(event.message_id)
            raise RuntimeError("core exploded")
        super().accept(event)

    async def wait_tried(self, text: str) -> None:
        async with asyncio.timeout(5):
            while text not in self.tried:
                self.changed.clear()
                await self.changed.wait()


async def test_a_message_the_core_fails_on_is_logged_and_fed_again_by_a_backfill(
    emu: DiscordEmulator, community: Community, caplog: pytest.LogCaptureFixture
) -> None:
    """New messages are handed over inside discord.py's parse of the gateway event: a
    core that raises there must neither stop the client nor lose the message for good."""
    c = community
    core = FlakyCore()
    async with running_client(emu, core, [c.guild_id]) as client:
        emu.say(c.alice, c.general, "before")
        await core.wait_tried("before")
        failed = str(emu.say(c.alice, c.general, "this will explode"))
        await core.wait_tried("this will explode")
        assert await core.stored_text(P, failed) is None
        assert "taking Discord message" in caplog.text

        await client.backfill()  # after "before", the newest stored message
        assert await core.stored_text(P, failed) == "this will explode"
        later = str(emu.say(c.bob, c.general, "the client kept going"))
        await core.wait_tried("the client kept going")
        assert await core.stored_text(P, later) == "the client kept going"
