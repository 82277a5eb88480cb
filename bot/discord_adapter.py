"""Discord adapter: discord.py events in, the core's actions out, and nothing else.

:class:`DiscordAdapter` is a ``discord.Client`` that translates gateway events into the
neutral events of :mod:`handlers.events` and hands them to a
:class:`~handlers.ports.CommunityCore`; :class:`DiscordActionExecutor` carries the core's
actions back to Discord. Decisions (what to store, what to flag, what a command answers)
belong to the core; this module only maps shapes, ids and errors.

One process points at one Discord: discord.py keeps the REST base
(``discord.http.Route.BASE``) and the gateway (``DiscordWebSocket.DEFAULT_GATEWAY``) in
class attributes, so :func:`configure_endpoints` changes them for every client in the
process. That is how the tests, the demo and the benchmark aim the real client at the
local emulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiohttp
import discord
import yarl
from discord import app_commands

from bot.settings import Settings
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
    PostMessage,
    ReactionEvent,
    ReplyInThread,
    Target,
)
from handlers.ports import ChannelInfo, CommunityCore
from handlers.reconcile import deleted_while_away

logger = logging.getLogger(__name__)

PLATFORM = Platform.DISCORD.value
MAX_MESSAGE_LEN = 2000
RECENT_IDS = 10_000
BACKFILL_CLOCK_MARGIN: Final = timedelta(minutes=2)
DELETE_CHECK_WINDOW: Final = timedelta(days=1)
"""How far back a backfill looks for messages deleted while Rapport was away."""
DELETE_CHECK_LIMIT: Final = 1000
"""At most this many of a channel's newest messages are fetched for that check."""
FLAG_COMMAND_NAME = "Flag for follow-up"
# Member-authored messages; joins, pins, thread-starter echoes and the like are system noise.
CONVERSATION_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})


def configure_endpoints(api_base: str | None = None, gateway_url: str | None = None) -> None:
    """Aim discord.py at another Discord (the emulator). Process-wide, see module doc."""
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def adapter_intents() -> discord.Intents:
    """Only what Rapport reads: guilds, messages (with content), reactions, member joins."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    intents.guild_reactions = True
    intents.members = True
    return intents


# -- pure translation ----------------------------------------------------------------------
def split_text(text: str, limit: int = MAX_MESSAGE_LEN) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` chars, preferring paragraph, line, then
    word boundaries, so a long reply reads naturally across several Discord messages."""
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = window.rfind(sep)
            if cut > limit // 2:
                break
        if cut <= 0:
            cut = limit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def channel_and_thread(channel: object) -> tuple[str, str | None]:
    """``(channel_id, thread_id)``: a thread's messages belong to its parent channel."""
    if isinstance(channel, discord.Thread):
        return str(channel.parent_id), str(channel.id)
    return str(getattr(channel, "id", "")), None


def _channel_name(channel: object) -> str:
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        return parent.name if parent is not None else ""
    return str(getattr(channel, "name", "") or "")


def message_event(message: discord.Message, kind: MessageKind = MessageKind.NEW) -> MessageEvent:
    """The neutral form of a Discord message (new, edited, or fetched by backfill)."""
    channel_id, thread_id = channel_and_thread(message.channel)
    ref = message.reference
    reply_to = (
        str(ref.message_id)
        if ref is not None
        and ref.message_id is not None
        and ref.type == discord.MessageReferenceType.reply
        else None
    )
    guild = message.guild
    return MessageEvent(
        platform=PLATFORM,
        community_id=str(guild.id) if guild else "",
        channel_id=channel_id,
        message_id=str(message.id),
        author=Author(
            id=str(message.author.id), name=message.author.display_name, is_bot=message.author.bot
        ),
        text=message.content,
        created_at=message.created_at,
        kind=kind,
        thread_id=thread_id,
        reply_to=reply_to,
        edited_at=message.edited_at,
        community_name=guild.name if guild else "",
        channel_name=_channel_name(message.channel),
        permalink=message.jump_url,
    )


