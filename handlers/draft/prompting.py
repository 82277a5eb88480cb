"""Rendering the prompts and the fallback replies from Jinja2 templates in ``prompts/draft``.

Templates are brand-editable data, so they render in Jinja2's sandbox with strict
undefined variables (a typo fails loudly in tests, not silently in a prompt). Community
text only ever enters as a variable, already escaped, never as template source.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from handlers.draft.brand import BrandConfig
from handlers.draft.knowledge import Snippet
from handlers.draft.model import ChatMessage

logger = logging.getLogger(__name__)

# A marker only the system prompt carries; an answer containing it leaked the prompt.
SYSTEM_CANARY = "RPT-SYS-7f3a"
MEMBER_TAG = "member_message"
CONTEXT_TAG = "thread_context"
KB_TAG = "knowledge_base"


@dataclass(frozen=True, slots=True)
class QuotedLine:
    author: str
    text: str


@dataclass(frozen=True, slots=True)
class PromptInput:
    """Everything the user prompt shows; text fields are already redacted and escaped."""

    platform: str
    member_name: str
    member_text: str
    context: Sequence[QuotedLine]
    reason: str
    severity: str
    language: str | None
    snippets: Sequence[Snippet]


def normalise_reason(reason: str) -> str:
    return "_".join(reason.strip().lower().replace("-", " ").split()) or "other"


class PromptTemplates:
    """Loads ``<prompts_dir>/draft/*.j2``; one instance per Drafter."""

    def __init__(self, prompts_dir: Path) -> None:
        self.root = prompts_dir / "draft"
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(str(self.root)),
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self._system = self._env.get_template("system.j2")
        self._user = self._env.get_template("user.j2")

    def system_prompt(self, brand: BrandConfig, *, platform: str, today: date) -> str:
        """Depends only on brand, platform and date: never on community text."""
        return self._system.render(
            brand=brand,
            platform=platform,
            today=today.isoformat(),
            canary=SYSTEM_CANARY,
            member_tag=MEMBER_TAG,
            context_tag=CONTEXT_TAG,
            kb_tag=KB_TAG,
        ).strip()

    def user_prompt(self, data: PromptInput, brand: BrandConfig) -> str:
        return self._user.render(
            d=data,
            brand=brand,
            member_tag=MEMBER_TAG,
            context_tag=CONTEXT_TAG,
            kb_tag=KB_TAG,
        ).strip()

    def messages(self, data: PromptInput, brand: BrandConfig, *, today: date) -> list[ChatMessage]:
        return [
            {
                "role": "system",
                "content": self.system_prompt(brand, platform=data.platform, today=today),
            },
            {"role": "user", "content": self.user_prompt(data, brand)},
        ]

    def fallback(
        self,
        *,
        reason: str,
        language: str | None,
        brand: BrandConfig,
        member_name: str,
        severity: str,
        snippet: Snippet | None,
    ) -> str:
        """The per-reason reply template (``fallback/<lang>/<reason>.j2`` first)."""
        reason = normalise_reason(reason)
        names = []
        if language:
            lang = language.lower().split("-")[0]
            names += [f"fallback/{lang}/{reason}.j2", f"fallback/{lang}/default.j2"]
        names += [f"fallback/{reason}.j2", "fallback/default.j2"]
        try:
            template = self._env.select_template(names)
        except TemplateNotFound:
            logger.exception("no fallback reply template under %s", self.root)
            raise
        kb_answer = ""
        if snippet is not None:
            kb_answer = snippet.text.split("\n\n")[0].strip()
            if len(kb_answer) > 400:
                kb_answer = kb_answer[:400].rsplit(" ", 1)[0] + "…"
        return template.render(
            brand=brand,
            member_name=member_name,
            reason=reason,
            severity=severity,
            kb_answer=kb_answer,
            kb_title=snippet.title if snippet else "",
        ).strip()
