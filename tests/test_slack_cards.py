"""Rendering a flag card: the buttons' contract and escaping of everything member-written."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from bot.slack_cards import (
    CARD_ACTION_IDS,
    card_buttons,
    escape_slack,
    render_card,
    render_notice,
    render_reminder,
)
from handlers.ports import KB_SOURCES_PREFIX, ContextLine, FlagCardView, HistoryLine
from tests.slack_helpers import EVIL

LIVE_TOKENS = ("<!channel>", "<!here>", "<!everyone>", "<@U1>", "<https://evil|click>", "& co")


def view(**kw: object) -> FlagCardView:
    base = FlagCardView(
        flag_id=42,
        state="open",
        severity="high",
        reason="billing",
        rationale="refund <!here>",
        score=0.9,
        platform="slack",
        community_name="Acme & co",
        channel_name="general",
        author_name=EVIL,
        author_id="U0MEMBER",
        text=EVIL,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        permalink="https://acme.slack.com/archives/C1/p1",
        context=(ContextLine(EVIL, EVIL, datetime(2026, 1, 1, tzinfo=UTC)),),
        draft=EVIL,
        draft_kind="llm",
        draft_warnings=(EVIL,),
        history=(HistoryLine(datetime(2026, 1, 1, tzinfo=UTC), "U0MANAGER", "claimed", EVIL),),
        send_error=EVIL,
        escalation=EVIL,
        incident_size=3,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def buttons(blocks: list[dict[str, object]]) -> list[dict[str, object]]:
    return [el for b in blocks if b["type"] == "actions" for el in b["elements"]]  # type: ignore[attr-defined]


def test_open_card_has_the_five_buttons_with_exact_ids_and_values() -> None:
    _, blocks = render_card(view())
    got = buttons(blocks)
    assert [b["action_id"] for b in got] == list(CARD_ACTION_IDS)
    assert CARD_ACTION_IDS == (
        "flag_claim",
        "flag_send",
        "flag_edit",
        "flag_dismiss",
        "flag_resolve",
    )
    assert all(b["value"] == "42" for b in got)
    assert len(blocks) <= 50


def test_member_text_never_appears_unescaped() -> None:
    fallback, blocks = render_card(view())
    dumped = json.dumps(blocks, ensure_ascii=False)
    for token in LIVE_TOKENS:
        assert token not in fallback
        assert token not in dumped
    assert "&lt;!channel&gt;" in dumped
    assert "&lt;https://evil|click&gt; &amp; co" in dumped
    assert "&lt;!channel&gt;" in fallback


def test_card_shows_context_reason_draft_and_history() -> None:
    _, blocks = render_card(view())
    dumped = json.dumps(blocks)
    assert "<https://acme.slack.com/archives/C1/p1|open message>" in dumped
    assert "LLM draft" in dumped and "Escalating" in dumped and "incident of 3" in dumped
    assert "<@U0MANAGER> claimed" in dumped  # the actor is a real id: shown as a name
    assert "Sending failed" in dumped


def test_draft_sources_are_shown_as_sources_not_as_a_warning() -> None:
    notes = ("promises a refund date", KB_SOURCES_PREFIX + "refunds.md#Refund window")
    _, blocks = render_card(view(draft_warnings=notes))
    lines = json.dumps(blocks)
    assert ":warning: promises a refund date" in lines
    assert ":books: Sources: refunds.md#Refund window" in lines
    assert ":warning: kb:" not in lines


def test_drafting_card_says_so() -> None:
    _, blocks = render_card(view(draft="", draft_kind="drafting"))
    assert "Drafting a reply" in json.dumps(blocks)


def test_closed_cards_keep_their_content_but_lose_buttons() -> None:
    for state in ("dismissed", "resolved"):
        fallback, blocks = render_card(view(state=state))
        assert buttons(blocks) == []
        assert "&lt;!channel&gt;" in json.dumps(blocks)
        assert state in fallback
    assert [b["action_id"] for b in card_buttons(view(state="replied"))] == ["flag_resolve"]
    assert card_buttons(view(state="sending")) == []


def test_unsafe_permalink_is_not_linked() -> None:
    _, blocks = render_card(view(permalink="javascript:alert(1)|x>"))
    assert "javascript" not in json.dumps(blocks)


def test_reminder_allows_only_a_well_formed_group_mention() -> None:
    assert render_reminder("late <!here>", "S0ONCALL") == "<!subteam^S0ONCALL> late &lt;!here&gt;"
    assert render_reminder("late", "<!channel>") == "late"
    assert render_reminder("late & slow") == "late &amp; slow"


def test_notice_keeps_user_mentions_only() -> None:
    assert render_notice("Claimed by <@U0ABC> <!channel>") == "Claimed by <@U0ABC> &lt;!channel&gt;"


@given(st.text())
def test_escaped_text_has_no_live_markup(text: str) -> None:
    out = escape_slack(text)
    assert "<" not in out and ">" not in out
    assert out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text


def _texts(blocks: list[dict[str, object]]) -> list[str]:
    out: list[str] = []
    for b in blocks:
        text = b.get("text")
        if isinstance(text, dict):
            out.append(str(text["text"]))
        for el in b.get("elements", []):  # type: ignore[attr-defined]
            if el.get("type") == "mrkdwn":
                out.append(str(el["text"]))
    return out


@given(st.text(alphabet="<>&!@|\n abc", max_size=6000), st.text(max_size=4000))
def test_any_member_text_stays_within_block_kit_limits_and_inert(text: str, other: str) -> None:
    fallback, blocks = render_card(
        view(
            text=text,
            draft=other,
            author_name=other,
            rationale=text,
            escalation=text,
            context=(ContextLine(other, text, datetime(2026, 1, 1, tzinfo=UTC)),) * 9,
        )
    )
    texts = _texts(blocks)
    assert all(len(t) <= 3000 for t in texts)
    assert len(fallback) <= 3000
    for t in [*texts, fallback]:
        # The only live markup left is ours: dates, the manager mention and the permalink.
        for token in ("<!channel", "<!here", "<!everyone", "<!subteam", "<@U1", "<http"):
            assert token not in t.replace("<https://acme.slack.com/archives/C1/p1|", "")


def test_a_deleted_message_s_card_offers_no_reply() -> None:
    _, blocks = render_card(view(message_deleted=True, text="", draft=""))
    ids = [b["action_id"] for b in buttons(blocks)]
    assert ids == ["flag_claim", "flag_dismiss", "flag_resolve"]
    assert "nothing to reply to" in json.dumps(blocks)
