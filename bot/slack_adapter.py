"""Slack adapter: translate Slack events and clicks into core calls, and core actions into
Web API calls. No business logic lives here.

Two directions:

* **In** (slack-bolt :class:`AsyncApp`): community messages, edits, deletes, reactions and
  joins become :mod:`handlers.events` values for :class:`CommunityCore`; card buttons,
  the edit modal, the "Flag for follow-up" shortcut and ``/rapport`` go to
  :class:`FlagWorkflow` / :class:`CommunityCore`. Every interaction is acked before any
  core work (bolt runs listeners in a task and answers Slack as soon as ``ack()`` is
  called), so a slow database or LLM never makes Slack show an error.
* **Out** (:class:`SlackExecutor`): ``PostFlagCard``, ``UpdateFlagCard``,
  ``PostCardThreadReply``, ``ReplyInThread``, ``PostMessage`` and ``AddReaction`` become
  ``chat.*``/``reactions.*`` calls; Slack errors become retryable or final
  :class:`ActionResult` values for the core's outbox.

HTTP mode is mounted on the lead's aiohttp application (:meth:`SlackAdapter.mount`);
Socket Mode starts with :meth:`SlackAdapter.start` when an app token is configured.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_cards import (
    ACTION_CLAIM,
    ACTION_DISMISS,
    ACTION_EDIT,
    ACTION_RESOLVE,
    ACTION_SEND,
    escape_slack,
    render_card,
    render_notice,
    render_reminder,
)
from handlers.commands import ADMIN_COMMANDS, AdminCommand, CommandContext
from handlers.events import (
    Action,
    ActionResult,
    AddReaction,
    Author,
    MemberJoinEvent,
    MessageEvent,
    MessageKind,
    Platform,
    PostCardThreadReply,
    PostFlagCard,
    PostMessage,
    ReactionEvent,
    ReplyInThread,
    UpdateFlagCard,
)
from handlers.ports import ChannelInfo, CommunityCore, FlagOutcome, FlagWorkflow
from handlers.reconcile import deleted_while_away

if TYPE_CHECKING:
    from bot.settings import Settings

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

PLATFORM: Final = Platform.SLACK.value
EDIT_CALLBACK_ID: Final = "flag_edit_submit"
EDIT_BLOCK_ID: Final = "reply"
EDIT_ACTION_ID: Final = "text"
SHORTCUT_CALLBACK_ID: Final = "flag_for_followup"
SLASH_COMMAND: Final = "/rapport"
THREAD_BACKFILL_DAYS: Final = 3
DELETE_CHECK_WINDOW: Final = timedelta(days=1)
"""How far back a backfill looks for messages deleted while Rapport was away."""
DELETE_CHECK_LIMIT: Final = 1000
"""About this many of a channel's newest messages are read for that check."""
"""Threads with replies stored this recently are read again on start (see ``backfill``)."""
NOT_A_MANAGER: Final = (
    "Only community managers can act on flags. Ask an admin to add you to SLACK_MANAGERS."
)

# Slack errors worth another attempt later; anything else is final for this action.
_RETRYABLE_ERRORS: Final = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
# Message subtypes that are a member saying something; the rest are joins, topics, bots…
_NEW_MESSAGE_SUBTYPES: Final = frozenset({None, "thread_broadcast", "file_share", "me_message"})
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_MAX_FLAG_ID: Final = 2**63 - 1
"""The largest id a flag can have (a signed 64-bit database integer)."""
_SLACK_ENTITY = re.compile(r"&(amp|lt|gt);")
_SLACK_ENTITY_CHARS: Final = {"amp": "&", "lt": "<", "gt": ">"}
_STRIPES: Final = 64
K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small bounded map: memory stays flat however long the process runs."""

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._maxsize = maxsize

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


def _ts_to_datetime(ts: str | None) -> datetime:
    try:
        return datetime.fromtimestamp(float(ts or 0), tz=UTC)
    except (TypeError, ValueError):
        return datetime.now(tz=UTC)


def slack_text_to_plain(text: str) -> str:
    """Message text as Slack sends it (events, ``conversations.history``/``replies``) →
    the text the member wrote.

    Slack escapes a member's ``&``, ``<`` and ``>`` as ``&amp;``, ``&lt;`` and ``&gt;`` and
    leaves its own markup unescaped: mentions ``<@U…>``, channels ``<#C…|name>``, specials
    ``<!here>`` and links ``<https://…|label>``. That markup is kept as it arrives (the
    cards escape all member text again); only the three entities are decoded, in one
    pass, so a member who typed ``&lt;`` gets ``&lt;`` back and never ``<``.
    """
    return _SLACK_ENTITY.sub(lambda m: _SLACK_ENTITY_CHARS[m.group(1)], text)


def _error_result(exc: BaseException) -> ActionResult:
    """Map a failed Web API call to the outbox's terms: retry later, or give up."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 200)
        error = str(exc.response.get("error") or f"http_{status}")
        retryable = status == 429 or status >= 500 or error in _RETRYABLE_ERRORS
        return ActionResult(ok=False, error=error, retryable=retryable)
    return ActionResult(ok=False, error=f"connection: {type(exc).__name__}", retryable=True)


