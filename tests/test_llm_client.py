"""The OpenAI-compatible client against the loopback emulator: real httpx, no mocks.

Retries and the breaker use an injected sleep and clock, so nothing here waits on the
wall clock except the deadline tests, which use tiny real timeouts with bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest

from bot.llm import (
    BudgetExceeded,
    CircuitOpen,
    LlmBadResponse,
    LlmConfig,
    LlmTimeout,
    LlmUnavailable,
    OpenAIChatClient,
)
from bot.sandbox.openai_emulator import Fault, OpenAIEmulator
from bot.settings import Settings
from handlers.draft.model import ChatMessage

MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
async def emu() -> AsyncIterator[OpenAIEmulator]:
    async with OpenAIEmulator(api_key="sk-test") as emulator:
        yield emulator


def make_client(emu: OpenAIEmulator, **kw: object) -> OpenAIChatClient:
    extra = {k: kw.pop(k) for k in ("clock", "sleep", "rng", "today") if k in kw}
    config = LlmConfig(base_url=emu.base_url, api_key="sk-test", **kw)  # type: ignore[arg-type]
    extra.setdefault("sleep", RecordingSleep())
    return OpenAIChatClient(config, **extra)  # type: ignore[arg-type]


async def test_plain_completion_and_usage(emu: OpenAIEmulator) -> None:
    emu.queue_answers("Hello there!")
    async with make_client(emu) as client:
        text = await client.complete(MESSAGES, community_id="c1")
        assert text == "Hello there!"
        body = emu.requests[-1]
        assert body["model"] == "gpt-4o-mini" and "stream" not in body
        assert body["messages"] == MESSAGES
        assert client.meter.used("c1") > 0 and client.meter.used("c2") == 0


async def test_streamed_completion(emu: OpenAIEmulator) -> None:
    answer = "Hello there, this arrives in several pieces over SSE."
    emu.queue_answers(answer)
    async with make_client(emu, stream=True) as client:
        assert await client.complete(MESSAGES, community_id="c1") == answer
        body = emu.requests[-1]
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        expected = sum(len(m["content"]) // 4 for m in MESSAGES) + len(answer) // 4
        assert client.meter.used("c1") == expected  # from the usage chunk


async def test_json_mode_validated_in_code(emu: OpenAIEmulator) -> None:
    emu.queue_answers('{"ok": true}', "not json at all", "[1, 2]")
    async with make_client(emu) as client:
        assert json.loads(await client.complete(MESSAGES, community_id="c", json_mode=True))
        assert emu.requests[-1]["response_format"] == {"type": "json_object"}
        with pytest.raises(LlmBadResponse):
            await client.complete(MESSAGES, community_id="c", json_mode=True)
        with pytest.raises(LlmBadResponse):
            await client.complete(MESSAGES, community_id="c", json_mode=True)


async def test_429_retries_after_retry_after_then_succeeds(emu: OpenAIEmulator) -> None:
    emu.retry_after_s = 2.0
    emu.fail_next(Fault.RATE_LIMIT)
    emu.queue_answers("after the wait")
    sleep = RecordingSleep()
    async with make_client(emu, sleep=sleep, rng=lambda: 0.5) as client:
        assert await client.complete(MESSAGES, community_id="c") == "after the wait"
    assert emu.statuses[429] == 1 and emu.statuses[200] == 1
    assert sleep.delays == [2.0]  # honoured Retry-After (jitter 0.25 s is smaller)


async def test_5xx_retries_with_capped_jittered_backoff(emu: OpenAIEmulator) -> None:
    emu.fail_next(Fault.SERVER_ERROR, times=3)
    sleep = RecordingSleep()
    async with make_client(
        emu, sleep=sleep, rng=lambda: 1.0, max_retries=3, backoff_base_s=1.0, backoff_cap_s=3.0
    ) as client:
        assert await client.complete(MESSAGES, community_id="c")
    assert sleep.delays == [1.0, 2.0, 3.0]  # doubling, capped
    assert emu.statuses[500] == 3


async def test_5xx_gives_up_after_max_retries(emu: OpenAIEmulator) -> None:
    emu.fault = Fault.SERVER_ERROR
    async with make_client(emu, max_retries=2) as client:
        with pytest.raises(LlmUnavailable) as info:
            await client.complete(MESSAGES, community_id="c")
    assert info.value.status == 500 and info.value.code == "server_error"
    assert emu.request_count == 3


async def test_401_is_not_retried(emu: OpenAIEmulator) -> None:
    sleep = RecordingSleep()
    config = LlmConfig(base_url=emu.base_url, api_key="sk-wrong")
    async with OpenAIChatClient(config, sleep=sleep) as client:
        with pytest.raises(LlmUnavailable) as info:
            await client.complete(MESSAGES, community_id="c")
    assert info.value.status == 401 and info.value.code == "invalid_api_key"
    assert emu.request_count == 1 and sleep.delays == []


@pytest.mark.parametrize("stream", [False, True])
async def test_invalid_json_is_a_bad_response(emu: OpenAIEmulator, stream: bool) -> None:
    emu.fail_next(Fault.INVALID_JSON)
    async with make_client(emu, stream=stream) as client:
        with pytest.raises(LlmBadResponse):
            await client.complete(MESSAGES, community_id="c")
    assert emu.request_count == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_deadline_cuts_a_slow_drip(emu: OpenAIEmulator, stream: bool) -> None:
    emu.fault = Fault.SLOW_DRIP
    emu.drip_interval_s = 0.02  # each chunk is quick: httpx's per-read timeout never fires
    emu.queue_answers("x" * 500)  # would take 10 s
    async with make_client(emu, stream=stream, timeout_s=0.3) as client:
        started = time.perf_counter()
        with pytest.raises(LlmTimeout):
            await client.complete(MESSAGES, community_id="c")
        assert time.perf_counter() - started < 1.5


async def test_deadline_cuts_a_hang(emu: OpenAIEmulator) -> None:
    emu.fault = Fault.HANG
    async with make_client(emu, timeout_s=0.2) as client:
        started = time.perf_counter()
        with pytest.raises(LlmTimeout):
            await client.complete(MESSAGES, community_id="c")
        assert time.perf_counter() - started < 1.5


async def test_breaker_opens_fails_fast_and_probes_after_cooldown(emu: OpenAIEmulator) -> None:
    clock = FakeClock()
    emu.fault = Fault.SERVER_ERROR
    async with make_client(
        emu, clock=clock, max_retries=0, breaker_threshold=3, breaker_cooldown_s=30
    ) as client:
        for _ in range(3):
            with pytest.raises(LlmUnavailable) as info:
                await client.complete(MESSAGES, community_id="c")
            assert not isinstance(info.value, CircuitOpen)
        assert client.breaker.state == "open"
        sent = emu.request_count
        started = time.perf_counter()
        with pytest.raises(CircuitOpen):
            await client.complete(MESSAGES, community_id="c")
        assert time.perf_counter() - started < 0.05 and emu.request_count == sent

        clock.now += 31  # cooldown over: one probe; it fails, so open again
        assert client.breaker.state in ("half_open",)
        with pytest.raises(LlmUnavailable):
            await client.complete(MESSAGES, community_id="c")
        assert client.breaker.state == "open" and emu.request_count == sent + 1

        clock.now += 31
        emu.fault = None
        assert await client.complete(MESSAGES, community_id="c")
        assert client.breaker.state == "closed"


async def test_half_open_allows_a_single_probe(emu: OpenAIEmulator) -> None:
    clock = FakeClock()
    emu.fail_next(Fault.SERVER_ERROR)
    async with make_client(
        emu, clock=clock, max_retries=0, breaker_threshold=1, breaker_cooldown_s=5
    ) as client:
        with pytest.raises(LlmUnavailable):
            await client.complete(MESSAGES, community_id="c")
        clock.now += 6
        emu.latency_s = 0.05
        results = await asyncio.gather(
            *(client.complete(MESSAGES, community_id="c") for _ in range(4)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, str) for r in results) == 1
        assert sum(isinstance(r, CircuitOpen) for r in results) == 3
        assert client.breaker.state == "closed"


async def test_breaker_opening_releases_waiting_calls(emu: OpenAIEmulator) -> None:
    emu.fault = Fault.SERVER_ERROR
    emu.latency_s = 0.05
    async with make_client(emu, concurrency=1, max_retries=0, breaker_threshold=1) as client:
        results = await asyncio.gather(
            *(client.complete(MESSAGES, community_id="c") for _ in range(6)),
            return_exceptions=True,
        )
    assert isinstance(results[0], LlmUnavailable) and not isinstance(results[0], CircuitOpen)
    assert all(isinstance(r, CircuitOpen) for r in results[1:])
    assert emu.request_count == 1


async def test_concurrency_limit_holds(emu: OpenAIEmulator) -> None:
    emu.latency_s = 0.03
    async with make_client(emu, concurrency=3) as client:
        await asyncio.gather(*(client.complete(MESSAGES, community_id="c") for _ in range(12)))
        assert client.max_in_flight == 3
    assert emu.max_in_flight <= 3 and emu.request_count == 12


async def test_daily_token_budget(emu: OpenAIEmulator) -> None:
    day = [date(2026, 1, 1)]
    async with make_client(emu, daily_token_budget=20, today=lambda: day[0]) as client:
        await client.complete(MESSAGES, community_id="big")  # ~30 tokens: over budget now
        with pytest.raises(BudgetExceeded) as info:
            await client.complete(MESSAGES, community_id="big")
        assert info.value.used >= 20 and emu.request_count == 1
        assert await client.complete(MESSAGES, community_id="other")
        day[0] = date(2026, 1, 2)
        assert await client.complete(MESSAGES, community_id="big")


async def test_long_retry_after_is_not_waited_for(emu: OpenAIEmulator) -> None:
    emu.retry_after_s = 3600
    emu.fail_next(Fault.RATE_LIMIT)
    sleep = RecordingSleep()
    async with make_client(emu, sleep=sleep) as client:
        with pytest.raises(LlmUnavailable) as info:
            await client.complete(MESSAGES, community_id="c")
    assert info.value.status == 429 and info.value.retry_after == 3600 and sleep.delays == []


async def test_unreachable_endpoint_is_unavailable() -> None:
    async with OpenAIEmulator() as emu:
        url = emu.base_url
    config = LlmConfig(base_url=url, api_key="k", timeout_s=2)
    async with OpenAIChatClient(config) as client:
        with pytest.raises(LlmUnavailable):
            await client.complete(MESSAGES, community_id="c")


async def test_emulator_wire_format(emu: OpenAIEmulator) -> None:
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        auth = {"Authorization": "Bearer sk-test"}
        models = await http.get("/models", headers=auth)
        assert models.json()["data"][0]["id"] == "rapport-emulator"
        bad = await http.post("/chat/completions", json={"messages": []})
        assert bad.status_code == 401
        assert bad.headers["content-type"].startswith("application/json")
        assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
        emu.fail_next(Fault.RATE_LIMIT)
        limited = await http.post("/chat/completions", json={"messages": MESSAGES}, headers=auth)
        assert limited.status_code == 429 and "retry-after" in limited.headers
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        ok = await http.post("/chat/completions", json={"messages": MESSAGES}, headers=auth)
        data = ok.json()
        assert data["object"] == "chat.completion" and data["usage"]["total_tokens"] > 0
        req = {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
        async with http.stream("POST", "/chat/completions", json=req, headers=auth) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in resp.aiter_lines() if line.startswith("data:")]
        chunks = [json.loads(line[5:]) for line in lines[:-1]]
        assert lines[-1] == "data: [DONE]"
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_config_from_settings() -> None:
    settings = Settings(
        LLM_BASE_URL="http://127.0.0.1:9/v1",
        LLM_API_KEY="sk-local",
        LLM_MODEL="llama3",
        LLM_TIMEOUT_S=7,
        LLM_CONCURRENCY=16,
        LLM_DAILY_TOKEN_BUDGET=1000,
    )
    config = LlmConfig.from_settings(settings, stream=True)
    assert (config.base_url, config.api_key, config.model) == (
        "http://127.0.0.1:9/v1",
        "sk-local",
        "llama3",
    )
    assert (config.timeout_s, config.concurrency, config.daily_token_budget) == (7, 16, 1000)
    assert config.stream is True


async def test_emulator_remote_control(emu: OpenAIEmulator) -> None:
    control = emu.base_url.removesuffix("/v1") + "/_emulator/state"
    async with httpx.AsyncClient() as http:
        state = (await http.post(control, json={"fault": "server_error"})).json()
        assert state["fault"] == "server_error" and emu.fault is Fault.SERVER_ERROR
        await http.post(control, json={"fault": None, "reset_stats": True})
    assert emu.fault is None


async def test_client_serves_as_the_detectors_llm_judge(emu: OpenAIEmulator) -> None:
    emu.script(lambda body: '{"is_complaint": true, "reason": "other"}')
    async with make_client(emu, max_retries=0, breaker_threshold=1) as client:
        context = {"messages": MESSAGES, "community_id": "g1"}
        assert await client.judge("text", context) == {"is_complaint": True, "reason": "other"}
        assert emu.requests[-1]["response_format"] == {"type": "json_object"}
        emu.fault = Fault.SERVER_ERROR
        with pytest.raises(LlmUnavailable):
            await client.judge("text", context)
        assert await client.judge("text", context) is None  # breaker open: quietly no answer


# -- answer shapes the emulator does not send (httpx.MockTransport) -----------------------
def mock_client(handler: object, **kw: object) -> tuple[OpenAIChatClient, RecordingSleep]:
    sleep = RecordingSleep()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    config = LlmConfig(base_url="http://llm.test/v1", api_key="k", **kw)  # type: ignore[arg-type]
    return OpenAIChatClient(config, http=http, sleep=sleep, rng=lambda: 0.5), sleep


def completion(
    content: str | None, finish: str = "stop", refusal: str | None = None
) -> dict[str, object]:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }


def sse(*chunks: tuple[dict[str, object], str | None]) -> bytes:
    lines = [
        "data: "
        + json.dumps(
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )
        + "\n\n"
        for delta, finish in chunks
    ]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


CUT_OFF = "Hi Dana, sorry about the double charge. Our billing team will"


@pytest.mark.parametrize("finish", ["length", "content_filter"])
async def test_cut_off_plain_answer_is_a_bad_response(finish: str) -> None:
    client, _ = mock_client(lambda r: httpx.Response(200, json=completion(CUT_OFF, finish)))
    async with client:
        with pytest.raises(LlmBadResponse, match=f"finish_reason={finish}"):
            await client.complete(MESSAGES, community_id="c")
        assert client.breaker.state == "closed"


@pytest.mark.parametrize("finish", ["length", "content_filter"])
async def test_cut_off_streamed_answer_is_a_bad_response(finish: str) -> None:
    body = sse(
        ({"role": "assistant", "content": ""}, None), ({"content": CUT_OFF}, None), ({}, finish)
    )
    headers = {"content-type": "text/event-stream"}
    client, _ = mock_client(
        lambda r: httpx.Response(200, content=body, headers=headers), stream=True
    )
    async with client:
        with pytest.raises(LlmBadResponse, match=f"finish_reason={finish}"):
            await client.complete(MESSAGES, community_id="c")


async def test_200_with_an_error_body_keeps_the_servers_error() -> None:
    error = {
        "error": {
            "message": "Rate limit reached for gpt-4o-mini",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    client, sleep = mock_client(lambda r: httpx.Response(200, json=error), max_retries=1)
    async with client:
        with pytest.raises(LlmUnavailable) as info:
            await client.complete(MESSAGES, community_id="c")
    assert "Rate limit reached" in str(info.value)
    assert info.value.status == 429 and info.value.code == "rate_limit_exceeded"
    assert len(sleep.delays) == 1  # mapped like a 429: retried once


async def test_stream_request_answered_with_a_plain_json_error_keeps_the_error() -> None:
    error = {
        "error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    client, sleep = mock_client(lambda r: httpx.Response(200, json=error), stream=True)
    async with client:
        with pytest.raises(LlmUnavailable, match="Incorrect API key") as info:
            await client.complete(MESSAGES, community_id="c")
    assert info.value.code == "invalid_api_key" and sleep.delays == []


async def test_stream_request_answered_with_a_whole_completion_is_accepted() -> None:
    client, _ = mock_client(lambda r: httpx.Response(200, json=completion("Hello!")), stream=True)
    async with client:
        assert await client.complete(MESSAGES, community_id="c") == "Hello!"
        assert client.meter.used("c") == 10


async def test_retry_after_longer_than_the_deadline_fails_at_once(emu: OpenAIEmulator) -> None:
    emu.retry_after_s = 25.0  # under max_retry_after_s (30), over the 20 s deadline
    emu.fail_next(Fault.RATE_LIMIT)
    emu.queue_answers("too late anyway")
    sleep = RecordingSleep()
    async with make_client(emu, sleep=sleep, timeout_s=20.0) as client:
        with pytest.raises(LlmUnavailable) as info:
            await client.complete(MESSAGES, community_id="c")
    assert info.value.status == 429 and info.value.retry_after == 25.0
    assert sleep.delays == [] and emu.request_count == 1


async def test_refusals_and_empty_answers_do_not_open_the_breaker() -> None:
    answers = [completion(None, refusal="I'm sorry, I can't help with that."), completion("  ")]
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json=answers[calls % 2])

    client, _ = mock_client(handler, breaker_threshold=2)
    async with client:
        for _ in range(6):
            with pytest.raises(LlmBadResponse):
                await client.complete(MESSAGES, community_id="c")
        assert client.breaker.state == "closed" and client.breaker.times_opened == 0


async def test_a_rejected_key_does_not_open_the_breaker(emu: OpenAIEmulator) -> None:
    config = LlmConfig(base_url=emu.base_url, api_key="sk-wrong", breaker_threshold=2)
    async with OpenAIChatClient(config, sleep=RecordingSleep()) as client:
        for _ in range(3):
            with pytest.raises(LlmUnavailable):
                await client.complete(MESSAGES, community_id="c")
        assert client.breaker.state == "closed"
    assert emu.request_count == 3
