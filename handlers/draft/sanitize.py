"""Model output is untrusted: make a drafted reply safe to show and to post.

A prompt-injected (or merely wrong) model can echo ``@everyone``, invent links, leak a
phone number from the thread, or promise a refund the brand never offered. Everything
here runs on the drafted text before a manager sees it:

- mass mentions are neutralised for both platforms (``@everyone``/``@here``, Discord
  role mentions ``<@&id>``, Slack ``<!channel>``/``<!here>``/``<!subteam^…>``), also when
  hidden behind zero-width characters, full-width ``＠`` or look-alike letters; user
  mentions survive only for allowed ids;
- links survive only when their host is on the brand's allow-list (bare URLs, bare
  domains, Markdown links, Slack ``<url|label>``);
- personal data the member did not write themselves is removed;
- the text is capped to what the platform accepts;
- promises the brand has not allowed become warnings for the card.

Detection runs on a *folded* copy (one character per character: full-width and
look-alike letters mapped to ASCII, lower-cased) so positions line up with the real
text. The steps repeat until nothing changes, which makes the function idempotent.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from handlers.draft.pii import find_pii, pii_key, pii_keys, replace_spans
from handlers.draft.untrusted import strip_hidden

logger = logging.getLogger(__name__)

PLATFORM_LIMITS: dict[str, int] = {"discord": 2000, "slack": 3000}
DEFAULT_LIMIT = 2000
LINK_REMOVED = "[link removed]"
PII_REMOVED = "[redacted]"

_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕһԁԛԝɡӏАВЕКМНОРСТХУІЅЈαονειкκρτυχΟΑΒΕΗΙΚΜΝΡΤΧΥΖ’ʼ‘＠﹫＜﹤＞﹥",
    "aeopcyxijshdqwglabekmhopctxyisjaoveikkptuxoabehikmnptxyz'''@@<<>>",
)


def _fold_char(ch: str) -> str:
    mapped = ch.translate(_HOMOGLYPHS)
    if mapped == ch and not ch.isascii():
        nfkc = unicodedata.normalize("NFKC", ch)
        if len(nfkc) == 1:
            mapped = nfkc
    lower = mapped.lower()
    return lower if len(lower) == 1 else mapped


def _fold_table() -> dict[int, str]:
    """Built once at import for the blocks where look-alikes live (Latin, Greek, Cyrillic,
    punctuation, letter-like and enclosed forms, full-width, mathematical letters)."""
    blocks = [
        (0x80, 0x530),
        (0x1D00, 0x1FFF),
        (0x2000, 0x2BFF),
        (0xFE50, 0xFE6F),
        (0xFF00, 0xFFEF),
        (0x1D400, 0x1D7FF),
        (0x1F100, 0x1F1FF),
    ]
    table: dict[int, str] = {}
    for lo, hi in blocks:
        for cp in range(lo, hi):
            ch = chr(cp)
            folded = _fold_char(ch)
            if folded != ch:
                table[cp] = folded
    return table


_FOLD = _fold_table()


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _fold_match(m: re.Match[str]) -> str:
    ch = m.group()
    return _FOLD.get(ord(ch), ch)


def fold(text: str) -> str:
    """Same-length detection copy: look-alikes to ASCII, lower case."""
    if text.isascii():
        return text.lower()
    folded = _NON_ASCII.sub(_fold_match, text)
    lower = folded.lower()
    if len(lower) == len(text):
        return lower
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in folded)


# -- mentions -------------------------------------------------------------------------
_MASS_AT = re.compile(r"@+(?=everyone|here|channel)|@+(?=(?:all|room|group)\b)")
_OPENER = re.compile(r"<(?=!|@&)")
_ANGLE_MENTION = re.compile(
    r"<!(?P<special>[^<>]{0,200})>"  # Slack <!channel> <!here> <!subteam^S1|@team> …
    r"|<@(?P<kind>[!&]?)(?P<id>[a-z0-9]{1,40})(?:\|[^<>]{0,200})?>"  # <@1>, <@!1>, <@&1>, <@U1|x>
)


def _mentions(text: str, allowed_user_ids: Collection[str], warn: list[str]) -> str:
    folded = fold(text)
    if "@" not in folded and "<!" not in folded:
        return text
    spans: list[tuple[int, int, str]] = []
    for m in _ANGLE_MENTION.finditer(folded):
        if m.group("special") is not None or m.group("kind") == "&":
            spans.append((m.start(), m.end(), ""))
            warn.append("mass mention removed")
            continue
        user_id = text[m.start("id") : m.end("id")]
        if user_id in allowed_user_ids:
            continue
        spans.append((m.start(), m.end(), ""))
        warn.append("user mention removed")
    if spans:
        text = replace_spans(text, spans)
        folded = fold(text)
    # Unterminated openers too, so no later edit can complete one into a mention.
    at_spans = [(m.start(), m.end(), "") for m in _MASS_AT.finditer(folded)]
    at_spans += [(m.start(), m.end(), "") for m in _OPENER.finditer(folded)]
    if at_spans:
        warn.append("mass mention removed")
        text = replace_spans(text, at_spans)
    return text


# -- links ----------------------------------------------------------------------------
_TLDS = (  # noqa: SIM905
    "com net org edu gov io co ai app dev gg me info biz xyz ly to tv us uk de fr es it "
    "nl eu ca au ru cn jp in br ch se no dk fi pl cz at be pt ie nz sh gl link site "
    "online shop store tech cloud page live news blog club top icu cc ws su ir kr tw hk "
    "sg mx ar cl za tk ml ga cf gq pw click download zip mov lol help support example"
).split()
_URL_CHARS = r"[^\s<>]"


_DNS_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


@functools.lru_cache(maxsize=16)
def _tld_pattern(extra_tlds: tuple[str, ...]) -> tuple[str, re.Pattern[str]]:
    tlds = "|".join(sorted({*_TLDS, *extra_tlds}, key=len, reverse=True))
    return tlds, re.compile(r"\.(?:" + tlds + r")(?![\w\-])")


@functools.lru_cache(maxsize=256)
def _link_regex(extra_tlds: tuple[str, ...], parts: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation per kind of link that the text can contain at all (cheap pre-checks
    decide ``parts``), so ordinary prose is not scanned for every kind."""
    tlds, _ = _tld_pattern(extra_tlds)
    alts: list[str] = []
    if "md" in parts:
        alts.append(
            r"\[(?P<label>[^\[\]\n]{0,500})\]\(\s*<?(?P<mdurl>[^()\s<>]{1,2000})>?"
            r"(?:\s+\"[^\"\n]{0,200}\")?\s*\)"
        )
    if "angle" in parts:
        alts.append(
            r"<(?P<aurl>[a-z][a-z0-9+.\-]{0,15}:[^|<>\s]{1,2000})(?:\|(?P<alabel>[^<>]{0,500}))?>"
        )
    bare: list[str] = []
    if "scheme" in parts:  # any run before "://" counts: "0http://x" still links "http://x"
        bare.append(r"(?<![a-z0-9+.\-])[a-z0-9+.\-]++://" + _URL_CHARS + r"+")
    if "www" in parts:
        bare.append(r"(?<![\w.\-])www\." + _URL_CHARS + r"+")
    if "bare" in parts:
        bare.append(
            r"(?<![\w.\-@])(?:[\w\-]{1,63}+\.)+(?:" + tlds + r")(?![\w\-])(?::\d{1,5})?"
            r"(?:/" + _URL_CHARS + r"*)?"
        )
    if bare:
        alts.append("(?P<url>" + "|".join(bare) + ")")
    return re.compile("|".join(alts)) if alts else None


