"""Word lists behind the detector's hand-built features, and the VADER valence table.

The lists are general knowledge of how people complain to and about brands in any
sector (waiting, refunds, broken things, nobody answering), written by the project.
They are immutable module constants; the VADER table is loaded into each detector
rather than kept globally so tests and communities never share mutable state.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


def words(spec: str) -> frozenset[str]:
    """A frozen word set from a space-separated string (compact to read and edit)."""
    return frozenset(spec.split())


def _groups(spec: dict[str, str]) -> Mapping[str, str]:
    """Invert ``{group: "word word ..."}`` into ``{word: group}``; the first group wins."""
    out: dict[str, str] = {}
    for group, words in spec.items():
        for word in words.split():
            out.setdefault(word.replace("_", " "), group)
    return MappingProxyType(out)


# Complaint-topic and complaint-cue groups for single tokens. Group names double as
# feature names ("#delay") and drive the reason taxonomy.
WORD_GROUPS: Mapping[str, str] = _groups(
    {
        "safety": (
            "unsafe dangerous danger injury injured injuries hurt fire smoke smoking melted "
            "burned burns poisoning allergic allergy hazard recall exploded explode rash "
            "swelled swollen snapped sparks sparking electrocuted choking mould mold"
        ),
        "legal": (
            "lawyer lawyers sue suing lawsuit ombudsman regulator bbb chargeback attorney "
            "court fca ftc ofcom trading_standards"
        ),
        "billing": (
            "refund refunds refunded refunding charged charge charges overcharged billed bill "
            "billing fee fees invoice invoices payment payments paid deducted money "
            "compensation compensate voucher vouchers reimburse reimbursement reimbursed "
            "dispute disputed debit overdraft cashback"
        ),
        "cancel": (
            "cancelled canceled cancel cancelling canceling cancellation cancellations "
            "bumped overbooked overbooking unsubscribe terminate terminated"
        ),
        "access": (
            "login logged logging log password locked lockout suspended banned hacked 2fa "
            "verification verify otp signin sign-in authenticator username"
        ),
        "delay": (
            "delayed delay delays late waiting waited wait overdue stuck stranded forever "
            "ages pending tarmac slow slower slowest queue queued eta reschedule rescheduled"
        ),
        "delivery": (
            "delivery delivered deliver arrived arrive arrival package parcel shipping "
            "shipped shipment tracking courier luggage baggage bag bags suitcase order "
            "orders flight flights connection gate"
        ),
        "defect": (
            "broken broke breaks crash crashes crashed crashing bug bugs buggy error errors "
            "erroring glitch glitches glitchy freeze freezes freezing frozen lag laggy lagging "
            "outage outages down unusable unplayable faulty defective damaged cracked "
            "shattered ripped torn leaking leaks fails failed failing failure fault dead "
            "wrong missing lost disconnects disconnected disconnecting buffering dropping "
            "dropped blank wiped deleted corrupted unresponsive malfunction stopped "
            "dysfunctional soaked crushed dirty filthy cold"
        ),
        "service": (
            "support agent agents rep reps representative staff ticket tickets emails "
            "emailed calls called callback phone hung ignored ignoring ignore unanswered rude "
            "unhelpful manager desk helpline hotline transferred chatbot dm dms response "
            "reply replied respond responded answer answered"
        ),
        "pricing": (
            "price prices pricing expensive overpriced ripoff cost costs increase hike "
            "raised doubled pricey"
        ),
        "strong": (
            "worst terrible horrible awful unacceptable ridiculous pathetic joke useless "
            "disgusting shameful incompetent scam scammed fraud trash garbage shocking "
            "disgraceful appalling unbelievable outrageous absurd sucks suck hate hated "
            "nightmare rubbish poor poorly lousy crap crappy bs wtf ffs smh fail clowns "
            "embarrassing inexcusable unprofessional lame mess"
        ),
        "emotion": (
            "disappointed disappointing disappointment frustrated frustrating frustration "
            "annoyed annoying angry furious upset livid fuming irritated unhappy "
            "dissatisfied stressed exhausted ugh"
        ),
        "persist": (
            "again still yet keeps keep kept constantly repeatedly anymore chase chasing "
            "counting continues continue another"
        ),
        "nobody": "nobody noone nothing nowhere",
        "trouble": (
            "problem problems issue issues trouble mistake mistakes excuse excuses hassle "
            "inconvenience inconvenienced waste wasted ruined ruin missed miss screwed "
            "messed apparently supposedly tried trying understaffed"
        ),
        "expect": "supposed promised promise promises told claimed advertised guaranteed",
        "demand": "fix explain escalate",
        "churn": "switching leaving unsubscribed competitor",
        "praise": (
            "thanks thank thx ty tysm love loved loving loves great awesome amazing "
            "excellent fantastic perfect perfectly appreciate appreciated kudos shoutout "
            "best wonderful happy glad helpful friendly smooth brilliant lovely impressed "
            "impressive superb congrats congratulations legend nice cool enjoy enjoyed fun "
            "excited stunning gorgeous beautiful awesome fab favourite favorite "
            "recommend delighted pleasant pleased grateful thankful heroes hero outstanding "
            "incredible yay woohoo stellar rock rocks exceptional seamless"
        ),
        "laugh": "lol lmao haha hahaha ha lolol rofl lmfao xd jk gg hehe",
        "resolved": "sorted solved resolved fixed works",
        "hypo": "if would could might maybe planning plan hope",
        # Negativity aimed at things no brand answers for: weather, traffic, fiction.
        "elsewhere": (
            "weather rain raining rainy snow snowing storm storms hurricane traffic commute "
            "mondays headache hangover exam exams homework neighbour neighbor neighbours "
            "villain movie film cutscene finale ending plot character episode"
        ),
        "gameplay": (
            "boss bosses raid dungeon opponent enemy enemies arena pvp respawn mobs "
            "difficulty teammate teammates"
        ),
    }
)

# Two-token phrases; checked on "prev tok" strings built while tokenising.
PHRASE_GROUPS: Mapping[str, str] = _groups(
    {
        "noreply": (
            "no_reply no_response no_answer no_one no_update no_updates no_explanation "
            "no_notice no_warning no_help no_call no_email no_contact no_info no_information "
            "no_communication no_apology no_word no_sign no_way not_responding "
            "not_answering never_responded never_replied never_answered never_called "
            "hung_up call_back called_back get_back"
        ),
        "notwork": (
            "not_working doesn't_work doesnt_work didn't_work didnt_work won't_load "
            "wont_load won't_work wont_work stopped_working isn't_working isnt_working "
            "can't_log cant_log cannot_log can't_access cant_access can't_get cant_get "
            "won't_let wont_let doesn't_load can't_even cant_even keeps_crashing "
            "keep_crashing keeps_failing keeps_freezing not_loading never_works "
            "still_broken still_down"
        ),
        "notrecv": (
            "never_arrived never_came never_received never_got never_showed "
            "never_delivered not_received not_delivered didn't_receive didnt_receive "
            "haven't_received havent_received hasn't_arrived hasnt_arrived didn't_arrive "
            "didnt_arrive haven't_heard havent_heard still_haven't still_havent "
            "still_hasn't still_hasnt still_not still_no still_waiting still_nothing "
            "yet_to no_show"
        ),
        "hold": "on_hold",
        "billing": (
            "charged_twice double_charged money_back charged_me billed_me my_money "
            "extra_charge hidden_fees"
        ),
        "service": "customer_service customer_care the_agent the_staff",
        "churn": (
            "never_again last_time lost_a lost_me took_my switching_to moving_to "
            "done_with cancelling_my canceling_my"
        ),
        "sarcasm": (
            "thanks_for_nothing for_nothing thanks_a_lot so_much yeah_right love_how love_that "
            "great_job oh_great oh_good just_great what_a nice_job well_played "
            "real_nice good_job"
        ),
        "blame": (
            "you_guys you_people your_app your_website your_site your_staff your_service "
            "your_team your_company your_customer your_system your_support y'all_are "
            "you_lost you_charged you_cancelled you_canceled you_broke you_changed "
            "you_removed you_ruined you_keep you_never your_fault"
        ),
        "demand": (
            "fix_this fix_it fix_your please_fix sort_it do_better explain_why "
            "need_help want_my refund_me"
        ),
        "rhetorical": (
            "how_hard what's_the whats_the is_this how_is how_can how_come come_on "
            "are_you why_is why_does why_do why_did why_are why_can't why_cant "
            "why_would why_was why_has why_have"
        ),
        "strong": "rip_off ripped_off fed_up sick_of tired_of not_ok not_okay not_acceptable",
        "positive": (
            "can't_wait cant_wait no_worries no_problem no_complaints not_bad no_issues "
            "nothing_beats never_disappoint my_bad my_fault not_your all_good well_done "
            "thank_you works_great works_perfectly so_good so_happy much_appreciated "
            "top_notch above_and keep_up big_fan good_luck so_kind very_kind how_kind "
            "really_kind"
        ),
        "resolved": (
            "sorted_it fixed_it solved_it problem_solved works_now working_now "
            "all_sorted never_mind nevermind_found found_it"
        ),
        "topic_access": "log_in sign_in logged_out locked_out",
        "topic_cancel": "cancel_my cancelled_my canceled_my",
    }
)

NEGATORS: frozenset[str] = words(
    "not no never don't dont doesn't doesnt didn't didnt won't wont can't cant cannot "
    "isn't isnt wasn't wasnt aren't arent haven't havent hasn't hasnt couldn't couldnt "
    "shouldn't wouldn't nothing nobody without nor neither hardly"
)

# Verbs that, negated, describe something the brand failed to do ("didn't arrive").
ACTION_VERBS: frozenset[str] = words(
    "work works working worked load loads loading arrive arrived arriving receive "
    "received get got getting respond responded responding reply replied replying answer "
    "answered help helped helping show showed showing call called calling refund refunded "
    "fix fixed open opens opening send sent come came connect connects accept accepted "
    "apply applied let allow allowed deliver delivered honour honor honoured honored "
    "process processed update updated turn start starts charge sync syncs save saved"
)

QUESTION_STARTERS: frozenset[str] = words(
    "how what when where which who whom does do did is are can could would will should "
    "any anyone anybody may shall whats what's hows how's where's wheres whens"
)

# Openings of questions that ask for information or help rather than accuse ("can I
# bring...", "is there..."); "why is..." and "how come..." are in ``rhetorical``.
INFO_QUESTION_STARTS: frozenset[str] = frozenset(
    s.replace("_", " ")
    for s in words(
        "can_i can_we can_you could_i could_you do_you do_i do_we does_the does_it "
        "does_anyone is_there are_there is_it is_the will_there will_i will_the how_do "
        "how_can how_long how_much how_many what_is what's_the whats_the what_are what_time "
        "where_can where_do where_is which_is who_do who_can should_i may_i any_chance "
        "any_way any_plans anyone_know does_anybody i_was_wondering quick_question "
        "just_wondering wondering_if"
    )
)

NUMBER_WORDS: Mapping[str, int] = MappingProxyType(
    {
        "a": 1,
        "an": 1,
        "one": 1,
        "two": 2,
        "three": 3,
        "four": 4,
        "five": 5,
        "six": 6,
        "seven": 7,
        "eight": 8,
        "nine": 9,
        "ten": 10,
        "eleven": 11,
        "twelve": 12,
        "fifteen": 15,
        "twenty": 20,
        "thirty": 30,
        "few": 3,
        "several": 3,
        "couple": 2,
        "multiple": 3,
        "many": 4,
        "numerous": 4,
        "countless": 6,
        "dozen": 12,
    }
)

ORDINALS: Mapping[str, int] = MappingProxyType(
    {
        "second": 2,
        "2nd": 2,
        "third": 3,
        "3rd": 3,
        "fourth": 4,
        "4th": 4,
        "fifth": 5,
        "5th": 5,
        "sixth": 6,
        "6th": 6,
        "nth": 6,
        "umpteenth": 6,
    }
)

# Time units, as multiples of an hour, for "3 weeks" or "90 minutes".
TIME_UNITS: Mapping[str, float] = MappingProxyType(
    {
        "min": 1 / 60,
        "mins": 1 / 60,
        "minute": 1 / 60,
        "minutes": 1 / 60,
        "hr": 1.0,
        "hrs": 1.0,
        "hour": 1.0,
        "hours": 1.0,
        "h": 1.0,
        "day": 24.0,
        "days": 24.0,
        "night": 24.0,
        "nights": 24.0,
        "week": 168.0,
        "weeks": 168.0,
        "wk": 168.0,
        "wks": 168.0,
        "month": 720.0,
        "months": 720.0,
        "yr": 8760.0,
        "yrs": 8760.0,
        "year": 8760.0,
        "years": 8760.0,
    }
)

# Things one tries repeatedly before complaining ("4 emails", "third call").
ATTEMPT_NOUNS: frozenset[str] = words(
    "times time emails email calls call tickets ticket messages message attempts attempt "
    "tries try chats chat requests request complaints complaint agents agent people "
    "delays delay outages outage visits visit weeks days months"
)

STOPWORDS: frozenset[str] = words(
    "a an the and or but so to of in on at for with from by is are was were be been being "
    "it its it's this that these those i me my we our you your he she they them their "
    "there here as if then than just very really too also up out about into over after "
    "before am do does did have has had will would can could should get got im i'm what "
    "when where which who how all any some"
)

SECOND_PERSON: frozenset[str] = words("you your you're youre y'all yall u ur yours")
FIRST_PERSON: frozenset[str] = words("my i i'm im me we our us i've ive mine")

POSITIVE_EMOJI = "❤♥😍🙏👍😊🎉🙂😁🥰💯👏😀😃😄🤩✨💙💚💜🙌😎🥳"
NEGATIVE_EMOJI = "😡🤬😠😤👎😞😢😭🙄💔😒😩😫🤦😑"


def load_vader_lexicon() -> dict[str, float]:
    """VADER's word valences (-4..4); a fresh dict so callers may own it."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return dict(SentimentIntensityAnalyzer().lexicon)
