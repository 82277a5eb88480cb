"""Borderline verdicts go to the LLM judge; its validated answer decides, trouble falls back."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from bot.app import build_runtime
from bot.sandbox.openai_emulator import Fault, OpenAIEmulator
from bot.settings import Settings
from handlers.detect import Detector
from handlers.events import MessageKind
from handlers.judging import community_key
from storage.models import Flag
from tests.core_helpers import message

NOW = datetime(2026, 1, 5, 9, 1, tzinfo=UTC)
TEXT = "hmm, the new pricing page is kind of confusing tbh"
COMPLAINT = json.dumps(
    {"is_complaint": True, "reason": "pricing", "severity": "low", "rationale": "unclear pricing"}
)


def _borderline_detector() -> Detector:
    """The shipped detector, with this community's threshold just above the text's score."""
    detector = Detector.default()
    score = detector.judge(TEXT).score
    detector.set_sensitivity(community_key("discord", "g1"), min(0.99, score + 0.05))
    assert not detector.judge(TEXT, community_key("discord", "g1")).is_negative
    return detector


async def _run(
    tmp_path: Path, llm: OpenAIEmulator, *, more: bool = False
) -> tuple[list[Flag], str]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        DATABASE_URL=f"sqlite:///{tmp_path}/so.db",
        LLM_BASE_URL=llm.base_url,
        LLM_API_KEY="sk-test",
        LLM_MODEL="m",
        LLM_TIMEOUT_S=5,
    )
    async with build_runtime(settings, judge=_borderline_detector(), start_workers=False) as rt:
        await rt.core.on_message(message(TEXT, "m1"))
        if more:  # a calm message here, an edit, and another community's traffic
            await rt.core.on_message(message("thanks, all good now", "m2"))
            edited = replace(message(TEXT + "!", "m1"), kind=MessageKind.EDIT, edited_at=NOW)
            await rt.core.on_message(edited)
            for i in range(4):
                await rt.core.on_message(message(f"nice photo {i}", f"o{i}", community="g2"))
        await rt.settle()
        flags = await rt.db.run(lambda s: list(s.scalars(select(Flag))))
        status = await rt.core.status_text("discord", "g1")
        if more:
            status += "\n" + await rt.core.status_text("discord", "g2")
    return flags, status


async def test_the_llm_confirms_a_borderline_complaint(tmp_path: Path) -> None:
    async with OpenAIEmulator(default_answer=COMPLAINT) as llm:
        flags, status = await _run(tmp_path, llm)
        judged = [r for r in llm.requests if r.get("response_format")]
    assert len(judged) == 1
    assert TEXT not in json.dumps(judged[0]["messages"][0])  # member text never in the system part
    assert [f.reason for f in flags] == ["pricing"]
    assert "LLM judge: 100.0%" in status


async def test_a_failing_llm_falls_back_to_the_local_verdict(tmp_path: Path) -> None:
    async with OpenAIEmulator(default_answer=COMPLAINT) as llm:
        llm.fail_next(Fault.SERVER_ERROR, 10)
        flags, _ = await _run(tmp_path, llm)
    assert flags == []


async def test_the_llm_share_is_this_community_s_new_messages(tmp_path: Path) -> None:
    """Status counts new messages sent to the LLM out of this community's new messages:
    edits are not new messages, and another community's traffic is its own."""
    async with OpenAIEmulator(default_answer=COMPLAINT) as llm:
        _, status = await _run(tmp_path, llm, more=True)
    here, other = status.split("\n")
    assert "LLM judge: 50.0% of this community's messages" in here, here
    assert "LLM judge: 0.0%" in other, other


async def test_status_says_when_the_llm_gave_no_usable_answer(tmp_path: Path) -> None:
    async with OpenAIEmulator(default_answer=COMPLAINT) as llm:
        llm.fail_next(Fault.SERVER_ERROR, 10)
        _, status = await _run(tmp_path, llm)
    assert "LLM judge: 100.0%" in status
    assert "1 got no usable answer and kept the local verdict" in status, status


async def test_an_edit_made_while_the_llm_reviews_the_old_text_is_judged_on_its_own(
    tmp_path: Path,
) -> None:
    """The LLM overrules the text it was shown; the member had meanwhile edited the
    message into a plain complaint: that complaint is flagged and stays one."""
    import asyncio

    from tests.core_helpers import until

    strong = (
        "this app is garbage, it crashed again and deleted all my data, worst support ever, "
        "I want a refund now"
    )
    detector = Detector.default()
    key = community_key("discord", "g1")
    detector.set_sensitivity(key, max(0.01, detector.judge(TEXT).score - 0.02))
    assert detector.judge(TEXT, key).is_negative and detector.judge(strong, key).is_negative
    async with OpenAIEmulator() as llm:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            DATABASE_URL=f"sqlite:///{tmp_path}/edit.db",
            LLM_BASE_URL=llm.base_url,
            LLM_API_KEY="sk-test",
            LLM_MODEL="m",
            LLM_TIMEOUT_S=5,
        )
        async with build_runtime(settings, judge=detector, start_workers=False) as rt:
            second = rt.core._second
            assert second is not None and second.wants(detector.judge(TEXT, key))
            release, asked = asyncio.Event(), []

            async def overrules_slowly(text: str, community_id: str) -> object:
                asked.append(text)
                await release.wait()
                return replace(detector.judge(text, community_id), is_negative=False)

            second.review = overrules_slowly  # type: ignore[method-assign, assignment]
            await rt.core.on_message(message(TEXT, "m1"))
            await until(lambda: asked == [TEXT])
            edited = replace(message(strong, "m1"), kind=MessageKind.EDIT, edited_at=NOW)
            await rt.core.on_message(edited)
            release.set()
            await rt.settle()
            flags = await rt.db.run(lambda s: list(s.scalars(select(Flag))))
            assert [f.quoted_text for f in flags] == [strong]
