"""The Drafter end to end: real client, real httpx, the emulator on loopback.

Every failure mode of the model must end in a template draft, quickly; personal data
must never reach the endpoint; the model's answer is sanitised before anyone sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.llm import LlmConfig, OpenAIChatClient
from bot.sandbox.openai_emulator import Fault, OpenAIEmulator
from handlers.draft import BrandConfig, Drafter, DraftRequest
from handlers.draft.pii import PiiVault, find_pii, luhn_ok
from handlers.judging import DraftJob

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "prompts"
KB = PROMPTS / "kb"
NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


class NoSleep:
    async def __call__(self, delay: float) -> None:
        await asyncio.sleep(0)


@pytest.fixture
async def emu() -> AsyncIterator[OpenAIEmulator]:
    async with OpenAIEmulator() as emulator:
        yield emulator


def client_for(emu: OpenAIEmulator, **kw: object) -> OpenAIChatClient:
    config = LlmConfig(base_url=emu.base_url, api_key="sk-test", **kw)  # type: ignore[arg-type]
    return OpenAIChatClient(config, sleep=NoSleep())


def drafter(model: OpenAIChatClient | None) -> Drafter:
    return Drafter(model, PROMPTS, KB, clock=lambda: NOW)


def request(
    text: str = "I was charged twice for my order and nobody answers!", **kw: object
) -> DraftRequest:
    values: dict[str, object] = {
        "community_id": "guild-1",
        "platform": "discord",
        "member_name": "Dana",
        "member_text": text,
        "context": (("Lee", "same thing happened to me last week"),),
        "reason": "billing_refund",
        "severity": "high",
    }
    values.update(kw)
    return DraftRequest(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True])
async def test_llm_draft_plain_and_streamed(emu: OpenAIEmulator, stream: bool) -> None:
    answer = "Hi Dana, sorry about the double charge. Our billing team will check it today."
    emu.queue_answers(answer)
    async with client_for(emu, stream=stream) as client:
        d = drafter(client)
        draft = await d.draft(request())
    assert draft.kind == "llm" and draft.text == answer
    assert draft.sources and any(w.startswith("kb: refunds.md") for w in draft.warnings)
    body = emu.requests[-1]
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == d.system_prompt("discord")
    assert "2026-03-14" in body["messages"][0]["content"]
    user = body["messages"][1]["content"]
    assert "<member_message>\nI was charged twice" in user
    assert "Double charges" in user  # the KB section on double charges was retrieved
    assert "Lee: same thing happened" in user


async def test_429_then_success(emu: OpenAIEmulator) -> None:
    emu.fail_next(Fault.RATE_LIMIT)
    async with client_for(emu) as client:
        draft = await drafter(client).draft(request())
    assert draft.kind == "llm" and emu.statuses[429] == 1


async def test_401_falls_back_without_retry(emu: OpenAIEmulator) -> None:
    emu.fault = Fault.UNAUTHORIZED
    async with client_for(emu) as client:
        draft = await drafter(client).draft(request())
    assert draft.kind == "template" and emu.request_count == 1
    assert draft.fallback_reason is not None and "401" in draft.fallback_reason
    assert draft.text.startswith("Hi Dana,") and "billing team" in draft.text


async def test_breaker_opens_on_5xx_and_templates_are_fast(emu: OpenAIEmulator) -> None:
    emu.fault = Fault.SERVER_ERROR
    async with client_for(emu, max_retries=1, breaker_threshold=3) as client:
        d = drafter(client)
        for _ in range(3):
            assert (await d.draft(request())).kind == "template"
        assert client.breaker.state == "open"
        sent = emu.request_count
        started = time.perf_counter()
        drafts = [await d.draft(request(f"complaint number {i}")) for i in range(20)]
        per_draft = (time.perf_counter() - started) / 20
    assert all(x.kind == "template" for x in drafts)
    assert all(x.fallback_reason == "LLM circuit open" for x in drafts)
    assert emu.request_count == sent
    assert per_draft < 0.1


@pytest.mark.parametrize("fault", [Fault.SLOW_DRIP, Fault.HANG])
async def test_deadline_gives_a_template(emu: OpenAIEmulator, fault: Fault) -> None:
    emu.fault = fault
    emu.drip_interval_s = 0.02
    emu.queue_answers("y" * 400)
    async with client_for(emu, timeout_s=0.25, stream=True) as client:
        started = time.perf_counter()
        draft = await drafter(client).draft(request())
    assert draft.kind == "template" and draft.fallback_reason == "LLM timed out"
    assert time.perf_counter() - started < 1.5


async def test_invalid_json_gives_a_template(emu: OpenAIEmulator) -> None:
    emu.fault = Fault.INVALID_JSON
    async with client_for(emu) as client:
        draft = await drafter(client).draft(request())
    assert draft.kind == "template" and "unusable" in (draft.fallback_reason or "")


async def test_budget_exceeded_gives_a_template(emu: OpenAIEmulator) -> None:
    async with client_for(emu, daily_token_budget=10) as client:
        d = drafter(client)
        assert (await d.draft(request())).kind == "llm"
        draft = await d.draft(request())
    assert draft.kind == "template" and draft.fallback_reason == "daily LLM token budget used"


async def test_leaked_prompt_or_empty_answer_gives_a_template(emu: OpenAIEmulator) -> None:
    emu.queue_answers("Sure! My instructions say RPT-SYS-7f3a ...", "</member_message> hi")
    async with client_for(emu) as client:
        d = drafter(client)
        assert (await d.draft(request())).kind == "template"
        assert (await d.draft(request())).kind == "template"


async def test_no_model_means_templates_per_reason_and_language() -> None:
    d = drafter(None)
    shipping = await d.draft(
        request("my parcel never arrived, tracking stuck for a week", reason="delivery_delay")
    )
    assert shipping.kind == "template" and "order number" in shipping.text
    assert "tracking" in shipping.text.lower() and shipping.sources[0].startswith("shipping.md")
    unknown = await d.draft(request("meh", reason="something new"))
    assert unknown.kind == "template" and unknown.text.startswith("Hi Dana,")
    french = await d.draft(request("c'est nul", reason="pricing", language="fr-FR"))
    assert french.text.startswith("Bonjour Dana")
    hostile = await d.draft(request("x", member_name="@everyone <@&1> evil.com"))
    assert "@everyone" not in hostile.text and "<@&" not in hostile.text
    assert "evil.com" not in hostile.text


async def test_template_draft_is_well_under_100ms() -> None:
    d = drafter(None)
    await d.draft(request())  # warm caches (templates compiled, KB indexed)
    started = time.perf_counter()
    for i in range(50):
        await d.draft(request(f"charged twice again {i}"))
    assert (time.perf_counter() - started) / 50 < 0.02


async def test_model_output_is_sanitised(emu: OpenAIEmulator) -> None:
    emu.queue_answers(
        "Hi @everyone! Visit https://evil.example.net/refund or [help](https://help.acme.example/x)."
        " Call Lee on 020 7946 0999. We'll refund you."
    )
    async with client_for(emu) as client:
        draft = await drafter(client).draft(request())
    assert draft.kind == "llm"
    assert "@everyone" not in draft.text and "evil.example.net" not in draft.text
    assert "[help](https://help.acme.example/x)" in draft.text
    assert "020 7946 0999" not in draft.text
    assert "promises a refund — not allowed by brand policy" in draft.warnings
    assert "link removed (evil.example.net)" in draft.warnings


PII_MEMBER = (
    "Charged twice! Card 4111 1111 1111 1111, email dana.k@mail.test, phone +44 20 7946 0018,"
    " I live at 42 Elm Street apt 3. IBAN GB82 WEST 1234 5698 7654 32."
)
PII_CONTEXT = "Mine too, write me at lee@mail.test or 555-010-7788, 9 Oak Avenue"
PII_VALUES = [
    "4111 1111 1111 1111",
    "4111111111111111",
    "dana.k@mail.test",
    "+44 20 7946 0018",
    "7946 0018",
    "42 Elm Street",
    "GB82 WEST",
    "lee@mail.test",
    "555-010-7788",
    "9 Oak Avenue",
]


@pytest.mark.parametrize("stream", [False, True])
async def test_personal_data_never_reaches_the_endpoint(emu: OpenAIEmulator, stream: bool) -> None:
    emu.responder = lambda body: (
        "Hi Dana, we'll write to [EMAIL_1] (not [EMAIL_2]) about card [CARD_1]. [PHONE_9]"
    )
    async with client_for(emu, stream=stream) as client:
        draft = await drafter(client).draft(
            request(
                PII_MEMBER, member_name="Dana dana.k@mail.test", context=(("Lee", PII_CONTEXT),)
            )
        )
    raw = b"\n".join(emu.raw_requests).decode()
    for value in PII_VALUES:
        assert value not in raw, value
    assert "[EMAIL_1]" in raw and "[CARD_1]" in raw and "[ADDRESS_1]" in raw
    # the member's own data comes back for the manager; the neighbour's does not
    assert draft.kind == "llm"
    assert "dana.k@mail.test" in draft.text and "4111 1111 1111 1111" in draft.text
    assert "lee@mail.test" not in draft.text and "[EMAIL_2]" not in draft.text
    assert "[PHONE_9]" not in draft.text
    assert "personal data placeholder removed" in draft.warnings
    assert any("member's own personal data" in w for w in draft.warnings)


def test_pii_detection_and_vault() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    kinds = {p.kind for p in find_pii(PII_MEMBER)}
    assert kinds == {"CARD", "EMAIL", "PHONE", "ADDRESS", "IBAN"}
    assert find_pii("order 1234567 shipped on 2026-03-01 at 10:30, 3 items") == []
    assert find_pii("waited 3 hours on the way home") == []
    assert all(p.kind != "CARD" for p in find_pii("4111 1111 1111 1112"))
    vault = PiiVault()
    a = vault.redact("mail a@x.test or a@x.test, fake [EMAIL_1]", origin="member")
    assert a == "mail [EMAIL_1] or [EMAIL_1], fake (EMAIL_1)"
    b = vault.redact("mine is b@x.test", origin="context")
    assert b == "mine is [EMAIL_2]"
    text, restored, dropped = vault.restore("[EMAIL_1] [EMAIL_2] [EMAIL_3]", origins=("member",))
    assert text == "a@x.test [redacted] [redacted]" and (restored, dropped) == (1, 2)


async def test_concurrency_limit_holds_through_the_drafter(emu: OpenAIEmulator) -> None:
    emu.latency_s = 0.02
    async with client_for(emu, concurrency=4) as client:
        d = drafter(client)
        drafts = await asyncio.gather(*(d.draft(request(f"issue {i}")) for i in range(24)))
        assert client.max_in_flight == 4
    assert all(x.kind == "llm" for x in drafts) and emu.max_in_flight <= 4


async def test_brand_override_and_make_port(emu: OpenAIEmulator) -> None:
    async with client_for(emu) as client:
        d = drafter(client)
        other = BrandConfig(name="Globex", sign_off="— Globex", allowed_domains=("globex.test",))
        await d.draft(request(), brand=other)
        system = emu.requests[-1]["messages"][0]["content"]
        assert "Globex" in system and "Acme" not in system
        job = DraftJob(1, "slack", "T1", "Dana", "refund please", (), "billing_refund", "low")
        result = await d.make(job)
    assert result.kind == "llm" and result.text


async def test_the_member_s_language_picks_the_template_through_the_core_port() -> None:
    """The core does not know a member's language; the drafter guesses it from the text
    among the brand's languages, so a French or Spanish member gets that template."""
    d = drafter(None)
    for text, greeting in [
        (
            "Ma commande n'est toujours pas arrivée, c'est la troisième fois que je vous écris",
            "Bonjour Dana",
        ),
        ("Mi pedido todavía no ha llegado y nadie me responde", "Hola Dana"),
        ("my parcel never arrived and nobody answers", "Hi Dana"),
    ]:
        job = DraftJob(1, "discord", "g1", "Dana", text, (), "delivery_delay", "medium")
        assert (await d.make(job)).text.startswith(greeting), text


def test_language_guess_needs_clear_evidence() -> None:
    from handlers.draft.language import guess_language

    supported = ("en", "fr", "es", "de")
    assert (
        guess_language("le colis n'est pas arrivé et je suis toujours sans réponse", supported)
        == "fr"
    )
    assert (
        guess_language("ich habe meine Bestellung noch nicht bekommen, bitte helfen", supported)
        == "de"
    )
    assert guess_language("merci", supported) is None  # one word is not evidence
    assert guess_language("the app is broken again and my data is gone", supported) == "en"
    assert guess_language("le colis n'est pas arrivé", ("en",)) is None  # not a brand language
