"""What members and managers send through Slack, read the way Slack sends it.

Slack escapes a member's ``&``, ``<`` and ``>`` in message text (and leaves its own
``<@U…>``/``<#C…|name>``/``<url|label>`` markup live); button values and modal metadata can
be stale or forged; subcommands may be typed in any case.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.slack_adapter import SlackAdapter, slack_text_to_plain
from handlers.events import MessageKind
from storage.models import Message
from tests.slack_helpers import (
    FLAGS,
    GENERAL,
    MANAGER,
    MEMBER,
    OUTSIDER,
    SlackStack,
    StandInCore,
    runtime_stack,
    standin_stack,
)
from tests.test_slack_runtime import top_level

TYPED = "Q&A was broken & I want a refund <sigh>, not &amp; or &lt;3"
"""What a member typed, entity-looking text included: it must come back exactly."""


@pytest.fixture
async def stack() -> AsyncIterator[SlackStack]:
    async with standin_stack() as s:
        yield s


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[SlackStack]:
    async with runtime_stack(tmp_path) as s:
        yield s


def core_of(stack: SlackStack) -> StandInCore:
    assert isinstance(stack.core, StandInCore)
    return stack.core


def _as_rendered(text: str) -> str:
    """What a reader sees in Slack for mrkdwn text: entities decoded once."""
    return text.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")


# -- message text ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("wire", "plain"),
    [
        ("Q&amp;A &lt;sigh&gt;", "Q&A <sigh>"),
        ("&amp;lt; stays &amp;gt;", "&lt; stays &gt;"),  # decoded once, never twice
        ("&amp;amp;", "&amp;"),
        ("<@U0OUTSIDER> see <#C0GENERAL|general>", "<@U0OUTSIDER> see <#C0GENERAL|general>"),
        (
            "<!here> <https://x.io/?a=1&amp;b=2|docs &amp; more>",
            "<!here> <https://x.io/?a=1&b=2|docs & more>",
        ),
        ("no entities; &nbsp; &#39; untouched", "no entities; &nbsp; &#39; untouched"),
    ],
)
def test_slack_text_becomes_what_the_member_wrote(wire: str, plain: str) -> None:
    assert slack_text_to_plain(wire) == plain


async def test_messages_edits_and_replies_reach_the_core_unescaped(stack: SlackStack) -> None:
    core = core_of(stack)
    emu = stack.emu
    ts, _ = await emu.say(GENERAL, MEMBER, TYPED)
    await emu.say(GENERAL, OUTSIDER, "me too <3 & more", thread_ts=ts)
    await emu.send_event(emu.edit_event(GENERAL, ts, "edited: R&D > QA"))
    # Slack's own markup (a mention and a link typed with the client) stays as it arrives.
    await emu.say(
        GENERAL, MEMBER, "<@U0OUTSIDER> see <https://x.io/?a=1&amp;b=2|docs>", markup=True
    )
    await core.wait_for(lambda: len(core.messages) == 4)
    new, reply, edit, linked = core.messages
    assert new.text == TYPED
    assert reply.text == "me too <3 & more"
    assert (edit.kind, edit.text) == (MessageKind.EDIT, "edited: R&D > QA")
    assert linked.text == "<@U0OUTSIDER> see <https://x.io/?a=1&b=2|docs>"


async def test_slack_member_text_is_not_double_escaped_on_the_card(runtime: SlackStack) -> None:
    """A member typing 'Q&A was broken & I want a refund <sigh>' arrives escaped."""
    emu = runtime.emu
    typed = "Q&A was broken & I want a refund <sigh>"
    wire = typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    await emu.send_event(emu.member_message(GENERAL, MEMBER, wire, markup=True))
    await emu.wait_for(lambda: len(top_level(runtime)) == 1, timeout=10)
    card_ts = top_level(runtime)[0]["ts"]
    assert runtime.runtime is not None
    await runtime.runtime.settle()
    card = emu.message(FLAGS, card_ts)
    quote = next(b["text"]["text"] for b in card["blocks"] if b["type"] == "section")
    assert _as_rendered(quote) == "> " + typed, _as_rendered(quote)
    assert "&amp;amp;" not in quote and "&amp;lt;" not in quote


async def test_backfilled_history_is_stored_unescaped(runtime: SlackStack) -> None:
    emu = runtime.emu
    observed = runtime.extras["observed"]
    await emu.say(GENERAL, MEMBER, "anyone else seeing login errors?")
    await observed.wait_for(lambda: len(observed.messages) == 1)
    # Said while the bot was down: only conversations.history / replies have them.
    missed = emu.member_message(GENERAL, MEMBER, TYPED)
    reply = emu.member_message(GENERAL, OUTSIDER, "yes <b>since</b> 9 & 10", thread_ts=missed["ts"])
    assert missed["text"] != TYPED  # Slack's history has it escaped, like its events
    assert await runtime.adapter.backfill() == 2
    assert runtime.runtime is not None
    await runtime.runtime.writer.flush()
    stored = await runtime.runtime.db.run(
        lambda s: {m.message_id: m.text for m in s.scalars(select(Message))}
    )
    assert stored[missed["ts"]] == TYPED
    assert stored[reply["ts"]] == "yes <b>since</b> 9 & 10"


# -- flag ids in button values and modal metadata ---------------------------------------------
@pytest.mark.parametrize(
    ("value", "flag_id"),
    [
        ("1", 1),
        ("0042", 42),
        (str(2**63 - 1), 2**63 - 1),
        (str(2**63), None),
        ("9" * 20, None),
        ("1" + "0" * 5000, None),
        ("0", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1_000", None),
        ("١٢", None),  # Arabic-Indic digits: int() takes them, a flag id is ASCII
        ("²", None),
        ("", None),
        (None, None),
        (7, None),
    ],
)
def test_flag_ids_are_plain_ascii_digits_the_database_can_hold(
    value: object, flag_id: int | None
) -> None:
    assert SlackAdapter._flag_id(value) == flag_id


async def test_a_button_naming_an_out_of_range_flag_is_refused_clearly(runtime: SlackStack) -> None:
    """Like tests/test_bad_input.py's garbled values: a forged button value naming a flag
    id too large for the database is refused with a private note, not a crashed listener."""
    emu = runtime.emu
    posted = await runtime.adapter.client.chat_postMessage(channel=FLAGS, text="old card")
    ts = str(posted["ts"])
    for action in ("flag_claim", "flag_edit"):
        before = len(emu.ephemerals)
        delivery = await emu.click(FLAGS, ts, action, MANAGER, value="9" * 20)
        assert delivery.status == 200
        await emu.wait_for(lambda: len(emu.ephemerals) > before, timeout=5)  # noqa: B023
    claim, edit = emu.ephemerals
    assert claim["user"] == MANAGER and "does not name a flag" in claim["text"]
    assert "no longer exists" in edit["text"] and emu.views == {}


async def test_a_modal_naming_an_out_of_range_flag_is_refused_clearly(runtime: SlackStack) -> None:
    from bot.slack_adapter import FORM_NAMES_NO_FLAG, edit_modal

    emu = runtime.emu
    for forged in ("9" * 20, "not-a-number", ""):
        emu.views["V0FORGED"] = {**edit_modal(1, "draft"), "id": "V0FORGED"}
        emu.views["V0FORGED"]["private_metadata"] = forged
        d = await emu.submit_view("V0FORGED", MANAGER, {"reply": {"text": "hello"}})
        assert d.status == 200
        assert d.json() == {"response_action": "errors", "errors": {"reply": FORM_NAMES_NO_FLAG}}


# -- /rapport -------------------------------------------------------------------------------
async def test_help_is_case_insensitive_like_the_other_subcommands(stack: SlackStack) -> None:
    emu = stack.emu
    await emu.slash_command("Status", MANAGER, GENERAL)
    await emu.wait_for(lambda: len(emu.responses) == 1)
    assert "listening" in emu.responses[0]["text"]
    for name in ("Help", "HELP", "help"):
        answer = await emu.slash_command(name, MANAGER, GENERAL)
        assert answer.status == 200
        assert "Unknown subcommand" not in answer.body, answer.body
        assert "Usage: `/rapport <subcommand>`" in answer.body
    unknown = await emu.slash_command("Helpme", MANAGER, GENERAL)
    assert "Unknown subcommand `Helpme`" in unknown.body