def _link_finder(folded: str, allowed: tuple[str, ...]) -> re.Pattern[str] | None:
    extra = tuple(sorted({d.rsplit(".", 1)[-1] for d in allowed}))
    parts: list[str] = []
    if "](" in folded:
        parts.append("md")
    if "<" in folded and ":" in folded:
        parts.append("angle")
    if "://" in folded:
        parts.append("scheme")
    if "www." in folded:
        parts.append("www")
    if _tld_pattern(extra)[1].search(folded):
        parts.append("bare")
    return _link_regex(extra, tuple(parts)) if parts else None


def _trim_trailing(url: str) -> str:
    """Sentence punctuation after a bare URL is not part of it; a closing paren may be."""
    while url:
        last = url[-1]
        if last in ".,;:!?'\"`]}*_~" or (last == ")" and url.count("(") < url.count(")")):
            url = url[:-1]
            continue
        break
    return url


def _domain_allowed(url: str, allowed_domains: Collection[str]) -> tuple[bool, str]:
    """(allowed?, host). Only http(s), ASCII hosts, no userinfo, on the allow-list."""
    candidate = url if "://" in url else f"http://{url}"
    if "\\" in candidate:
        return False, candidate
    try:
        parts = urlsplit(candidate)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return False, candidate[:60]
    if parts.scheme.lower() not in ("http", "https") or "@" in parts.netloc:
        return False, host or candidate[:60]
    if not _DNS_HOST.fullmatch(host):  # non-ASCII look-alikes, "!", "%" tricks…
        return False, host
    host = host.lower()
    ok = any(host == d or host.endswith("." + d) for d in allowed_domains)
    return ok, host


