"""Block Kit rendering of flag cards, and Slack text escaping.

Pure functions: the core decides what a card says (:class:`FlagCardView`); this module
only decides how it looks in Slack. Every piece of member or LLM text passes through
:func:`escape_slack` so that a member writing ``<!channel>`` or ``<https://evil|click>``
cannot ping the managers' channel or plant a disguised link on the card.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any, Final

from handlers.ports import KB_SOURCES_PREFIX, FlagCardView, HistoryLine

logger = logging.getLogger(__name__)

Block = dict[str, Any]

#: The buttons on a card, in display order. The ``action_id`` strings are a contract
#: with the adapter's listeners (and with any card already posted in a channel).
ACTION_CLAIM: Final = "flag_claim"
ACTION_SEND: Final = "flag_send"
ACTION_EDIT: Final = "flag_edit"
ACTION_DISMISS: Final = "flag_dismiss"
ACTION_RESOLVE: Final = "flag_resolve"
CARD_ACTION_IDS: Final = (ACTION_CLAIM, ACTION_SEND, ACTION_EDIT, ACTION_DISMISS, ACTION_RESOLVE)

CLOSED_STATES: Final = frozenset({"dismissed", "resolved"})

# Block Kit limits (section text 3000, button text 75); keep a margin for our own markup.
_SECTION_MAX: Final = 2800
_CONTEXT_LINE_MAX: Final = 280
_FALLBACK_MAX: Final = 300
_MAX_CONTEXT_LINES: Final = 5
_MAX_HISTORY_LINES: Final = 8

_SLACK_ID = re.compile(r"^[UWB][A-Z0-9]{2,}$")
_SUBTEAM_ID = re.compile(r"^S[A-Z0-9]{2,}$")

_SEVERITY_BADGE: Final = {"high": ":red_circle:", "medium": ":large_orange_circle:"}
_STATE_LABEL: Final = {
    "open": ":new: Open",
    "claimed": ":raising_hand: Claimed",
    "sending": ":outbox_tray: Sending the reply…",
    "replied": ":speech_balloon: Replied",
    "dismissed": ":white_check_mark: Dismissed (not negative)",
    "resolved": ":heavy_check_mark: Resolved",
}
_DRAFT_KIND_LABEL: Final = {
    "llm": "LLM draft",
    "template": "template draft",
    "manual": "edited by a manager",
}


def escape_slack(text: str) -> str:
    """Escape the three control characters of Slack text (``&`` first, so nothing doubles)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ESCAPED_USER_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")


def render_notice(text: str) -> str:
    """Core text shown to one person (outcomes, status): escaped, but plain user mentions
    such as ``<@U123>`` stay live so "Already claimed by <@U123>" shows a name."""
    return _ESCAPED_USER_MENTION.sub(r"<@\1>", escape_slack(text))


