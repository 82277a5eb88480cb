"""An OpenAI-compatible chat-completions server on loopback, for tests, the demo and benches.

Speaks the wire format real clients expect (see PROTOCOLS.md): ``POST /v1/chat/completions``
plain and streamed (SSE, role delta first, content pieces, optional usage chunk, ``[DONE]``)
and ``GET /v1/models``. Answers are scripted (a queue, or a function of the request); faults
are injected on demand (401, 429 with ``retry-after``, 500, a body that is not JSON, a hang,
a slow drip). Every request body is recorded so tests can check what left the bot.

    async with OpenAIEmulator(answers=["Hi!"]) as emu:
        client = OpenAIChatClient(LlmConfig(base_url=emu.base_url, api_key="k"))

Standalone: ``python -m bot.sandbox.openai_emulator --port 8089 --latency 0.3``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from enum import StrEnum
from types import TracebackType
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

Responder = Callable[[dict[str, Any]], str | Awaitable[str]]

DEFAULT_ANSWER = (
    "Thanks for telling us, and sorry for the trouble. We're looking into it now and "
    "will update you in this thread."
)


class Fault(StrEnum):
    UNAUTHORIZED = "unauthorized"  # 401 invalid_api_key
    RATE_LIMIT = "rate_limit"  # 429 rate_limit_exceeded + retry-after
    SERVER_ERROR = "server_error"  # 500 server_error
    INVALID_JSON = "invalid_json"  # 200 with a body that is not JSON
    HANG = "hang"  # never answers (until the emulator stops)
    SLOW_DRIP = "slow_drip"  # answers one character per drip interval


def _error(status: int, message: str, type_: str, code: str | None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class OpenAIEmulator:
    """The server; all knobs are plain attributes so a test can flip them between calls."""

    def __init__(
        self,
        *,
        answers: Iterable[str] = (),
        responder: Responder | None = None,
        default_answer: str = DEFAULT_ANSWER,
        latency_s: float = 0.0,
        api_key: str | None = None,
        model: str = "rapport-emulator",
        host: str = "127.0.0.1",
        port: int = 0,
        retry_after_s: float = 1.0,
        drip_interval_s: float = 0.05,
        chunk_chars: int = 12,
    ) -> None:
        self.host = host
        self.port = port
        self.model = model
        self.api_key = api_key
        self.latency_s = latency_s
        self.retry_after_s = retry_after_s
        self.drip_interval_s = drip_interval_s
        self.chunk_chars = max(1, chunk_chars)
        self.default_answer = default_answer
        self.responder = responder
        self.fault: Fault | None = None  # persistent fault, until set back to None
        self.requests: list[dict[str, Any]] = []  # every chat body received, parsed
        self.raw_requests: list[bytes] = []  # and as bytes (for "never sent" checks)
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._answers: deque[str] = deque(answers)
        self._faults: deque[Fault] = deque()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    # -- control ----------------------------------------------------------------------
    def queue_answers(self, *answers: str) -> None:
        self._answers.extend(answers)

    def script(self, responder: Responder | None) -> None:
        """Answer with ``responder(request_body)`` once the queued answers are used up."""
        self.responder = responder

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        """Inject ``fault`` into the next ``times`` chat requests, then behave normally."""
        self._faults.extend([fault] * times)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def request_count(self) -> int:
        return len(self.raw_requests)

    # -- lifecycle --------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # Remote control, for a standalone emulator driven from another process (benches,
        # the demo): not part of the OpenAI API.
        app.router.add_get("/_emulator/state", self._state)
        app.router.add_post("/_emulator/state", self._set_state)
        return app

    def snapshot(self) -> dict[str, Any]:
        return {
            "fault": self.fault.value if self.fault else None,
            "latency_s": self.latency_s,
            "requests": self.request_count,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "statuses": {str(k): v for k, v in self.statuses.items()},
        }

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.snapshot())

    async def _set_state(self, request: web.Request) -> web.StreamResponse:
        """``{"fault": "server_error" | null, "latency_s": 0.3, "reset_stats": true}``."""
        try:
            change = await request.json()
            if "fault" in change:
                self.fault = Fault(change["fault"]) if change["fault"] else None
            if "latency_s" in change:
                self.latency_s = float(change["latency_s"])
            if change.get("reset_stats"):
                self.max_in_flight = self.in_flight
                self.statuses.clear()
        except (ValueError, TypeError, AttributeError) as exc:
            return _error(400, f"bad emulator state: {exc}", "invalid_request_error", None)
        return web.json_response(self.snapshot())

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self._app(), shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        logger.info("OpenAI emulator listening on %s", self.base_url)

    async def stop(self) -> None:
        self._stopping.set()  # releases hangs and drips so shutdown is quick
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenAIEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[OpenAIEmulator]:
        """Serve from a background thread with its own loop (benches: keeps server CPU
        off the measured loop). Knobs may be flipped from the caller's thread."""
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=run, name="openai-emulator", daemon=True)
        thread.start()
        if not started.wait(10):
            raise RuntimeError("emulator did not start")
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(self._stopping.set)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    # -- handlers ---------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_auth(request)) is not None:
            return denied
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "rapport"}
        return web.json_response({"object": "list", "data": [model]})

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            resp = await self._chat_inner(request)
        except ConnectionResetError:  # the client gave up (deadline); nothing to answer
            logger.debug("client went away mid-answer")
            self.statuses[499] += 1
            raise web.HTTPException(reason="client closed request") from None
        else:
            self.statuses[resp.status] += 1
            return resp
        finally:
            self.in_flight -= 1

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.raw_requests.append(raw)
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            return _error(400, f"Invalid JSON body: {exc}", "invalid_request_error", None)
        self.requests.append(body)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        fault = self._faults.popleft() if self._faults else self.fault
        if fault is Fault.UNAUTHORIZED:
            return _error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        if (denied := self._check_auth(request)) is not None:
            return denied
        if fault is Fault.RATE_LIMIT:
            resp = _error(
                429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded"
            )
            resp.headers["retry-after"] = f"{self.retry_after_s:g}"
            return resp
        if fault is Fault.SERVER_ERROR:
            return _error(
                500,
                "The server had an error while processing your request.",
                "server_error",
                "server_error",
            )
        if fault is Fault.HANG:
            await self._stopping.wait()
            return _error(503, "emulator stopping", "server_error", None)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error(400, "'messages' is a required property", "invalid_request_error", None)
        answer = await self._answer(body)
        streamed = bool(body.get("stream"))
        if fault is Fault.INVALID_JSON:
            return await self._invalid_json(request, streamed)
        if streamed:
            return await self._stream(request, body, answer, drip=fault is Fault.SLOW_DRIP)
        payload = json.dumps(self._completion(body, answer)).encode()
        if fault is Fault.SLOW_DRIP:
            return await self._drip_bytes(request, payload)
        return web.Response(body=payload, content_type="application/json")

    async def _answer(self, body: dict[str, Any]) -> str:
        if self._answers:
            return self._answers.popleft()
        if self.responder is not None:
            result = self.responder(body)
            if inspect.isawaitable(result):
                result = await result
            return str(result)
        return self.default_answer

    def _usage(self, body: dict[str, Any], answer: str) -> dict[str, int]:
        prompt = sum(
            _tokens(str(m.get("content", "")))
            for m in body.get("messages", [])
            if isinstance(m, dict)
        )
        completion = _tokens(answer)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _completion(self, body: dict[str, Any], answer: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(body, answer),
        }

    async def _sse_response(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Cache-Control": "no-cache"})
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        return resp

    async def _stream(
        self, request: web.Request, body: dict[str, Any], answer: str, *, drip: bool
    ) -> web.StreamResponse:
        resp = await self._sse_response(request)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        model = str(body.get("model") or self.model)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        await resp.write(chunk({"role": "assistant", "content": ""}))
        size = 1 if drip else self.chunk_chars
        for i in range(0, len(answer), size):
            if drip:
                if self._stopping.is_set():
                    return resp
                await asyncio.sleep(self.drip_interval_s)
            await resp.write(chunk({"content": answer[i : i + size]}))
        await resp.write(chunk({}, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": self._usage(body, answer),
            }
            await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _drip_bytes(self, request: web.Request, payload: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        for i in range(len(payload)):
            if self._stopping.is_set():
                return resp
            await asyncio.sleep(self.drip_interval_s)
            await resp.write(payload[i : i + 1])
        await resp.write_eof()
        return resp

    async def _invalid_json(self, request: web.Request, streamed: bool) -> web.StreamResponse:
        if streamed:
            resp = await self._sse_response(request)
            await resp.write(b'data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n')
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        return web.Response(
            body=b'{"id": "chatcmpl-broken", "choices": [{"message": ',
            content_type="application/json",
        )


async def _serve(args: argparse.Namespace) -> None:
    emu = OpenAIEmulator(
        latency_s=args.latency,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        default_answer=args.answer or DEFAULT_ANSWER,
    )
    if args.fault:
        emu.fault = Fault(args.fault)
    async with emu:
        print(f"OpenAI emulator on {emu.base_url} (Ctrl-C to stop)", flush=True)
        print(f"BASE_URL={emu.base_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--answer", default=None, help="fixed answer text")
    parser.add_argument("--fault", choices=[f.value for f in Fault], default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
