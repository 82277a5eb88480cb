"""OpenAI-compatible chat-completions client (OpenAI, Azure, vLLM, llama.cpp, Ollama…).

Implements :class:`handlers.draft.model.ChatModel` so the core never sees httpx. What it
adds over a bare POST, and why:

- an overall deadline per call (httpx's read timeout is per chunk, so a slow-drip stream
  would otherwise never time out);
- retries only where they can help (429 honouring ``Retry-After``, 5xx), with capped
  full-jitter backoff; the random source and the sleep are injected so tests never wait;
- a circuit breaker (clock injected) so an outage costs one fast failure per draft, not
  a deadline's worth of waiting; calls in flight are released the moment it opens;
- a concurrency limit, with the highest number of requests in flight recorded;
- token accounting per community from ``usage``, with an optional daily budget.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import httpx

from handlers.draft.model import (
    BudgetExceeded,
    ChatMessage,
    CircuitOpen,
    LlmBadResponse,
    LlmError,
    LlmTimeout,
    LlmUnavailable,
)

if TYPE_CHECKING:
    from bot.settings import Settings

__all__ = [
    "BudgetExceeded",
    "CircuitBreaker",
    "CircuitOpen",
    "LlmBadResponse",
    "LlmConfig",
    "LlmError",
    "LlmTimeout",
    "LlmUnavailable",
    "OpenAIChatClient",
    "TokenMeter",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """Everything the client needs; :meth:`from_settings` maps the ``LLM_*`` settings."""

    base_url: str
    api_key: str
    model: str = "gpt-4o-mini"
    timeout_s: float = 20.0
    connect_timeout_s: float = 5.0
    concurrency: int = 4
    # httpcore scans every pooled connection per request (encode/httpcore#1035): many idle
    # keep-alive connections make large bursts quadratic, so keep only a few of them.
    keepalive_connections: int = 16
    daily_token_budget: int = 0  # 0: no budget
    stream: bool = False
    stream_usage: bool = True  # ask for the usage chunk (stream_options.include_usage)
    temperature: float = 0.3
    max_tokens: int | None = None
    max_retries: int = 2
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 8.0
    max_retry_after_s: float = 30.0  # a longer Retry-After is not waited for
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LlmConfig:
        """Build from ``Settings``; call only when ``settings.llm_enabled``."""
        if settings.LLM_BASE_URL is None:
            raise ValueError("LLM_BASE_URL is not set; the LLM is switched off")
        values: dict[str, Any] = {
            "base_url": settings.LLM_BASE_URL,
            "api_key": settings.LLM_API_KEY or "",
            "model": settings.LLM_MODEL,
            "timeout_s": settings.LLM_TIMEOUT_S,
            "concurrency": settings.LLM_CONCURRENCY,
            "daily_token_budget": settings.LLM_DAILY_TOKEN_BUDGET,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class _Ticket:
    """A permission to call, tied to the breaker generation it was issued in."""

    generation: int
    probe: bool
    opened: asyncio.Event


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failed calls; one probe after ``cooldown_s``.

    Results of calls issued before the last state change are ignored, so a straggler's
    success cannot close a breaker that opened after it started. ``opened`` of a ticket is
    set when the breaker opens, so callers can stop waiting at once.
    """

    def __init__(self, threshold: int, cooldown_s: float, clock: Clock) -> None:
        self._threshold = max(1, threshold)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._generation = 0
        self._probing = False
        self._opened_event = asyncio.Event()
        self.opened_at: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._cooldown_over():
            return "half_open"
        return self._state

    def _cooldown_over(self) -> bool:
        return self.opened_at is not None and self._clock() - self.opened_at >= self._cooldown_s

    def acquire(self) -> _Ticket:
        """Permit a call or raise :class:`CircuitOpen` (fast: no I/O, no await)."""
        if self._state == "open":
            if not self._cooldown_over():
                assert self.opened_at is not None
                left = self._cooldown_s - (self._clock() - self.opened_at)
                raise CircuitOpen("LLM circuit is open", retry_after=max(0.0, left))
            self._state = "half_open"
            self._generation += 1
        if self._state == "half_open":
            if self._probing:
                raise CircuitOpen("LLM circuit is half-open; a probe is in flight")
            self._probing = True
            return _Ticket(self._generation, True, self._opened_event)
        return _Ticket(self._generation, False, self._opened_event)

    def success(self, ticket: _Ticket) -> None:
        if ticket.generation != self._generation:
            return
        if ticket.probe:
            logger.info("LLM circuit closed: probe succeeded")
            self._probing = False
            self._state = "closed"
            self._generation += 1
        self._failures = 0

    def failure(self, ticket: _Ticket) -> None:
        if ticket.generation != self._generation:
            return
        if ticket.probe:
            self._probing = False
            self._trip("probe failed")
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._trip(f"{self._failures} consecutive failures")

    def release(self, ticket: _Ticket) -> None:
        """The call ended without saying anything about the endpoint's health."""
        if ticket.probe and ticket.generation == self._generation:
            self._probing = False

    def _trip(self, why: str) -> None:
        logger.warning("LLM circuit opened (%s); drafts fall back to templates", why)
        self._state = "open"
        self._failures = 0
        self._generation += 1
        self.opened_at = self._clock()
        self.times_opened += 1
        self._opened_event.set()
        self._opened_event = asyncio.Event()


