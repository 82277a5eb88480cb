"""Thread escalation and near-duplicate incidents on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from handlers.detect import Detector
from handlers.detect.escalation import (
    EscalationPolicy,
    IncidentIndex,
    ThreadEvent,
    escalate,
    is_agreement,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    "text",
    [
        "same here",
        "+1",
        "me too!",
        "same issue",
        "Same.",
        "not just you",
        "it's not just you",
        "No, it’s not just you",
        "nope, same here",
        "same issue here, 2 weeks",
        "having the same problem",
        "can confirm",
        "+1, can't log in either",
        "no reply from support, same here",
        "same problem, worked fine for me until yesterday",
    ],
)
def test_agreement_phrases(text: str) -> None:
    assert is_agreement(text)


@pytest.mark.parametrize(
    "text",
    [
        "Not the same issue for me, works fine",
        "I don't have the same problem",
        "Nope, not having the same issue here",
        "I'm not having the same problem",
        "I’m not having the same problem",
        "not the same issue for me",
        "I do not seem to have the same issue",
        "doesn't look like the same problem to me",
        "same thing? no, works fine for me",
    ],
)
def test_negated_agreement_is_not_agreement(text: str) -> None:
    assert not is_agreement(text)


def test_members_saying_it_works_for_them_do_not_escalate() -> None:
    events = [
        ThreadEvent(at(2), "u2", "Not the same issue for me, works fine"),
        ThreadEvent(at(4), "u3", "I don't have the same problem"),
        ThreadEvent(at(6), "u4", "Nope, not having the same issue here"),
    ]
    result = escalate("low", events, at(7), original_author="u1")
    assert not result.raised, result
    assert result.agreeing_members == 0


@pytest.mark.parametrize(
    "reply",
    [
        "not working for me either",
        "doesn't work for me either",
        "same issue, not working for me",
        "it doesnt work for me too",
    ],
)
def test_members_saying_it_fails_for_them_too_pile_on(reply: str) -> None:
    events = [ThreadEvent(at(2 * i), f"u{i + 1}", reply, is_complaint=True) for i in range(1, 4)]
    result = escalate("low", events, at(8), original_author="u1")
    assert result.agreeing_members == 3, result


def test_denials_the_detector_calls_negative_do_not_count_as_agreeing() -> None:
    """The detector reads "not the same issue for me" as negative; in a thread it still
    says the member is not affected, so it must not pile on."""
    denials = [
        "not the same issue for me",
        "I'm not having the same problem",
        "nope, works fine for me",
    ]
    events = [
        ThreadEvent(at(2 * i + 2), f"u{i + 2}", text, is_complaint=True)
        for i, text in enumerate(denials)
    ]
    result = escalate("low", events, at(9), original_author="u1")
    assert not result.raised, result
    assert result.agreeing_members == 0
    # A reply the detector calls negative that neither agrees nor denies still piles on.
    piled = [
        ThreadEvent(at(i + 2), f"u{i + 2}", "still broken", is_complaint=True) for i in range(3)
    ]
    assert escalate("low", piled, at(9), original_author="u1").agreeing_members == 3


@pytest.mark.parametrize("text", ["same time tomorrow?", "thanks, that fixed it", "what happened?"])
def test_non_agreement(text: str) -> None:
    assert not is_agreement(text)


def test_pile_on_raises_severity_with_a_readable_reason() -> None:
    events = [
        ThreadEvent(at(2), "u2", "same here"),
        ThreadEvent(at(9), "u3", "+1, can't log in either"),
        ThreadEvent(at(20), "u4", "me too"),
    ]
    result = escalate("low", events, at(21), original_author="u1")
    assert result.raised
    assert result.severity == "medium"
    assert result.agreeing_members == 3
    assert "3 members agreeing in 18 min" in result.rationale


def test_the_same_member_agreeing_twice_counts_once() -> None:
    events = [ThreadEvent(at(i), "u2", "same here") for i in range(5)]
    result = escalate("low", events, at(6), original_author="u1")
    assert result.agreeing_members == 1
    assert not result.raised


def test_old_events_outside_the_window_do_not_count() -> None:
    events = [ThreadEvent(at(0), f"u{i}", "same here") for i in range(2, 8)]
    late = escalate("low", events, at(180), original_author="u1")
    assert not late.raised
    assert late.rationale == "no escalation"
    early = escalate("low", events, at(10), original_author="u1")
    assert early.severity == "high"  # a crowd of 6 raises two steps


def test_velocity_reach_and_repeats() -> None:
    events = [
        ThreadEvent(at(i), "u1" if i % 2 else f"x{i}", "still broken", is_complaint=i % 2 == 1)
        for i in range(1, 9)
    ]
    result = escalate(
        "low",
        events,
        at(10),
        original_author="u1",
        member_activity={"u1": 5000},
        policy=EscalationPolicy(agreeing_members=99),
    )
    assert "replies in" in result.rationale
    assert "same member complained" in result.rationale
    assert "highly active member" in result.rationale
    assert result.severity == "high"


def test_severity_is_never_lowered() -> None:
    assert escalate("high", [], at(0)).severity == "high"
    assert not escalate("high", [], at(0)).raised
    with pytest.raises(ValueError):
        escalate("urgent", [], at(0))


def test_reactions_count_as_agreement() -> None:
    events = [ThreadEvent(at(1), f"r{i}", is_reaction=True) for i in range(3)]
    assert escalate("medium", events, at(2), original_author="u1").severity == "high"


def test_near_duplicates_become_one_incident() -> None:
    index = IncidentIndex(window=timedelta(hours=2))
    first = index.add("c1", "checkout page shows error 500 when I pay", at(0))
    dup = index.match("c1", "Checkout page shows error 502 when I try to pay", at(5))
    assert dup == first
    assert index.add("c1", "checkout page shows error 502 when I try to pay", at(5)) == first
    other = index.add("c1", "my parcel never arrived", at(6))
    assert other != first
    assert index.match("c2", "checkout page shows error 500 when I pay", at(7)) is None
    assert index.incident_sizes("c1", at(7)) == {first: 2, other: 1}


def test_incidents_expire_with_the_window() -> None:
    index = IncidentIndex(window=timedelta(hours=1))
    index.add("c", "the app crashes on launch", at(0), key="flag-1")
    assert index.match("c", "the app crashes on launch again", at(30)) == "flag-1"
    assert index.match("c", "the app crashes on launch again", at(61)) is None


def test_a_storm_of_identical_complaints_is_one_incident_counted_in_full() -> None:
    index = IncidentIndex(samples_per_incident=3)
    keys = {index.add("c1", "the checkout page is down again", at(i)) for i in range(50)}
    assert len(keys) == 1
    assert index.incident_sizes("c1", at(50)) == {keys.pop(): 50}


def test_a_long_storm_keeps_matching_and_counts_only_the_window() -> None:
    """Samples and counts slide with the window: an incident that keeps coming in stays
    one incident, and its size is what arrived in the last window, not since the start."""
    index = IncidentIndex(window=timedelta(minutes=10), samples_per_incident=3)
    keys = {index.add("c1", "the checkout page is down again", at(i)) for i in range(0, 60, 2)}
    assert len(keys) == 1
    assert index.incident_sizes("c1", at(59)) == {keys.pop(): 5}  # minutes 50..58
    # Once the samples have expired, the same complaint starts a new incident.
    later = index.add("c1", "the checkout page is down again", at(200), key="fresh")
    assert later == "fresh"
    assert index.incident_sizes("c1", at(200)) == {"fresh": 1}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("my order arrived broken", "my order arrived late"),
        ("the app crashes when I open my cart", "the app charges me when I open my cart"),
        (
            "Hi team, I have a problem with my account again, can you please help me? "
            "I cannot log in since yesterday.",
            "Hi team, I have a problem with my account again, can you please help me? "
            "I was charged twice for my plan, no refund.",
        ),
    ],
)
def test_complaints_about_different_things_are_not_one_incident(a: str, b: str) -> None:
    det = Detector.default()
    va, vb = det.judge(a), det.judge(b)
    assert va.is_negative and vb.is_negative
    assert va.reason != vb.reason  # the detector itself sees two different problems
    idx = IncidentIndex()
    ka = idx.add("c", a, at(0), key="A")
    kb = idx.add("c", b, at(1), key="B")
    assert ka != kb, (va.reason, vb.reason)


def test_true_near_duplicates_still_merge() -> None:
    index = IncidentIndex()
    first = index.add("c", "still no refund after 3 weeks", at(0), key="A")
    assert index.add("c", "3 weeks and still no refund!!", at(3), key="B") == first
    # A text of stopwords only still matches itself.
    help_key = index.add("c", "hi team, can you help??", at(4), key="H")
    assert help_key == "H"
    assert index.match("c", "Hi team can you help", at(5)) == "H"
