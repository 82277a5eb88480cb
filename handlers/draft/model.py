"""The chat-model port the drafting core depends on, and the errors it may raise.

The core never imports an HTTP library: ``bot/llm.py`` implements :class:`ChatModel`
against an OpenAI-compatible endpoint, tests may implement it in-process. The error
types live here, beside the port, so the core can tell a budget stop from an outage
without knowing who raised it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypedDict


class ChatMessage(TypedDict):
    """One chat message, already in the wire shape OpenAI-compatible servers expect."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatModel(Protocol):
    """Anything that turns a conversation into one completion text."""

    async def complete(
        self, messages: Sequence[ChatMessage], *, community_id: str, json_mode: bool = False
    ) -> str: ...


class LlmError(Exception):
    """Any failure of the chat model; callers fall back to a template draft on it."""


class LlmUnavailable(LlmError):
    """The endpoint refused or failed (auth, rate limit, 5xx, network)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class LlmTimeout(LlmError):
    """No complete answer arrived before the overall deadline."""


class LlmBadResponse(LlmError):
    """The endpoint answered, but not with a usable completion (bad JSON, empty, refusal)."""


class CircuitOpen(LlmUnavailable):
    """Failing fast: recent calls failed, so the endpoint is not tried until a cooldown ends."""


class BudgetExceeded(LlmError):
    """The community has used its daily token budget; drafts come from templates until tomorrow."""

    def __init__(self, community_id: str, used: int, budget: int) -> None:
        super().__init__(f"community {community_id} used {used} of {budget} tokens today")
        self.community_id = community_id
        self.used = used
        self.budget = budget
