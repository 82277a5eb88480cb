"""Drafting a suggested reply to a flagged message: LLM when it can, template when not.

The flow for one flag: clean and redact the community text (personal data becomes
placeholders), find the best knowledge-base sections, render the prompts, ask the model,
check its answer (no leaked prompt, not empty), restore only the member's own personal
data, and sanitise. Any failure on the way (no model, client error, breaker open, budget
spent, bad output) gives a template draft instead, so a card always has a reply to send.
Nothing here is posted: a human approves every draft.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from handlers.draft.brand import BrandConfig
from handlers.draft.knowledge import KnowledgeStore, Snippet
from handlers.draft.language import guess_language
from handlers.draft.model import (
    BudgetExceeded,
    ChatModel,
    CircuitOpen,
    LlmBadResponse,
    LlmError,
    LlmTimeout,
)
from handlers.draft.pii import PiiVault
from handlers.draft.prompting import (
    CONTEXT_TAG,
    KB_TAG,
    MEMBER_TAG,
    SYSTEM_CANARY,
    PromptInput,
    PromptTemplates,
    QuotedLine,
)
from handlers.draft.sanitize import fold, sanitize
from handlers.draft.untrusted import clean, quote_untrusted
from handlers.judging import DraftJob, DraftResult
from handlers.ports import KB_SOURCES_PREFIX

logger = logging.getLogger(__name__)

DraftKind = Literal["llm", "template"]
# Run on the cleaned, folded answer (no zero-width characters, look-alikes mapped, lower
# case), so "RPT-\u200bSYS" or full-width brackets do not hide a leak.
_LEAK = re.compile(
    re.escape(SYSTEM_CANARY.lower())
    + r"|<\s*/?\s*(?:"
    + "|".join((MEMBER_TAG, CONTEXT_TAG, KB_TAG))
    + r")\s*>"
)
_CANARY_ALNUM = re.sub(r"[^a-z0-9]", "", SYSTEM_CANARY.lower())
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
# An answer that repeats this many consecutive words of the system prompt is reciting it.
# Runs inside one "- …" rule line do not count: a rule tells the model what to say
# ("ask for details only through a private channel (DM or the support form), never in
# public"), and following it word for word is not a leak; reciting spans lines.
PROMPT_ECHO_WORDS = 10
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Quoted examples in the prompt (e.g. 'our billing team will check your order today') are
# wording the model is asked to imitate: echoing one is not a leak.
_QUOTED_EXAMPLE = re.compile(r"(?<![\w'])'[^'\n]{3,300}'(?![\w'])|\"[^\"\n]{3,300}\"")
_PREAMBLE = re.compile(r"^\s*(?:(?:suggested |draft(?:ed)? )?reply|answer|response)\s*:\s*", re.I)


@dataclass(frozen=True, slots=True)
class DraftRequest:
    """What the core knows about a flag, in neutral terms.

    ``context`` is a few (author, text) lines from the thread, oldest first.
    ``allowed_user_ids`` are the only user mentions a draft may keep (e.g. the member).
    """

    community_id: str
    platform: str
    member_name: str
    member_text: str
    context: Sequence[tuple[str, str]] = ()
    reason: str = "other"
    severity: str = "medium"
    language: str | None = None
    allowed_user_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Draft:
    text: str
    kind: DraftKind
    warnings: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # knowledge-base sections used
    fallback_reason: str | None = None  # why a template was used, when it was


@functools.lru_cache(maxsize=32)
def _prompt_runs(system_prompt: str, n: int = PROMPT_ECHO_WORDS) -> frozenset[tuple[str, ...]]:
    """Every run of ``n`` consecutive words in the system prompt, except runs inside one
    rule line and runs through a quoted example."""
    words: list[str] = []
    line_of: list[int] = []  # per word: its rule line's number, or -1 outside rules
    for number, line in enumerate(fold(clean(system_prompt)).splitlines()):
        rule = number if line.lstrip().startswith("-") else -1
        for k, part in enumerate(_QUOTED_EXAMPLE.split(line)):
            if k:
                words.append("")  # where an example was: no run goes through it
                line_of.append(rule)
            found = _WORD.findall(part)
            words += found
            line_of += [rule] * len(found)
    runs: set[tuple[str, ...]] = set()
    for i in range(len(words) - n + 1):
        run = tuple(words[i : i + n])
        if "" in run or (line_of[i] >= 0 and line_of[i] == line_of[i + n - 1]):
            continue
        runs.add(run)
    return frozenset(runs)


def leaks_prompt(answer: str, system_prompt: str, n: int = PROMPT_ECHO_WORDS) -> str | None:
    """Why ``answer`` looks like it repeats the system prompt, or None.

    Checks the cleaned, folded text for the marker (also with its separators changed) or
    one of our block tags, and for any run of ``n`` consecutive words of the prompt.
    """
    probe = fold(clean(answer))
    if _LEAK.search(probe) or _CANARY_ALNUM in _NOT_ALNUM.sub("", probe):
        return "answer repeats the prompt's hidden parts"
    runs = _prompt_runs(system_prompt, n)
    words = _WORD.findall(probe)
    if any(tuple(words[i : i + n]) in runs for i in range(len(words) - n + 1)):
        return "answer repeats the system prompt"
    return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: LlmError) -> str:
    if isinstance(exc, CircuitOpen):
        return "LLM circuit open"
    if isinstance(exc, BudgetExceeded):
        return "daily LLM token budget used"
    if isinstance(exc, LlmTimeout):
        return "LLM timed out"
    if isinstance(exc, LlmBadResponse):
        return f"LLM answer unusable ({exc})"
    return f"LLM unavailable ({exc})"


class Drafter:
    """Builds drafts. ``chat_model=None`` means templates only (no LLM configured).

    ``prompts_dir`` holds ``draft/*.j2`` (and ``brand.toml`` when ``brand`` is not
    given); ``kb_dir`` holds one Markdown folder per community plus ``default/``.
    ``clock`` gives "today" for the prompt. Caches (templates, KB indexes) live on the
    instance: build one Drafter at start-up and share it.
    """

    def __init__(
        self,
        chat_model: ChatModel | None,
        prompts_dir: Path,
        kb_dir: Path,
        brand: BrandConfig | None = None,
        clock: Callable[[], datetime] = _utc_now,
        *,
        context_lines: int = 6,
        kb_snippets: int = 3,
    ) -> None:
        self.chat_model = chat_model
        self.prompts_dir = prompts_dir
        self.templates = PromptTemplates(prompts_dir)
        self.knowledge = KnowledgeStore(kb_dir)
        if brand is None:
            brand_file = prompts_dir / "brand.toml"
            brand = BrandConfig.load(brand_file) if brand_file.exists() else BrandConfig()
        self.brand = brand
        self.clock = clock
        self.context_lines = context_lines
        self.kb_snippets = kb_snippets

    def system_prompt(self, platform: str, brand: BrandConfig | None = None) -> str:
        """The exact system prompt sent for ``platform`` today (tests compare against it)."""
        return self.templates.system_prompt(
            brand or self.brand, platform=platform, today=self.clock().date()
        )

    async def make(self, job: DraftJob) -> DraftResult:
        """The core's ``DraftMaker`` port (``handlers.judging``): a flag's job in, a draft out."""
        draft = await self.draft(
            DraftRequest(
                community_id=job.community_id,
                platform=job.platform,
                member_name=job.member_name,
                member_text=job.member_text,
                context=job.context,
                reason=job.reason,
                severity=job.severity,
            )
        )
        return DraftResult(draft.text, draft.kind, draft.warnings)

    async def draft(self, req: DraftRequest, *, brand: BrandConfig | None = None) -> Draft:
        """Never raises for model trouble: the worst case is a template draft."""
        brand = brand or self.brand
        member_text = clean(req.member_text)
        if req.language is None:  # the core does not know it: guess it from the text
            language = guess_language(member_text, brand.languages)
            if language is not None and language != brand.default_language:
                req = dataclasses.replace(req, language=language)
        snippets = self.knowledge.search(
            req.community_id, f"{req.reason.replace('_', ' ')} {member_text}", self.kb_snippets
        )
        if self.chat_model is None:
            return self._template(req, brand, snippets, None)
        try:
            return await self._llm_draft(self.chat_model, req, brand, member_text, snippets)
        except CircuitOpen as exc:  # the breaker logged the outage once; don't spam
            logger.debug("LLM circuit open (%s); using a template", exc)
            return self._template(req, brand, snippets, _describe(exc))
        except LlmError as exc:
            logger.warning("drafting with the LLM failed (%s); using a template", exc)
            return self._template(req, brand, snippets, _describe(exc))
        except Exception:
            logger.exception("unexpected error while drafting; using a template")
            return self._template(req, brand, snippets, "unexpected drafting error")

    async def _llm_draft(
        self,
        model: ChatModel,
        req: DraftRequest,
        brand: BrandConfig,
        member_text: str,
        snippets: list[Snippet],
    ) -> Draft:
        vault = PiiVault()
        name = clean(req.member_name) or "there"
        quoted_member = quote_untrusted(vault.redact(member_text, origin="member"))
        quoted_name = quote_untrusted(vault.redact(name, origin="member"), limit=80)
        context = [
            QuotedLine(
                quote_untrusted(vault.redact(clean(author), origin="context"), limit=80),
                quote_untrusted(vault.redact(clean(text), origin="context"), limit=1000),
            )
            for author, text in list(req.context)[-self.context_lines :]
        ]
        data = PromptInput(
            platform=req.platform,
            member_name=quoted_name,
            member_text=quoted_member,
            context=context,
            reason=quote_untrusted(req.reason, limit=60),
            severity=quote_untrusted(req.severity, limit=20),
            language=quote_untrusted(req.language, limit=20) if req.language else None,
            snippets=[
                Snippet(s.source, s.title, quote_untrusted(s.text, limit=1500), s.score)
                for s in snippets
            ],
        )
        messages = self.templates.messages(data, brand, today=self.clock().date())
        answer = await model.complete(messages, community_id=req.community_id)

        leak = leaks_prompt(answer, messages[0]["content"])
        if leak:
            raise LlmBadResponse(leak)
        answer = _PREAMBLE.sub("", answer.strip()).strip().strip('"').strip()
        restored, put_back, dropped = vault.restore(answer, origins=("member",))
        if not restored.strip():
            raise LlmBadResponse("empty answer")
        result = sanitize(
            restored,
            req.platform,
            brand.allowed_domains,
            member_text,
            allowed_user_ids=req.allowed_user_ids,
            allowed_promises=brand.allowed_promises,
            allowed_contacts=brand.allowed_contacts,
        )
        if not result.text.strip():
            raise LlmBadResponse("nothing left after sanitising")
        warnings = list(result.warnings)
        if dropped:
            warnings.append("personal data placeholder removed")
        if put_back:
            warnings.append("quotes the member's own personal data — keep it out of a public reply")
        sources = tuple(s.source for s in snippets)
        if sources:
            warnings.append(KB_SOURCES_PREFIX + "; ".join(sources))
        return Draft(result.text, "llm", tuple(dict.fromkeys(warnings)), sources)

    def _template(
        self,
        req: DraftRequest,
        brand: BrandConfig,
        snippets: list[Snippet],
        why: str | None,
    ) -> Draft:
        top = snippets[0] if snippets else None
        name = clean(req.member_name) or "there"
        text = self.templates.fallback(
            reason=req.reason,
            language=req.language,
            brand=brand,
            member_name=name,
            severity=req.severity,
            snippet=top,
        )
        result = sanitize(
            text,
            req.platform,
            brand.allowed_domains,
            req.member_text,
            allowed_user_ids=req.allowed_user_ids,
            allowed_promises=brand.allowed_promises,
            allowed_contacts=brand.allowed_contacts,
        )
        warnings = [f"template reply: {why}" if why else "template reply (no LLM configured)"]
        warnings.extend(w for w in result.warnings if not w.startswith("promises "))
        sources = (top.source,) if top else ()
        if sources:
            warnings.append(KB_SOURCES_PREFIX + sources[0])
        return Draft(result.text, "template", tuple(dict.fromkeys(warnings)), sources, why)
