"""A local Slack that speaks the real protocols on loopback, for tests and ``rapport demo``.

No real workspace is reachable from CI, so the real slack-bolt and slack-sdk code runs
against this instead: the Web API methods the bot calls (``/api/<method>``, JSON or form
bodies, Bearer auth, Slack's ``ok: false`` errors and 429s on demand), a Socket Mode
websocket, and a *driver* that plays Slack's side towards the app: correctly signed
Events API callbacks (and their retries), ``block_actions`` with the message the button
sits on, modal submissions, slash commands and message shortcuts.

Everything the app sends is recorded and the channel state (messages by ``ts``, threads,
card updates) is kept, so a test can read "the card as it looks now". Waiting is always
bounded and event-driven (:meth:`SlackEmulator.wait_for`), never a sleep.

    async with SlackEmulator(signing_secret="s", bot_token="xoxb-1") as emu:
        client = AsyncWebClient(token="xoxb-1", base_url=emu.api_base)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
Handler = Callable[[JSON], JSON]


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One Web API call the app made (after auth), with its merged parameters."""

    method: str
    body: JSON
    at: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the app answered to one thing the driver sent.

    For HTTP: the status and body. For Socket Mode: ``status`` 200 when acked (0 when
    no ack came within the bound) and ``body`` the ack's ``payload`` as JSON text.
    """

    status: int
    body: str
    event_id: str | None = None
    envelope_id: str | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(slots=True)
class Channel:
    id: str
    name: str
    is_private: bool = False
    is_im: bool = False
    messages: dict[str, JSON] = field(default_factory=dict)  # ts -> message, insertion order


@dataclass(slots=True)
class _Fault:
    error: str
    times: int
    status: int = 200
    retry_after: int = 0


def slack_escape(text: str) -> str:
    """What Slack does to what a member types: ``&``, ``<`` and ``>`` become ``&amp;``,
    ``&lt;`` and ``&gt;`` in the message ``text`` of events and history (``&`` first)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _parse_json_fields(data: Mapping[str, str]) -> JSON:
    """Form bodies carry ``blocks``/``attachments``/``files`` as JSON strings: decode them."""
    out: JSON = dict(data)
    for key in ("blocks", "attachments", "files", "view", "metadata"):
        value = out.get(key)
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(ValueError):
                out[key] = json.loads(value)
    return out


