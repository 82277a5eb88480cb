"""The output sanitiser: examples for each rule, and properties over generated text."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.draft.sanitize import fold, promise_warnings, sanitize

ALLOWED = ("acme.example", "status.acme.example")

# An independent, deliberately blunt checker (not the sanitiser's own regexes).
_MASS = re.compile(r"@(?:everyone|here|channel)|<!|<@&")
_URLISH = re.compile(
    r"(?:[a-z][a-z0-9+.-]*://|(?<![\w.-])www\.)[^\s<>()|\]]+"
    r"|(?<![\w@.-])(?:[\w-]+\.)+(?:com|net|org|io|gg|ly|co|xyz|example|ru|dev|app)(?![\w-])"
)


def mass_mentions(text: str) -> list[str]:
    return _MASS.findall(fold(text))


_ALLOWED_LINK = re.compile(
    r"(?<![\w@.-])(?:https?://)?(?:[a-z0-9-]+\.)*acme\.example(?![\w-])[^\s<>()|\]]*"
)


def off_list_links(text: str, allowed: tuple[str, ...] = ALLOWED) -> list[str]:
    bad = []
    # Paths of allowed links may contain anything: mask them before looking.
    text = _ALLOWED_LINK.sub(lambda m: " " * len(m.group()), text)
    original = text
    for m in _URLISH.finditer(fold(text)):
        raw = original[m.start() : m.end()]
        host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", raw.lower()).split("/")[0].split(":")[0]
        ok = (
            raw.isascii()
            and "@" not in raw
            and any(host == d or host.endswith("." + d) for d in allowed)
        )
        if not ok:
            bad.append(raw)
    return bad


def clean(text: str, platform: str = "discord", member: str = "") -> str:
    return sanitize(text, platform, ALLOWED, member).text


@pytest.mark.parametrize(
    "attack",
    [
        "@everyone",
        "@here",
        "@\u200beveryone",
        "@\u2060here",
        "＠everyone",
        "﹫here",
        "@ｅｖｅｒｙｏｎｅ",
        "@еveryone",  # Cyrillic е
        "@@everyone",
        "<@&123456789012345678>",
        "<!channel>",
        "<!here>",
        "<!everyone>",
        "<!subteam^S0123|@support>",
        "<<!channel>!channel>",
        "<<@&1>@&2>",
        "@\u202eeveryone",
        "@\U000e0020everyone",
        "@channel",
    ],
)
@pytest.mark.parametrize("platform", ["discord", "slack"])
def test_mass_mentions_are_neutralised(attack: str, platform: str) -> None:
    result = sanitize(f"Hi {attack} please read", platform, ALLOWED, "")
    assert mass_mentions(result.text) == []
    assert "mass mention removed" in result.warnings


def test_user_mentions_only_when_allowed() -> None:
    text = "Thanks <@111> and <@!222>, cc <@U999|bob>"
    assert clean(text) == "Thanks  and , cc "
    kept = sanitize(text, "discord", ALLOWED, "", allowed_user_ids=("111",)).text
    assert kept.startswith("Thanks <@111> and ,")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://evil.com/x.", "see [link removed]."),
        ("see [docs](https://evil.com) now", "see docs now"),
        ("see <https://evil.com|the docs>", "see the docs"),
        ("go to evil.io/path", "go to [link removed]"),
        ("go to www.bad.org", "go to [link removed]"),
        ("https://acme.example@evil.com", "[link removed]"),
        ("https://evil.com\\@acme.example", "[link removed]"),
        ("https://acme.example.evil.com", "[link removed]"),
        ("https://ас.acme.example", "[link removed]"),  # Cyrillic host
        ("javascript:alert(1) <javascript:alert(1)|x>", "javascript:alert(1) x"),
        ("status: https://status.acme.example/i/1", "status: https://status.acme.example/i/1"),
        ("[help](https://acme.example/help)", "[help](https://acme.example/help)"),
        ("[evil.com](https://acme.example/x)", "[[link removed]](https://acme.example/x)"),
        ("<https://acme.example/a|ok>", "<https://acme.example/a|ok>"),
    ],
)
def test_links_off_the_allow_list_are_removed(text: str, expected: str) -> None:
    assert clean(text) == expected


def test_personal_data_only_when_the_member_wrote_it() -> None:
    member = "reach me at jo@mail.test or 555-010-2233"
    text = "We'll email jo@mail.test, call +1 555 010 2233, not ann@x.test or 4111 1111 1111 1111."
    result = sanitize(text, "discord", ALLOWED, member)
    assert "jo@mail.test" in result.text and "+1 555 010 2233" in result.text
    assert "ann@x.test" not in result.text and "4111" not in result.text
    assert "personal data removed" in result.warnings
    brand = sanitize("write to help@acme.example", "discord", ALLOWED, "").text
    assert brand == "write to help@acme.example"


@pytest.mark.parametrize(("platform", "limit"), [("discord", 2000), ("slack", 3000)])
def test_length_is_capped_per_platform(platform: str, limit: int) -> None:
    result = sanitize("word " * 2000, platform, ALLOWED, "")
    assert len(result.text) <= limit and result.text.endswith("...")
    assert sanitize(result.text, platform, ALLOWED, "").text == result.text


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("We'll refund you in full.", "a refund"),
        ("You'll get your money back.", "a refund"),
        ("We will compensate you for this.", "compensation"),
        ("I've added account credit for the trouble.", "account credit"),
        ("Here's a free month on us.", "a discount or freebie"),
        ("It's our fault and we are liable.", "an admission of legal liability"),
        ("We guarantee it ships tomorrow.", "a guarantee"),
    ],
)
def test_promises_are_flagged(text: str, kind: str) -> None:
    assert f"promises {kind} — not allowed by brand policy" in promise_warnings(text)
    assert sanitize(text, "discord", ALLOWED, "").text == text  # flagged, not rewritten


def test_allowed_promises_and_harmless_words() -> None:
    assert promise_warnings("We'll refund you.", allowed_promises={"refund"}) == []
    assert promise_warnings("Please don't post your credit card number.") == []
    assert promise_warnings("Thanks, we are looking into it.") == []


def test_hidden_characters_are_stripped() -> None:
    assert clean("he\u200bllo\u202e wor\U000e0041ld\ufeff") == "hello world"


# -- properties -------------------------------------------------------------------------
FRAGMENTS = [
    "@",
    "@everyone",
    "@here",
    "@channel",
    "everyone",
    "here",
    "＠",
    "﹫",
    "\u200b",
    "\u2060",
    "\u202e",
    "\U000e0040",
    "е",
    "<",
    ">",
    "<@",
    "<@&",
    "<!",
    "!",
    "&",
    "|",
    "^",
    "123",
    "U1",
    "channel>",
    "subteam^S1",
    "http://",
    "https://",
    "www.",
    "evil.com",
    "evil.io",
    "acme.example",
    "status.acme.example",
    ".",
    "/",
    ":",
    "[",
    "]",
    "(",
    ")",
    "x",
    " ",
    "\n",
    "a@b.co",
    "555-010-2233",
    "4111 1111 1111 1111",
    "12 Main Street",
    "refund",
    "[EMAIL_1]",
    "...",
    "…",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=40).map(
    "".join
)
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(text=texts, platform=st.sampled_from(["discord", "slack"]), member=texts)
def test_sanitize_is_idempotent(text: str, platform: str, member: str) -> None:
    once = sanitize(text, platform, ALLOWED, member).text
    assert sanitize(once, platform, ALLOWED, member).text == once


@PROPERTY_SETTINGS
@given(text=texts, platform=st.sampled_from(["discord", "slack"]))
def test_no_mass_mention_survives(text: str, platform: str) -> None:
    assert mass_mentions(sanitize(text, platform, ALLOWED, "").text) == []


@PROPERTY_SETTINGS
@given(text=texts, platform=st.sampled_from(["discord", "slack"]))
def test_no_off_list_link_survives(text: str, platform: str) -> None:
    assert off_list_links(sanitize(text, platform, ALLOWED, "").text) == []


@settings(max_examples=100, deadline=None)
@given(text=texts, limit=st.integers(min_value=5, max_value=60))
def test_capped_output_is_idempotent_and_short(text: str, limit: int) -> None:
    once = sanitize(text, "discord", ALLOWED, "", max_len=limit).text
    assert len(once) <= limit
    assert sanitize(once, "discord", ALLOWED, "", max_len=limit).text == once


@pytest.mark.parametrize(
    ("text", "promise"),
    [
        ("I'm sorry your refund is taking this long.", False),
        ("I've asked billing to check your refund status today.", False),
        ("We can't offer a refund on this plan.", False),
        ("We will refund you today.", True),
        ("We'll issue a refund within 3 days.", True),
        ("You will get a full refund.", True),
        ("Your refund has been processed.", True),
    ],
)
def test_naming_a_refund_is_not_promising_one(text: str, promise: bool) -> None:
    from handlers.draft.sanitize import promise_warnings

    assert bool(promise_warnings(text)) is promise