_CALL_ERRORS: Final = (SlackApiError, aiohttp.ClientError, TimeoutError, OSError)
COMMAND_FAILED: Final = "Rapport hit an error running this command; it has been logged."
FORM_NAMES_NO_FLAG: Final = "This form does not name a flag; use the buttons on the card again."


# -- slash command registry ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SlashRequest:
    """A ``/rapport <name> <args>`` invocation, already parsed."""

    community_id: str
    channel_id: str
    user_id: str
    name: str
    args: str


SlashHandler = Callable[[SlashRequest], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class SlashSubcommand:
    name: str
    help: str
    handler: SlashHandler
    usage: str = ""
    """How to call it, e.g. ``sensitivity [value]`` (default: the name)."""


class SlashCommands:
    """The ``/rapport`` subcommands; a later feature adds its own with :meth:`register`."""

    def __init__(self) -> None:
        self._commands: dict[str, SlashSubcommand] = {}

    def register(self, name: str, help_text: str, handler: SlashHandler, usage: str = "") -> None:
        key = name.lower()
        if key in self._commands or key == "help":
            raise ValueError(f"/rapport {name} is already registered")
        self._commands[key] = SlashSubcommand(key, help_text, handler, usage or key)

    def get(self, name: str) -> SlashSubcommand | None:
        return self._commands.get(name.lower())

    def names(self) -> list[str]:
        return sorted(self._commands)

    def help_text(self, unknown: str | None = None) -> str:
        lines = []
        if unknown:
            lines.append(f"Unknown subcommand `{escape_slack(unknown)}`.")
        lines.append("Usage: `/rapport <subcommand>`")
        lines += [
            f"• `{escape_slack(c.usage)}` — {escape_slack(c.help)}" for c in self._commands.values()
        ]
        lines.append("• `help` — this list")
        return "\n".join(lines)


# -- outgoing actions ---------------------------------------------------------------------
class SlackExecutor:
    """Executes the core's actions in Slack (registered with ``rt.outbox.register``)."""

    platform: str = PLATFORM

    def __init__(self, client: AsyncWebClient, workflow: FlagWorkflow, flags_channel: str) -> None:
        self._client = client
        self._workflow = workflow
        self._flags_channel = flags_channel

    async def execute(self, action: Action) -> ActionResult:
        try:
            match action:
                case PostFlagCard():
                    return await self._post_card(action)
                case UpdateFlagCard():
                    return await self._update_card(action)
                case PostCardThreadReply():
                    return await self._card_thread_reply(action)
                case ReplyInThread() | PostMessage():
                    return await self._post_to_member(action)
                case AddReaction():
                    return await self._add_reaction(action)
        except _CALL_ERRORS as exc:
            logger.warning("Slack call for %s failed: %s", type(action).__name__, exc)
            return _error_result(exc)
        return ActionResult(ok=False, error=f"unsupported action {type(action).__name__}")

    async def _post_card(self, action: PostFlagCard) -> ActionResult:
        view = await self._workflow.card(action.flag_id)
        if view is None:
            return ActionResult(ok=False, error="flag_not_found")
        text, blocks = render_card(view)
        resp = await self._client.chat_postMessage(
            channel=self._flags_channel,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        return ActionResult(ok=True, ref={"channel": str(resp["channel"]), "ts": str(resp["ts"])})

    async def _update_card(self, action: UpdateFlagCard) -> ActionResult:
        view = await self._workflow.card(action.flag_id)
        if view is None:
            return ActionResult(ok=False, error="flag_not_found")
        channel, ts = view.extra.get("card_channel"), view.extra.get("card_ts")
        if not channel or not ts:
            # Not posted yet: PostFlagCard will render the current state when it runs.
            return ActionResult(ok=False, error="card_not_posted")
        text, blocks = render_card(view)
        await self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        return ActionResult(ok=True, ref={"channel": channel, "ts": ts})

    async def _card_thread_reply(self, action: PostCardThreadReply) -> ActionResult:
        view = await self._workflow.card(action.flag_id)
        if view is None:
            return ActionResult(ok=False, error="flag_not_found")
        channel, ts = view.extra.get("card_channel"), view.extra.get("card_ts")
        if not channel or not ts:
            return ActionResult(ok=False, error="card_not_posted", retryable=True)
        resp = await self._client.chat_postMessage(
            channel=channel, thread_ts=ts, text=render_reminder(action.text, action.mention_group)
        )
        return ActionResult(ok=True, ref={"channel": channel, "ts": str(resp["ts"])})

    async def _post_to_member(self, action: ReplyInThread | PostMessage) -> ActionResult:
        target = action.target
        if target.platform != PLATFORM:
            return ActionResult(ok=False, error=f"not a Slack target: {target.platform}")
        text = escape_slack(action.text)
        if isinstance(action, PostMessage) and action.mention_user_ids:
            mentions = " ".join(f"<@{u}>" for u in action.mention_user_ids if _USER_ID.match(u))
            text = f"{mentions} {text}" if mentions else text
        resp = await self._client.chat_postMessage(
            channel=target.channel_id,
            text=text,
            thread_ts=target.thread_id or target.reply_to,
        )
        ts = str(resp["ts"])
        return ActionResult(
            ok=True, ref={"channel": str(resp["channel"]), "ts": ts, "message_id": ts}
        )

    async def _add_reaction(self, action: AddReaction) -> ActionResult:
        try:
            await self._client.reactions_add(
                channel=action.target.channel_id,
                timestamp=action.message_id,
                name=action.emoji.strip(":"),
            )
        except SlackApiError as exc:
            if exc.response.get("error") == "already_reacted":
                return ActionResult(ok=True)
            raise
        return ActionResult(ok=True)


# -- the adapter --------------------------------------------------------------------------
class SlackAdapter:
    """The Slack side of Rapport: one bolt app, one Web API client, one executor."""

    def __init__(
        self,
        *,
        core: CommunityCore,
        workflow: FlagWorkflow,
        bot_token: str,
        flags_channel: str,
        signing_secret: str | None = None,
        app_token: str | None = None,
        api_base: str = "https://slack.com/api/",
        rate_limit_retries: int = 3,
        dedupe_size: int = 10_000,
        cache_size: int = 5_000,
    ) -> None:
        self.core = core
        self.workflow = workflow
        self.flags_channel = flags_channel
        self.app_token = app_token
        self.signing_secret = signing_secret or ""
        self.client = AsyncWebClient(
            token=bot_token,
            base_url=api_base,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
            ],
        )
        # Bolt has no middleware that drops X-Slack-Retry-Num requests, so nothing to
        # switch off; retries are de-duplicated by event_id in _dedupe_events instead.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret or "",
            name="rapport.slack",
            logger=logging.getLogger("rapport.slack.bolt"),
        )
        self.executor = SlackExecutor(self.client, workflow, flags_channel)
        self.commands = SlashCommands()
        for command in ADMIN_COMMANDS:
            self.commands.register(
                command.name, command.description, self._admin_handler(command), command.usage
            )
        self._seen_events: _Lru[str, bool] = _Lru(dedupe_size)
        self._user_names: _Lru[str, str] = _Lru(cache_size)
        self._channel_names: _Lru[str, str] = _Lru(cache_size)
        self._registered: _Lru[tuple[str, str], bool] = _Lru(cache_size)
        self._identity: JSON | None = None
        self._identity_lock = asyncio.Lock()
        self._socket: AsyncSocketModeHandler | None = None
        # Listeners run as concurrent tasks; a lock per channel stripe (FIFO) keeps one
        # channel's message/edit/delete/reaction order as Slack delivered it.
        self._stripes = [asyncio.Lock() for _ in range(_STRIPES)]
        self._register()

    @classmethod
    def from_settings(
        cls, settings: Settings, core: CommunityCore, workflow: FlagWorkflow
    ) -> SlackAdapter:
        """Build from the one settings object (``settings.check()`` already ran)."""
        if settings.SLACK_BOT_TOKEN is None or not settings.SLACK_FLAGS_CHANNEL:
            raise ValueError("Slack is not enabled: SLACK_BOT_TOKEN / SLACK_FLAGS_CHANNEL unset")
        return cls(
            core=core,
            workflow=workflow,
            bot_token=settings.SLACK_BOT_TOKEN,
            flags_channel=settings.SLACK_FLAGS_CHANNEL,
            signing_secret=settings.SLACK_SIGNING_SECRET,
            app_token=settings.SLACK_APP_TOKEN,
            api_base=settings.SLACK_API_BASE,
        )

    # -- running ------------------------------------------------------------------------
    def mount(self, web_app: web.Application, path: str = "/slack/events") -> None:
        """HTTP mode: serve Slack's requests on the lead's aiohttp app (before it starts)."""
        web_app.router.add_post(path, self.handle_http)

    async def handle_http(self, request: web.Request) -> web.Response:
        try:
            bolt_req = await to_bolt_request(request)
        except ValueError:
            # Bolt parses the body before it checks the signature, so a body that is not
            # what its content type says would be a 500. Check the signature ourselves:
            # a forged request is still 401, a genuine but malformed one is 400.
            body = await request.text()
            verifier = SignatureVerifier(self.signing_secret)
            if not verifier.is_valid_request(body, dict(request.headers)):
                return web.json_response({"error": "invalid request"}, status=401)
            logger.warning("refused a malformed Slack request (%d bytes)", len(body))
            return web.json_response({"error": "malformed request"}, status=400)
        bolt_resp = await self.app.async_dispatch(bolt_req)
        return await to_aiohttp_response(bolt_resp)

    async def start(self) -> None:
        """Socket Mode: connect when an app token is set; HTTP mode needs nothing here."""
        if not self.app_token or self._socket is not None:
            return
        self._socket = AsyncSocketModeHandler(self.app, self.app_token, web_client=self.client)
        await self._socket.connect_async()  # type: ignore[no-untyped-call]
        logger.info("Slack Socket Mode connected")

    async def backfill(self, now: datetime | None = None) -> int:
        """Store what was said while Rapport was not listening; returns messages fed.

        Events are acknowledged before they are stored, so a crash can lose one, and
        nothing arrives while the bot is down. On start each channel Rapport has stored
        messages from is read from ``conversations.history`` after the newest stored
        one, and the replies of threads found there are read too. Replies to older
        parents are not in channel history: the threads with replies stored in the last
        :data:`THREAD_BACKFILL_DAYS` days (the most active ones, bounded) are read again
        from ``conversations.replies``. A first reply to an older parent with no stored
        replies is not recovered. The core recognises anything it already has.
        """
        now = now or datetime.now(tz=UTC)
        fed = 0
        try:
            pairs = await self.core.known_channels(PLATFORM)
        except Exception:
            logger.exception("Slack backfill: could not list channels")
            return 0
        for team, channel in pairs:
            if channel == self.flags_channel:
                continue
            try:
                missed = await self._missed_in(team, channel, now)
            except _CALL_ERRORS as exc:
                logger.warning("Slack backfill of %s skipped: %s", channel, exc)
                continue
            for message in missed:
                async with self._ordered(channel):
                    await self._ingest_message(channel, message, {"team_id": team}, {})
                fed += 1
            try:
                erased = await self._erase_missed_deletes(team, channel, now)
            except _CALL_ERRORS as exc:
                logger.warning("Slack check of %s for deleted messages skipped: %s", channel, exc)
                erased = 0
            if erased:
                logger.info("Slack backfill erased %d message(s) deleted while away", erased)
        if fed:
            logger.info("Slack backfill stored %d message(s) missed while away", fed)
        return fed

    async def _erase_missed_deletes(self, team: str, channel: str, now: datetime) -> int:
        """Erase stored top-level messages of the last day that the channel's history no
        longer has (or shows as a tombstone): deleted while Rapport was away. Bounded: about
        :data:`DELETE_CHECK_LIMIT` of the newest messages are read; only their span is
        judged."""
        since = now - DELETE_CHECK_WINDOW
        stored = await self.core.recent_message_ids(PLATFORM, team, channel, since)
        if not stored:
            return 0
        # Slack pages history newest first: when the limit stops the reading, what it
        # read is everything from its oldest message on.
        history: list[JSON] = []
        cursor: str | None = None
        complete = False
        while len(history) < DELETE_CHECK_LIMIT:
            resp = await self.client.conversations_history(
                # A minute earlier than the stored messages asked about: one on the very
                # boundary is never missing from what was read.
                channel=channel,
                oldest=f"{since.timestamp() - 60:.6f}",
                limit=200,
                cursor=cursor,
            )
            history.extend(m for m in resp.get("messages") or [] if isinstance(m, dict))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                complete = True
                break
        # A tombstone stands where a parent was deleted under its replies: it is gone too,
        # but still marks how far the read reached.
        read = {str(m.get("ts")) for m in history}
        tombstones = {str(m.get("ts")) for m in history if m.get("subtype") == "tombstone"}
        gone = deleted_while_away(
            stored,
            read,
            complete=complete,
            read_from="newest",  # conversations.history pages back in time
            order=float,
        )
        gone = sorted({*gone, *(tombstones & stored)}, key=float)
        for ts in gone:
            async with self._ordered(channel):
                await self._ingest_message(
                    channel,
                    {
                        "subtype": "message_deleted",
                        "deleted_ts": ts,
                        "ts": f"{now.timestamp():.6f}",
                    },
                    {"team_id": team},
                    {},
                )
        return len(gone)

    async def _missed_in(self, team: str, channel: str, now: datetime) -> list[JSON]:
        """Top-level messages after the newest stored one, and thread replies since the
        newest stored reply of each thread, oldest first."""
        last = await self.core.last_message_id(PLATFORM, team, channel)
        if last is None:
            return []
        top = await self._history_after(channel, last)
        threads: dict[str, str | None] = {
            str(m["ts"]): None for m in top if int(m.get("reply_count") or 0) > 0
        }
        since = now - timedelta(days=THREAD_BACKFILL_DAYS)
        for thread_ts, newest in await self.core.recent_threads(PLATFORM, team, channel, since):
            threads.setdefault(thread_ts, f"{newest.timestamp():.6f}")
        found = {str(m.get("ts")): m for m in top}
        for thread_ts, oldest in threads.items():
            for m in await self._replies_after(channel, thread_ts, oldest):
                if m.get("ts") != thread_ts:  # the parent comes back with every page
                    found.setdefault(str(m.get("ts")), m)
        return sorted(found.values(), key=lambda m: float(m.get("ts") or 0))

    async def _replies_after(self, channel: str, thread_ts: str, oldest: str | None) -> list[JSON]:
        found: list[JSON] = []
        cursor: str | None = None
        while True:
            resp = await self.client.conversations_replies(
                channel=channel, ts=thread_ts, oldest=oldest, limit=200, cursor=cursor
            )
            found.extend(m for m in resp.get("messages") or [] if isinstance(m, dict))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return found

    async def _history_after(self, channel: str, oldest: str) -> list[JSON]:
        found: list[JSON] = []
        cursor: str | None = None
        while True:
            resp = await self.client.conversations_history(
                channel=channel, oldest=oldest, limit=200, cursor=cursor
            )
            found.extend(m for m in resp.get("messages") or [] if isinstance(m, dict))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return sorted(found, key=lambda m: float(m.get("ts") or 0))

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None

    # -- wiring -------------------------------------------------------------------------
    def _register(self) -> None:
        app = self.app
        app.middleware(self._dedupe_events)
        app.error(self._on_error)
        app.event("message")(self._on_message)
        app.event("reaction_added")(self._on_reaction)
        app.event("reaction_removed")(self._on_reaction)
        app.event("member_joined_channel")(self._on_member_joined_channel)
        app.event("team_join")(self._on_team_join)
        app.action(ACTION_CLAIM)(self._on_flag_button)
        app.action(ACTION_SEND)(self._on_flag_button)
        app.action(ACTION_DISMISS)(self._on_flag_button)
        app.action(ACTION_RESOLVE)(self._on_flag_button)
        app.action(ACTION_EDIT)(self._on_flag_edit)
        app.view(EDIT_CALLBACK_ID)(self._on_edit_submit)
        app.shortcut(SHORTCUT_CALLBACK_ID)(self._on_flag_shortcut)
        app.command(SLASH_COMMAND)(self._on_slash)

    async def _dedupe_events(
        self, body: JSON, next: Callable[[], Awaitable[None]]
    ) -> BoltResponse | None:
        """Answer a repeated ``event_id`` with 200 and skip it; a first delivery always runs,
        whatever its retry headers say (the original may never have reached us)."""
        if body.get("type") == "event_callback":
            event_id = str(body.get("event_id") or "")
            if event_id:
                if event_id in self._seen_events:
                    logger.debug("duplicate Slack event %s skipped", event_id)
                    return BoltResponse(status=200, body="")
                self._seen_events.put(event_id, True)
        await next()
        return None

    async def _on_error(self, error: Exception, body: JSON) -> None:
        logger.error("Slack listener failed on %s", body.get("type"), exc_info=error)
        if body.get("type") == "event_callback":
            # Let a retry of this event run again: the core's ingest is idempotent.
            self._seen_events.pop(str(body.get("event_id") or ""))

    # -- identity and names ---------------------------------------------------------------
    async def _whoami(self) -> JSON:
        """``auth.test`` once: bot user/bot id (to ignore ourselves) and workspace URL."""
        async with self._identity_lock:
            if self._identity is None:
                resp = await self.client.auth_test()
                self._identity = dict(resp.data) if isinstance(resp.data, dict) else {}
            return self._identity

    async def _user_name(self, user_id: str) -> str:
        cached = self._user_names.get(user_id)
        if cached is not None:
            return cached
        name = ""
        try:
            user = (await self.client.users_info(user=user_id))["user"]
            profile = user.get("profile") or {}
            name = str(profile.get("display_name") or user.get("real_name") or user.get("name", ""))
        except _CALL_ERRORS as exc:
            logger.warning("users.info %s failed: %s", user_id, exc)
            return ""
        self._user_names.put(user_id, name)
        return name

    async def _channel_name(self, channel_id: str) -> str:
        cached = self._channel_names.get(channel_id)
        if cached is not None:
            return cached
        try:
            resp = await self.client.conversations_info(channel=channel_id)
            name = str(resp["channel"]["name"])
        except (*_CALL_ERRORS, KeyError) as exc:
            logger.warning("conversations.info %s failed: %s", channel_id, exc)
            return ""
        self._channel_names.put(channel_id, name)
        return name

    async def _register_channel(
        self, team: str, team_name: str, channel: str, channel_name: str
    ) -> None:
        """Tell the core a channel's name the first time we see it, so cards show names."""
        if not team or not channel or (team, channel) in self._registered:
            return
        self._registered.put((team, channel), True)
        await self.core.register_community(
            PLATFORM, team, team_name or team, [ChannelInfo(channel, channel_name or channel)]
        )

    async def _is_self(self, user: str | None, bot_id: str | None) -> bool:
        me = await self._whoami()
        return bool((user and user == me.get("user_id")) or (bot_id and bot_id == me.get("bot_id")))

    def _permalink(self, base_url: str, channel: str, ts: str, thread_ts: str | None) -> str | None:
        if not base_url.startswith("https://"):
            return None
        link = f"{base_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"
        if thread_ts and thread_ts != ts:
            link += f"?thread_ts={thread_ts}&cid={channel}"
        return link

    @staticmethod
    def _team(body: JSON, context: JSON) -> str:
        team = context.get("team_id") or body.get("team_id")
        if not team and isinstance(body.get("team"), dict):
            team = body["team"].get("id")
        return str(team or "")

    # -- community ingestion --------------------------------------------------------------
    def _ordered(self, channel: str) -> asyncio.Lock:
        return self._stripes[hash(channel) % _STRIPES]

    async def _on_message(self, event: JSON, body: JSON, context: Any) -> None:
        channel = str(event.get("channel") or "")
        if channel == self.flags_channel or event.get("channel_type") == "im":
            return
        async with self._ordered(channel):
            await self._ingest_message(channel, event, body, context)

    async def _ingest_message(self, channel: str, event: JSON, body: JSON, context: Any) -> None:
        subtype = event.get("subtype")
        kind = MessageKind.NEW
        msg = event
        if subtype == "message_changed":
            msg = event.get("message") or {}
            previous = event.get("previous_message") or {}
            if msg.get("subtype") == "tombstone":
                # A thread parent deleted while it has replies: Slack keeps a tombstone
                # ("This message was deleted.") in its place, sent as a change.
                msg, kind = previous or {"ts": msg.get("ts")}, MessageKind.DELETE
            elif msg.get("text") == previous.get("text"):
                return  # link unfurls and thread bookkeeping, not a member's edit
            else:
                kind = MessageKind.EDIT
        elif subtype == "message_deleted":
            msg = event.get("previous_message") or {"ts": event.get("deleted_ts")}
            kind = MessageKind.DELETE
        elif subtype not in _NEW_MESSAGE_SUBTYPES:
            return
        user, bot_id = msg.get("user"), msg.get("bot_id")
        if await self._is_self(user, bot_id):
            return
        ts = str(event.get("deleted_ts") or msg.get("ts") or "")
        if not ts or not channel or (kind != MessageKind.DELETE and not (user or bot_id)):
            logger.warning("ignored a message event without channel, ts or author")
            return
        thread_ts = msg.get("thread_ts")
        team = self._team(body, context)
        me = await self._whoami()
        community_name = str(me.get("team") or "") if me.get("team_id") == team else ""
        channel_name = await self._channel_name(channel)
        await self._register_channel(team, community_name, channel, channel_name)
        author_id = str(user or bot_id or "")
        author_name = await self._user_name(author_id) if user and kind != "delete" else ""
        created = _ts_to_datetime(ts)
        edited = msg.get("edited") or {}
        await self.core.on_message(
            MessageEvent(
                platform=PLATFORM,
                community_id=team,
                channel_id=channel,
                message_id=ts,
                author=Author(id=author_id, name=author_name, is_bot=bool(bot_id)),
                text=""
                if kind == MessageKind.DELETE
                else slack_text_to_plain(str(msg.get("text") or "")),
                created_at=created,
                kind=kind,
                thread_id=str(thread_ts) if thread_ts and thread_ts != ts else None,
                # An edit's time, or when a delete happened (the event's own ts).
                edited_at=_ts_to_datetime(edited.get("ts") or event.get("ts"))
                if kind == MessageKind.EDIT
                else _ts_to_datetime(event.get("event_ts") or event.get("ts"))
                if kind == MessageKind.DELETE
                else None,
                community_name=community_name,
                channel_name=channel_name,
                permalink=self._permalink(str(me.get("url") or ""), channel, ts, thread_ts),
            )
        )

    async def _on_reaction(self, event: JSON, body: JSON, context: Any) -> None:
        item = event.get("item") or {}
        channel = str(item.get("channel") or "")
        if item.get("type") != "message" or channel == self.flags_channel:
            return
        async with self._ordered(channel):
            if await self._is_self(event.get("user"), None):
                return
            await self._ingest_reaction(channel, item, event, body, context)

    async def _ingest_reaction(
        self, channel: str, item: JSON, event: JSON, body: JSON, context: Any
    ) -> None:
        await self.core.on_reaction(
            ReactionEvent(
                platform=PLATFORM,
                community_id=self._team(body, context),
                channel_id=channel,
                message_id=str(item.get("ts") or ""),
                member_id=str(event.get("user") or ""),
                emoji=str(event.get("reaction") or ""),
                added=event.get("type") == "reaction_added",
                at=_ts_to_datetime(event.get("event_ts")),
            )
        )

    async def _on_member_joined_channel(self, event: JSON, body: JSON, context: Any) -> None:
        user = str(event.get("user") or "")
        if event.get("channel") == self.flags_channel or await self._is_self(user, None):
            return
        await self.core.on_member_join(
            MemberJoinEvent(
                platform=PLATFORM,
                community_id=str(event.get("team") or self._team(body, context)),
                member=Author(id=user, name=await self._user_name(user)),
                at=_ts_to_datetime(event.get("event_ts")),
            )
        )

    async def _on_team_join(self, event: JSON, body: JSON, context: Any) -> None:
        user = event.get("user") or {}
        profile = user.get("profile") or {}
        await self.core.on_member_join(
            MemberJoinEvent(
                platform=PLATFORM,
                community_id=str(user.get("team_id") or self._team(body, context)),
                member=Author(
                    id=str(user.get("id") or ""),
                    name=str(profile.get("display_name") or user.get("name") or ""),
                    is_bot=bool(user.get("is_bot")),
                ),
                at=_ts_to_datetime(event.get("event_ts")),
            )
        )

    # -- managers' card -------------------------------------------------------------------
    async def _ephemeral(self, channel: str, user: str, text: str) -> None:
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except _CALL_ERRORS as exc:
            logger.warning("chat.postEphemeral to %s in %s failed: %s", user, channel, exc)

    @staticmethod
    def _flag_id(value: object) -> int | None:
        """The flag a button value or modal ``private_metadata`` names: plain ASCII digits
        within 1..2**63-1 (what the database can hold), else None (stale or forged)."""
        if not isinstance(value, str) or not value.isascii() or not value.isdigit():
            return None
        if len(value.lstrip("0")) > len(str(_MAX_FLAG_ID)):
            return None
        flag_id = int(value)
        return flag_id if 1 <= flag_id <= _MAX_FLAG_ID else None

    @staticmethod
    def _click_channel(body: JSON) -> str:
        channel = body.get("channel") or {}
        container = body.get("container") or {}
        return str(channel.get("id") or container.get("channel_id") or "")

    async def _manager_click(self, ack: AsyncAck, body: JSON) -> tuple[str, str] | None:
        """Ack a card button at once; (user, channel) for a manager, else refuse privately."""
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        channel = self._click_channel(body)
        if not self.workflow.is_manager(user):
            await self._ephemeral(channel, user, NOT_A_MANAGER)
            return None
        return user, channel

    async def _on_flag_button(self, ack: AsyncAck, body: JSON, action: JSON) -> None:
        click = await self._manager_click(ack, body)
        if click is None:
            return
        user, channel = click
        flag_id = self._flag_id(action.get("value"))
        if flag_id is None:
            await self._ephemeral(channel, user, "This button does not name a flag.")
            return
        verbs: dict[str, Callable[[int, str], Awaitable[FlagOutcome]]] = {
            ACTION_CLAIM: self.workflow.claim,
            ACTION_SEND: self.workflow.send,
            ACTION_DISMISS: self.workflow.dismiss,
            ACTION_RESOLVE: self.workflow.resolve,
        }
        outcome = await verbs[str(action["action_id"])](flag_id, user)
        if not outcome.ok:
            await self._ephemeral(channel, user, render_notice(outcome.message))

    async def _on_flag_edit(self, ack: AsyncAck, body: JSON, action: JSON) -> None:
        click = await self._manager_click(ack, body)
        if click is None:
            return
        user, channel = click
        flag_id = self._flag_id(action.get("value"))
        view = await self.workflow.card(flag_id) if flag_id is not None else None
        if flag_id is None or view is None:
            await self._ephemeral(channel, user, "That flag no longer exists.")
            return
        try:
            await self.client.views_open(
                trigger_id=str(body.get("trigger_id") or ""),
                view=edit_modal(flag_id, view.draft),
            )
        except _CALL_ERRORS as exc:
            logger.warning("views.open for flag %s failed: %s", flag_id, exc)
            await self._ephemeral(channel, user, "Could not open the editor; please try again.")

    async def _on_edit_submit(self, ack: AsyncAck, body: JSON, view: JSON) -> None:
        user = str((body.get("user") or {}).get("id") or "")
        values = (view.get("state") or {}).get("values") or {}
        text = str(((values.get(EDIT_BLOCK_ID) or {}).get(EDIT_ACTION_ID) or {}).get("value") or "")
        flag_id = self._flag_id(view.get("private_metadata"))
        if not self.workflow.is_manager(user):
            await ack(response_action="errors", errors={EDIT_BLOCK_ID: NOT_A_MANAGER})
            return
        if flag_id is None:
            await ack(response_action="errors", errors={EDIT_BLOCK_ID: FORM_NAMES_NO_FLAG})
            return
        if not text.strip():
            await ack(response_action="errors", errors={EDIT_BLOCK_ID: "Write a reply to send."})
            return
        await ack()
        outcome = await self.workflow.send(flag_id, user, text=text)
        if not outcome.ok:
            await self._ephemeral(self.flags_channel, user, render_notice(outcome.message))

    async def _on_flag_shortcut(
        self, ack: AsyncAck, body: JSON, respond: AsyncRespond, context: Any
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        channel = str((body.get("channel") or {}).get("id") or "")
        ts = str((body.get("message") or {}).get("ts") or body.get("message_ts") or "")
        if not self.workflow.is_manager(user):
            # A hand-raised flag teaches the detector: only managers may give that lesson.
            await self._reply_ephemeral(respond, channel, user, NOT_A_MANAGER)
            return
        outcome = await self.core.manual_flag(
            PLATFORM, self._team(body, context), channel, ts, actor=user
        )
        await self._reply_ephemeral(respond, channel, user, render_notice(outcome.message))

    async def _reply_ephemeral(
        self, respond: AsyncRespond | None, channel: str, user: str, text: str
    ) -> None:
        """Prefer ``response_url`` (works where the bot is not a member), else postEphemeral."""
        if respond is not None and respond.response_url:
            try:
                await respond(text=text, response_type="ephemeral", replace_original=False)
                return
            except _CALL_ERRORS as exc:
                logger.warning("response_url post failed: %s", exc)
        await self._ephemeral(channel, user, text)

    # -- /rapport -------------------------------------------------------------------------
    async def _on_slash(
        self, ack: AsyncAck, command: JSON, respond: AsyncRespond, context: Any
    ) -> None:
        # Slack sends a command's text escaped like message text ("AT&amp;T").
        text = slack_text_to_plain(str(command.get("text") or ""))
        name, _, args = text.strip().partition(" ")
        sub = self.commands.get(name) if name else None
        if sub is None:
            # Subcommands are matched case-insensitively, ``help`` included.
            await ack(text=self.commands.help_text(None if name.lower() in ("", "help") else name))
            return
        await ack()
        request = SlashRequest(
            community_id=self._team(command, context),
            channel_id=str(command.get("channel_id") or ""),
            user_id=str(command.get("user_id") or ""),
            name=sub.name,
            args=args.strip(),
        )
        try:
            text = await sub.handler(request)
        except Exception:  # the admin hears of it; the traceback goes to the log
            logger.exception("/rapport %s failed", sub.name)
            text = COMMAND_FAILED
        await self._reply_ephemeral(respond, request.channel_id, request.user_id, text)

    def _admin_handler(self, command: AdminCommand) -> SlashHandler:
        """Run a shared admin command; only SLACK_MANAGERS may change settings."""

        async def handler(request: SlashRequest) -> str:
            ctx = CommandContext(
                platform=PLATFORM,
                community_id=request.community_id,
                channel_id=request.channel_id,
                actor=request.user_id,
                args=request.args,
                may_change=self.workflow.is_manager(request.user_id),
            )
            return render_notice(await command.run(self.core, ctx))

        return handler


def edit_modal(flag_id: int, draft: str) -> JSON:
    """The "Edit & send" modal, prefilled with the current draft."""
    element: JSON = {
        "type": "plain_text_input",
        "action_id": EDIT_ACTION_ID,
        "multiline": True,
        "max_length": 3000,
    }
    if draft:
        element["initial_value"] = draft[:3000]
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK_ID,
        "private_metadata": str(flag_id),
        "title": {"type": "plain_text", "text": f"Reply for flag #{flag_id}"[:24]},
        "submit": {"type": "plain_text", "text": "Send reply"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": EDIT_BLOCK_ID,
                "label": {"type": "plain_text", "text": "Reply posted in the member's thread"},
                "element": element,
            }
        ],
    }
