"""A local Discord: the gateway websocket and the REST routes Rapport's client uses.

The real discord.py client runs against it unchanged on loopback (point
``discord.http.Route.BASE`` at :attr:`DiscordEmulator.api_base` and
``DiscordWebSocket.DEFAULT_GATEWAY`` at :attr:`DiscordEmulator.gateway_url`), so tests and
the demo exercise the real dispatch, rate-limit and reconnect code instead of mocks.
What the client expects is listed in ``PROTOCOLS.md``; the non-obvious parts are noted
where they are implemented.

Tests drive it through a small Python control API (create a guild, make members speak,
invoke commands, force an invalid session, inject 429s) and read back what the bot did
(``bot_messages``, interaction replies) with bounded waits. Run standalone
(``python -m bot.sandbox.discord_emulator --seed``) it prints its addresses as one JSON line
and exposes the same control verbs over HTTP under ``/_emu/`` for out-of-process use (the
ingest benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
DISCORD_EPOCH_MS = 1_420_070_400_000
API_PREFIX = "/api/v10"
NORMAL_CLOSURES = (1000, 1001)
"""Close codes after which Discord does not let a client resume its session."""
MAX_CONTENT = 2000

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_MESSAGE_CONTENT = 1 << 15
EVENT_INTENTS: dict[str, int] = {
    "GUILD_CREATE": INTENT_GUILDS,
    "THREAD_CREATE": INTENT_GUILDS,
    "CHANNEL_CREATE": INTENT_GUILDS,
    "GUILD_MEMBER_ADD": INTENT_GUILD_MEMBERS,
    "MESSAGE_CREATE": INTENT_GUILD_MESSAGES,
    "MESSAGE_UPDATE": INTENT_GUILD_MESSAGES,
    "MESSAGE_DELETE": INTENT_GUILD_MESSAGES,
    "MESSAGE_DELETE_BULK": INTENT_GUILD_MESSAGES,
    "MESSAGE_REACTION_ADD": INTENT_GUILD_MESSAGE_REACTIONS,
    "MESSAGE_REACTION_REMOVE": INTENT_GUILD_MESSAGE_REACTIONS,
}

# Permission bits the emulator hands out.
PERM_MANAGE_GUILD = 1 << 5
PERM_MANAGE_MESSAGES = 1 << 13
EVERYONE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 6) | (1 << 38)  # view, send, …
ALL_PERMISSIONS = (1 << 50) - 1
EPHEMERAL_FLAG = 1 << 6


class ChannelKind(IntEnum):
    TEXT = 0
    PUBLIC_THREAD = 11
    FORUM = 15


class GatewayOp(IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    RESUME = 6
    RECONNECT = 7
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def json_body(
    obj: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response with ``Content-Type: application/json`` exactly.

    aiohttp's ``json_response`` adds ``; charset=utf-8`` and discord.py then hands the
    caller a string instead of parsed JSON.
    """
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(body=_dumps(obj).encode(), status=status, headers=hdrs)


def discord_error(status: int, code: int, message: str) -> web.Response:
    return json_body({"message": message, "code": code}, status=status)


@dataclass
class Fault:
    """An injected failure: the next ``times`` matching requests get ``status`` (or lag)."""

    method: str
    path: re.Pattern[str]
    status: int | None
    times: int
    retry_after: float = 0.05
    is_global: bool = False
    delay: float = 0.0
    via: bool = True


@dataclass
class Member:
    user: JSON
    guild_id: int
    permissions: int
    role_ids: list[int]
    joined_at: str

    @property
    def id(self) -> int:
        return int(self.user["id"])

    def payload(self, with_user: bool = True) -> JSON:
        p: JSON = {
            "roles": [str(r) for r in self.role_ids],
            "joined_at": self.joined_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if with_user:
            p["user"] = self.user
        return p


@dataclass
class Channel:
    id: int
    guild_id: int
    name: str
    kind: ChannelKind
    position: int = 0
    parent_id: int | None = None
    owner_id: int | None = None
    messages: dict[int, JSON] = field(default_factory=dict)  # insertion order == id order

    @property
    def is_thread(self) -> bool:
        return self.kind == ChannelKind.PUBLIC_THREAD

    def payload(self) -> JSON:
        last = next(reversed(self.messages), None) if self.messages else None
        p: JSON = {
            "id": str(self.id),
            "type": int(self.kind),
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "topic": None,
            "last_message_id": str(last) if last else None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        if self.kind == ChannelKind.FORUM:
            p.update(
                available_tags=[],
                default_reaction_emoji=None,
                default_thread_rate_limit_per_user=0,
                default_sort_order=None,
                default_forum_layout=0,
            )
        if self.is_thread:
            p.update(
                owner_id=str(self.owner_id or 0),
                message_count=len(self.messages),
                total_message_sent=len(self.messages),
                member_count=1,
                applied_tags=[],
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": _now_iso(),
                    "locked": False,
                },
            )
        return p


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: list[JSON]
    channel_ids: list[int] = field(default_factory=list)
    member_ids: list[int] = field(default_factory=list)


@dataclass
class InteractionRecord:
    """One interaction the emulator sent, and how the bot answered it."""

    id: int
    token: str
    guild_id: int
    channel_id: int
    callback: JSON | None = None
    original: JSON | None = None
    followups: list[JSON] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return self.callback is not None

    @property
    def deferred(self) -> bool:
        return self.callback is not None and self.callback.get("type") == 5

    @property
    def ephemeral(self) -> bool:
        data = (self.callback or {}).get("data") or {}
        return bool(int(data.get("flags") or 0) & EPHEMERAL_FLAG)

    def reply_text(self) -> str | None:
        """The first visible answer: an immediate message, the edited original or a followup."""
        if self.callback and self.callback.get("type") == 4:
            return str((self.callback.get("data") or {}).get("content") or "")
        if self.original is not None and self.original.get("content"):
            return str(self.original["content"])
        if self.followups:
            return str(self.followups[0].get("content") or "")
        return None


@dataclass
class _Session:
    id: str
    intents: int
    seq: int = 0
    conn: _Conn | None = None
    backlog: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=100_000))


