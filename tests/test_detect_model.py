"""The local detector on small project-written examples: verdicts, reasons, feedback."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from handlers.detect import REASONS, SEVERITIES, Detector, features, lexicon
from handlers.detect.lexicon import load_vader_lexicon
from handlers.detect.model import LinearModel, fit, load_seed


@pytest.fixture(scope="module")
def shared() -> Detector:
    return Detector.default()


@pytest.fixture
def detector() -> Detector:
    return Detector.default()


@pytest.mark.parametrize(
    "text",
    [
        "third week waiting for my refund, no reply to 2 emails",
        "my bag never arrived, 3 hours on hold",
        "the app crashes every time I open it since the update",
        "charged twice for one order and nobody answers",
        "still can't log in to my account after the reset",
        "order cancelled without notice and no refund",
        "worst support I've ever dealt with",
    ],
)
def test_factual_and_angry_complaints_are_flagged(shared: Detector, text: str) -> None:
    v = shared.judge(text)
    assert v.is_negative, (text, v)
    assert v.score >= v.threshold
    assert v.reason in REASONS and v.severity in SEVERITIES
    assert v.rationale


@pytest.mark.parametrize(
    "text",
    [
        "this boss fight is brutal lol",
        "thanks so much, support sorted it in five minutes!",
        "love the new update, great work",
        "how do I change my delivery address?",
        "what time does the tournament start?",
        "the weather is terrible today",
        "gg everyone, that raid was insane haha",
    ],
)
def test_praise_questions_and_banter_are_not_flagged(shared: Detector, text: str) -> None:
    v = shared.judge(text)
    assert not v.is_negative, (text, v)
    assert v.severity == "low"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("third week waiting for my refund, no reply to 2 emails", "billing_refund"),
        ("my package never arrived and tracking hasn't moved in 10 days", "delivery_delay"),
        ("locked out of my account, the login code never comes", "account_access"),
        ("the app keeps crashing after the update, totally broken", "product_defect"),
        ("they cancelled my booking the night before", "cancellation"),
        ("the charger melted and started smoking, fire hazard", "safety"),
        ("prices doubled again this year, way too expensive", "pricing"),
        ("on hold for an hour and the agent hung up on me", "customer_service"),
    ],
)
def test_reasons(shared: Detector, text: str, reason: str) -> None:
    v = shared.judge(text)
    assert v.is_negative, v
    assert v.reason == reason, v


def test_severity_grows_with_danger_and_persistence(shared: Detector) -> None:
    assert shared.judge("the heater caught fire, this is dangerous").severity == "high"
    assert (
        shared.judge("third month chasing a refund, 5 emails, absolutely unacceptable").severity
        == "high"
    )
    mild = shared.judge("the export button doesn't work")
    assert mild.is_negative
    assert mild.severity in ("low", "medium")


def test_rationale_names_the_evidence(shared: Detector) -> None:
    v = shared.judge("third week waiting for my refund, no reply to 2 emails")
    assert "refund" in v.rationale
    assert "no reply" in v.rationale
    assert "third week" in v.rationale


def test_learned_dismissal_applies_to_the_next_message(detector: Detector) -> None:
    text = "the new patch completely broke the bow build"
    before = detector.judge(text, "guild")
    assert before.is_negative
    detector.learn("guild", text, False)
    after = detector.judge(text, "guild")
    assert not after.is_negative
    assert "dismissed" in after.rationale
    similar = detector.judge("new patch completely broke the bow build again", "guild")
    assert similar.score < before.score
    # Other communities keep the shared default.
    assert detector.judge(text, "other").is_negative


def test_learned_manual_flag_applies_to_the_next_message(detector: Detector) -> None:
    text = "the green is a bit darker than on the website"
    assert not detector.judge(text, "shop").is_negative
    detector.learn("shop", text, True)
    assert detector.judge(text, "shop").is_negative
    assert "flagged" in detector.judge(text, "shop").rationale


def test_load_feedback_rebuilds_and_replaces(detector: Detector) -> None:
    text = "the new patch completely broke the bow build"
    detector.load_feedback("guild", [(text, False)])
    assert not detector.judge(text, "guild").is_negative
    assert detector.feedback_count("guild") == 1
    detector.load_feedback("guild", [])
    assert detector.judge(text, "guild").is_negative
    assert detector.feedback_count("guild") == 0


def test_repeated_banter_dismissals_generalise(detector: Detector) -> None:
    dismissed = [
        "this dungeon is brutal, died 20 times",
        "brutal boss, my whole team wiped",
        "that last level was brutal, took me hours",
        "brutal raid tonight, we wiped all evening",
    ]
    probe = "the arena is brutal today, lost every round"
    start = detector.judge(probe, "g").score
    for text in dismissed:
        detector.learn("g", text, False)
    assert detector.judge(probe, "g").score < start


def test_sensitivity_changes_the_decision(detector: Detector) -> None:
    text = "the checkout page is a bit slow today"
    score = detector.judge(text, "c").score
    detector.set_sensitivity("c", min(0.99, score + 0.05))
    assert not detector.judge(text, "c").is_negative
    detector.set_sensitivity("c", max(0.01, score - 0.05))
    assert detector.judge(text, "c").is_negative
    assert detector.judge(text, "elsewhere").threshold == 0.5
    with pytest.raises(ValueError):
        detector.set_sensitivity("c", 1.5)


def test_empty_and_odd_inputs(shared: Detector) -> None:
    for text in ("", "   ", "!!!", "👍", "@someone", "a" * 5000):
        v = shared.judge(text)
        assert 0.0 <= v.score <= 1.0


def test_shipped_weights_match_the_seed() -> None:
    """weights.json must be what fitting the shipped seed produces (refit if not)."""
    valence = load_vader_lexicon()
    refit = fit(load_seed(), valence)
    shipped = Detector.default()
    again = Detector(LinearModel.from_json(refit.to_json()), valence)
    for text, _ in load_seed()[::25]:
        assert abs(shipped.judge(text).score - again.judge(text).score) < 1e-3, text


def test_seed_is_varied_and_balanced() -> None:
    rows = load_seed()
    assert len(rows) >= 600
    positives = sum(1 for _, y in rows if y)
    assert 0.35 < positives / len(rows) < 0.65


class _Everything:
    """A set that contains every token: sends each one down extract's full path."""

    def __contains__(self, item: object) -> bool:
        return True


