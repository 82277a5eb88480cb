"""What the core needs from a detector and a drafter, as protocols.

The detector (``handlers.detect``) and drafter (``handlers.draft``) implement these; the
core depends only on the shapes, so either can be replaced in tests or by a brand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class VerdictLike(Protocol):
    @property
    def score(self) -> float: ...

    @property
    def is_negative(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def severity(self) -> str: ...

    @property
    def rationale(self) -> str: ...


class Judge(Protocol):
    def judge(self, text: str, community_id: str | None = None) -> VerdictLike: ...

    def learn(self, community_id: str, text: str, is_negative: bool) -> None: ...

    def threshold_for(self, community_id: str | None) -> float:
        """The score from which this community's messages are flagged."""
        ...

    def set_sensitivity(self, community_id: str, threshold: float | None) -> None:
        """An admin's threshold for one community; ``None``: back to the default."""
        ...

    def learned_terms(self, community_id: str, k: int = 3) -> tuple[list[str], list[str]]:
        """Words or cues a community's feedback taught: (raising, lowering) the score."""
        ...


class SecondOpinion(Protocol):
    """Reviews borderline verdicts (an LLM judge); decides off the ingestion path."""

    def wants(self, verdict: VerdictLike) -> bool: ...

    async def review(self, text: str, community_id: str) -> VerdictLike: ...


@dataclass(frozen=True, slots=True)
class DraftJob:
    flag_id: int
    platform: str
    community_id: str
    member_name: str
    member_text: str
    context: tuple[tuple[str, str], ...]
    reason: str
    severity: str


@dataclass(frozen=True, slots=True)
class DraftResult:
    text: str
    kind: str  # llm | template
    warnings: tuple[str, ...] = ()


class DraftMaker(Protocol):
    async def make(self, job: DraftJob) -> DraftResult: ...


def community_key(platform: str, community_id: str) -> str:
    """The detector's name for a community: feedback from one never leaks into another."""
    return f"{platform}:{community_id}"