def community_channels(guild: discord.Guild) -> list[ChannelInfo]:
    """Channels members talk in: text channels, forums, and their active threads."""
    channels = [ChannelInfo(id=str(c.id), name=c.name) for c in guild.text_channels]
    channels += [ChannelInfo(id=str(f.id), name=f.name) for f in guild.forums]
    channels += [
        ChannelInfo(id=str(t.id), name=t.name, is_thread=True, parent_id=str(t.parent_id))
        for t in guild.threads
    ]
    return channels


# -- actions out ------------------------------------------------------------------------------
def _allowed_mentions(user_ids: Iterable[str]) -> discord.AllowedMentions:
    """Nobody is pinged unless the core names them explicitly; never @everyone or roles."""
    users = [discord.Object(id=int(u)) for u in user_ids]
    if not users:
        return discord.AllowedMentions.none()
    return discord.AllowedMentions(everyone=False, roles=False, users=users, replied_user=False)


def _nonce(action: Action, part: int) -> str:
    """Same action, same part → same nonce: with ``enforce_nonce`` Discord returns the first
    message instead of posting again, so the outbox may retry a half-sent reply safely
    within the few minutes Discord remembers a nonce (a retry after a longer outage may
    post a part twice)."""
    digest = hashlib.blake2b(repr((action, part)).encode(), digest_size=12).hexdigest()
    return digest[:25]


def _failure(exc: BaseException, what: str) -> ActionResult:
    """Map a Discord error to the outbox's terms: retry later, or give up with a reason."""
    if isinstance(exc, discord.NotFound):
        code = exc.code
        reason = {10003: "channel not found", 10008: "message not found (deleted?)"}.get(
            code, "not found"
        )
        return ActionResult(ok=False, error=f"{what}: {reason} ({code})", retryable=False)
    if isinstance(exc, discord.Forbidden):
        return ActionResult(ok=False, error=f"{what}: missing permissions ({exc.text})")
    if isinstance(exc, discord.DiscordServerError | discord.RateLimited) or (
        # discord.py gives up on a 429 after five tries, or at once without a Via header
        # (a Cloudflare ban): both are temporary, so the outbox tries again later.
        isinstance(exc, discord.HTTPException) and exc.status == 429
    ):
        return ActionResult(ok=False, error=f"{what}: Discord unavailable ({exc})", retryable=True)
    if isinstance(exc, discord.HTTPException):
        return ActionResult(ok=False, error=f"{what}: rejected ({exc.status} {exc.text})")
    return ActionResult(ok=False, error=f"{what}: connection failed ({exc!r})", retryable=True)


