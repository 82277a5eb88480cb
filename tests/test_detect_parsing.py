"""How features.py reads durations, negation scope and invisible characters.

Regression tests for parsing defects found in review; every sentence is project-written.
"""

from __future__ import annotations

import pytest

from handlers.detect import Detector

SEV = {"low": 0, "medium": 1, "high": 2}


@pytest.fixture(scope="module")
def d() -> Detector:
    return Detector.default()


# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["My 3d printer arrived today", "Love the 2d art style"])
def test_a_bare_d_is_not_days(d: Detector, text: str) -> None:
    assert d.features(text).hours == 0
    assert "duration" not in d.features(text).groups
    v = d.judge(text)
    assert "3d" not in v.rationale and "2d" not in v.rationale, v


def test_decimal_durations_are_one_number(d: Detector) -> None:
    assert d.features("waited 0.5 hours for support").hours == pytest.approx(0.5)
    assert d.features("This has been broken for 2.5 days").hours == pytest.approx(60.0)
    assert d.features("stuck at the gate for 1.5hrs").hours == pytest.approx(1.5)
    v = d.judge("1.5 hours on hold and nobody answers")
    assert v.is_negative, v
    assert "1.5 hours" in v.rationale.split(" + "), v.rationale
    assert "5 hours" not in v.rationale.split(" + "), v.rationale


def test_years_are_a_time_unit(d: Detector) -> None:
    for text in ("Waiting 2 years for my refund", "Waiting 2 yrs for my refund"):
        assert d.features(text).hours == pytest.approx(2 * 8760.0), text
    assert d.features("still waiting after a year").hours == pytest.approx(8760.0)
    years = d.judge("Worst service ever, waiting 2 years for my refund")
    months = d.judge("Worst service ever, waiting 2 months for my refund")
    assert SEV[years.severity] >= SEV[months.severity], (years, months)
    assert "2 years" in years.rationale, years.rationale


@pytest.mark.parametrize(
    "text",
    [
        "bought it 3 weeks ago and it crashes",
        "posted hours ago, the app crashes",
        "ordered 48hrs ago and it crashes",
    ],
)
def test_a_duration_before_ago_is_a_point_in_time(d: Detector, text: str) -> None:
    assert d.features(text).hours == 0, d.features(text).evidence


def test_ago_does_not_raise_severity(d: Detector) -> None:
    ago = d.judge("Worst app ever, bought it 3 weeks ago and it crashes")
    yesterday = d.judge("Worst app ever, bought it yesterday and it crashes")
    assert ago.severity == yesterday.severity, (ago, yesterday)
    assert "3 weeks" not in ago.rationale


@pytest.mark.parametrize(
    "text",
    [
        "Stream starts in an hour",
        "Sale ends in 2 days",
        "the patch lands within 24 hours",
        "new season drops in the next 2 weeks",
        "results out in a few days",
        "back in 48hrs",
    ],
)
def test_in_or_within_a_duration_is_a_time_ahead(d: Detector, text: str) -> None:
    assert d.features(text).hours == 0, d.features(text).evidence


def test_in_a_duration_is_still_a_wait_in_a_negated_clause(d: Detector) -> None:
    # "hasn't moved in 10 days" is a wait; "arrives in 10 days" is not. A sentence end
    # or comma closes the negated clause.
    assert d.features("tracking hasn't moved in 10 days").hours == pytest.approx(240.0)
    assert d.features("nobody has replied in a week").hours == pytest.approx(168.0)
    assert d.features("can't wait, the parcel arrives in 10 days").hours == 0
    assert d.features("No. It arrives in 10 days").hours == 0


@pytest.mark.parametrize(
    "text",
    [
        "Stream starts in an hour!",
        "Doors open in an hour",
        "Sale ends in 2 days",
        "brb 10 mins",
        "give me 5 minutes",
    ],
)
def test_future_or_tiny_durations_alone_are_not_complaints(d: Detector, text: str) -> None:
    v = d.judge(text)
    assert not v.is_negative, (text, v.score, v.rationale)


def test_minutes_make_no_duration_cue_but_stay_in_the_rationale(d: Detector) -> None:
    assert "#dur" not in d.features("brb 10 mins").values
    assert "#no_cue" in d.features("brb 10 mins").values
    v = d.judge("on hold for 40 minutes and nobody answers")
    assert v.is_negative, v
    assert "40 minutes" in v.rationale, v.rationale


# -- negation and sentence ends --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["No. Great work team", "I didn't expect that. Great update!", "no rush, love you guys"],
)
def test_negation_does_not_reach_into_the_next_sentence(d: Detector, text: str) -> None:
    feats = d.features(text)
    assert "negpraise" not in feats.groups, feats.evidence
    v = d.judge(text)
    assert not v.is_negative, (text, v.score, v.rationale)


@pytest.mark.parametrize("text", ["Can't wait! Love it", "Don't forget? Love it", "No; love it"])
def test_exclamation_question_and_semicolon_end_negation(d: Detector, text: str) -> None:
    assert "negpraise" not in d.features(text).groups


def test_negation_still_works_within_a_sentence(d: Detector) -> None:
    # Kept as a guard; the sentence end after "great" must not change it.
    assert "negpraise" in d.features("not great. at all").groups
    assert "negpraise" not in d.features("not. great").groups


def test_a_sentence_end_breaks_bigrams(d: Detector) -> None:
    feats = d.features("It works. Great")
    assert "works great" not in feats.values
    assert "positive" not in feats.groups  # "works great" is a positive phrase
    assert "no reply" not in d.features("Sorted, thanks. No. Reply when you can").values


# -- invisible characters ----------------------------------------------------------------


@pytest.mark.parametrize("mark", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"])
def test_invisible_characters_do_not_split_words(d: Detector, mark: str) -> None:
    plain = d.judge("I was charged twice and still no refund")
    marked = d.judge(f"I was char{mark}ged twice and still no re{mark}fund")
    assert plain.reason == "billing_refund"
    assert marked.reason == plain.reason, marked
    assert marked.rationale == plain.rationale, (marked.rationale, plain.rationale)
    assert marked.score == pytest.approx(plain.score)