class TokenMeter:
    """Tokens used per community per (UTC) day, against an optional daily budget."""

    def __init__(self, daily_budget: int, today: Callable[[], date]) -> None:
        self._budget = daily_budget
        self._today = today
        self._day: date | None = None
        self._used: dict[str, int] = {}

    def _roll(self) -> None:
        day = self._today()
        if day != self._day:
            self._day = day
            self._used = {}

    def used(self, community_id: str) -> int:
        self._roll()
        return self._used.get(community_id, 0)

    def check(self, community_id: str) -> None:
        if self._budget <= 0:
            return
        used = self.used(community_id)
        if used >= self._budget:
            raise BudgetExceeded(community_id, used, self._budget)

    def add(self, community_id: str, tokens: int) -> None:
        self._roll()
        self._used[community_id] = self._used.get(community_id, 0) + max(0, tokens)


@dataclass(slots=True)
class _CallState:
    attempts: int = 0
    http_started: bool = False
    recorded: bool = False  # the breaker has been told this call's outcome
    usage: int | None = None
    deadline: float | None = None  # event-loop time when the overall deadline fires


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _status_error(status: int, headers: httpx.Headers, content: bytes) -> LlmUnavailable:
    message, code = f"HTTP {status}", None
    try:
        err = json.loads(content)["error"]
        message = f"HTTP {status}: {err.get('message') or err.get('type') or ''}".strip()
        code = err.get("code") or err.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return LlmUnavailable(
        message,
        status=status,
        code=str(code) if code is not None else None,
        retry_after=_parse_retry_after(headers),
    )


# The server's own words for an error it reports inside a 200 body ("code" is often a
# string such as "rate_limit_exceeded", sometimes the HTTP status it meant to send).
_ERROR_CODE_STATUS = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "invalid_api_key": 401,
}


def _body_error(error: object, headers: httpx.Headers) -> LlmUnavailable:
    """A 200 answer whose body is ``{"error": {...}}``: map it like the status it stands for."""
    if not isinstance(error, dict):
        return LlmUnavailable(f"LLM error: {str(error)[:300]}")
    code = error.get("code") or error.get("type")
    status: int | None = None
    if isinstance(code, int) and 400 <= code <= 599:
        status = code
    elif isinstance(code, str):
        status = _ERROR_CODE_STATUS.get(code)
    detail = str(error.get("message") or error.get("type") or "error")[:300]
    message = f"HTTP {status}: {detail}" if status is not None else f"LLM error: {detail}"
    return LlmUnavailable(
        message,
        status=status,
        code=str(code) if code is not None else None,
        retry_after=_parse_retry_after(headers),
    )


