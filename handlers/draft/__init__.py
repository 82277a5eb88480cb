"""Drafting suggested replies to flagged messages (platform-neutral, no HTTP here).

Public API: :class:`Drafter` (``await drafter.draft(DraftRequest(...))`` or the core's
``DraftMaker.make(job)``), the :class:`ChatModel` port that ``bot/llm.py`` implements,
its error types, and :func:`sanitize` for any text about to be posted.
"""

from handlers.draft.brand import BrandConfig
from handlers.draft.drafter import Draft, Drafter, DraftRequest
from handlers.draft.knowledge import KnowledgeStore, Snippet
from handlers.draft.model import (
    BudgetExceeded,
    ChatMessage,
    ChatModel,
    CircuitOpen,
    LlmBadResponse,
    LlmError,
    LlmTimeout,
    LlmUnavailable,
)
from handlers.draft.sanitize import SanitizedText, sanitize

__all__ = [
    "BrandConfig",
    "BudgetExceeded",
    "ChatMessage",
    "ChatModel",
    "CircuitOpen",
    "Draft",
    "DraftRequest",
    "Drafter",
    "KnowledgeStore",
    "LlmBadResponse",
    "LlmError",
    "LlmTimeout",
    "LlmUnavailable",
    "SanitizedText",
    "Snippet",
    "sanitize",
]