def _allowed_lower(allowed_domains: Iterable[str]) -> tuple[str, ...]:
    return tuple(d.strip().lower().lstrip(".") for d in allowed_domains if d.strip())


def _links(text: str, allowed: tuple[str, ...], warn: list[str]) -> str:
    folded = fold(text)
    regex = _link_finder(folded, allowed)
    if regex is None:
        return text
    spans: list[tuple[int, int, str]] = []
    for m in regex.finditer(folded):
        groups = m.groupdict()
        if groups.get("mdurl") is not None:
            url = text[m.start("mdurl") : m.end("mdurl")]
            label = text[m.start("label") : m.end("label")]
            ok, host = _domain_allowed(url, allowed)
            if ok:
                inner = _links(label, allowed, warn)
                if inner != label:
                    spans.append((m.start("label"), m.end("label"), inner))
                continue
            spans.append((m.start(), m.end(), label if label.strip() else LINK_REMOVED))
        elif groups.get("aurl") is not None:
            url = text[m.start("aurl") : m.end("aurl")]
            label = text[m.start("alabel") : m.end("alabel")] if groups.get("alabel") else ""
            ok, host = _domain_allowed(url, allowed)
            if ok:
                # The label is shown as text: a link inside it is a link like any other.
                if label:
                    inner = _links(label, allowed, warn)
                    if inner != label:
                        spans.append((m.start("alabel"), m.end("alabel"), inner))
                continue
            spans.append((m.start(), m.end(), label if label.strip() else LINK_REMOVED))
        else:
            start = m.start("url")
            url = _trim_trailing(text[start : m.end("url")])
            if not url:
                continue
            ok, host = _domain_allowed(url, allowed)
            if ok:
                continue
            spans.append((start, start + len(url), LINK_REMOVED))
        warn.append(f"link removed ({host})" if host else "link removed")
    return replace_spans(text, spans) if spans else text


def _kept_link_spans(text: str, allowed: tuple[str, ...]) -> list[tuple[int, int]]:
    """Where the *addresses* of links are. Only the address is exempt from the personal
    data check: a label is shown as text, so someone else's number in it is removed."""
    folded = fold(text)
    regex = _link_finder(folded, allowed)
    if regex is None:
        return []
    spans: list[tuple[int, int]] = []
    for m in regex.finditer(folded):
        groups = m.groupdict()
        for group in ("mdurl", "aurl", "url"):
            if groups.get(group) is not None:
                spans.append((m.start(group), m.end(group)))
                break
    return spans


