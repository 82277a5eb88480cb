"""A second opinion on borderline verdicts from an LLM judge.

The local detector decides the clear cases on the ingestion path; only messages whose
score sits near the community's threshold are sent to the LLM, off the hot path, and its
validated answer (or, on any trouble, the local verdict) decides whether to flag.
"""

from __future__ import annotations

from handlers.detect import Detector, LlmJudge, LlmStats, judge_with_llm
from handlers.judging import VerdictLike


class LlmSecondOpinion:
    def __init__(
        self, detector: Detector, llm: LlmJudge, *, band: float = 0.15, timeout_s: float = 10.0
    ) -> None:
        self._detector = detector
        self._llm = llm
        self.band = band
        self.timeout_s = timeout_s
        self.stats = LlmStats()

    def wants(self, verdict: VerdictLike) -> bool:
        threshold = float(getattr(verdict, "threshold", 0.5))
        return abs(verdict.score - threshold) <= self.band

    async def review(self, text: str, community_id: str) -> VerdictLike:
        return await judge_with_llm(
            self._detector,
            self._llm,
            text,
            community_id=community_id,
            band=self.band,
            timeout_s=self.timeout_s,
            stats=self.stats,
        )