class DiscordActionExecutor:
    """Executes the core's actions on Discord (registered with the runtime's outbox).

    Card actions belong to the managers' platform (Slack); they are refused here.
    """

    def __init__(self, client: discord.Client) -> None:
        self.platform: str = PLATFORM
        self._client = client

    def _channel(self, target: Target) -> discord.PartialMessageable:
        dest = int(target.thread_id or target.channel_id)
        guild_id = int(target.community_id) if target.community_id else None
        return self._client.get_partial_messageable(dest, guild_id=guild_id)

    async def execute(self, action: Action) -> ActionResult:
        if self._client.is_closed() or self._client.user is None:
            return ActionResult(ok=False, error="discord client not connected", retryable=True)
        if isinstance(action, PostMessage):
            return await self._post(action, action.target, action.text, action.mention_user_ids)
        if isinstance(action, ReplyInThread):
            return await self._post(action, action.target, action.text, ())
        if isinstance(action, AddReaction):
            return await self._react(action)
        return ActionResult(ok=False, error=f"discord cannot execute {type(action).__name__}")

    async def _post(
        self, action: Action, target: Target, text: str, mentions: Sequence[str]
    ) -> ActionResult:
        channel = self._channel(target)
        reference: discord.MessageReference | None = None
        # A reply to a thread's starter message is simply a post in that thread.
        if target.reply_to and target.reply_to != target.thread_id:
            reference = discord.MessageReference(
                message_id=int(target.reply_to),
                channel_id=channel.id,
                guild_id=channel.guild_id,
                fail_if_not_exists=False,
            )
        posted: list[str] = []
        try:
            for part, chunk in enumerate(split_text(text)):
                sent = await channel.send(
                    chunk,
                    reference=reference if part == 0 else None,  # type: ignore[arg-type]
                    allowed_mentions=_allowed_mentions(mentions),
                    nonce=_nonce(action, part),
                )
                posted.append(str(sent.id))
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.warning("discord post to %s failed after %d part(s)", channel.id, len(posted))
            result = _failure(exc, f"post to channel {channel.id}")
            return ActionResult(
                ok=False,
                ref=self._ref(channel, posted),
                error=result.error,
                retryable=result.retryable,
            )
        return ActionResult(ok=True, ref=self._ref(channel, posted))

    @staticmethod
    def _ref(channel: discord.PartialMessageable, posted: list[str]) -> dict[str, str]:
        if not posted:
            return {"channel_id": str(channel.id)}
        return {
            "channel_id": str(channel.id),
            "message_id": posted[0],
            "message_ids": ",".join(posted),
        }

    async def _react(self, action: AddReaction) -> ActionResult:
        channel = self._channel(action.target)
        try:
            await channel.get_partial_message(int(action.message_id)).add_reaction(action.emoji)
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            return _failure(exc, f"reaction on message {action.message_id}")
        return ActionResult(ok=True, ref={"message_id": action.message_id})


# -- application commands --------------------------------------------------------------------
Subcommand = AdminCommand
"""One ``/rapport <name> [argument]`` (the shared :class:`handlers.commands.AdminCommand`)."""

#: The ``/rapport`` subcommands: the shared admin commands (``handlers.commands``). Pass
#: ``subcommands=`` with more :class:`Subcommand` entries to expose another core call.
DEFAULT_SUBCOMMANDS: tuple[Subcommand, ...] = ADMIN_COMMANDS


