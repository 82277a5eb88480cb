"""Shared pieces for the Slack tests: the emulator + real bolt adapter, wired two ways.

* :func:`standin_stack` puts a small, strictly typed in-memory core behind the adapter
  (fast, and every call it received is inspectable);
* :func:`runtime_stack` puts the real runtime (``bot.app.build_runtime``: SQLite, the
  detector, the outbox) behind the very same adapter.

Both yield a :class:`SlackStack`, so a test written against one runs against the other
by changing the fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.sandbox.delegating import DelegatingCore, NullCore
from bot.sandbox.slack_emulator import SlackEmulator
from bot.slack_adapter import SlackAdapter
from handlers.events import (
    ActionResult,
    MemberJoinEvent,
    MessageEvent,
    PostFlagCard,
    ReactionEvent,
    ReplyInThread,
    Target,
    UpdateFlagCard,
)
from handlers.ports import (
    ActionExecutor,
    ChannelInfo,
    CommunityCore,
    ContextLine,
    FlagCardView,
    FlagOutcome,
    HistoryLine,
)

SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-1-test"
TEAM = "T0RAPPORT"
FLAGS = "C0FLAGS"
GENERAL = "C0GENERAL"
MANAGER = "U0MANAGER"
MEMBER = "U0MEMBER"
OUTSIDER = "U0OUTSIDER"

EVIL = "<!channel> <@U1> <https://evil|click> & co"


class StandInCore(NullCore):
    """CommunityCore + FlagWorkflow in memory: records calls, keeps flags, emits card
    actions through the registered executor like the real outbox would (inline)."""

    def __init__(self, managers: frozenset[str]) -> None:
        self.managers = managers
        self.messages: list[MessageEvent] = []
        self.reactions: list[ReactionEvent] = []
        self.joins: list[MemberJoinEvent] = []
        self.communities: list[tuple[str, str, list[ChannelInfo]]] = []
        self.calls: list[tuple[str, int, str, str | None]] = []
        self.manual_flags: list[tuple[str, str, str, str]] = []
        self.flags: dict[int, FlagCardView] = {}
        self.results: list[ActionResult] = []
        self.executor: ActionExecutor | None = None
        #: When set, core work waits on it: proves Slack is answered before the core runs.
        self.gate: asyncio.Event | None = None
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    # -- CommunityCore --------------------------------------------------------------------
    async def on_message(self, event: MessageEvent) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.messages.append(event)
        await self._notify()

    async def on_reaction(self, event: ReactionEvent) -> None:
        self.reactions.append(event)
        await self._notify()

    async def on_member_join(self, event: MemberJoinEvent) -> None:
        self.joins.append(event)
        await self._notify()

    async def register_community(
        self, platform: str, community_id: str, name: str, channels: list[ChannelInfo]
    ) -> None:
        self.communities.append((community_id, name, channels))

    async def manual_flag(
        self, platform: str, community_id: str, channel_id: str, message_id: str, actor: str
    ) -> FlagOutcome:
        self.manual_flags.append((community_id, channel_id, message_id, actor))
        await self._notify()
        return FlagOutcome(True, f"Flagged for follow-up by <@{actor}> & team.", "open")

    async def status_text(self, platform: str, community_id: str) -> str:
        return f"Rapport is listening in {community_id}: {len(self.messages)} messages <ok>."

    # -- FlagWorkflow -----------------------------------------------------------------------
    def is_manager(self, user_id: str) -> bool:
        return user_id in self.managers

    async def _run(self, action: PostFlagCard | UpdateFlagCard | ReplyInThread) -> ActionResult:
        assert self.executor is not None, "register the adapter's executor first"
        result = await self.executor.execute(action)
        self.results.append(result)
        return result

    async def raise_flag(self, text: str = EVIL, *, draft: str = "Sorry about that & more") -> int:
        flag_id = next(self._ids)
        self.flags[flag_id] = FlagCardView(
            flag_id=flag_id,
            state="open",
            severity="high",
            reason="billing",
            rationale="asks for a refund <twice>",
            score=0.91,
            platform="slack",
            community_name="Acme <Community>",
            channel_name="general",
            author_name="mallory <admin>",
            author_id=MEMBER,
            text=text,
            created_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
            permalink="https://acme.slack.com/archives/C0GENERAL/p1",
            context=(ContextLine("bob", "me too <!here>", datetime(2026, 1, 2, 3, 0, tzinfo=UTC)),),
            draft=draft,
            draft_kind="llm",
            draft_warnings=("removed a link <http://x>",),
            escalation="3 members agreeing in 20 min",
            incident_size=3,
            history=(HistoryLine(datetime(2026, 1, 2, 3, 5, tzinfo=UTC), "rapport", "flagged"),),
        )
        result = await self._run(PostFlagCard(flag_id))
        assert result.ok, result
        self.flags[flag_id] = replace(
            self.flags[flag_id],
            extra={"card_channel": result.ref["channel"], "card_ts": result.ref["ts"]},
        )
        return flag_id

    async def _transition(
        self, verb: str, flag_id: int, actor: str, allowed: tuple[str, ...], new: str, **kw: Any
    ) -> FlagOutcome:
        if self.gate is not None:
            await self.gate.wait()
        self.calls.append((verb, flag_id, actor, kw.get("text")))
        view = self.flags.get(flag_id)
        if view is None:
            return FlagOutcome(False, f"Flag #{flag_id} does not exist.")
        if view.state not in allowed:
            await self._notify()
            return FlagOutcome(False, f"Flag #{flag_id} is {view.state} <nope>.", view.state)
        at = datetime(2026, 1, 2, 4, len(view.history), tzinfo=UTC)
        view = replace(
            view,
            state=new,
            claimed_by=view.claimed_by or actor,
            history=(*view.history, HistoryLine(at, actor, verb)),
            **{k: v for k, v in kw.items() if k in ("draft", "draft_kind")},
        )
        self.flags[flag_id] = view
        await self._run(UpdateFlagCard(flag_id))
        await self._notify()
        return FlagOutcome(True, verb, new)

    async def claim(self, flag_id: int, actor: str) -> FlagOutcome:
        return await self._transition("claimed", flag_id, actor, ("open",), "claimed")

    async def send(self, flag_id: int, actor: str, text: str | None = None) -> FlagOutcome:
        extra: dict[str, Any] = {"text": text}
        if text is not None:
            extra.update(draft=text, draft_kind="manual")
        outcome = await self._transition(
            "replied", flag_id, actor, ("open", "claimed"), "replied", **extra
        )
        if outcome.ok:
            body = text if text is not None else self.flags[flag_id].draft
            target = Target("slack", TEAM, GENERAL, thread_id=None, reply_to=None)
            await self._run(ReplyInThread(target, body, flag_id))
        return outcome

    async def dismiss(self, flag_id: int, actor: str) -> FlagOutcome:
        return await self._transition("dismissed", flag_id, actor, ("open", "claimed"), "dismissed")

    async def resolve(self, flag_id: int, actor: str) -> FlagOutcome:
        return await self._transition(
            "resolved", flag_id, actor, ("open", "claimed", "replied"), "resolved"
        )

    async def card(self, flag_id: int) -> FlagCardView | None:
        return self.flags.get(flag_id)


class ObservedCore(DelegatingCore):
    """Delegates to a real CommunityCore and lets a test wait for what reached it."""

    def __init__(self, inner: CommunityCore) -> None:
        super().__init__(inner)
        self.messages: list[MessageEvent] = []
        self._changed = asyncio.Condition()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def on_message(self, event: MessageEvent) -> None:
        await self.inner.on_message(event)
        self.messages.append(event)
        async with self._changed:
            self._changed.notify_all()


@dataclass
class SlackStack:
    emu: SlackEmulator
    adapter: SlackAdapter
    core: Any  # StandInCore, or the real runtime's Core
    runtime: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


def seed_workspace(emu: SlackEmulator) -> None:
    emu.add_channel(FLAGS, "rapport-flags")
    emu.add_channel(GENERAL, "general")
    emu.add_user(MANAGER, "maria")
    emu.add_user(MEMBER, "mallory")
    emu.add_user(OUTSIDER, "oscar")


@contextlib.asynccontextmanager
async def serve(adapter: SlackAdapter, emu: SlackEmulator, *, socket: bool) -> AsyncIterator[None]:
    """Mount HTTP mode on a fresh aiohttp app (like the lead's server) or start Socket Mode."""
    web_app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    web_app.router.add_get("/healthz", healthz)
    adapter.mount(web_app)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = getattr(server, "sockets", [])[0].getsockname()[1]
    emu.app_url = f"http://127.0.0.1:{port}/slack/events"
    try:
        if socket:
            await adapter.start()
            await emu.wait_socket_connected()
            emu.delivery = "socket"
        yield
    finally:
        await adapter.close()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def standin_stack(*, socket: bool = False) -> AsyncIterator[SlackStack]:
    async with SlackEmulator(
        signing_secret=SECRET, bot_token=BOT_TOKEN, app_token=APP_TOKEN
    ) as emu:
        seed_workspace(emu)
        core = StandInCore(frozenset({MANAGER}))
        adapter = SlackAdapter(
            core=core,
            workflow=core,
            bot_token=BOT_TOKEN,
            flags_channel=FLAGS,
            signing_secret=SECRET,
            app_token=APP_TOKEN if socket else None,
            api_base=emu.api_base,
        )
        core.executor = adapter.executor
        async with serve(adapter, emu, socket=socket):
            yield SlackStack(emu, adapter, core)


@contextlib.asynccontextmanager
async def runtime_stack(tmp_path: Path, *, socket: bool = False) -> AsyncIterator[SlackStack]:
    """The real runtime (SQLite file, detector, outbox worker) behind the same adapter."""
    from bot.app import build_runtime
    from bot.settings import load_settings
    from handlers.judging import DraftJob, DraftResult
    from tests.core_helpers import KeywordJudge

    class TemplateDrafter:
        """Stands in for the drafting feature: a fixed, recognisable template reply."""

        async def make(self, job: DraftJob) -> DraftResult:
            return DraftResult(f"Sorry {job.member_name}, we are on it & will fix it.", "template")

    async with SlackEmulator(
        signing_secret=SECRET, bot_token=BOT_TOKEN, app_token=APP_TOKEN
    ) as emu:
        seed_workspace(emu)
        settings = load_settings(
            _env_file=None,
            DATABASE_URL=f"sqlite:///{tmp_path}/rapport.db",
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_APP_TOKEN=APP_TOKEN if socket else None,
            SLACK_API_BASE=emu.api_base,
            SLACK_FLAGS_CHANNEL=FLAGS,
            SLACK_MANAGERS=MANAGER,
        )
        async with build_runtime(settings, judge=KeywordJudge(), drafter=TemplateDrafter()) as rt:
            observed = ObservedCore(rt.core)
            adapter = SlackAdapter.from_settings(settings, observed, rt.core)
            rt.outbox.register(adapter.executor)
            async with serve(adapter, emu, socket=socket):
                yield SlackStack(emu, adapter, rt.core, runtime=rt, extras={"observed": observed})


def card_message(emu: SlackEmulator, ts: str) -> dict[str, Any]:
    return emu.message(FLAGS, ts)


def all_text(message: dict[str, Any]) -> str:
    """Every string inside a message (text and blocks), for "never unescaped" checks."""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(message)
    return "\n".join(out)
