"""Per-community feedback: it changes the next verdict, stays in its community, explains."""

from __future__ import annotations

import time

import pytest

from handlers.detect import Detector, FeedbackConfig
from handlers.detect.feedback import _CUE_NAMES, CommunityModel
from handlers.detect.model import load_seed

# A travel community whose members complain in a way the shared model under-rates:
# short factual questions about a late train. Project-written, not from any data set.
COMPLAINTS = [
    "is the 8:15 ever going to leave the platform",
    "platform 4 again, 8:15 not moving",
    "the 8:15 has not left the platform yet",
    "8:15 sat at the platform for ages again",
    "is the 8:15 moving at all today",
    "platform 4, the 8:15 still sitting there",
    "8:15 not leaving the platform again",
    "anyone know why the 8:15 is sat on the platform",
]
PROBE = "is the 8:15 leaving the platform today"
CHATTER = [
    "morning all",
    "see you at the meetup",
    "nice photo",
    "lunch anyone?",
    "good weekend everyone",
    "just joined, hi",
]


@pytest.fixture
def detector() -> Detector:
    return Detector.default()


def _teach(detector: Detector, community: str) -> None:
    for text in CHATTER:
        detector.judge(text, community)
    for text in COMPLAINTS:
        detector.judge(text, community)
        detector.learn(community, text, True)


def test_manual_flags_change_the_next_verdict(detector: Detector) -> None:
    before = detector.judge(PROBE)  # judged in "rail" it would count as "no action"
    assert not before.is_negative
    _teach(detector, "rail")
    after = detector.judge(PROBE, "rail")
    assert after.is_negative, after
    assert after.score > before.score
    assert "learned from 8 decisions in this community" in after.rationale


def test_feedback_never_affects_another_community(detector: Detector) -> None:
    probes = [PROBE, *COMPLAINTS[:3], "thanks, great trip", "the app crashes on login"]
    other_before = [detector.judge(t, "other").score for t in probes]
    none_before = [detector.judge(t).score for t in probes]
    _teach(detector, "rail")
    for text in ["this boss fight is brutal lol", "love the new update"]:
        detector.judge(text, "rail")
        detector.learn("rail", text, False)
    assert [detector.judge(t, "other").score for t in probes] == other_before
    assert [detector.judge(t).score for t in probes] == none_before
    assert detector.feedback_count("other") == 0
    assert detector.feedback_count("rail") == 10


def test_dismissals_lower_scores_of_similar_messages(detector: Detector) -> None:
    dismissed = [
        "lag in the raid tonight was brutal lol",
        "brutal lag in ranked, gg anyway",
        "that boss lag spike was brutal haha",
        "so much lag in the dungeon, brutal night",
        "the lag tonight was brutal but we won",
    ]
    probe = "lag was brutal in the arena today"
    start = detector.judge(probe, "guild").score
    for text in dismissed:
        detector.judge(text, "guild")
        detector.learn("guild", text, False)
    after = detector.judge(probe, "guild")
    assert after.score < start
    assert detector.judge(probe, "elsewhere").score == pytest.approx(start)


def test_load_feedback_matches_live_learning(detector: Detector) -> None:
    _teach(detector, "rail")
    live = detector.judge(PROBE, "rail")
    fresh = Detector.default()
    fresh.load_feedback("rail", [(t, True) for t in COMPLAINTS])
    replayed = fresh.judge(PROBE, "rail")
    assert replayed.is_negative == live.is_negative
    assert fresh.feedback_count("rail") == len(COMPLAINTS)


def test_forget_restores_the_shared_default(detector: Detector) -> None:
    base = detector.judge(PROBE).score
    _teach(detector, "rail")
    detector.forget("rail")
    assert detector.judge(PROBE, "rail").score == pytest.approx(base)
    assert detector.feedback_count("rail") == 0


def test_no_action_messages_count_as_weak_non_complaints() -> None:
    detector = Detector.default()
    detector.judge("good morning everyone", "c")
    community = detector._communities["c"]
    assert len(community.pool) == 1
    detector.judge("good morning everyone", "c")
    assert len(community.pool) == 1  # the same message is kept once
    text = "the green is a bit darker than on the website"
    assert not detector.judge(text, "c").is_negative
    assert len(community.pool) == 2
    detector.learn("c", text, True)  # flagged by hand: no longer "no action"
    assert len(community.pool) == 1
    assert community.pool_weight() == pytest.approx(FeedbackConfig().implicit_weight)


def test_pool_is_bounded_and_keeps_no_text() -> None:
    config = FeedbackConfig(pool_size=5)
    detector = Detector.default(feedback=config)
    for i in range(20):
        detector.judge(f"message number {i} about the weekend", "c")
    community = detector._communities["c"]
    assert len(community.pool) == 5
    for example in community.pool.values():
        assert all(isinstance(k, int) for k in example.keys)


def test_refit_is_bounded_for_large_communities() -> None:
    config = FeedbackConfig(max_steps=2000)
    community = CommunityModel(config)
    detector = Detector.default(feedback=config)
    rows = load_seed()[:600]
    for text, label in rows:
        community.add_decision(hash(text), detector.features(text), 0.0, label)
    t0 = time.perf_counter()
    community.refit()
    community.add_decision(hash("x"), detector.features("late again"), 0.0, True)
    community.refit()
    assert time.perf_counter() - t0 < 5.0
    assert community.weights


def test_every_cue_feature_has_a_known_name(detector: Detector) -> None:
    seen = {k for text, _ in load_seed() for k in detector.features(text).values if k[0] == "#"}
    assert seen <= _CUE_NAMES, seen - _CUE_NAMES


def test_judge_stays_fast_after_feedback(detector: Detector) -> None:
    rows = load_seed()
    for text, label in rows[:300]:
        detector.judge(text, "c")
        detector.learn("c", text, label)
    texts = [t for t, _ in rows[300:1300]]
    t0 = time.perf_counter()
    for text in texts:
        detector.judge(text, "c")
    rate = len(texts) / (time.perf_counter() - t0)
    assert rate > 3000, rate  # the bench measures the real rate; this catches regressions


def test_an_admin_can_read_which_words_feedback_moved(detector: Detector) -> None:
    _teach(detector, "rail")
    for text in (  # a few more flags, so the lesson stands clear of the display cut-off
        "still on the platform, 8:15 going nowhere",
        "the platform is packed and the 8:15 has not moved",
        "why is the 8:15 stuck at the platform",
    ):
        detector.learn("rail", text, True)
    raising, lowering = detector.learned_terms("rail")
    assert "platform" in raising and lowering == []
    raids = [
        "brutal raid tonight, wiped 5 times",
        "wiped on the raid boss again, brutal",
        "raid wipes all night, brutal",
        "brutal raid, we wiped twice",
    ]
    for text in raids:
        detector.learn("game", text, False)
    raising, lowering = detector.learned_terms("game")
    assert raising == [] and "brutal" in lowering
    assert detector.learned_terms("elsewhere") == ([], [])
