"""Personal data: find it, swap it for placeholders before the LLM, restore it after.

The model never needs a member's email, phone, card or street address to write a
reply, so none of them leaves for the endpoint: they become ``[EMAIL_1]``-style
placeholders, and only the member's own values are put back in the text the manager
sees. Detection is pattern-based (with a Luhn check for cards and mod-97 for IBANs):
it errs towards redacting, since a redacted value costs nothing once restored.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+|\b00)?\d(?:[ ().\-/]{0,2}\d){6,16}(?![\w])")
_DATE_LIKE = re.compile(
    r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
    r"(?:[ T]\d{1,2}[:.]\d{2})?$"
)
_STREET_SUFFIX = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    r"terrace|circle|square|sq|parkway|pkwy|highway|hwy|close|crescent|alley"
)
# Street-address-like strings: "221B Baker Street, apt 4", "Hauptstraße 5", "12 rue de la Paix".
_ADDRESS_NUMBER_FIRST = re.compile(
    r"\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Za-z][\w'.-]*+\s+){1,4}?(?:" + _STREET_SUFFIX + r")\b\.?"
    r"(?:,?\s*(?:apt|apartment|suite|ste|unit|flat|#)\.?\s*[\w-]{1,6})?"
    r"|\b\d{1,4},?\s+(?:rue|avenue|boulevard|chemin|impasse|allée)\s+(?:[\w'-]+\s?){1,5}",
    re.IGNORECASE,
)
_ADDRESS_NAME_FIRST = re.compile(
    r"\b[A-ZÄÖÜ][\wäöüß-]*?(?:straße|strasse|str\.|weg|gasse|platz|allee)\s+\d{1,4}[a-z]?\b",
    re.IGNORECASE,
)
_NAME_FIRST_HINTS = ("straße", "strasse", "str.", "weg", "gasse", "platz", "allee")
_NOT_STREET_WORDS = frozenset(
    "a an the on in of for to and or my your our their his her its hours hour days day "  # noqa: SIM905
    "minutes weeks months years times ago more than all way".split()
)
_ANY_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"[\d+][\d ().\-/]{6,}")  # could hold 7+ digits: phones, cards
_IBAN_HINT = re.compile(r"[A-Z]{2}\d\d")
PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|IBAN|ADDRESS)_(\d{1,4})\]")


@dataclass(frozen=True, slots=True)
class PiiMatch:
    kind: str  # EMAIL | PHONE | CARD | IBAN | ADDRESS
    start: int
    end: int
    value: str

    @property
    def key(self) -> str:
        return pii_key(self.kind, self.value)


def pii_key(kind: str, value: str) -> str:
    """A normal form, so "+1 (555) 010-2233" and "15550102233" are the same phone."""
    if kind in ("PHONE", "CARD"):
        return re.sub(r"\D", "", value)
    if kind == "IBAN":
        return value.replace(" ", "").upper()
    return " ".join(value.lower().split())


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(value: str) -> bool:
    s = value.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _address_ok(value: str) -> bool:
    words = re.findall(r"[A-Za-z']+", value.lower())
    return not any(w in _NOT_STREET_WORDS for w in words[:-1])


def find_pii(text: str) -> list[PiiMatch]:
    """Non-overlapping personal-data matches, most specific kind first."""
    found: list[PiiMatch] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    def add(kind: str, m: re.Match[str]) -> None:
        found.append(PiiMatch(kind, m.start(), m.end(), m.group()))
        taken.append((m.start(), m.end()))

    if "@" in text:
        for m in _EMAIL.finditer(text):
            add("EMAIL", m)
    if not _ANY_DIGIT.search(text):
        return found
    numbers = any(sum(c.isdigit() for c in run.group()) >= 7 for run in _DIGIT_RUN.finditer(text))
    for m in _IBAN.finditer(text) if _IBAN_HINT.search(text) else ():
        if free(m.start(), m.end()) and _iban_ok(m.group()):
            add("IBAN", m)
    for m in _CARD.finditer(text) if numbers else ():
        digits = re.sub(r"\D", "", m.group())
        if free(m.start(), m.end()) and 13 <= len(digits) <= 19 and luhn_ok(digits):
            add("CARD", m)
    for m in _PHONE.finditer(text) if numbers else ():
        value = m.group()
        digits = re.sub(r"\D", "", value)
        if not free(m.start(), m.end()) or not 7 <= len(digits) <= 15:
            continue
        if _DATE_LIKE.match(value.strip()):
            continue
        plain = value.isdigit()
        if plain and len(digits) < 10:
            continue  # short bare numbers are order ids, amounts, counts
        add("PHONE", m)
    addresses = list(_ADDRESS_NUMBER_FIRST.finditer(text))
    lower = text.lower()
    if any(hint in lower for hint in _NAME_FIRST_HINTS):
        addresses += _ADDRESS_NAME_FIRST.finditer(text)
    for m in addresses:
        if free(m.start(), m.end()) and _address_ok(m.group()):
            add("ADDRESS", m)
    found.sort(key=lambda p: p.start)
    return found


def pii_keys(text: str) -> frozenset[str]:
    """Normal forms of the personal data in ``text`` (what a member wrote themselves)."""
    return frozenset(f"{p.kind}:{p.key}" for p in find_pii(text))


def replace_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """Apply non-overlapping (start, end, replacement) edits."""
    out: list[str] = []
    pos = 0
    for start, end, repl in sorted(spans):
        out.append(text[pos:start])
        out.append(repl)
        pos = end
    out.append(text[pos:])
    return "".join(out)


class PiiVault:
    """Placeholders for one draft: the same value always gets the same placeholder.

    ``origin`` records whose text a value came from; only values of the origins passed to
    :meth:`restore` are put back (a reply to one member must not carry another's data).
    """

    def __init__(self) -> None:
        self._by_key: dict[str, str] = {}
        self._values: dict[str, tuple[str, str]] = {}  # placeholder -> (value, origin)
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._values)

    def redact(self, text: str, *, origin: str) -> str:
        # A member typing "[EMAIL_1]" must not be able to pull someone's data back in.
        text = PLACEHOLDER.sub(lambda m: f"({m.group(1)}_{m.group(2)})", text)
        spans: list[tuple[int, int, str]] = []
        for p in find_pii(text):
            full_key = f"{p.kind}:{p.key}"
            placeholder = self._by_key.get(full_key)
            if placeholder is None:
                n = self._counts.get(p.kind, 0) + 1
                self._counts[p.kind] = n
                placeholder = f"[{p.kind}_{n}]"
                self._by_key[full_key] = placeholder
                self._values[placeholder] = (p.value, origin)
            spans.append((p.start, p.end, placeholder))
        return replace_spans(text, spans)

    def restore(self, text: str, *, origins: Collection[str]) -> tuple[str, int, int]:
        """Put back values from ``origins``; other or unknown placeholders are dropped.

        Returns the text, how many placeholders were restored and how many dropped.
        """
        restored = dropped = 0

        def sub(m: re.Match[str]) -> str:
            nonlocal restored, dropped
            entry = self._values.get(m.group())
            if entry is not None and entry[1] in origins:
                restored += 1
                return entry[0]
            dropped += 1
            return "[redacted]"

        return PLACEHOLDER.sub(sub, text), restored, dropped

    def values(self) -> list[str]:
        return [value for value, _ in self._values.values()]
