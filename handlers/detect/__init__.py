"""Local negative-word-of-mouth detection: score, reason, severity and rationale.

Build one ``Detector.default()`` at start-up and pass it in; feed managers' decisions
back with ``Detector.learn`` (and ``load_feedback`` at start-up). Borderline messages
can be confirmed by an LLM through ``judge_with_llm``; threads escalate through
``escalation``; competitor mentions come from ``CompetitorWatch``.
"""

from handlers.detect.competitors import CompetitorMention, CompetitorWatch
from handlers.detect.escalation import (
    Escalation,
    EscalationPolicy,
    IncidentIndex,
    ThreadEvent,
    escalate,
    is_agreement,
)
from handlers.detect.evaluate import EvalInputError, evaluate, load_labelled_csv
from handlers.detect.feedback import FeedbackConfig
from handlers.detect.llm import (
    LlmAnswer,
    LlmJudge,
    LlmStats,
    build_judge_messages,
    judge_with_llm,
    load_judge_prompt,
    parse_llm_answer,
)
from handlers.detect.model import Detector, LinearModel, Verdict
from handlers.detect.taxonomy import REASONS, SEVERITIES

__all__ = [
    "REASONS",
    "SEVERITIES",
    "CompetitorMention",
    "CompetitorWatch",
    "Detector",
    "Escalation",
    "EscalationPolicy",
    "EvalInputError",
    "FeedbackConfig",
    "IncidentIndex",
    "LinearModel",
    "LlmAnswer",
    "LlmJudge",
    "LlmStats",
    "ThreadEvent",
    "Verdict",
    "build_judge_messages",
    "escalate",
    "evaluate",
    "is_agreement",
    "judge_with_llm",
    "load_judge_prompt",
    "load_labelled_csv",
    "parse_llm_answer",
]