# finish_reason values that mean the text stopped before the answer was complete.
_INCOMPLETE = {"length": "cut off at the token limit", "content_filter": "cut by a content filter"}


def _check_finish(reason: object) -> None:
    if isinstance(reason, str) and reason in _INCOMPLETE:
        raise LlmBadResponse(f"answer incomplete: {_INCOMPLETE[reason]} (finish_reason={reason})")


def _retryable(exc: LlmError) -> bool:
    return (
        isinstance(exc, LlmUnavailable)
        and exc.status is not None
        and (exc.status == 429 or 500 <= exc.status <= 599)
    )


def _counts_against_endpoint(exc: LlmError) -> bool:
    """Whether a failure says the endpoint is unhealthy: transport errors, timeouts, 5xx
    and 429 do. A 4xx only says our request (or key) was wrong, and a refusal, an empty
    or cut-off answer or broken JSON is about this one answer, not about an outage."""
    if isinstance(exc, LlmTimeout):
        return True
    if isinstance(exc, LlmUnavailable):
        if exc.status is None:
            return True  # unreachable, connection dropped, in-stream error
        return exc.status in (408, 429) or exc.status >= 500
    return False


def _content_text(content: object) -> str:
    """``content`` may be a string or a list of parts (``{"type": "text", "text": …}``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    raise LlmBadResponse(f"unexpected content type {type(content).__name__}")


def _check_json(text: str) -> str:
    """Validate a JSON-mode answer in code: servers that ignore response_format exist."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(stripped)
    except ValueError as exc:
        raise LlmBadResponse(f"JSON mode answer is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LlmBadResponse("JSON mode answer is not a JSON object")
    return stripped


class OpenAIChatClient:
    """A :class:`~handlers.draft.model.ChatModel` over ``POST {base}/chat/completions``.

    Pass ``http`` to share a client (it is then not closed here). ``clock`` drives the
    breaker, ``sleep`` and ``rng`` the backoff, ``today`` the token budget's day.
    """

    def __init__(
        self,
        config: LlmConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self.config = config
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=config.concurrency,
                max_keepalive_connections=min(config.concurrency, config.keepalive_connections),
            ),
        )
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {config.api_key}",
            "Accept": "application/json",
        }
        self._sleep = sleep
        self._rng = rng
        self._sem = asyncio.Semaphore(config.concurrency)
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_cooldown_s, clock)
        self.meter = TokenMeter(config.daily_token_budget, today)
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0
        self.http_requests = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> OpenAIChatClient:
        """The composition root's one-liner: ``OpenAIChatClient.from_settings(settings)``."""
        return cls(LlmConfig.from_settings(settings), **kwargs)

    async def __aenter__(self) -> OpenAIChatClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # -- the port ---------------------------------------------------------------------
    async def complete(
        self, messages: Sequence[ChatMessage], *, community_id: str, json_mode: bool = False
    ) -> str:
        """One completion text, or a :class:`LlmError` subclass; never hangs past the deadline."""
        self.calls += 1
        self.meter.check(community_id)
        ticket = self.breaker.acquire()
        body = self._body(messages, json_mode)
        state = _CallState(deadline=asyncio.get_running_loop().time() + self.config.timeout_s)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                text = await self._until_open(self._call(body, state, ticket), ticket.opened)
        except TimeoutError as exc:
            if not state.recorded:
                state.recorded = True
                if state.http_started:
                    self.breaker.failure(ticket)
                else:  # only queued behind the concurrency limit: says nothing of health
                    self.breaker.release(ticket)
            raise LlmTimeout(f"no complete answer within {self.config.timeout_s:g}s") from exc
        except BaseException:
            if not state.recorded:
                self.breaker.release(ticket)
            raise
        if json_mode:
            text = _check_json(text)
        used = state.usage
        if used is None:  # server sent no usage: estimate so the budget still bites
            used = (sum(len(m["content"]) for m in messages) + len(text)) // 4
        self.meter.add(community_id, used)
        return text

    async def judge(self, text: str, context: Mapping[str, Any]) -> dict[str, Any] | str | None:
        """The detector's ``LlmJudge`` port: a JSON-mode completion of ``context["messages"]``.

        An open breaker or a spent budget are expected states, not errors: they answer None
        (the detector keeps its local verdict) instead of raising a traceback per message.
        """
        messages = cast("Sequence[ChatMessage]", context["messages"])
        community = str(context.get("community_id") or "_judge")
        try:
            answer = await self.complete(messages, community_id=community, json_mode=True)
        except (CircuitOpen, BudgetExceeded) as exc:
            logger.info("LLM judge skipped: %s", exc)
            return None
        value = json.loads(answer)
        return value if isinstance(value, dict) else answer

    # -- internals --------------------------------------------------------------------
    def _body(self, messages: Sequence[ChatMessage], json_mode: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": self.config.temperature,
        }
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        if self.config.stream:
            body["stream"] = True
            if self.config.stream_usage:
                body["stream_options"] = {"include_usage": True}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def _call(self, body: dict[str, Any], state: _CallState, ticket: _Ticket) -> str:
        """Retries, then tell the breaker at once: before another queued call can start."""
        try:
            text = await self._with_retries(body, state, ticket)
        except CircuitOpen:
            raise
        except LlmError as exc:
            state.recorded = True
            if _counts_against_endpoint(exc):
                self.breaker.failure(ticket)
            else:
                self.breaker.release(ticket)
            raise
        state.recorded = True
        self.breaker.success(ticket)
        return text

    @staticmethod
    def _time_left(state: _CallState) -> float | None:
        if state.deadline is None:
            return None
        return state.deadline - asyncio.get_running_loop().time()

    async def _until_open(self, work: Coroutine[Any, Any, T], opened: asyncio.Event) -> T:
        """Run ``work`` but give up with :class:`CircuitOpen` as soon as the breaker opens."""
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(opened.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            return task.result()
        raise CircuitOpen("LLM circuit opened while this call was waiting")

    def _backoff(
        self, attempt: int, retry_after: float | None, time_left: float | None = None
    ) -> float | None:
        """Seconds to wait before the next try, or None: give up now. A wait that does not
        fit in what is left of the deadline could only end in a timeout, so it is not slept."""
        jittered = self._rng() * min(
            self.config.backoff_cap_s, self.config.backoff_base_s * (2.0**attempt)
        )
        if retry_after is None:
            delay = jittered
        elif retry_after > self.config.max_retry_after_s:
            return None
        else:
            delay = max(retry_after, jittered)
        if time_left is not None and delay >= time_left:
            return None
        return delay

    async def _with_retries(self, body: dict[str, Any], state: _CallState, ticket: _Ticket) -> str:
        while True:
            try:
                return await self._attempt(body, state, ticket)
            except LlmUnavailable as exc:
                retries_done = state.attempts - 1
                if not _retryable(exc) or retries_done >= self.config.max_retries:
                    raise
                delay = self._backoff(retries_done, exc.retry_after, self._time_left(state))
                if delay is None:
                    raise
                logger.info("LLM %s; retry %d in %.2fs", exc, retries_done + 1, delay)
                await self._sleep(delay)

    async def _attempt(self, body: dict[str, Any], state: _CallState, ticket: _Ticket) -> str:
        async with self._sem:
            if ticket.opened.is_set():  # opened while this call waited for a slot
                raise CircuitOpen("LLM circuit opened while this call was queued")
            state.attempts += 1
            state.http_started = True
            self.http_requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if body.get("stream"):
                    return await self._post_stream(body, state)
                return await self._post_plain(body, state)
            except httpx.TimeoutException as exc:
                raise LlmTimeout(f"LLM endpoint timed out: {type(exc).__name__}") from exc
            except httpx.HTTPError as exc:
                raise LlmUnavailable(f"LLM endpoint unreachable: {exc!r}") from exc
            finally:
                self.in_flight -= 1

    async def _post_plain(self, body: dict[str, Any], state: _CallState) -> str:
        resp = await self._http.post(self._url, json=body, headers=self._headers)
        if resp.status_code != 200:
            raise _status_error(resp.status_code, resp.headers, resp.content)
        try:
            data = resp.json()
        except ValueError as exc:
            raise LlmBadResponse(f"malformed completion: {exc!r}") from None
        return _plain_text(data, resp.headers, state)

    async def _post_stream(self, body: dict[str, Any], state: _CallState) -> str:
        headers = {**self._headers, "Accept": "text/event-stream"}
        async with self._http.stream("POST", self._url, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                raise _status_error(resp.status_code, resp.headers, await resp.aread())
            pieces: list[str] = []
            finished = done = False
            finish_reason: object = None
            saw_data = False
            other: list[str] = []  # non-SSE lines: a plain JSON answer (often an error)
            other_size = 0
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    # blank separators, ": keep-alive" comments, "event:" lines
                    if not saw_data and other_size < _MAX_PLAIN_BODY:
                        other.append(line)
                        other_size += len(line)
                    continue
                saw_data = True
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise LlmBadResponse("stream chunk is not JSON") from None
                if not isinstance(chunk, dict):
                    raise LlmBadResponse("stream chunk is not an object")
                if "error" in chunk:
                    raise LlmUnavailable(f"stream error: {chunk['error']}")
                usage = _total_tokens(chunk.get("usage"))
                if usage is not None:
                    state.usage = usage
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict):
                        raise LlmBadResponse("stream choice is not an object")
                    delta = choice.get("delta") or {}
                    if delta.get("refusal"):
                        raise LlmBadResponse(f"model refused: {delta['refusal']}")
                    pieces.append(_content_text(delta.get("content")))
                    if choice.get("finish_reason"):
                        finished = True
                        finish_reason = choice["finish_reason"]
            if not saw_data and "".join(other).strip():
                # Not an event stream: the server answered with one JSON body instead
                # (an error object, or a whole completion when it ignores "stream").
                try:
                    data = json.loads("\n".join(other))
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    return _plain_text(data, resp.headers, state)
        if not (done or finished):
            raise LlmBadResponse("stream ended before the answer was complete")
        _check_finish(finish_reason)
        text = "".join(pieces)
        if not text.strip():
            raise LlmBadResponse("empty completion")
        return text


_MAX_PLAIN_BODY = 1_000_000


def _plain_text(data: object, headers: httpx.Headers, state: _CallState) -> str:
    """The text of a non-streamed completion body, or the error it reports."""
    if isinstance(data, dict) and data.get("error") and not data.get("choices"):
        raise _body_error(data["error"], headers)
    if not isinstance(data, dict):
        raise LlmBadResponse("malformed completion: body is not an object")
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LlmBadResponse(f"malformed completion: {exc!r}") from None
    if not isinstance(message, dict):
        raise LlmBadResponse("malformed completion: message is not an object")
    if message.get("refusal"):
        raise LlmBadResponse(f"model refused: {message['refusal']}")
    state.usage = _total_tokens(data.get("usage"))
    _check_finish(choice.get("finish_reason") if isinstance(choice, dict) else None)
    text = _content_text(message.get("content"))
    if not text.strip():
        raise LlmBadResponse("empty completion")
    return text


def _total_tokens(usage: object) -> int | None:
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    ints = [p for p in parts if isinstance(p, int)]
    return sum(ints) if ints else None
