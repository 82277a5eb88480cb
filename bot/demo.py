"""``rapport demo``: the whole bot against local emulators, with a scripted community.

Everything here is real except Discord, Slack and the LLM, which are emulators on
loopback speaking their real protocols: discord.py and slack-bolt run unchanged, the
database is a real SQLite file, and each step waits on what the emulators received.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import func, select
from sqlmodel import col

from bot.sandbox.openai_emulator import OpenAIEmulator
from bot.sandbox.stack import (
    FLAGS_CHANNEL,
    MANAGER,
    OUTSIDER,
    SLACK_COMMUNITY_CHANNEL,
    SLACK_MEMBER,
    Sandbox,
    sandbox,
)
from bot.sandbox.waiting import until
from handlers.clock import OffsetClock
from storage.models import Feedback, Flag, Message

logger = logging.getLogger(__name__)

LLM_REPLY = (
    "Hi {name}, I'm sorry your refund is taking this long, and that your emails went "
    "unanswered. I've asked our billing team to look at your order today and we'll "
    "reply here with what we find. - The Acme team"
)


_SLACK_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")
_SLACK_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]*)>")


def _plain(text: str) -> str:
    """Slack markup as a person reads it in the app (dates, links, escapes)."""
    text = _SLACK_DATE.sub(r"\1", text)
    text = _SLACK_LINK.sub(r"\2", text)
    return text.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")


def _card_lines(card: dict[str, Any]) -> list[str]:
    """A terminal rendering of a Block Kit card: its texts and its buttons."""
    lines: list[str] = []
    for block in card.get("blocks", []):
        kind = block.get("type")
        if kind in ("section", "header") and block.get("text"):
            lines.append(str(block["text"].get("text", "")))
        elif kind == "context":
            lines.append("  ".join(str(e.get("text", "")) for e in block.get("elements", [])))
        elif kind == "actions":
            labels = [str(e.get("text", {}).get("text", "")) for e in block.get("elements", [])]
            lines.append("[" + "] [".join(labels) + "]")
    return lines


class Demo:
    def __init__(self, console: Console, sb: Sandbox, clock: OffsetClock) -> None:
        self.c = console
        self.sb = sb
        self.clock = clock
        self.failures: list[str] = []

    def scene(self, title: str, text: str) -> None:
        self.c.print()
        self.c.rule(f"[bold]{title}")
        self.c.print(text)

    def check(self, ok: bool, what: str) -> None:
        mark = "[green]✔[/]" if ok else "[red]✘[/]"
        self.c.print(f"  {mark} {what}")
        if not ok:
            self.failures.append(what)

    def show_card(self, ts: str, title: str = "Slack #rapport-flags") -> None:
        card = self.sb.slack.message(FLAGS_CHANNEL, ts)
        body = escape(_plain("\n".join(_card_lines(card))))
        self.c.print(Panel(body, title=title, expand=False))

    async def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        try:
            await self.sb.slack.wait_for(pred, timeout=timeout)
            return True
        except Exception:
            return False

    def card_text(self, ts: str) -> str:
        return str(self.sb.slack.message(FLAGS_CHANNEL, ts).get("text", ""))

    async def count(self, model: Any) -> int:
        return int(
            await self.sb.rt.db.run(
                lambda s: s.execute(select(func.count()).select_from(model)).scalar_one()
            )
        )


async def _scenes(d: Demo) -> None:
    sb, emu = d.sb, d.sb.discord
    m = sb.ids.members
    general, support = sb.ids.general, sb.ids.support

    d.scene(
        "1. Listen",
        "Members of the Acme Discord chat. Rapport (a real discord.py client) logs every "
        "message once and scores each for negative word-of-mouth.",
    )
    chatter = [
        ("bob", general, "Morning all! Anyone tried the new dark mode?"),
        ("carol", general, "Yes! Love it, so much easier on the eyes."),
        ("dan", general, "this boss fight is brutal lol, third try"),
        ("erin", support, "How do I export my data to CSV?"),
    ]
    for name, channel, text in chatter:
        emu.say(m[name], channel, text)
    complaint = emu.say(
        m["alice"],
        support,
        "Third week waiting for my refund, no reply to 2 emails. This is really not ok.",
    )
    d.check(await d.wait(lambda: len(sb.cards()) == 1), "a card appeared in the flags channel")
    await sb.rt.core.flush()
    table = Table("member", "message", "verdict")
    rows = await sb.rt.db.run(lambda s: list(s.scalars(select(Message).order_by(col(Message.id)))))
    for row in rows:
        verdict = (
            f"[red]complaint: {row.reason}, {row.severity}[/]" if row.severity else "[green]ok[/]"
        )
        table.add_row(row.author_name, row.text[:70], verdict)
    d.c.print(table)
    d.check(len(rows) == 5, "5 messages stored, one row each")
    card_ts = sb.cards()[0]["ts"]

    d.scene(
        "2. Flag and draft",
        "The flag is stored first, then delivered as a Block Kit card to the managers' "
        "Slack channel; the drafted reply arrives a moment later and the card updates in place.",
    )
    drafted = await d.wait(lambda: "Drafting" not in str(sb.slack.message(FLAGS_CHANNEL, card_ts)))
    d.check(drafted, "the drafted reply replaced 'drafting…' on the same card")
    d.show_card(card_ts)

    d.scene(
        "3. The whisper becomes a roar",
        "Three more members pile on in a thread under Alice's message. Rapport does not "
        "post three more cards: it escalates the one it has.",
    )
    thread = emu.create_thread(support, "refund wait", owner_id=m["bob"], from_message=complaint)
    for name, text in (
        ("bob", "same here, 2 weeks and nothing"),
        ("carol", "+1, same issue"),
        ("dan", "me too, still no refund"),
    ):
        emu.say(m[name], thread, text)
    escalated = await d.wait(
        lambda: (
            "agreeing" in str(sb.slack.message(FLAGS_CHANNEL, card_ts))
            and "high" in d.card_text(card_ts)
        )
    )
    d.check(escalated, "the same card now says the thread is escalating, severity high")
    d.check(len(sb.cards()) == 1, "still exactly one card")
    d.show_card(card_ts)

    d.scene(
        "4. Managers act",
        "Oscar, who is not a manager, clicks Send: refused, nothing changes. Maria claims "
        "the flag, edits the draft and sends it. The reply lands in Discord as a reply to "
        "Alice's message, with mentions disabled.",
    )
    await sb.slack.click(FLAGS_CHANNEL, card_ts, "flag_send", OUTSIDER)
    await d.wait(lambda: len(sb.slack.ephemerals) >= 1)
    d.check(emu.bot_messages() == [], "the outsider's click was refused; nothing was posted")
    await sb.slack.click(FLAGS_CHANNEL, card_ts, "flag_claim", MANAGER)
    d.check(await d.wait(lambda: "claimed" in d.card_text(card_ts)), "card shows the claim")
    await sb.slack.click(FLAGS_CHANNEL, card_ts, "flag_edit", MANAGER)
    await d.wait(lambda: len(sb.slack.views) == 1)
    (view_id,) = list(sb.slack.views)
    edited = (
        "Hi Alice, I'm sorry for the wait and the silence. I've escalated your refund to "
        "billing today; we'll reply right here by tomorrow. - Maria, Acme"
    )
    await sb.slack.submit_view(view_id, MANAGER, {"reply": {"text": edited}})
    posted = await emu.wait_for_bot_message(timeout=10)
    req = posted["request"]
    d.c.print(
        Panel(str(req.get("content")), title="Discord #support (reply to Alice)", expand=False)
    )
    d.check(
        str(req.get("message_reference", {}).get("message_id")) == str(complaint),
        "posted as a reply to Alice's message",
    )
    d.check(req.get("allowed_mentions", {}).get("parse") == [], "allowed_mentions.parse == []")
    d.check(await d.wait(lambda: "replied" in d.card_text(card_ts)), "card shows the reply")
    await sb.slack.click(FLAGS_CHANNEL, card_ts, "flag_resolve", MANAGER)
    d.check(await d.wait(lambda: "resolved" in d.card_text(card_ts)), "resolved")
    d.show_card(card_ts)

    d.scene(
        "5. A false alarm teaches the detector",
        "A message gets flagged that the manager judges harmless; Dismiss records it as "
        "'not negative' for this community, and the same words no longer raise a flag.",
    )
    before = len(sb.cards())
    false_alarm = "the new boss is broken and unfair, nerf him please, no chance"
    emu.say(m["erin"], general, false_alarm)
    flagged = await d.wait(lambda: len(sb.cards()) > before, timeout=3)
    if flagged:
        fa_ts = sb.cards()[-1]["ts"]
        await sb.slack.click(FLAGS_CHANNEL, fa_ts, "flag_dismiss", MANAGER)
        d.check(await d.wait(lambda: "dismissed" in d.card_text(fa_ts)), "dismissed")
        d.clock.advance(hours=7)  # past the incident window, so only the detector decides
        emu.say(m["bob"], general, false_alarm)
        await sb.rt.settle()
        d.check(
            len(sb.cards()) == before + 1, "the same text from another member is not flagged again"
        )
        d.check(
            await d.count(Feedback) >= 1, "the dismissal is stored as feedback (survives restarts)"
        )
    else:
        d.c.print("  (the detector did not flag it at all; nothing to dismiss)")

    d.scene(
        "6. Slack communities, SLA reminders",
        "Sam complains in a customer Slack channel. Nobody claims the card; once it is past "
        "its SLA (the demo fast-forwards its clock) a reminder appears in the card's thread.",
    )
    before = len(sb.cards())
    sam_ts, _ = await sb.slack.say(
        SLACK_COMMUNITY_CHANNEL,
        SLACK_MEMBER,
        "I was charged twice for my subscription this month <!channel>. "
        "Please fix this, it's urgent.",
        markup=True,  # a real @channel, as Slack sends it: the card must not ping anyone
    )
    d.check(await d.wait(lambda: len(sb.cards()) > before), "a card for the Slack complaint")
    sam_card = sb.cards()[-1]["ts"]
    d.check(
        "<!channel>" not in str(sb.slack.message(FLAGS_CHANNEL, sam_card)),
        "the member's <!channel> is escaped on the card",
    )
    d.clock.advance(minutes=max(sb.settings.SLA_HIGH_MIN, sb.settings.SLA_MEDIUM_MIN) + 1)
    await sb.rt.flags.check_sla()
    reminded = await d.wait(lambda: len(sb.slack.thread(FLAGS_CHANNEL, sam_card)) > 1)
    d.check(reminded, "SLA reminder posted in the card's thread")
    if reminded:
        d.c.print(f"  [dim]{sb.slack.thread(FLAGS_CHANNEL, sam_card)[-1]['text']}[/]")
    await d.wait(lambda: "Drafting" not in str(sb.slack.message(FLAGS_CHANNEL, sam_card)))
    await sb.slack.click(FLAGS_CHANNEL, sam_card, "flag_send", MANAGER)
    d.check(
        await d.wait(lambda: len(sb.slack.thread(SLACK_COMMUNITY_CHANNEL, sam_ts)) == 2),
        "the drafted reply was posted in Sam's Slack thread",
    )

    d.scene("7. Edits and deletes", "A member edits a message, then deletes one: the log follows.")
    oops = emu.say(m["dan"], general, "my email is dan@example.com if support wants it")
    emu.edit(oops, "nvm, sorted it out")
    emu.delete(oops)

    def erased() -> bool:
        row = sb.rt.db.call(
            lambda s: s.scalars(select(Message).where(col(Message.message_id) == str(oops))).first()
        )
        return row is not None and row.text == "" and row.deleted_at is not None

    d.check(
        await until(erased, 10, interval_s=0.02),
        "the deleted message keeps its id and time, its text is erased",
    )

    d.scene(
        "8. An admin tunes Rapport",
        "The Discord admin runs /rapport: competitor names to tag, a lower sensitivity for "
        "a community that wants more flags, then the status. The same commands work in Slack.",
    )

    async def admin(sub: str, option: str = "", value: str = "") -> str:
        opts = [{"type": 3, "name": option, "value": value}] if value else None
        rec = emu.invoke_slash(m["mod"], "rapport", sub=sub, options=opts)
        answer = await emu.wait_for_interaction_reply(rec)
        d.c.print(f"  [dim]/rapport {sub} {value}".rstrip() + f" → {escape(answer)}[/]")
        return answer

    d.check("Globex" in await admin("competitors", "names", "Globex, Initech"), "competitors set")
    d.check("0.40 or more" in await admin("sensitivity", "value", "0.4"), "sensitivity set")
    emu.say(m["carol"], general, "tbh Globex's export is nicer, but I'm staying")
    d.check("Sensitivity 0.40" in await admin("status"), "status shows the new settings")

    await sb.rt.settle()
    flags = await sb.rt.db.run(lambda s: list(s.scalars(select(Flag))))
    summary = Table("flag", "platform", "reason", "severity", "state", "first response")
    for f in flags:
        ttfr = "-"
        if f.first_response_at is not None:
            ttfr = f"{(f.first_response_at - f.created_at).total_seconds():.1f} s"
        summary.add_row(str(f.id), f.platform, f.reason, f.severity, f.state, ttfr)
    d.c.print()
    d.c.rule("[bold]Summary")
    d.c.print(
        f"{await d.count(Message)} messages logged, {len(flags)} flags, "
        f"{len(sb.cards())} cards, {len(sb.slack.card_updates)} in-place card updates"
    )
    d.c.print(summary)


def _scripted_llm(request: dict[str, Any]) -> str:
    """The demo's LLM: a JSON verdict when asked to judge, a reply when asked to draft."""
    if (request.get("response_format") or {}).get("type") == "json_object":
        prompt = json.dumps(request.get("messages", [])).lower()
        complaint = any(w in prompt for w in ("refund", "charged", "broken", "waiting"))
        return json.dumps(
            {
                "is_complaint": complaint,
                "reason": "billing_refund" if complaint else "other",
                "severity": "medium" if complaint else "low",
                "rationale": "scripted demo judge",
            }
        )
    return LLM_REPLY.format(name="there")