def _truncate(text: str, limit: int) -> str:
    """Cut raw text (before escaping, so an entity is never split in half)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_ENTITIES: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _safe(text: str, limit: int) -> str:
    """Escape, keeping the *escaped* length within ``limit``: ``<<<…`` grows fivefold,
    and Block Kit refuses the whole card when one text is over its limit."""
    out: list[str] = []
    used = 0
    for ch in text:
        piece = _ENTITIES.get(ch, ch)
        if used + len(piece) > limit - 1:
            return "".join(out).rstrip() + "…"
        out.append(piece)
        used += len(piece)
    return "".join(out)


def _quoted(text: str, limit: int, max_lines: int = 30) -> str:
    """A mrkdwn blockquote of member text, escaped, within ``limit`` characters overall."""
    lines = text.splitlines() or [""]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], "…"]
    body = _safe("\n".join(lines), limit - 5 * len(lines))
    return "\n".join("&gt; " + line if line else "&gt;" for line in body.split("\n"))


def _link(url: str | None, label: str) -> str | None:
    """A ``<url|label>`` link, only for plain http(s) URLs; label escaped, url sanitised."""
    if not url or not url.startswith(("https://", "http://")) or any(c in url for c in "|<> \n"):
        return None
    return f"<{url.replace('&', '&amp;')}|{escape_slack(label)}>"


def _who(actor: str) -> str:
    """Show a Slack user id as a mention (renders the name); anything else escaped."""
    return f"<@{actor}>" if _SLACK_ID.match(actor) else escape_slack(actor)


def _when(at: datetime) -> str:
    """A Slack date token that each reader sees in their own timezone."""
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _button(
    action_id: str, text: str, flag_id: int, style: str | None = None, confirm: Block | None = None
) -> Block:
    button: Block = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "value": str(flag_id),
    }
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def card_buttons(view: FlagCardView) -> list[Block]:
    """The buttons that still make sense in the card's state.

    Open and claimed: all five (the core refuses what it must, e.g. Send before a draft
    exists), or no Send / Edit & send once the member deleted the message. Sending: none
    until the platform answers. Replied: only Resolve.
    Dismissed/resolved: none, the card stays as a readable record.
    """
    fid = view.flag_id
    if view.state in CLOSED_STATES or view.state == "sending":
        return []
    if view.state == "replied":
        return [_button(ACTION_RESOLVE, "Resolve", fid, "primary")]
    if view.message_deleted:  # nothing to reply to: the member took the message back
        return [
            _button(ACTION_CLAIM, "Claim", fid),
            _button(ACTION_DISMISS, "Dismiss (not negative)", fid, "danger"),
            _button(ACTION_RESOLVE, "Resolve", fid, "primary"),
        ]
    send_confirm: Block = {
        "title": {"type": "plain_text", "text": "Post this reply?"},
        "text": {"type": "mrkdwn", "text": "It will be posted publicly in the member's thread."},
        "confirm": {"type": "plain_text", "text": "Send"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }
    return [
        _button(ACTION_CLAIM, "Claim", fid),
        _button(ACTION_SEND, "Send reply", fid, "primary", send_confirm),
        _button(ACTION_EDIT, "Edit & send", fid),
        _button(ACTION_DISMISS, "Dismiss (not negative)", fid, "danger"),
        _button(ACTION_RESOLVE, "Resolve", fid),
    ]


def _history_line(h: HistoryLine) -> str:
    detail = f" — {_safe(h.detail, 120)}" if h.detail else ""
    return f"{_when(h.at)} {_who(h.actor)} {escape_slack(h.action)}{detail}"


def _state_line(view: FlagCardView) -> str:
    label = _STATE_LABEL.get(view.state, escape_slack(view.state))
    if view.claimed_by and view.state not in ("open",):
        label += f" · by {_who(view.claimed_by)}"
    return label


def render_fallback(view: FlagCardView) -> str:
    """The notification / screen-reader text: short, escaped, no live tokens."""
    who = view.author_name or view.author_id
    head = (
        f"[{view.severity}] Flag #{view.flag_id} ({view.state}): {view.reason} — {who} "
        f"in #{view.channel_name}: "
    )
    body = "(message deleted)" if view.message_deleted else view.text.replace("\n", " ")
    return _safe(head + body, _FALLBACK_MAX)


def render_card(view: FlagCardView) -> tuple[str, list[Block]]:
    """Render a flag card: ``(fallback_text, blocks)``, everything member-written escaped."""
    blocks: list[Block] = []
    badge = _SEVERITY_BADGE.get(view.severity, ":large_yellow_circle:")
    blocks.append(
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(f"Flag #{view.flag_id} · {view.severity} · {view.reason}", 150),
                "emoji": True,
            },
        }
    )

    where = (
        f"{escape_slack(view.platform)} · {_safe(view.community_name, 80)} · "
        f"#{_safe(view.channel_name, 80)}"
    )
    link = _link(view.permalink, "open message")
    if link:
        where += f" · {link}"
    author = _safe(view.author_name or view.author_id, 80)
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"*{author}* ({_safe(view.author_id, 40)}) · {where} · "
                    f"{_when(view.created_at)}",
                }
            ],
        }
    )

    if view.message_deleted:
        said = "_(the member deleted this message)_"
    else:
        said = _quoted(view.text, _SECTION_MAX)
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": said}})

    if view.context:
        lines = [
            f"*{_safe(c.author, 40)}*: {_safe(c.text.replace(chr(10), ' '), _CONTEXT_LINE_MAX)}"
            for c in view.context[-_MAX_CONTEXT_LINES:]
        ]
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Thread: " + "\n".join(lines)}],
            }
        )

    why = f"{badge} *Severity:* {escape_slack(view.severity)} ({view.score:.2f}) · *Reason:* "
    why += escape_slack(view.reason)
    if view.rationale:
        why += f"\n{_safe(view.rationale, 500)}"
    if view.escalation:
        why += f"\n:loudspeaker: *Escalating:* {_safe(view.escalation, 300)}"
    if view.incident_size > 1:
        why += f"\n:busts_in_silhouette: Part of an incident of {view.incident_size} flags"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": why}})
    blocks.append({"type": "divider"})

    if view.message_deleted:
        draft_text = "_The member deleted this message: there is nothing to reply to._"
    elif view.draft_kind == "drafting" and not view.draft:
        draft_text = ":hourglass_flowing_sand: _Drafting a reply…_"
    else:
        kind = _DRAFT_KIND_LABEL.get(view.draft_kind, escape_slack(view.draft_kind))
        draft_text = f"*Drafted reply* ({kind}):\n{_quoted(view.draft, _SECTION_MAX - 60)}"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": draft_text}})
    # Sources say where the reply came from: not a warning sign.
    notes = [
        f":books: Sources: {_safe(w.removeprefix(KB_SOURCES_PREFIX), 200)}"
        if w.startswith(KB_SOURCES_PREFIX)
        else f":warning: {_safe(w, 200)}"
        for w in view.draft_warnings[:5]
    ]
    if notes:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "\n".join(notes)}]}
        )

    status = f"*State:* {_state_line(view)}"
    if view.history:
        shown = view.history[-_MAX_HISTORY_LINES:]
        status += "\n" + "\n".join(_history_line(h) for h in shown)
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})

    if view.send_error:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f":x: *Sending failed:* {_safe(view.send_error, 500)}",
                },
            }
        )

    buttons = card_buttons(view)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"flag_{view.flag_id}", "elements": buttons})
    return render_fallback(view), blocks


def render_reminder(text: str, mention_group: str | None = None) -> str:
    """Text for a note in a card's thread; the only place a group mention is allowed.

    The group id is checked so a stray value cannot smuggle in ``<!channel>``.
    """
    body = escape_slack(text)
    if mention_group and _SUBTEAM_ID.match(mention_group):
        return f"<!subteam^{mention_group}> {body}"
    if mention_group:
        logger.warning("ignoring invalid Slack user-group id %r", mention_group)
    return body
