"""Preparing community text before it goes into a prompt.

Member messages are untrusted input to the model: they may carry invisible characters
(zero-width, bidi controls, Unicode tag characters that smuggle instructions a human
cannot see), fake chat-role markers, or text that tries to close our delimiters. Here
they are cleaned and escaped so that, inside the prompt, they can only ever read as
quoted data.
"""

from __future__ import annotations

import re
import unicodedata

# Invisible or control characters with no place in a chat message. Cc except \t \n,
# all of Cf (zero-width, bidi, tags, soft hyphen, …), variation selectors, fillers.
_HIDDEN = re.compile(
    "["
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164"
    "\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
    "\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e007f\U000e0100-\U000e01ef"
    "\ud800-\udfff"
    "]"
)
_ODD_BREAKS = re.compile("[\u2028\u2029\x85]")

# Chat-template tokens and role markers some models obey even mid-text.
_ROLE_MARKERS = re.compile(
    r"<\|[^|<>\n]{0,40}\|>"  # <|im_start|>, <|system|>, <|eot_id|>
    r"|\[/?\s*(?:INST|SYS|SYSTEM|ASSISTANT|USER)\s*\]"  # [INST], [/INST], [SYSTEM]
    r"|<<\s*/?\s*SYS\s*>>"  # <<SYS>>
    r"|</?\s*(?:system|assistant|user|developer|tool|im_start|im_end|instructions?|s)\b[^<>\n]{0,60}>"
    r"|^[ \t>#*_-]*(?:system|assistant|developer|tool)(?:\s+(?:prompt|message|note))?\s*:",
    re.IGNORECASE | re.MULTILINE,
)
ROLE_MARKER_REPLACEMENT = "[role marker removed]"

# Our delimiters are XML-like tags; no angle bracket from community text survives.
_ESCAPES = str.maketrans({"<": "‹", ">": "›"})


def strip_hidden(text: str) -> str:
    """Drop invisible/control characters; normalise line breaks to ``\\n``."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = _ODD_BREAKS.sub("\n", text)
    return _HIDDEN.sub("", text)


def clean(text: str) -> str:
    """Hidden characters out, then NFKC so look-alike forms (＠, ｅ) become plain text."""
    return strip_hidden(unicodedata.normalize("NFKC", strip_hidden(text)))


def neutralise_roles(text: str) -> str:
    """Replace fake role/system markers so the text cannot pose as another speaker."""
    return _ROLE_MARKERS.sub(ROLE_MARKER_REPLACEMENT, text)


def escape_for_block(text: str) -> str:
    """Make ``text`` safe inside a ``<tag>…</tag>`` block: no angle bracket can close it."""
    return text.translate(_ESCAPES)


def quote_untrusted(text: str, *, limit: int = 4000) -> str:
    """The full treatment for community text going into a prompt (after PII redaction)."""
    text = escape_for_block(neutralise_roles(clean(text)))
    if len(text) > limit:
        text = text[:limit] + " …[truncated]"
    return text