_VOCAB = sorted(
    {
        *lexicon.WORD_GROUPS,
        *lexicon.NEGATORS,
        *lexicon.ACTION_VERBS,
        *lexicon.NUMBER_WORDS,
        *lexicon.ORDINALS,
        *lexicon.TIME_UNITS,
        *lexicon.ATTEMPT_NOUNS,
        *lexicon.STOPWORDS,
        *lexicon.SECOND_PERSON,
        *(w for p in lexicon.PHRASE_GROUPS for w in p.split()),
        *lexicon.words("all ages forever 3 48hrs 2d 12 ? ! great love awful widget banana 😡 👍"),
    }
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=14), st.booleans())
@example(["waited", "all", "day", "for", "an", "hour"], False)  # durations of each kind
@example(
    ["third", "time", "i", "asked", ",", "2", "emails", "and", "48hrs", "later", ",", "weeks"],
    False,
)
@example(["not", "helpful", "!", "you", "never", "reply", "my", "3", "tickets"], True)
def test_the_short_path_for_ordinary_words_changes_no_feature(
    tokens: list[str], shout: bool
) -> None:
    """Most words skip extract's per-token checks, and most listed words its duration
    and count checks; neither short cut may change any feature."""
    valence = _VALENCE
    text = " ".join(tokens)
    if shout:
        text = text.upper()
    fast = features.extract(text, valence)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(features, "_SPECIAL", _Everything())
        mp.setattr(features, "_COUNTING", _Everything())
        full = features.extract(text, valence)
    assert fast == full
    assert list(fast.values) == list(full.values)  # same order, for the same fit


_VALENCE = load_vader_lexicon()


def test_a_flag_lists_the_cues_that_fired_and_chatter_carries_none() -> None:
    detector = Detector.default()
    flagged = detector.judge("third week waiting for my refund, no reply to 2 emails")
    assert flagged.is_negative
    assert "billing:refund" in flagged.evidence
    chatter = detector.judge("good morning everyone, see you at the meetup")
    assert not chatter.is_negative and chatter.evidence == ()