class SlackEmulator:
    """An in-process Slack workspace: Web API + Socket Mode server + request driver."""

    def __init__(
        self,
        *,
        signing_secret: str,
        bot_token: str,
        app_token: str = "xapp-1-emulator",
        team_id: str = "T0RAPPORT",
        team_name: str = "Rapport Sandbox",
        bot_user_id: str = "U0RAPPORTBOT",
        bot_id: str = "B0RAPPORT",
        app_id: str = "A0RAPPORT",
        app_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        #: Where the driver posts HTTP-mode requests (the app's ``/slack/events``).
        self.app_url = app_url
        #: ``"socket"`` sends driver traffic over the Socket Mode connection instead.
        self.delivery: Literal["http", "socket"] = "http"
        self._host = host
        self._port = port

        self.calls: list[ApiCall] = []
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, JSON] = {}
        self.views: dict[str, JSON] = {}
        self.ephemerals: list[JSON] = []
        self.responses: list[JSON] = []  # bodies posted to response_url
        self.card_updates: list[JSON] = []  # every chat.update applied
        self.deliveries: list[Delivery] = []
        self.socket_acks: list[JSON] = []
        self.envelopes: list[JSON] = []  # every Socket Mode envelope sent to the app
        self.files: dict[str, JSON] = {}

        self._faults: dict[str, list[_Fault]] = {}
        self._triggers: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._last_ts = 0.0
        self._changed = asyncio.Condition()
        self._handlers: dict[str, Handler] = self._build_handlers()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: web.WebSocketResponse | None = None
        self._ws_tickets: set[str] = set()
        self._pending_acks: dict[str, asyncio.Future[JSON]] = {}
        self.base_url = ""

        self.add_user(bot_user_id, "rapport", is_bot=True)

    # -- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> SlackEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on loopback (port 0 picks a free port) and open the driver's session."""
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/respond/{token}", self._respond)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1]
        self.base_url = f"http://{self._host}:{port}"
        self._session = aiohttp.ClientSession()
        logger.info("Slack emulator listening on %s", self.base_url)

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        """The ``base_url`` for ``AsyncWebClient`` (ends with ``/api/``)."""
        return f"{self.base_url}/api/"

    # -- workspace fixtures -----------------------------------------------------------
    def add_channel(self, channel_id: str, name: str, *, is_private: bool = False) -> Channel:
        ch = Channel(id=channel_id, name=name, is_private=is_private)
        self.channels[channel_id] = ch
        return ch

    def add_user(self, user_id: str, name: str, *, is_bot: bool = False) -> JSON:
        user: JSON = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": name.title(),
            "is_bot": is_bot,
            "deleted": False,
            "profile": {"display_name": name, "real_name": name.title()},
        }
        self.users[user_id] = user
        return user

    # -- faults on demand -------------------------------------------------------------
    def rate_limit(self, method: str, times: int = 1, retry_after: int = 0) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``Retry-After``."""
        self._faults.setdefault(method, []).append(
            _Fault("ratelimited", times, status=429, retry_after=retry_after)
        )

    def fail(self, method: str, error: str, times: int = 1, status: int = 200) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error"}``."""
        self._faults.setdefault(method, []).append(_Fault(error, times, status=status))

    # -- reading state ----------------------------------------------------------------
    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> JSON:
        return self.channels[channel].messages[ts]

    def messages(self, channel: str) -> list[JSON]:
        """Every message in the channel (top level and replies), oldest first."""
        return list(self.channels[channel].messages.values())

    def thread(self, channel: str, thread_ts: str) -> list[JSON]:
        return [
            m
            for m in self.channels[channel].messages.values()
            if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
        ]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded wait is the point of this API
    ) -> None:
        """Wait until ``predicate()`` holds, re-checked after every change; bounded."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- ids --------------------------------------------------------------------------
    def _next_ts(self) -> str:
        now = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = now
        return f"{now:.6f}"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def _trigger(self) -> str:
        trig = f"{next(self._ids)}.{secrets.token_hex(6)}"
        self._triggers[trig] = time.time()
        return trig

    # -- Web API ----------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: JSON = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    params.update(body)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                params.update(_parse_json_fields({k: str(v) for k, v in form.items()}))
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else str(params.pop("token", ""))
        params.pop("token", None)
        want = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        if not hmac.compare_digest(token, want):
            return web.json_response({"ok": False, "error": "invalid_auth"})

        self.calls.append(ApiCall(method, params, time.time()))
        faults = self._faults.get(method)
        if faults:
            fault = faults[0]
            fault.times -= 1
            if fault.times <= 0:
                faults.pop(0)
            await self._notify()
            headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
            return web.json_response(
                {"ok": False, "error": fault.error}, status=fault.status, headers=headers
            )
        handler = self._handlers.get(method)
        if handler is None:
            result: JSON = {"ok": False, "error": "unknown_method"}
        else:
            try:
                result = {"ok": True, **handler(params)}
            except _ApiError as exc:
                result = {"ok": False, "error": exc.error}
        await self._notify()
        return web.json_response(result)

    def _build_handlers(self) -> dict[str, Handler]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "reactions.add": self._reactions_add,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "apps.connections.open": self._apps_connections_open,
        }

    def _channel(self, params: JSON, key: str = "channel") -> Channel:
        cid = str(params.get(key) or "")
        if cid in self.channels:
            return self.channels[cid]
        if cid.startswith(("U", "W", "D")) and cid:
            return self.channels.setdefault(cid, Channel(id=cid, name=cid, is_im=True))
        raise _ApiError("channel_not_found")

    def _auth_test(self, _: JSON) -> JSON:
        return {
            "url": "https://rapport-sandbox.slack.com/",
            "team": self.team_name,
            "user": "rapport",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _bot_message(self, params: JSON, ts: str) -> JSON:
        text = params.get("text")
        blocks = params.get("blocks")
        if not text and not blocks:
            raise _ApiError("no_text")
        msg: JSON = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": text or "",
            "ts": ts,
        }
        if blocks:
            msg["blocks"] = blocks
        return msg

    def _chat_post_message(self, params: JSON) -> JSON:
        ch = self._channel(params)
        ts = self._next_ts()
        msg = self._bot_message(params, ts)
        thread_ts = params.get("thread_ts")
        if thread_ts:
            parent = ch.messages.get(str(thread_ts))
            msg["thread_ts"] = str(thread_ts)
            if parent is not None:
                parent.setdefault("thread_ts", parent["ts"])
                parent["reply_count"] = parent.get("reply_count", 0) + 1
        ch.messages[ts] = msg
        return {"channel": ch.id, "ts": ts, "message": msg}

    def _chat_update(self, params: JSON) -> JSON:
        ch = self._channel(params)
        ts = str(params.get("ts") or "")
        msg = ch.messages.get(ts)
        if msg is None:
            raise _ApiError("message_not_found")
        if msg.get("user") != self.bot_user_id:
            raise _ApiError("cant_update_message")
        if not params.get("text") and not params.get("blocks"):
            raise _ApiError("no_text")
        if "text" in params:
            msg["text"] = params["text"]
        if "blocks" in params:
            msg["blocks"] = params["blocks"]
        msg["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        self.card_updates.append({"channel": ch.id, "ts": ts, **params})
        return {"channel": ch.id, "ts": ts, "text": msg["text"], "message": msg}

    def _chat_post_ephemeral(self, params: JSON) -> JSON:
        ch = self._channel(params)
        if not params.get("user"):
            raise _ApiError("user_not_found")
        if not params.get("text") and not params.get("blocks"):
            raise _ApiError("no_text")
        ts = self._next_ts()
        self.ephemerals.append({"channel": ch.id, "message_ts": ts, **params})
        return {"message_ts": ts}

    def _chat_get_permalink(self, params: JSON) -> JSON:
        ch = self._channel(params)
        ts = str(params.get("message_ts") or "")
        if ts not in ch.messages:
            raise _ApiError("message_not_found")
        return {"channel": ch.id, "permalink": self.permalink(ch.id, ts)}

    def permalink(self, channel: str, ts: str) -> str:
        return f"https://rapport-sandbox.slack.com/archives/{channel}/p{ts.replace('.', '')}"

    def _views_open(self, params: JSON) -> JSON:
        trigger = str(params.get("trigger_id") or "")
        issued = self._triggers.pop(trigger, None)
        if issued is None:
            raise _ApiError("invalid_trigger_id")
        if time.time() - issued > 3.0:
            raise _ApiError("expired_trigger_id")
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise _ApiError("invalid_arguments")
        return {"view": self._store_view(self.new_id("V"), view)}

    def _store_view(self, view_id: str, view: JSON) -> JSON:
        stored: JSON = {
            **view,
            "id": view_id,
            "team_id": self.team_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "hash": secrets.token_hex(8),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
        }
        self.views[view_id] = stored
        return stored

    def _views_update(self, params: JSON) -> JSON:
        view_id = str(params.get("view_id") or "")
        if view_id not in self.views:
            raise _ApiError("not_found")
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict):
            raise _ApiError("invalid_arguments")
        return {"view": self._store_view(view_id, view)}

    def _reactions_add(self, params: JSON) -> JSON:
        ch = self._channel(params)
        msg = ch.messages.get(str(params.get("timestamp") or ""))
        if msg is None:
            raise _ApiError("message_not_found")
        name = str(params.get("name") or "")
        if not name:
            raise _ApiError("invalid_name")
        reactions: list[JSON] = msg.setdefault("reactions", [])
        for r in reactions:
            if r["name"] == name:
                if self.bot_user_id in r["users"]:
                    raise _ApiError("already_reacted")
                r["users"].append(self.bot_user_id)
                r["count"] += 1
                return {}
        reactions.append({"name": name, "users": [self.bot_user_id], "count": 1})
        return {}

    def _conversations_info(self, params: JSON) -> JSON:
        ch = self._channel(params)
        return {
            "channel": {
                "id": ch.id,
                "name": ch.name,
                "is_channel": not ch.is_private and not ch.is_im,
                "is_private": ch.is_private,
                "is_im": ch.is_im,
                "is_member": True,
                "context_team_id": self.team_id,
            }
        }

    def _page(self, items: list[JSON], params: JSON) -> JSON:
        limit = int(params.get("limit") or 100)
        start = int(params.get("cursor") or 0)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _conversations_history(self, params: JSON) -> JSON:
        ch = self._channel(params)
        oldest = float(params.get("oldest") or 0)
        latest = float(params.get("latest") or "inf")
        top = [
            m
            for m in ch.messages.values()
            if m.get("thread_ts") in (None, m["ts"]) and oldest < float(m["ts"]) <= latest
        ]
        top.reverse()  # newest first, like Slack
        return self._page(top, params)

    def _conversations_replies(self, params: JSON) -> JSON:
        ch = self._channel(params)
        ts = str(params.get("ts") or "")
        if ts not in ch.messages:
            raise _ApiError("thread_not_found")
        # Like Slack: the parent always comes first; ``oldest`` filters the replies.
        oldest = float(params.get("oldest") or 0)
        thread = [m for m in self.thread(ch.id, ts) if m["ts"] == ts or float(m["ts"]) > oldest]
        return self._page(thread, params)

    def _users_info(self, params: JSON) -> JSON:
        user = self.users.get(str(params.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": user}

    def _files_get_upload_url(self, params: JSON) -> JSON:
        if not params.get("filename") or not str(params.get("length") or "").isdigit():
            raise _ApiError("invalid_arguments")
        file_id = self.new_id("F")
        self.files[file_id] = {
            "id": file_id,
            "name": params["filename"],
            "length": int(params["length"]),
            "data": None,
        }
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        file = self.files.get(request.match_info["file_id"])
        if file is None:
            return web.Response(status=404, text="file not found")
        reader = await request.read()
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = next(iter(form.values()), b"")
            reader = part.file.read() if hasattr(part, "file") else str(part).encode()
        file["data"] = reader
        await self._notify()
        return web.Response(text=f"OK - {len(reader)}")

    def _files_complete_upload(self, params: JSON) -> JSON:
        files = params.get("files")
        if isinstance(files, str):
            files = json.loads(files)
        if not isinstance(files, list) or not files:
            raise _ApiError("invalid_arguments")
        done: list[JSON] = []
        for f in files:
            stored = self.files.get(str(f.get("id")))
            if stored is None or stored["data"] is None:
                raise _ApiError("file_not_found")
            stored["title"] = f.get("title") or stored["name"]
            done.append({k: v for k, v in stored.items() if k != "data"})
        if params.get("channel_id"):
            ch = self._channel(params, "channel_id")
            ts = self._next_ts()
            msg: JSON = {
                "type": "message",
                "subtype": "file_share",
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "text": params.get("initial_comment") or "",
                "ts": ts,
                "files": done,
            }
            if params.get("thread_ts"):
                msg["thread_ts"] = params["thread_ts"]
            ch.messages[ts] = msg
        return {"files": done}

    def _apps_connections_open(self, _: JSON) -> JSON:
        ticket = secrets.token_hex(8)
        self._ws_tickets.add(ticket)
        ws_base = self.base_url.replace("http://", "ws://", 1)
        return {"url": f"{ws_base}/socket?ticket={ticket}"}

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append({"token": request.match_info["token"], **body})
        await self._notify()
        return web.Response(text="ok")

    # -- Socket Mode server -----------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._ws_tickets:
            return web.Response(status=401, text="invalid ticket")
        self._ws_tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._ws = ws
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "emulator", "approximate_connection_time": 3600},
                "connection_info": {"app_id": self.app_id},
            }
        )
        await self._notify()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                logger.warning("non-JSON Socket Mode frame: %r", msg.data[:200])
                continue
            env_id = data.get("envelope_id") if isinstance(data, dict) else None
            if not env_id:
                continue
            self.socket_acks.append(data)
            fut = self._pending_acks.pop(env_id, None)
            if fut is not None and not fut.done():
                fut.set_result(data)
            await self._notify()
        if self._ws is ws:
            self._ws = None
        await self._notify()
        return ws

    def unacked_envelopes(self) -> list[str]:
        """Envelope ids the app never acked (Slack would redeliver these)."""
        acked = {a["envelope_id"] for a in self.socket_acks}
        return [e["envelope_id"] for e in self.envelopes if e["envelope_id"] not in acked]

    @property
    def socket_connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def wait_socket_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self.wait_for(lambda: self.socket_connected, timeout)

    async def _send_envelope(
        self,
        kind: str,
        payload: JSON,
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool = False,
        ack_within: float = 5.0,
    ) -> Delivery:
        ws = self._ws
        if ws is None or ws.closed:
            raise RuntimeError("no Socket Mode connection")
        env_id = secrets.token_hex(12)
        fut: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._pending_acks[env_id] = fut
        envelope: JSON = {
            "envelope_id": env_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        self.envelopes.append(envelope)
        await ws.send_json(envelope)
        try:
            ack = await asyncio.wait_for(fut, ack_within)
        except TimeoutError:
            self._pending_acks.pop(env_id, None)
            return Delivery(0, "", envelope_id=env_id)
        body = json.dumps(ack["payload"]) if ack.get("payload") is not None else ""
        return Delivery(200, body, envelope_id=env_id)

    # -- the driver: Slack -> app -----------------------------------------------------
    def sign(self, body: str, timestamp: int) -> str:
        base = f"v0:{timestamp}:{body}".encode()
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return f"v0={digest}"

    async def post_signed(
        self,
        body: str,
        content_type: str,
        *,
        extra_headers: Mapping[str, str] | None = None,
        bad_signature: bool = False,
        stale: bool = False,
    ) -> Delivery:
        """POST ``body`` to the app like Slack does (``bad_signature``/``stale`` test refusals)."""
        if self.app_url is None or self._session is None:
            raise RuntimeError("set emu.app_url to the app's /slack/events first")
        ts = int(time.time()) - (600 if stale else 0)
        sig = self.sign(body, ts)
        if bad_signature:
            sig = "v0=" + "0" * 64
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sig,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            **(extra_headers or {}),
        }
        async with self._session.post(self.app_url, data=body.encode(), headers=headers) as resp:
            return Delivery(resp.status, await resp.text())

    async def _deliver_payload(
        self, kind: str, payload: JSON, *, bad_signature: bool = False, stale: bool = False
    ) -> Delivery:
        if self.delivery == "socket":
            return await self._send_envelope(kind, payload, accepts_response_payload=True)
        if kind == "slash_commands":
            body = urlencode({k: str(v) for k, v in payload.items()})
        else:
            body = urlencode({"payload": json.dumps(payload)})
        return await self.post_signed(
            body,
            "application/x-www-form-urlencoded",
            bad_signature=bad_signature,
            stale=stale,
        )

    def event_envelope(self, event: JSON, event_id: str | None = None) -> JSON:
        """An ``event_callback`` body around ``event``, as Slack would send it."""
        return {
            "token": "emulator-verification-token",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or self.new_id("Ev"),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    async def send_event(
        self,
        event: JSON,
        *,
        event_id: str | None = None,
        retry_num: int = 0,
        retry_reason: str = "http_timeout",
        bad_signature: bool = False,
        stale: bool = False,
    ) -> Delivery:
        """Deliver an Events API callback; ``retry_num`` > 0 marks it as Slack's retry."""
        envelope = self.event_envelope(event, event_id)
        if self.delivery == "socket":
            d = await self._send_envelope(
                "events_api",
                envelope,
                retry_attempt=retry_num,
                retry_reason=retry_reason if retry_num else "",
            )
        else:
            headers = (
                {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
                if retry_num
                else {}
            )
            d = await self.post_signed(
                json.dumps(envelope),
                "application/json",
                extra_headers=headers,
                bad_signature=bad_signature,
                stale=stale,
            )
        d = Delivery(d.status, d.body, envelope["event_id"], d.envelope_id)
        self.deliveries.append(d)
        return d

    def member_message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        markup: bool = False,
    ) -> JSON:
        """A member posts in a channel: stored in channel state; returns the event to send.

        ``text`` is what the member typed: like Slack, the message's ``text`` (in the event
        and in ``conversations.history``/``replies``) has ``&``, ``<`` and ``>`` escaped.
        With ``markup=True`` ``text`` is already Slack's wire form (``<@U…>`` mentions,
        ``<https://…|label>`` links, ``&amp;`` entities) and is used as it is.
        """
        ch = self.channels[channel]
        ts = self._next_ts()
        wire = text if markup else slack_escape(text)
        typed = _slack_unescape(text) if markup else text
        msg: JSON = {
            "type": "message",
            "user": user,
            "text": wire,
            "ts": ts,
            "team": self.team_id,
            "blocks": [
                {
                    "type": "rich_text",
                    "block_id": secrets.token_hex(3),
                    "elements": [
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": typed}]}
                    ],
                }
            ],
        }
        if thread_ts:
            msg["thread_ts"] = thread_ts
            parent = ch.messages.get(thread_ts)
            if parent is not None:
                parent.setdefault("thread_ts", thread_ts)
                parent["reply_count"] = parent.get("reply_count", 0) + 1
        ch.messages[ts] = msg
        event = {**msg, "channel": channel, "channel_type": "channel", "event_ts": ts}
        if thread_ts:
            event["parent_user_id"] = ch.messages.get(thread_ts, {}).get("user", "")
        return event

    async def say(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        markup: bool = False,
    ) -> tuple[str, Delivery]:
        """A member posts and Slack delivers the ``message`` event; returns ``(ts, delivery)``.

        ``text`` and ``markup`` as for :meth:`member_message`."""
        event = self.member_message(channel, user, text, thread_ts=thread_ts, markup=markup)
        return event["ts"], await self.send_event(event)

    def edit_event(self, channel: str, ts: str, new_text: str, *, markup: bool = False) -> JSON:
        """The member edits a message: state updated; returns the ``message_changed`` event.

        ``new_text`` is escaped like Slack does unless ``markup`` (see :meth:`member_message`)."""
        msg = self.channels[channel].messages[ts]
        previous = dict(msg)
        msg["text"] = new_text if markup else slack_escape(new_text)
        now = self._next_ts()
        msg["edited"] = {"user": msg.get("user"), "ts": now}
        return {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "channel": channel,
            "channel_type": "channel",
            "ts": now,
            "event_ts": now,
            "message": dict(msg),
            "previous_message": previous,
        }

    def delete_event(self, channel: str, ts: str) -> JSON:
        """The member deletes a message: returns the event Slack sends.

        Like Slack, a thread parent that still has replies is not removed: a tombstone
        ("This message was deleted.", by USLACKBOT) takes its place, announced as
        ``message_changed``. Any other message is removed and ``message_deleted`` sent.
        """
        messages = self.channels[channel].messages
        previous = messages[ts]
        now = self._next_ts()
        if previous.get("reply_count"):
            tombstone = {
                "type": "message",
                "subtype": "tombstone",
                "text": "This message was deleted.",
                "user": "USLACKBOT",
                "hidden": True,
                "ts": ts,
                "thread_ts": ts,
                "reply_count": previous["reply_count"],
            }
            messages[ts] = tombstone
            return {
                "type": "message",
                "subtype": "message_changed",
                "hidden": True,
                "channel": channel,
                "channel_type": "channel",
                "ts": now,
                "event_ts": now,
                "message": tombstone,
                "previous_message": previous,
            }
        del messages[ts]
        return {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "channel": channel,
            "channel_type": "channel",
            "ts": now,
            "event_ts": now,
            "deleted_ts": ts,
            "previous_message": previous,
        }

    def reaction_event(self, channel: str, ts: str, user: str, name: str, added: bool) -> JSON:
        now = self._next_ts()
        return {
            "type": "reaction_added" if added else "reaction_removed",
            "user": user,
            "reaction": name,
            "item": {"type": "message", "channel": channel, "ts": ts},
            "item_user": self.channels[channel].messages.get(ts, {}).get("user", ""),
            "event_ts": now,
        }

    def _user_obj(self, user: str) -> JSON:
        u = self.users.get(user, {"name": user})
        return {"id": user, "username": u["name"], "name": u["name"], "team_id": self.team_id}

    def find_button(self, message: JSON, action_id: str) -> tuple[str, JSON] | None:
        """``(block_id, element)`` of the button with ``action_id`` on a message, if shown."""
        for block in message.get("blocks") or []:
            if block.get("type") != "actions":
                continue
            for el in block.get("elements", []):
                if el.get("action_id") == action_id:
                    return str(block.get("block_id", "")), el
        return None

    async def click(
        self,
        channel: str,
        ts: str,
        action_id: str,
        user: str,
        *,
        value: str | None = None,
        bad_signature: bool = False,
    ) -> Delivery:
        """A user clicks a button on a message (``block_actions`` with the message).

        The button must be on the message as it looks now, unless ``value`` is given (a
        stale client showing an older version of the card).
        """
        message = self.channels[channel].messages[ts]
        found = self.find_button(message, action_id)
        if found is None:
            if value is None:
                raise LookupError(f"no button {action_id!r} on {channel}/{ts}")
            block_id, element = "stale", {"type": "button", "action_id": action_id, "value": value}
        else:
            block_id, element = found
        action: JSON = {
            "type": "button",
            "action_id": action_id,
            "block_id": block_id,
            "text": element.get("text", {"type": "plain_text", "text": action_id}),
            "value": value if value is not None else element.get("value", ""),
            "action_ts": self._next_ts(),
        }
        if "style" in element:
            action["style"] = element["style"]
        payload: JSON = {
            "type": "block_actions",
            "user": self._user_obj(user),
            "api_app_id": self.app_id,
            "token": "emulator-verification-token",
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": self._trigger(),
            "team": {"id": self.team_id, "domain": "rapport-sandbox"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self.channels[channel].name},
            "message": json.loads(json.dumps(message)),
            "state": {"values": {}},
            "response_url": f"{self.base_url}/respond/{secrets.token_hex(8)}",
            "actions": [action],
        }
        return await self._deliver_payload("interactive", payload, bad_signature=bad_signature)

    async def submit_view(
        self, view_id: str, user: str, values: Mapping[str, Mapping[str, str]]
    ) -> Delivery:
        """Submit an open modal; ``values`` is ``{block_id: {action_id: text}}``.

        A 200 with an empty body closes the modal (it is removed from :attr:`views`).
        """
        view = self.views[view_id]
        state = {
            block_id: {
                action_id: {"type": "plain_text_input", "value": text}
                for action_id, text in actions.items()
            }
            for block_id, actions in values.items()
        }
        payload: JSON = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "rapport-sandbox"},
            "user": self._user_obj(user),
            "api_app_id": self.app_id,
            "token": "emulator-verification-token",
            "trigger_id": self._trigger(),
            "view": {**view, "state": {"values": state}},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        d = await self._deliver_payload("interactive", payload)
        if d.status == 200 and not d.body:
            self.views.pop(view_id, None)
        return d

    async def slash_command(
        self, text: str, user: str, channel: str, *, command: str = "/rapport"
    ) -> Delivery:
        """A user runs a slash command (a plain form, not a JSON payload); its text is
        escaped as Slack escapes what users type (``&``, ``<``, ``>``)."""
        form: JSON = {
            "token": "emulator-verification-token",
            "team_id": self.team_id,
            "team_domain": "rapport-sandbox",
            "channel_id": channel,
            "channel_name": self.channels[channel].name if channel in self.channels else "",
            "user_id": user,
            "user_name": self.users.get(user, {"name": user})["name"],
            "command": command,
            "text": slack_escape(text),
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": f"{self.base_url}/respond/{secrets.token_hex(8)}",
            "trigger_id": self._trigger(),
        }
        return await self._deliver_payload("slash_commands", form)

    async def message_shortcut(
        self, callback_id: str, channel: str, ts: str, user: str
    ) -> Delivery:
        """A user picks a message shortcut from a message's menu (``message_action``)."""
        message = self.channels[channel].messages[ts]
        payload: JSON = {
            "type": "message_action",
            "callback_id": callback_id,
            "trigger_id": self._trigger(),
            "response_url": f"{self.base_url}/respond/{secrets.token_hex(8)}",
            "team": {"id": self.team_id, "domain": "rapport-sandbox"},
            "channel": {"id": channel, "name": self.channels[channel].name},
            "user": self._user_obj(user),
            "message": json.loads(json.dumps(message)),
            "message_ts": ts,
            "action_ts": self._next_ts(),
            "token": "emulator-verification-token",
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return await self._deliver_payload("interactive", payload)


class _ApiError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error