# -- personal data --------------------------------------------------------------------
def _same_phone(digits: str, keys: frozenset[str]) -> bool:
    """ "+1 555 010 2233" and "555-010-2233" are one number: compare without the prefix."""
    for key in keys:
        kind, _, other = key.partition(":")
        long_enough = min(len(other), len(digits)) >= 7
        if kind == "PHONE" and long_enough and (other.endswith(digits) or digits.endswith(other)):
            return True
    return False


def _personal_data(
    text: str,
    member_keys: frozenset[str],
    allowed: tuple[str, ...],
    allowed_contacts: frozenset[str],
    warn: list[str],
) -> str:
    found = find_pii(text)
    if not found:
        return text
    links = _kept_link_spans(text, allowed)
    spans: list[tuple[int, int, str]] = []
    for p in found:
        if any(p.start < e and p.end > s for s, e in links):
            continue
        key = f"{p.kind}:{p.key}"
        if key in member_keys or key in allowed_contacts:
            continue
        if p.kind == "PHONE" and _same_phone(p.key, member_keys | allowed_contacts):
            continue
        if p.kind == "EMAIL":
            domain = p.value.rsplit("@", 1)[-1].lower()
            if any(domain == d or domain.endswith("." + d) for d in allowed):
                continue
        spans.append((p.start, p.end, PII_REMOVED))
        warn.append("personal data removed")
    return replace_spans(text, spans) if spans else text


# -- length ---------------------------------------------------------------------------
def _cap(text: str, limit: int, warn: list[str]) -> str:
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 3)]
    space = cut.rfind(" ")
    if space > limit - 200:
        cut = cut[:space]
    warn.append(f"shortened to fit {limit} characters")
    return cut.rstrip() + "..."


# -- promises -------------------------------------------------------------------------
PROMISE_RULES: dict[str, tuple[str, re.Pattern[str]]] = {
    # A reply to a refund complaint names refunds; only a commitment to one is a promise.
    "refund": (
        "a refund",
        re.compile(
            r"\b(?:we|i)(?:'ll| will|'d| would| have|'ve| are going to| am going to"
            r"| can(?!'t|not)| shall|'re| are|'m| am)"
            r"(?: (?:be )?(?:happy|glad|pleased) to| also| now| personally| gladly| certainly)?"
            r" (?:refund|reimburs\w*|(?:issu|process|send|giv|pay|get|arrang)\w*"
            r"[^.!?\n]{0,30}?\b(?:refund\w*|money back|reimburs\w*))"
            r"|\byou(?:'ll| will) (?:get|receive|be (?:getting|given|refunded))"
            r"[^.!?\n]{0,30}?\b(?:refund\w*|money back|reimburs\w*)"
            # "…will be refunded", "you're refunded", "is being reimbursed"
            r"|\b(?:will|shall|'ll|is being|are being|you're|you are|you get|you'll get)"
            r" (?:be )?(?:fully |promptly |completely )?(?:refunded|reimbursed)"
            r"|\b(?:refund(?:ed)? you|full refund|(?:refund|reimbursement) "
            r"(?:has been|is being|will be) (?:issued|processed|sent|approved))\b"
        ),
    ),
    "compensation": (
        "compensation",
        re.compile(
            r"\b(?:compensat\w*|make (?:it|this|that) up to you|goodwill gesture"
            r"|(?:cover|pay for|pick up) (?:the |all |any |your )?(?:full |whole |entire )?"
            r"(?:costs?|bill|expenses?|fees?|repairs?|damages?)"
            r"|at (?:our|no) (?:own )?(?:extra |additional )?(?:expense|cost|charge))\b"
        ),
    ),
    "credit": (
        "account credit",
        re.compile(r"\b(?:credits?\b(?!\s*cards?)|credited|store credit)"),
    ),
    "discount": (
        "a discount or freebie",
        re.compile(
            r"\b(?:discount\w*|coupon\w*|voucher\w*|promo codes?|free (?:month|months|year|"
            r"upgrade|shipping|of charge|replacement)|for free|on the house|waive\w*)\b"
        ),
    ),
    "liability": (
        "an admission of legal liability",
        re.compile(
            r"\b(?:(?:it'?s|it is|this is|that'?s|that is|was) (?:entirely |all |totally )?"
            r"our fault|our fault|we(?:'re| are| were) (?:legally )?(?:liable|at fault|"
            r"responsible for (?:the|your|any|all) (?:damage|loss|losses|injur\w*))|"
            r"we(?: (?:fully|completely))? (?:accept|take|assume|bear) "
            r"(?:full |all |complete |total )?(?:liability|responsibility)|"
            r"admit\w* (?:liability|fault)|"
            r"negligen\w*|we breached)"
        ),
    ),
    "guarantee": (
        "a guarantee",
        re.compile(r"\b(?:guarantee\w*|we promise|i promise|100% sure)\b"),
    ),
}


