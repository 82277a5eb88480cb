"""Small, real implementations of the core's seams for tests of the workflow itself.

The workflow tests want a judge whose verdicts they control, and an executor that does
what a platform would (accept, or refuse) and remembers it; the detector and the real
adapters have their own end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.sandbox.waiting import until as wait_until
from handlers.events import Action, ActionResult, Author, MessageEvent, PostFlagCard


@dataclass(frozen=True)
class Verdict:
    score: float
    is_negative: bool
    reason: str
    severity: str
    rationale: str


@dataclass
class KeywordJudge:
    """Negative when the text contains a keyword; learns exact texts from feedback."""

    keywords: tuple[str, ...] = ("refund", "broken", "terrible")
    high: tuple[str, ...] = ("lawsuit",)
    learned: dict[tuple[str, str], bool] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)

    def judge(self, text: str, community_id: str | None = None) -> Verdict:
        low = text.lower()
        threshold = self.threshold_for(community_id)
        if community_id is not None and (community_id, low) in self.learned:
            neg = self.learned[(community_id, low)]
            return Verdict(0.9 if neg else 0.1, neg, "other", "medium", "learned")
        if any(k in low for k in self.high):
            return Verdict(0.95, threshold <= 0.95, "safety", "high", "legal threat")
        hit = next((k for k in self.keywords if k in low), None)
        if hit:
            return Verdict(0.8, threshold <= 0.8, "billing_refund", "medium", hit)
        return Verdict(0.1, threshold <= 0.1, "other", "low", "")

    def threshold_for(self, community_id: str | None) -> float:
        return self.thresholds.get(community_id or "", 0.5)

    def learned_terms(self, community_id: str, k: int = 3) -> tuple[list[str], list[str]]:
        return [], []

    def set_sensitivity(self, community_id: str, threshold: float | None) -> None:
        if threshold is None:
            self.thresholds.pop(community_id, None)
        else:
            self.thresholds[community_id] = threshold

    def learn(self, community_id: str, text: str, is_negative: bool) -> None:
        self.learned[(community_id, text.lower())] = is_negative


@dataclass
class RecordingExecutor:
    """Accepts every action like a platform would and remembers it, or refuses on demand."""

    platform: str
    done: list[Action] = field(default_factory=list)
    refuse_with: str | None = None
    retryable: bool = False
    counter: int = 0

    async def execute(self, action: Action) -> ActionResult:
        if self.refuse_with is not None:
            return ActionResult(ok=False, error=self.refuse_with, retryable=self.retryable)
        self.done.append(action)
        self.counter += 1
        if isinstance(action, PostFlagCard):
            return ActionResult(ok=True, ref={"channel": "CFLAGS", "ts": f"1.{self.counter}"})
        return ActionResult(ok=True, ref={"message_id": f"r{self.counter}"})


def message(
    text: str,
    mid: str,
    *,
    author: str = "u1",
    channel: str = "c1",
    community: str = "g1",
    platform: str = "discord",
    thread: str | None = None,
    at: datetime | None = None,
) -> MessageEvent:
    return MessageEvent(
        platform=platform,
        community_id=community,
        channel_id=channel,
        message_id=mid,
        author=Author(author, f"member-{author}"),
        text=text,
        created_at=at or datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        thread_id=thread,
    )


async def until(pred: Callable[[], bool], bound_s: float = 10.0) -> None:
    """Yield to the bot until ``pred`` holds (bounded): for state no event announces."""
    assert await wait_until(pred, bound_s), "condition not reached in time"