# -- the client ------------------------------------------------------------------------------
class DiscordAdapter(discord.Client):
    """Rapport's Discord client.

    ``guild_ids``: sync commands to these guilds (instant) instead of globally.
    ``identify_delay``: discord.py waits 5 s before a non-initial IDENTIFY (Discord's
    identify rate limit); tests against the emulator set 0.
    ``backfill``: after each READY, fetch what watched channels missed (see :meth:`backfill`).
    """

    def __init__(
        self,
        core: CommunityCore,
        *,
        api_base: str | None = None,
        gateway_url: str | None = None,
        guild_ids: Iterable[int | str] = (),
        guild_ready_timeout: float = 2.0,
        identify_delay: float = 5.0,
        backfill: bool = True,
        subcommands: Sequence[Subcommand] = DEFAULT_SUBCOMMANDS,
        **options: object,
    ) -> None:
        configure_endpoints(api_base, gateway_url)
        super().__init__(
            intents=adapter_intents(),
            guild_ready_timeout=guild_ready_timeout,
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,  # raw events carry all we need; no message cache
            chunk_guilds_at_startup=False,
            **options,  # type: ignore[arg-type]
        )
        self.core = core
        self.executor = DiscordActionExecutor(self)
        self.guild_ids = [int(g) for g in guild_ids]
        self.identify_delay = identify_delay
        self.backfill_enabled = backfill
        self.ready_count = 0
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_command_error  # type: ignore[method-assign]
        self.rapport_group = self._build_group(subcommands)
        self.tree.add_command(self.rapport_group)
        flag_menu = app_commands.ContextMenu(
            name=FLAG_COMMAND_NAME,
            callback=self._flag_callback(),
            allowed_contexts=app_commands.AppCommandContext(guild=True),
        )
        flag_menu.default_permissions = discord.Permissions(manage_messages=True)
        self.tree.add_command(flag_menu)
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._edit_stamps: OrderedDict[int, str] = OrderedDict()
        """Message id -> the ``edited_timestamp`` of its last edit taken (bounded)."""
        self._backfill_lock = asyncio.Lock()
        self._session_started: datetime | None = None
        """When the current gateway session's READY arrived (discord.py dispatches
        ``connect`` then): the backfill starts from the newest message stored before it,
        as live messages stored since (on_ready waits for every guild) hide nothing."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._synced = False

    @classmethod
    def from_settings(
        cls, settings: Settings, core: CommunityCore, **options: Any
    ) -> DiscordAdapter:
        """The adapter aimed at ``DISCORD_API_BASE`` / ``DISCORD_GATEWAY_URL``.

        Wiring (composition root)::

            adapter = DiscordAdapter.from_settings(settings, rt.core)
            rt.outbox.register(adapter.executor)
            async with adapter:
                await adapter.start(settings.DISCORD_TOKEN)
        """
        return cls(
            core,
            api_base=settings.DISCORD_API_BASE,
            gateway_url=settings.DISCORD_GATEWAY_URL,
            **options,
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def setup_hook(self) -> None:
        """Runs once per login: sync the commands here, never on (repeated) READYs."""
        if self._synced:
            return
        try:
            if self.guild_ids:
                for gid in self.guild_ids:
                    guild = discord.Object(id=gid)
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
            self._synced = True
        except discord.HTTPException:
            logger.exception("could not register application commands; /rapport unavailable")

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if not initial and self.identify_delay > 0:
            await asyncio.sleep(self.identify_delay)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await super().close()

    async def on_error(self, event_method: str, /, *args: object, **kwargs: object) -> None:
        """Every failing event handler ends here, traceback kept; the client keeps running."""
        logger.exception("discord event %s failed", event_method)

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_ready(self) -> None:
        """READY can come many times (after an invalid session); each may have missed events."""
        self.ready_count += 1
        logger.info(
            "discord ready (#%d) as %s in %d guild(s)",
            self.ready_count,
            self.user,
            len(self.guilds),
        )
        if self.backfill_enabled:
            self._spawn(self.backfill(), "discord-backfill")

    async def on_guild_available(self, guild: discord.Guild) -> None:
        await self._register(guild)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self._register(guild)

    async def on_thread_create(self, thread: discord.Thread) -> None:
        await self._register(thread.guild)

    async def on_guild_channel_create(self, channel: discord.abc.GuildChannel) -> None:
        await self._register(channel.guild)

    async def _register(self, guild: discord.Guild) -> None:
        await self.core.register_community(
            PLATFORM, str(guild.id), guild.name, community_channels(guild)
        )

    # -- messages in -------------------------------------------------------------------
    def _from_member(self, author: discord.abc.User) -> bool:
        return not author.bot and (self.user is None or author.id != self.user.id)

    def _first_time(self, message_id: int) -> bool:
        """False for a message already fed (live and backfill can overlap)."""
        if message_id in self._recent:
            return False
        self._recent[message_id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        return True

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        """New messages are taken here, as discord.py parses the gateway event, not by
        an ``on_message`` handler: discord.py starts a task for each handler call (4-7 µs
        a message in ``bench/discord_ingest.py``), and most messages need no task in
        the core (see :meth:`CommunityCore.accept`). So this client dispatches no
        ``message`` event (no ``on_message``, no ``wait_for("message")``); every other
        event is dispatched as usual."""
        if event == "message":
            self._take(args[0])
            return
        if event == "connect":
            self._session_started = discord.utils.utcnow()
        super().dispatch(event, *args, **kwargs)

    def _take(self, message: discord.Message) -> None:
        """A live message, handed to the core to judge with the others arriving."""
        if not self._fresh_member_message(message):
            return
        try:
            # The core skips unwatched channels and threads itself (and counts them).
            self.core.accept(message_event(message, MessageKind.NEW))
        except Exception:  # inside discord.py's parser: log it, never break the gateway
            self._recent.pop(message.id, None)  # not fed after all: a backfill may retry it
            logger.exception("taking Discord message %s failed", message.id)

    def _fresh_member_message(self, message: discord.Message) -> bool:
        return (
            message.guild is not None
            and message.type in CONVERSATION_TYPES
            and self._from_member(message.author)
            and self._first_time(message.id)
        )

    async def _ingest(self, message: discord.Message) -> None:
        """A fetched message (backfill): judged at once, what follows awaited."""
        if not self._fresh_member_message(message):
            return
        try:
            await self.core.on_message(message_event(message, MessageKind.NEW))
        except BaseException:
            self._recent.pop(message.id, None)
            raise

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        # Updates without edited_timestamp are embed unfurls and pins, not edits; so are
        # those of an edited message that keep its edited_timestamp (a pin, an embed
        # resolved after the edit).
        stamp = payload.data.get("edited_timestamp")
        if (
            payload.guild_id is None
            or stamp is None
            or not self._from_member(message.author)
            or self._edit_stamps.get(message.id) == stamp
        ):
            return
        self._edit_stamps[message.id] = str(stamp)
        if len(self._edit_stamps) > RECENT_IDS:
            self._edit_stamps.popitem(last=False)
        await self.core.on_message(message_event(message, MessageKind.EDIT))

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._deleted(payload.guild_id, payload.channel_id, [payload.message_id])

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._deleted(payload.guild_id, payload.channel_id, sorted(payload.message_ids))

    async def _deleted(self, guild_id: int | None, channel_id: int, ids: Iterable[int]) -> None:
        """Deletes are forwarded even for unwatched channels: erasing is always right."""
        if guild_id is None:
            return
        guild = self.get_guild(guild_id)
        channel = guild.get_channel_or_thread(channel_id) if guild else None
        chan, thread = channel_and_thread(channel) if channel else (str(channel_id), None)
        for mid in ids:
            await self.core.on_message(
                MessageEvent(
                    platform=PLATFORM,
                    community_id=str(guild_id),
                    channel_id=chan,
                    message_id=str(mid),
                    author=Author(id=""),  # Discord does not say who wrote a deleted message
                    text="",
                    created_at=discord.utils.snowflake_time(mid),
                    kind=MessageKind.DELETE,
                    edited_at=discord.utils.utcnow(),  # when it was deleted
                    thread_id=thread,
                    community_name=guild.name if guild else "",
                )
            )

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.member is not None and not self._from_member(payload.member):
            return
        await self._reaction(payload, added=True)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        guild = self.get_guild(payload.guild_id) if payload.guild_id else None
        member = guild.get_member(payload.user_id) if guild else None
        if member is not None and not self._from_member(member):
            return
        await self._reaction(payload, added=False)

    async def _reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        if payload.guild_id is None or (self.user and payload.user_id == self.user.id):
            return
        guild = self.get_guild(payload.guild_id)
        channel = guild.get_channel_or_thread(payload.channel_id) if guild else None
        chan = channel_and_thread(channel)[0] if channel else str(payload.channel_id)
        if not await self.core.is_watched(PLATFORM, str(payload.guild_id), chan):
            return
        await self.core.on_reaction(
            ReactionEvent(
                platform=PLATFORM,
                community_id=str(payload.guild_id),
                channel_id=chan,
                message_id=str(payload.message_id),
                member_id=str(payload.user_id),
                emoji=str(payload.emoji),
                added=added,
                at=datetime.now(UTC),
            )
        )

    async def on_member_join(self, member: discord.Member) -> None:
        await self.core.on_member_join(
            MemberJoinEvent(
                platform=PLATFORM,
                community_id=str(member.guild.id),
                member=Author(id=str(member.id), name=member.display_name, is_bot=member.bot),
                at=member.joined_at or datetime.now(UTC),
            )
        )

    # -- resilience --------------------------------------------------------------------
    async def backfill(self) -> None:
        """Feed watched channels' messages newer than the core's last stored one.

        After an invalid session the gateway does not replay what happened in the gap;
        REST history does. Channels the core has never stored a message for are skipped
        (joining a server must not import its whole past). The core's last id for a
        channel covers its threads (thread messages carry the parent's ``channel_id``).
        """
        # A margin for the clocks of this host and Discord (message times are Discord's):
        # what it fetches again is recognised and stored once.
        started = self._session_started
        before = started - BACKFILL_CLOCK_MARGIN if started is not None else None
        async with self._backfill_lock:
            fed = erased = 0
            for guild in list(self.guilds):
                for channel in [*guild.text_channels, *guild.forums]:
                    gid, cid = str(guild.id), str(channel.id)
                    if not await self.core.is_watched(PLATFORM, gid, cid):
                        continue
                    after = await self._backfill_start(gid, cid, before)
                    if after is None:
                        continue
                    sources: list[discord.TextChannel | discord.Thread] = [
                        t for t in guild.threads if t.parent_id == channel.id
                    ]
                    if isinstance(channel, discord.TextChannel):
                        sources.insert(0, channel)
                    for source in sources:
                        if source.last_message_id is not None and source.last_message_id <= after:
                            continue  # nothing newer, as GUILD_CREATE told us
                        fed += await self._backfill_one(source, after)
                    if isinstance(channel, discord.TextChannel):
                        erased += await self._erase_missed_deletes(channel, gid, cid)
            if erased:
                logger.info("backfill erased %d message(s) deleted while away", erased)
            if fed:
                # Fetched, not necessarily new: after a restart what was already stored
                # comes back too, and the database stores it once.
                logger.info("backfill fetched %d message(s) newer than the stored ones", fed)

    async def _erase_missed_deletes(self, channel: discord.TextChannel, gid: str, cid: str) -> int:
        """Erase stored messages of the last day that the channel no longer has: deleted
        while Rapport was away (the gateway does not replay deletes). Bounded: at most
        ``DELETE_CHECK_LIMIT`` messages are fetched, oldest first from a day ago, and only
        the span they cover is judged; thread messages are not checked."""
        # Without Read Message History Discord answers with an empty history, not an
        # error: that would look like every stored message had been deleted.
        if not channel.permissions_for(channel.guild.me).read_message_history:
            return 0
        since = discord.utils.utcnow() - DELETE_CHECK_WINDOW
        stored = await self.core.recent_message_ids(PLATFORM, gid, cid, since)
        if not stored:
            return 0
        read: set[str] = set()
        try:
            # Read from a minute earlier than the stored messages asked about, so one
            # created on the very boundary is never missing from what was read.
            read_from = since - timedelta(minutes=1)
            async for message in channel.history(limit=DELETE_CHECK_LIMIT, after=read_from):
                read.add(str(message.id))
        except discord.HTTPException:
            logger.exception("checking channel %s for deleted messages failed", cid)
            return 0
        gone = deleted_while_away(
            stored,
            read,
            complete=len(read) < DELETE_CHECK_LIMIT,
            read_from="oldest",  # discord.py reads ``after`` a point, oldest first
            order=int,
        )
        if gone:
            await self._deleted(int(gid), int(cid), [int(m) for m in gone])
        return len(gone)

    async def _backfill_start(self, gid: str, cid: str, before: datetime | None) -> int | None:
        """The id after which a channel's history is fetched: the newest message stored
        before the session began, or the session's start itself when every stored
        message is newer than that; None for a channel with nothing stored (joining a
        server must not import its whole past)."""
        last = await self.core.last_message_id(PLATFORM, gid, cid, before)
        if last is not None:
            return int(last)
        if before is None or await self.core.last_message_id(PLATFORM, gid, cid) is None:
            return None
        return discord.utils.time_snowflake(before)

    async def _backfill_one(self, source: discord.TextChannel | discord.Thread, after: int) -> int:
        fed = 0
        try:
            async for message in source.history(
                limit=None, after=discord.Object(id=after), oldest_first=True
            ):
                if message.id not in self._recent:
                    fed += 1
                await self._ingest(message)
        except discord.HTTPException:
            logger.exception("backfill of channel %s failed", source.id)
        return fed

    # -- application commands ----------------------------------------------------------
    def _build_group(self, subcommands: Sequence[Subcommand]) -> app_commands.Group:
        group = app_commands.Group(
            name="rapport",
            description="Rapport: community listening and replies",
            guild_only=True,
            default_permissions=discord.Permissions(manage_guild=True),
        )
        for sub in subcommands:
            group.add_command(self._subcommand(sub))
        return group

    def _subcommand(self, sub: Subcommand) -> app_commands.Command[Any, ..., None]:
        """An application command for ``sub``; its argument, if any, is one optional
        string option named after it."""
        if sub.argument:

            async def with_value(
                interaction: discord.Interaction, value: str | None = None
            ) -> None:
                await self._run_subcommand(interaction, sub, value or "")

            callback: Callable[..., Coroutine[Any, Any, None]] = with_value
        else:

            async def plain(interaction: discord.Interaction) -> None:
                await self._run_subcommand(interaction, sub, "")

            callback = plain
        callback.__name__ = f"rapport_{sub.name}"
        command: app_commands.Command[Any, ..., None] = app_commands.Command(
            name=sub.name, description=sub.description, callback=callback
        )
        if sub.argument:
            app_commands.describe(value=sub.argument_help or sub.argument)(command)
            app_commands.rename(value=sub.argument)(command)
        return command

    async def _run_subcommand(
        self, interaction: discord.Interaction, sub: Subcommand, args: str
    ) -> None:
        # Discord hides the command from non-admins (default_member_permissions), but
        # overwrites can re-open it: the permission is checked here again.
        if not interaction.permissions.manage_guild:
            await interaction.response.send_message(
                "You need the **Manage Server** permission to use `/rapport`.", ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # ack within 3 s
        ctx = CommandContext(
            platform=PLATFORM,
            community_id=str(interaction.guild_id or ""),
            channel_id=channel_and_thread(interaction.channel)[0],
            actor=str(interaction.user.id),
            args=args.strip(),
        )
        text = await sub.run(self.core, ctx)
        await self._followup(interaction, text)

    @staticmethod
    async def _followup(interaction: discord.Interaction, text: str) -> None:
        for chunk in split_text(text or "(no answer)"):
            await interaction.followup.send(
                chunk, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
            )

    def _flag_callback(
        self,
    ) -> Callable[[discord.Interaction, discord.Message], Coroutine[Any, Any, None]]:
        async def flag_for_follow_up(
            interaction: discord.Interaction, message: discord.Message
        ) -> None:
            if not interaction.permissions.manage_messages:
                await interaction.response.send_message(
                    "You need the **Manage Messages** permission to flag messages.", ephemeral=True
                )
                return
            await interaction.response.defer(ephemeral=True, thinking=True)
            outcome = await self.core.manual_flag(
                PLATFORM,
                str(interaction.guild_id or ""),
                channel_and_thread(message.channel)[0],
                str(message.id),
                str(interaction.user.id),
            )
            await self._followup(interaction, outcome.message)

        return flag_for_follow_up

    async def _on_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """The one place command failures end up: logged with traceback, admin told."""
        logger.exception("application command failed", exc_info=error)
        text = "Rapport hit an error running this command; it has been logged."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            logger.exception("could not report the command error to the user")