_PROMISE_HINT = re.compile(
    r"refund|money|reimburs|chargeback|compensat|make (?:it|this|that) up|goodwill|credit|"
    r"discount|coupon|voucher|promo|free|on the house|waive|fault|liab|responsib|admit|"
    r"cover|pay for|pick up|at (?:our|no) |"
    r"negligen|breach|guarantee|promise|100%"
)
_PROMISES = re.compile(
    "|".join(f"(?P<{name}>{regex.pattern})" for name, (_, regex) in PROMISE_RULES.items())
)


def promise_warnings(text: str, allowed_promises: Collection[str] = ()) -> list[str]:
    """Promises in ``text`` the brand has not allowed, as card warnings."""
    folded = fold(text)
    if not _PROMISE_HINT.search(folded):  # cheap keyword scan first: most drafts promise nothing
        return []
    found = {m.lastgroup for m in _PROMISES.finditer(folded)}
    return [
        f"promises {label} — not allowed by brand policy"
        for name, (label, _) in PROMISE_RULES.items()
        if name in found and name not in allowed_promises
    ]


# -- the function ---------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _member_keys(member_text: str) -> frozenset[str]:
    return pii_keys(strip_hidden(member_text))


@functools.lru_cache(maxsize=16)
def _contact_keys(contacts: tuple[str, ...]) -> frozenset[str]:
    return frozenset(k for c in contacts for k in pii_keys(c)) | frozenset(
        f"{kind}:{pii_key(kind, c)}" for c in contacts for kind in ("EMAIL", "PHONE")
    )


@dataclass(frozen=True, slots=True)
class SanitizedText:
    text: str
    warnings: tuple[str, ...]


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def sanitize(
    text: str,
    platform: str,
    allowed_domains: Iterable[str],
    member_text: str,
    *,
    allowed_user_ids: Collection[str] = (),
    allowed_promises: Collection[str] = (),
    allowed_contacts: Iterable[str] = (),
    max_len: int | None = None,
) -> SanitizedText:
    """Neutralise mentions, off-list links and others' personal data; cap; flag promises.

    Idempotent: ``sanitize(sanitize(x).text, …).text == sanitize(x).text``.
    """
    allowed = _allowed_lower(allowed_domains)
    limit = max_len or PLATFORM_LIMITS.get(platform, DEFAULT_LIMIT)
    member_keys = _member_keys(member_text)
    contacts = _contact_keys(tuple(allowed_contacts))
    warn: list[str] = []
    current = text
    for _ in range(8):
        step = strip_hidden(current)
        step = _mentions(step, allowed_user_ids, warn)
        step = _links(step, allowed, warn)
        step = _personal_data(step, member_keys, allowed, contacts, warn)
        step = _cap(step, limit, warn)
        if step == current:
            break
        current = step
    else:
        logger.warning("sanitiser did not settle; dropping the drafted text")
        current = ""
        warn.append("draft could not be made safe; write the reply by hand")
    warn.extend(promise_warnings(current, allowed_promises))
    return SanitizedText(current, _dedupe(warn))