@contextlib.asynccontextmanager
async def _llm() -> AsyncIterator[OpenAIEmulator]:
    emu = OpenAIEmulator()
    emu.script(_scripted_llm)
    async with emu:
        yield emu


async def run_demo(fast: bool = True) -> int:
    console = Console(highlight=False)
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("discord", "slack_bolt", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    console.print(
        Panel(
            "[bold]Rapport demo[/]: the real bot against local Discord, Slack and LLM emulators.\n"
            "Nothing leaves this machine; the database is a fresh SQLite file.",
            expand=False,
        )
    )
    started = time.perf_counter()
    clock = OffsetClock()
    with tempfile.TemporaryDirectory(prefix="rapport-demo-") as tmp:
        async with (
            _llm() as llm,
            sandbox(
                f"sqlite:///{tmp}/demo.db",
                clock=clock,
                extra_settings={
                    "LLM_BASE_URL": llm.base_url,
                    "LLM_API_KEY": "sk-demo",
                    "LLM_MODEL": "demo",
                },
            ) as sb,
        ):
            demo = Demo(console, sb, clock)
            await _scenes(demo)
    console.print()
    took = time.perf_counter() - started
    if demo.failures:
        console.print(f"[red]{len(demo.failures)} step(s) did not go as expected[/] ({took:.1f} s)")
        return 1
    console.print(
        f"[green]Every step worked[/] in {took:.1f} s. Run `make test` for the full suite."
    )
    return 0