class _Conn:
    """One websocket: a queue drained by a writer task keeps every frame in order."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.session: _Session | None = None
        self.closed = asyncio.Event()

    def send(self, frame: str) -> None:
        self.queue.put_nowait(frame)

    async def writer(self) -> None:
        try:
            while (frame := await self.queue.get()) is not None:
                if self.ws.closed:
                    return
                await self.ws.send_str(frame)
        except ConnectionResetError:
            logger.debug("gateway peer went away while writing")


class DiscordEmulator:
    """A Discord server on loopback for one bot application.

    ``port=0`` picks a free port; :attr:`api_base` and :attr:`gateway_url` are valid after
    :meth:`start` (or entering ``async with``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "emulator-bot-token",
        bot_name: str = "Rapport",
        heartbeat_interval_ms: int = 41_250,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._last_snowflake = 0
        self.application_id = self.snowflake()
        self.bot_user: JSON = self._user_payload(self.snowflake(), bot_name, bot=True)
        self.bot_user_id = int(self.bot_user["id"])
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.members: dict[tuple[int, int], Member] = {}
        self.users: dict[int, JSON] = {self.bot_user_id: self.bot_user}
        self.message_channel: dict[int, int] = {}
        self.reactions: dict[int, dict[str, set[int]]] = {}
        self.commands: dict[int | None, list[JSON]] = {}  # guild id (None = global) → commands
        self.interactions: dict[int, InteractionRecord] = {}
        self._nonces: dict[tuple[int, str], JSON] = {}
        self.bot_posts: list[JSON] = []  # {"channel_id", "message", "request"}
        self.requests: list[tuple[str, str, int]] = []  # method, path, status
        self.faults: list[Fault] = []
        self.history_hidden: set[int] = set()
        """Channels whose history the bot may not read: like Discord without Read Message
        History, they answer with an empty list, not an error."""
        self.latency: float = 0.0
        self.identify_count = 0
        self.resume_count = 0
        self.ready_count = 0
        self._sessions: dict[str, _Session] = {}
        self._conns: set[_Conn] = set()
        self._identify_open = asyncio.Event()
        self._identify_open.set()
        self._changed = asyncio.Event()
        self._prepared: list[tuple[int, str]] = []
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the real port when port=0
        logger.info("discord emulator on %s", self.base_url)

    async def stop(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` must be set to."""
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """What ``DiscordWebSocket.DEFAULT_GATEWAY`` must be set to (as a ``yarl.URL``)."""
        return f"ws://{self.host}:{self.port}/gateway/"

    # -- ids, payloads -----------------------------------------------------------------
    def snowflake(self) -> int:
        """A fresh id, strictly increasing and carrying the current time like Discord's."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        self._last_snowflake = max(self._last_snowflake + 1, ms << 22)
        return self._last_snowflake

    @staticmethod
    def _user_payload(uid: int, name: str, *, bot: bool = False) -> JSON:
        return {
            "id": str(uid),
            "username": name,
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }

    def _guild_payload(self, g: Guild) -> JSON:
        threads = [self.channels[c] for c in g.channel_ids if self.channels[c].is_thread]
        return {
            "id": str(g.id),
            "name": g.name,
            "icon": None,
            "owner_id": str(g.owner_id),
            "unavailable": False,
            "member_count": len(g.member_ids),  # must equal len(members) or the client chunks
            "large": False,
            "roles": g.roles,
            "channels": [
                self.channels[c].payload() for c in g.channel_ids if not self.channels[c].is_thread
            ],
            "threads": [t.payload() for t in threads],
            "members": [self.members[(g.id, m)].payload() for m in g.member_ids],
            "emojis": [],
            "stickers": [],
            "features": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
            "afk_timeout": 300,
            "joined_at": _now_iso(),
        }

    def _message_payload(
        self,
        *,
        mid: int,
        channel: Channel,
        author: JSON,
        content: str,
        reply_to: int | None = None,
        member: Member | None = None,
    ) -> JSON:
        msg: JSON = {
            "id": str(mid),
            "channel_id": str(channel.id),
            "guild_id": str(channel.guild_id),
            "author": author,
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if member is not None:
            msg["member"] = member.payload(with_user=False)
        if reply_to is not None:
            ref_channel = self.message_channel.get(reply_to, channel.id)
            msg["type"] = 19
            msg["message_reference"] = {
                "type": 0,
                "message_id": str(reply_to),
                "channel_id": str(ref_channel),
                "guild_id": str(channel.guild_id),
            }
            ref = self.channels[ref_channel].messages.get(reply_to)
            msg["referenced_message"] = dict(ref) if ref else None
        return msg

    def _store(self, channel: Channel, msg: JSON) -> int:
        mid = int(msg["id"])
        channel.messages[mid] = msg
        self.message_channel[mid] = channel.id
        return mid

    # -- control API: community --------------------------------------------------------
    def create_guild(self, name: str = "Rapport Community") -> int:
        """A guild the bot is in; announced with GUILD_CREATE if the bot is connected."""
        gid = self.snowflake()
        everyone = {
            "id": str(gid),
            "name": "@everyone",
            "permissions": str(EVERYONE_PERMISSIONS),
            "position": 0,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        owner = self.snowflake()
        g = Guild(id=gid, name=name, owner_id=owner, roles=[everyone])
        self.guilds[gid] = g
        bot_role = self._role(g, "Rapport", ALL_PERMISSIONS - (1 << 3))
        self._add_member_to(g, self.bot_user, ALL_PERMISSIONS, [bot_role])
        if self._sessions:
            self.dispatch("GUILD_CREATE", self._guild_payload(g))
        return gid

    def _role(self, g: Guild, name: str, permissions: int) -> int:
        rid = self.snowflake()
        role = dict(g.roles[0])
        role.update(id=str(rid), name=name, permissions=str(permissions), position=len(g.roles))
        g.roles.append(role)
        return rid

    def _add_member_to(self, g: Guild, user: JSON, permissions: int, roles: list[int]) -> Member:
        m = Member(
            user=user, guild_id=g.id, permissions=permissions, role_ids=roles, joined_at=_now_iso()
        )
        self.members[(g.id, m.id)] = m
        self.users[m.id] = user
        g.member_ids.append(m.id)
        return m

    def create_channel(self, guild_id: int, name: str, kind: ChannelKind = ChannelKind.TEXT) -> int:
        g = self.guilds[guild_id]
        ch = Channel(id=self.snowflake(), guild_id=guild_id, name=name, kind=kind)
        ch.position = len(g.channel_ids)
        self.channels[ch.id] = ch
        g.channel_ids.append(ch.id)
        if self._sessions:
            self.dispatch("CHANNEL_CREATE", ch.payload())
        return ch.id

    def add_member(
        self, guild_id: int, name: str, *, permissions: int = 0, bot: bool = False
    ) -> int:
        """A member present from the start (no GUILD_MEMBER_ADD). Returns the user id."""
        g = self.guilds[guild_id]
        user = self._user_payload(self.snowflake(), name, bot=bot)
        roles = [self._role(g, f"{name}-perms", permissions)] if permissions else []
        return self._add_member_to(g, user, permissions, roles).id

    def member_join(self, guild_id: int, name: str, *, permissions: int = 0) -> int:
        """A member joins now: stored and dispatched as GUILD_MEMBER_ADD."""
        uid = self.add_member(guild_id, name, permissions=permissions)
        m = self.members[(guild_id, uid)]
        self.dispatch("GUILD_MEMBER_ADD", {**m.payload(), "guild_id": str(guild_id)})
        return uid

    def _member_of(self, user_id: int, channel: Channel) -> Member:
        return self.members[(channel.guild_id, user_id)]

    def create_thread(
        self, channel_id: int, name: str, *, owner_id: int, from_message: int | None = None
    ) -> int:
        """A public thread under ``channel_id``; from a message it shares that id, as on Discord."""
        parent = self.channels[channel_id]
        tid = from_message if from_message is not None else self.snowflake()
        th = Channel(
            id=tid,
            guild_id=parent.guild_id,
            name=name,
            kind=ChannelKind.PUBLIC_THREAD,
            parent_id=parent.id,
            owner_id=owner_id,
        )
        self.channels[tid] = th
        self.guilds[parent.guild_id].channel_ids.append(tid)
        self.dispatch("THREAD_CREATE", {**th.payload(), "newly_created": True})
        return tid

    def create_forum_post(
        self, member_id: int, forum_id: int, title: str, text: str
    ) -> tuple[int, int]:
        """A forum post: a thread whose starter message has the thread's id."""
        tid = self.create_thread(forum_id, title, owner_id=member_id)
        th = self.channels[tid]
        member = self._member_of(member_id, th)
        msg = self._message_payload(
            mid=tid, channel=th, author=member.user, content=text, member=member
        )
        self._store(th, msg)
        self.dispatch("MESSAGE_CREATE", msg)
        self._notify()
        return tid, tid

    # -- control API: members speak ----------------------------------------------------
    def say(self, member_id: int, channel_id: int, text: str, reply_to: int | None = None) -> int:
        """A member posts; stored in history and dispatched. Returns the message id."""
        ch = self.channels[channel_id]
        member = self._member_of(member_id, ch)
        msg = self._message_payload(
            mid=self.snowflake(),
            channel=ch,
            author=member.user,
            content=text,
            reply_to=reply_to,
            member=member,
        )
        mid = self._store(ch, msg)
        self.dispatch("MESSAGE_CREATE", msg)
        self._notify()
        return mid

    def message(self, message_id: int) -> JSON:
        return self.channels[self.message_channel[message_id]].messages[message_id]

    def edit(self, message_id: int, text: str) -> None:
        msg = self.message(message_id)
        msg["content"] = text
        msg["edited_timestamp"] = _now_iso()
        self.dispatch("MESSAGE_UPDATE", msg)
        self._notify()

    def update_without_edit(self, message_id: int, **fields: object) -> None:
        """A MESSAGE_UPDATE that is not an edit: a pin, an embed resolved. Discord sends
        the whole message again, ``edited_timestamp`` unchanged (set if it was edited)."""
        msg = self.message(message_id)
        msg.update(fields)
        self.dispatch("MESSAGE_UPDATE", msg)
        self._notify()

    def delete(self, message_id: int) -> None:
        ch = self.channels[self.message_channel.pop(message_id)]
        ch.messages.pop(message_id)
        self.dispatch(
            "MESSAGE_DELETE",
            {"id": str(message_id), "channel_id": str(ch.id), "guild_id": str(ch.guild_id)},
        )
        self._notify()

    def delete_bulk(self, channel_id: int, message_ids: Iterable[int]) -> None:
        ch = self.channels[channel_id]
        ids = [m for m in message_ids if ch.messages.pop(m, None) is not None]
        for m in ids:
            self.message_channel.pop(m, None)
        self.dispatch(
            "MESSAGE_DELETE_BULK",
            {"ids": [str(m) for m in ids], "channel_id": str(ch.id), "guild_id": str(ch.guild_id)},
        )
        self._notify()

    def react(self, member_id: int, message_id: int, emoji: str, *, remove: bool = False) -> None:
        ch = self.channels[self.message_channel[message_id]]
        users = self.reactions.setdefault(message_id, {}).setdefault(emoji, set())
        (users.discard if remove else users.add)(member_id)
        payload: JSON = {
            "user_id": str(member_id),
            "channel_id": str(ch.id),
            "message_id": str(message_id),
            "guild_id": str(ch.guild_id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if not remove:
            payload["member"] = self._member_of(member_id, ch).payload()
            payload["message_author_id"] = self.message(message_id)["author"]["id"]
        self.dispatch("MESSAGE_REACTION_REMOVE" if remove else "MESSAGE_REACTION_ADD", payload)
        self._notify()

    # -- control API: interactions -----------------------------------------------------
    def _find_command(self, guild_id: int, name: str, ctype: int) -> tuple[JSON, bool]:
        for scope in (guild_id, None):
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name and int(cmd.get("type", 1)) == ctype:
                    return cmd, scope is not None
        raise LookupError(f"command {name!r} (type {ctype}) is not registered")

    def _interaction(self, member_id: int, channel_id: int, data: JSON) -> InteractionRecord:
        ch = self.channels[channel_id]
        member = self._member_of(member_id, ch)
        rec = InteractionRecord(
            id=self.snowflake(),
            token=secrets.token_urlsafe(24),
            guild_id=ch.guild_id,
            channel_id=ch.id,
        )
        self.interactions[rec.id] = rec
        perms = EVERYONE_PERMISSIONS | member.permissions
        payload: JSON = {
            "id": str(rec.id),
            "application_id": str(self.application_id),
            "type": 2,
            "token": rec.token,
            "version": 1,
            "guild_id": str(ch.guild_id),
            "channel_id": str(ch.id),
            "channel": ch.payload(),
            "member": {**member.payload(), "permissions": str(perms)},
            "app_permissions": str(ALL_PERMISSIONS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(ch.guild_id)},
            "context": 0,
            "attachment_size_limit": 8_388_608,
            "data": data,
        }
        self.dispatch("INTERACTION_CREATE", payload)
        return rec

    def _default_channel(self, member_id: int) -> int:
        for g in self.guilds.values():
            if member_id in g.member_ids:
                for cid in g.channel_ids:
                    if self.channels[cid].kind == ChannelKind.TEXT:
                        return cid
        raise LookupError(f"member {member_id} has no text channel")

    def invoke_slash(
        self,
        member_id: int,
        name: str,
        sub: str | None = None,
        *,
        channel_id: int | None = None,
        options: list[JSON] | None = None,
    ) -> InteractionRecord:
        """A member runs ``/name [sub]``; the command must have been registered by the bot.

        Like a member with a stale client (or a permission overwrite), the emulator lets
        anyone invoke it, so the bot's own permission check can be tested.
        """
        cid = channel_id if channel_id is not None else self._default_channel(member_id)
        gid = self.channels[cid].guild_id
        cmd, guild_scoped = self._find_command(gid, name, 1)
        opts = options or []
        if sub is not None:
            opts = [{"type": 1, "name": sub, "options": opts}]
        data: JSON = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if guild_scoped:
            data["guild_id"] = str(gid)
        return self._interaction(member_id, cid, data)

    def invoke_message_command(
        self, member_id: int, name: str, message_id: int
    ) -> InteractionRecord:
        """A member picks an app's message context-menu entry on ``message_id``."""
        cid = self.message_channel[message_id]
        gid = self.channels[cid].guild_id
        cmd, guild_scoped = self._find_command(gid, name, 3)
        msg = self.message(message_id)
        data: JSON = {
            "id": cmd["id"],
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): msg}},
        }
        if guild_scoped:
            data["guild_id"] = str(gid)
        return self._interaction(member_id, cid, data)

    # -- control API: gateway trouble --------------------------------------------------
    def force_reconnect(self) -> None:
        """op 7: the client reconnects to ``resume_gateway_url`` and RESUMEs."""
        for conn in list(self._conns):
            conn.send(_dumps({"op": GatewayOp.RECONNECT, "d": None}))

    def force_invalid_session(self) -> None:
        """op 9 ``d:false``: the session is gone; events until the next READY are not sent."""
        self._sessions.clear()
        for conn in list(self._conns):
            if conn.session is not None:
                conn.session = None
                conn.send(_dumps({"op": GatewayOp.INVALID_SESSION, "d": False}))

    @contextlib.asynccontextmanager
    async def session_gap(self, timeout: float = 5.0) -> AsyncIterator[None]:  # noqa: ASYNC109
        """Invalidate the session and hold new IDENTIFYs until the block ends.

        Whatever members say inside the block is in the channel history but never
        dispatched: the deterministic version of "events in the gap are gone".
        """
        self._identify_open.clear()
        live = list(self._conns)
        self.force_invalid_session()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.closed.wait() for c in live)), timeout=timeout
            )
            yield
        finally:
            self._identify_open.set()

    def inject_fault(
        self,
        method: str,
        path: str,
        *,
        status: int | None = 429,
        times: int = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
        delay: float = 0.0,
        via: bool = True,
    ) -> Fault:
        """Fail the next ``times`` requests whose path (after ``/api/v10``) matches ``path``.

        ``status=429`` answers like Discord's rate limiter (with ``Via``, which discord.py
        needs to retry instead of assuming a Cloudflare ban); ``status=None`` only delays.
        """
        fault = Fault(
            method.upper(), re.compile(path), status, times, retry_after, is_global, delay, via
        )
        self.faults.append(fault)
        return fault

    # -- reading what the bot did ------------------------------------------------------
    def bot_messages(self, channel_id: int | None = None) -> list[JSON]:
        """Messages the bot posted: ``{"channel_id", "message", "request"}`` in order.

        ``request`` is the JSON body as sent (``message_reference``, ``allowed_mentions``).
        """
        return [p for p in self.bot_posts if channel_id is None or p["channel_id"] == channel_id]

    def connection_count(self) -> int:
        """Gateway connections open now."""
        return len(self._conns)

    def history(self, channel_id: int) -> list[JSON]:
        return list(self.channels[channel_id].messages.values())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait (bounded) until ``pred()`` holds; re-checked on every emulator state change."""
        async with asyncio.timeout(timeout):
            while not pred():
                await self._changed.wait()

    async def wait_for_bot_message(
        self,
        pred: Callable[[JSON], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> JSON:
        """The first bot post (``{"channel_id", "message", "request"}``) matching ``pred``."""
        found: list[JSON] = []

        def check() -> bool:
            found[:] = [p for p in self.bot_posts if pred is None or pred(p)]
            return bool(found)

        await self.wait_until(check, timeout)
        return found[0]

    async def wait_for_ready(self, count: int = 1, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until READY (and the guilds) has been sent ``count`` times in total."""
        await self.wait_until(lambda: self.ready_count >= count, timeout)

    async def wait_for_command(self, name: str, timeout: float = 5.0) -> JSON:  # noqa: ASYNC109
        def registered() -> bool:
            return any(c["name"] == name for cmds in self.commands.values() for c in cmds)

        await self.wait_until(registered, timeout)
        return next(c for cmds in self.commands.values() for c in cmds if c["name"] == name)

    async def wait_for_interaction_reply(self, rec: InteractionRecord, timeout: float = 5.0) -> str:  # noqa: ASYNC109
        await self.wait_until(lambda: rec.reply_text() is not None, timeout)
        return rec.reply_text() or ""

    # -- gateway -----------------------------------------------------------------------
    def dispatch(self, event: str, data: JSON) -> None:
        """Send a dispatch to every live session (buffered for one that is reconnecting)."""
        need = EVENT_INTENTS.get(event, 0)
        body = _dumps(data)
        blanked: str | None = None
        for sess in list(self._sessions.values()):
            if need and not sess.intents & need:
                continue
            payload = body
            if (
                event in ("MESSAGE_CREATE", "MESSAGE_UPDATE")
                and not sess.intents & INTENT_MESSAGE_CONTENT
                and data.get("author", {}).get("id") != str(self.bot_user_id)
            ):
                if blanked is None:
                    blanked = _dumps({**data, "content": "", "embeds": [], "attachments": []})
                payload = blanked
            self._send_dispatch(sess, event, payload)

    def _send_dispatch(self, sess: _Session, event: str, body: str) -> None:
        sess.seq += 1
        frame = f'{{"op":0,"s":{sess.seq},"t":"{event}","d":{body}}}'
        sess.backlog.append((sess.seq, frame))
        if sess.conn is not None:
            sess.conn.send(frame)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        # compress=False declines permessage-deflate; plain JSON text frames are fine for
        # discord.py, which only inflates binary (zlib-stream) frames.
        ws = web.WebSocketResponse(compress=False, max_msg_size=0)
        await ws.prepare(request)
        conn = _Conn(ws)
        self._conns.add(conn)
        writer = asyncio.create_task(conn.writer())
        conn.send(
            _dumps({"op": GatewayOp.HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        )
        try:
            async for raw in ws:
                if raw.type != WSMsgType.TEXT:
                    continue
                await self._on_client_frame(conn, json.loads(raw.data))
        finally:
            self._conns.discard(conn)
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None  # resumable: keeps buffering
                if ws.close_code in NORMAL_CLOSURES:
                    # Discord invalidates a session its client closed normally (as
                    # ``Client.close()`` does); kept, it would buffer every later event.
                    self._sessions.pop(conn.session.id, None)
            conn.queue.put_nowait(None)
            writer.cancel()
            conn.closed.set()
            self._notify()
        return ws

    async def _on_client_frame(self, conn: _Conn, msg: JSON) -> None:
        op = msg.get("op")
        if op == GatewayOp.HEARTBEAT:
            conn.send(_dumps({"op": GatewayOp.HEARTBEAT_ACK}))
        elif op == GatewayOp.IDENTIFY:
            await self._identify_open.wait()
            if msg["d"].get("token") != self.token:
                await conn.ws.close(code=4004, message=b"Authentication failed.")
                return
            self.identify_count += 1
            sess = _Session(id=secrets.token_hex(16), intents=int(msg["d"].get("intents", 0)))
            self._sessions[sess.id] = sess
            sess.conn = conn
            conn.session = sess
            ready: JSON = {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
                "session_id": sess.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "shard": [0, 1],
            }
            self._send_dispatch(sess, "READY", _dumps(ready))
            if sess.intents & INTENT_GUILDS:
                for g in self.guilds.values():
                    self._send_dispatch(sess, "GUILD_CREATE", _dumps(self._guild_payload(g)))
            self.ready_count += 1
            self._notify()
        elif op == GatewayOp.RESUME:
            d = msg["d"]
            resumed = self._sessions.get(d.get("session_id", ""))
            if resumed is None or d.get("token") != self.token:
                conn.send(_dumps({"op": GatewayOp.INVALID_SESSION, "d": False}))
                return
            self.resume_count += 1
            resumed.conn = conn
            conn.session = resumed
            since = int(d.get("seq") or 0)
            for seq, frame in list(resumed.backlog):
                if seq > since:
                    conn.send(frame)
            self._send_dispatch(resumed, "RESUMED", "{}")
            self._notify()

    # -- REST --------------------------------------------------------------------------
    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith(API_PREFIX):
            sub = path[len(API_PREFIX) :]
            if self.latency:
                await asyncio.sleep(self.latency)
            for fault in self.faults:
                if fault.times > 0 and fault.method == request.method and fault.path.search(sub):
                    fault.times -= 1
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    if fault.status is not None:
                        self.requests.append((request.method, sub, fault.status))
                        self._notify()
                        return self._fault_response(fault)
                    break
            public = sub.startswith(("/interactions/", "/webhooks/", "/gateway"))
            if not public and request.headers.get("Authorization") != f"Bot {self.token}":
                return discord_error(401, 0, "401: Unauthorized")
        resp: web.StreamResponse = await handler(request)
        if path.startswith(API_PREFIX):
            self.requests.append((request.method, path[len(API_PREFIX) :], resp.status))
            self._notify()
        return resp

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        if fault.status == 429:
            headers = {
                "Retry-After": str(max(1, int(fault.retry_after + 0.999))),
                "X-RateLimit-Scope": "global" if fault.is_global else "user",
            }
            if fault.via:
                headers["Via"] = "1.1 google"
            body = {
                "message": "You are being rate limited.",
                "retry_after": fault.retry_after,
                "global": fault.is_global,
            }
            return json_body(body, status=429, headers=headers)
        assert fault.status is not None
        return discord_error(fault.status, 0, f"{fault.status}: injected failure")

    def _add_routes(self, app: web.Application) -> None:
        p = API_PREFIX
        r = app.router
        r.add_get("/gateway/", self._gateway)
        r.add_get("/gateway", self._gateway)
        r.add_get(f"{p}/users/@me", self._me)
        r.add_get(f"{p}/oauth2/applications/@me", self._application)
        r.add_get(f"{p}/gateway", self._gateway_info)
        r.add_get(f"{p}/gateway/bot", self._gateway_info)
        r.add_get(f"{p}/channels/{{cid}}", self._get_channel)
        r.add_post(f"{p}/channels/{{cid}}/messages", self._create_message)
        r.add_get(f"{p}/channels/{{cid}}/messages", self._history)
        r.add_get(f"{p}/channels/{{cid}}/messages/{{mid}}", self._get_message)
        r.add_patch(f"{p}/channels/{{cid}}/messages/{{mid}}", self._edit_message)
        r.add_delete(f"{p}/channels/{{cid}}/messages/{{mid}}", self._delete_message)
        r.add_put(
            f"{p}/channels/{{cid}}/messages/{{mid}}/reactions/{{emoji}}/@me", self._add_reaction
        )
        r.add_delete(
            f"{p}/channels/{{cid}}/messages/{{mid}}/reactions/{{emoji}}/@me", self._remove_reaction
        )
        r.add_post(f"{p}/channels/{{cid}}/messages/{{mid}}/threads", self._thread_from_message)
        r.add_post(f"{p}/channels/{{cid}}/threads", self._thread_without_message)
        r.add_post(f"{p}/channels/{{cid}}/typing", self._typing)
        r.add_put(f"{p}/applications/{{aid}}/commands", self._put_commands)
        r.add_get(f"{p}/applications/{{aid}}/commands", self._get_commands)
        r.add_put(f"{p}/applications/{{aid}}/guilds/{{gid}}/commands", self._put_commands)
        r.add_get(f"{p}/applications/{{aid}}/guilds/{{gid}}/commands", self._get_commands)
        r.add_post(f"{p}/interactions/{{iid}}/{{token}}/callback", self._interaction_callback)
        r.add_post(f"{p}/webhooks/{{aid}}/{{token}}", self._followup)
        r.add_patch(f"{p}/webhooks/{{aid}}/{{token}}/messages/{{mid}}", self._edit_webhook_message)
        r.add_get(f"{p}/webhooks/{{aid}}/{{token}}/messages/{{mid}}", self._get_webhook_message)
        r.add_post("/_emu/{verb}", self._control)

    async def _me(self, request: web.Request) -> web.Response:
        return json_body(self.bot_user)

    async def _application(self, request: web.Request) -> web.Response:
        return json_body(
            {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": self._user_payload(self._owner_id(), "owner"),
                "verify_key": "0" * 64,
                "flags": 0,
                "interactions_endpoint_url": None,  # non-null: discord.py warns no interactions
                "team": None,
                "summary": "",
                "rpc_origins": [],
            }
        )

    def _owner_id(self) -> int:
        return next((g.owner_id for g in self.guilds.values()), self.application_id)

    async def _gateway_info(self, request: web.Request) -> web.Response:
        return json_body(
            {
                "url": self.gateway_url.rstrip("/"),
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    def _channel_or_404(self, request: web.Request) -> Channel | web.Response:
        ch = self.channels.get(int(request.match_info["cid"]))
        return ch if ch is not None else discord_error(404, 10003, "Unknown Channel")

    async def _get_channel(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        return ch if isinstance(ch, web.Response) else json_body(ch.payload())

    async def _create_message(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        if isinstance(ch, web.Response):
            return ch
        body = await request.json()
        content = str(body.get("content") or "")
        if len(content) > MAX_CONTENT:
            return discord_error(
                400, 50035, f"Invalid Form Body: content must be {MAX_CONTENT} or fewer in length."
            )
        reply_to: int | None = None
        ref = body.get("message_reference")
        if ref:
            target = int(ref["message_id"])  # may arrive as a JSON integer
            if target in self.message_channel:
                reply_to = target
            elif ref.get("fail_if_not_exists", True):
                return discord_error(400, 50035, "Invalid Form Body: Unknown message")
        nonce = body.get("nonce")
        if body.get("enforce_nonce") and nonce is not None:
            earlier = self._nonces.get((ch.id, str(nonce)))
            if earlier is not None:  # Discord returns the first message, posts nothing
                return json_body(earlier)
        msg = self._message_payload(
            mid=self.snowflake(),
            channel=ch,
            author=self.bot_user,
            content=content,
            reply_to=reply_to,
        )
        if nonce is not None:
            msg["nonce"] = nonce
            self._nonces[(ch.id, str(nonce))] = msg
        self._store(ch, msg)
        self.bot_posts.append({"channel_id": ch.id, "message": msg, "request": body})
        self.dispatch("MESSAGE_CREATE", msg)  # Discord echoes the bot's own messages
        self._notify()
        return json_body(msg)

    async def _history(self, request: web.Request) -> web.Response:
        """Newest first, like Discord, also with ``after`` (discord.py relies on it)."""
        ch = self._channel_or_404(request)
        if isinstance(ch, web.Response):
            return ch
        if ch.id in self.history_hidden:
            return json_body([])
        q = request.query
        limit = max(1, min(100, int(q.get("limit", "50"))))
        ids = list(ch.messages)
        if "after" in q:
            after = int(q["after"])
            picked = [m for m in ids if m > after][:limit]
        elif "before" in q:
            before = int(q["before"])
            picked = [m for m in ids if m < before][-limit:]
        else:
            picked = ids[-limit:]
        return json_body([ch.messages[m] for m in reversed(picked)])

    async def _get_message(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        if isinstance(ch, web.Response):
            return ch
        msg = ch.messages.get(int(request.match_info["mid"]))
        return json_body(msg) if msg else discord_error(404, 10008, "Unknown Message")

    async def _edit_message(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        if isinstance(ch, web.Response):
            return ch
        msg = ch.messages.get(int(request.match_info["mid"]))
        if msg is None:
            return discord_error(404, 10008, "Unknown Message")
        if msg["author"]["id"] != str(self.bot_user_id):
            return discord_error(403, 50005, "Cannot edit a message authored by another user")
        body = await request.json()
        if "content" in body:
            msg["content"] = body["content"] or ""
        msg["edited_timestamp"] = _now_iso()
        self.dispatch("MESSAGE_UPDATE", msg)
        self._notify()
        return json_body(msg)

    async def _delete_message(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        if isinstance(ch, web.Response):
            return ch
        mid = int(request.match_info["mid"])
        if mid not in ch.messages:
            return discord_error(404, 10008, "Unknown Message")
        self.delete(mid)
        return web.Response(status=204)

    async def _add_reaction(self, request: web.Request) -> web.Response:
        return self._bot_reaction(request, remove=False)

    async def _remove_reaction(self, request: web.Request) -> web.Response:
        return self._bot_reaction(request, remove=True)

    def _bot_reaction(self, request: web.Request, *, remove: bool) -> web.Response:
        ch = self._channel_or_404(request)
        if isinstance(ch, web.Response):
            return ch
        mid = int(request.match_info["mid"])
        if mid not in ch.messages:
            return discord_error(404, 10008, "Unknown Message")
        self.react(self.bot_user_id, mid, unquote(request.match_info["emoji"]), remove=remove)
        return web.Response(status=204)

    async def _thread_from_message(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        if isinstance(ch, web.Response):
            return ch
        mid = int(request.match_info["mid"])
        if mid not in ch.messages:
            return discord_error(404, 10008, "Unknown Message")
        if mid in self.channels:
            return discord_error(400, 160004, "A thread has already been created for this message")
        body = await request.json()
        tid = self.create_thread(
            ch.id, str(body.get("name") or "thread"), owner_id=self.bot_user_id, from_message=mid
        )
        return json_body(self.channels[tid].payload(), status=201)

    async def _thread_without_message(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        if isinstance(ch, web.Response):
            return ch
        body = await request.json()
        name = str(body.get("name") or "thread")
        if ch.kind == ChannelKind.FORUM:
            tid = self.create_thread(ch.id, name, owner_id=self.bot_user_id)
            th = self.channels[tid]
            content = str((body.get("message") or {}).get("content") or "")
            msg = self._message_payload(mid=tid, channel=th, author=self.bot_user, content=content)
            self._store(th, msg)
            self.bot_posts.append({"channel_id": tid, "message": msg, "request": body})
            self.dispatch("MESSAGE_CREATE", msg)
            self._notify()
            return json_body({**th.payload(), "message": msg}, status=201)
        tid = self.create_thread(ch.id, name, owner_id=self.bot_user_id)
        return json_body(self.channels[tid].payload(), status=201)

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _put_commands(self, request: web.Request) -> web.Response:
        gid = int(request.match_info["gid"]) if "gid" in request.match_info else None
        body = await request.json()
        out = []
        for cmd in body:
            stored = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **cmd,
                "id": str(self.snowflake()),
                "application_id": str(self.application_id),
                "version": str(self.snowflake()),
            }
            if stored["default_member_permissions"] is not None:  # Discord answers a string
                stored["default_member_permissions"] = str(stored["default_member_permissions"])
            if gid is not None:
                stored["guild_id"] = str(gid)
            out.append(stored)
        self.commands[gid] = out
        self._notify()
        return json_body(out)

    async def _get_commands(self, request: web.Request) -> web.Response:
        gid = int(request.match_info["gid"]) if "gid" in request.match_info else None
        return json_body(self.commands.get(gid, []))

    def _interaction_message(self, rec: InteractionRecord, data: JSON, *, loading: bool) -> JSON:
        ch = self.channels[rec.channel_id]
        msg = self._message_payload(
            mid=self.snowflake(),
            channel=ch,
            author=self.bot_user,
            content=str(data.get("content") or ""),
        )
        msg["type"] = 20  # chat input command
        msg["flags"] = int(data.get("flags") or 0) | (1 << 7 if loading else 0)
        msg["webhook_id"] = str(self.application_id)
        msg["application_id"] = str(self.application_id)
        return msg

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        """Acknowledge an interaction.

        discord.py 2.7 sends ``?with_response=1`` and needs this JSON body back; a bare 204
        delivers the reply and then raises inside ``send_message``.
        """
        rec = self.interactions.get(int(request.match_info["iid"]))
        if rec is None or rec.token != request.match_info["token"]:
            return discord_error(404, 10062, "Unknown interaction")
        if rec.callback is not None:
            return discord_error(400, 40060, "Interaction has already been acknowledged.")
        body = await request.json()
        rec.callback = body
        rtype = int(body.get("type", 0))
        data = body.get("data") or {}
        if rtype in (4, 5):
            msg = self._interaction_message(rec, data, loading=rtype == 5)
            rec.original = msg
        else:
            msg = None
        self._notify()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        return json_body(
            {
                "interaction": {
                    "id": str(rec.id),
                    "type": 2,
                    "activity_instance_id": None,
                    "response_message_id": msg["id"] if msg else None,
                    "response_message_loading": rtype == 5,
                    "response_message_ephemeral": bool(
                        int(data.get("flags") or 0) & EPHEMERAL_FLAG
                    ),
                },
                "resource": {"type": rtype, "message": msg} if msg else None,
            }
        )

    def _record_for_token(self, token: str) -> InteractionRecord | None:
        return next((r for r in self.interactions.values() if r.token == token), None)

    async def _followup(self, request: web.Request) -> web.Response:
        rec = self._record_for_token(request.match_info["token"])
        if rec is None:
            return discord_error(404, 10015, "Unknown Webhook")
        body = await request.json()
        msg = self._interaction_message(rec, body, loading=False)
        rec.followups.append(msg)
        self._notify()
        return json_body(msg)

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        rec = self._record_for_token(request.match_info["token"])
        if rec is None:
            return discord_error(404, 10015, "Unknown Webhook")
        body = await request.json()
        if request.match_info["mid"] == "@original":
            base = rec.original or self._interaction_message(rec, {}, loading=False)
            rec.original = {
                **base,
                "content": body.get("content") or "",
                "flags": base["flags"] & ~(1 << 7),
            }
            self._notify()
            return json_body(rec.original)
        for f in rec.followups:
            if f["id"] == request.match_info["mid"]:
                f["content"] = body.get("content") or ""
                self._notify()
                return json_body(f)
        return discord_error(404, 10008, "Unknown Message")

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        rec = self._record_for_token(request.match_info["token"])
        if rec is None or rec.original is None:
            return discord_error(404, 10008, "Unknown Message")
        return json_body(rec.original)

    # -- out-of-process control (standalone mode) -------------------------------------
    def prepare_burst(
        self, channel_id: int, member_ids: list[int], count: int, texts: list[str]
    ) -> list[int]:
        """Store ``count`` messages now and prebuild their frames for :meth:`fire_burst`.

        Authors and texts cycle through the lists. Building payloads ahead keeps the
        emulator from being the bottleneck when a benchmark measures the client.
        """
        ch = self.channels[channel_id]
        members = [self._member_of(m, ch) for m in member_ids]
        ids: list[int] = []
        for i in range(count):
            member = members[i % len(members)]
            msg = self._message_payload(
                mid=self.snowflake(),
                channel=ch,
                author=member.user,
                content=texts[i % len(texts)],
                member=member,
            )
            mid = self._store(ch, msg)
            self._prepared.append((mid, _dumps(msg)))
            ids.append(mid)
        return ids

    def fire_burst(self) -> int:
        """Dispatch every prepared MESSAGE_CREATE back to back; returns how many."""
        prepared, self._prepared = self._prepared, []
        for sess in list(self._sessions.values()):
            for _, body in prepared:
                self._send_dispatch(sess, "MESSAGE_CREATE", body)
        return len(prepared)

    async def _control(self, request: web.Request) -> web.Response:
        verb = request.match_info["verb"]
        body = await request.json() if request.can_read_body else {}
        if verb == "prepare":
            ids = self.prepare_burst(
                int(body["channel_id"]),
                [int(m) for m in body["member_ids"]],
                int(body["count"]),
                [str(t) for t in body.get("texts") or ["hello"]],
            )
            return json_body({"ids": [str(i) for i in ids]})
        if verb == "fire":
            return json_body({"sent": self.fire_burst()})
        if verb == "wait_ready":
            await self.wait_for_ready(int(body.get("count", 1)), float(body.get("timeout", 10)))
            return json_body({"ready_count": self.ready_count})
        if verb == "say":
            mid = self.say(int(body["member_id"]), int(body["channel_id"]), str(body["text"]))
            return json_body({"id": str(mid)})
        if verb == "state":
            return json_body(
                {
                    "ready_count": self.ready_count,
                    "identify_count": self.identify_count,
                    "resume_count": self.resume_count,
                    "bot_posts": len(self.bot_posts),
                }
            )
        return discord_error(404, 0, f"unknown control verb {verb}")

    def seed(self) -> JSON:
        """A default community: one guild, #general, #support, two members, one manager."""
        gid = self.create_guild("Rapport Sandbox")
        general = self.create_channel(gid, "general")
        support = self.create_channel(gid, "support")
        alice = self.add_member(gid, "alice")
        bob = self.add_member(gid, "bob")
        manager = self.add_member(gid, "mod", permissions=PERM_MANAGE_GUILD | PERM_MANAGE_MESSAGES)
        return {
            "guild_id": str(gid),
            "channels": {"general": str(general), "support": str(support)},
            "members": {"alice": str(alice), "bob": str(bob), "mod": str(manager)},
        }


async def _serve(args: argparse.Namespace) -> None:
    emu = DiscordEmulator(host=args.host, port=args.port, token=args.token)
    async with emu:
        info: JSON = {"api_base": emu.api_base, "gateway_url": emu.gateway_url, "token": emu.token}
        if args.seed:
            info.update(emu.seed())
        print(_dumps(info), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Run the emulator alone; prints one JSON line with its addresses (and seed ids)."""
    parser = argparse.ArgumentParser(description="Local Discord emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="emulator-bot-token")
    parser.add_argument("--seed", action="store_true", help="create a default guild and members")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
